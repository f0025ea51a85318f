//! The database dies in the middle of issuance (`pg_ctl stop -m immediate`'s signal)
//! and comes back: replicas answer 503 meanwhile, keep serving hosts from memory, and
//! recover by themselves; nothing acknowledged is lost, no serial is reused.
//!
//! Its own test binary: it stops the test process's PostgreSQL server.

use smith_testkit::{pg, TestCa};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CLIENTS: usize = 64;

#[test]
fn a_database_crash_mid_issuance_loses_nothing_acknowledged() {
    let Some(server) = pg::shared("database outage") else {
        return;
    };
    let url = server.create_database();
    let a = TestCa::start_with(&["--database", &url], &["--issuance-rate", "off"]);
    let b = a.replica();
    a.add_group("dev", None);
    a.add_user("alice", &["dev"], None);
    a.grant("dev", "env=dev", "ssh");
    let token = a.user_token("alice");
    let host = a.enroll_host("web-1", "env=dev");
    let t = Instant::now();
    while b.request_cert(&token, "env=dev", None).0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(10), "B never followed A");
        std::thread::sleep(Duration::from_millis(20));
    }

    let acked = Mutex::new(Vec::<u64>::new());
    let statuses = Mutex::new(BTreeMap::<u16, u64>::new());
    let stop = AtomicBool::new(false);
    let down = AtomicBool::new(false);
    let during_outage = Mutex::new(BTreeMap::<u16, u64>::new());
    std::thread::scope(|s| {
        for i in 0..CLIENTS {
            let ca = if i % 2 == 0 { &a } else { &b };
            let (acked, statuses, stop, token) = (&acked, &statuses, &stop, &token);
            let (down, during_outage) = (&down, &during_outage);
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let was_down = down.load(Ordering::SeqCst);
                    let (status, body) = ca.request_cert(token, "env=dev", None);
                    *statuses.lock().unwrap().entry(status).or_default() += 1;
                    if was_down && down.load(Ordering::SeqCst) {
                        *during_outage.lock().unwrap().entry(status).or_default() += 1;
                    }
                    if status == 200 {
                        acked
                            .lock()
                            .unwrap()
                            .push(body["serial"].as_u64().expect("serial"));
                    } else {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        server.stop_immediate();
        down.store(true, Ordering::SeqCst);
        // Hosts keep syncing from memory while the database is down.
        let t = Instant::now();
        let snap = a.sync_full(&host);
        eprintln!(
            "a host synced from replica A during the outage in {:?} (version {})",
            t.elapsed(),
            snap.version
        );
        // Administration is refused with a clear 503 too.
        let err = a.admin_err(&["group", "add", "ops"]);
        assert!(
            err.contains("unavailable") || err.contains("unreachable"),
            "{err}"
        );
        std::thread::sleep(Duration::from_secs(3));
        down.store(false, Ordering::SeqCst);
        server.run().expect("restart postgres");
        let back = Instant::now();
        // Both replicas recover without a restart.
        for ca in [&a, &b] {
            while ca.request_cert(&token, "env=dev", None).0 != 200 {
                assert!(
                    back.elapsed() < Duration::from_secs(30),
                    "a replica did not recover: {}",
                    ca.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        eprintln!(
            "both replicas issued again {:?} after the database returned",
            back.elapsed()
        );
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::SeqCst);
    });
    let statuses = statuses.into_inner().unwrap();
    let during = during_outage.into_inner().unwrap();
    eprintln!("answers: {statuses:?}; while the database was down: {during:?}");
    assert!(
        during.keys().all(|s| *s == 503),
        "issuance answered something else than 503 while the database was down: {during:?}"
    );
    assert!(
        during.get(&503).copied().unwrap_or(0) > 0,
        "no request met the outage"
    );
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "unexpected answers: {statuses:?}"
    );
    let acked = acked.into_inner().unwrap();
    let unique: HashSet<u64> = acked.iter().copied().collect();
    assert_eq!(unique.len(), acked.len(), "a serial was handed out twice");
    let stored: HashSet<u64> = a
        .admin_client()
        .list_certs(&smith_api::CertQuery {
            limit: Some(1_000_000),
            ..Default::default()
        })
        .expect("cert list")
        .into_iter()
        .map(|c| c.serial)
        .collect();
    let missing: Vec<&u64> = unique.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged certificates are not in the database (of {})",
        missing.len(),
        unique.len()
    );
    let report = b.admin_client().audit_verify().expect("audit verify");
    assert!(report.ok, "{report:?}");
    eprintln!("{} certificates acknowledged, all stored", unique.len());
}
