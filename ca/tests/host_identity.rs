//! Hosts are who they say, tried as an attacker would through the real `smith-ca`:
//! - an enrollment token names the hosts it allows: a dev token used to enroll as
//!   `github.com` or an IP gets nothing, a reusable token enrolls exactly its count under
//!   its pattern;
//! - SSH host certificates are recorded, listed and revocable, and a removed host's are
//!   revoked: the host KRL (`GET /v1/ca/host-krl`) names them for `ssh-keygen -Q`;
//! - one identity per host: a second holder of a host's key renewing is refused and
//!   recorded, the real host keeps working, and a replaced certificate stops working
//!   after the overlap.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use serde_json::{json, Value};
use smith_api::endpoints;
use std::path::Path;
use std::process::Command;
use support::{run, text, TestCa};

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

fn call(
    ca: &TestCa,
    method: &str,
    path: &str,
    body: Option<Value>,
    id: Option<&smith_api::Identity>,
) -> (u16, Value) {
    let url = format!("{}{path}", ca.url);
    let http = ca.http(id);
    let req = match method {
        "GET" => http.get(url),
        _ => http.post(url),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let r = req.send().unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

fn token(ca: &TestCa, tags: &str, extra: &[&str]) -> String {
    let mut a = vec!["host", "token", "--tags", tags, "--ttl", "1h"];
    a.extend_from_slice(extra);
    ca.admin_ok(&a).trim().to_string()
}

/// Enrolls `name` with `token` (and host keys): (status, body, identity when 201).
fn enroll(
    ca: &TestCa,
    token: &str,
    name: &str,
    ssh_names: &[&str],
    keys: &[&str],
) -> (u16, Value, Option<smith_api::Identity>) {
    let (key_pem, csr_pem) = csr();
    let body = json!({"token": token, "host_name": name, "csr_pem": csr_pem,
                      "ssh_host_keys": keys, "ssh_names": ssh_names});
    let (s, b) = call(ca, "POST", endpoints::HOSTS_ENROLL, Some(body), None);
    let id = (s == 201).then(|| smith_api::Identity {
        cert_pem: b["client_cert_pem"].as_str().unwrap().as_bytes().to_vec(),
        key_pem: key_pem.into_bytes(),
    });
    (s, b, id)
}

/// Renews with `id`: (status, body, the new identity when 200).
fn renew(ca: &TestCa, id: &smith_api::Identity) -> (u16, Value, Option<smith_api::Identity>) {
    let (key_pem, csr_pem) = csr();
    let (s, b) = call(
        ca,
        "POST",
        endpoints::HOST_RENEW,
        Some(json!({"csr_pem": csr_pem})),
        Some(id),
    );
    let new = (s == 200).then(|| smith_api::Identity {
        cert_pem: b["client_cert_pem"].as_str().unwrap().as_bytes().to_vec(),
        key_pem: key_pem.into_bytes(),
    });
    (s, b, new)
}

fn sync_status(ca: &TestCa, id: &smith_api::Identity) -> (u16, Value) {
    call(
        ca,
        "GET",
        &format!("{}?since=0", endpoints::HOST_SYNC),
        None,
        Some(id),
    )
}

fn hosts(ca: &TestCa) -> Vec<String> {
    let v: Value = serde_json::from_str(&ca.admin_ok(&["host", "list", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_token_enrolls_only_the_names_it_allows() {
    let ca = TestCa::start();
    let dir = tempfile::tempdir().unwrap();
    let k = host_key(dir.path(), "k");
    // A dev token for dev-1: github.com, an IP and a name under its domain are refused
    // before anything is issued, and the token stays usable.
    let dev = token(&ca, "env=dev", &["--name", "dev-1.dev.example.com"]);
    for name in [
        "github.com",
        "10.0.0.5",
        "bastion.corp.example.com",
        "localhost",
    ] {
        let (s, b, _) = enroll(&ca, &dev, name, &[], &[&k]);
        assert_eq!(
            (s, b["code"].as_str()),
            (403, Some("host_name_not_allowed")),
            "{name}: {b}"
        );
        assert!(b["error"].as_str().unwrap().contains("was not used"), "{b}");
    }
    // An SSH name it does not allow is refused the same way.
    let (s, b, _) = enroll(&ca, &dev, "dev-1.dev.example.com", &["github.com"], &[&k]);
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("ssh_name_not_allowed")),
        "{b}"
    );
    assert!(hosts(&ca).is_empty(), "nothing enrolled");
    let certs: Value = serde_json::from_str(&ca.admin_ok(&["host", "certs", "--json"])).unwrap();
    assert_eq!(certs, json!([]), "no host certificate was signed");
    let (s, b, _) = enroll(&ca, &dev, "dev-1.dev.example.com", &[], &[&k]);
    assert_eq!(s, 201, "{b}");
    // A pattern covers one label under its domain, never an IP or the domain itself.
    let pat = token(
        &ca,
        "env=prod",
        &["--name", "*.prod.example.com", "--uses", "3"],
    );
    for name in [
        "10.0.0.5",
        "prod.example.com",
        "a.b.prod.example.com",
        "prod.example.com.evil.net",
    ] {
        let (s, _, _) = enroll(&ca, &pat, name, &[], &[]);
        assert_eq!(s, 403, "{name}");
    }
    // An IP literal only when a token names it exactly.
    let ip = token(&ca, "env=prod", &["--name", "10.0.0.5"]);
    let (s, b, _) = enroll(&ca, &ip, "10.0.0.5", &[], &[]);
    assert_eq!(s, 201, "{b}");
    // A reusable token enrolls three hosts under its pattern, and not a fourth.
    for n in ["web-1", "web-2", "web-3"] {
        let (s, b, _) = enroll(&ca, &pat, &format!("{n}.prod.example.com"), &[], &[]);
        assert_eq!(s, 201, "{n}: {b}");
    }
    let (s, b, _) = enroll(&ca, &pat, "web-4.prod.example.com", &[], &[]);
    assert_eq!((s, b["code"].as_str()), (401, Some("token_used")), "{b}");
    // The CA tells clients which names it certifies, for @cert-authority lines.
    let (_, keys) = call(&ca, "GET", endpoints::CA_HOST_KEYS, None, None);
    let patterns: Vec<&str> = keys["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(patterns.contains(&"web-1.prod.example.com"), "{patterns:?}");
    assert!(!patterns.contains(&"github.com"), "{patterns:?}");
}

/// `ssh-keygen -Q -f KRL CERT`: whether the certificate is revoked.
fn revoked_by(dir: &Path, krl_b64: Option<&str>, cert_line: &str) -> bool {
    use base64::Engine;
    let krl = dir.join("hosts.krl");
    // No KRL: nothing is revoked (clients write an empty RevokedHostKeys file).
    let Some(b) = krl_b64 else { return false };
    let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
    std::fs::write(&krl, bytes).unwrap();
    let c = dir.join("host-cert.pub");
    std::fs::write(&c, format!("{cert_line}\n")).unwrap();
    let out = run(Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(&krl)
        .arg(&c));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains(": ok") || said.contains("REVOKED"), "{said}");
    said.contains("REVOKED")
}

#[test]
fn host_certificates_are_recorded_revocable_and_revoked_with_their_host() {
    let ca = TestCa::start();
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (host_key(dir.path(), "k1"), host_key(dir.path(), "k2"));
    let (s, b, _) = enroll(
        &ca,
        &token(&ca, "env=prod", &["--name", "web-1"]),
        "web-1",
        &[],
        &[&k1, &k2],
    );
    assert_eq!(s, 201, "{b}");
    let c1 = b["ssh_host_certs"][0].as_str().unwrap().to_string();
    let c2 = b["ssh_host_certs"][1].as_str().unwrap().to_string();
    let (s, b, _) = enroll(
        &ca,
        &token(&ca, "env=prod", &["--name", "db-1"]),
        "db-1",
        &[],
        &[&k1],
    );
    assert_eq!(s, 201, "{b}");
    let d1 = b["ssh_host_certs"][0].as_str().unwrap().to_string();
    let listed: Value =
        serde_json::from_str(&ca.admin_ok(&["host", "certs", "--host", "web-1", "--json"]))
            .unwrap();
    let serials: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_u64().unwrap())
        .collect();
    assert_eq!(serials.len(), 2);
    let krl = |ca: &TestCa| call(ca, "GET", endpoints::CA_HOST_KRL, None, None).1;
    assert!(!revoked_by(
        dir.path(),
        krl(&ca)["krl_base64"].as_str(),
        &c1
    ));
    // Revoked by serial: that certificate only.
    let out = ca.admin_ok(&[
        "host",
        "cert",
        "revoke",
        "--serial",
        &serials[0].to_string(),
        "--reason",
        "key leaked",
    ]);
    assert!(out.contains("REVOKED serial"), "{out}");
    let k = krl(&ca);
    let by_serial = |line: &str| {
        let l = support::keygen_l({
            let f = dir.path().join("probe-cert.pub");
            std::fs::write(&f, format!("{line}\n")).unwrap();
            &f.clone()
        });
        l.serial
    };
    let (revoked, kept) = if by_serial(&c1) == serials[0] {
        (&c1, &c2)
    } else {
        (&c2, &c1)
    };
    assert!(revoked_by(dir.path(), k["krl_base64"].as_str(), revoked));
    assert!(!revoked_by(dir.path(), k["krl_base64"].as_str(), kept));
    // A removed host's certificates are revoked with it; another host's are not.
    ca.admin_ok(&["host", "remove", "web-1"]);
    let k = krl(&ca);
    assert!(revoked_by(dir.path(), k["krl_base64"].as_str(), kept));
    assert!(!revoked_by(dir.path(), k["krl_base64"].as_str(), &d1));
    // The @ca chain has each revocation.
    let trail: Value =
        serde_json::from_str(&ca.admin_ok(&["audit", "list", "--host", "@ca", "--json"])).unwrap();
    let revocations: Vec<&Value> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "host_cert_revocation")
        .collect();
    assert_eq!(revocations.len(), 2, "{trail}");
    assert_eq!(revocations[0]["event"]["reason"], "key leaked");
    assert_eq!(revocations[1]["event"]["via"], "host_removed");
}

#[test]
fn a_second_holder_of_a_host_identity_is_refused_and_the_real_host_keeps_working() {
    let ca = TestCa::start_with(&[], &["--host-cert-overlap", "2s"]);
    let (s, b, id) = enroll(
        &ca,
        &token(&ca, "env=prod", &["--name", "web-1"]),
        "web-1",
        &[],
        &[],
    );
    assert_eq!(s, 201, "{b}");
    let stolen = id.unwrap();
    let real = stolen.clone();
    // The real host renews and uses its new certificate.
    let (s, b, new) = renew(&ca, &real);
    assert_eq!(s, 200, "{b}");
    let real = new.unwrap();
    assert_eq!(sync_status(&ca, &real).0, 200);
    // The thief, holding a copy of the old key and certificate, tries to renew.
    let (s, b, _) = renew(&ca, &stolen);
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("host_identity_forked")),
        "{b}"
    );
    // It is on record, and the real host keeps working.
    let trail = ca.admin_ok(&["audit", "list", "--host", "@ca", "--json"]);
    assert!(trail.contains("host_identity_forked"), "{trail}");
    assert_eq!(sync_status(&ca, &real).0, 200);
    let (s, b, _) = renew(&ca, &real);
    assert_eq!(s, 200, "{b}");
    // After the overlap, the replaced certificate does not work at all.
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let (s, b) = sync_status(&ca, &stolen);
    assert_eq!(
        (s, b["code"].as_str()),
        (401, Some("client_cert_superseded")),
        "{b}"
    );
}

#[test]
fn an_admin_sets_a_hosts_tags_and_its_next_sync_follows() {
    let ca = TestCa::start();
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
    let (_, _, id) = enroll(
        &ca,
        &token(&ca, "env=prod", &["--name", "web-1"]),
        "web-1",
        &[],
        &[],
    );
    let id = id.unwrap();
    let users = |ca: &TestCa| -> Vec<String> {
        let (s, b) = sync_status(ca, &id);
        assert_eq!(s, 200, "{b}");
        b["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(users(&ca).is_empty());
    let out = ca.admin_ok(&["host", "tags", "web-1", "--set", "env=dev"]);
    assert!(out.contains("env=dev"), "{out}");
    assert_eq!(users(&ca), vec!["alice"]);
    // A host cannot choose its tags: the admin endpoint needs the admin token.
    let (s, _) = call(
        &ca,
        "POST",
        &endpoints::admin_host_tags(&smith_proto::HostName::new("web-1").unwrap()),
        Some(json!({"tags": "env=prod"})),
        Some(&id),
    );
    assert_eq!(s, 401);
}

fn host_key(dir: &Path, name: &str) -> String {
    support::ssh_host_key(dir, name)
}
