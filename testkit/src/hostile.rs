//! Hostile servers, for tests of how a client copes with a broken CA. None of them is a
//! CA: they hold no state and decide nothing; every answer a client gets is the real
//! CA's, passed on, altered, or replaced by an error page.
//!
//! [`TamperingProxy`] is a man-in-the-middle in front of a real [`TestCa`]: it terminates
//! TLS with the CA's own server certificate (so clients pinning the CA's root talk to it),
//! forwards each request to the CA, presenting the host's own client certificate when
//! the test names one, and alters the answers as told ([`Tamper`]).
//!
//! Must never: make up an answer the CA did not give (other than an error page).

use crate::TestCa;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to the CA's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Nothing: every answer passes unchanged.
    Nothing,
    /// Host certificate renewal is answered 404 with an error page, as by a CA from
    /// before renewal existed.
    NoRenewal,
    /// A renewal's SSH host certificates are dropped, as by a CA that signs none.
    DropHostCerts,
    /// A renewal's SSH host certificates come in reverse order, so each certifies
    /// another of the host's keys, as from a broken CA.
    SwapHostCerts,
}

/// A man-in-the-middle in front of a real CA (see the module doc); stopped when dropped.
pub struct TamperingProxy {
    pub url: String,
    tamper: Arc<Mutex<Tamper>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

struct Upstream {
    url: String,
    fingerprint: String,
    /// The client certificate and key files presented to the CA, when they exist.
    identity: Option<(PathBuf, PathBuf)>,
}

impl TamperingProxy {
    /// Listens on 127.0.0.1:<free port> in front of `ca`, presenting the client
    /// certificate and key in `identity` (read at each request: renewal replaces them)
    /// when those files exist.
    pub fn start(
        ca: &TestCa,
        identity: Option<(PathBuf, PathBuf)>,
        tamper: Tamper,
    ) -> TamperingProxy {
        let (cert, key) = ca.tls_server_files();
        let mut chain = smith_api::tls::certs_from_pem(
            std::fs::read_to_string(cert)
                .expect("server cert")
                .as_bytes(),
        )
        .expect("server chain");
        chain.extend(
            smith_api::tls::certs_from_pem(ca.root_pem().as_bytes()).expect("the CA's root"),
        );
        let key = smith_api::tls::key_from_pem(
            std::fs::read_to_string(key).expect("server key").as_bytes(),
        )
        .expect("server key");
        let mut cfg = rustls::ServerConfig::builder_with_provider(smith_api::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tamper = Arc::new(Mutex::new(tamper));
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = Arc::new(Upstream {
            url: ca.url.clone(),
            fingerprint: ca.fingerprint.clone(),
            identity,
        });
        let (t, s) = (tamper.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (cfg, up, t) = (cfg.clone(), upstream.clone(), t.clone());
                std::thread::spawn(move || {
                    let _ = one_request(cfg, conn, &up, &t);
                });
            }
        });
        TamperingProxy {
            url: format!("https://127.0.0.1:{port}"),
            tamper,
            stop,
            port,
        }
    }

    /// Changes what the proxy does from the next request on.
    pub fn set(&self, tamper: Tamper) {
        *self.tamper.lock().unwrap_or_else(|e| e.into_inner()) = tamper;
    }
}

impl Drop for TamperingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one request, forwards it, writes the (altered) answer, closes.
fn one_request(
    cfg: Arc<rustls::ServerConfig>,
    tcp: TcpStream,
    up: &Upstream,
    tamper: &Mutex<Tamper>,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let conn = rustls::ServerConnection::new(cfg).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tls.read(&mut chunk)?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("GET").to_string();
    let target = request_line.next().unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let mode = *tamper.lock().unwrap_or_else(|e| e.into_inner());
    let renewal = method == "POST" && target.starts_with(smith_api::endpoints::HOST_RENEW);
    let (status, content_type, mut answer) = if renewal && mode == Tamper::NoRenewal {
        (
            404,
            "text/plain".to_string(),
            b"404 page not found\n".to_vec(),
        )
    } else {
        forward(up, &method, &target, &headers, body)
    };
    if renewal && status == 200 && matches!(mode, Tamper::DropHostCerts | Tamper::SwapHostCerts) {
        let mut renewed: smith_api::EnrollResponse =
            serde_json::from_slice(&answer).expect("the CA's renewal answer");
        if mode == Tamper::DropHostCerts {
            renewed.ssh_host_certs.clear();
        } else {
            renewed.ssh_host_certs.reverse();
        }
        answer = serde_json::to_vec(&renewed).expect("JSON");
    }
    let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    if status != 204 {
        out.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            answer.len()
        ));
    }
    out.push_str("\r\n");
    tls.write_all(out.as_bytes())?;
    tls.write_all(&answer)?;
    tls.flush()?;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(())
}

/// The CA's answer to the request: (status, content type, body); 502 when unreachable.
fn forward(
    up: &Upstream,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let identity = up.identity.as_ref().and_then(|(cert, key)| {
        Some(smith_api::Identity {
            cert_pem: std::fs::read(cert).ok()?,
            key_pem: std::fs::read(key).ok()?,
        })
    });
    let tls = smith_api::tls::client_config(
        &smith_api::Trust::Fingerprint(up.fingerprint.clone()),
        identity.as_ref(),
    )
    .expect("client TLS config");
    let client = reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut req = client
        .request(method, format!("{}{target}", up.url))
        .body(body);
    for (k, v) in headers {
        if !matches!(
            k.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding"
        ) {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    match req.send() {
        Ok(r) => {
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_string();
            (
                status,
                ct,
                r.bytes().map(|b| b.to_vec()).unwrap_or_default(),
            )
        }
        Err(e) => (
            502,
            "text/plain".into(),
            format!("bad gateway: {e}\n").into_bytes(),
        ),
    }
}
