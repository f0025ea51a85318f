//! Issue 16: removal ends what runs. When a user loses access to a host, hostd ends
//! their sessions and processes there (SSH sessions, `nohup` jobs, `tmux`), records it,
//! and keeps their files; the same user's processes on a host where she keeps access,
//! other users' and local accounts' processes run on. When only the grant a session's
//! certificate named is gone (a shared `--login deploy` grant), that session ends and
//! nothing else. (A CA restored from an older backup ends nobody's: `restore.rs`.)
//!
//! Real CA, hostd run with the unit's capability set and `/proc` view (CAP_KILL,
//! `hidepid=invisible`), each host in its own PID namespace, real sshd, PAM, tmux.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use smith_tests::cmd::wait_for;
use smith_tests::{e2e_available, Fleet, Host};
use std::time::{Duration, Instant};

fn trail(fleet: &Fleet, host: &str) -> Result<Vec<Value>> {
    fleet.trail(host)
}

fn ended<'a>(trail: &'a [Value], user: &str, scope: &str) -> Option<&'a Value> {
    trail
        .iter()
        .map(|r| &r["event"])
        .find(|e| e["type"] == "access_ended" && e["user"] == user && e["scope"] == scope)
}

/// Whether a process whose command line is exactly `cmd` runs on `host` (as `uid`).
fn runs(host: &Host, uid: Option<&str>, cmd: &str) -> Result<bool> {
    let mut argv = vec!["pgrep", "-x", "-f", cmd];
    if let Some(u) = uid {
        argv.extend(["-u", u]);
    }
    Ok(host.exec(&argv)?.success())
}

#[test]
fn removal_ends_what_runs_on_that_host_only() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let mut fleet = Fleet::new("removal")?;
    fleet.start_ca()?;
    for args in [
        vec!["group", "add", "web"],
        vec!["group", "add", "db"],
        vec!["group", "add", "webdeploy"],
        vec!["user", "add", "alice", "--groups", "web,db,webdeploy"],
        vec!["user", "add", "bob", "--groups", "web"],
    ] {
        fleet.admin_ok(&args)?;
    }
    fleet.grant("web", "role=web", "ssh", &[])?;
    fleet.grant("db", "role=db", "ssh", &[])?;
    let deploy_grant = fleet.grant("webdeploy", "role=web", "ssh", &["--login", "deploy"])?;
    let deploy_grant = deploy_grant["id"]
        .as_u64()
        .with_context(|| format!("grant id in {deploy_grant}"))?
        .to_string();
    fleet.add_host("web-1", "role=web")?;
    fleet.add_host("db-1", "role=db")?;
    let (web, db) = (fleet.host("web-1"), fleet.host("db-1"));
    let alice = fleet.engineer("alice")?;
    let bob = fleet.engineer("bob")?;
    for c in [&alice, &bob] {
        c.smith(&["cert", "--ttl", "1h"])?.ok()?;
    }

    // alice on web-1: an open SSH session, a nohup job, a tmux session, a file in her
    // home, and a session as the shared `deploy` account; on db-1 a nohup job. bob and
    // root run jobs on web-1 too.
    alice
        .ssh(
            "alice",
            web,
            "echo keep > ~/notes; nohup sleep 602 >/dev/null 2>&1 & \
             tmux new-session -d -s work 'sleep 603'",
        )?
        .ok()?;
    let mut live = alice.ssh_session("alice", web, "sleep 601")?;
    let mut as_deploy = alice.ssh_session("deploy", web, "sleep 604")?;
    alice
        .ssh("alice", db, "nohup sleep 605 >/dev/null 2>&1 &")?
        .ok()?;
    bob.ssh("bob", web, "nohup sleep 606 >/dev/null 2>&1 &")?
        .ok()?;
    web.sh("nohup sleep 607 >/dev/null 2>&1 &")?.ok()?;
    let alice_uid = web
        .exec(&["id", "-u", "alice"])?
        .ok()?
        .out()
        .trim()
        .to_string();
    wait_for("every job to run", Duration::from_secs(20), || {
        let all = runs(web, Some(&alice_uid), "sleep 601")?
            && runs(web, Some(&alice_uid), "sleep 602")?
            && runs(web, Some(&alice_uid), "sleep 603")?
            && runs(web, Some("deploy"), "sleep 604")?
            && runs(db, Some(&alice_uid), "sleep 605")?
            && runs(web, Some("bob"), "sleep 606")?
            && runs(web, Some("root"), "sleep 607")?;
        Ok(all.then_some(()))
    })?;

    // 1. The deploy grant goes: her session as deploy ends; she keeps her own access,
    //    so nothing else of hers does.
    fleet.admin_ok(&["grant", "remove", &deploy_grant])?;
    wait_for(
        "alice's session as deploy to end",
        Duration::from_secs(30),
        || Ok(as_deploy.try_wait()?.map(|_| ())),
    )?;
    ensure!(
        !runs(web, None, "sleep 604")?,
        "the deploy session's job still runs"
    );
    ensure!(
        live.try_wait()?.is_none() && runs(web, Some(&alice_uid), "sleep 603")?,
        "ending the deploy session ended alice's own"
    );

    // 2. alice leaves the web group: everything of hers on web-1 ends, timed.
    let t0 = Instant::now();
    fleet.admin_ok(&["group", "remove-member", "web", "alice"])?;
    wait_for(
        "alice's processes on web-1 to end",
        Duration::from_secs(30),
        || {
            let o = web.exec(&["pgrep", "-u", &alice_uid])?;
            Ok((!o.success()).then_some(()))
        },
    )?;
    let latency = t0.elapsed();
    eprintln!(
        "removal → last process of alice on web-1 ended: {} ms",
        latency.as_millis()
    );
    wait_for(
        "alice's ssh session to close",
        Duration::from_secs(10),
        || Ok(live.try_wait()?.map(|_| ())),
    )?;
    ensure!(
        runs(db, Some(&alice_uid), "sleep 605")?,
        "alice's job on db-1, where she keeps access, was ended"
    );
    ensure!(runs(web, Some("bob"), "sleep 606")?, "bob's job was ended");
    ensure!(
        runs(web, Some("root"), "sleep 607")?,
        "root's job was ended"
    );
    let notes = web.exec(&["cat", "/home/alice/notes"])?.ok()?;
    ensure!(notes.out() == "keep", "her home was not kept: {notes}");

    // 3. The trail says what ended, where, and how.
    wait_for(
        "the removals in web-1's trail",
        Duration::from_secs(30),
        || {
            let t = trail(&fleet, "web-1")?;
            let user = ended(&t, "alice", "user").cloned();
            let session = ended(&t, "deploy", "session").cloned();
            Ok(user.zip(session))
        },
    )
    .and_then(|(user, session)| {
        ensure!(
            user["action"] == "ended"
                && user["processes"].as_u64() >= Some(3)
                && user["survivors"] == 0
                && user["uid"].as_u64().map(|u| u.to_string()) == Some(alice_uid.clone()),
            "{user}"
        );
        ensure!(
            session["action"] == "ended"
                && session["key_id"]
                    .as_str()
                    .is_some_and(|k| k.contains("alice")),
            "{session}"
        );
        Ok(())
    })?;
    ensure!(
        trail(&fleet, "db-1")?
            .iter()
            .all(|r| r["event"]["type"] != "access_ended"),
        "db-1 recorded a removal"
    );
    let _ = live.kill();
    let _ = as_deploy.kill();
    let _ = live.wait();
    let _ = as_deploy.wait();
    Ok(())
}
