//! Issue 19's client side: hosts activated with two CA URLs (the CA and a replica on
//! another address, presenting its own server certificate) move to the other replica
//! within seconds when the one they use is killed (`kill -9`) or hangs (`SIGSTOP`), and
//! come back when it answers again. Through all of it logins (real sshd), sudo and the
//! audit trail keep working: every sudo is in the CA's trail once, the chain has no gap
//! and no repeat. Engineers' `smith` and `smith-ca admin` take `SMITH_CA_URL=A,B` and
//! fail over per request.
//!
//! The CA is on PostgreSQL (a server the test starts) and the replica serves a copy of
//! its data directory, as on another machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use smith_tests::cmd::wait_for;
use smith_tests::{e2e_available, Client, Fleet, Host};
use std::time::{Duration, Instant};

/// Host `web-1`'s `smith-host status --json`.
fn status(host: &Host) -> Result<Value> {
    let o = host.exec(&["smith-host", "status", "--json"])?.ok()?;
    serde_json::from_str(o.out()).with_context(|| format!("not JSON: {o}"))
}

/// Waits until the host's daemon uses `url`; returns how long that took and the status.
fn wait_in_use(host: &Host, url: &str, within: Duration) -> Result<(Duration, Value)> {
    let t = Instant::now();
    let st = wait_for(&format!("{} to use {url}", host.name), within, || {
        let st = status(host)?;
        Ok((st["ca_url_in_use"].as_str() == Some(url)).then_some(st))
    })
    .with_context(|| format!("hostd log:\n{}", host.hostd_log()))?;
    Ok((t.elapsed(), st))
}

/// A fresh certificate for oscar in his agent (`smith cert`); returns its serial and
/// what `smith` said on stderr.
fn cert(oscar: &Client) -> Result<(u64, String)> {
    oscar.run(&["ssh-add", "-D"])?;
    let o = oscar
        .smith(&[
            "cert", "--scope", "env=prod", "--ttl", "30m", "--reason", "failover", "--json",
        ])?
        .ok()?;
    let v: Value = serde_json::from_str(o.out()).with_context(|| format!("not JSON: {o}"))?;
    Ok((v["serial"].as_u64().context("serial")?, o.stderr.clone()))
}

/// oscar logs in over ssh and runs `sudo -n true MARK`.
fn login_and_sudo(oscar: &Client, host: &Host, mark: &str) -> Result<()> {
    let o = oscar.ssh("oscar", host, &format!("sudo -n true {mark} && id -un"))?;
    ensure!(
        o.success() && o.out() == "oscar",
        "oscar's login and sudo ({mark}): {o}"
    );
    Ok(())
}

/// The sudo commands of `host`'s trail at the CA that carry a `mark-` word.
fn marks(fleet: &Fleet, host: &str) -> Result<Vec<String>> {
    Ok(fleet
        .trail(host)?
        .iter()
        .filter(|r| r["kind"] == "sudo")
        .filter_map(|r| r["event"]["command"].as_str())
        .filter(|c| c.contains("mark-"))
        .map(|c| c.rsplit(' ').next().unwrap_or("").to_string())
        .collect())
}

fn wait_delivered(fleet: &Fleet, host: &str, mark: &str) -> Result<()> {
    wait_for(
        &format!("sudo {mark} in {host}'s trail"),
        Duration::from_secs(40),
        || Ok(marks(fleet, host)?.iter().any(|m| m == mark).then_some(())),
    )
}

#[test]
fn hosts_and_engineers_fail_over_between_replicas_and_come_back() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let mut fleet = Fleet::new("failover")?;
    fleet.start_ca_on_postgres()?;
    for args in [
        vec!["group", "add", "ops"],
        vec!["user", "add", "oscar", "--groups", "ops"],
    ] {
        fleet.admin_ok(&args)?;
    }
    fleet.grant("ops", "env=prod", "sudo", &[])?;
    let url_a = fleet.ca().url.clone();
    let url_b = fleet.replica_url(0);
    let urls = vec![url_a.clone(), url_b.clone()];
    fleet.add_host_with_cas(
        "web-1",
        "env=prod",
        &urls,
        &[("ca_retry_preferred_secs", "4"), ("sync_wait_secs", "5")],
    )?;
    let mut oscar = fleet.engineer("oscar")?;
    oscar.env.insert("SMITH_CA_URL".into(), urls.join(","));
    let (first_serial, _) = cert(&oscar)?;
    // The replica, on another address, under a name init's certificate does not hold.
    fleet.start_replica()?;
    let web = fleet.host("web-1");
    let (_, st) = wait_in_use(web, &url_a, Duration::from_secs(20))?;
    ensure!(st["ca_failovers"] == 0, "{st}");
    ensure!(st["ca_urls"] == serde_json::json!(urls), "{st}");
    login_and_sudo(&oscar, web, "mark-1")?;
    wait_delivered(&fleet, "web-1", "mark-1")?;

    // 1. kill -9 of the replica the host uses: it moves on within seconds.
    fleet.signal_ca(0, libc::SIGKILL)?;
    let web = fleet.host("web-1");
    let (took, st) = wait_in_use(web, &url_b, Duration::from_secs(20))?;
    eprintln!("after kill -9: on the replica in {took:?}");
    ensure!(took < Duration::from_secs(10), "took {took:?}");
    ensure!(st["ca_failovers"] == 1, "{st}");
    ensure!(
        web.hostd_log().contains("CA replica failover"),
        "no failover line in hostd's log:\n{}",
        web.hostd_log()
    );
    let text = web.exec(&["smith-host", "status"])?.ok()?;
    ensure!(
        text.out()
            .contains(&format!("in use: {url_b}; 1 failover since")),
        "{text}"
    );
    // doctor asks each replica: the dead one is a warning while the other answers.
    let o = web.exec(&["smith-host", "doctor", "--json"])?;
    let checks: Vec<Value> = serde_json::from_str(o.out()).with_context(|| format!("{o}"))?;
    let check = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    ensure!(check(&format!("CA {url_a}"))["level"] == "warn", "{o}");
    ensure!(check(&format!("CA {url_b}"))["level"] == "ok", "{o}");
    ensure!(
        check("CA replica")["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&url_b)),
        "{o}"
    );
    login_and_sudo(&oscar, web, "mark-2")?;
    wait_delivered(&fleet, "web-1", "mark-2")?;
    // An engineer's certificate, from the replica (the CA refuses the connection), and
    // a login with it.
    let (serial, stderr) = cert(&oscar)?;
    ensure!(
        serial > first_serial,
        "serial {serial} after {first_serial}"
    );
    ensure!(
        stderr.contains("did not answer") && stderr.contains(&url_b),
        "smith said nothing of the failover: {stderr}"
    );
    login_and_sudo(&oscar, web, "mark-3")?;
    wait_delivered(&fleet, "web-1", "mark-3")?;

    // 2. The CA is back: the host returns to it (the first URL) by itself.
    fleet.restart_replica(0)?;
    let web = fleet.host("web-1");
    let (took, st) = wait_in_use(web, &url_a, Duration::from_secs(30))?;
    eprintln!("back on the CA {took:?} after its restart");
    ensure!(st["ca_failovers"] == 1, "a return is not a failover: {st}");
    login_and_sudo(&oscar, web, "mark-4")?;
    wait_delivered(&fleet, "web-1", "mark-4")?;

    // 3. The CA hangs (SIGSTOP: its sockets stay open, nothing answers): the host moves
    //    on when the long poll's heartbeat stops.
    fleet.signal_ca(0, libc::SIGSTOP)?;
    let web = fleet.host("web-1");
    login_and_sudo(&oscar, web, "mark-5")?;
    let (took, st) = wait_in_use(web, &url_b, Duration::from_secs(30))?;
    eprintln!("after SIGSTOP: on the replica in {took:?}");
    ensure!(took < Duration::from_secs(20), "took {took:?}");
    ensure!(st["ca_failovers"] == 2, "{st}");
    wait_delivered(&fleet, "web-1", "mark-5")?;

    // 4. It goes on: the host comes back to it.
    fleet.signal_ca(0, libc::SIGCONT)?;
    let web = fleet.host("web-1");
    wait_in_use(web, &url_a, Duration::from_secs(30))?;
    login_and_sudo(&oscar, web, "mark-6")?;
    wait_delivered(&fleet, "web-1", "mark-6")?;

    // Nothing lost, nothing repeated: each sudo once, in order, and the host's whole
    // chain at the CA without a gap, up to the host's own head.
    let got = marks(&fleet, "web-1")?;
    let want: Vec<String> = (1..=6).map(|i| format!("mark-{i}")).collect();
    ensure!(got == want, "sudo records at the CA: {got:?}");
    let trail = fleet.trail("web-1")?;
    let seqs: Vec<u64> = trail.iter().filter_map(|r| r["seq"].as_u64()).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    ensure!(seqs == expected, "the chain's seqs at the CA: {seqs:?}");
    let head = wait_for(
        "the host's spool acknowledged",
        Duration::from_secs(20),
        || {
            let st = status(fleet.host("web-1"))?;
            let a = &st["audit"];
            Ok((a["acked_through"] == a["head_seq"]).then(|| a["head_seq"].as_u64()))
        },
    )?;
    ensure!(
        head == Some(seqs.len() as u64),
        "host head {head:?}, CA {}",
        seqs.len()
    );
    fleet.admin_ok(&["audit", "verify"])?;
    Ok(())
}
