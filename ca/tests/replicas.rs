//! Several `smith-ca serve` replicas on one PostgreSQL database (a real server the test
//! kit starts): they issue, administer and follow each other.

use smith_testkit::{pg, TestCa};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Three replicas of one CA on a fresh database of the shared test server.
fn three_replicas(what: &str) -> Option<(TestCa, TestCa, TestCa, String)> {
    let server = pg::shared(what)?;
    let url = server.create_database();
    let a = TestCa::start_with(&["--database", &url], &[]);
    let b = a.replica();
    let c = a.replica();
    Some((a, b, c, url))
}

/// Waits (at most `limit`) until `f` holds; returns how long it took.
fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

#[test]
fn replicas_issue_and_change_policy_at_once_without_repeating_a_serial() {
    let Some((a, b, c, _)) = three_replicas("replicas issue at once") else {
        return;
    };
    a.add_group("dev", None);
    for i in 0..6 {
        a.add_user(&format!("eng{i}"), &["dev"], None);
    }
    a.grant("dev", "env=dev", "ssh");
    let tokens: Vec<String> = (0..6).map(|i| a.user_token(&format!("eng{i}"))).collect();
    // The token minted on A works on C once C followed.
    let took = within(Duration::from_secs(5), "C knows A's token", || {
        c.request_cert(&tokens[0], "env=dev", None).0 == 200
    });
    eprintln!("a token minted on A was usable on C after {took:?}");

    let replicas = [&a, &b, &c];
    let serials = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (i, token) in tokens.iter().enumerate() {
            let ca = replicas[i % 3];
            let serials = &serials;
            s.spawn(move || {
                for _ in 0..15 {
                    let (status, body) = ca.request_cert(token, "env=dev", None);
                    assert_eq!(status, 200, "{body}");
                    serials
                        .lock()
                        .unwrap()
                        .push(body["serial"].as_u64().expect("serial"));
                }
            });
        }
        // Meanwhile B and C change the policy: users and groups of their own.
        for (r, ca) in [(0, &b), (1, &c)] {
            s.spawn(move || {
                for j in 0..5 {
                    ca.add_group(&format!("team{r}x{j}"), None);
                    ca.add_user(&format!("new{r}x{j}"), &["dev"], None);
                }
            });
        }
    });
    let serials = serials.into_inner().unwrap();
    let unique: HashSet<u64> = serials.iter().copied().collect();
    assert_eq!(unique.len(), serials.len(), "a serial was repeated");
    // Every answered certificate is in the store, whichever replica is asked.
    let listed: HashSet<u64> = b
        .admin_client()
        .list_certs(&smith_api::CertQuery {
            limit: Some(10_000),
            ..Default::default()
        })
        .expect("cert list")
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert!(
        unique.is_subset(&listed),
        "an answered certificate is not recorded"
    );
    // Both replicas' users exist everywhere, with distinct uids.
    let users = a.admin_client().list_users().expect("users");
    let uids: HashSet<u32> = users.iter().map(|u| u.uid.get()).collect();
    assert_eq!(uids.len(), users.len(), "two users share a uid");
    within(Duration::from_secs(5), "A sees B's and C's users", || {
        let names: HashSet<String> = a
            .admin_client()
            .list_users()
            .expect("users")
            .into_iter()
            .map(|u| u.name.to_string())
            .collect();
        (0..2).all(|r| (0..5).all(|j| names.contains(&format!("new{r}x{j}"))))
    });
    let report = c.admin_client().audit_verify().expect("audit verify");
    assert!(report.ok, "audit chains broken: {report:?}");

    // A member removed on A: C refuses them within a second or so.
    a.remove_member("dev", "eng1");
    let took = within(Duration::from_secs(5), "C refuses eng1", || {
        c.request_cert(&tokens[1], "env=dev", None).0 != 200
    });
    eprintln!("a removal on A reached C's issuance after {took:?}");
}

#[test]
fn the_serving_role_cannot_rewrite_the_audit_trail() {
    let Some(server) = pg::shared("append-only audit") else {
        return;
    };
    let url = server.create_database();
    let db = pg::PgServer::db_of(&url);
    let ca = TestCa::start_with(&["--database", &url], &[]);
    ca.add_group("dev", None);
    psql_ok(server, &db, "CREATE ROLE smith_app LOGIN");
    let out = std::process::Command::new(smith_testkit::bin("smith-ca"))
        .args([
            "migrate",
            "--database",
            &url,
            "--app-role",
            "smith_app",
            "--json",
        ])
        .output()
        .expect("migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The app role may append...
    let ok = server.psql_as(&db, "smith_app", "SELECT count(*) FROM audit_records");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // ...but not rewrite or erase, and neither may the owner (the trigger).
    for user in ["smith_app", "postgres"] {
        for sql in [
            "UPDATE audit_records SET event = '{}' WHERE host = '@ca'",
            "DELETE FROM audit_records WHERE host = '@ca'",
            "TRUNCATE audit_records",
            "UPDATE smith_log SET what = 'nothing happened'",
            "TRUNCATE revocations",
        ] {
            let out = server.psql_as(&db, user, sql);
            assert!(!out.status.success(), "{user} could run {sql}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("append-only") || err.contains("permission denied"),
                "{user}: {sql}: {err}"
            );
        }
    }
    let report = ca.admin_client().audit_verify().expect("audit verify");
    assert!(report.ok, "{report:?}");
}

#[test]
fn a_password_never_goes_on_the_command_line() {
    let out = std::process::Command::new(smith_testkit::bin("smith-ca"))
        .args([
            "migrate",
            "--database",
            "postgresql://smith:s3cret@db.example/smith",
        ])
        .output()
        .expect("migrate");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--database-password-file"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn a_replica_killed_mid_issuance_comes_back_without_reusing_a_serial() {
    let Some(server) = pg::shared("replica killed") else {
        return;
    };
    let url = server.create_database();
    let a = TestCa::start_with(&["--database", &url], &["--issuance-rate", "off"]);
    let mut b = a.replica();
    a.add_group("dev", None);
    a.add_user("alice", &["dev"], None);
    a.grant("dev", "env=dev", "ssh");
    let token = a.user_token("alice");
    within(Duration::from_secs(5), "B follows A", || {
        b.request_cert(&token, "env=dev", None).0 == 200
    });
    let mut acked = Vec::new();
    let issue = |ca: &TestCa, n: usize, acked: &mut Vec<u64>| {
        for _ in 0..n {
            let (status, body) = ca.request_cert(&token, "env=dev", None);
            if status == 200 {
                acked.push(body["serial"].as_u64().expect("serial"));
            }
        }
    };
    issue(&b, 20, &mut acked);
    let addr = b.addr();
    b.kill();
    // A goes on alone.
    issue(&a, 20, &mut acked);
    assert_eq!(acked.len(), 40, "A refused while B was dead");
    b.serve_on(&addr);
    issue(&b, 20, &mut acked);
    issue(&a, 5, &mut acked);
    let unique: HashSet<u64> = acked.iter().copied().collect();
    assert_eq!(
        unique.len(),
        acked.len(),
        "a serial was reused after kill -9"
    );
    let stored: HashSet<u64> = a
        .admin_client()
        .list_certs(&smith_api::CertQuery {
            limit: Some(10_000),
            ..Default::default()
        })
        .expect("cert list")
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert!(unique.is_subset(&stored));
}

#[test]
fn an_embedded_ca_with_history_moves_to_postgres_with_nothing_lost() {
    let Some(server) = pg::shared("store copy") else {
        return;
    };
    let url = server.create_database();
    let mut ca = TestCa::start();
    ca.add_group("dev", None);
    ca.add_user("alice", &["dev"], None);
    ca.add_user("bob", &["dev"], None);
    ca.grant("dev", "env=dev", "ssh");
    let alice = ca.user_token("alice");
    let mut before = Vec::new();
    for _ in 0..5 {
        let (s, body) = ca.request_cert(&alice, "env=dev", None);
        assert_eq!(s, 200, "{body}");
        before.push(body["serial"].as_u64().unwrap());
    }
    ca.admin_client()
        .revoke(&smith_api::RevokeRequest {
            serial: Some(before[0]),
            reason: Some("lost laptop".into()),
            ..Default::default()
        })
        .expect("revoke");
    let host = ca.enroll_host("web-1", "env=dev");
    let snap = ca.sync_full(&host);
    let records: Vec<_> = (0..3u64)
        .scan((0u64, smith_api::chain::GENESIS), |(seq, hash), i| {
            let ev = format!("{{\"type\":\"session_open\",\"user\":\"alice\",\"at_unix\":{i}}}");
            let r = smith_api::chain::next_record("web-1", *seq, hash, ev);
            *seq = r.seq;
            *hash = smith_api::chain::parse_hash(&r.hash).unwrap();
            Some(r)
        })
        .collect();
    ca.client(None, Some(&host))
        .audit_upload(&smith_api::chain::AuditBatch {
            records: records[..2].to_vec(),
        })
        .expect("upload");
    let addr = ca.addr();
    assert!(ca.stop());
    let out = std::process::Command::new(smith_testkit::bin("smith-ca"))
        .args(["store", "copy", "--json", "--from"])
        .arg(&ca.data_dir)
        .args(["--to", &url])
        .output()
        .expect("store copy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second copy into the same database is refused (it holds a CA now).
    let again = std::process::Command::new(smith_testkit::bin("smith-ca"))
        .args(["store", "copy", "--from"])
        .arg(&ca.data_dir)
        .args(["--to", &url])
        .output()
        .expect("store copy");
    assert!(!again.status.success());
    ca.serve_on(&addr);
    let toml = std::fs::read_to_string(ca.data_dir.join("ca.toml")).unwrap();
    assert!(toml.contains(&url), "{toml}");
    // Chains still verify, the copy itself is on record.
    let report = ca.admin_client().audit_verify().expect("verify");
    assert!(report.ok, "{report:?}");
    let copies = ca
        .admin_client()
        .audit_list(&smith_api::AuditQuery {
            host: Some("@ca".into()),
            limit: Some(10_000),
            ..Default::default()
        })
        .expect("audit list")
        .into_iter()
        .filter(|e| e.kind == "store_copy")
        .count();
    assert_eq!(copies, 1);
    // Every certificate and the revocation came along; serials continue.
    let certs = ca
        .admin_client()
        .list_certs(&smith_api::CertQuery::default())
        .expect("certs");
    for s in &before {
        assert!(certs.iter().any(|c| c.serial == *s), "serial {s} lost");
    }
    assert!(certs
        .iter()
        .any(|c| c.serial == before[0] && c.revoked.is_some()));
    let (s, body) = ca.request_cert(&alice, "env=dev", None);
    assert_eq!(s, 200, "{body}");
    assert!(body["serial"].as_u64().unwrap() > *before.iter().max().unwrap());
    // The host goes on: same identity, same epoch and version (no full snapshot), and
    // its audit chain continues where it was.
    let next = ca
        .client(None, Some(&host))
        .sync(&smith_api::SyncQuery {
            since: snap.version,
            epoch: snap.epoch.clone(),
            ..Default::default()
        })
        .expect("sync after the copy");
    assert!(
        next.as_ref().is_none_or(|r| r.base_version.is_some()),
        "a full snapshot after the copy"
    );
    ca.client(None, Some(&host))
        .audit_upload(&smith_api::chain::AuditBatch {
            records: records[2..].to_vec(),
        })
        .expect("the host's chain continues");
}

#[test]
fn a_removal_on_one_replica_reaches_a_host_long_polling_another() {
    let Some((a, b, c, _)) = three_replicas("removal reaches a host on another replica") else {
        return;
    };
    a.add_group("dev", None);
    a.add_user("alice", &["dev"], None);
    a.grant("dev", "env=dev", "ssh");
    let token = a.user_token("alice");
    within(Duration::from_secs(5), "B follows A", || {
        b.request_cert(&token, "env=dev", None).0 == 200
    });
    let (_, issued) = b.request_cert(&token, "env=dev", None);
    let serial = issued["serial"].as_u64().expect("serial");
    let host = a.enroll_host("web-1", "env=dev");
    within(Duration::from_secs(5), "C knows the host", || {
        c.client(None, Some(&host))
            .sync(&smith_api::SyncQuery::default())
            .is_ok()
    });
    let snap = c.sync_full(&host);
    assert!(snap.users.iter().any(|u| u.name.as_str() == "alice"));
    let (took, answer) = std::thread::scope(|s| {
        let poll = s.spawn(|| {
            c.client(None, Some(&host)).sync(&smith_api::SyncQuery {
                since: snap.version,
                wait: 20,
                epoch: snap.epoch.clone(),
                ..Default::default()
            })
        });
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        a.remove_member("dev", "alice");
        let answer = poll.join().expect("poll");
        (t0.elapsed(), answer)
    });
    let delta = answer.expect("sync").expect("a change, not 204");
    let gone = match delta.base_version {
        Some(_) => delta.removed_users.iter().any(|u| u.as_str() == "alice"),
        None => !delta.users.iter().any(|u| u.name.as_str() == "alice"),
    };
    assert!(gone, "alice is still on the host: {delta:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    eprintln!("a removal on replica A reached a host long-polling replica C in {took:?}");

    // A revocation on B reaches the KRL a host gets from C.
    let before = delta.version;
    let t0 = Instant::now();
    b.admin_client()
        .revoke(&smith_api::RevokeRequest {
            serial: Some(serial),
            reason: Some("replica test".into()),
            ..Default::default()
        })
        .expect("revoke on B");
    let krl = loop {
        let r = c
            .client(None, Some(&host))
            .sync(&smith_api::SyncQuery {
                since: before,
                wait: 5,
                epoch: snap.epoch.clone(),
                ..Default::default()
            })
            .expect("sync");
        if let Some(k) = r.and_then(|r| r.krl_base64) {
            break k;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no KRL from C");
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("krl");
    std::fs::write(
        &path,
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, krl.as_bytes())
            .expect("base64"),
    )
    .unwrap();
    eprintln!("a revocation on B reached C's KRL in {:?}", t0.elapsed());
    // ssh-keygen -Q reads the KRL: the revoked certificate is in it.
    let cert_path = dir.path().join("k-cert.pub");
    std::fs::write(&cert_path, issued["certificate"].as_str().unwrap()).unwrap();
    let q = std::process::Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(&path)
        .arg(&cert_path)
        .output()
        .expect("ssh-keygen -Q");
    assert!(
        String::from_utf8_lossy(&q.stdout).contains("REVOKED"),
        "{}",
        String::from_utf8_lossy(&q.stdout)
    );
}

/// Runs `sql` on the test database as its owner (in the upgrade test: what a newer
/// release's migration or commit would write).
fn psql_ok(server: &pg::PgServer, db: &str, sql: &str) {
    let out = server.psql(db, sql);
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/v1/health/ready` of `ca`: its status and reason.
fn readiness(ca: &TestCa) -> (u16, String) {
    let (status, body) = ca.get_json(smith_api::endpoints::HEALTH_READY);
    (
        status,
        body["reason"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn a_rolling_upgrade_keeps_older_replicas_serving_until_they_cannot_read_the_policy() {
    let Some(server) = pg::shared("rolling upgrade") else {
        return;
    };
    let url = server.create_database();
    let db = pg::PgServer::db_of(&url);
    let a = TestCa::start_with(&["--database", &url], &[]);
    let mut b = a.replica();
    a.add_group("dev", None);
    a.add_user("alice", &["dev"], None);
    a.grant("dev", "env=dev", "ssh");
    let token = a.user_token("alice");
    let host = a.enroll_host("web-1", "env=dev");
    within(Duration::from_secs(5), "B follows A", || {
        b.request_cert(&token, "env=dev", None).0 == 200
    });

    // The next release migrates first: a step that only adds. These replicas (the
    // previous release now) keep serving it, and one restarted in the middle of the
    // upgrade starts again.
    psql_ok(
        server,
        &db,
        "CREATE TABLE smith_next_release (id BIGINT PRIMARY KEY);
         UPDATE smith_meta SET value = (value::int + 1)::text WHERE key = 'schema_version';",
    );
    b.restart();
    assert_eq!(
        b.request_cert(&token, "env=dev", None).0,
        200,
        "{}",
        b.log()
    );
    assert_eq!(readiness(&b).0, 200);
    // `migrate` with this release leaves the newer schema as it is.
    let out = std::process::Command::new(smith_testkit::bin("smith-ca"))
        .args(["migrate", "--database", &url])
        .output()
        .expect("migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A host long-polls B, and the next release commits a change in a format this one
    // cannot read: both replicas stop serving policy at once (the parked poll ends),
    // and say why; nothing is signed.
    let snap = b.sync_full(&host);
    let issued_before = a
        .admin_client()
        .list_certs(&Default::default())
        .unwrap()
        .len();
    let (took, parked) = std::thread::scope(|s| {
        let poll = s.spawn(|| {
            let t = Instant::now();
            let r = b.client(None, Some(&host)).sync(&smith_api::SyncQuery {
                since: snap.version,
                wait: 20,
                epoch: snap.epoch.clone(),
                ..Default::default()
            });
            (t.elapsed(), r)
        });
        std::thread::sleep(Duration::from_millis(500));
        psql_ok(
            server,
            &db,
            "BEGIN;
             UPDATE smith_head SET seq = seq + 1 WHERE id = 1;
             INSERT INTO smith_log (seq, at, version, what, origin, changes, format)
               SELECT seq, extract(epoch FROM now())::bigint, NULL, 'a newer change',
                      '@ca', '[]', 2
               FROM smith_head WHERE id = 1;
             NOTIFY smith_changes;
             COMMIT;",
        );
        poll.join().expect("poll")
    });
    assert!(
        took < Duration::from_secs(10),
        "the parked long poll waited out its 20 s ({took:?}): {parked:?}"
    );
    for (name, ca) in [("A", &a), ("B", &b)] {
        within(Duration::from_secs(5), &format!("{name} not ready"), || {
            readiness(ca).0 == 503
        });
        let (_, reason) = readiness(ca);
        assert!(reason.contains("upgrade"), "{name}: {reason}");
        let (status, body) = ca.request_cert(&token, "env=dev", None);
        assert_eq!(status, 503, "{name} signed: {body}");
        assert_eq!(body["code"], "upgrade_required", "{name}: {body}");
        let err = ca
            .client(None, Some(&host))
            .sync(&smith_api::SyncQuery::default())
            .expect_err("an outdated replica sent a policy");
        assert_eq!(
            err.code(),
            Some(smith_api::ErrorCode::UpgradeRequired),
            "{name}: {err}"
        );
        assert!(
            ca.log().contains("upgrade smith-ca on this machine"),
            "{name}'s log does not say what to do"
        );
    }
    assert_eq!(
        a.admin_client()
            .list_certs(&Default::default())
            .expect("cert list")
            .len(),
        issued_before,
        "an outdated replica signed a certificate"
    );
    eprintln!("a parked long poll on an outdated replica ended after {took:?}");

    // A database that needs a newer smith-ca than this one is refused with what to do.
    psql_ok(
        server,
        &db,
        "INSERT INTO smith_meta (key, value) VALUES ('schema_oldest_server', '99')
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;",
    );
    let out = std::process::Command::new(smith_testkit::bin("smith-ca"))
        .args(["migrate", "--database", &url])
        .output()
        .expect("migrate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("upgrade smith-ca"),
        "{err}"
    );
}

#[test]
fn a_burst_of_changes_on_every_replica_all_commit() {
    let Some((a, b, c, _)) = three_replicas("a burst of changes") else {
        return;
    };
    a.add_group("fleet", None);
    within(Duration::from_secs(5), "C knows the group", || {
        c.admin_client().list_groups().is_ok_and(|g| !g.is_empty())
    });
    // A fleet enrolling at once through every replica, as users here: four clients per
    // replica, each adding users as fast as answers come.
    let t = Instant::now();
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (r, ca) in [&a, &b, &c].into_iter().enumerate() {
            for k in 0..4 {
                let failures = &failures;
                s.spawn(move || {
                    let client = ca.admin_client();
                    for j in 0..25 {
                        let body = smith_api::UserAdd {
                            name: smith_proto::UserName::new(&format!("b{r}k{k}n{j}")).unwrap(),
                            groups: vec![smith_proto::GroupName::new("fleet").unwrap()],
                            uid: None,
                            reuse_uid: false,
                            oidc_subject: None,
                            gecos: None,
                            shell: None,
                            create_groups: false,
                        };
                        if let Err(e) = client.add_user(&body) {
                            failures.lock().unwrap().push(e.to_string());
                        }
                    }
                });
            }
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of 300 changes refused, first: {}",
        failures.len(),
        failures[0]
    );
    let took = t.elapsed();
    // Every replica holds all of them once it followed the others' last commits.
    for (name, ca) in [("A", &a), ("B", &b), ("C", &c)] {
        within(
            Duration::from_secs(5),
            &format!("{name} lists 300 users"),
            || ca.admin_client().list_users().expect("users").len() == 300,
        );
    }
    eprintln!("300 changes over 3 replicas at 12 clients in {took:?}");
}
