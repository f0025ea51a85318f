//! Issue 5's identity scenarios: alice signs in through a real OpenID Provider (npm
//! `oidc-provider`) and gets certificates only for what her IdP groups allow, within the
//! grants' conditions; each refusal is recorded with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use smith_tests::oidc::{self, Provider, ProviderOptions};
use smith_tests::{e2e_available, Fleet};
use std::time::Duration;

fn json(o: &smith_tests::Outcome) -> Result<Value> {
    serde_json::from_str(o.out()).with_context(|| format!("not JSON: {o}"))
}

/// The latest issuance decision for `user` in the CA's own audit chain.
fn last_decision(fleet: &Fleet, user: &str) -> Result<Value> {
    let o = fleet.admin_ok(&["audit", "list", "--host", "@ca", "--user", user, "--json"])?;
    let list = json(&o)?;
    let mut v: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    v.sort_by_key(|r| r["seq"].as_u64().unwrap_or(0));
    v.pop().context("no decision recorded")
}

#[test]
fn alice_signs_in_with_the_idp_and_context_decides() -> Result<()> {
    if !e2e_available() || !oidc::available("the identity scenario") {
        return Ok(());
    }
    let mut fleet = Fleet::new("identity")?;
    let op = Provider::start(&ProviderOptions {
        listen: format!("{}:0", fleet.lan_ip()),
        netns: Some(fleet.lan_ns.clone()),
        ..ProviderOptions::default()
    })
    .map_err(anyhow::Error::msg)?;
    fleet.start_ca_with(&[
        "--oidc-issuer",
        &op.issuer,
        "--oidc-client-id",
        "smith",
        "--oidc-allow-http",
    ])?;
    // Admin-defined groups and grants; the users come from the IdP at first sign-in.
    let hour_elsewhere = (time_hour_utc() + 12) % 24;
    let closed_window = format!("daily {hour_elsewhere:02}:00-{hour_elsewhere:02}:30 UTC");
    for args in [
        vec!["group", "add", "dev"],
        vec!["group", "add", "ops"],
        // IdP groups reach CA groups through mappings (the test provider's groups claim
        // carries names as ids).
        vec!["group", "map", "dev", "dev"],
        vec!["group", "map", "ops", "ops"],
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
        // Reachable only from a network alice is not on.
        vec![
            "grant",
            "add",
            "--group",
            "dev",
            "--tags",
            "env=staging",
            "--level",
            "ssh",
            "--max-ttl",
            "1h",
            "--source-cidr",
            "192.0.2.0/24",
        ],
        // Only in a window that is closed now.
        vec![
            "grant",
            "add",
            "--group",
            "dev",
            "--tags",
            "env=qa",
            "--level",
            "ssh",
            "--max-ttl",
            "1h",
            "--time-window",
            closed_window.as_str(),
        ],
    ] {
        fleet.admin_ok(&args)?;
    }
    fleet.add_host("web-1", "env=prod,role=web")?;
    fleet.add_host("db-1", "env=dev,role=db")?;

    // alice signs in through the provider; her IdP groups say dev.
    let alice = fleet.client("alice")?;
    let who = alice.sign_in("alice-0001")?;
    ensure!(
        who.contains("alice"),
        "smith login does not say who signed in: {who}"
    );
    alice.run(&["ssh-add", "-D"])?;
    alice
        .smith(&[
            "cert", "--scope", "env=dev", "--ttl", "30m", "--reason", "INC-7",
        ])?
        .ok()
        .context("alice's certificate with her ID token")?;
    let o = alice.ssh("alice", fleet.host("db-1"), "id")?.ok()?;
    ensure!(
        o.stdout.contains("(alice)") && o.stdout.contains("(dev)"),
        "{o}"
    );
    alice.ssh("alice", fleet.host("web-1"), "true")?.failed()?;

    // Not what her groups allow: prod.
    let o = alice
        .smith(&[
            "cert", "--scope", "env=prod", "--ttl", "30m", "--reason", "INC-7",
        ])?
        .failed()?;
    ensure!(
        o.stderr.contains("env=prod"),
        "the denial does not name the scope: {o}"
    );
    // A grant limited to a network that excludes her source: refused, and the trail says why.
    let o = alice
        .smith(&[
            "cert",
            "--scope",
            "env=staging",
            "--ttl",
            "30m",
            "--reason",
            "INC-7",
        ])?
        .failed()?;
    let d = last_decision(&fleet, "alice")?;
    let reason = d["event"]["reason"].as_str().unwrap_or("").to_lowercase();
    ensure!(
        d["event"]["allowed"] == false
            && (reason.contains("source") || reason.contains("192.0.2.0/24")),
        "the trail does not say the source address decided: {d}\n{o}"
    );
    ensure!(
        o.stderr.contains("192.0.2.0/24"),
        "smith cert does not show the CIDR reason plainly: {o}"
    );
    // Outside the grant's time window: likewise.
    let o = alice
        .smith(&[
            "cert", "--scope", "env=qa", "--ttl", "30m", "--reason", "INC-7",
        ])?
        .failed()?;
    let d = last_decision(&fleet, "alice")?;
    let reason = d["event"]["reason"].as_str().unwrap_or("").to_lowercase();
    ensure!(
        d["event"]["allowed"] == false && reason.contains("window"),
        "the trail does not say the time window decided: {d}\n{o}"
    );
    drop(op);
    Ok(())
}

fn time_hour_utc() -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    (secs / 3600) % 24
}
