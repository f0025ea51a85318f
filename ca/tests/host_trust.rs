//! Trusted hosts through the real `smith-ca`: SSH host certificate principals (the host
//! name plus only the names its enrollment token allows), host keys signed again on
//! renewal with `--host-ssh-cert-ttl`, and the mTLS lifecycle: a removed host is refused
//! (403 `host_removed`) on sync, renew and audit; an expired or not-yet-valid client
//! certificate gets through TLS and is refused with 401 and advice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use serde_json::{json, Value};
use smith_api::{endpoints, ErrorCode};
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};
use support::{code_of, keygen_l, run, TestCa};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["ignored".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key.serialize_pem(), csr)
}

fn post(ca: &TestCa, path: &str, body: Value, id: Option<&smith_api::Identity>) -> (u16, Value) {
    let r = ca
        .http(id)
        .post(format!("{}{path}", ca.url))
        .json(&body)
        .send()
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

fn get(ca: &TestCa, path: &str, id: Option<&smith_api::Identity>) -> (u16, Value) {
    let r = ca.http(id).get(format!("{}{path}", ca.url)).send().unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

/// An enrollment token for hosts web-1 and web-2 (and what `extra` adds).
fn token(ca: &TestCa, extra: &[&str]) -> String {
    let mut a = vec![
        "host", "token", "--tags", "env=prod", "--ttl", "1h", "--name", "web-1", "--name", "web-2",
    ];
    a.extend_from_slice(extra);
    ca.admin_ok(&a).trim().to_string()
}

/// Enrolls; returns (status, body, identity when 201).
fn enroll(
    ca: &TestCa,
    token: &str,
    name: &str,
    ssh_names: &[&str],
    keys: &[&str],
) -> (u16, Value, Option<smith_api::Identity>) {
    let (key_pem, csr_pem) = csr();
    let mut body = json!({"token": token, "host_name": name, "csr_pem": csr_pem,
                          "ssh_host_keys": keys});
    if !ssh_names.is_empty() {
        body["ssh_names"] = json!(ssh_names);
    }
    let (s, b) = post(ca, endpoints::HOSTS_ENROLL, body, None);
    let id = (s == 201).then(|| smith_api::Identity {
        cert_pem: b["client_cert_pem"].as_str().unwrap().as_bytes().to_vec(),
        key_pem: key_pem.into_bytes(),
    });
    (s, b, id)
}

fn principals_of(dir: &Path, cert_line: &str) -> (Vec<String>, String) {
    let f = dir.join("host-cert.pub");
    std::fs::write(&f, format!("{cert_line}\n")).unwrap();
    let l = keygen_l(&f);
    (l.principals, l.valid)
}

/// `ssh-keygen -L`'s "from A to B" in seconds.
fn span_secs(valid: &str) -> i64 {
    let parts: Vec<&str> = valid.split_whitespace().collect();
    assert_eq!(parts.len(), 4, "{valid}");
    let t = |s: &str| {
        humantime::parse_rfc3339_weak(&s.replace('T', " "))
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    t(parts[3]) - t(parts[1])
}

#[test]
fn ssh_host_names_only_as_the_token_allows_and_renewal_signs_again() {
    let mut ca = TestCa::start_with(&[], &["--host-ssh-cert-ttl", "2h"]);
    let dir = tempfile::tempdir().unwrap();
    let k1 = host_key(dir.path(), "k1");
    let k2 = host_key(dir.path(), "k2");
    let t = token(
        &ca,
        &[
            "--ssh-name",
            "web.example.com",
            "--ssh-name",
            "www.example.com",
        ],
    );

    // A name the token does not allow: 403, nothing issued, the token still usable.
    let (s, b, _) = enroll(&ca, &t, "web-1", &["db.example.com"], &[&k1]);
    assert_eq!((s, code_of(&b)), (403, ErrorCode::SshNameNotAllowed), "{b}");
    let msg = b["error"].as_str().unwrap();
    assert!(
        msg.contains("db.example.com")
            && msg.contains("web.example.com")
            && msg.contains("not used"),
        "{msg}"
    );
    // A plain token allows no extra name at all.
    let plain = token(&ca, &[]);
    let (s, b, _) = enroll(&ca, &plain, "web-1", &["web.example.com"], &[&k1]);
    assert_eq!((s, code_of(&b)), (403, ErrorCode::SshNameNotAllowed));

    // Allowed names (and the host's own name, which is always first) are principals.
    let (s, b, id) = enroll(&ca, &t, "web-1", &["web.example.com", "web-1"], &[&k1, &k2]);
    assert_eq!(s, 201, "{b}");
    let id = id.unwrap();
    let certs = b["ssh_host_certs"].as_array().unwrap();
    assert_eq!(certs.len(), 2);
    for c in certs {
        let (p, valid) = principals_of(dir.path(), c.as_str().unwrap());
        assert_eq!(p, vec!["web-1", "web.example.com"]);
        // --host-ssh-cert-ttl 2h (plus the 5 minute backdating).
        assert_eq!(span_secs(&valid), 2 * 3600 + 300, "{valid}");
    }
    // Shown by `host list`, and kept across a restart.
    let show = |ca: &TestCa| -> Value {
        serde_json::from_str::<Value>(&ca.admin_ok(&["host", "list", "--json"])).unwrap()[0]
            ["ssh_names"]
            .clone()
    };
    assert_eq!(show(&ca), json!(["web-1", "web.example.com"]));
    assert!(ca
        .admin_ok(&["host", "list"])
        .contains("ssh names web.example.com"));
    ca.restart();
    assert_eq!(show(&ca), json!(["web-1", "web.example.com"]));

    // Renewal signs the host keys again with the same principals.
    let (_, csr_pem) = csr();
    let (s, r) = post(
        &ca,
        endpoints::HOST_RENEW,
        json!({"csr_pem": csr_pem, "ssh_host_keys": [k2]}),
        Some(&id),
    );
    assert_eq!(s, 200, "{r}");
    let renewed = r["ssh_host_certs"].as_array().unwrap();
    assert_eq!(renewed.len(), 1);
    let (p, valid) = principals_of(dir.path(), renewed[0].as_str().unwrap());
    assert_eq!(p, vec!["web-1", "web.example.com"]);
    assert_eq!(span_secs(&valid), 2 * 3600 + 300);
    // It certifies the key that was sent (same fingerprint).
    let fp = |p: &Path| {
        let out = run(Command::new("ssh-keygen").args(["-l", "-f"]).arg(p));
        support::text(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let f = dir.path().join("renewed-cert.pub");
    std::fs::write(&f, format!("{}\n", renewed[0].as_str().unwrap())).unwrap();
    assert_eq!(fp(&f), fp(&dir.path().join("k2.pub")));
    // Without host keys, renewal answers no host certificate (the old shape).
    let (_, csr_pem) = csr();
    let (s, r) = post(
        &ca,
        endpoints::HOST_RENEW,
        json!({"csr_pem": csr_pem}),
        Some(&id),
    );
    assert_eq!(s, 200);
    assert_eq!(r["ssh_host_certs"], json!([]));

    // Another host cannot take web-1's names, even with a token allowing them, nor
    // enroll under a name that is web-1's SSH name.
    let t2 = token(&ca, &["--ssh-name", "web.example.com"]);
    let (s, b, _) = enroll(&ca, &t2, "web-2", &["web.example.com"], &[&k1]);
    assert_eq!((s, code_of(&b)), (409, ErrorCode::SshNameTaken), "{b}");
    let (s, b, _) = enroll(&ca, &t2, "web.example.com", &[], &[&k1]);
    assert_eq!((s, code_of(&b)), (409, ErrorCode::SshNameTaken), "{b}");
    // Once web-1 is removed, they are free.
    ca.admin_ok(&["host", "remove", "web-1"]);
    let (s, b, _) = enroll(&ca, &t2, "web-2", &["web.example.com"], &[&k1]);
    assert_eq!(s, 201, "{b}");
}

#[test]
fn removed_host_is_refused_on_sync_renew_and_audit() {
    let ca = TestCa::start();
    let (s, _, id) = enroll(&ca, &token(&ca, &[]), "web-1", &[], &[]);
    assert_eq!(s, 201);
    let id = id.unwrap();
    assert_eq!(
        get(&ca, &format!("{}?since=0", endpoints::HOST_SYNC), Some(&id)).0,
        200
    );
    assert_eq!(get(&ca, endpoints::HOST_AUDIT_HEAD, Some(&id)).0, 200);

    ca.admin_ok(&["host", "remove", "web-1"]);
    let (_, csr_pem) = csr();
    for (what, (s, b)) in [
        (
            "sync",
            get(&ca, &format!("{}?since=0", endpoints::HOST_SYNC), Some(&id)),
        ),
        (
            "audit head",
            get(&ca, endpoints::HOST_AUDIT_HEAD, Some(&id)),
        ),
        (
            "renew",
            post(
                &ca,
                endpoints::HOST_RENEW,
                json!({"csr_pem": csr_pem}),
                Some(&id),
            ),
        ),
        (
            "audit upload",
            post(
                &ca,
                endpoints::HOST_AUDIT,
                json!({"records": []}),
                Some(&id),
            ),
        ),
    ] {
        assert_eq!(
            (s, code_of(&b)),
            (403, ErrorCode::HostRemoved),
            "{what}: {b}"
        );
        assert!(
            b["error"].as_str().unwrap().contains("removed")
                && b["error"].as_str().unwrap().contains("smith-host activate"),
            "{what}: {b}"
        );
    }
}

/// A client certificate for `cn` with `serial_hex`, signed by the CA's own TLS root, valid
/// from `nb` to `na` (Unix seconds), for the key in `key_pem`.
fn forge(ca: &TestCa, cn: &str, serial_hex: &str, key_pem: &str, nb: u64, na: u64) -> Vec<u8> {
    let root_pem = std::fs::read_to_string(ca.data_dir.join("tls-root.crt")).unwrap();
    let root_key = rcgen::KeyPair::from_pem(
        &std::fs::read_to_string(ca.data_dir.join("tls-root.key")).unwrap(),
    )
    .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&root_pem, root_key).unwrap();
    let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
    let mut p = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.serial_number = Some(rcgen::SerialNumber::from_slice(
        &hex::decode(serial_hex).unwrap(),
    ));
    p.not_before = time::OffsetDateTime::from_unix_timestamp(nb as i64).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(na as i64).unwrap();
    p.signed_by(&key, &issuer).unwrap().pem().into_bytes()
}

fn serial_of(cert_pem: &[u8]) -> String {
    let der = smith_api::tls::certs_from_pem(cert_pem).unwrap();
    let (_, c) = x509_parser::parse_x509_certificate(der[0].as_ref()).unwrap();
    hex::encode(c.tbs_certificate.raw_serial())
}

#[test]
fn expired_or_not_yet_valid_client_certificates_get_401_with_advice() {
    let ca = TestCa::start();
    let (s, _, id) = enroll(&ca, &token(&ca, &[]), "web-1", &[], &[]);
    assert_eq!(s, 201);
    let id = id.unwrap();
    let serial = serial_of(&id.cert_pem);
    let key_pem = String::from_utf8(id.key_pem.clone()).unwrap();
    let t = now();

    // The same certificate (serial, name, key) but expired an hour ago.
    let expired = smith_api::Identity {
        cert_pem: forge(&ca, "web-1", &serial, &key_pem, t - 86400, t - 3600),
        key_pem: id.key_pem.clone(),
    };
    let (_, csr_pem) = csr();
    for (what, (s, b)) in [
        (
            "sync",
            get(
                &ca,
                &format!("{}?since=0", endpoints::HOST_SYNC),
                Some(&expired),
            ),
        ),
        (
            "renew",
            post(
                &ca,
                endpoints::HOST_RENEW,
                json!({"csr_pem": csr_pem}),
                Some(&expired),
            ),
        ),
        (
            "audit upload",
            post(
                &ca,
                endpoints::HOST_AUDIT,
                json!({"records": []}),
                Some(&expired),
            ),
        ),
    ] {
        assert_eq!(
            (s, code_of(&b)),
            (401, ErrorCode::ClientCertExpired),
            "{what}: {b}"
        );
        let msg = b["error"].as_str().unwrap();
        assert!(
            msg.contains("client certificate expired at")
                && msg.contains("re-enroll with smith-host activate --token"),
            "{what}: {msg}"
        );
    }
    // Not valid yet: a clock problem, said so.
    let future = smith_api::Identity {
        cert_pem: forge(&ca, "web-1", &serial, &key_pem, t + 3600, t + 86400),
        key_pem: id.key_pem.clone(),
    };
    let (s, b) = get(
        &ca,
        &format!("{}?since=0", endpoints::HOST_SYNC),
        Some(&future),
    );
    assert_eq!(
        (s, code_of(&b)),
        (401, ErrorCode::ClientCertNotYetValid),
        "{b}"
    );
    assert!(b["error"].as_str().unwrap().contains("clock"), "{b}");
    // The real one still works.
    assert_eq!(
        get(&ca, &format!("{}?since=0", endpoints::HOST_SYNC), Some(&id)).0,
        200
    );

    // An expired certificate from another root is still refused in the handshake.
    let other_root = TestCa::start();
    let foreign = smith_api::Identity {
        cert_pem: forge(&other_root, "web-1", &serial, &key_pem, t - 86400, t - 3600),
        key_pem: id.key_pem.clone(),
    };
    let r = ca
        .http(Some(&foreign))
        .get(format!("{}{}?since=0", ca.url, endpoints::HOST_SYNC))
        .send();
    assert!(
        r.is_err(),
        "a foreign certificate got an HTTP answer: {r:?}"
    );
}

fn host_key(dir: &Path, name: &str) -> String {
    support::ssh_host_key(dir, name)
}
