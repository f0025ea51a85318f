//! What operators and load balancers ask of a replica, through the real `smith-ca serve`
//! binary: liveness and readiness (`/v1/health/live`, `/v1/health/ready`, and the old
//! `/v1/health` unchanged), the long poll's heartbeat, and the Prometheus metrics on
//! `--metrics-listen`: counts of what happened, never a user or host name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::json;
use smith_api::chain::{self, GENESIS};
use smith_api::endpoints;
use smith_testkit::TestCa;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(ca: &TestCa, port: u16) -> String {
    // Plain HTTP (the client's TLS settings do not apply).
    let r = ca
        .http(None)
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.headers()
    );
    r.text().unwrap()
}

/// The value of the sample `name` (with its labels) in `text`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn a_replica_says_it_is_live_and_ready_and_counts_what_it_does_without_names() {
    let port = free_port();
    let ca = TestCa::start_with(&[], &["--metrics-listen", &format!("127.0.0.1:{port}")]);

    // Live, ready, and the old health answer as it was.
    assert_eq!(
        ca.get_json(endpoints::HEALTH_LIVE),
        (200, json!({"status": "live"}))
    );
    let (status, ready) = ca.get_json(endpoints::HEALTH_READY);
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert!(ready["version"].as_u64().unwrap() >= 1, "{ready}");
    assert!(ready.get("reason").is_none(), "{ready}");
    assert_eq!(
        ca.get_json(endpoints::HEALTH),
        (200, json!({"status": "ok"}))
    );

    // An allowed and a denied certificate, a host that syncs and uploads audit.
    ca.add_group("zz-secret-group", None);
    ca.add_user("zelda-secret", &["zz-secret-group"], None);
    ca.grant("zz-secret-group", "env=prod", "ssh");
    let token = ca.user_token("zelda-secret");
    assert_eq!(ca.request_cert(&token, "env=prod", None).0, 200);
    assert_eq!(ca.request_cert(&token, "env=dev", None).0, 403);
    let id = ca.enroll_host("secret-host-1", "env=prod");
    let version = ca.sync_full(&id).version;
    let event = json!({
        "type": "sudo", "user": "zelda-secret", "target": "root", "allowed": true,
        "command": "true", "cwd": "/", "tty": "pts/0", "key_id": "", "at_unix": 1_800_000_000u64,
    });
    let rec = chain::next_record("secret-host-1", 0, &GENESIS, event.to_string());
    let r = ca
        .http(Some(&id))
        .post(format!("{}{}", ca.url, endpoints::HOST_AUDIT))
        .json(&json!({"records": [rec]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // A long poll with a heartbeat: 200 at once with `smith-beat`, spaces while it
    // waits (counted as a waiter meanwhile), then `null`: nothing changed.
    let http = ca.http(Some(&id));
    let url = format!(
        "{}{}?since={version}&wait=3&beat=1&host=secret-host-1",
        ca.url,
        endpoints::HOST_SYNC
    );
    let started = Instant::now();
    let poll = std::thread::spawn(move || {
        let mut r = http.get(url).send().unwrap();
        let headers_after = started.elapsed();
        let beat = r.headers()[smith_api::client::BEAT_HEADER]
            .to_str()
            .unwrap()
            .to_string();
        let mut body = Vec::new();
        std::io::copy(&mut r, &mut body).unwrap();
        (
            r.status().as_u16(),
            headers_after,
            beat,
            String::from_utf8(body).unwrap(),
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    let during = scrape(&ca, port);
    assert_eq!(sample(&during, "smith_ca_sync_waiters"), 1.0, "{during}");
    let (status, headers_after, beat, body) = poll.join().unwrap();
    assert_eq!((status, beat.as_str()), (200, "1"));
    assert!(headers_after < Duration::from_secs(1), "{headers_after:?}");
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(body.starts_with("  "), "a space a second: {body:?}");
    assert_eq!(body.trim(), "null");
    // The typed client reads it as "nothing changed".
    let none = ca
        .client(None, Some(&id))
        .sync(&smith_api::SyncQuery {
            since: version,
            wait: 1,
            beat: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert!(none.is_none());

    let text = scrape(&ca, port);
    for (name, want) in [
        ("smith_ca_issuance_total{outcome=\"allowed\"}", 1.0),
        ("smith_ca_issuance_total{outcome=\"denied\"}", 1.0),
        ("smith_ca_issuance_seconds_count", 1.0),
        ("smith_ca_audit_uploads_total{outcome=\"accepted\"}", 1.0),
        ("smith_ca_audit_records_total", 1.0),
        ("smith_ca_sync_waiters", 0.0),
        ("smith_ca_ready", 1.0),
        ("smith_ca_replica_lag_seconds", 0.0),
        ("smith_ca_policy_version", version as f64),
        ("smith_ca_hosts", 1.0),
    ] {
        assert_eq!(sample(&text, name), want, "{name} in:\n{text}");
    }
    assert!(
        sample(&text, "smith_ca_store_commit_seconds_count") >= 3.0,
        "{text}"
    );
    assert!(sample(&text, "smith_ca_syncs_total") >= 3.0, "{text}");
    for secret in ["zelda", "secret", "zz-"] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the metrics:\n{text}"
        );
    }
    assert_eq!(ca.get_json(endpoints::HEALTH_READY).1["version"], version);
    // Metrics are on their own listener only.
    assert_eq!(ca.get_json("/metrics").0, 404);
}
