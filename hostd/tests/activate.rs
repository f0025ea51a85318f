//! `smith-host activate` / `deactivate` against the real CA (in-process), on host roots populated with
//! copies of the machine's sshd_config, nsswitch.conf and pam.d/{sshd,sudo}.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn activate_writes_everything_is_idempotent_and_deactivate_restores() {
    let ca = test_ca();
    let h = HostRoot::new();
    let before = snapshot(&h.root);

    let report = h.activate_ok(&ca, "web-1", "env=prod,role=web");
    assert_eq!(report["host_name"], "web-1");
    assert_eq!(report["tags"], "env=prod,role=web");
    assert_eq!(report["already_enrolled"], false);
    assert_eq!(report["warnings"], serde_json::json!([]), "{report}");
    assert_eq!(report["root_fingerprint"], ca.fingerprint.as_str());
    // --no-start: the exact commands are printed.
    let steps = report["next_steps"].to_string();
    assert!(steps.contains("smith-hostd --root"), "{steps}");
    assert!(steps.contains("kill -HUP"), "{steps}");

    // sudo's audit plugin, after sudoers' default plugins (issue 17).
    let sudo_conf = h.read("/etc/sudo.conf");
    assert!(
        sudo_conf.contains("Plugin sudoers_policy sudoers.so\n")
            && sudo_conf
                .contains("Plugin smith_audit /usr/lib/x86_64-linux-gnu/security/pam_smith.so with_approval\n"),
        "{sudo_conf}"
    );

    // Identity and config.
    assert_eq!(mode(&h.path("/etc/smith/host.key")), 0o600);
    assert_eq!(mode(&h.path("/etc/smith/host.crt")), 0o644);
    assert_eq!(h.read("/etc/smith/ca.crt").trim(), ca.root_pem().trim());
    let key = h.read("/etc/smith/host.key");
    assert!(smith_hostd::identity::key_matches_cert(
        &key,
        h.read("/etc/smith/host.crt").as_bytes()
    )
    .unwrap());
    let cfg = smith_hostd::config::HostConfig::parse(&h.read("/etc/smith/host.toml")).unwrap();
    assert_eq!(cfg.host_name.as_str(), "web-1");
    assert_eq!(cfg.ca_url, ca.url);
    assert_eq!(cfg.ca_fingerprint.as_deref(), Some(ca.fingerprint.as_str()));

    // Trust material for sshd.
    assert_eq!(
        h.read("/etc/ssh/smith_user_ca.pub"),
        format!("{}\n", ca.user_ca_public())
    );
    assert_eq!(
        std::fs::read(h.path("/etc/ssh/smith_revoked.krl")).unwrap(),
        b""
    );

    // The drop-in, with the host certificates the CA signed.
    let dropin = h.read("/etc/ssh/sshd_config.d/50-smith.conf");
    let r = h.root.display().to_string();
    assert!(
        dropin.contains(&format!(
            "TrustedUserCAKeys {r}/etc/ssh/smith_user_ca.pub\n"
        )),
        "{dropin}"
    );
    assert!(
        dropin.contains(&format!("RevokedKeys {r}/etc/ssh/smith_revoked.krl\n")),
        "{dropin}"
    );
    // sshd decides from the principals files hostd keeps, with no command per login.
    assert!(
        dropin.contains(&format!(
            "AuthorizedPrincipalsFile {r}/var/lib/smith/principals/%u\n"
        )),
        "{dropin}"
    );
    assert!(!dropin.contains("AuthorizedPrincipalsCommand"), "{dropin}");
    for t in ["ecdsa", "ed25519"] {
        let cert = h.path(&format!("/etc/ssh/ssh_host_{t}_key-cert.pub"));
        assert!(
            dropin.contains(&format!("HostCertificate {}\n", cert.display())),
            "{dropin}"
        );
        let listed = run_ok(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&cert));
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(
            listed.contains("host certificate") && listed.contains("web-1"),
            "{listed}"
        );
    }
    // sshd accepts the configuration (syntax, %k, host certificates matching keys).
    let test_cfg = h.tmp.path().join("sshd-test.conf");
    std::fs::write(
        &test_cfg,
        format!(
            "Include {r}/etc/ssh/sshd_config.d/50-smith.conf\nHostKey {r}/etc/ssh/ssh_host_ed25519_key\nHostKey {r}/etc/ssh/ssh_host_ecdsa_key\nUsePAM no\n"
        ),
    )
    .unwrap();
    if let Some(o) = sshd_in_ns(&["-t", "-f", &test_cfg.display().to_string()]) {
        assert!(
            o.status.success(),
            "sshd -t refused the drop-in: {}",
            stderr(&o)
        );
    }

    // nsswitch and PAM.
    let nss = h.read("/etc/nsswitch.conf");
    for db in ["passwd", "group"] {
        let line = nss
            .lines()
            .find(|l| l.starts_with(&format!("{db}:")))
            .unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let f = words.iter().position(|w| *w == "files").unwrap();
        assert_eq!(words.get(f + 1), Some(&"smith"), "{line}");
    }
    let pam = h.read("/etc/pam.d/sshd");
    assert!(
        pam.contains("\naccount required pam_smith.so # smith\n"),
        "{pam}"
    );
    assert!(
        pam.contains("\nsession required pam_smith.so # smith\n"),
        "{pam}"
    );
    let acct_inc = pam.find("@include common-account").unwrap();
    assert!(pam.find("account required pam_smith.so").unwrap() > acct_inc);
    let sudo = h.read("/etc/pam.d/sudo");
    assert!(
        sudo.contains("account required pam_smith.so level=sudo # smith\n"),
        "{sudo}"
    );
    assert!(
        sudo.contains("session optional pam_smith.so # smith\n"),
        "{sudo}"
    );
    assert_eq!(mode(&h.path("/var/lib/smith/activation.json")), 0o600);

    // Twice: "already enrolled", no token needed, nothing changes byte for byte.
    let after_first = snapshot(&h.root);
    let o = h.host_cmd(&["activate", "--no-start", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again["already_enrolled"], true);
    assert_eq!(again["changed"], serde_json::json!([]));
    // With the original arguments (a used token) too: it is not even sent.
    let o = h.activate(&ca, "used-or-not", "web-1");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(
        &after_first,
        &snapshot(&h.root),
        "second activate changed files",
    );

    // A drifted file is re-asserted.
    std::fs::remove_file(h.path("/etc/ssh/smith_revoked.krl")).unwrap();
    let o = h.host_cmd(&["activate", "--no-start", "--json"]);
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        again["changed"],
        serde_json::json!(["/etc/ssh/smith_revoked.krl"])
    );
    assert_same_tree(&after_first, &snapshot(&h.root), "re-assert");

    // Deactivate: every file back byte for byte, created files and directories gone.
    let o = h.host_cmd(&["deactivate", "--no-stop", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let undo: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(undo["was_active"], true);
    assert!(undo["warnings"].as_array().unwrap().is_empty(), "{undo}");
    assert_same_tree(
        &before,
        &snapshot(&h.root),
        "deactivate did not restore the host",
    );
    // And again: nothing to do.
    let o = h.host_cmd(&["deactivate", "--no-stop"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("not activated"));
}

#[test]
fn refusals_change_nothing() {
    let mut ca = test_ca();

    // A used token.
    let token = ca.host_token("env=dev", "db-1");
    let first = HostRoot::new();
    let o = first.activate(&ca, &token, "db-1");
    assert!(o.status.success(), "{}", stderr(&o));
    let h = HostRoot::new();
    let before = snapshot(&h.root);
    let o = h.activate(&ca, &token, "db-2");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("already used") && e.contains("nothing was changed") && e.contains("new one"),
        "{e}"
    );
    assert_same_tree(&before, &snapshot(&h.root), "used token");

    // An expired token (a second's life, a second and a half ago).
    let expired = ca.host_token_for("env=dev", "db-2", 1).token;
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let o = h.activate(&ca, &expired, "db-2");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("expired"), "{}", stderr(&o));
    assert_same_tree(&before, &snapshot(&h.root), "expired token");

    // A wrong fingerprint: the TLS pin refuses the server, the token is not spent.
    let minted = ca.host_token_for("env=dev", "db-2", 3600);
    let token = minted.token.clone();
    let wrong = smith_api::tls::fingerprint(b"not the root");
    let o = h.host_cmd(&[
        "activate",
        "--ca",
        &ca.url,
        "--token",
        &token,
        "--ca-fingerprint",
        &wrong,
        "--name",
        "db-2",
        "--no-start",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("pinned CA root") && e.contains(&wrong), "{e}");
    assert_same_tree(&before, &snapshot(&h.root), "wrong fingerprint");
    let id = minted.id.clone().expect("the token's id");
    let tokens = ca.admin_client().list_tokens().unwrap();
    let t = tokens.iter().find(|t| t.id == id).expect("the token");
    assert!(
        t.used_at.is_none(),
        "the token was spent despite the wrong pin: {t:?}"
    );

    // Bad inputs are refused before any contact (exit 2).
    for args in [
        vec![
            "activate",
            "--ca",
            "http://x",
            "--token",
            "t",
            "--ca-fingerprint",
            &ca.fingerprint,
            "--name",
            "a",
        ],
        vec![
            "activate",
            "--ca",
            &ca.url,
            "--token",
            "t",
            "--ca-fingerprint",
            "SHA256:nope",
            "--name",
            "a",
        ],
        vec![
            "activate",
            "--ca",
            &ca.url,
            "--token",
            "t",
            "--ca-fingerprint",
            &ca.fingerprint,
            "--name",
            "Bad Name",
        ],
        vec!["activate", "--ca", &ca.url, "--name", "a"],
    ] {
        let o = h.host_cmd(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    assert_same_tree(&before, &snapshot(&h.root), "bad inputs");

    // The CA unreachable.
    ca.stop();
    let o = h.activate(&ca, &token, "db-2");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot reach the Smith CA"),
        "{}",
        stderr(&o)
    );
    assert_same_tree(&before, &snapshot(&h.root), "CA down");
    ca.restart();
    let o = h.activate(&ca, &token, "db-2");
    assert!(
        o.status.success(),
        "the token should still work: {}",
        stderr(&o)
    );
}

#[test]
fn deactivate_keeps_what_the_admin_changed_since() {
    let ca = test_ca();
    let h = HostRoot::new();
    // An sshd_config without the drop-in Include: activate adds one.
    let sshd = h.path("/etc/ssh/sshd_config");
    let original_sshd = "Port 22\nUsePAM yes\n";
    std::fs::write(&sshd, original_sshd).unwrap();
    let report = h.activate_ok(&ca, "web-2", "env=prod");
    assert!(
        report["warnings"].to_string().contains("Include"),
        "{report}"
    );
    let cfg = h.read("/etc/ssh/sshd_config");
    assert!(cfg.starts_with(&format!(
        "Include {} # smith\n",
        h.path("/etc/ssh/sshd_config.d/50-smith.conf").display()
    )));
    // The marked Include line is valid sshd syntax, and sshd reads the drop-in.
    let host_key = format!(
        "HostKey={}",
        h.path("/etc/ssh/ssh_host_ed25519_key").display()
    );
    if let Some(o) = sshd_in_ns(&["-T", "-f", &sshd.display().to_string(), "-o", &host_key]) {
        let out = String::from_utf8_lossy(&o.stdout).to_lowercase();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            out.contains("authorizedprincipalsfile ")
                && out.contains("/var/lib/smith/principals/%u"),
            "{out}"
        );
    }

    // The admin edits nsswitch.conf and pam.d/sshd after activation.
    let nss = h.path("/etc/nsswitch.conf");
    let mut t = std::fs::read_to_string(&nss).unwrap();
    t.push_str("automount: files\n");
    std::fs::write(&nss, &t).unwrap();
    let pam = h.path("/etc/pam.d/sshd");
    let mut p = std::fs::read_to_string(&pam).unwrap();
    p.push_str("session optional pam_admin.so\n");
    std::fs::write(&pam, &p).unwrap();

    let o = h.host_cmd(&["deactivate", "--no-stop", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let undo: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cleaned = undo["cleaned"].to_string();
    assert!(
        cleaned.contains("/etc/nsswitch.conf") && cleaned.contains("/etc/pam.d/sshd"),
        "{undo}"
    );
    let nss_after = std::fs::read_to_string(&nss).unwrap();
    assert!(nss_after.contains("automount: files\n"));
    assert!(
        !nss_after.split_whitespace().any(|w| w == "smith"),
        "{nss_after}"
    );
    let pam_after = std::fs::read_to_string(&pam).unwrap();
    assert!(
        pam_after.contains("pam_admin.so") && !pam_after.contains("pam_smith"),
        "{pam_after}"
    );
    // Unchanged files are restored exactly.
    assert_eq!(std::fs::read_to_string(&sshd).unwrap(), original_sshd);
    assert!(!h.path("/etc/smith").exists());
    assert!(!h.path("/etc/ssh/sshd_config.d/50-smith.conf").exists());
    assert!(!h.path("/var/lib/smith").exists());
}
