//! Host enrollment (single-use tokens, CSR, mTLS identity) and the long-polling sync
//! (full, delta, wake-up, 204, wrong or removed host), with client certificates obtained
//! through enrollment.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use serde_json::{json, Value};
use smith_api::{endpoints, ErrorCode};
use smith_proto::snapshot::{HostState, SyncResponse};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{code_of, keygen_l, run, text, TestCa};

struct Enrolled {
    identity: smith_api::Identity,
    body: Value,
}

fn csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["ignored.example".to_string()]).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "ignored");
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
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

fn enroll(ca: &TestCa, token: &str, name: &str) -> Result<Enrolled, (u16, Value)> {
    let (key_pem, csr_pem) = csr();
    let (s, body) = post(
        ca,
        endpoints::HOSTS_ENROLL,
        json!({"token": token, "host_name": name, "csr_pem": csr_pem}),
        None,
    );
    if s != 201 {
        return Err((s, body));
    }
    let cert = body["client_cert_pem"].as_str().unwrap().to_string();
    Ok(Enrolled {
        identity: smith_api::Identity {
            cert_pem: cert.into_bytes(),
            key_pem: key_pem.into_bytes(),
        },
        body,
    })
}

fn host_token(ca: &TestCa, tags: &str, ttl: &str, names: &[&str]) -> String {
    let mut a = vec!["host", "token", "--tags", tags, "--ttl", ttl];
    for n in names {
        a.extend(["--name", n]);
    }
    ca.admin_ok(&a).trim().to_string()
}

/// GET /v1/host/sync; `None` on 204.
fn sync(ca: &TestCa, id: Option<&smith_api::Identity>, query: &str) -> (u16, Option<Value>) {
    let r = ca
        .http(id)
        .get(format!("{}{}?{query}", ca.url, endpoints::HOST_SYNC))
        .send()
        .unwrap();
    let s = r.status().as_u16();
    if s == 204 {
        return (s, None);
    }
    (s, Some(r.json().unwrap()))
}

fn parse(v: Value) -> SyncResponse {
    serde_json::from_value(v).expect("a SyncResponse")
}

fn names(r: &SyncResponse) -> Vec<String> {
    r.users.iter().map(|u| u.name.to_string()).collect()
}

#[test]
fn enrollment_is_single_use_and_validated() {
    let ca = TestCa::start();
    let token = host_token(&ca, "env=prod,role=web", "1h", &["web-1", "web-2"]);
    // SSH host keys are certified by the host CA.
    let dir = tempfile::tempdir().unwrap();
    let hk = dir.path().join("ssh_host_ed25519_key");
    assert!(run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&hk))
    .status
    .success());
    let host_pub = std::fs::read_to_string(hk.with_extension("pub")).unwrap();
    let (key_pem, csr_pem) = csr();

    // A bad CSR is refused and does not use the token up.
    let (s, b) = post(
        &ca,
        endpoints::HOSTS_ENROLL,
        json!({"token": token, "host_name": "web-1", "csr_pem": "nope"}),
        None,
    );
    assert_eq!((s, code_of(&b)), (400, ErrorCode::InvalidCsr), "{b}");

    let (s, b) = post(
        &ca,
        endpoints::HOSTS_ENROLL,
        json!({"token": token, "host_name": "web-1", "csr_pem": csr_pem, "ssh_host_keys": [host_pub.trim()]}),
        None,
    );
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["host_name"], "web-1");
    assert_eq!(b["tags"], "env=prod,role=web");
    let root = smith_api::tls::certs_from_pem(b["root_pem"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(
        smith_api::tls::fingerprint(&root[0]),
        ca.fingerprint,
        "the root to pin"
    );
    let on_disk = std::fs::read_to_string(ca.user_ca_pub()).unwrap();
    assert_eq!(b["user_ca_keys"], json!([on_disk.trim()]));
    let not_after = b["client_cert_not_after"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 86400 - 5..=now + 86400 + 5).contains(&not_after),
        "24h client cert"
    );
    let host_cert = dir.path().join("ssh_host_ed25519_key-cert.pub");
    std::fs::write(&host_cert, b["ssh_host_certs"][0].as_str().unwrap()).unwrap();
    let l = keygen_l(&host_cert);
    assert_eq!(l.principals, vec!["web-1"]);
    let out = run(Command::new("ssh-keygen")
        .args(["-L", "-f"])
        .arg(&host_cert));
    assert!(text(&out.stdout).contains("host certificate"));
    // The identity works for sync.
    let id = smith_api::Identity {
        cert_pem: b["client_cert_pem"].as_str().unwrap().as_bytes().to_vec(),
        key_pem: key_pem.into_bytes(),
    };
    let (s, first) = sync(&ca, Some(&id), "since=0");
    assert_eq!(s, 200);
    // Even with no policy yet the version is >= 1, so the host long-polls instead of
    // spinning on since=0.
    let v = parse(first.unwrap()).version;
    assert!(v >= 1);
    assert_eq!(sync(&ca, Some(&id), &format!("since={v}&wait=1")).0, 204);

    // Single use.
    let (s, b) = enroll(&ca, &token, "web-2").err().unwrap();
    assert_eq!((s, code_of(&b)), (401, ErrorCode::TokenUsed));
    assert!(b["error"].as_str().unwrap().contains("already used"), "{b}");
    // Expired.
    let short = host_token(&ca, "env=dev", "1s", &["db-9"]);
    std::thread::sleep(Duration::from_millis(2100));
    let (s, b) = enroll(&ca, &short, "db-9").err().unwrap();
    assert_eq!((s, code_of(&b)), (401, ErrorCode::TokenExpired));
    assert!(b["error"].as_str().unwrap().contains("expired"), "{b}");
    // Wrong kinds and unknown tokens.
    ca.admin_ok(&["user", "add", "alice"]);
    let user_token = ca.user_token("alice");
    let (s, b) = enroll(&ca, &user_token, "db-1").err().unwrap();
    assert_eq!((s, code_of(&b)), (403, ErrorCode::WrongTokenKind));
    let (s, _) = enroll(&ca, &ca.admin_token, "db-1").err().unwrap();
    assert_eq!(s, 403);
    let (s, _) = enroll(&ca, "smith_enroll_made_up", "db-1").err().unwrap();
    assert_eq!(s, 401);
    // A duplicate name is a conflict and leaves the token usable.
    let t2 = host_token(&ca, "env=prod", "1h", &["web-1", "web-2"]);
    let (s, b) = enroll(&ca, &t2, "web-1").err().unwrap();
    assert_eq!((s, code_of(&b)), (409, ErrorCode::HostExists));
    assert!(enroll(&ca, &t2, "web-2").is_ok());
    // Hostile host names never reach the CA's logic.
    let t3 = host_token(&ca, "env=prod", "1h", &["web-3"]);
    for bad in ["../etc", "WEB", "a b", ""] {
        let (s, _) = enroll(&ca, &t3, bad).err().unwrap();
        assert_eq!(s, 400, "{bad:?}");
    }
    let hosts: Value = serde_json::from_str(&ca.admin_ok(&["host", "list", "--json"])).unwrap();
    let hosts: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, vec!["web-1", "web-2"]);
}

#[test]
fn sync_serves_each_host_its_part_full_then_deltas() {
    let mut ca = TestCa::start();
    ca.admin_ok(&["user", "add", "alice", "--groups", "dev"]);
    ca.admin_ok(&["user", "add", "oscar", "--groups", "ops,dev"]);
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
        "8h",
    ]);
    ca.admin_ok(&[
        "grant",
        "add",
        "--group",
        "ops",
        "--tags",
        "env=prod",
        "--level",
        "sudo",
        "--max-ttl",
        "8h",
    ]);
    let web = enroll(
        &ca,
        &host_token(&ca, "env=prod,role=web", "1h", &["web-1"]),
        "web-1",
    )
    .ok()
    .unwrap();
    let db = enroll(
        &ca,
        &host_token(&ca, "env=dev,role=db", "1h", &["db-1"]),
        "db-1",
    )
    .ok()
    .unwrap();
    assert_eq!(web.body["tags"], "env=prod,role=web");

    // Full snapshots, each host only its part.
    let (s, full) = sync(&ca, Some(&web.identity), "since=0&host=web-1");
    assert_eq!(s, 200);
    let full = parse(full.unwrap());
    assert_eq!(full.base_version, None);
    assert_eq!(names(&full), vec!["oscar"]);
    assert_eq!(full.users[0].level, smith_proto::Level::Sudo);
    assert_eq!(
        full.users[0]
            .groups
            .iter()
            .map(|g| g.as_str())
            .collect::<Vec<_>>(),
        vec!["ops"]
    );
    assert_eq!(full.groups.len(), 1);
    assert_eq!(full.grants.len(), 1);
    assert_eq!(full.sudo_gid.get(), 200000);
    assert_eq!(full.tags.to_string(), "env=prod,role=web");
    let db_full = parse(sync(&ca, Some(&db.identity), "since=0").1.unwrap());
    assert_eq!(names(&db_full), vec!["alice", "oscar"]);
    assert!(db_full
        .users
        .iter()
        .all(|u| u.level == smith_proto::Level::Ssh));
    let v = full.version;
    let mut state = HostState::from_full(full);

    // Nothing changed: 204 after the wait.
    let t = Instant::now();
    let (s, _) = sync(&ca, Some(&web.identity), &format!("since={v}&wait=1"));
    assert_eq!(s, 204);
    assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5));

    // A long poll wakes up within a second of a change and gets a delta.
    let (tx, rx) = std::sync::mpsc::channel();
    let ca_url = ca.url.clone();
    let http = ca.http(Some(&web.identity));
    std::thread::spawn(move || {
        let r = http
            .get(format!(
                "{ca_url}{}?since={v}&wait=30",
                endpoints::HOST_SYNC
            ))
            .send()
            .unwrap();
        let s = r.status().as_u16();
        let _ = tx.send((s, r.json::<Value>().ok(), Instant::now()));
    });
    std::thread::sleep(Duration::from_millis(500));
    ca.admin_ok(&["group", "remove-member", "ops", "oscar"]);
    let changed = Instant::now();
    let (s, body, at) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("long poll answered");
    assert_eq!(s, 200);
    assert!(
        at.duration_since(changed) < Duration::from_secs(1),
        "{:?}",
        at.duration_since(changed)
    );
    let delta = parse(body.unwrap());
    assert_eq!(delta.base_version, Some(v));
    assert!(delta.users.is_empty());
    assert_eq!(
        delta
            .removed_users
            .iter()
            .map(|u| u.as_str())
            .collect::<Vec<_>>(),
        vec!["oscar"]
    );
    state.apply(delta).unwrap();
    assert!(state.users.is_empty());
    let fresh = parse(sync(&ca, Some(&web.identity), "since=0").1.unwrap());
    assert_eq!(state, HostState::from_full(fresh.clone()), "delta == full");
    // db-1 keeps oscar (still in dev) and gets him as an upsert with fewer groups.
    let d = parse(
        sync(&ca, Some(&db.identity), &format!("since={v}"))
            .1
            .unwrap(),
    );
    assert_eq!(names(&d), vec!["oscar"]);
    assert!(d.removed_users.is_empty());

    // Identity checks.
    let (s, b) = sync(&ca, Some(&web.identity), "since=0&host=db-1");
    assert_eq!((s, code_of(&b.unwrap())), (403, ErrorCode::WrongHost));
    let (s, b) = sync(&ca, None, "since=0");
    assert_eq!(
        (s, code_of(&b.unwrap())),
        (401, ErrorCode::ClientCertRequired)
    );
    let hosts: Value = serde_json::from_str(&ca.admin_ok(&["host", "list", "--json"])).unwrap();
    assert!(hosts[0]["last_seen"].is_u64());
    assert_eq!(hosts[0]["synced_version"], v);

    // Renewal gives a new certificate that syncs.
    let (key_pem, csr_pem) = csr();
    let (s, b) = post(
        &ca,
        endpoints::HOST_RENEW,
        json!({"csr_pem": csr_pem}),
        Some(&db.identity),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["host_name"], "db-1");
    let renewed = smith_api::Identity {
        cert_pem: b["client_cert_pem"].as_str().unwrap().as_bytes().to_vec(),
        key_pem: key_pem.into_bytes(),
    };
    assert_eq!(sync(&ca, Some(&renewed), "since=0").0, 200);
    let (s, _) = post(&ca, endpoints::HOST_RENEW, json!({"csr_pem": "x"}), None);
    assert_eq!(s, 401);

    // After a restart the change log is gone: an older version gets a full snapshot.
    ca.restart();
    let r = parse(
        sync(&ca, Some(&db.identity), &format!("since={v}"))
            .1
            .unwrap(),
    );
    assert_eq!(r.base_version, None);
    assert!(r.version > v);

    // A removed host can no longer sync, and a long poll in progress ends.
    ca.admin_ok(&["host", "remove", "web-1"]);
    let (s, b) = sync(&ca, Some(&web.identity), "since=0");
    assert_eq!((s, code_of(&b.unwrap())), (403, ErrorCode::HostRemoved));
    // Re-enrolling the same name works, and the old certificate stays refused.
    let again = enroll(&ca, &host_token(&ca, "env=prod", "1h", &["web-1"]), "web-1")
        .ok()
        .unwrap();
    assert_eq!(sync(&ca, Some(&again.identity), "since=0").0, 200);
    assert_eq!(sync(&ca, Some(&web.identity), "since=0").0, 403);
}

#[test]
fn sigterm_ends_long_polls_and_exits_cleanly() {
    let mut ca = TestCa::start();
    let web = enroll(&ca, &host_token(&ca, "env=prod", "1h", &["web-1"]), "web-1")
        .ok()
        .unwrap();
    let v = parse(sync(&ca, Some(&web.identity), "since=0").1.unwrap()).version;
    let http = ca.http(Some(&web.identity));
    let url = format!("{}{}?since={v}&wait=60", ca.url, endpoints::HOST_SYNC);
    let poll = std::thread::spawn(move || http.get(url).send().map(|r| r.status().as_u16()));
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    assert!(ca.stop(), "exit status 0 after SIGTERM: {}", ca.log());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // The poll ended with 204 (nothing changed), not after its 60 s.
    assert_eq!(poll.join().unwrap().ok(), Some(204));
    assert!(ca.log().contains("smith-ca stopped"));
}
