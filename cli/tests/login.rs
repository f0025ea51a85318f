//! `smith login` against a REAL OpenID Provider (npm `oidc-provider`, tests/oidc) and a
//! real CA: the authorization code flow with PKCE through the provider's own login and
//! consent pages (a scripted browser follows the URL `--no-browser` prints and its final
//! redirect reaches smith's loopback listener), the device flow, the ID token kept in the
//! kernel keyring per profile, `smith cert` using it (read back with `ssh-keygen -L`, and
//! as root accepted by a real sshd), `login --cert`, logout and expiry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use smith_testkit::oidc;

use oidc::{drive_sign_in, Account, Browser, Provider, ProviderOptions};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use support::{bin, keygen_l, run, text, Sshd, TestCa};

fn accounts() -> Vec<Account> {
    vec![
        Account::new("alice-0001", "alice", &["dev", "Engineering Staff"]),
        Account::new("oscar-0002", "oscar", &["ops"]),
    ]
}

fn setup(ttl: Option<u64>) -> Option<(Provider, TestCa)> {
    if !oidc::available("smith login tests") {
        return None;
    }
    let op = Provider::start(&ProviderOptions {
        accounts: accounts(),
        id_token_ttl: ttl,
        ..Default::default()
    })
    .expect("start the OpenID Provider");
    let ca = TestCa::start_with(
        &[],
        &[
            "--oidc-issuer",
            &op.issuer,
            "--oidc-client-id",
            "smith",
            "--oidc-allow-http",
            "--oidc-leeway",
            "1s",
        ],
    );
    ca.admin_ok(&["group", "add", "dev"]);
    ca.admin_ok(&["group", "add", "ops"]);
    // The test provider's groups claim carries names as group ids.
    ca.admin_ok(&["group", "map", "dev", "dev"]);
    ca.admin_ok(&["group", "map", "ops", "ops"]);
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
        "1h",
    ]);
    ca.admin_ok(&[
        "grant",
        "add",
        "--group",
        "ops",
        "--tags",
        "env=prod",
        "--level",
        "sudo",
        "--max-ttl",
        "1h",
    ]);
    Some((op, ca))
}

/// A unique profile, so that parallel tests (and engineers) never share a sign-in.
fn profile(tag: &str) -> String {
    format!("t-{tag}-{}", std::process::id())
}

fn smith(ca: &TestCa, profile: &str) -> Command {
    let mut c = Command::new(bin("smith"));
    c.env("SMITH_CA_URL", &ca.url)
        .env("SMITH_CA_FINGERPRINT", &ca.fingerprint)
        .env("SMITH_PROFILE", profile)
        .env("SMITH_CONFIG", "/nonexistent/smith.toml")
        .env_remove("SMITH_TOKEN")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY");
    c
}

/// Runs `smith login ARGS` and drives the provider as `account`: the code flow through
/// the printed URL, or with `--device` the printed verification URI and code.
fn login(ca: &TestCa, profile: &str, args: &[&str], account: &str) -> Output {
    let device = args.contains(&"--device");
    let mut cmd = smith(ca, profile);
    cmd.arg("login").args(args);
    drive_sign_in(&mut cmd, &Browser::new(), account, device).expect("sign-in")
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn cert_to(ca: &TestCa, profile: &str, dir: &Path, scope: &str) -> Output {
    run(smith(ca, profile)
        .args(["cert", "--scope", scope, "--ttl", "10m", "--out"])
        .arg(dir.join("id")))
}

#[test]
fn code_flow_sign_in_then_certificates_for_what_the_idp_groups_allow() {
    let Some((_op, ca)) = setup(None) else { return };
    let p = profile("code");
    let out = login(&ca, &p, &["--no-browser"], "alice-0001");
    let said = ok("smith login", &out);
    assert!(
        said.contains("Signed in as alice (alice Example)"),
        "{said}"
    );
    assert!(
        said.contains("groups:      dev, Engineering Staff"),
        "{said}"
    );
    assert!(said.contains("kernel keyring (profile '"), "{said}");
    assert!(
        !said.contains("eyJ") && !text(&out.stderr).contains("eyJ"),
        "the token is never printed"
    );

    let show = ok("config show", &run(smith(&ca, &p).args(["config", "show"])));
    assert!(show.contains("sign-in         alice until"), "{show}");

    let dir = tempfile::tempdir().unwrap();
    let said = ok("smith cert", &cert_to(&ca, &p, dir.path(), "env=dev"));
    assert!(said.contains("logins:      alice"), "{said}");
    let l = keygen_l(&dir.path().join("id-cert.pub"));
    assert_eq!(l.principals[0], "alice");
    assert!(l.key_id.starts_with("smith:alice:"), "{}", l.key_id);

    // Her IdP groups do not include ops: no certificate for env=prod, and smith says why.
    let out = cert_to(&ca, &p, dir.path(), "env=prod");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no_matching_grant"),
        "{}",
        text(&out.stderr)
    );

    // As root: a real sshd trusting the CA lets alice in with that certificate.
    if support::e2e_available("login_then_sshd") {
        let sshd = Sshd::start("alice", &ca.user_ca_pub());
        let o = sshd.login_with(&dir.path().join("id"), &dir.path().join("id-cert.pub"));
        assert!(
            text(&o.stdout).contains("smith-login-ok"),
            "{}\n{}",
            text(&o.stderr),
            sshd.log()
        );
    }

    // Logout forgets the token; smith cert then says to sign in.
    let said = ok("smith logout", &run(smith(&ca, &p).arg("logout")));
    assert!(said.contains("Signed out"), "{said}");
    let out = cert_to(&ca, &p, dir.path(), "env=dev");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("run `smith login`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn device_flow_sign_in() {
    let Some((_op, ca)) = setup(None) else { return };
    let p = profile("device");
    let out = login(&ca, &p, &["--device"], "alice-0001");
    let said = ok("smith login --device", &out);
    assert!(said.contains("Signed in as alice"), "{said}");
    assert!(
        text(&out.stderr).contains("Waiting for approval"),
        "{}",
        text(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    ok("smith cert", &cert_to(&ca, &p, dir.path(), "env=dev"));
    assert_eq!(
        keygen_l(&dir.path().join("id-cert.pub")).principals[0],
        "alice"
    );
    ok("smith logout", &run(smith(&ca, &p).arg("logout")));
}

#[test]
fn profiles_keep_several_identities_and_login_cert_keeps_none() {
    let Some((_op, ca)) = setup(None) else { return };
    let (pa, po) = (profile("alice"), profile("oscar"));
    ok(
        "login alice",
        &login(&ca, &pa, &["--no-browser"], "alice-0001"),
    );
    ok(
        "login oscar",
        &login(&ca, &po, &["--no-browser"], "oscar-0002"),
    );
    let dir = tempfile::tempdir().unwrap();
    ok("alice cert", &cert_to(&ca, &pa, dir.path(), "env=dev"));
    assert_eq!(
        keygen_l(&dir.path().join("id-cert.pub")).principals[0],
        "alice"
    );
    ok("oscar cert", &cert_to(&ca, &po, dir.path(), "env=prod"));
    assert_eq!(
        keygen_l(&dir.path().join("id-cert.pub")).principals[0],
        "oscar"
    );
    ok("logout", &run(smith(&ca, &pa).arg("logout")));
    ok("logout", &run(smith(&ca, &po).arg("logout")));

    // login --cert: a certificate now, nothing kept.
    let pc = profile("oneshot");
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("id").display().to_string();
    let out = login(
        &ca,
        &pc,
        &[
            "--no-browser",
            "--cert",
            "--scope",
            "env=dev",
            "--ttl",
            "10m",
            "--out",
            &out_path,
        ],
        "alice-0001",
    );
    let said = ok("smith login --cert", &out);
    assert!(said.contains("Certificate issued"), "{said}");
    assert!(
        text(&out.stderr).contains("Signed in as alice"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        keygen_l(&dir.path().join("id-cert.pub")).principals[0],
        "alice"
    );
    let out = cert_to(&ca, &pc, dir.path(), "env=dev");
    assert!(
        text(&out.stderr).contains("not signed in"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_expired_sign_in_asks_for_a_new_login() {
    let Some((_op, ca)) = setup(Some(3)) else {
        return;
    };
    let p = profile("expiry");
    ok(
        "smith login",
        &login(&ca, &p, &["--no-browser"], "alice-0001"),
    );
    let dir = tempfile::tempdir().unwrap();
    ok("smith cert", &cert_to(&ca, &p, dir.path(), "env=dev"));
    std::thread::sleep(Duration::from_secs(9));
    let out = cert_to(&ca, &p, dir.path(), "env=dev");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("smith login"),
        "{}",
        text(&out.stderr)
    );
    // No CA configured for OIDC: login says so plainly.
    let plain = TestCa::start();
    let out = run(smith(&plain, &p).args(["login", "--no-browser"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no OpenID Provider configured"),
        "{}",
        text(&out.stderr)
    );
}
