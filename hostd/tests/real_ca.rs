//! smith-host and smith-hostd against the real `smith-ca` (init + serve on a free
//! loopback port): enrollment, token reuse, sync, a membership change reaching the
//! cache, doctor's CA check.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// target/debug/smith-ca, built if needed (this crate does not depend on smith-ca).
fn smith_ca() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "--quiet", "-p", "smith-ca", "--bin", "smith-ca"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        c.arg("--release");
    }
    assert!(
        c.status().unwrap().success(),
        "cargo build -p smith-ca failed"
    );
    dir.join("smith-ca")
}

struct RealCa {
    _dir: tempfile::TempDir,
    child: Child,
    url: String,
    fingerprint: String,
    admin_token: String,
    bin: PathBuf,
}

impl RealCa {
    fn start() -> RealCa {
        let bin = smith_ca();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("ca");
        let o = run_ok(
            Command::new(&bin)
                .arg("init")
                .arg("--data-dir")
                .arg(&data)
                .arg("--json"),
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let fingerprint = v["root_fingerprint"].as_str().unwrap().to_string();
        let admin_token = v["admin_token"].as_str().unwrap().to_string();
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .env("SMITH_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("smith-ca listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from smith-ca serve: {line:?}"))
            .to_string();
        RealCa {
            _dir: dir,
            child,
            url: format!("https://{addr}"),
            fingerprint,
            admin_token,
            bin,
        }
    }

    fn admin(&self, args: &[&str]) -> std::process::Output {
        run_ok(
            Command::new(&self.bin)
                .arg("admin")
                .args(args)
                .env("SMITH_CA_URL", &self.url)
                .env("SMITH_CA_FINGERPRINT", &self.fingerprint)
                .env("SMITH_TOKEN", &self.admin_token),
        )
    }

    fn host_token(&self, tags: &str, name: &str) -> String {
        let o = self.admin(&[
            "host", "token", "--tags", tags, "--ttl", "1h", "--json", "--name", name,
        ]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["token"].as_str().unwrap().to_string()
    }
}

impl Drop for RealCa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn enrolls_and_syncs_with_the_real_ca() {
    let ca = RealCa::start();
    for args in [
        vec!["group", "add", "dev"],
        vec!["group", "add", "ops"],
        vec!["user", "add", "alice", "--groups", "dev"],
        vec!["user", "add", "oscar", "--groups", "ops"],
        vec!["user", "add", "deploy", "--groups", "dev"],
        vec![
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
        ],
        vec![
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
        ],
    ] {
        ca.admin(&args);
    }
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
    ca.admin(&["group", "remove-member", "dev", "alice"]);
    wait_for("alice to be removed", Duration::from_secs(5), || {
        h.cache_users().is_empty().then_some(())
    });
    assert!(t.elapsed() < Duration::from_secs(5));
    ca.admin(&["group", "add-member", "dev", "alice"]);
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
fn forge_expired_client_cert(ca: &RealCa, h: &HostRoot, name: &str) -> String {
    let data = ca._dir.path().join("ca");
    let root_pem = std::fs::read_to_string(data.join("tls-root.crt")).unwrap();
    let root_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(data.join("tls-root.key")).unwrap())
            .unwrap();
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
    let ca = RealCa::start();
    for args in [
        vec!["group", "add", "dev"],
        vec!["user", "add", "alice", "--groups", "dev"],
        vec![
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
        ],
    ] {
        ca.admin(&args);
    }
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
    ca.admin(&["host", "remove", "db-1"]);
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
