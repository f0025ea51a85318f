//! `smith-host principals USER CERT KEY_ID SERIAL` (the diagnostic, and the
//! AuthorizedPrincipalsCommand of drop-ins older than grant-bound certificates) with
//! real certificates from ssh-keygen and principals files like hostd writes them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::*;
use std::process::{Command, Output};

/// A host whose principals files (as hostd writes them) let alice in under grant 1,
/// oscar under grant 2, and oscar as the shared local account deploy under grant 3.
fn host() -> HostRoot {
    let h = HostRoot::new();
    let dir = h.path("/var/lib/smith/principals");
    std::fs::create_dir_all(&dir).unwrap();
    for (login, line) in [
        ("alice", "smith-grant:1:ssh:alice"),
        ("oscar", "smith-grant:2:sudo:oscar"),
        ("deploy", "smith-grant:3:ssh:oscar"),
    ] {
        std::fs::write(dir.join(login), format!("# hostd\n{line}\n")).unwrap();
    }
    h
}

fn principals(h: &HostRoot, args: &[&str]) -> Output {
    Command::new(smith_host())
        .arg("--root")
        .arg(&h.root)
        .arg("principals")
        .args(args)
        .output()
        .unwrap()
}

/// Runs the command and returns stdout, checking it always exits 0.
fn decide(h: &HostRoot, user: &str, cert: &str) -> String {
    let o = principals(h, &[user, cert, "smith:test:id", "7"]);
    assert!(o.status.success(), "principals must always exit 0: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn decisions() {
    let h = host();
    let ca = SshCa::new();

    // Allowed: a certificate issued under a grant the host lists for the login, whatever
    // scope it asked for (old hosts read it; this one does not).
    let alice_g1 = ca.user_cert_b64("alice,smith-grant:1:ssh:alice", "-5m:+1h", Some("env=dev"));
    assert_eq!(decide(&h, "alice", &alice_g1), "alice\n");
    let oscar = ca.user_cert_b64(
        "oscar,deploy,smith-grant:2:sudo:oscar,smith-grant:3:ssh:oscar",
        "-5m:+1h",
        None,
    );
    assert_eq!(decide(&h, "oscar", &oscar), "oscar\n");
    // The shared account, under the grant that allows it.
    assert_eq!(decide(&h, "deploy", &oscar), "deploy\n");

    // Issued under another grant: refused, and said which.
    let alice_g9 = ca.user_cert_b64("alice,smith-grant:9:ssh:alice", "-5m:+1h", Some("env=prod"));
    let o = principals(&h, &["alice", &alice_g9, "id", "1"]);
    assert!(o.status.success() && o.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("issued under (9)"),
        "{o:?}"
    );
    // A certificate from a CA before grant-bound certificates (the login alone).
    let old = ca.user_cert_b64("alice", "-5m:+1h", Some("env=prod"));
    let o = principals(&h, &["alice", &old, "id", "1"]);
    assert!(o.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("names no grant"),
        "{o:?}"
    );
    // Alice's grant does not let her be deploy, nor oscar.
    assert_eq!(decide(&h, "deploy", &alice_g1), "");
    assert_eq!(decide(&h, "oscar", &alice_g1), "");

    // No file: a user the CA did not send to this host, and invalid names.
    let bob = ca.user_cert_b64("bob,smith-grant:1:ssh:bob", "-5m:+1h", None);
    let o = principals(&h, &["bob", &bob, "id", "1"]);
    assert!(o.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no grant on this host allows"),
        "{o:?}"
    );
    assert_eq!(decide(&h, "root", &alice_g1), "");
    assert_eq!(decide(&h, "../etc", &alice_g1), "");

    // Expired and not yet valid.
    let expired = ca.user_cert_b64("alice,smith-grant:1:ssh:alice", "20200101:20200102", None);
    assert_eq!(decide(&h, "alice", &expired), "");
    let future = ca.user_cert_b64("alice,smith-grant:1:ssh:alice", "+1d:+2d", None);
    assert_eq!(decide(&h, "alice", &future), "");

    // Garbage: bad base64, a plain key, truncated, missing or extra arguments.
    assert_eq!(decide(&h, "alice", "!!!notbase64"), "");
    let plain = std::fs::read_to_string(ca.key.with_extension("pub")).unwrap();
    assert_eq!(
        decide(&h, "alice", plain.split_whitespace().nth(1).unwrap()),
        ""
    );
    assert_eq!(decide(&h, "alice", &alice_g1[..alice_g1.len() / 2]), "");
    for args in [vec![], vec!["alice"], vec!["alice", "--bogus-flag"]] {
        let o = principals(&h, &args);
        assert!(o.status.success() && o.stdout.is_empty(), "{args:?}: {o:?}");
    }
    // Key IDs with spaces reach us as extra arguments: still decided on the cert.
    let o = principals(
        &h,
        &["alice", &alice_g1, "smith:alice:x", "with", "spaces", "9"],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "alice\n");

    // The grant leaves (hostd rewrote the file): nothing.
    let p = h.path("/var/lib/smith/principals/alice");
    std::fs::write(&p, "# hostd\n").unwrap();
    assert_eq!(decide(&h, "alice", &alice_g1), "");
    std::fs::remove_file(&p).unwrap();
    assert_eq!(decide(&h, "alice", &alice_g1), "");
}

#[test]
fn runs_as_nobody() {
    if !root_available("running principals as nobody") {
        return;
    }
    let h = host();
    let ca = SshCa::new();
    let cert = ca.user_cert_b64("alice,smith-grant:1:ssh:alice", "-5m:+1h", None);
    // As an older drop-in has sshd run it: as the AuthorizedPrincipalsCommandUser,
    // reading the world-readable config and principals files.
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(smith_host())
        .arg("--root")
        .arg(&h.root)
        .args(["principals", "alice", &cert, "id", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "alice\n", "{o:?}");
}
