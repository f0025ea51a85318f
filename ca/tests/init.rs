//! `smith-ca init`: files, modes, refusal to overwrite, --json, key algorithms.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use support::{bin, run, text};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_creates_private_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("ca");
    let out = run(Command::new(bin("smith-ca"))
        .args(["init", "--json", "--data-dir"])
        .arg(&d));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fp = v["root_fingerprint"].as_str().unwrap();
    assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 43, "{fp}");
    let token = v["admin_token"].as_str().unwrap();
    assert!(token.len() > 40, "{token}");

    assert_eq!(mode(&d), 0o700);
    for f in [
        "user_ca",
        "host_ca",
        "tls-root.key",
        "tls-server.key",
        "ca.db",
    ] {
        assert_eq!(mode(&d.join(f)), 0o600, "{f}");
    }
    for f in [
        "user_ca.pub",
        "host_ca.pub",
        "tls-root.crt",
        "tls-server.crt",
    ] {
        assert!(d.join(f).exists(), "{f}");
    }
    // The fingerprint printed is the one of tls-root.crt.
    let pem = std::fs::read(d.join("tls-root.crt")).unwrap();
    let der = smith_api::tls::certs_from_pem(&pem).unwrap();
    assert_eq!(smith_api::tls::fingerprint(&der[0]), fp);
    // ssh-keygen reads the user CA key pair.
    let out = run(Command::new("ssh-keygen")
        .args(["-y", "-f"])
        .arg(d.join("user_ca")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = std::fs::read_to_string(d.join("user_ca.pub")).unwrap();
    assert!(public.starts_with(text(&out.stdout).trim()), "{public}");
    // The default user CA algorithm: ECDSA P-256 (see `smith-ca init --help`).
    assert!(public.starts_with("ecdsa-sha2-nistp256 "), "{public}");
    // The token is not stored in clear anywhere in the data dir.
    for e in std::fs::read_dir(&d).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
    }

    // A second init refuses, names the file, and changes nothing.
    let before = std::fs::read(d.join("user_ca")).unwrap();
    let out = run(Command::new(bin("smith-ca"))
        .args(["init", "--data-dir"])
        .arg(&d));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("refusing to overwrite") && err.contains("user_ca"),
        "{err}"
    );
    assert_eq!(std::fs::read(d.join("user_ca")).unwrap(), before);

    // Even if only the database is left, init refuses.
    let d2 = dir.path().join("ca2");
    std::fs::create_dir(&d2).unwrap();
    std::fs::write(d2.join("ca.db"), b"x").unwrap();
    let out = run(Command::new(bin("smith-ca"))
        .args(["init", "--data-dir"])
        .arg(&d2));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("ca.db"));
    assert!(!d2.join("user_ca").exists(), "nothing half-written");
}

#[test]
fn init_offers_other_user_ca_algorithms_and_validates_inputs() {
    let dir = tempfile::tempdir().unwrap();
    for (alg, prefix) in [
        ("ecdsa-p256", "ecdsa-sha2-nistp256 "),
        ("ecdsa-p384", "ecdsa-sha2-nistp384 "),
        ("rsa", "ssh-rsa "),
    ] {
        let d = dir.path().join(alg);
        let out = run(Command::new(bin("smith-ca"))
            .args(["init", "--user-ca-algorithm", alg, "--data-dir"])
            .arg(&d));
        assert!(out.status.success(), "{alg}: {}", text(&out.stderr));
        let summary = text(&out.stdout);
        assert!(
            summary.contains("smith-ca serve") && summary.contains("TLS root fingerprint"),
            "{summary}"
        );
        let public = std::fs::read_to_string(d.join("user_ca.pub")).unwrap();
        assert!(public.starts_with(prefix), "{alg}: {public}");
        let out = run(Command::new("ssh-keygen")
            .args(["-l", "-f"])
            .arg(d.join("user_ca")));
        assert!(out.status.success(), "{alg}: {}", text(&out.stderr));
    }
    for (args, needle) in [
        (
            vec!["--user-ca-algorithm", "dsa"],
            "unknown CA key algorithm",
        ),
        (vec!["--id-range", "0-100"], "overlaps"),
        (vec!["--id-range", "banana"], "200000-299999"),
        (vec!["--san", "bad name!"], "neither an IP"),
    ] {
        let d = dir.path().join("bad");
        let out = run(Command::new(bin("smith-ca"))
            .arg("init")
            .args(&args)
            .arg("--data-dir")
            .arg(&d));
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!d.join("user_ca").exists(), "{args:?} left files behind");
    }
}
