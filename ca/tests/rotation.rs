//! CA key rotation in phases (issue 23), against the real CA and a real sshd:
//!
//! - user CA: `smith-ca admin ca rotate --user` publishes a new key beside the old one;
//!   signing switches only once the host has synced it; certificates of both keys log in
//!   meanwhile; after retirement (`--force`) an old-key certificate is refused by sshd;
//!   the KRL has a section per published key;
//! - host CA: the new key is published at once (`/v1/ca/host-keys`), host certificates
//!   come from it only after the grace period, and the old key is unpublished at
//!   retirement;
//! - a second rotation is refused while one is under way; the state survives a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use serde_json::{json, Value};
use smith_api::{endpoints, SyncQuery};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{keygen_l, run, text, Sshd, TestCa};

fn keypair(dir: &Path, name: &str) -> PathBuf {
    let k = dir.join(name);
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&k));
    assert!(out.status.success(), "{}", text(&out.stderr));
    k
}

/// A certificate for `key` (saved as `<key>-N-cert.pub`); its serial and file.
fn issue(ca: &TestCa, token: &str, key: &Path, n: u32) -> (u64, PathBuf) {
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let r = ca
        .http(None)
        .post(format!("{}{}", ca.url, endpoints::CERTS_USER))
        .bearer_auth(token)
        .json(&json!({"public_key": public.trim(), "scope": "env=dev", "ttl_secs": 3600}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().unwrap();
    let p = PathBuf::from(format!("{}-{n}-cert.pub", key.display()));
    std::fs::write(&p, format!("{}\n", body["certificate"].as_str().unwrap())).unwrap();
    (body["serial"].as_u64().unwrap(), p)
}

fn fp(line: &str) -> String {
    ssh_key::PublicKey::from_openssh(line.trim())
        .unwrap()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string()
}

fn status(ca: &TestCa, role: &str) -> Value {
    serde_json::from_str(&ca.admin_ok(&["ca", "status", role, "--json"])).unwrap()
}

/// What hostd does with a sync: the user CA keys into sshd's TrustedUserCAKeys file.
fn sync_into(ca: &TestCa, id: &smith_api::Identity, since: u64, trusted: &Path) -> (u64, Value) {
    let r = ca
        .client(None, Some(id))
        .sync(&SyncQuery {
            since,
            ..Default::default()
        })
        .unwrap();
    // 204: nothing new since `since` (the request still tells the CA the host has it).
    let Some(r) = r else {
        return (since, Value::Null);
    };
    std::fs::write(trusted, r.user_ca_keys.join("\n") + "\n").unwrap();
    (r.version, serde_json::to_value(&r).unwrap())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_user_ca_rotates_in_phases_without_a_failed_login() {
    if !support::e2e_available("the_user_ca_rotates_in_phases") {
        return;
    }
    let mut ca = TestCa::in_process();
    ca.admin_ok(&["group", "add", "dev"]);
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
        "8h",
    ]);
    let token = ca.user_token("alice");
    let host = ca.enroll_host("web-1", "env=dev");
    let sshd = Sshd::start("alice", &ca.user_ca_pub());
    let trusted = sshd.dir.path().join("trusted_ca.pub");
    let dir = tempfile::tempdir().unwrap();
    let key = keypair(dir.path(), "alice");
    let logs_in =
        |cert: &Path| text(&sshd.login_with(&key, cert).stdout).contains("smith-login-ok");

    let (v, _) = sync_into(&ca, &host, 0, &trusted);
    let old_key = ca.user_ca_public();
    let (_, c_old) = issue(&ca, &token, &key, 1);
    assert!(logs_in(&c_old), "{}", sshd.log());
    assert_eq!(status(&ca, "--user")["phase"], "idle");

    // Start: a new key file, published beside the old one; the host lags.
    let st: Value = serde_json::from_str(&ca.admin_ok(&[
        "ca",
        "rotate",
        "--user",
        "--stale-after",
        "1h",
        "--json",
    ]))
    .unwrap();
    assert_eq!(st["phase"], "trusting", "{st}");
    let new_key = st["keys"][1]["public_key"].as_str().unwrap().to_string();
    assert_eq!(st["keys"][1]["state"], "next");
    let source = st["keys"][1]["source"].as_str().unwrap().to_string();
    assert!(source.starts_with("file:user_ca."), "{source}");
    // A backup carries the new key file.
    let backup = dir.path().join("backup");
    smith_ca::backup::backup(&smith_ca::datadir::DataDir::new(&ca.data_dir), &backup).unwrap();
    let name = source.trim_start_matches("file:");
    assert_eq!(
        std::fs::read(backup.join(name)).unwrap(),
        std::fs::read(ca.data_dir.join(name)).unwrap()
    );
    assert_eq!(st["hosts"]["lagging"], json!(["web-1"]), "{st}");
    // A second rotation is refused meanwhile.
    let e = ca.admin_err(&["ca", "rotate", "--user"]);
    assert!(e.contains("under way"), "{e}");
    let e = ca.admin_err(&["ca", "rotate", "--user", "--grace", "1h"]);
    assert!(e.contains("--grace is for the host CA"), "{e}");
    // Still signing with the old key: the host has not synced the new one.
    std::thread::sleep(Duration::from_millis(2500));
    let (_, c_mid) = issue(&ca, &token, &key, 2);
    assert!(keygen_l(&c_mid).signing_ca.contains(&fp(&old_key)));
    assert!(logs_in(&c_mid));

    // The host syncs both keys (sshd trusts both), then acknowledges: the switch.
    let (v2, snap) = sync_into(&ca, &host, v, &trusted);
    let keys = snap["user_ca_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{snap}");
    sync_into(&ca, &host, v2, &trusted);
    wait_for("the switch", || {
        status(&ca, "--user")["phase"] == "retiring"
    });
    let (s_new, c_new) = issue(&ca, &token, &key, 3);
    assert!(keygen_l(&c_new).signing_ca.contains(&fp(&new_key)));
    // Both generations log in: no flag day.
    assert!(logs_in(&c_old) && logs_in(&c_new), "{}", sshd.log());

    // The state survives a restart.
    ca.restart();
    let st = status(&ca, "--user");
    assert_eq!(st["phase"], "retiring", "{st}");
    assert_eq!(st["keys"][0]["state"], "signing");
    assert!(st["next"].as_str().unwrap().contains("retires at"), "{st}");

    // A revocation is in a KRL section of each published key.
    ca.admin_ok(&["cert", "revoke", "--serial", &s_new.to_string()]);
    let (v3, snap) = sync_into(&ca, &host, 0, &trusted);
    let krl = dir.path().join("krl");
    use base64::Engine;
    std::fs::write(
        &krl,
        base64::engine::general_purpose::STANDARD
            .decode(snap["krl_base64"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let listed = text(
        &run(Command::new("ssh-keygen")
            .args(["-Q", "-l", "-f"])
            .arg(&krl))
        .stdout,
    );
    let serial_line = format!("serial: {s_new}");
    assert_eq!(
        listed.lines().filter(|l| l.trim() == serial_line).count(),
        2,
        "{listed}"
    );
    assert_eq!(listed.matches("# CA key ").count(), 2, "{listed}");

    // Retirement (forced): only the new key is published; an old-key certificate is
    // refused by sshd, a new-key one is not.
    let (_, c_new2) = issue(&ca, &token, &key, 4);
    ca.admin_ok(&["ca", "rotate", "--user", "--force"]);
    let st = status(&ca, "--user");
    assert_eq!(st["phase"], "idle", "{st}");
    sync_into(&ca, &host, v3, &trusted);
    assert_eq!(
        std::fs::read_to_string(&trusted).unwrap().lines().count(),
        1
    );
    assert!(!logs_in(&c_old), "an old-key certificate still logs in");
    assert!(logs_in(&c_new2), "{}", sshd.log());
}

#[test]
fn the_host_ca_switches_after_its_grace_period() {
    let ca = TestCa::in_process();
    let host_keys = || -> Vec<String> {
        let v: Value = ca
            .http(None)
            .get(format!("{}{}", ca.url, endpoints::CA_HOST_KEYS))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    };
    let old = host_keys();
    assert_eq!(old.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let hk = keypair(dir.path(), "host");
    let line = std::fs::read_to_string(hk.with_extension("pub")).unwrap();
    let host_cert = |name: &str| -> String {
        let (_, resp) = ca.enroll_host_with(name, "env=dev", &[line.trim().to_string()]);
        let p = dir.path().join(format!("{name}-cert.pub"));
        std::fs::write(&p, format!("{}\n", resp.ssh_host_certs[0])).unwrap();
        keygen_l(&p).signing_ca
    };

    let st: Value =
        serde_json::from_str(&ca.admin_ok(&["ca", "rotate", "--host", "--grace", "3s", "--json"]))
            .unwrap();
    assert_eq!(st["phase"], "trusting", "{st}");
    // Published at once (engineers' known_hosts learn it first)...
    let both = host_keys();
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], old[0]);
    // ...but hosts get certificates from it only after the grace period.
    assert!(host_cert("h1").contains(&fp(&old[0])));
    wait_for("the host CA switch", || {
        status(&ca, "--host")["phase"] == "retiring"
    });
    assert!(host_cert("h2").contains(&fp(&both[1])));
    assert_eq!(host_keys(), vec![both[1].clone(), both[0].clone()]);
    ca.admin_ok(&["ca", "rotate", "--host", "--force"]);
    assert_eq!(host_keys(), vec![both[1].clone()]);
    let e = ca.admin_err(&["ca", "rotate", "--host", "--force"]);
    assert!(e.contains("no rotation"), "{e}");
}
