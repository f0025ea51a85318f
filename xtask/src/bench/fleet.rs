//! Parts that need a real host (the `smith-tests` fleet: network + mount + UTS namespaces,
//! real sshd, smith-hostd, nss_smith and pam_smith, a release CA on the fleet's LAN):
//!
//! - `login`: a certificate login (Smith cert put in an ssh-agent by `smith cert`, sshd
//!   with TrustedUserCAKeys, the principals files hostd keeps, nss_smith, pam_smith) against a
//!   plain authorized_keys login of a local user whose key is in another agent, to the
//!   same sshd, alternating A-B-B-A, ratio of medians; `-o ControlMaster=no`, command
//!   `true`. Diagnostics: the same with `-i` key files.
//! - `login`, renewal: `ssh HOST true` through the `smith config ssh` block when both the
//!   certificate (gone from the agent) and the ID token (1 s at the test OpenID Provider)
//!   have expired, so `smith cert --ensure` renews the ID token with the refresh token
//!   and gets a certificate before ssh connects; against the same login with a fresh
//!   certificate in the agent (the check finds it, no network); alternating.
//! - `propagation` (real host): `group remove-member` at the CA until a process inside
//!   the host, calling `getpwnam_r` in a loop, stops finding the user.
//! - `apply`: 10,000 users are created (admin API, in parallel), then one grant makes them
//!   all the host's; timed until `getpwnam_r("u09999")` answers inside the host; hostd's
//!   RSS and idle CPU before and after.
//!
//! This runs in its own thread, which enters the fleet's LAN network namespace after the
//! fleet is built, so that ssh and the API client reach the hosts and the CA like an
//! engineer's workstation would.
//!
//! Must never: touch the machine's own /etc (the fleet's hosts have private overlays).

use super::api::Api;
use super::report::{Figure, Goal};
use super::util::{
    cpu_secs, enter_netns, mono_ns, progress, register_netns, rss_mb, runtime, stats,
    unregister_netns,
};
use anyhow::{bail, Context, Result};
use smith_proto::Level;
use smith_tests::oidc::{self, Account, Provider, ProviderOptions};
use smith_tests::{Client, Fleet, Host};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOST: &str = "bench-1";
const TAGS: &str = "env=bench";
const GROUP: &str = "benchers";

pub struct Parts {
    pub login: bool,
    pub propagation: bool,
    pub apply: bool,
}

/// The user CA key the fleet's CA is initialized with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserCa {
    /// `--user-ca-algorithm ed25519`: Debian 12's OpenSSH 9.2 checks its signatures with
    /// slower built-in code.
    Ed25519,
    /// `smith-ca init`'s default (`ecdsa-p256`): OpenSSH verifies it with libcrypto.
    EcdsaP256,
}

impl UserCa {
    fn init_args(self) -> &'static [&'static str] {
        match self {
            UserCa::Ed25519 => &["--user-ca-algorithm", "ed25519"],
            UserCa::EcdsaP256 => &[],
        }
    }

    fn label(self) -> &'static str {
        match self {
            UserCa::Ed25519 => "Ed25519 user CA",
            UserCa::EcdsaP256 => "ECDSA P-256 user CA (default)",
        }
    }
}

/// Builds a fleet whose CA has a `user_ca` key and runs `parts` on it (the login
/// diagnostics only with the default CA). Call from a thread of its own: it enters the
/// fleet's network namespace.
pub fn run(parts: &Parts, user_ca: UserCa, xtask: &Path, quick: bool) -> Result<Vec<Figure>> {
    progress(format!(
        "fleet: building a LAN, a release CA ({}) and host bench-1 (sshd, smith-hostd)",
        user_ca.label()
    ));
    let mut fleet = Fleet::new("bench")?;
    let mut namespaces = vec![fleet.lan_ns.clone()];
    register_netns(&fleet.lan_ns);
    let r = with_fleet(&mut fleet, &mut namespaces, parts, user_ca, xtask, quick);
    drop(fleet);
    for ns in &namespaces {
        unregister_netns(ns);
    }
    r
}

fn with_fleet(
    fleet: &mut Fleet,
    namespaces: &mut Vec<String>,
    parts: &Parts,
    user_ca: UserCa,
    xtask: &Path,
    quick: bool,
) -> Result<Vec<Figure>> {
    // The renewal comparison needs an OpenID Provider in the LAN (default CA only).
    let idp = if parts.login && user_ca == UserCa::EcdsaP256 {
        start_idp(fleet)
    } else {
        Err(anyhow::anyhow!("not on this fleet"))
    };
    let oidc_args: Vec<String> = match &idp {
        Ok(op) => [
            "--oidc-issuer",
            &op.issuer,
            "--oidc-client-id",
            "smith",
            "--oidc-allow-http",
            "--oidc-scopes",
            "openid profile groups offline_access",
            "--oidc-leeway",
            "0s",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect(),
        Err(_) => vec![],
    };
    let oidc_args: Vec<&str> = oidc_args.iter().map(String::as_str).collect();
    fleet.start_ca_init_with(user_ca.init_args(), &oidc_args)?;
    for args in [
        vec!["group", "add", GROUP],
        vec!["user", "add", "alice", "--groups", GROUP],
        vec![
            "grant",
            "add",
            "--group",
            GROUP,
            "--tags",
            TAGS,
            "--level",
            "ssh",
            "--max-ttl",
            "8h",
        ],
    ] {
        fleet.admin_ok(&args)?;
    }
    // The host's namespace name is known once it exists; register it right away.
    let added = fleet.add_host(HOST, TAGS);
    for h in &fleet.hosts {
        register_netns(&h.ns);
        namespaces.push(h.ns.clone());
    }
    added?;
    enter_netns(&fleet.lan_ns)?;
    let rt = runtime()?;
    let ca = fleet.ca();
    let api = Api::new(&ca.url, &ca.fingerprint, &ca.admin_token)?;
    let mut figs = Vec::new();
    if parts.login {
        figs.extend(login(fleet, &rt, &api, user_ca, xtask, quick)?);
        match &idp {
            Ok(op) => figs.push(
                renewal(fleet, op, quick)
                    .unwrap_or_else(|e| Figure::missing("Login", RENEWAL, format!("{e:#}"))),
            ),
            Err(e) if user_ca == UserCa::EcdsaP256 => {
                figs.push(Figure::missing("Login", RENEWAL, format!("{e:#}")))
            }
            Err(_) => {}
        }
    }
    if parts.propagation {
        figs.extend(real_propagation(fleet, &rt, &api, xtask, quick)?);
        match sudo_follows(fleet, &rt, &api, quick) {
            Ok(f) => figs.push(f),
            Err(e) => figs.push(Figure::missing(
                "Propagation",
                "sudo rule removed until sudo refuses",
                format!("{e:#}"),
            )),
        }
    }
    if parts.apply {
        figs.extend(apply(fleet, &rt, &api, xtask, quick)?);
    }
    if let Some(secs) = std::env::var("SMITH_BENCH_HOLD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let h = fleet.host(HOST);
        progress(format!(
            "SMITH_BENCH_HOLD: fleet kept up {secs} s; enter the host with \
             `nsenter -t {} -m -u -n`, the LAN with `ip netns exec {}`",
            h.cmd("true")
                .get_args()
                .nth(1)
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default(),
            fleet.lan_ns
        ));
        std::thread::sleep(Duration::from_secs(secs));
    }
    Ok(figs)
}

// --- login -----------------------------------------------------------------------------------

/// How ssh authenticates in one login.
#[derive(Clone, Copy)]
enum Id<'a> {
    /// Whatever the ssh-agent at this socket holds (`smith cert` leaves an engineer with
    /// exactly one identity there: the certificate with its key).
    Agent(&'a Path),
    /// `-i FILE` with no agent: OpenSSH loads FILE and FILE-cert.pub and offers the plain
    /// key first, so a certificate login pays one refused key query before its own.
    KeyFile(&'a Path),
}

fn ssh_once(home: &Path, id: Id, user: &str, ip: &str) -> Result<f64> {
    let mut c = Command::new("ssh");
    c.env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .args(["-F", "/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"]);
    match id {
        Id::Agent(sock) => c.arg("-o").arg(format!("IdentityAgent={}", sock.display())),
        Id::KeyFile(key) => c
            .args(["-o", "IdentityAgent=none", "-o", "IdentitiesOnly=yes"])
            .arg("-i")
            .arg(key),
    };
    let t = Instant::now();
    let o = c
        .arg(format!("{user}@{ip}"))
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .context("running ssh")?;
    let secs = t.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!(
            "ssh {user}@{ip} true failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(secs * 1000.0)
}

fn login(
    fleet: &Fleet,
    rt: &tokio::runtime::Runtime,
    api: &Api,
    user_ca: UserCa,
    xtask: &Path,
    quick: bool,
) -> Result<Vec<Figure>> {
    let host = fleet.host(HOST);
    let mut alice = fleet.client("alice")?;
    alice.set_token(&rt.block_on(api.user_token("alice"))?);
    // The engineer's way: `smith cert` puts the certificate (and only it) in the agent.
    alice
        .smith(&["cert", "--scope", TAGS, "--ttl", "1h"])?
        .ok()
        .context("smith cert for alice")?;
    // The operator's way without Smith: a local user, a key in authorized_keys, in an agent.
    let (plain_key, _) = fleet.admin_key()?;
    let ops = fleet.client("ops")?;
    ops.run(&["ssh-add", &plain_key.display().to_string()])?
        .ok()
        .context("ssh-add of the authorized_keys key")?;
    let home = alice.home.clone();
    let (cert_id, plain_id) = (Id::Agent(&alice.agent_sock), Id::Agent(&ops.agent_sock));
    let pairs = if quick { 10 } else { 40 };
    progress(format!(
        "login: {pairs} certificate + {pairs} authorized_keys logins, alternating"
    ));
    // Warm-up: alice's home is created at her first session; caches settle.
    for _ in 0..3 {
        ssh_once(&home, cert_id, "alice", &host.ip)?;
        ssh_once(&home, plain_id, "deploy", &host.ip)?;
    }
    let (cert, plain) = ab_pairs(&home, cert_id, plain_id, &host.ip, pairs)?;
    let (c, p) = (stats(&cert), stats(&plain));
    let ratio = c.p50 / p.p50;
    let ca = user_ca.label();
    let mut figs = vec![
        Figure::new(
            "Login",
            format!("certificate login, {ca}, median"),
            c.p50,
            "ms",
        )
        .baseline("authorized_keys login, same sshd", p.p50)
        .note(format!(
            "{pairs} each; p90 {:.1} vs {:.1} ms; an ssh-agent holding the Smith \
                 certificate vs one holding the plain key, ControlMaster=no, command `true`",
            c.p90, p.p90
        )),
        Figure::new(
            "Login",
            format!("certificate / authorized_keys, {ca} (ratio of medians)"),
            ratio,
            "",
        ),
    ];
    // The target is the default CA's; the other algorithm is for comparison.
    if user_ca == UserCa::EcdsaP256 {
        if let Some(f) = figs.pop() {
            figs.push(f.goal(Goal::AtMost(1.05)));
        }
    }
    if user_ca != UserCa::EcdsaP256 {
        return Ok(figs);
    }
    // The same certificate flow to a key file, for the `-i` diagnostic and the breakdown.
    let cert_key = alice.home.join("id_alice");
    alice
        .smith(&[
            "cert",
            "--scope",
            TAGS,
            "--ttl",
            "1h",
            "--out",
            &cert_key.display().to_string(),
        ])?
        .ok()
        .context("smith cert --out for alice")?;
    let diag_pairs = if quick { 5 } else { 20 };
    // The same with key files: what OpenSSH's key-then-certificate order costs.
    let files = ab_pairs(
        &home,
        Id::KeyFile(&cert_key),
        Id::KeyFile(&plain_key),
        &host.ip,
        diag_pairs,
    );
    match files {
        Ok((cert, plain)) => {
            let (c, p) = (stats(&cert), stats(&plain));
            figs.push(
                Figure::new(
                    "Login",
                    "diagnostic: same with `ssh -i` key files instead of agents",
                    c.p50 / p.p50,
                    "",
                )
                .baseline("ratio with agents", ratio)
                .note(format!(
                    "{diag_pairs} pairs: {:.1} vs {:.1} ms; with -i, ssh offers the plain key \
                     before its certificate (one refused query more)",
                    c.p50, p.p50
                )),
            );
        }
        Err(e) => figs.push(Figure::missing(
            "Login",
            "key-file diagnostic",
            format!("{e:#}"),
        )),
    }
    // What the certificate login adds, measured in the host: pam_smith's session records
    // are fsynced by hostd (open, close). (sshd reads the principals file hostd keeps:
    // no command per login.)
    match login_breakdown(fleet, xtask) {
        Ok(f) => figs.extend(f),
        Err(e) => figs.push(Figure::missing("Login", "breakdown", format!("{e:#}"))),
    }
    Ok(figs)
}

// --- login with a renewal ----------------------------------------------------------------

const RENEWAL: &str =
    "ssh HOST true, certificate and ID token expired (renewed with the refresh token), median";
/// The OpenID Provider's account of the engineer whose logins are timed (provisioned at
/// her first sign-in; alice is a token user here).
const IDP_USER: (&str, &str) = ("carol-0003", "carol");

fn start_idp(fleet: &Fleet) -> Result<Provider> {
    if !oidc::available("the renewal bench") {
        bail!("node, npm or curl missing: the test OpenID Provider cannot run");
    }
    Provider::start(&ProviderOptions {
        listen: format!("{}:0", fleet.lan_ip()),
        netns: Some(fleet.lan_ns.clone()),
        accounts: vec![Account::new(IDP_USER.0, IDP_USER.1, &[GROUP])],
        // As short as the provider allows: every timed renewal finds it expired.
        id_token_ttl: Some(1),
        ..ProviderOptions::default()
    })
    .map_err(anyhow::Error::msg)
}

/// `ssh USER@IP true` as `client` types it: its ssh config (the `smith config ssh` block
/// runs `smith cert --ensure` before connecting; `-F` because ssh finds `~` in the
/// password database, not `$HOME`), its agent; ms of the whole ssh process.
fn ssh_as(client: &Client, user: &str, ip: &str) -> Result<f64> {
    let mut c = Command::new("ssh");
    c.arg("-F")
        .arg(client.home.join(".ssh/config"))
        .env("HOME", &client.home)
        .env("SSH_AUTH_SOCK", &client.agent_sock)
        .env_remove("SMITH_TOKEN")
        .envs(&client.env)
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"])
        .arg(format!("{user}@{ip}"))
        .arg("true")
        .stdin(Stdio::null());
    let t = Instant::now();
    let o = c.output().context("running ssh")?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !o.status.success() {
        bail!(
            "ssh {user}@{ip} true failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(ms)
}

/// The renewal login against the fresh one, alternating A-B, B-A. Before each renewal
/// round (untimed): the agent is emptied (the certificate "expired") and the 1 s ID
/// token has expired.
fn renewal(fleet: &Fleet, op: &Provider, quick: bool) -> Result<Figure> {
    let host = fleet.host(HOST);
    let (account, user) = IDP_USER;
    fleet.admin_ok(&["group", "map", GROUP, GROUP])?;
    let carol = fleet.client(user)?;
    progress("login: carol signs in once at the OpenID Provider (refresh token kept)");
    carol.sign_in(account)?;
    // Her first certificate provisions her and is the request `--ensure` repeats.
    carol
        .smith(&["cert", "--scope", TAGS, "--ttl", "1h"])?
        .ok()
        .context("carol's first certificate")?;
    carol
        .smith(&["config", "ssh", "--hosts", &host.ip])?
        .ok()
        .context("smith config ssh")?;
    // The host learns about carol within a sync; her home is made at her first session.
    wait_until(Duration::from_secs(30), || {
        Ok(ssh_as(&carol, user, &host.ip).is_ok())
    })?;
    let expire = || -> Result<()> {
        carol.run(&["ssh-add", "-D"])?.ok().context("ssh-add -D")?;
        std::thread::sleep(Duration::from_millis(1100));
        Ok(())
    };
    for _ in 0..2 {
        expire()?;
        ssh_as(&carol, user, &host.ip)?;
        ssh_as(&carol, user, &host.ip)?;
    }
    let before = op.counts().map_err(anyhow::Error::msg)?;
    let pairs = if quick { 5 } else { 15 };
    progress(format!(
        "login: {pairs} logins renewing certificate and ID token + {pairs} with a fresh certificate, alternating"
    ));
    let (mut renewing, mut fresh) = (Vec::new(), Vec::new());
    for i in 0..pairs {
        if i % 2 == 1 {
            fresh.push(ssh_as(&carol, user, &host.ip)?);
        }
        expire()?;
        renewing.push(ssh_as(&carol, user, &host.ip)?);
        if i % 2 == 0 {
            fresh.push(ssh_as(&carol, user, &host.ip)?);
        }
    }
    let after = op.counts().map_err(anyhow::Error::msg)?;
    let refreshes = after.grants("refresh_token") - before.grants("refresh_token");
    if refreshes != pairs as u64 || after.authorization != 1 {
        bail!(
            "the renewal rounds did not each renew once without the browser: {refreshes} \
             refreshes for {pairs} rounds, {} authorization requests",
            after.authorization
        );
    }
    let (r, f) = (stats(&renewing), stats(&fresh));
    Ok(Figure::new("Login", RENEWAL, r.p50, "ms")
        .baseline("same login, fresh certificate in the agent", f.p50)
        .goal(Goal::AtMost(1000.0))
        .note(format!(
            "{pairs} each, p90 {:.0} vs {:.0} ms; `smith config ssh` block, real ssh, \
                 the test OpenID Provider in the LAN (1 s ID tokens, one refresh per \
                 renewal round, 1 browser sign-in in all); target: under a second",
            r.p90, f.p90
        )))
}

/// `pairs` certificate and plain logins, A-B then B-A: a drift in the machine's load
/// hits both sides alike. Returns (certificate ms, plain ms).
fn ab_pairs(
    home: &Path,
    cert_id: Id,
    plain_id: Id,
    ip: &str,
    pairs: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut cert, mut plain) = (Vec::new(), Vec::new());
    for i in 0..pairs {
        if i % 2 == 0 {
            cert.push(ssh_once(home, cert_id, "alice", ip)?);
            plain.push(ssh_once(home, plain_id, "deploy", ip)?);
        } else {
            plain.push(ssh_once(home, plain_id, "deploy", ip)?);
            cert.push(ssh_once(home, cert_id, "alice", ip)?);
        }
    }
    Ok((cert, plain))
}

/// `p50_us p90_us` printed by a helper run inside the host.
fn helper_times(host: &Host, xtask: &Path, args: &[&str]) -> Result<(f64, f64)> {
    let mut argv = vec![
        xtask.to_str().context("xtask path is not UTF-8")?,
        "bench-helper",
    ];
    argv.extend_from_slice(args);
    let o = host.exec(&argv)?.ok()?;
    let mut it = o.out().split_whitespace().map(|v| v.parse::<f64>());
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b))) => Ok((a / 1000.0, b / 1000.0)),
        _ => bail!("helper printed {:?}", o.out()),
    }
}

fn login_breakdown(fleet: &Fleet, xtask: &Path) -> Result<Vec<Figure>> {
    let host = fleet.host(HOST);
    let (fs50, fs90) = helper_times(host, xtask, &["fsync-times", "/var/lib/smith"])?;
    Ok(vec![Figure::new(
        "Login",
        "breakdown: fdatasync in /var/lib/smith (hostd's audit spool)",
        fs50,
        "ms",
    )
    .note(format!(
        "p90 {fs90:.1} ms; session open and close are each recorded durably"
    ))])
}

// --- the watcher inside the host ---------------------------------------------------------------

struct Watcher {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Watcher {
    /// Starts `xtask bench-helper wait-user USER --until STATE` inside `host` and waits for
    /// its `ready` line (which must report the opposite state).
    fn start(host: &Host, xtask: &Path, user: &str, until_present: bool) -> Result<Watcher> {
        let until = if until_present { "present" } else { "absent" };
        let mut c = host.cmd(&xtask.display().to_string());
        c.args([
            "bench-helper",
            "wait-user",
            user,
            "--until",
            until,
            "--timeout-ms",
            "30000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = c.spawn().context("starting the watcher inside the host")?;
        let mut out = BufReader::new(child.stdout.take().context("watcher stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let want_first = if until_present {
            "ready absent"
        } else {
            "ready present"
        };
        if line.trim() != want_first {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "watcher for {user} in {} said {:?}, expected {want_first:?}",
                host.name,
                line.trim()
            );
        }
        Ok(Watcher { child, out })
    }

    /// The CLOCK_MONOTONIC time at which the state was seen.
    fn seen(mut self) -> Result<u64> {
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        let _ = self.child.wait();
        line.trim()
            .strip_prefix("seen ")
            .and_then(|t| t.parse().ok())
            .with_context(|| format!("watcher said {:?} instead of `seen NS`", line.trim()))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- propagation to a real host ----------------------------------------------------------------

fn real_propagation(
    fleet: &Fleet,
    rt: &tokio::runtime::Runtime,
    api: &Api,
    xtask: &Path,
    quick: bool,
) -> Result<Vec<Figure>> {
    let host = fleet.host(HOST);
    let rounds = if quick { 3 } else { 10 };
    progress(format!(
        "propagation: real host, {rounds} removals of alice, watched through NSS"
    ));
    let (mut lat, mut admin_ms, mut ended_ms) = (Vec::new(), Vec::new(), Vec::new());
    let uid = host
        .exec(&["id", "-u", "alice"])?
        .ok()?
        .out()
        .trim()
        .to_string();
    for _ in 0..rounds {
        // A process of alice's on the host: hostd ends it when she loses access.
        let mut job = host.cmd("/usr/bin/setpriv");
        job.args([
            "--reuid",
            &uid,
            "--regid",
            &uid,
            "--clear-groups",
            "sleep",
            "600",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut job = job.spawn().context("alice's job")?;
        std::thread::sleep(Duration::from_millis(100));
        let gone = std::thread::spawn(move || -> Option<u64> {
            let deadline = mono_ns() + 60_000_000_000;
            while mono_ns() < deadline {
                if let Ok(Some(_)) = job.try_wait() {
                    return Some(mono_ns());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = job.kill();
            let _ = job.wait();
            None
        });
        let w = Watcher::start(host, xtask, "alice", false)?;
        let t0 = mono_ns();
        rt.block_on(api.member_remove(GROUP, "alice"))?;
        admin_ms.push((mono_ns() - t0) as f64 / 1e6);
        lat.push(w.seen()?.saturating_sub(t0) as f64 / 1e6);
        let ended = gone
            .join()
            .ok()
            .flatten()
            .context("alice's process was not ended within 60 s of her removal")?;
        ended_ms.push(ended.saturating_sub(t0) as f64 / 1e6);
        let w = Watcher::start(host, xtask, "alice", true)?;
        rt.block_on(api.member_add(GROUP, "alice"))?;
        w.seen()?;
        std::thread::sleep(Duration::from_millis(300));
    }
    let s = stats(&lat);
    let a = stats(&admin_ms);
    let e = stats(&ended_ms);
    Ok(vec![
        Figure::new(
            "Propagation",
            "1 real host, until NSS misses: p50",
            s.p50,
            "ms",
        )
        .baseline("remove-member API call p50 (incl. commit)", a.p50),
        Figure::new(
            "Propagation",
            "1 real host, until NSS misses: max",
            s.max,
            "ms",
        )
        .baseline("remove-member API call max", a.max)
        .note(format!(
            "{} removals; smith-hostd long-poll → cache file → nss_smith in a running process",
            s.n
        )),
        Figure::new(
            "Propagation",
            "1 real host, until her running process is ended: p50",
            e.p50,
            "ms",
        )
        .baseline("until NSS misses p50 (same removals)", s.p50)
        .note(format!(
            "{} removals; hostd ends every process of the uid (SIGTERM; issue 16) after \
             writing the cache: ratio = what ending processes adds",
            e.n
        )),
        Figure::new(
            "Propagation",
            "1 real host, until her running process is ended: max",
            e.max,
            "ms",
        )
        .baseline("until NSS misses max", s.max),
    ])
}

/// Issue 17: a rule-limited sudo grant is removed at the CA; how long until `sudo`
/// refuses its command in a session on the host. Each round: the grant is added, alice
/// gets a certificate carrying it, logs in once the host serves its group, and runs the
/// allowed command in a loop (each attempt stamped with the host's clock, the machine's)
/// while the grant is removed.
fn sudo_follows(
    fleet: &Fleet,
    rt: &tokio::runtime::Runtime,
    api: &Api,
    quick: bool,
) -> Result<Figure> {
    let host = fleet.host(HOST);
    let rounds = if quick { 3 } else { 10 };
    progress(format!(
        "sudo rules: {rounds} removals of a rule-limited sudo grant, watched by sudo in a session"
    ));
    let mut alice = fleet.client("alice")?;
    alice.set_token(&rt.block_on(api.user_token("alice"))?);
    let mut lat = Vec::new();
    for _ in 0..rounds {
        let g = rt.block_on(api.grant_add_sudo_rule(GROUP, TAGS, "/usr/bin/id -u", "deploy"))?;
        let group = smith_proto::sudorules::rule_group(g.id);
        wait_until(Duration::from_secs(30), || {
            Ok(host
                .exec(&["getent", "group", &group])?
                .out()
                .ends_with("alice"))
        })
        .with_context(|| format!("{group} never served alice"))?;
        alice.run(&["ssh-add", "-D"])?;
        alice
            .smith(&["cert", "--scope", TAGS, "--ttl", "1h"])?
            .ok()
            .context("smith cert for alice")?;
        let script = "until sudo -n -u deploy /usr/bin/id -u >/dev/null 2>&1; do sleep 0.05; done;                       echo ready;                       while sudo -n -u deploy /usr/bin/id -u >/dev/null 2>&1; do :; done;                       date +%s%N";
        let mut c = alice.ssh_command("alice", host, script, &[]);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut session = c.spawn().context("alice's sudo loop")?;
        let out = session.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(out).lines();
        let ready = lines.next().transpose()?;
        if ready.as_deref() != Some("ready") {
            let _ = session.kill();
            let _ = session.wait();
            bail!("the sudo loop did not start: {ready:?}");
        }
        let t0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        rt.block_on(api.grant_remove(g.id))?;
        let end = lines.next().transpose()?;
        let _ = session.kill();
        let _ = session.wait();
        let refused: u128 = end
            .as_deref()
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("sudo never refused: {end:?}"))?;
        lat.push(refused.saturating_sub(t0) as f64 / 1e6);
    }
    let s = stats(&lat);
    Ok(Figure::new(
        "Propagation",
        "sudo rule removed at the CA until sudo refuses it on the host: p50",
        s.p50,
        "ms",
    )
    .goal(Goal::AtMost(1000.0))
    .note(format!(
        "{} removals, max {:.0} ms; a session's sudo loop (each sudo through sudoers, pam_smith and smith_approval) against the host's synced principals and rules",
        s.n, s.max
    )))
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out after {limit:?}")
}

// --- snapshot apply --------------------------------------------------------------------------

fn hostd_pid(host: &Host) -> Result<u32> {
    host.hostd_pid()
}

fn idle_cpu_percent(pid: u32, secs: f64) -> Result<f64> {
    let c0 = cpu_secs(pid)?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    Ok((cpu_secs(pid)? - c0) / secs * 100.0)
}

fn apply(
    fleet: &Fleet,
    rt: &tokio::runtime::Runtime,
    api: &Api,
    xtask: &Path,
    quick: bool,
) -> Result<Vec<Figure>> {
    let host = fleet.host(HOST);
    let n: usize = if quick { 2000 } else { 10_000 };
    let pid = hostd_pid(host)?;
    let idle_secs = if quick { 3.0 } else { 10.0 };
    let rss_before = rss_mb(pid)?;
    let cpu_before = idle_cpu_percent(pid, idle_secs)?;
    progress(format!(
        "apply: creating {n} users through the admin API (16 requests in flight)"
    ));
    let t = Instant::now();
    rt.block_on(async {
        api.group_add("bulk").await?;
        let sem = Arc::new(tokio::sync::Semaphore::new(16));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let (api, sem) = (api.clone(), sem.clone());
            set.spawn(async move {
                let _p = sem.acquire_owned().await;
                api.user_add(&format!("u{i:05}"), &["bulk"])
                    .await
                    .map(|_| ())
            });
        }
        while let Some(r) = set.join_next().await {
            r.context("a user-creation task panicked")??;
        }
        anyhow::Ok(())
    })?;
    let create_secs = t.elapsed().as_secs_f64();
    let last = format!("u{:05}", n - 1);
    progress(format!(
        "apply: {n} users created in {create_secs:.1} s; adding the grant, watching {last}"
    ));
    let w = Watcher::start(host, xtask, &last, true)?;
    let t0 = mono_ns();
    rt.block_on(api.grant_add("bulk", TAGS, Level::Ssh))?;
    let apply_ms = w.seen()?.saturating_sub(t0) as f64 / 1e6;
    let getent = host.exec(&["getent", "passwd", &last])?;
    if !getent.success() {
        bail!("getent passwd {last} failed after the watcher saw it: {getent}");
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = rss_mb(pid)?;
    let cpu_after = idle_cpu_percent(pid, idle_secs)?;
    let k = n / 1000;
    Ok(vec![
        Figure::new("Snapshot apply", format!("{k}k-user grant until getpwnam({last}) answers"), apply_ms, "ms")
            .goal(Goal::AtMost(1000.0))
            .note("CA commit + long-poll wake + delta of every user + hostd apply + cache write + NSS remap"),
        Figure::new("Snapshot apply", format!("smith-hostd RSS at {k}k users"), rss_after, "MB")
            .baseline("smith-hostd RSS at 1 user", rss_before)
            .goal(Goal::AtMost(20.0)),
        Figure::new("Snapshot apply", format!("smith-hostd idle CPU at {k}k users ({idle_secs:.0} s)"), cpu_after, "%")
            .baseline("idle at 1 user", cpu_before)
            .note("% of one core, from /proc/PID/stat"),
        Figure::new("Snapshot apply", "admin API: users created", n as f64 / create_secs, "users/s")
            .note(format!("{n} POST /v1/admin/users in {create_secs:.1} s, 16 in flight (the CA serializes admin changes, one commit each)")),
    ])
}

/// Where fleet directories go for the bench.
pub fn fleet_dir(work: &Path) -> PathBuf {
    work.join("fleet")
}
