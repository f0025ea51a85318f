//! smith-host and smith-hostd against the real CA (the test kit's, in-process, with its
//! own users, groups and grants): enrollment, token reuse, sync, a membership change
//! reaching the cache, doctor's CA check, a removed host and an expired client
//! certificate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The real CA with dev (alice, deploy) holding ssh on env=dev hosts and ops (oscar)
/// holding sudo on env=prod hosts.
fn dev_and_ops() -> TestCa {
    let ca = TestCa::in_process();
    ca.add_group("dev", None);
    ca.add_group("ops", None);
    ca.add_user("alice", &["dev"], None);
    ca.add_user("oscar", &["ops"], None);
    ca.add_user("deploy", &["dev"], None);
    ca.grant("dev", "env=dev", "ssh");
    ca.grant("ops", "env=prod", "sudo");
    ca
}

#[test]
fn enrolls_and_syncs_with_the_real_ca() {
    let ca = dev_and_ops();
    let token = ca.host_token("env=dev,role=db", "db-1");
    let h = HostRoot::new();
    let activate = |h: &HostRoot, token: &str, name: &str| {
        h.host_cmd(&[
            "activate",
            "--ca",
            &ca.url,
            "--token",
            token,
            "--ca-fingerprint",
            &ca.fingerprint,
            "--name",
            name,
            "--no-start",
            "--json",
        ])
    };
    let o = activate(&h, &token, "db-1");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["tags"], "env=dev,role=db");
    assert!(!h.read("/etc/ssh/smith_user_ca.pub").trim().is_empty());

    // The same token again, on another host: refused, nothing written.
    let other = HostRoot::new();
    let before = snapshot(&other.root);
    let o = activate(&other, &token, "db-2");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing was changed"));
    assert_same_tree(&before, &snapshot(&other.root), "reused token");

    let d = h.start_daemon();
    wait_for("alice in db-1's cache", Duration::from_secs(15), || {
        (h.cache_users() == ["alice"]).then_some(())
    });
    // deploy collides with the host's local account and is skipped.
    assert!(d.log().contains("deploy"), "{}", d.log());
    let c = h.cache().unwrap();
    assert_eq!(c.host_tags, "env=dev,role=db");
    assert!(c
        .groups
        .iter()
        .any(|g| g.name == "dev" && g.members == ["alice"]));

    // A membership change at the CA reaches the host within seconds.
    let t = Instant::now();
    ca.remove_member("dev", "alice");
    wait_for("alice to be removed", Duration::from_secs(5), || {
        h.cache_users().is_empty().then_some(())
    });
    assert!(t.elapsed() < Duration::from_secs(5));
    ca.add_member("dev", "alice");
    wait_for("alice back", Duration::from_secs(5), || {
        (h.cache_users() == ["alice"]).then_some(())
    });

    // doctor: the daemon and the CA (mTLS) check out.
    let o = h.host_cmd(&["doctor", "--json"]);
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let level = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["level"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
    };
    for name in [
        "config",
        "client certificate",
        "CA root",
        "sshd drop-in",
        "nsswitch",
        "PAM sshd",
        "cache",
        "daemon",
        "CA",
    ] {
        assert_eq!(level(name), "ok", "{name}: {checks:?}");
    }
    drop(d);
}

/// A client certificate for this host's key, signed by the CA's TLS root, that expired
/// a minute ago (as if hostd had not renewed it in time).
fn forge_expired_client_cert(ca: &TestCa, h: &HostRoot, name: &str) -> String {
    let (root_cert, root_key) = ca.tls_root_files();
    let root_pem = std::fs::read_to_string(root_cert).unwrap();
    let root_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(root_key).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&root_pem, root_key).unwrap();
    let host_key = rcgen::KeyPair::from_pem(&h.read("/etc/smith/host.key")).unwrap();
    let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let t = |s: u64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(s);
    p.not_before = t(now() - 7200);
    p.not_after = t(now() - 60);
    p.signed_by(&host_key, &issuer).unwrap().pem()
}

fn status_of(h: &HostRoot) -> serde_json::Value {
    serde_json::from_slice(&h.host_cmd(&["status", "--json"]).stdout).unwrap()
}

fn doctor_check(h: &HostRoot, name: &str) -> (i32, serde_json::Value) {
    let o = h.host_cmd(&["doctor", "--json"]);
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let c = checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
        .clone();
    (o.status.code().unwrap_or(-1), c)
}

#[test]
fn removed_or_expired_hosts_keep_serving_and_say_what_to_do() {
    let ca = dev_and_ops();
    let h = HostRoot::new();
    let activate = |extra: &[&str]| {
        let mut a = vec!["activate", "--no-start", "--json"];
        a.extend_from_slice(extra);
        h.host_cmd(&a)
    };
    let token = ca.host_token("env=dev", "db-1");
    let o = activate(&[
        "--ca",
        &ca.url,
        "--token",
        &token,
        "--ca-fingerprint",
        &ca.fingerprint,
        "--name",
        "db-1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = h.start_daemon();
    wait_for("alice in the cache", Duration::from_secs(15), || {
        (h.cache_users() == ["alice"]).then_some(())
    });
    assert!(status_of(&h)["problem"].is_null());

    // Removed at the CA: refused (403 host_removed), reported, still serving.
    ca.admin_client()
        .remove_host(&smith_proto::HostName::new("db-1").unwrap())
        .unwrap();
    h.host_cmd(&["sync"]);
    let s = wait_for("the removal to be noticed", Duration::from_secs(20), || {
        let s = status_of(&h);
        s["problem"].is_string().then_some(s)
    });
    assert!(
        s["problem"].as_str().unwrap().starts_with(
            "removed at the CA: run smith-host deactivate, or re-enroll with a new token"
        ),
        "{s}"
    );
    assert_eq!(s["ca_refusal"]["code"], "host_removed", "{s}");
    let text = String::from_utf8_lossy(&h.host_cmd(&["status"]).stdout).into_owned();
    assert!(
        text.contains("ATTENTION:") && text.contains("removed at the CA"),
        "{text}"
    );
    let (code, c) = doctor_check(&h, "CA");
    assert_eq!(code, 1);
    assert_eq!(c["level"], "fail");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .starts_with("removed at the CA"),
        "{c}"
    );
    // Never lock out on doubt: the last snapshot keeps serving.
    assert_eq!(h.cache_users(), ["alice"]);
    let reply = smith_hostd::localclient::ping(&h.socket()).unwrap();
    assert!(reply.1 >= 1, "{reply:?}");
    let log = d.log();
    assert_eq!(
        log.matches("the CA refuses this host").count(),
        1,
        "logged once: {log}"
    );

    // Re-enrolled with a new token alone (CA, fingerprint and name from host.toml);
    // the running daemon picks up the new credentials and the problem clears.
    let token = ca.host_token("env=dev", "db-1");
    let o = activate(&["--token", &token]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["reenrolled"], true, "{r}");
    h.host_cmd(&["sync"]);
    wait_for("the daemon to sync again", Duration::from_secs(40), || {
        let s = status_of(&h);
        (s["problem"].is_null() && s["last_sync_error"].is_null()).then_some(())
    });
    assert!(d.log().contains("using the new credentials"), "{}", d.log());
    assert!(d.log().contains("the CA accepts this host again"));
    d.stop();

    // An expired client certificate: the CA's TLS layer lets it through and answers
    // 401 client_cert_expired; status and doctor say what to do; still serving.
    std::fs::write(
        h.path("/etc/smith/host.crt"),
        forge_expired_client_cert(&ca, &h, "db-1"),
    )
    .unwrap();
    let s = status_of(&h);
    assert!(
        s["problem"]
            .as_str()
            .unwrap_or("")
            .starts_with("client certificate expired: re-enroll with smith-host activate --token"),
        "{s}"
    );
    let (code, c) = doctor_check(&h, "CA");
    assert_eq!(code, 1);
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .starts_with("client certificate expired: re-enroll with smith-host activate --token"),
        "{c}"
    );
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("client_cert_expired"),
        "{c}"
    );
    let (_, c) = doctor_check(&h, "client certificate");
    assert_eq!(c["level"], "fail");
    assert!(c["detail"]
        .as_str()
        .unwrap()
        .starts_with("client certificate expired"));
    let d = h.start_daemon();
    wait_for("the refusal", Duration::from_secs(20), || {
        (status_of(&h)["ca_refusal"]["code"] == "client_cert_expired").then_some(())
    });
    assert_eq!(h.cache_users(), ["alice"]);
    assert!(
        d.log().contains("client certificate expired"),
        "{}",
        d.log()
    );
}
