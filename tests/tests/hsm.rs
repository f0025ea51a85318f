//! Issue 23 on a live fleet: a CA whose user and host CA keys live in a SoftHSM2 token
//! (PKCS#11) of this test's own. A host enrolled by hostd gets its SSH host certificate
//! from the token; alice's `smith cert` gets a user certificate from the token
//! (`ssh-keygen -L` names the token's key); sshd on the host accepts it, and alice's ssh
//! trusts the host through the host CA with `StrictHostKeyChecking=yes`.
//!
//! Then, while alice logs in every second (strict host key checking, `smith config
//! ssh`'s block running `smith cert --ensure`), a full user CA rotation to a second key
//! in the token (published, acknowledged by the host, switched, retired) and a full host
//! CA rotation to a key file (published and installed in alice's known_hosts by
//! `--ensure`, switched after its grace period, hostd renewing the host certificates
//! onto it by itself, the old key retiring by itself once the host holds a new-key
//! certificate): no login fails; after the user CA retirement a certificate of the old key is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::{ensure, Context, Result};
use smith_tests::cmd::wait_for;
use smith_tests::{e2e_available, Client, Fleet, Host, Outcome, SoftHsm};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

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
    let mut alice = fleet.engineer("alice")?;
    // The host CA rotation below has a grace period of seconds (the default is a day):
    // engineers fetch the host CA keys before every connection, not once a minute.
    alice
        .env
        .insert("SMITH_TRUST_REFRESH".to_string(), "0".to_string());
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

    // A certificate of the current (soon old) user CA key, on disk, for the end.
    let old_key = alice.home.join("old-key");
    alice
        .smith(&[
            "cert",
            "--scope",
            "env=dev",
            "--ttl",
            "1h",
            "--out",
            &old_key.display().to_string(),
        ])?
        .ok()
        .context("smith cert --out")?;
    let with_old_cert = |alice: &Client| {
        let k = old_key.display().to_string();
        alice.run(&[
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            &k,
            "-o",
            &format!("CertificateFile={k}-cert.pub"),
            &format!("alice@{db_ip}"),
            "true",
        ])
    };
    ensure!(
        with_old_cert(&alice)?.success(),
        "the old-key certificate must work before"
    );

    let db = fleet.host("db-1");
    let stop = AtomicBool::new(false);
    let ok = AtomicUsize::new(0);
    let (logins, failures) = std::thread::scope(|s| -> Result<(usize, Vec<String>)> {
        let engineer = s.spawn(|| {
            let (mut n, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match strict_ssh(&alice, db, "db-1", "true") {
                    Ok(o) if o.success() => {
                        n += 1;
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(o) => failed.push(o.to_string()),
                    Err(e) => failed.push(format!("{e:#}")),
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            (n, failed)
        });
        let run = || -> Result<()> {
            let status = |role: &str| -> Result<serde_json::Value> {
                let o = fleet.admin_ok(&["ca", "status", role, "--json"])?;
                Ok(serde_json::from_str(o.out())?)
            };
            // Logins in every phase: two more successful ones before the next step.
            let logged_in = |phase: &str| {
                let from = ok.load(Ordering::SeqCst);
                wait_for(
                    &format!("two logins while {phase}"),
                    Duration::from_secs(30),
                    || Ok((ok.load(Ordering::SeqCst) >= from + 2).then_some(())),
                )
            };
            logged_in("no rotation is under way")?;
            // User CA: to a second key in the token.
            let to = hsm.uri("smith-user-ca-2");
            let o = fleet.admin_ok(&["ca", "rotate", "--user", "--to", &to, "--json"])?;
            ensure!(o.out().contains("\"trusting\""), "{o}");
            logged_in("the hosts learn the new user CA key")?;
            wait_for(
                "the host to acknowledge and the switch",
                Duration::from_secs(60),
                || Ok((status("--user")?["phase"] == "retiring").then_some(())),
            )?;
            let trusted = db.exec(&["sh", "-c", "grep -c . /etc/ssh/smith_user_ca.pub"])?;
            ensure!(
                trusted.out().trim() == "2",
                "the host does not trust both keys: {trusted}"
            );
            logged_in("the new user CA key signs, the old one is still trusted")?;
            // By retirement every old-key certificate has expired; here: a fresh one now.
            alice.run(&["ssh-add", "-D"])?.ok()?;
            alice
                .smith(&["cert", "--scope", "env=dev", "--ttl", "1h"])?
                .ok()?;
            fleet.admin_ok(&["ca", "rotate", "--user", "--force"])?;
            wait_for(
                "the host to drop the old user CA key",
                Duration::from_secs(30),
                || {
                    let t = db.exec(&["sh", "-c", "grep -c . /etc/ssh/smith_user_ca.pub"])?;
                    Ok((t.out().trim() == "1").then_some(()))
                },
            )?;
            logged_in("the old user CA key is retired")?;
            // Host CA: to a key file, after a grace period.
            let o = fleet.admin_ok(&["ca", "rotate", "--host", "--grace", "5s", "--json"])?;
            ensure!(o.out().contains("\"trusting\""), "{o}");
            let known = alice.home.join(".ssh/known_hosts");
            wait_for(
                "--ensure to install the new host CA key",
                Duration::from_secs(30),
                || {
                    let k = std::fs::read_to_string(&known)?;
                    Ok((k.matches("@cert-authority").count() == 2).then_some(()))
                },
            )?;
            logged_in("engineers trust both host CA keys")?;
            wait_for("the host CA switch", Duration::from_secs(30), || {
                Ok((status("--host")?["phase"] == "retiring").then_some(()))
            })?;
            let new_host_key = status("--host")?["keys"][0]["fingerprint"]
                .as_str()
                .context("fingerprint")?
                .to_string();
            // The host renews onto the new key by itself (the sync names the signing host
            // CA key; certificates of another key are due).
            wait_for(
                "the host's certificates from the new host CA key",
                Duration::from_secs(60),
                || {
                    let l = db.exec(&[
                        "sh",
                        "-c",
                        "for c in /etc/ssh/ssh_host_*_key-cert.pub; do ssh-keygen -L -f $c; done",
                    ])?;
                    Ok((l.success() && l.out().contains(&new_host_key)).then_some(()))
                },
            )?;
            logged_in("the host presents a new-key certificate")?;
            // Every host holds a new-key certificate: the old key retires by itself.
            wait_for(
                "the old host CA key to retire",
                Duration::from_secs(40),
                || Ok((status("--host")?["phase"] == "idle").then_some(())),
            )?;
            wait_for(
                "--ensure to drop the old host CA key",
                Duration::from_secs(30),
                || {
                    let k = std::fs::read_to_string(&known)?;
                    Ok((k.matches("@cert-authority").count() == 1).then_some(()))
                },
            )?;
            logged_in("the old host CA key is retired")?;
            Ok(())
        };
        let r = run();
        stop.store(true, Ordering::SeqCst);
        let (n, failed) = engineer
            .join()
            .map_err(|_| anyhow::anyhow!("the login loop panicked"))?;
        r?;
        Ok((n, failed))
    })?;
    eprintln!(
        "{logins} logins during the rotations, {} failed",
        failures.len()
    );
    ensure!(
        failures.is_empty(),
        "logins failed during the rotations: {failures:#?}"
    );
    ensure!(logins >= 14, "two logins per phase, at least: {logins}");
    // After the user CA retirement, a certificate of the old key is refused.
    let o = with_old_cert(&alice)?;
    ensure!(!o.success(), "an old-key certificate still logs in: {o}");
    Ok(())
}
