//! Contextual grants end to end: each condition (source CIDR, time window in a named zone,
//! required reason, max TTL) decides a real `smith cert` request; a denial's reason is
//! shown plainly by `smith cert` and recorded in the CA's decision log with the grant and
//! the condition that decided it; a TTL over the maximum is clipped, not denied.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{bin, keygen_l, run, text, TestCa};

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn smith(ca: &TestCa, token: &str, args: &[&str]) -> Output {
    run(Command::new(bin("smith"))
        .args(args)
        .env("SMITH_CA_URL", &ca.url)
        .env("SMITH_CA_FINGERPRINT", &ca.fingerprint)
        .env("SMITH_TOKEN", token)
        .env("SMITH_CONFIG", "/nonexistent/smith.toml")
        .env_remove("SSH_AUTH_SOCK"))
}

fn denied(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(3),
        "expected a refusal (exit 3): {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

fn last_decision(ca: &TestCa) -> smith_api::Decision {
    let d: Vec<smith_api::Decision> = serde_json::from_str(&ca.admin_ok(&[
        "decisions",
        "--json",
        "--user",
        "alice",
        "--limit",
        "1",
    ]))
    .unwrap();
    d.into_iter().last().expect("a recorded decision")
}

fn grant(ca: &TestCa, tags: &str, extra: &[&str]) -> u64 {
    let mut args = vec![
        "grant", "add", "--group", "dev", "--tags", tags, "--level", "ssh", "--json",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--max-ttl") {
        args.extend_from_slice(&["--max-ttl", "1h"]);
    }
    let g: smith_api::GrantInfo = serde_json::from_str(&ca.admin_ok(&args)).unwrap();
    g.id
}

#[test]
fn each_condition_decides_and_is_named() {
    let ca = TestCa::start();
    ca.admin_ok(&["user", "add", "alice", "--groups", "dev"]);
    let tok = ca.user_token("alice");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("id").display().to_string();

    // Source CIDR excluding the request's source (127.0.0.1).
    let g = grant(&ca, "env=dev", &["--source-cidr", "10.0.0.0/8"]);
    let err = denied(&smith(
        &ca,
        &tok,
        &["cert", "--scope", "env=dev", "--out", &out],
    ));
    assert!(err.contains("condition_failed"), "{err}");
    assert!(
        err.contains("request source 127.0.0.1 is not in 10.0.0.0/8"),
        "{err}"
    );
    let d = last_decision(&ca);
    assert!(!d.allowed);
    assert!(
        d.reason.contains(&format!("grant {g} ")) && d.reason.contains("not in 10.0.0.0/8"),
        "{}",
        d.reason
    );

    // A time window in a named zone that is closed now: the day three days ahead (no
    // zone is more than a day away from UTC).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let day = DAYS[(((now / 86400) + 3 + 3) % 7) as usize];
    let window = format!("{day} 00:00-24:00 Europe/Paris");
    let g = grant(&ca, "env=stage", &["--time-window", &window]);
    let err = denied(&smith(
        &ca,
        &tok,
        &["cert", "--scope", "env=stage", "--out", &out],
    ));
    assert!(
        err.contains("outside its time windows") && err.contains(&window),
        "{err}"
    );
    assert!(
        err.contains("Europe/Paris)"),
        "the local time is shown: {err}"
    );
    let d = last_decision(&ca);
    assert!(
        !d.allowed
            && d.reason.contains(&format!("grant {g} "))
            && d.reason.contains("outside its time windows"),
        "{}",
        d.reason
    );
    // A window in a named zone that is open now issues.
    grant(
        &ca,
        "env=lab",
        &["--time-window", "daily 00:00-24:00 Asia/Tokyo"],
    );
    let ok = smith(&ca, &tok, &["cert", "--scope", "env=lab", "--out", &out]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    // Unknown zones are refused when the grant is added.
    let e = ca.admin_err(&[
        "grant",
        "add",
        "--group",
        "dev",
        "--tags",
        "env=x",
        "--level",
        "ssh",
        "--max-ttl",
        "1h",
        "--time-window",
        "mon-fri 09:00-18:00 Mars/Olympus",
    ]);
    assert!(e.contains("unknown time zone 'Mars/Olympus'"), "{e}");

    // Reason required.
    let g = grant(&ca, "env=prod", &["--require-reason"]);
    let err = denied(&smith(
        &ca,
        &tok,
        &["cert", "--scope", "env=prod", "--out", &out],
    ));
    assert!(err.contains("requires a reason (--reason)"), "{err}");
    let d = last_decision(&ca);
    assert!(
        !d.allowed
            && d.reason.contains(&format!("grant {g} "))
            && d.reason.contains("requires a reason"),
        "{}",
        d.reason
    );
    let ok = smith(
        &ca,
        &tok,
        &[
            "cert", "--scope", "env=prod", "--reason", "INC-42", "--out", &out,
        ],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let d = last_decision(&ca);
    assert!(
        d.allowed && d.reason.contains("reason: INC-42"),
        "{}",
        d.reason
    );

    // TTL over the maximum: clipped, not denied.
    grant(&ca, "env=qa", &["--max-ttl", "30m"]);
    let ok = smith(
        &ca,
        &tok,
        &["cert", "--scope", "env=qa", "--ttl", "2h", "--out", &out],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("clipped"), "{}", text(&ok.stdout));
    let d = last_decision(&ca);
    assert!(
        d.allowed && d.reason.contains("TTL clipped from 7200s to 1800s"),
        "{}",
        d.reason
    );
    let l = keygen_l(&dir.path().join("id-cert.pub"));
    // "from 2024-..T..:..:.. to 2024-..": 5 minutes of backdating + 30 minutes.
    let parse = |s: &str| humantime::parse_rfc3339(&format!("{s}Z")).unwrap();
    let v: Vec<&str> = l.valid.split_whitespace().collect();
    let span = parse(v[3]).duration_since(parse(v[1])).unwrap();
    assert_eq!(span, Duration::from_secs(35 * 60), "{}", l.valid);
}
