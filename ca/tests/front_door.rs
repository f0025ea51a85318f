//! The CA's front door, tried as an attacker would through the real `smith-ca`:
//! - a thousand slow connections from one address (run with the systemd unit's file
//!   limit) do not stop `/v1/health` or an issuance from another address: the address
//!   holds its cap of connections, the rest are closed at once;
//! - a client trickling a body is cut off after the body deadline;
//! - credentials come before bodies: an audit upload without a client certificate is
//!   refused as such, its body never parsed;
//! - a thousand forged ID tokens (claiming to be alice) add no decision and no `@ca`
//!   record: they are counted, and the count is shown to the admin only;
//! - audit text with terminal escapes and newlines is shown by `smith-ca admin audit
//!   list` as text, on one line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use serde_json::{json, Value};
use smith_api::chain::{self, GENESIS};
use smith_api::endpoints;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{run, text, TestCa};

/// The open file limit the shipped unit gives the CA: its `LimitNOFILE=`, or systemd's
/// default soft limit (1024) when it sets none; capped at this machine's hard limit
/// (raising that needs CAP_SYS_RESOURCE).
fn unit_nofile() -> u64 {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/systemd/smith-ca.service"),
    )
    .unwrap();
    let unit_limit = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(1024);
    let hard: u64 = text(&run(Command::new("sh").args(["-c", "ulimit -Hn"])).stdout)
        .trim()
        .parse()
        .unwrap_or(u64::MAX);
    unit_limit.min(hard)
}

/// A pinned HTTPS client whose connections come from `from` (another loopback address).
fn client_from(ca: &TestCa, from: &str) -> reqwest::blocking::Client {
    let tls =
        smith_api::tls::client_config(&smith_api::Trust::Fingerprint(ca.fingerprint.clone()), None)
            .unwrap();
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .local_address(from.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A raw TCP connection from `from` to the CA.
fn tcp_from(ca: &TestCa, from: &str) -> TcpStream {
    let addr: SocketAddr = ca.addr().parse().unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(from.parse().unwrap(), 0).into())
        .unwrap();
    sock.connect(&addr.into()).unwrap();
    sock.into()
}

/// Whether the server closed `s` (read returns end of file) within `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0))
        || matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

#[test]
fn slow_and_flooding_clients_do_not_take_the_ca_down() {
    if !support::is_root() {
        eprintln!("skipping: needs root to give the CA the unit's open file limit");
        return;
    }
    let nofile = unit_nofile();
    let limit = format!("--nofile={nofile}:{nofile}");
    let ca = TestCa::start_wrapped(&[], &[], &["prlimit", &limit, "--"]);
    ca.admin_ok(&["user", "add", "alice", "--groups", "dev"]);
    ca.admin_ok(&[
        "grant",
        "add",
        "--group",
        "dev",
        "--tags",
        "env=dev",
        "--level",
        "ssh",
        "--max-ttl",
        "1h",
    ]);
    let alice = ca.user_token("alice");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    assert!(run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key))
    .status
    .success());
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();

    // A thousand connections from one address that never say anything.
    let mut held: Vec<TcpStream> = (0..1000).map(|_| tcp_from(&ca, "127.0.0.1")).collect();
    // Health and an issuance from another address still answer.
    let other = client_from(&ca, "127.0.0.2");
    let t = Instant::now();
    let r = other
        .get(format!("{}{}", ca.url, endpoints::HEALTH))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let health: Value = r.json().unwrap();
    assert!(
        health.get("version").is_none(),
        "no version for anonymous callers: {health}"
    );
    let r = other
        .post(format!("{}{}", ca.url, endpoints::CERTS_USER))
        .bearer_auth(&alice)
        .json(&json!({"public_key": pubkey.trim(), "scope": "env=dev", "ttl_secs": 600}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
    eprintln!(
        "health and an issuance answered in {:?} with 1,000 idle connections open",
        t.elapsed()
    );
    // The flooding address holds at most its cap: the rest were closed at once.
    let closed = held
        .iter_mut()
        .filter_map(|s| closed_within(s, Duration::from_millis(50)).then_some(()))
        .count();
    let cap = smith_ca::server::DEFAULT_MAX_CONNECTIONS_PER_SOURCE;
    assert!(
        closed >= 1000 - cap,
        "only {closed} of 1,000 closed (cap {cap})"
    );
    drop(held);

    // A body trickled a byte at a time is cut off after the body deadline (20 s).
    let mut slow = tls_stream(&ca, "127.0.0.3");
    slow.write_all(
        format!(
            "POST /v1/hosts/enroll HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: 60000\r\n\r\n{{",
            ca.addr()
        )
        .as_bytes(),
    )
    .unwrap();
    let t = Instant::now();
    let mut answer = Vec::new();
    slow.sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    while t.elapsed() < Duration::from_secs(40) {
        let _ = slow.write_all(b" ");
        let mut b = [0u8; 4096];
        match slow.read(&mut b) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&b[..n]);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    eprintln!(
        "a trickled body was cut off after {:?}: {answer:.60}",
        t.elapsed()
    );
    assert!(
        t.elapsed() < Duration::from_secs(35),
        "still open after {:?}",
        t.elapsed()
    );
    assert!(answer.is_empty() || answer.contains("408"), "{answer}");
}

/// A TLS connection (pinned root) from `from`.
fn tls_stream(ca: &TestCa, from: &str) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let cfg =
        smith_api::tls::client_config(&smith_api::Trust::Fingerprint(ca.fingerprint.clone()), None)
            .unwrap();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(cfg),
        rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    rustls::StreamOwned::new(conn, tcp_from(ca, from))
}

#[test]
fn credentials_are_checked_before_a_body_is_read() {
    let ca = TestCa::start();
    // Not JSON at all, and no client certificate: refused for the missing certificate
    // (the body was never parsed; before, it answered 400 for the body).
    let r = ca
        .http(None)
        .post(format!("{}{}", ca.url, endpoints::HOST_AUDIT))
        .header("content-type", "application/json")
        .body("this is not json".repeat(1000))
        .send()
        .unwrap();
    let s = r.status().as_u16();
    let b: Value = r.json().unwrap();
    assert_eq!(
        (s, b["code"].as_str()),
        (401, Some("client_cert_required")),
        "{b}"
    );
    // An enrollment token in the Authorization header is checked first too.
    let r = ca
        .http(None)
        .post(format!("{}{}", ca.url, endpoints::HOSTS_ENROLL))
        .bearer_auth("smith_enroll_made_up")
        .header("content-type", "application/json")
        .body("{")
        .send()
        .unwrap();
    let s = r.status().as_u16();
    let b: Value = r.json().unwrap();
    assert_eq!((s, b["code"].as_str()), (401, Some("invalid_token")), "{b}");
}

/// A JWT-shaped token nobody signed: `{"alg":"RS256","kid":K}.{claims}.sig`.
fn forged(issuer: &str, user: &str, i: usize) -> String {
    use base64::Engine;
    let b64 = |v: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    format!(
        "{}.{}.{}",
        b64(json!({"alg": "RS256", "typ": "JWT", "kid": format!("k{i}")})),
        b64(
            json!({"iss": issuer, "aud": "smith", "sub": "s", "preferred_username": user,
                   "exp": 4_000_000_000u64, "iat": 1, "pad": "A".repeat(8000)})
        ),
        "c2lnbmF0dXJl"
    )
}

#[test]
fn forged_tokens_leave_no_record_and_are_counted() {
    let issuer = "https://idp.invalid";
    let ca = TestCa::start_with(&[], &["--oidc-issuer", issuer, "--oidc-client-id", "smith"]);
    let decisions = |ca: &TestCa| -> usize {
        let v: Value =
            serde_json::from_str(&ca.admin_ok(&["decisions", "--limit", "10000", "--json"]))
                .unwrap();
        v.as_array().unwrap().len()
    };
    let ca_records = |ca: &TestCa| -> u64 {
        let v: Value = serde_json::from_str(&ca.admin_ok(&["audit", "verify", "--json"])).unwrap();
        v["records"].as_u64().unwrap()
    };
    let (d0, r0) = (decisions(&ca), ca_records(&ca));
    let http = ca.http(None);
    let mut codes = std::collections::BTreeMap::new();
    for i in 0..1000 {
        let iss = if i % 2 == 0 {
            issuer.to_string()
        } else {
            "A".repeat(4000)
        };
        let r = http
            .post(format!("{}{}", ca.url, endpoints::CERTS_USER))
            .bearer_auth(forged(&iss, "alice", i))
            .json(&json!({"public_key": "ssh-ed25519 AAAA", "ttl_secs": 600}))
            .send()
            .unwrap();
        *codes.entry(r.status().as_u16()).or_insert(0) += 1;
    }
    assert!(codes.keys().all(|s| *s == 401 || *s == 503), "{codes:?}");
    assert_eq!(decisions(&ca), d0, "no decision recorded");
    assert_eq!(ca_records(&ca), r0, "nothing added to the @ca chain");
    let listed = ca.admin_ok(&["decisions", "--limit", "10000"]);
    assert!(
        !listed.contains("alice"),
        "an unverified claim was shown: {listed}"
    );
    // The admin sees how many were refused; an anonymous caller does not.
    let admin_health: Value = ca
        .http(None)
        .get(format!("{}{}", ca.url, endpoints::HEALTH))
        .bearer_auth(&ca.admin_token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        admin_health["rejected_credentials"].as_u64().unwrap() >= 1000,
        "{admin_health}"
    );
    assert!(admin_health["version"].is_string());
}

#[test]
fn audit_text_is_shown_as_text() {
    let ca = TestCa::start();
    let token = ca
        .admin_ok(&["host", "token", "--tags", "env=prod", "--name", "web-1"])
        .trim()
        .to_string();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["x".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let r = ca
        .http(None)
        .post(format!("{}{}", ca.url, endpoints::HOSTS_ENROLL))
        .json(&json!({"token": token, "host_name": "web-1", "csr_pem": csr}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let b: Value = r.json().unwrap();
    let id = smith_api::Identity {
        cert_pem: b["client_cert_pem"].as_str().unwrap().as_bytes().to_vec(),
        key_pem: key.serialize_pem().into_bytes(),
    };
    // A sudo whose command line and working directory carry a terminal escape and a
    // forged second line.
    let event = json!({
        "type": "sudo", "user": "oscar", "target": "root", "allowed": true,
        "command": "true \u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{1b}[2K",
        "cwd": "/tmp/x\n2026-12-04T00:00:00Z web-1    #9     sudo ALLOWED by bob",
        "tty": "pts/0", "key_id": "", "at_unix": 1_800_000_000u64,
    });
    let rec = chain::next_record("web-1", 0, &GENESIS, event.to_string());
    let r = ca
        .http(Some(&id))
        .post(format!("{}{}", ca.url, endpoints::HOST_AUDIT))
        .json(&json!({"records": [rec]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
    let out = ca.admin_ok(&["audit", "list", "--host", "web-1"]);
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{7}'),
        "raw control characters: {out:?}"
    );
    assert_eq!(
        out.trim_end().lines().count(),
        1,
        "one record, one line: {out}"
    );
    assert!(out.contains("\\x1b]52;c;"), "{out}");
    assert!(out.contains("/tmp/x\\x0a2026"), "{out}");
}

/// A fleet behind one NAT address: hosts' mTLS connections (a client certificate this
/// CA signed) do not count against their address's cap, so more hosts than the cap
/// keep their connections open from one address, and an engineer behind the same
/// address still gets in. (Counting every connection, the hosts past the cap were
/// reset.)
#[test]
fn hosts_behind_one_address_are_not_capped() {
    // Each blocking client here holds a few descriptors: room for them in this process.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let ca = TestCa::start();
    let id = ca.enroll_host("web-1", "env=dev");
    let cap = smith_ca::server::DEFAULT_MAX_CONNECTIONS_PER_SOURCE;
    let hosts: Vec<reqwest::blocking::Client> = (0..cap + 20).map(|_| ca.http(Some(&id))).collect();
    for (i, h) in hosts.iter().enumerate() {
        let r = h
            .get(format!("{}{}", ca.url, endpoints::HEALTH))
            .send()
            .unwrap_or_else(|e| {
                panic!(
                    "host connection {i} of {}: {}\n--- CA log:\n{}",
                    hosts.len(),
                    smith_api::client::error_chain(&e),
                    ca.log()
                )
            });
        assert_eq!(r.status().as_u16(), 200);
    }
    // All of them are still open (keep-alive), and an anonymous caller gets in.
    let r = client_from(&ca, "127.0.0.1")
        .get(format!("{}{}", ca.url, endpoints::HEALTH))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
