//! Issue 3's scenario, through real ssh, sshd, glibc and PAM.
//!
//! CA; host `web-1` tagged `env=prod,role=web`; host `db-1` tagged `env=dev,role=db`.
//! alice is in `dev` (ssh on `env=dev`); oscar is in `ops` (sudo on `env=prod`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::{ensure, Context, Result};
use smith_tests::cmd::wait_for;
use smith_tests::{e2e_available, Client, Fleet};
use std::time::{Duration, Instant};

fn cert(c: &Client, scope: &str) -> Result<()> {
    c.run(&["ssh-add", "-D"])?;
    c.smith(&["cert", "--scope", scope, "--ttl", "30m", "--reason", "e2e"])?
        .ok()
        .with_context(|| format!("smith cert for {} scope {scope}", c.who))?;
    Ok(())
}

fn story_fleet() -> Result<Fleet> {
    story_fleet_on(None)
}

/// The story's fleet, its CA on the PostgreSQL database `database` when given (else the
/// embedded SQLite store).
fn story_fleet_on(database: Option<&str>) -> Result<Fleet> {
    let mut fleet = Fleet::new("story")?;
    match database {
        Some(url) => fleet.start_ca_init_with(&["--database", url], &[])?,
        None => fleet.start_ca()?,
    };
    for args in [
        vec!["group", "add", "dev"],
        vec!["group", "add", "ops"],
        vec!["user", "add", "alice", "--groups", "dev"],
        vec!["user", "add", "oscar", "--groups", "ops"],
        // A Smith user named like a local account of the hosts.
        vec!["user", "add", "deploy", "--groups", "dev,ops"],
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
        // So that oscar can hold a certificate scoped env=dev (useless on web-1).
        vec![
            "grant",
            "add",
            "--group",
            "ops",
            "--tags",
            "env=dev",
            "--level",
            "ssh",
            "--max-ttl",
            "8h",
        ],
    ] {
        fleet.admin_ok(&args)?;
    }
    fleet.add_host("web-1", "env=prod,role=web")?;
    fleet.add_host("db-1", "env=dev,role=db")?;
    Ok(fleet)
}

#[test]
fn logins_are_decided_by_grants_scopes_and_local_accounts() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    login_story(&story_fleet()?)
}

/// The same story with the CA on PostgreSQL (a real server the test starts).
#[test]
fn the_story_holds_with_the_ca_on_postgresql() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let Some(server) = smith_tests::pg::shared("the story on PostgreSQL") else {
        return Ok(());
    };
    login_story(&story_fleet_on(Some(&server.create_database()))?)
}

fn login_story(fleet: &Fleet) -> Result<()> {
    let web = fleet.host("web-1");
    let db = fleet.host("db-1");
    let alice = fleet.engineer("alice")?;
    let oscar = fleet.engineer("oscar")?;

    // alice logs in to db-1 with a certificate; `id` shows her uid, private group and
    // dev; her home directory was created from skel.
    cert(&alice, "env=dev")?;
    let listed = alice.run(&["ssh-add", "-L"])?.ok()?;
    ensure!(
        listed.stdout.contains("-cert-v01@openssh.com"),
        "agent holds no certificate: {listed}"
    );
    let id = alice
        .ssh("alice", db, "id; ls -a ~; stat -c '%U %a' ~")?
        .ok()?;
    let uid = db.exec(&["getent", "passwd", "alice"])?.ok()?;
    let uid: u32 = uid.out().split(':').nth(2).context("uid")?.parse()?;
    ensure!(
        smith_proto::ids::DEFAULT_ID_RANGE.contains(uid),
        "alice's uid {uid} is not from the CA's range"
    );
    ensure!(
        id.stdout
            .contains(&format!("uid={uid}(alice) gid={uid}(alice)"))
            && id.stdout.contains("(dev)"),
        "unexpected id output: {id}"
    );
    ensure!(
        id.stdout.contains(".bashrc"),
        "home not populated from /etc/skel: {id}"
    );
    ensure!(
        id.stdout.contains("alice 700"),
        "home not owned by alice with mode 0700: {id}"
    );

    // alice is refused on web-1, and web-1 does not know her.
    alice.ssh("alice", web, "true")?.failed()?;
    let g = web.exec(&["getent", "passwd", "alice"])?;
    ensure!(
        g.code == Some(2) && g.stdout.is_empty(),
        "web-1 resolves alice: {g}"
    );

    // oscar logs in to web-1; a certificate scoped env=dev is refused there even for him.
    cert(&oscar, "env=prod")?;
    let o = oscar.ssh("oscar", web, "whoami; hostname")?.ok()?;
    ensure!(o.out() == "oscar\nweb-1", "{o}");
    cert(&oscar, "env=dev")?;
    oscar.ssh("oscar", web, "true")?.failed()?;

    // An expired certificate signed by the real CA key, and one from another CA.
    let ca_key = fleet.ca().data_dir.join("user_ca");
    let dir = alice.home.join("forged");
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("id");
    let keyp = key.to_string_lossy().to_string();
    alice
        .run(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", &keyp])?
        .ok()?;
    alice
        .run(&[
            "ssh-keygen",
            "-q",
            "-s",
            &ca_key.to_string_lossy(),
            "-I",
            "smith:alice:expired",
            "-n",
            "alice",
            "-V",
            "20200101:20200102",
            &format!("{keyp}.pub"),
        ])?
        .ok()?;
    let only_this_key = [
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-i",
        keyp.as_str(),
    ];
    alice
        .ssh_with("alice", db, "true", &only_this_key)?
        .failed()?;
    let other_ca = dir.join("other_ca");
    let other_ca_p = other_ca.to_string_lossy().to_string();
    alice
        .run(&[
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            &other_ca_p,
        ])?
        .ok()?;
    alice
        .run(&[
            "ssh-keygen",
            "-q",
            "-s",
            &other_ca_p,
            "-I",
            "smith:alice:other",
            "-n",
            "alice",
            "-V",
            "-5m:+1h",
            &format!("{keyp}.pub"),
        ])?
        .ok()?;
    alice
        .ssh_with("alice", db, "true", &only_this_key)?
        .failed()?;
    ensure!(
        db.auth_log().contains("smith:alice:"),
        "sshd's log never mentions a Smith key ID"
    );

    // root and the local account still log in with authorized_keys on both hosts; the
    // Smith user named like the local one never replaces it.
    let (admin_key, _) = fleet.admin_key()?;
    let admin_key = admin_key.to_string_lossy().to_string();
    let ops = fleet.client("operator")?;
    for h in [web, db] {
        let o = ops
            .ssh_with("root", h, "id -u", &["-i", &admin_key])?
            .ok()?;
        ensure!(o.out() == "0", "{o}");
        let o = ops
            .ssh_with(
                "deploy",
                h,
                "id -u; getent passwd deploy | cut -d: -f3",
                &["-i", &admin_key],
            )?
            .ok()?;
        let lines: Vec<&str> = o.out().lines().collect();
        ensure!(lines.len() == 2 && lines[0] == lines[1], "{o}");
        let local_uid: u32 = lines[0].parse()?;
        ensure!(
            !smith_proto::ids::DEFAULT_ID_RANGE.contains(local_uid),
            "deploy resolved to the Smith user ({local_uid})"
        );
    }
    ensure!(
        fleet.host("web-1").hostd_log().contains("deploy"),
        "hostd did not log skipping the Smith user that collides with local 'deploy'"
    );

    // Removing oscar from ops at the CA refuses him on web-1 within 5 s, with no action
    // on the host.
    cert(&oscar, "env=prod")?;
    oscar.ssh("oscar", web, "true")?.ok()?;
    fleet.admin_ok(&["group", "remove-member", "ops", "oscar"])?;
    let t = Instant::now();
    wait_for(
        "oscar to be refused on web-1",
        Duration::from_secs(5),
        || Ok((!oscar.ssh("oscar", web, "true")?.success()).then_some(())),
    )?;
    eprintln!("oscar refused {:?} after remove-member", t.elapsed());
    Ok(())
}

#[test]
fn a_dead_hostd_neither_locks_out_nor_lets_in() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let mut fleet = story_fleet()?;
    let alice = fleet.engineer("alice")?;
    cert(&alice, "env=dev")?;
    alice.ssh("alice", fleet.host("db-1"), "true")?.ok()?;

    // With smith-hostd killed, alice still logs in to db-1 ...
    fleet.host_mut("db-1").kill_hostd();
    alice.ssh("alice", fleet.host("db-1"), "true")?.ok()?;
    // ... and a user granted after the kill does not.
    fleet.admin_ok(&["user", "add", "bob", "--groups", "dev"])?;
    let bob = fleet.engineer("bob")?;
    cert(&bob, "env=dev")?;
    std::thread::sleep(Duration::from_secs(2));
    bob.ssh("bob", fleet.host("db-1"), "true")?.failed()?;
    // Restarted, hostd catches up.
    fleet.host_mut("db-1").start_hostd()?;
    wait_for(
        "bob to be admitted after hostd restarts",
        Duration::from_secs(10),
        || {
            Ok(bob
                .ssh("bob", fleet.host("db-1"), "true")?
                .success()
                .then_some(()))
        },
    )?;
    Ok(())
}

#[test]
fn resolvers_survive_hostd_restarts() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let mut fleet = story_fleet()?;
    // 16 threads resolving through glibc (python3's pwd module) for ~6 s; report the
    // longest single call.
    let script = r#"
import pwd, grp, threading, time, sys
worst = [0.0]; errors = []; found = [0]
def work():
    end = time.time() + 6
    while time.time() < end:
        for name in ("alice", "oscar", "nobody-here", "root"):
            t = time.time()
            try:
                pwd.getpwnam(name)
                if name == "alice":
                    found[0] += 1
            except KeyError:
                pass
            except Exception as e:
                errors.append(repr(e))
            worst[0] = max(worst[0], time.time() - t)
        try:
            grp.getgrnam("dev")
        except KeyError:
            pass
ts = [threading.Thread(target=work) for _ in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
print(f"{worst[0]:.3f} {len(errors)} {found[0]}")
"#;
    let host = fleet.host("db-1");
    let mut stress = host.cmd("python3");
    stress.args(["-c", script]);
    let stress =
        std::thread::spawn(move || smith_tests::cmd::outcome(stress, Duration::from_secs(60)));
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(500));
        fleet.host_mut("db-1").kill_hostd();
        std::thread::sleep(Duration::from_millis(200));
        fleet.host_mut("db-1").start_hostd()?;
    }
    let o = stress.join().expect("stress thread")?.ok()?;
    let parts: Vec<&str> = o.out().split_whitespace().collect();
    let worst: f64 = parts[0].parse()?;
    ensure!(parts[1] == "0", "lookups raised errors: {o}");
    ensure!(worst < 1.0, "a lookup blocked for {worst} s");
    ensure!(parts[2].parse::<u64>()? > 0, "alice was never found: {o}");
    Ok(())
}
