//! The CA's audit store through the real `smith-ca`: host chains accepted across
//! batches, altered/replayed/gapped/reordered uploads rejected (and recorded), the
//! append-only triggers, `audit verify` online and offline naming a record altered in
//! the SQLite file, issuance decisions in the `@ca` chain, `audit list` filters, and
//! out-of-band classification of sshd logins.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use serde_json::{json, Value};
use smith_api::chain::{self, AuditRecord, GENESIS};
use smith_api::{endpoints, ErrorCode};
use smith_proto::event::{HostEvent, SessionEvent, SessionPhase, SshdLoginEvent, SudoEvent};
use std::process::Command;
use support::{bin, code_of, run, text, TestCa};

fn enroll(ca: &TestCa, name: &str, tags: &str) -> smith_api::Identity {
    ca.enroll_host(name, tags)
}

/// A host's chain builder.
struct Chain {
    host: String,
    seq: u64,
    hash: [u8; 32],
}

impl Chain {
    fn new(host: &str) -> Chain {
        Chain {
            host: host.into(),
            seq: 0,
            hash: GENESIS,
        }
    }
    fn push(&mut self, ev: &HostEvent) -> AuditRecord {
        let r = chain::next_record(
            &self.host,
            self.seq,
            &self.hash,
            serde_json::to_string(ev).unwrap(),
        );
        self.seq = r.seq;
        self.hash = chain::parse_hash(&r.hash).unwrap();
        r
    }
}

fn session(phase: SessionPhase, user: &str, key: &str, at: u64) -> HostEvent {
    HostEvent::Session(SessionEvent {
        phase,
        user: user.into(),
        service: "sshd".into(),
        rhost: "10.0.0.7".into(),
        tty: "ssh".into(),
        pid: 4242,
        key_id: key.into(),
        serial: Some(1),
        at_unix: at,
        duration_secs: (phase == SessionPhase::Close).then_some(12),
    })
}

fn sudo(user: &str, cmd: &str, key: &str, at: u64) -> HostEvent {
    HostEvent::Sudo(SudoEvent {
        user: user.into(),
        target: "root".into(),
        command: cmd.into(),
        cwd: "/home/oscar".into(),
        tty: "pts/0".into(),
        allowed: true,
        reason: String::new(),
        pid: 5000,
        key_id: key.into(),
        at_unix: at,
    })
}

fn upload(ca: &TestCa, id: &smith_api::Identity, records: &[AuditRecord]) -> (u16, Value) {
    let r = ca
        .http(Some(id))
        .post(format!("{}{}", ca.url, endpoints::HOST_AUDIT))
        .json(&json!({ "records": records }))
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn head(ca: &TestCa, id: &smith_api::Identity) -> Value {
    serde_json::to_value(ca.client(None, Some(id)).audit_head().unwrap()).unwrap()
}

fn list(ca: &TestCa, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["audit", "list", "--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ca.admin_ok(&a)).unwrap()
}

fn count(ca: &TestCa, host: &str) -> usize {
    list(ca, &["--host", host]).len()
}

#[test]
fn host_chains_are_verified_stored_and_tamper_evident() {
    let ca = TestCa::start();
    let web = enroll(&ca, "web-1", "env=prod");
    let db = enroll(&ca, "db-1", "env=dev");
    assert_eq!(head(&ca, &web)["acked_through"], 0);

    // Accepted across batches, each continuing the last.
    let mut c = Chain::new("web-1");
    let key = "smith:oscar:00aa";
    let b1 = vec![
        c.push(&session(SessionPhase::Open, "oscar", key, 100)),
        c.push(&sudo("oscar", "/usr/bin/id -u", key, 101)),
    ];
    let (s, ack) = upload(&ca, &web, &b1);
    assert_eq!(s, 200, "{ack}");
    assert_eq!(ack["acked_through"], 2);
    assert_eq!(ack["head_hash"], b1[1].hash);
    let b2 = vec![c.push(&session(SessionPhase::Close, "oscar", key, 112))];
    let (s, ack) = upload(&ca, &web, &b2);
    assert_eq!((s, ack["acked_through"].as_u64()), (200, Some(3)));
    assert_eq!(head(&ca, &web)["acked_through"], 3);

    // The trail shows them in order with the exact command line and key ID.
    let l = list(&ca, &["--host", "web-1"]);
    let kinds: Vec<&str> = l.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["session_open", "sudo", "session_close"]);
    assert_eq!(l[1]["event"]["command"], "/usr/bin/id -u");
    assert_eq!(l[1]["event"]["key_id"], key);
    let human = ca.admin_ok(&["audit", "list", "--host", "web-1"]);
    assert!(human.contains("sudo ALLOWED by oscar as root"), "{human}");
    assert!(
        human.contains("/usr/bin/id -u (key ID smith:oscar:00aa)"),
        "{human}"
    );

    // Replay of an old batch: 409 audit_replay, nothing stored twice.
    let (s, e) = upload(&ca, &web, &b1);
    assert_eq!((s, code_of(&e)), (409, ErrorCode::AuditReplay), "{e}");
    assert_eq!(count(&ca, "web-1"), 3);
    // A batch that starts at or below the head but runs past it (a killed hostd's
    // upload landed while its successor was reading the head): the same answer, so the
    // host asks the head again and sends only what follows it; nothing is stored.
    let mut ahead = Chain {
        host: "web-1".into(),
        seq: c.seq,
        hash: c.hash,
    };
    let overlap = vec![
        b2[0].clone(),
        ahead.push(&sudo("oscar", "/bin/true", key, 119)),
    ];
    let (s, e) = upload(&ca, &web, &overlap);
    assert_eq!((s, code_of(&e)), (409, ErrorCode::AuditReplay), "{e}");
    assert_eq!(count(&ca, "web-1"), 3);

    // One byte edited in a record: rejected, naming the record.
    let mut next = Chain {
        host: "web-1".into(),
        seq: c.seq,
        hash: c.hash,
    };
    let mut t = vec![
        next.push(&sudo("oscar", "/bin/true", key, 120)),
        next.push(&sudo("oscar", "/bin/false", key, 121)),
    ];
    t[1].event = t[1].event.replace("/bin/false", "/bin/fals3");
    let (s, e) = upload(&ca, &web, &t);
    assert_eq!((s, code_of(&e)), (409, ErrorCode::AuditChainBroken), "{e}");
    assert!(e["error"].as_str().unwrap().contains("record 5"), "{e}");
    assert!(e["error"].as_str().unwrap().contains("altered"), "{e}");
    assert_eq!(
        count(&ca, "web-1"),
        3,
        "nothing of a rejected batch is stored"
    );
    // A gap and a reordering.
    let mut g = Chain {
        host: "web-1".into(),
        seq: c.seq,
        hash: c.hash,
    };
    let r4 = g.push(&sudo("oscar", "a", key, 130));
    let r5 = g.push(&sudo("oscar", "b", key, 131));
    let (s, e) = upload(&ca, &web, std::slice::from_ref(&r5));
    assert_eq!((s, code_of(&e)), (409, ErrorCode::AuditChainBroken));
    assert!(e["error"].as_str().unwrap().contains("gap"), "{e}");
    let (s, e) = upload(&ca, &web, &[r5.clone(), r4.clone()]);
    assert_eq!((s, code_of(&e)), (409, ErrorCode::AuditChainBroken));
    // Another host's records cannot be pushed into web-1's chain (the host is in the hash).
    let mut other = Chain::new("db-1");
    let foreign = other.push(&sudo("alice", "x", "", 1));
    let (s, _) = upload(&ca, &web, &[AuditRecord { seq: 4, ..foreign }]);
    assert_eq!(s, 409);
    // Every rejection is recorded.
    let rej: Vec<Value> =
        serde_json::from_str(&ca.admin_ok(&["audit", "rejections", "--json"])).unwrap();
    let codes: Vec<(&str, u64)> = rej
        .iter()
        .map(|r| (r["code"].as_str().unwrap(), r["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("audit_replay", 2),
            ("audit_replay", 4),
            ("audit_chain_broken", 5),
            ("audit_chain_broken", 5),
            ("audit_chain_broken", 5),
            ("audit_chain_broken", 4),
        ]
    );
    assert!(rej.iter().all(|r| r["host"] == "web-1"));
    // The right continuation is still accepted after all that.
    let (s, _) = upload(&ca, &web, &[r4, r5]);
    assert_eq!(s, 200);
    // Without a client certificate: refused.
    let r = ca
        .http(None)
        .get(format!("{}{}", ca.url, endpoints::HOST_AUDIT_HEAD))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // db-1 has its own chain.
    let mut d = Chain::new("db-1");
    let (s, _) = upload(&ca, &db, &[d.push(&sudo("alice", "ls", "", 5))]);
    assert_eq!(s, 200);

    // A bigger batch (500 records, like hostd sends) fits the body limit.
    let big: Vec<AuditRecord> = (0..500)
        .map(|i| {
            d.push(&sudo(
                "alice",
                &format!("/usr/bin/echo {i} {}", "x".repeat(300)),
                "",
                6,
            ))
        })
        .collect();
    let (s, a) = upload(&ca, &db, &big);
    assert_eq!((s, a["acked_through"].as_u64()), (200, Some(501)), "{a}");

    // Online verify passes.
    let v: Value = serde_json::from_str(&ca.admin_ok(&["audit", "verify", "--json"])).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert!(ca.admin_ok(&["audit", "verify"]).contains("all "));

    // The audit tables are append-only for everyone, even with the SQLite file.
    let conn = rusqlite::Connection::open(ca.data_dir.join("ca.db")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let e = conn
        .execute(
            "UPDATE audit_records SET event = 'x' WHERE host = 'web-1'",
            [],
        )
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    assert!(conn
        .execute(
            "DELETE FROM audit_records WHERE host = 'web-1' AND seq = 2",
            []
        )
        .is_err());
    assert!(conn.execute("DELETE FROM audit_rejections", []).is_err());

    // Tampering with the file (triggers dropped first) is found, online and offline,
    // naming the record.
    conn.execute_batch(
        "DROP TRIGGER audit_records_no_update;
         UPDATE audit_records SET event = replace(event, '/usr/bin/id -u', '/usr/bin/id -g')
         WHERE host = 'web-1' AND seq = 2;",
    )
    .unwrap();
    drop(conn);
    let err = ca.admin_err(&["audit", "verify"]);
    assert!(err.contains("host web-1 record 2"), "{err}");
    assert!(err.contains("altered"), "{err}");
    let out = run(Command::new(bin("smith-ca"))
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(&ca.data_dir));
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["first_break"]["host"], "web-1");
    assert_eq!(v["first_break"]["seq"], 2);
    assert!(text(&out.stderr).contains("host web-1 record 2"));
    // A deleted row is a gap at the next record.
    let conn = rusqlite::Connection::open(ca.data_dir.join("ca.db")).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_records_no_delete;
         DELETE FROM audit_records WHERE host = 'db-1' AND seq = 3;",
    )
    .unwrap();
    drop(conn);
    let out = run(Command::new(bin("smith-ca"))
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(&ca.data_dir));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Hosts in name order: db-1 first.
    assert_eq!(v["first_break"]["host"], "db-1", "{v}");
    assert_eq!(v["first_break"]["seq"], 4);
    assert!(v["first_break"]["reason"].as_str().unwrap().contains("gap"));
    assert_eq!(v["breaks"].as_array().unwrap().len(), 2);
}

fn issue(ca: &TestCa, token: &str, scope: &str) -> (u16, Value) {
    let key =
        ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let r = ca
        .http(None)
        .post(format!("{}{}", ca.url, endpoints::CERTS_USER))
        .bearer_auth(token)
        .json(&json!({
            "public_key": key.public_key().to_openssh().unwrap(),
            "scope": scope,
            "ttl_secs": 600,
        }))
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn decisions_join_the_ca_chain_and_sshd_logins_are_classified() {
    let mut ca = TestCa::start();
    ca.admin_ok(&["user", "add", "oscar", "--groups", "ops"]);
    ca.admin_ok(&["user", "add", "bob", "--groups", "ops"]);
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
        "1h",
    ]);
    let tok = ca.user_token("oscar");
    let (s, oscar_cert) = issue(&ca, &tok, "env=prod");
    assert_eq!(s, 200, "{oscar_cert}");
    let (s, _) = issue(&ca, &tok, "env=dev");
    assert_eq!(s, 403);
    let (s, bob_cert) = issue(&ca, &ca.user_token("bob"), "env=prod");
    assert_eq!(s, 200);

    // Each decision is a record of the CA's own chain, in order, with its reason (the
    // chain also holds a record of each change: the users, the grant, the tokens).
    let all = list(&ca, &["--host", "@ca"]);
    let l: Vec<Value> = all
        .iter()
        .filter(|e| e["kind"] == "cert_decision")
        .cloned()
        .collect();
    assert_eq!(l.len(), 3, "{l:?}");
    assert!(all.iter().any(|e| e["kind"] == "change"
        && e["event"]["what"] == "grant add ops env=prod sudo"
        && e["event"]["actor"] == "bootstrap"));
    assert_eq!(l[0]["event"]["allowed"], true);
    assert_eq!(l[0]["event"]["serial"], oscar_cert["serial"]);
    assert_eq!(l[0]["event"]["key_id"], oscar_cert["key_id"]);
    assert_eq!(l[1]["event"]["allowed"], false);
    assert!(!l[1]["event"]["reason"].as_str().unwrap().is_empty());
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    // The chain survives a restart (head reloaded from the database).
    ca.restart();
    let (s, _) = issue(&ca, &tok, "env=prod");
    assert_eq!(s, 200);
    assert_eq!(list(&ca, &["--user", "oscar", "--host", "@ca"]).len(), 3);
    let v: Value = serde_json::from_str(&ca.admin_ok(&["audit", "verify", "--json"])).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["chains"][0]["host"], "@ca");
    assert_eq!(v["chains"][0]["records"], all.len() + 1);
    // --since in the future filters everything out; a relative one keeps it.
    assert!(list(&ca, &["--since", "2999-01-01T00:00:00Z"]).is_empty());
    assert_eq!(
        list(&ca, &["--since", "1h", "--host", "@ca"]).len(),
        all.len() + 1
    );

    // sshd logins reported by web-1.
    ca.admin_ok(&["user", "disable", "bob"]);
    let ca_fp = {
        let line = std::fs::read_to_string(ca.user_ca_pub()).unwrap();
        ssh_key::PublicKey::from_openssh(line.trim())
            .unwrap()
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string()
    };
    let web = enroll(&ca, "web-1", "env=prod");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let login = |user: &str, accepted: bool, method: &str, cert: Option<&Value>, rhost: &str| {
        HostEvent::Sshd(SshdLoginEvent {
            accepted,
            user: user.into(),
            rhost: rhost.into(),
            method: method.into(),
            key_type: if cert.is_some() {
                "ED25519-CERT"
            } else {
                "RSA"
            }
            .into(),
            fingerprint: "SHA256:k".into(),
            key_id: cert
                .map(|c| c["key_id"].as_str().unwrap().to_string())
                .unwrap_or_default(),
            serial: cert.map(|c| c["serial"].as_u64().unwrap()),
            ca_fingerprint: if cert.is_some() {
                ca_fp.clone()
            } else {
                String::new()
            },
            at_unix: now + 5,
        })
    };
    let mut c = Chain::new("web-1");
    let mut recs = vec![
        c.push(&login(
            "oscar",
            true,
            "publickey",
            Some(&oscar_cert),
            "10.0.0.2",
        )),
        c.push(&login("root", true, "publickey", None, "10.0.0.3")),
        c.push(&login(
            "bob",
            true,
            "publickey",
            Some(&bob_cert),
            "10.0.0.4",
        )),
    ];
    for i in 0..5 {
        recs.push(c.push(&login(
            &format!("x{i}"),
            false,
            "password",
            None,
            "203.0.113.9",
        )));
    }
    let (s, _) = upload(&ca, &web, &recs);
    assert_eq!(s, 200);
    let f: Vec<Value> =
        serde_json::from_str(&ca.admin_ok(&["audit", "out-of-band", "--json"])).unwrap();
    let kinds: Vec<(&str, &str)> = f
        .iter()
        .map(|f| (f["kind"].as_str().unwrap(), f["user"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("no_certificate", "root")), "{kinds:?}");
    assert!(kinds.contains(&("used_after_disable", "bob")), "{kinds:?}");
    assert!(
        f.iter()
            .any(|f| f["kind"] == "failed_attempts" && f["rhost"] == "203.0.113.9"),
        "{kinds:?}"
    );
    assert!(
        !kinds.iter().any(|(_, u)| *u == "oscar"),
        "oscar's own certificate login was flagged: {kinds:?}"
    );
    let human = ca.admin_ok(&["audit", "out-of-band"]);
    assert!(human.contains("out-of-band access"), "{human}");
}
