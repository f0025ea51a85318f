//! Issue 23 on a live fleet: a CA whose user and host CA keys live in a SoftHSM2 token
//! (PKCS#11) of this test's own. A host enrolled by hostd gets its SSH host certificate
//! from the token; alice's `smith cert` gets a user certificate from the token
//! (`ssh-keygen -L` names the token's key); sshd on the host accepts it, and alice's ssh
//! trusts the host through the host CA with `StrictHostKeyChecking=yes`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::{ensure, Context, Result};
use smith_tests::{e2e_available, Client, Fleet, Host, Outcome, SoftHsm};

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

fn fingerprint(line: &str) -> Result<String> {
    let k = line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("k.pub");
    std::fs::write(&p, format!("{k}\n"))?;
    let o = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&p)
        .output()?;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    out.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .context("ssh-keygen -l printed no fingerprint")
}

#[test]
fn a_fleet_trusts_certificates_signed_inside_the_token() -> Result<()> {
    if !e2e_available() || !SoftHsm::available() {
        return Ok(());
    }
    let hsm = SoftHsm::new("smith");
    // The CA's processes (init, serve) find the token through SOFTHSM2_CONF; this test
    // binary runs this one test, so setting it here reaches them all.
    for (k, v) in hsm.env() {
        std::env::set_var(k, v);
    }
    let mut fleet = Fleet::new("hsm")?;
    let (u, h) = (hsm.uri("smith-user-ca"), hsm.uri("smith-host-ca"));
    fleet.start_ca_init_with(&["--user-ca", &u, "--host-ca", &h], &[])?;
    let data_dir = fleet.ca().data_dir.clone();
    ensure!(
        !data_dir.join("user_ca").exists() && !data_dir.join("host_ca").exists(),
        "CA key files were written"
    );
    let user_pub = std::fs::read_to_string(data_dir.join("user_ca.pub"))?;
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
    fleet.add_host_named("db-1", "env=dev", &["db-1.dev.example"])?;
    let alice = fleet.engineer("alice")?;
    alice
        .smith(&["cert", "--scope", "env=dev", "--ttl", "1h"])?
        .ok()
        .context("smith cert")?;

    // The certificate in alice's agent: ssh-keygen -L names the token's key.
    let listed = alice.run(&["ssh-add", "-L"])?.ok()?;
    let cert = listed
        .stdout
        .lines()
        .find(|l| l.contains("-cert-v01@openssh.com"))
        .context("no certificate in the agent")?;
    let cert_file = alice.home.join("alice-cert.pub");
    std::fs::write(&cert_file, format!("{cert}\n"))?;
    let l = alice
        .run(&["ssh-keygen", "-L", "-f", &cert_file.display().to_string()])?
        .ok()?;
    let fp = fingerprint(&user_pub)?;
    ensure!(
        l.stdout.contains(&format!("Signing CA: ECDSA {fp}")),
        "not signed by the token's user CA key {fp}:\n{l}"
    );

    // sshd on the host accepts it, and alice trusts the host through the token's host
    // CA key, strictly.
    let db_ip = fleet.host("db-1").ip.clone();
    alice
        .smith(&["config", "ssh", "--hosts", &format!("db-1,{db_ip}")])?
        .ok()?;
    let o = strict_ssh(&alice, fleet.host("db-1"), "db-1", "whoami")?
        .ok()
        .context("strict ssh to db-1 with token-signed certificates")?;
    ensure!(o.out() == "alice", "{o}");
    Ok(())
}
