//! The PROXY protocol (HAProxy's, versions 1 and 2), read from connections that come
//! from a trusted load balancer (`smith-ca serve --trusted-proxy CIDR`), so that the CA
//! sees clients' real addresses: per-source connection caps and grants' source networks
//! apply to the engineer, not to the balancer.
//!
//! Must never: read a header from a peer that is not a trusted proxy (anyone could claim
//! any address), read past the header (the TLS handshake follows it), or wait without a
//! deadline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The version 2 signature.
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included.
const V1_MAX: usize = 107;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The client's address as the proxy saw it.
    Proxied(SocketAddr),
    /// A connection of the proxy's own (health checks, `UNKNOWN`, `LOCAL`): the peer
    /// address stands.
    Local,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("the connection does not start with a PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error("the PROXY header did not arrive in time")]
    Timeout,
    #[error("the connection closed before its PROXY header")]
    Closed,
}

/// How many bytes of `buf` the header takes and what it says; `Ok(None)` when more bytes
/// are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(usize, Header)>, ProxyError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'P' {
        let n = buf.len().min(6);
        if buf[..n] != b"PROXY "[..n] {
            return Err(ProxyError::NotProxy);
        }
        if buf.len() < 6 {
            return Ok(None);
        }
        return parse_v1(buf);
    }
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] != V2_SIG[..n] {
        return Err(ProxyError::NotProxy);
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    parse_v2(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(usize, Header)>, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::Malformed(
                "version 1 header longer than 107 bytes",
            ))
        } else {
            Ok(None)
        };
    };
    if end + 2 > V1_MAX {
        return Err(ProxyError::Malformed(
            "version 1 header longer than 107 bytes",
        ));
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let f: Vec<&str> = line.split(' ').collect();
    let header = match f.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Header::Local,
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| ProxyError::Malformed("source address"))?;
            if (*fam == "TCP4") != ip.is_ipv4() {
                return Err(ProxyError::Malformed("address family"));
            }
            let port: u16 = sport
                .parse()
                .map_err(|_| ProxyError::Malformed("source port"))?;
            Header::Proxied(SocketAddr::new(ip, port))
        }
        _ => return Err(ProxyError::Malformed("version 1 fields")),
    };
    Ok(Some((end + 2, header)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(usize, Header)>, ProxyError> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed(
            "version 2 header with another version",
        ));
    }
    let fam = buf[13];
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let total = 16 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    let header = match (ver_cmd & 0x0f, fam) {
        (0, _) => Header::Local,
        (1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Header::Proxied(SocketAddr::new(IpAddr::V4(ip), port))
        }
        (1, 0x21) if body.len() >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Header::Proxied(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        // UNSPEC or a socket family without an IP address.
        (1, f) if f >> 4 == 0 || f >> 4 == 3 => Header::Local,
        (1, _) => return Err(ProxyError::Malformed("version 2 address block too short")),
        _ => return Err(ProxyError::Malformed("version 2 command")),
    };
    Ok(Some((total, header)))
}

/// Reads the PROXY header at the start of `tcp` (exactly its bytes, within `deadline`).
pub async fn read_header(tcp: &mut TcpStream, deadline: Duration) -> Result<Header, ProxyError> {
    tokio::time::timeout(deadline, async {
        let mut peeked = vec![0u8; 16 + 536];
        loop {
            let n = tcp
                .peek(&mut peeked)
                .await
                .map_err(|_| ProxyError::Closed)?;
            if n == 0 {
                return Err(ProxyError::Closed);
            }
            match parse(&peeked[..n])? {
                Some((len, header)) => {
                    let mut consumed = vec![0u8; len];
                    tcp.read_exact(&mut consumed)
                        .await
                        .map_err(|_| ProxyError::Closed)?;
                    return Ok(header);
                }
                None if n == peeked.len() => {
                    return Err(ProxyError::Malformed("header longer than accepted"))
                }
                // Not all of it yet: wait a little for more.
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await
    .map_err(|_| ProxyError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1() {
        let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 8443\r\n\x16\x03\x01";
        let (n, hd) = parse(h).unwrap().unwrap();
        assert_eq!(n, h.len() - 3, "stops at the CRLF");
        assert_eq!(hd, Header::Proxied("203.0.113.7:51234".parse().unwrap()));
        let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert_eq!(
            parse(h6).unwrap().unwrap().1,
            Header::Proxied("[2001:db8::1]:1".parse().unwrap())
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().1,
            Header::Local
        );
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4").unwrap(), None, "more needed");
        assert_eq!(parse(b"PRO").unwrap(), None);
        for bad in [
            &b"PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
            b"PROXY TCP9 1.2.3.4 5.6.7.8 1 1\r\n",
            b"PROXY TCP4 a b c d\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        assert!(parse(long.as_bytes()).is_err());
        assert_eq!(
            parse(b"\x16\x03\x01\x02").unwrap_err(),
            ProxyError::NotProxy
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n").unwrap_err(),
            ProxyError::NotProxy
        );
    }

    #[test]
    fn version_2() {
        let mut h = V2_SIG.to_vec();
        h.extend([0x21, 0x11, 0, 12]);
        h.extend([198, 51, 100, 9, 10, 0, 0, 1]);
        h.extend(4321u16.to_be_bytes());
        h.extend(8443u16.to_be_bytes());
        h.extend([0x16, 0x03]);
        let (n, hd) = parse(&h).unwrap().unwrap();
        assert_eq!(n, 28);
        assert_eq!(hd, Header::Proxied("198.51.100.9:4321".parse().unwrap()));
        assert_eq!(parse(&h[..20]).unwrap(), None);
        let mut local = V2_SIG.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).unwrap().unwrap(), (16, Header::Local));
        let mut short = V2_SIG.to_vec();
        short.extend([0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(parse(&short).is_err());
        let mut v3 = V2_SIG.to_vec();
        v3.extend([0x31, 0x11, 0, 0]);
        assert!(parse(&v3).is_err());
    }
}
