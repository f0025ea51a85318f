//! Issue 5's revocation and trusted-host scenarios, through real ssh and sshd.
//!
//! CA; hosts `db-1` and `db-2` tagged `env=dev`; alice is in `dev` (ssh on `env=dev`).
//! A revoked certificate is refused by sshd itself (the KRL the hosts sync into
//! `RevokedKeys`) on every host within seconds, although alice keeps her grant; a fresh
//! certificate still works. Engineers trust enrolled hosts through the host CA
//! (`smith config ssh`), with `StrictHostKeyChecking yes` and no TOFU.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use smith_tests::cmd::wait_for;
use smith_tests::{e2e_available, Client, Fleet, Host, Outcome};
use std::time::{Duration, Instant};

fn json(o: &Outcome) -> Result<Value> {
    serde_json::from_str(o.out()).with_context(|| format!("not JSON: {o}"))
}

fn trust_fleet(label: &str) -> Result<Fleet> {
    let mut fleet = Fleet::new(label)?;
    fleet.start_ca()?;
    for args in [
        vec!["group", "add", "dev"],
        vec!["user", "add", "alice", "--groups", "dev"],
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
    ] {
        fleet.admin_ok(&args)?;
    }
    Ok(fleet)
}

/// A fresh certificate in alice's agent (the only one): its serial and key ID.
fn fresh_cert(alice: &Client) -> Result<(u64, String)> {
    alice.run(&["ssh-add", "-D"])?;
    let o = alice
        .smith(&[
            "cert", "--scope", "env=dev", "--ttl", "2h", "--reason", "e2e", "--json",
        ])?
        .ok()
        .context("smith cert")?;
    let v = json(&o)?;
    Ok((
        v["serial"].as_u64().context("serial")?,
        v["key_id"].as_str().context("key_id")?.to_string(),
    ))
}

/// Waits until every host refuses alice's login; returns how long it took.
fn refused_everywhere(alice: &Client, hosts: &[&Host], what: &str) -> Result<Duration> {
    let t0 = Instant::now();
    wait_for(what, Duration::from_secs(20), || {
        for h in hosts {
            if alice.ssh("alice", h, "true")?.success() {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })?;
    Ok(t0.elapsed())
}

fn works_everywhere(alice: &Client, hosts: &[&Host]) -> Result<()> {
    for h in hosts {
        let o = alice.ssh("alice", h, "whoami")?.ok()?;
        ensure!(o.out() == "alice", "{o}");
    }
    Ok(())
}

#[test]
fn a_revoked_certificate_is_refused_by_sshd_on_every_host_while_a_fresh_one_works() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let mut fleet = trust_fleet("revoke")?;
    fleet.add_host("db-1", "env=dev")?;
    fleet.add_host("db-2", "env=dev")?;
    let alice = fleet.engineer("alice")?;
    let hosts = [fleet.host("db-1"), fleet.host("db-2")];

    // Nothing revoked yet: the hosts hold an empty KRL that sshd accepts.
    let (serial, _) = fresh_cert(&alice)?;
    works_everywhere(&alice, &hosts)?;

    // Revoked by serial: refused by sshd itself on both hosts within seconds...
    let serial_s = serial.to_string();
    let o = fleet.admin_ok(&[
        "cert",
        "revoke",
        "--serial",
        &serial_s,
        "--reason",
        "laptop lost",
        "--json",
    ])?;
    ensure!(
        o.out().contains(&serial_s),
        "revoke does not name {serial}: {o}"
    );
    let took = refused_everywhere(&alice, &hosts, "the revoked certificate refused")?;
    eprintln!("revocation by serial reached both hosts' sshd in {took:?}");
    for h in hosts {
        ensure!(
            h.auth_log().contains("revoked"),
            "sshd on {} did not log the revoked key:\n{}",
            h.name,
            h.auth_log()
        );
        // ...although alice keeps her grant: the host still knows her.
        h.exec(&["getent", "passwd", "alice"])?
            .ok()
            .context("alice still resolves")?;
    }
    // The CA lists it as revoked, with the reason.
    let list = json(&fleet.admin_ok(&["cert", "list", "--user", "alice", "--json"])?)?;
    let entry = list
        .as_array()
        .and_then(|l| l.iter().find(|c| c["serial"].as_u64() == Some(serial)))
        .context("the revoked certificate is not listed")?;
    ensure!(
        entry["revoked"].to_string().contains("laptop lost"),
        "listed without its revocation: {entry}"
    );

    // A fresh certificate of the same user works at once.
    let (_, key_id) = fresh_cert(&alice)?;
    works_everywhere(&alice, &hosts)?;

    // Revoked by key ID.
    fleet.admin_ok(&["cert", "revoke", "--key-id", &key_id, "--reason", "e2e"])?;
    refused_everywhere(&alice, &hosts, "the certificate revoked by key ID refused")?;

    // Revoked by user: every still-valid certificate of alice, not the next one.
    fresh_cert(&alice)?;
    works_everywhere(&alice, &hosts)?;
    fleet.admin_ok(&["cert", "revoke", "--user", "alice", "--reason", "e2e"])?;
    refused_everywhere(&alice, &hosts, "alice's certificates revoked by user")?;
    let valid = json(&fleet.admin_ok(&["cert", "list", "--user", "alice", "--valid", "--json"])?)?;
    ensure!(
        valid.as_array().is_some_and(|l| l.is_empty()),
        "alice still has valid certificates: {valid}"
    );
    fresh_cert(&alice)?;
    works_everywhere(&alice, &hosts)?;

    // A host the admin removes can no longer sync: it says so, keeps serving its last
    // snapshot (no lockout on doubt), and learns nothing new.
    fleet.admin_ok(&["host", "remove", "db-2"])?;
    let db2 = fleet.host("db-2");
    wait_for("db-2 reports its removal", Duration::from_secs(40), || {
        let o = db2.exec(&["smith-host", "status", "--json"])?;
        Ok(o.out().contains("removed").then_some(()))
    })?;
    fleet.admin_ok(&["user", "add", "bob", "--groups", "dev"])?;
    wait_for("db-1 learns bob", Duration::from_secs(10), || {
        Ok(hosts[0]
            .exec(&["getent", "passwd", "bob"])?
            .success()
            .then_some(()))
    })?;
    std::thread::sleep(Duration::from_secs(2));
    db2.exec(&["getent", "passwd", "bob"])?
        .failed()
        .context("the removed host learned a new user")?;
    works_everywhere(&alice, &[db2])?;

    // Each revocation is in the CA's own audit trail.
    let trail = fleet.admin_ok(&["audit", "list", "--host", "@ca", "--json"])?;
    ensure!(
        trail.out().matches("\"cert_revocation\"").count() >= 3,
        "the revocations are not in the @ca trail: {trail}"
    );
    Ok(())
}

/// `ssh` with only the files `smith config ssh` wrote, host keys checked strictly.
fn strict_ssh(alice: &Client, host: &Host, alias: &str, command: &str) -> Result<Outcome> {
    let home = alice.home.display().to_string();
    alice.run(&[
        "ssh",
        "-F",
        &format!("{home}/.ssh/config"),
        "-o",
        &format!("UserKnownHostsFile={home}/.ssh/known_hosts"),
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        &format!("HostKeyAlias={alias}"),
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        &format!("alice@{}", host.ip),
        command,
    ])
}

#[test]
fn ssh_trusts_enrolled_hosts_through_the_host_ca_without_a_prompt() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let mut fleet = trust_fleet("hostca")?;
    fleet.add_host_named("db-1", "env=dev", &["db-1.dev.example"])?;
    // A host whose sshd key no Smith CA signed.
    fleet.create_host("plain-1", "env=dev")?;
    fleet.host_mut("plain-1").start_sshd()?;
    let alice = fleet.engineer("alice")?;
    fresh_cert(&alice)?;

    // An empty known_hosts plus the @cert-authority line, and the Match block. ssh
    // connects to the host's address here (no DNS in the fleet) with the name as
    // HostKeyAlias: `Match host` sees the address, known_hosts the alias, so both are
    // named (by default the patterns are the names the CA certifies, which a client
    // resolving names matches).
    let db_ip = fleet.host("db-1").ip.clone();
    let hosts = format!("db-1,db-1.dev.example,{db_ip}");
    let o = alice.smith(&["config", "ssh", "--hosts", &hosts])?.ok()?;
    let known = std::fs::read_to_string(alice.home.join(".ssh/known_hosts"))?;
    let lines: Vec<&str> = known.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(
        lines.len() == 1 && lines[0].starts_with("@cert-authority "),
        "known_hosts is not just the @cert-authority line ({o}):\n{known}"
    );
    let config = std::fs::read_to_string(alice.home.join(".ssh/config"))?;
    ensure!(
        config.contains("# BEGIN smith") && config.contains("cert --ensure"),
        "~/.ssh/config has no smith block:\n{config}"
    );
    // Running it again changes nothing.
    alice.smith(&["config", "ssh", "--hosts", &hosts])?.ok()?;
    ensure!(std::fs::read_to_string(alice.home.join(".ssh/known_hosts"))? == known);
    ensure!(std::fs::read_to_string(alice.home.join(".ssh/config"))? == config);

    let db = fleet.host("db-1");
    for alias in ["db-1", "db-1.dev.example"] {
        let o = strict_ssh(&alice, db, alias, "hostname")?
            .ok()
            .with_context(|| format!("strict ssh to db-1 as {alias}"))?;
        ensure!(o.out() == "db-1", "{o}");
    }
    // The certificate does not name this alias: refused before authentication.
    let o = strict_ssh(&alice, db, "web-9", "true")?.failed()?;
    ensure!(
        o.stderr.contains("Host key verification failed"),
        "wrong alias not refused as a host key failure: {o}"
    );
    // A host whose key is not certified: no prompt, no login.
    let o = strict_ssh(&alice, fleet.host("plain-1"), "plain-1", "true")?.failed()?;
    ensure!(
        o.stderr.contains("Host key verification failed"),
        "uncertified host not refused as a host key failure: {o}"
    );
    ensure!(
        std::fs::read_to_string(alice.home.join(".ssh/known_hosts"))? == known,
        "ssh added a host key to known_hosts"
    );

    // No certificate in the agent: the Match block's `smith cert --ensure` gets one
    // that fits db-1 (named by the HostKeyAlias) before ssh authenticates.
    alice.run(&["ssh-add", "-D"])?.ok()?;
    let o = strict_ssh(&alice, db, "db-1", "whoami")?
        .ok()
        .context("ssh with an empty agent, renewed through smith cert --ensure")?;
    ensure!(o.out() == "alice", "{o}");
    let listed = alice.run(&["ssh-add", "-L"])?.ok()?;
    ensure!(
        listed.stdout.contains("-cert-v01@openssh.com"),
        "no certificate in the agent after --ensure: {listed}"
    );

    // --remove takes the lines out again.
    alice.smith(&["config", "ssh", "--remove"])?.ok()?;
    let known = std::fs::read_to_string(alice.home.join(".ssh/known_hosts"))?;
    let config = std::fs::read_to_string(alice.home.join(".ssh/config"))?;
    ensure!(
        !known.contains("@cert-authority") && !config.contains("smith"),
        "config ssh --remove left lines:\n{known}\n{config}"
    );
    Ok(())
}
