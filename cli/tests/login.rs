//! `smith login` against a REAL OpenID Provider (npm `oidc-provider`, tests/oidc) and a
//! real CA: the authorization code flow with PKCE through the provider's own login and
//! consent pages (a scripted browser follows the URL `--no-browser` prints and its final
//! redirect reaches smith's loopback listener), the device flow, the ID token kept in the
//! kernel keyring per profile, `smith cert` using it (read back with `ssh-keygen -L`, and
//! as root accepted by a real sshd), `login --cert`, logout and expiry.
//!
//! No re-SSO all day: with `offline_access` among the CA's scopes the provider issues a
//! refresh token, kept beside the ID token; when the ID token expires `smith cert` renews
//! it without the browser (the provider's counts show no new authorization request),
//! until the person is disabled (in Smith or at the provider), the refresh token is
//! revoked, or the sign-in is older than the CA's `max_sign_in_age`. Attacks: a renewal
//! that names another person, an old sign-in renewed, tokens in files or process
//! arguments. And a machine without a usable kernel keyring (a seccomp filter blocking
//! `keyctl`, as Docker's default profile does).

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
    setup_with(ttl, &[])
}

/// The scopes that make the provider issue a refresh token.
const OFFLINE: &[&str] = &["--oidc-scopes", "openid profile groups offline_access"];

fn setup_with(ttl: Option<u64>, serve_args: &[&str]) -> Option<(Provider, TestCa)> {
    if !oidc::available("smith login tests") {
        return None;
    }
    let op = Provider::start(&ProviderOptions {
        accounts: accounts(),
        id_token_ttl: ttl,
        ..Default::default()
    })
    .expect("start the OpenID Provider");
    let mut args = vec![
        "--oidc-issuer",
        &op.issuer,
        "--oidc-client-id",
        "smith",
        "--oidc-allow-http",
        "--oidc-leeway",
        "1s",
    ];
    args.extend_from_slice(serve_args);
    let ca = TestCa::start_with(&[], &args);
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
    let Some((_op, ca)) = setup_with(None, OFFLINE) else {
        return;
    };
    let p = profile("device");
    let out = login(&ca, &p, &["--device"], "alice-0001");
    let said = ok("smith login --device", &out);
    assert!(said.contains("Signed in as alice"), "{said}");
    // The device flow gets a refresh token too.
    assert!(
        said.contains("renewed:     without the browser until"),
        "{said}"
    );
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

// --- No re-SSO all day -----------------------------------------------------------------

use smith_login::keyring::{self, Stored};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// `smith` as an engineer whose HOME is `home` (its config and state directory
/// `~/.config/smith`, where concurrent renewals coordinate).
fn smith_at(ca: &TestCa, profile: &str, home: &Path) -> Command {
    let mut c = smith(ca, profile);
    c.env("HOME", home)
        .env_remove("SMITH_CONFIG")
        .env_remove("XDG_CONFIG_HOME");
    c
}

/// What `smith` keeps for `profile` (the test runs as the same user).
fn kept(ca: &TestCa, profile: &str) -> Option<Stored> {
    keyring::load(profile, &ca.url).expect("read the kernel keyring")
}

fn unix_now() -> u64 {
    smith_login::oidc::now()
}

/// Waits until the kept ID token of `profile` has expired.
fn wait_expired(ca: &TestCa, profile: &str) {
    let exp = kept(ca, profile).expect("a kept sign-in").expires_at;
    while unix_now() < exp {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn login_as(cmd: &mut Command, account: &str) -> String {
    cmd.args(["login", "--no-browser"]);
    ok(
        "smith login",
        &drive_sign_in(cmd, &Browser::new(), account, false).expect("sign-in"),
    )
}

/// Every distinct command line and environment of the machine's processes, sampled
/// until `stop` (to show no token ever passes through them).
fn watch_processes(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        while !stop.load(Ordering::SeqCst) {
            for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                for f in ["cmdline", "environ"] {
                    if let Ok(b) = std::fs::read(e.path().join(f)) {
                        seen.insert(b);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen.into_iter().collect()
    })
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

/// One browser sign-in, then a compressed day: the ID token (2 s here, an hour at most
/// IdPs) expires again and again and each `smith cert` after an expiry renews it with
/// the refresh token; the provider sees one authorization request in all. Concurrent
/// renewals of one profile renew once. Tokens never reach a file under HOME or any
/// process's arguments. As root, real ssh through a real agent logs in with a
/// certificate `smith cert --ensure` got after both the certificate and the ID token had
/// expired. Then `smith-ca admin user disable alice`: the next renewal fails at once.
#[test]
fn one_browser_sign_in_renews_all_day_until_smith_disables_the_person() {
    let Some((op, ca)) = setup_with(Some(2), OFFLINE) else {
        return;
    };
    let p = profile("day");
    let home = tempfile::tempdir().unwrap();
    let said = login_as(&mut smith_at(&ca, &p, home.path()), "alice-0001");
    assert!(
        said.contains("renewed:     without the browser until"),
        "{said}"
    );
    let at_sign_in = op.counts().unwrap();
    assert_eq!(at_sign_in.authorization, 1, "{at_sign_in:?}");
    let first = kept(&ca, &p).expect("kept");
    let refresh = first.refresh.clone().expect("a refresh token is kept");
    assert_eq!(refresh.subject, "alice-0001");
    let claims = smith_login::oidc::peek(&first.id_token).unwrap();
    assert!(
        claims.auth_time.is_some(),
        "smith login asks for max_age, so the provider says when she signed in"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_processes(stop.clone());
    let mut tokens = vec![first.id_token.clone(), refresh.token.clone()];
    let dir = tempfile::tempdir().unwrap();
    let cert = |what: &str| {
        let t = Instant::now();
        let out = run(smith_at(&ca, &p, home.path())
            .args(["cert", "--scope", "env=dev", "--ttl", "10m", "--out"])
            .arg(dir.path().join("id")));
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        ok(what, &out);
        assert_eq!(
            keygen_l(&dir.path().join("id-cert.pub")).principals[0],
            "alice"
        );
        ms
    };
    const EXPIRIES: u64 = 6;
    let (mut renewing, mut plain, mut certs) = (vec![], vec![], 0u64);
    for round in 1..=EXPIRIES {
        wait_expired(&ca, &p);
        renewing.push(cert("smith cert after the ID token expired"));
        let s = kept(&ca, &p).expect("still kept");
        let r = s.refresh.as_ref().expect("still renewable");
        assert_eq!(r.renewals, round, "one renewal per expiry");
        tokens.push(s.id_token.clone());
        tokens.push(r.token.clone());
        // Another certificate on the same ID token: no renewal.
        plain.push(cert("smith cert with a fresh ID token"));
        assert_eq!(kept(&ca, &p).unwrap().refresh.unwrap().renewals, round);
        certs += 2;
    }
    // Concurrent runs (ssh's Match exec for parallel connections): one renewal. Without
    // the lock, each would spend the same rotating refresh token and all but one would be
    // refused.
    wait_expired(&ca, &p);
    let before = op.counts().unwrap();
    let runs: Vec<_> = (0..6)
        .map(|i| {
            smith_at(&ca, &p, home.path())
                .args(["cert", "--scope", "env=dev", "--ttl", "10m", "--out"])
                .arg(dir.path().join(format!("par{i}")))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in runs {
        ok("parallel smith cert", &r.wait_with_output().unwrap());
        certs += 1;
    }
    let after = op.counts().unwrap();
    assert_eq!(
        after.grants("refresh_token") - before.grants("refresh_token"),
        1,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.grant_errors("refresh_token"), 0, "{after:?}");
    let s = kept(&ca, &p).unwrap();
    tokens.push(s.id_token.clone());
    tokens.push(s.refresh.clone().unwrap().token);
    stop.store(true, Ordering::SeqCst);
    let processes = watcher.join().unwrap();

    let c = op.counts().unwrap();
    assert_eq!(c.authorization, 1, "a renewal opened the browser: {c:?}");
    assert_eq!(c.interaction, at_sign_in.interaction, "{c:?}");
    assert_eq!(c.grants("refresh_token"), EXPIRIES + 1, "{c:?}");
    let mut distinct = tokens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        tokens.len(),
        "rotated refresh tokens are kept"
    );
    println!(
        "certificates renewed per browser sign-in in the test day: {certs} ({} ID-token \
         expiries renewed with the refresh token, 1 authorization request); smith cert \
         renewing the ID token first: median {:.0} ms (max {:.0}), with a fresh ID token: \
         median {:.0} ms",
        EXPIRIES + 1,
        median_ms(renewing.clone()),
        renewing.iter().cloned().fold(0.0, f64::max),
        median_ms(plain)
    );

    // No token in a file under HOME (the lock file of the renewals is there, empty), nor
    // in any process's arguments or environment.
    let files = files_under(home.path());
    assert!(
        files.iter().any(|f| f.ends_with(format!("renew-{p}.lock"))),
        "{files:?}"
    );
    for f in &files {
        let b = std::fs::read(f).unwrap();
        assert!(
            !tokens.iter().any(|t| contains(&b, t)),
            "a token in {}",
            f.display()
        );
    }
    assert!(processes.len() > 10, "the process watcher saw nothing");
    for b in &processes {
        assert!(
            !tokens.iter().any(|t| contains(b, t)),
            "a token in a process's arguments or environment: {}",
            String::from_utf8_lossy(b)
                .chars()
                .take(200)
                .collect::<String>()
        );
    }

    // As root: the certificate in the agent expired (gone) and the ID token too; the
    // check ssh runs before connecting renews both, and real ssh gets in.
    if support::e2e_available("refresh_then_sshd") {
        let sshd = Sshd::start("alice", &ca.user_ca_pub());
        let agent = support::Agent::start();
        wait_expired(&ca, &p);
        let t = Instant::now();
        ok(
            "smith cert --ensure",
            &run(smith_at(&ca, &p, home.path())
                .env("SSH_AUTH_SOCK", &agent.sock)
                .args(["cert", "--ensure", "--quiet", "--scope", "env=dev"])
                .args(["--ttl", "10m"])),
        );
        let ensure_ms = t.elapsed().as_secs_f64() * 1000.0;
        let o = sshd.ssh(
            &["-o", &format!("IdentityAgent={}", agent.sock.display())],
            "echo smith-login-ok",
        );
        assert!(
            text(&o.stdout).contains("smith-login-ok"),
            "{}\n{}",
            text(&o.stderr),
            sshd.log()
        );
        println!("smith cert --ensure with an expired ID token: {ensure_ms:.0} ms");
        assert_eq!(op.counts().unwrap().authorization, 1);
    }

    // Disabled in Smith: the next renewal is refused at once, and says why.
    ca.admin_ok(&["user", "disable", "alice"]);
    wait_expired(&ca, &p);
    let t = Instant::now();
    let out = run(smith_at(&ca, &p, home.path())
        .args(["cert", "--scope", "env=dev", "--ttl", "10m", "--out"])
        .arg(dir.path().join("id")));
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("user_disabled") && text(&out.stderr).contains("disabled"),
        "{}",
        text(&out.stderr)
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// The provider ends the sign-in: a refresh token revoked there (or by `smith logout`),
/// the person disabled there. Each gives "run `smith login` again" and forgets the kept
/// sign-in. An attack: a refresh token that renews into another person's ID token (here
/// oscar's refresh token put in alice's kept sign-in) is refused before the CA sees it.
/// And a provider that never answers costs a renewal at most its bound.
#[test]
fn the_provider_ending_the_sign_in_ends_renewals_and_another_persons_token_is_refused() {
    let Some((mut op, ca)) = setup_with(Some(2), OFFLINE) else {
        return;
    };
    let (pa, po, pr) = (profile("victim"), profile("donor"), profile("revoked"));
    login_as(&mut smith(&ca, &pa), "alice-0001");
    login_as(&mut smith(&ca, &po), "oscar-0002");
    login_as(&mut smith(&ca, &pr), "oscar-0002");
    let dir = tempfile::tempdir().unwrap();
    let refused = |profile: &str, what: &str| {
        let out = cert_to(&ca, profile, dir.path(), "env=dev");
        assert!(!out.status.success(), "{what}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains("run `smith login` again"), "{what}: {err}");
        assert!(
            kept(&ca, profile).is_none(),
            "{what}: the sign-in is forgotten"
        );
        err
    };

    // Attack: alice's kept sign-in with oscar's refresh token.
    let mut a = kept(&ca, &pa).unwrap();
    let donor = kept(&ca, &po).unwrap().refresh.unwrap().token;
    a.refresh.as_mut().unwrap().token = donor;
    keyring::store(&pa, &ca.url, &a, unix_now()).unwrap();
    wait_expired(&ca, &pa);
    let err = refused(&pa, "another person's renewal");
    assert!(err.contains("names another person"), "{err}");
    let oscar_decisions: Vec<_> = ca
        .audit_trail("@ca")
        .into_iter()
        .filter(|e| e["user"] == "oscar")
        .collect();
    assert!(
        oscar_decisions.is_empty(),
        "oscar's ID token reached the CA: {oscar_decisions:?}"
    );

    // A refresh token revoked at the provider (what `smith logout` also does).
    op.revoke(&kept(&ca, &pr).unwrap().refresh.unwrap().token)
        .unwrap();
    wait_expired(&ca, &pr);
    let err = refused(&pr, "a revoked refresh token");
    assert!(err.contains("invalid_grant"), "{err}");

    // The person disabled at the provider.
    let pd = profile("disabled");
    login_as(&mut smith(&ca, &pd), "alice-0001");
    ok("smith cert", &cert_to(&ca, &pd, dir.path(), "env=dev"));
    op.disable("alice-0001").unwrap();
    wait_expired(&ca, &pd);
    let t = Instant::now();
    let err = refused(&pd, "alice disabled at the provider");
    assert!(
        err.contains("refused to renew your sign-in (invalid_grant"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));

    // logout revokes the refresh token at the provider: a copy taken before is useless.
    let pl = profile("logout");
    login_as(&mut smith(&ca, &pl), "oscar-0002");
    let copy = kept(&ca, &pl).unwrap();
    let said = ok("smith logout", &run(smith(&ca, &pl).arg("logout")));
    assert!(said.contains("Revoked its refresh token"), "{said}");
    let before = op.counts().unwrap().grant_errors("refresh_token");
    keyring::store(&pl, &ca.url, &copy, unix_now()).unwrap();
    wait_expired(&ca, &pl);
    let err = refused(&pl, "a refresh token revoked by logout");
    assert!(err.contains("invalid_grant"), "{err}");
    assert_eq!(
        op.counts().unwrap().grant_errors("refresh_token"),
        before + 1
    );

    // A provider that accepts the connection and never answers: the renewal gives up
    // within its bound (5 s), says so, and keeps the sign-in for a later try.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pu = profile("unanswered");
    login_as(&mut smith(&ca, &pu), "oscar-0002");
    let mut s = kept(&ca, &pu).unwrap();
    s.refresh.as_mut().unwrap().token_endpoint =
        format!("http://{}/token", black_hole.local_addr().unwrap());
    keyring::store(&pu, &ca.url, &s, unix_now()).unwrap();
    wait_expired(&ca, &pu);
    let t = Instant::now();
    let out = cert_to(&ca, &pu, dir.path(), "env=prod");
    let took = t.elapsed();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot renew your sign-in at http://127.0.0.1:")
            && err.contains("try again in a moment"),
        "{err}"
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(kept(&ca, &pu).is_some(), "kept for a later try");
}

/// The CA's maximum sign-in age (`[oidc] max_sign_in_age` in ca.toml) ends renewals: an
/// ID token renewed a moment ago, but of a sign-in older than the CA accepts (its
/// `auth_time`), is refused with `oidc_sign_in_too_old`, and smith says to sign in again
/// (and forgets what it kept). A new sign-in asks the provider for that `max_age`.
#[test]
fn a_sign_in_older_than_the_ca_accepts_is_refused_however_fresh_its_renewal() {
    let Some((op, mut ca)) = setup_with(Some(2), OFFLINE) else {
        return;
    };
    let p = profile("age");
    login_as(&mut smith(&ca, &p), "alice-0001");
    let (_, ac) = ca.get_json(smith_api::endpoints::AUTH_CONFIG);
    assert_eq!(ac["max_sign_in_age_secs"], 12 * 3600, "{ac}");
    let dir = tempfile::tempdir().unwrap();
    ok("smith cert", &cert_to(&ca, &p, dir.path(), "env=dev"));

    // The admin shortens the sign-in age in ca.toml and restarts the CA.
    let toml = ca.data_dir.join("ca.toml");
    let mut settings = std::fs::read_to_string(&toml).unwrap_or_default();
    settings.push_str("\n[oidc]\nmax_sign_in_age = \"5s\"\n");
    std::fs::write(&toml, settings).unwrap();
    ca.restart();
    let (_, ac) = ca.get_json(smith_api::endpoints::AUTH_CONFIG);
    assert_eq!(ac["max_sign_in_age_secs"], 5, "{ac}");

    let signed_in = kept(&ca, &p).unwrap().refresh.unwrap().signed_in_at;
    while unix_now() <= signed_in + 5 + 1 {
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_expired(&ca, &p);
    let renewals = op.counts().unwrap().grants("refresh_token");
    let out = cert_to(&ca, &p, dir.path(), "env=dev");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("older than this CA accepts (oidc_sign_in_too_old")
            && err.contains("sign in again with `smith login`"),
        "{err}"
    );
    assert_eq!(
        op.counts().unwrap().grants("refresh_token"),
        renewals + 1,
        "the CA judged a freshly renewed ID token"
    );
    assert!(kept(&ca, &p).is_none(), "the ended sign-in is forgotten");

    // Signing in again works, and asks the provider for a sign-in of at most 5 s.
    let out = login(&ca, &p, &["--no-browser"], "alice-0001");
    ok("smith login again", &out);
    assert!(
        text(&out.stderr).contains("max_age=5&"),
        "{}",
        text(&out.stderr)
    );
    ok("smith cert", &cert_to(&ca, &p, dir.path(), "env=dev"));
}

/// Runs `cmd` with the kernel keyring blocked as Docker's default seccomp profile blocks
/// it: `add_key`, `request_key` and `keyctl` fail with EPERM.
fn without_keyring(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET;
    // seccomp_data: nr at offset 0, arch at offset 4.
    let filter = [
        stmt(load, 4),
        jeq(ARCH, 0, 4),
        stmt(load, 0),
        jeq(libc::SYS_add_key as u32, 3, 0),
        jeq(libc::SYS_request_key as u32, 2, 0),
        jeq(libc::SYS_keyctl as u32, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
    ];
    // SAFETY: between fork and exec the closure only calls prctl(2) (async-signal-safe)
    // on the filter built before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Where the kernel keyring cannot be used (a container's seccomp profile): `smith
/// login` says so before any browser sign-in, `smith cert` says why it has no sign-in,
/// and `smith login --cert` still gets a certificate, the token kept in that process
/// only.
#[test]
fn without_a_kernel_keyring_login_says_so_and_login_cert_still_works() {
    let Some((op, ca)) = setup(None) else { return };
    let p = profile("nokeyring");
    let out = run(without_keyring(smith(&ca, &p).args([
        "login",
        "--no-browser",
        "--timeout",
        "5s",
    ])));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the kernel keyring cannot be used here")
            && err.contains("smith login --cert"),
        "{err}"
    );
    assert!(!err.contains("code_challenge"), "no sign-in URL: {err}");
    assert_eq!(op.counts().unwrap().authorization, 0);

    let dir = tempfile::tempdir().unwrap();
    let out = run(without_keyring(
        smith(&ca, &p)
            .args(["cert", "--scope", "env=dev", "--out"])
            .arg(dir.path().join("id")),
    ));
    let err = text(&out.stderr);
    assert!(
        err.contains("not signed in: the kernel keyring cannot be used here"),
        "{err}"
    );

    let out_path = dir.path().join("id").display().to_string();
    let mut cmd = smith(&ca, &p);
    cmd.args(["login", "--no-browser", "--cert", "--scope", "env=dev"])
        .args(["--ttl", "10m", "--out", &out_path]);
    let out = drive_sign_in(
        without_keyring(&mut cmd),
        &Browser::new(),
        "alice-0001",
        false,
    )
    .expect("sign-in");
    ok("smith login --cert without a keyring", &out);
    assert_eq!(
        keygen_l(&dir.path().join("id-cert.pub")).principals[0],
        "alice"
    );
    assert!(kept(&ca, &p).is_none());
}
