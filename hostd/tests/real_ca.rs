//! smith-host and smith-hostd against the real `smith-ca` (init + serve on a free
//! loopback port): enrollment, token reuse, sync, a membership change reaching the
//! cache, doctor's CA check.

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

    fn host_token(&self, tags: &str) -> String {
        let o = self.admin(&["host", "token", "--tags", tags, "--ttl", "1h", "--json"]);
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
    let token = ca.host_token("env=dev,role=db");
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
