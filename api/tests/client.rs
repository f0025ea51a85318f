//! The client against a real HTTPS server (rustls, the pinned root): both faces map the
//! CA's answers the same way, and a TLS alert is recognised by type, not by its text.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{AlertDescription, CertificateError, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use smith_api::chain::AuditAck;
use smith_api::client::{error_chain, MAX_BODY};
use smith_api::{
    AsyncClient, Client, ClientError, ClientOptions, ErrorBody, ErrorCode, Identity, SyncQuery,
    Trust,
};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// What the server answers to a request line (`GET /v1/...`): status and body.
type Handler = fn(&str) -> (u16, Vec<u8>);

struct Server {
    url: String,
    fingerprint: String,
}

fn error_body(code: &str, error: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody {
        code: code.into(),
        error: error.into(),
    })
    .unwrap()
}

fn answers(request_line: &str) -> (u16, Vec<u8>) {
    let path = request_line.split(' ').nth(1).unwrap_or("");
    match path {
        "/v1/health" => (200, br#"{"status":"ok","version":"test"}"#.to_vec()),
        "/v1/ca/user-keys" => (403, error_body("host_removed", "removed by the admin")),
        "/v1/ca/host-keys" => (409, error_body("from_a_newer_ca", "later")),
        "/v1/auth/config" => (502, b"<html>bad gateway</html>".repeat(10_000)),
        "/v1/host/audit/head" => (200, vec![b' '; MAX_BODY + 1]),
        p if p.starts_with("/v1/host/sync?since=3&wait=0&host=web-1") => (204, vec![]),
        _ => (404, error_body("not_found", "no such endpoint")),
    }
}

/// Accepts connections until the test ends; one request per connection.
fn serve(config: rustls::ServerConfig, handler: Handler) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = Arc::new(config);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let config = config.clone();
            std::thread::spawn(move || one(config, stream, handler));
        }
    });
    Server {
        url: format!("https://127.0.0.1:{port}"),
        fingerprint: String::new(),
    }
}

fn one(config: Arc<rustls::ServerConfig>, stream: TcpStream, handler: Handler) {
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req).to_string();
    let (status, body) = handler(text.lines().next().unwrap_or(""));
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        if status == 204 { 0 } else { body.len() }
    );
    let _ = tls.write_all(head.as_bytes());
    if status != 204 {
        let _ = tls.write_all(&body);
    }
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

struct Pki {
    root_der: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let root_key = KeyPair::generate().unwrap();
    let mut rp = CertificateParams::new(Vec::<String>::new()).unwrap();
    rp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    rp.distinguished_name.push(DnType::CommonName, "test root");
    let root = rp.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(rp, root_key);
    let key = KeyPair::generate().unwrap();
    let sp = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = sp.signed_by(&key, &issuer).unwrap();
    Pki {
        root_der: root.der().clone(),
        chain: vec![cert.der().clone(), root.der().clone()],
        key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    smith_api::tls::provider()
}

fn plain_server(handler: Handler) -> Server {
    let p = pki();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(p.chain, p.key)
        .unwrap();
    let mut s = serve(config, handler);
    s.fingerprint = smith_api::tls::fingerprint(&p.root_der);
    s
}

fn options(s: &Server) -> ClientOptions {
    ClientOptions::new(&s.url, Trust::Fingerprint(s.fingerprint.clone()))
}

/// Both faces, the same expectations.
fn check_answers(
    health: Result<smith_api::Health, ClientError>,
    removed: Result<smith_api::CaKeys, ClientError>,
    newer: Result<smith_api::CaKeys, ClientError>,
    too_large: Result<AuditAck, ClientError>,
    sync: Result<Option<smith_proto::snapshot::SyncResponse>, ClientError>,
    proxy_page: Result<smith_api::AuthConfig, ClientError>,
) {
    assert_eq!(health.unwrap().version.as_deref(), Some("test"));
    match removed.unwrap_err() {
        ClientError::Status {
            status: 403,
            code: ErrorCode::HostRemoved,
            message,
            ..
        } => assert_eq!(message, "removed by the admin"),
        e => panic!("{e:?}"),
    }
    let e = newer.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unrecognized));
    assert!(
        e.to_string().contains("(409 from_a_newer_ca): later"),
        "{e}"
    );
    let e = too_large.unwrap_err();
    assert!(
        matches!(&e, ClientError::Decode(m) if m.contains("larger than")),
        "{e:?}"
    );
    assert_eq!(sync.unwrap(), None);
    // A proxy's large error page: its start explains the refusal.
    match proxy_page.unwrap_err() {
        ClientError::Status {
            status: 502,
            wire_code,
            message,
            ..
        } => {
            assert_eq!(wire_code, "http_error");
            assert!(message.starts_with("<html>bad gateway</html>"), "{message}");
        }
        e => panic!("{e:?}"),
    }
}

fn sync_query() -> SyncQuery {
    SyncQuery {
        since: 3,
        wait: 0,
        host: Some(smith_proto::HostName::new("web-1").unwrap()),
        epoch: None,
        beat: None,
    }
}

#[test]
fn the_blocking_face_maps_answers_to_typed_results() {
    let s = plain_server(answers);
    let c = Client::new(options(&s)).unwrap();
    check_answers(
        c.health(),
        c.user_ca_keys(),
        c.host_ca_keys(),
        c.audit_head(),
        c.sync(&sync_query()),
        c.auth_config(),
    );
}

#[tokio::test]
async fn the_async_face_maps_answers_the_same_way() {
    let s = plain_server(answers);
    let c = AsyncClient::new(options(&s)).unwrap();
    check_answers(
        c.health().await,
        c.user_ca_keys().await,
        c.host_ca_keys().await,
        c.audit_head().await,
        c.sync(&sync_query()).await,
        c.auth_config().await,
    );
}

#[test]
fn a_server_outside_the_pin_is_not_reached_and_the_hint_is_said() {
    let s = plain_server(answers);
    let mut opts = ClientOptions::new(
        &s.url,
        Trust::Fingerprint(smith_api::tls::fingerprint(b"another root")),
    );
    opts.unreachable_hint = Some(smith_api::client::CLI_UNREACHABLE_HINT);
    let e = Client::new(opts).unwrap().health().unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("cannot reach the Smith CA at https://127.0.0.1:"),
        "{text}"
    );
    assert!(
        text.contains("does not contain the pinned CA root"),
        "{text}"
    );
    assert!(
        text.ends_with(smith_api::client::CLI_UNREACHABLE_HINT),
        "{text}"
    );
    assert!(e.tls_error().is_some(), "{e:?}");
    assert!(e.code().is_none() && e.status().is_none());
}

/// A server refusing every client certificate as expired, as a TLS server does.
#[derive(Debug)]
struct RefuseAsExpired {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for RefuseAsExpired {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(CertificateError::Expired))
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[test]
fn an_expired_certificate_alert_is_told_by_type() {
    let p = pki();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(RefuseAsExpired {
            provider: provider(),
        }))
        .with_single_cert(p.chain, p.key)
        .unwrap();
    let mut s = serve(config, answers);
    s.fingerprint = smith_api::tls::fingerprint(&p.root_der);
    let key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(vec!["web-1".to_string()]).unwrap();
    cp.distinguished_name.push(DnType::CommonName, "web-1");
    let cert = cp.self_signed(&key).unwrap();
    let mut opts = options(&s);
    opts.identity = Some(Identity {
        cert_pem: cert.pem().into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
    });
    let e = Client::new(opts).unwrap().health().unwrap_err();
    assert_eq!(
        e.tls_error(),
        Some(&rustls::Error::AlertReceived(
            AlertDescription::CertificateExpired
        )),
        "{e:?}"
    );
    let ClientError::Transport { cause, .. } = &e else {
        panic!("{e:?}")
    };
    println!("as people see it: {}", error_chain(cause));
}
