//! A minimal reader for OpenSSH certificates (PROTOCOL.certkeys), enough for the host
//! side to learn what sshd already verified: key ID, serial, principals, validity and
//! Smith's scope extension. It does **not** verify signatures: callers only use it on
//! certificates sshd has accepted (`%k` of `AuthorizedPrincipalsCommand`,
//! `SSH_AUTH_INFO_0` in PAM).

use std::fmt;

/// The certificate extension that carries the scope the engineer requested
/// (`k=v,k=v`), as an SSH string inside the extension data.
pub const SCOPE_EXTENSION: &str = "scope@smith";
/// Largest certificate blob accepted.
pub const MAX_CERT_LEN: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertError {
    Base64,
    Truncated,
    NotACertificate(String),
    TooLarge,
    BadUtf8,
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Base64 => write!(f, "certificate is not valid base64"),
            CertError::Truncated => write!(f, "certificate is truncated"),
            CertError::NotACertificate(t) => {
                write!(f, "key type '{}' is not a certificate", t.escape_debug())
            }
            CertError::TooLarge => write!(f, "certificate is too large"),
            CertError::BadUtf8 => write!(f, "certificate field is not UTF-8"),
        }
    }
}

impl std::error::Error for CertError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub key_type: String,
    pub serial: u64,
    /// 1 = user, 2 = host.
    pub cert_type: u32,
    pub key_id: String,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    pub critical_options: Vec<(String, Vec<u8>)>,
    pub extensions: Vec<(String, Vec<u8>)>,
}

impl CertInfo {
    /// The `scope@smith` extension value, if present.
    pub fn scope(&self) -> Option<String> {
        let (_, data) = self.extensions.iter().find(|(n, _)| n == SCOPE_EXTENSION)?;
        let mut r = Reader { b: data, pos: 0 };
        let s = r.string().ok()?;
        String::from_utf8(s.to_vec()).ok()
    }

    pub fn is_user_cert(&self) -> bool {
        self.cert_type == 1
    }

    /// Whether the certificate is valid at `now` (unix seconds).
    pub fn valid_at(&self, now: u64) -> bool {
        self.valid_after <= now && now < self.valid_before
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CertError> {
        let end = self.pos.checked_add(n).ok_or(CertError::Truncated)?;
        let s = self.b.get(self.pos..end).ok_or(CertError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, CertError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, CertError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn string(&mut self) -> Result<&'a [u8], CertError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn utf8(&mut self) -> Result<String, CertError> {
        String::from_utf8(self.string()?.to_vec()).map_err(|_| CertError::BadUtf8)
    }
    fn name_data_list(&mut self) -> Result<Vec<(String, Vec<u8>)>, CertError> {
        let mut inner = Reader {
            b: self.string()?,
            pos: 0,
        };
        let mut out = Vec::new();
        while inner.pos < inner.b.len() {
            let name = inner.utf8()?;
            let data = inner.string()?.to_vec();
            out.push((name, data));
        }
        Ok(out)
    }
}

/// Number of length-prefixed public key fields after the nonce, by certificate type.
fn key_fields(key_type: &str) -> Option<usize> {
    Some(match key_type {
        "ssh-ed25519-cert-v01@openssh.com" => 1,
        "ssh-rsa-cert-v01@openssh.com" => 2,
        "ecdsa-sha2-nistp256-cert-v01@openssh.com"
        | "ecdsa-sha2-nistp384-cert-v01@openssh.com"
        | "ecdsa-sha2-nistp521-cert-v01@openssh.com" => 2,
        "sk-ssh-ed25519-cert-v01@openssh.com" => 2,
        "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com" => 3,
        "ssh-dss-cert-v01@openssh.com" => 4,
        _ => return None,
    })
}

/// Parses a certificate blob (the binary form, not base64).
pub fn parse_cert(blob: &[u8]) -> Result<CertInfo, CertError> {
    if blob.len() > MAX_CERT_LEN {
        return Err(CertError::TooLarge);
    }
    let mut r = Reader { b: blob, pos: 0 };
    let key_type = r.utf8()?;
    let fields =
        key_fields(&key_type).ok_or_else(|| CertError::NotACertificate(key_type.clone()))?;
    r.string()?; // nonce
    for _ in 0..fields {
        r.string()?;
    }
    let serial = r.u64()?;
    let cert_type = r.u32()?;
    let key_id = r.utf8()?;
    let mut principals = Vec::new();
    let mut pr = Reader {
        b: r.string()?,
        pos: 0,
    };
    while pr.pos < pr.b.len() {
        principals.push(pr.utf8()?);
    }
    let valid_after = r.u64()?;
    let valid_before = r.u64()?;
    let critical_options = r.name_data_list()?;
    let extensions = r.name_data_list()?;
    r.string()?; // reserved
    r.string()?; // signature key
    r.string()?; // signature
    Ok(CertInfo {
        key_type,
        serial,
        cert_type,
        key_id,
        principals,
        valid_after,
        valid_before,
        critical_options,
        extensions,
    })
}

/// Parses the base64 form (as sshd passes it for `%k`).
pub fn parse_cert_base64(b64: &str) -> Result<CertInfo, CertError> {
    if b64.len() > MAX_CERT_LEN * 4 / 3 + 4 {
        return Err(CertError::TooLarge);
    }
    parse_cert(&base64_decode(b64.trim()).ok_or(CertError::Base64)?)
}

/// Finds the first certificate in sshd's `SSH_AUTH_INFO_0`, whose lines look like
/// `publickey ssh-ed25519-cert-v01@openssh.com AAAA...`.
pub fn cert_from_auth_info(info: &str) -> Option<CertInfo> {
    info.lines().find_map(|line| {
        let mut it = line.split_ascii_whitespace();
        if it.next()? != "publickey" {
            return None;
        }
        let ty = it.next()?;
        if !ty.contains("-cert-v01@openssh.com") {
            return None;
        }
        parse_cert_base64(it.next()?).ok()
    })
}

/// Standard base64 (RFC 4648) with optional padding; `None` on any invalid input.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | val(c)?;
        }
        match chunk.len() {
            4 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]),
            3 => {
                acc <<= 6;
                out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8]);
            }
            2 => {
                acc <<= 12;
                out.push((acc >> 16) as u8);
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_str(v: &mut Vec<u8>, s: &[u8]) {
        v.extend_from_slice(&(s.len() as u32).to_be_bytes());
        v.extend_from_slice(s);
    }

    /// A syntactically valid (unsigned) ed25519 user certificate.
    pub(crate) fn fake_cert(key_id: &str, serial: u64, scope: &str) -> Vec<u8> {
        let mut v = Vec::new();
        put_str(&mut v, b"ssh-ed25519-cert-v01@openssh.com");
        put_str(&mut v, &[1; 32]);
        put_str(&mut v, &[2; 32]);
        v.extend_from_slice(&serial.to_be_bytes());
        v.extend_from_slice(&1u32.to_be_bytes());
        put_str(&mut v, key_id.as_bytes());
        let mut p = Vec::new();
        put_str(&mut p, b"alice");
        put_str(&mut v, &p);
        v.extend_from_slice(&100u64.to_be_bytes());
        v.extend_from_slice(&200u64.to_be_bytes());
        put_str(&mut v, b"");
        let mut ext = Vec::new();
        put_str(&mut ext, b"permit-pty");
        put_str(&mut ext, b"");
        put_str(&mut ext, SCOPE_EXTENSION.as_bytes());
        let mut data = Vec::new();
        put_str(&mut data, scope.as_bytes());
        put_str(&mut ext, &data);
        put_str(&mut v, &ext);
        put_str(&mut v, b"");
        put_str(&mut v, b"sigkey");
        put_str(&mut v, b"sig");
        v
    }

    fn b64(data: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in data.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    #[test]
    fn parses_a_certificate() {
        let blob = fake_cert("smith:alice:r1", 42, "env=prod");
        let c = parse_cert(&blob).unwrap();
        assert_eq!(c.key_id, "smith:alice:r1");
        assert_eq!(c.serial, 42);
        assert_eq!(c.principals, vec!["alice"]);
        assert_eq!((c.valid_after, c.valid_before), (100, 200));
        assert_eq!(c.scope().as_deref(), Some("env=prod"));
        assert!(c.is_user_cert());
        assert!(c.valid_at(150) && !c.valid_at(200));
        let info = format!(
            "publickey ssh-ed25519-cert-v01@openssh.com {}\n",
            b64(&blob)
        );
        assert_eq!(cert_from_auth_info(&info).unwrap().serial, 42);
        assert!(cert_from_auth_info("publickey ssh-ed25519 AAAA\n").is_none());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let blob = fake_cert("k", 1, "env=dev");
        for cut in 0..blob.len() {
            assert!(parse_cert(&blob[..cut]).is_err());
        }
        assert!(parse_cert_base64("!!!").is_err());
    }

    #[test]
    fn base64_matches_reference() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a").is_none());
        for n in 0..40u8 {
            let d: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&b64(&d)).unwrap(), d);
        }
    }
}
