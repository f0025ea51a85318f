//! SSH host certificate renewal by smith-hostd against the real CA (in-process):
//! certificates due (2/3 of their lifetime) or missing are replaced with the ones the
//! renewal returns and sshd is reloaded (SIGHUP through its pid file); a renewal answering
//! unusable certificates, or none (the real CA's answer altered by a hostile proxy), keeps
//! the current ones and does not loop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CERTS: [&str; 2] = [
    "/etc/ssh/ssh_host_ecdsa_key-cert.pub",
    "/etc/ssh/ssh_host_ed25519_key-cert.pub",
];

/// A stand-in for sshd: a copy of `sleep` named `sshd` (so `/proc/PID/comm` is `sshd`)
/// whose pid is in ROOT/run/sshd.pid. SIGHUP ends it, which the test observes.
struct FakeSshd {
    _dir: tempfile::TempDir,
    child: Child,
}

impl FakeSshd {
    fn start(h: &HostRoot) -> FakeSshd {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("sshd");
        std::fs::copy("/bin/sleep", &exe).unwrap();
        // Another test thread forking while the copy's file was open for writing holds
        // it open for a moment (ETXTBSY): try again briefly.
        let mut tries = 0;
        let child = loop {
            match Command::new(&exe).arg("600").stdin(Stdio::null()).spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                r => break r.unwrap(),
            }
        };
        let pid_file = h.path("/run/sshd.pid");
        std::fs::create_dir_all(pid_file.parent().unwrap()).unwrap();
        std::fs::write(&pid_file, format!("{}\n", child.id())).unwrap();
        wait_for("the fake sshd's comm", Duration::from_secs(5), || {
            (std::fs::read_to_string(format!("/proc/{}/comm", child.id()))
                .is_ok_and(|c| c.trim() == "sshd"))
            .then_some(())
        });
        FakeSshd { _dir: dir, child }
    }

    /// The signal that ended it, if it ended.
    fn ended_by(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.child.try_wait().unwrap().and_then(|s| s.signal())
    }
}

impl Drop for FakeSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ssh-keygen -L` of a certificate file: (valid-before as printed, serial).
fn cert_validity(path: &Path) -> (String, String) {
    let o = run_ok(Command::new("ssh-keygen").arg("-Lf").arg(path));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let valid = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Valid: "))
        .unwrap_or_else(|| panic!("no Valid line: {text}"))
        .to_string();
    let serial = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Serial: "))
        .unwrap_or("")
        .to_string();
    assert!(text.contains("host certificate"), "{text}");
    (valid, serial)
}

fn status_json(h: &HostRoot) -> serde_json::Value {
    let o = h.host_cmd(&["status", "--json"]);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn cert_paths(h: &HostRoot) -> Vec<PathBuf> {
    CERTS.iter().map(|c| h.path(c)).collect()
}

/// SSH host certificates of this lifetime are due when issued: the CA backdates them 5
/// minutes, and hostd renews at 2/3 of their life.
const DUE_AT_ONCE: Duration = Duration::from_secs(60);

/// `SHA256:...` of a public key file.
fn key_fingerprint(path: &Path) -> String {
    let o = run_ok(Command::new("ssh-keygen").arg("-lf").arg(path));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[test]
fn due_host_certificates_are_renewed_and_sshd_reloaded() {
    // Valid from 5 minutes ago for 6 minutes: past 2/3 of the lifetime already.
    let mut ca = test_ca_with(|c| c.host_ssh_cert_ttl = DUE_AT_ONCE);
    let h = HostRoot::new();
    let r = h.activate_ok(&ca, "web-1", "env=dev");
    assert_eq!(
        r["ssh_host_certs"].as_array().unwrap().len(),
        2,
        "activate reports the host certificates it wrote: {r}"
    );
    let dropin = h.read("/etc/ssh/sshd_config.d/50-smith.conf");
    for p in cert_paths(&h) {
        assert!(
            dropin.contains(&format!("HostCertificate {}", p.display())),
            "{dropin}"
        );
    }
    let before: Vec<(String, String)> = cert_paths(&h).iter().map(|p| cert_validity(p)).collect();
    let s = status_json(&h);
    let states: Vec<&str> = s["ssh_host_certs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["due", "due"], "{s}");
    let o = h.host_cmd(&["doctor", "--json"]);
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "SSH host certificate" && c["level"] == "warn"),
        "{checks:?}"
    );

    // The CA, restarted, signs renewed certificates for 2 hours.
    ca.restart_with(|c| c.host_ssh_cert_ttl = Duration::from_secs(7200));
    let mut sshd = FakeSshd::start(&h);
    let d = h.start_daemon();
    wait_for("renewed host certificates", Duration::from_secs(20), || {
        let now: Vec<(String, String)> = cert_paths(&h).iter().map(|p| cert_validity(p)).collect();
        (now.iter().zip(&before).all(|(a, b)| a != b)).then_some(())
    });
    // The renewal sent both host public keys: the CA certified each again.
    let certs = ca.host_ssh_certs("web-1");
    assert_eq!(certs.len(), 2 * HOST_KEYS, "{certs:?}");
    // Each key twice: at enrollment and at renewal (the list's order within one second
    // of issuance is not the issuance order, so it is not relied on).
    let fps: Vec<&str> = certs.iter().map(|c| c.key_fingerprint.as_str()).collect();
    for k in ["ssh_host_ecdsa_key.pub", "ssh_host_ed25519_key.pub"] {
        let fp = key_fingerprint(&h.path(&format!("/etc/ssh/{k}")));
        let n = fps.iter().filter(|f| **f == fp.as_str()).count();
        assert_eq!(n, 2, "{k} not certified again at renewal: {fps:?}");
    }
    // sshd got SIGHUP.
    let sig = wait_for("sshd to be reloaded", Duration::from_secs(10), || {
        sshd.ended_by()
    });
    assert_eq!(sig, libc::SIGHUP);
    assert!(d.log().contains("sshd reloaded"), "{}", d.log());
    // Modes, and no second renewal (the new certificates are not due).
    for p in cert_paths(&h) {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o644);
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(renewals(&ca, "web-1"), 1, "renewed more than once");
    let s = status_json(&h);
    for c in s["ssh_host_certs"].as_array().unwrap() {
        assert_eq!(c["state"], "valid", "{s}");
        assert!(c["valid_before"].as_u64().unwrap() > now() + 3600);
    }

    // A deleted certificate is "missing": fetched again at once after a restart.
    d.stop();
    std::fs::remove_file(h.path(CERTS[1])).unwrap();
    let mut sshd = FakeSshd::start(&h);
    let _d = h.start_daemon();
    wait_for("the missing certificate", Duration::from_secs(20), || {
        h.path(CERTS[1]).exists().then_some(())
    });
    let sig = wait_for("sshd to be reloaded again", Duration::from_secs(10), || {
        sshd.ended_by()
    });
    assert_eq!(sig, libc::SIGHUP);
    assert_eq!(renewals(&ca, "web-1"), 2);

    // deactivate removes the (renewed) certificates it owns, without complaint.
    drop(_d);
    let o = h.host_cmd(&["deactivate", "--no-stop", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for p in CERTS {
        assert!(!h.path(p).exists(), "{p} left behind");
    }
    let warnings = v["warnings"].to_string();
    assert!(!warnings.contains("-cert.pub"), "{warnings}");
}

#[test]
fn unusable_or_missing_renewed_certificates_keep_the_current_ones() {
    let mut ca = test_ca_with(|c| c.host_ssh_cert_ttl = DUE_AT_ONCE);
    let h = HostRoot::new();
    // The host talks to the real CA through a proxy that swaps the renewed certificates:
    // each then certifies the other key.
    let proxy = TamperingProxy::start(&ca, Some(h.identity_files()), Tamper::SwapHostCerts);
    let o = h.activate_at(
        &proxy.url,
        &ca.fingerprint,
        &ca.host_token("env=dev", "web-2"),
        "web-2",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Restarted with its default lifetime, the CA would renew them for 90 days.
    ca.restart_with(|c| c.host_ssh_cert_ttl = Duration::from_secs(90 * 86400));
    let before: Vec<String> = CERTS.iter().map(|c| h.read(c)).collect();
    let mut sshd = FakeSshd::start(&h);
    let d = h.start_daemon();
    wait_for("the refusal", Duration::from_secs(20), || {
        d.log()
            .contains("refusing the renewed SSH host certificates")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<String> = CERTS.iter().map(|c| h.read(c)).collect();
    assert_eq!(before, after, "the old certificates must stay");
    assert_eq!(sshd.ended_by(), None, "sshd must not be reloaded");
    assert_eq!(renewals(&ca, "web-2"), 1, "no renewal loop");
    // The daemon keeps syncing.
    assert!(
        status_json(&h)["last_sync_error"].is_null(),
        "{}",
        status_json(&h)
    );
    d.stop();

    // A CA that returns no host certificates: noted, retried hourly, nothing replaced.
    proxy.set(Tamper::DropHostCerts);
    let d = h.start_daemon();
    wait_for("the notice", Duration::from_secs(20), || {
        d.log()
            .contains("returned no SSH host certificates")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(renewals(&ca, "web-2"), 2);
    let after: Vec<String> = CERTS.iter().map(|c| h.read(c)).collect();
    assert_eq!(before, after);
    assert_eq!(sshd.ended_by(), None);
}
