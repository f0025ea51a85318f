//! `smith-host principals USER CERT KEY_ID SERIAL` (sshd's AuthorizedPrincipalsCommand)
//! with real certificates from ssh-keygen and a cache built like hostd builds it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::*;
use smith_proto::cache::{build, CacheContents, CacheGroup, CacheUser};
use smith_proto::Level;
use std::process::{Command, Output};

fn cache_user(name: &str, uid: u32, level: Level) -> CacheUser {
    CacheUser {
        name: name.into(),
        uid,
        gid: uid,
        gecos: String::new(),
        dir: format!("/home/{name}"),
        shell: "/bin/bash".into(),
        level,
        gids: vec![],
    }
}

/// A host tagged env=prod,role=web whose cache holds alice (ssh), oscar (sudo) and —
/// as a stale cache might after a local account was added — deploy (a local user).
fn host() -> HostRoot {
    let h = HostRoot::new();
    let c = CacheContents {
        host_name: "web-1".into(),
        host_tags: "env=prod,role=web".into(),
        generation: 1,
        snapshot_version: 5,
        written_at: now(),
        sudo_gid: 200000,
        users: vec![
            cache_user("alice", 200001, Level::Ssh),
            cache_user("oscar", 200002, Level::Sudo),
            cache_user("deploy", 200003, Level::Ssh),
        ],
        groups: vec![CacheGroup {
            name: "smith-sudo".into(),
            gid: 200000,
            members: vec!["oscar".into()],
        }],
    };
    let p = h.path("/var/lib/smith/nss.cache");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, build(&c).unwrap()).unwrap();
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

    // Allowed: scope within the host's tags, or no scope; sudo users too.
    let alice_prod = ca.user_cert_b64("alice", "-5m:+1h", Some("env=prod"));
    assert_eq!(decide(&h, "alice", &alice_prod), "alice\n");
    let alice_any = ca.user_cert_b64("alice", "-5m:+1h", None);
    assert_eq!(decide(&h, "alice", &alice_any), "alice\n");
    let oscar_web = ca.user_cert_b64("oscar", "-5m:+1h", Some("env=prod,role=web"));
    assert_eq!(decide(&h, "oscar", &oscar_web), "oscar\n");

    // Wrong scope.
    let alice_dev = ca.user_cert_b64("alice", "-5m:+1h", Some("env=dev"));
    let o = principals(&h, &["alice", &alice_dev, "id", "1"]);
    assert!(o.status.success() && o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not match this host's tags"));
    let too_wide = ca.user_cert_b64("alice", "-5m:+1h", Some("env=prod,role=db"));
    assert_eq!(decide(&h, "alice", &too_wide), "");

    // No grant here: a user the CA did not send to this host.
    let bob = ca.user_cert_b64("bob", "-5m:+1h", Some("env=prod"));
    let o = principals(&h, &["bob", &bob, "id", "1"]);
    assert!(o.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a Smith user with a grant on this host"),
        "{o:?}"
    );

    // Unknown or invalid users, and a certificate for someone else.
    assert_eq!(decide(&h, "root", &alice_prod), "");
    assert_eq!(decide(&h, "zed", &alice_prod), "");
    assert_eq!(decide(&h, "../etc", &alice_prod), "");
    assert_eq!(decide(&h, "oscar", &alice_prod), "");

    // A local account is never logged into with a Smith certificate, even if a stale
    // cache still lists it.
    let deploy = ca.user_cert_b64("deploy", "-5m:+1h", None);
    assert_eq!(decide(&h, "deploy", &deploy), "");

    // Expired and not yet valid.
    let expired = ca.user_cert_b64("alice", "20200101:20200102", Some("env=prod"));
    assert_eq!(decide(&h, "alice", &expired), "");
    let future = ca.user_cert_b64("alice", "+1d:+2d", Some("env=prod"));
    assert_eq!(decide(&h, "alice", &future), "");

    // Garbage: bad base64, a plain key, truncated, missing or extra arguments.
    assert_eq!(decide(&h, "alice", "!!!notbase64"), "");
    let plain = std::fs::read_to_string(ca.key.with_extension("pub")).unwrap();
    assert_eq!(
        decide(&h, "alice", plain.split_whitespace().nth(1).unwrap()),
        ""
    );
    assert_eq!(decide(&h, "alice", &alice_prod[..alice_prod.len() / 2]), "");
    for args in [vec![], vec!["alice"], vec!["alice", "--bogus-flag"]] {
        let o = principals(&h, &args);
        assert!(o.status.success() && o.stdout.is_empty(), "{args:?}: {o:?}");
    }
    // Key IDs with spaces reach us as extra arguments: still decided on the cert.
    let o = principals(
        &h,
        &["alice", &alice_prod, "smith:alice:x", "with", "spaces", "9"],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "alice\n");

    // No cache at all, or a corrupt one: nothing.
    let p = h.path("/var/lib/smith/nss.cache");
    let good = std::fs::read(&p).unwrap();
    std::fs::write(&p, &good[..good.len() - 3]).unwrap();
    assert_eq!(decide(&h, "alice", &alice_prod), "");
    std::fs::remove_file(&p).unwrap();
    assert_eq!(decide(&h, "alice", &alice_prod), "");
    std::fs::write(&p, &good).unwrap();

    // Repeated calls agree (its speed is measured by `cargo xtask bench --only login`).
    for _ in 0..3 {
        assert_eq!(decide(&h, "alice", &alice_prod), "alice\n");
    }
}

#[test]
fn runs_as_nobody() {
    if !root_available("running principals as nobody") {
        return;
    }
    let h = host();
    let ca = SshCa::new();
    let cert = ca.user_cert_b64("alice", "-5m:+1h", Some("env=prod"));
    // As sshd runs it: as the AuthorizedPrincipalsCommandUser, reading the world-readable
    // config, cache and passwd files.
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
