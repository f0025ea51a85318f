//! Issue 15's scenarios, through real ssh, sshd, sudo, glibc and PAM: a certificate
//! means exactly what was granted.
//!
//! Hosts: `dev-1` (`env=dev`) and `prod-1` (`env=prod`) with smith-hostd; `edge-1`
//! (`env=prod`) with nothing of Smith but the trust-only script
//! (`smith-ca admin host trust-only`). People:
//! - alice: `dev` (ssh on env=dev, unconditional, may also log in as `deploy`) and
//!   `prodsudo` (sudo on env=prod, with a reason, from the LAN, inside a window);
//! - oscar: `deployers` (ssh on env=prod, may log in as `deploy`, agent forwarding) and
//!   `prodsudo`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use smith_tests::cmd::wait_for;
use smith_tests::{e2e_available, Client, Fleet};
use std::time::Duration;

/// A fresh certificate in the agent (`smith cert ARGS`); returns `smith cert --json`'s
/// answer.
fn cert(c: &Client, args: &[&str]) -> Result<Value> {
    c.run(&["ssh-add", "-D"])?;
    let mut a = vec!["cert", "--json"];
    a.extend_from_slice(args);
    let o = c
        .smith(&a)?
        .ok()
        .with_context(|| format!("smith cert {args:?} for {}", c.who))?;
    serde_json::from_str(o.out()).with_context(|| format!("smith cert --json printed {o}"))
}

fn grant(fleet: &Fleet, args: &[&str]) -> Result<()> {
    let mut a = vec!["grant", "add", "--max-ttl", "8h"];
    a.extend_from_slice(args);
    fleet.admin_ok(&a)?;
    Ok(())
}

fn fleet() -> Result<Fleet> {
    let mut fleet = Fleet::new("grants")?;
    fleet.start_ca()?;
    let lan = fleet.lan_ip();
    let net = format!("{}.0/24", lan.rsplit_once('.').context("LAN ip")?.0);
    for args in [
        vec!["group", "add", "dev"],
        vec!["group", "add", "prodsudo"],
        vec!["group", "add", "deployers"],
        vec!["user", "add", "alice", "--groups", "dev,prodsudo"],
        vec!["user", "add", "oscar", "--groups", "deployers,prodsudo"],
    ] {
        fleet.admin_ok(&args)?;
    }
    grant(
        &fleet,
        &[
            "--group", "dev", "--tags", "env=dev", "--level", "ssh", "--login", "deploy",
        ],
    )?;
    grant(
        &fleet,
        &[
            "--group",
            "prodsudo",
            "--tags",
            "env=prod",
            "--level",
            "sudo",
            "--require-reason",
            "--source-cidr",
            &net,
            // Open all day, in two halves: a window the certificate must not outlive.
            "--time-window",
            "daily 00:00-12:00 UTC",
            "--time-window",
            "daily 12:00-00:00 UTC",
        ],
    )?;
    grant(
        &fleet,
        &[
            "--group",
            "deployers",
            "--tags",
            "env=prod",
            "--level",
            "ssh",
            "--login",
            "deploy",
            "--permit",
            "agent-forwarding",
        ],
    )?;
    fleet.add_host("dev-1", "env=dev")?;
    fleet.add_host("prod-1", "env=prod")?;
    // A host that only trusts the CA: the script the admin prints, run as root there.
    let idx = fleet.create_host("edge-1", "env=prod")?;
    let script = fleet
        .admin_ok(&[
            "host",
            "trust-only",
            "--tags",
            "env=prod",
            "--login",
            "deploy",
        ])?
        .stdout;
    let edge = &mut fleet.hosts[idx];
    edge.sh(&script)?.ok().context("the trust-only script")?;
    edge.start_sshd()?;
    Ok(fleet)
}

fn trail(fleet: &Fleet, host: &str) -> Result<Vec<Value>> {
    fleet.trail(host)
}

#[test]
fn a_certificate_means_exactly_what_was_granted() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let mut fleet = fleet()?;
    let (dev, prod, edge) = (
        fleet.host("dev-1"),
        fleet.host("prod-1"),
        fleet.host("edge-1"),
    );
    let alice = fleet.engineer("alice")?;
    let oscar = fleet.engineer("oscar")?;

    // 1. alice asks for nothing in particular, without a reason: the certificate is
    //    issued under her dev grant only. It logs in to dev-1 and is refused on prod-1,
    //    although she holds a (conditional) sudo grant there.
    let c = cert(&alice, &["--ttl", "8h"])?;
    ensure!(
        c["principals"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| !p.as_str().unwrap_or("").contains(":2:"))),
        "the conditional grant was borrowed: {c}"
    );
    let o = alice.ssh("alice", dev, "id -un")?.ok()?;
    ensure!(o.out() == "alice", "{o}");
    alice.ssh("alice", prod, "true")?.failed()?;

    // 2. With the reason, from the LAN, inside the window: the prod certificate logs in
    //    with sudo, and never outlives the grant's max TTL.
    let c = cert(
        &alice,
        &["--scope", "env=prod", "--reason", "INC-42", "--ttl", "12h"],
    )?;
    ensure!(
        c["clipped_to_secs"] == 8 * 3600,
        "not clipped by the grant: {c}"
    );
    let o = alice.ssh("alice", prod, "sudo -n id -u")?.ok()?;
    ensure!(o.out() == "0", "alice's sudo on prod-1: {o}");
    // ... and no agent forwarding: her grant does not allow it.
    let o = alice.ssh_with(
        "alice",
        prod,
        "echo ${SSH_AUTH_SOCK:-none}",
        &["-o", "ForwardAgent=yes"],
    )?;
    ensure!(o.out() == "none", "agent forwarded without a grant: {o}");

    // 3. oscar's certificate from his ssh grant on prod (no reason given, so not under
    //    the sudo grant he also holds there): logs in, no sudo, and the refusal is on
    //    record with the grant it was issued under.
    let c = cert(&oscar, &["--scope", "env=prod", "--ttl", "1h"])?;
    let key_id = c["key_id"].as_str().context("key_id")?.to_string();
    let o = oscar.ssh("oscar", prod, "id -un; sudo -n true")?;
    ensure!(
        !o.success() && o.stdout.trim() == "oscar",
        "oscar got sudo from a grant his certificate was not issued under: {o}"
    );
    // 4. His grant allows agent forwarding: the agent reaches prod-1.
    let o = oscar.ssh_with(
        "oscar",
        prod,
        "echo ${SSH_AUTH_SOCK:-none}",
        &["-o", "ForwardAgent=yes"],
    )?;
    ensure!(o.out() != "none" && !o.out().is_empty(), "no agent: {o}");

    // 5. oscar logs in as the shared account deploy under the grant that allows it;
    //    alice (whose prod certificate is not from that grant) cannot. The trail says
    //    it was oscar.
    let o = oscar.ssh("deploy", prod, "id -un")?.ok()?;
    ensure!(o.out() == "deploy", "{o}");
    alice.ssh("deploy", prod, "true")?.failed()?;
    let records = wait_for(
        "the deploy login in prod-1's trail",
        Duration::from_secs(15),
        || {
            let r = trail(&fleet, "prod-1")?;
            let found = r.iter().any(|r| {
                r["kind"] == "sshd"
                    && r["event"]["user"] == "deploy"
                    && r["event"]["accepted"] == true
                    && r["event"]["key_id"] == key_id.as_str()
            });
            Ok(found.then_some(r))
        },
    )?;
    let refused_sudo = records.iter().any(|r| {
        r["kind"] == "sudo"
            && r["event"]["user"] == "oscar"
            && r["event"]["allowed"] == false
            && r["event"]["reason"]
                .as_str()
                .is_some_and(|s| s.contains("(ssh)"))
    });
    ensure!(
        refused_sudo,
        "oscar's refused sudo is not on record: {records:?}"
    );

    // 6. The trust-only host admits oscar's prod certificate as deploy, and refuses
    //    alice's dev one (issued under a grant that allows deploy, on env=dev).
    let o = oscar.ssh("deploy", edge, "id -un")?.ok()?;
    ensure!(o.out() == "deploy", "{o}");
    cert(&alice, &["--scope", "env=dev", "--ttl", "1h"])?;
    alice.ssh("deploy", edge, "true")?.failed()?;
    // Its KRL fetch: oscar's certificate, revoked, is refused there after a fetch.
    fleet.admin_ok(&["cert", "revoke", "--key-id", &key_id, "--reason", "test"])?;
    edge.exec(&["/usr/local/sbin/smith-fetch-krl"])?.ok()?;
    oscar.ssh("deploy", edge, "true")?.failed()?;

    // 7. A host upgraded without `smith-host activate` again keeps the old drop-in
    //    (sshd runs `smith-host principals`): the new rules hold there too.
    let prod = fleet.host_mut("prod-1");
    prod.sh(
        "sed -i 's|^AuthorizedPrincipalsFile .*|AuthorizedPrincipalsCommand /usr/sbin/smith-host principals %u %k %i %s\\nAuthorizedPrincipalsCommandUser nobody|' /etc/ssh/sshd_config.d/50-smith.conf",
    )?
    .ok()?;
    prod.sshd.take();
    prod.start_sshd()?;
    let prod = fleet.host("prod-1");
    alice.ssh("alice", prod, "true")?.failed()?;
    cert(
        &alice,
        &["--scope", "env=prod", "--reason", "INC-43", "--ttl", "1h"],
    )?;
    let o = alice.ssh("alice", prod, "sudo -n id -u")?.ok()?;
    ensure!(o.out() == "0", "alice on prod-1 with the old drop-in: {o}");
    Ok(())
}

/// Issue 16, first half: no way around the certificate. A Smith user reaches a host
/// over sshd with a Smith certificate only, enforced by sshd (`Match Group smith-users`
/// in Smith's drop-in) and again by pam_smith; local accounts keep their keys.
#[test]
fn no_way_around_the_certificate() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let mut fleet = Fleet::new("certonly")?;
    fleet.start_ca()?;
    for args in [
        vec!["group", "add", "dev"],
        vec!["user", "add", "alice", "--groups", "dev"],
    ] {
        fleet.admin_ok(&args)?;
    }
    grant(
        &fleet,
        &["--group", "dev", "--tags", "env=dev", "--level", "ssh"],
    )?;
    fleet.add_host("dev-1", "env=dev")?;
    let alice = fleet.engineer("alice")?;
    cert(&alice, &["--ttl", "1h"])?;
    let dev = fleet.host("dev-1");
    alice.ssh("alice", dev, "true")?.ok()?;

    // A key planted in alice's authorized_keys (by alice herself, or anyone who got
    // a shell as her) does not log her in; root's own authorized_keys still works.
    let (admin_key, admin_pub) = fleet.admin_key()?;
    dev.sh(&format!(
        "mkdir -p /home/alice/.ssh && echo '{admin_pub}' > /home/alice/.ssh/authorized_keys
         chown -R alice: /home/alice/.ssh && chmod 700 /home/alice/.ssh"
    ))?
    .ok()?;
    let mallory = fleet.client("mallory")?;
    mallory
        .run(&["ssh-add", &admin_key.display().to_string()])?
        .ok()?;
    mallory.ssh("alice", dev, "true")?.failed()?;
    let o = mallory.ssh("root", dev, "whoami")?.ok()?;
    ensure!(o.out() == "root", "{o}");

    // sshd's effective settings: certificate only for Smith users, unchanged for locals.
    let t = |user: &str| -> Result<String> {
        Ok(dev
            .exec(&[
                "/usr/sbin/sshd",
                "-T",
                "-C",
                &format!("user={user},host=client,addr=10.0.0.9"),
            ])?
            .ok()?
            .stdout)
    };
    let a = t("alice")?;
    for want in [
        "authorizedkeysfile none",
        "authenticationmethods publickey",
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
    ] {
        ensure!(a.lines().any(|l| l == want), "alice: no '{want}' in\n{a}");
    }
    let d = t("deploy")?;
    ensure!(
        d.lines()
            .any(|l| l.starts_with("authorizedkeysfile .ssh/authorized_keys"))
            && d.lines().any(|l| l == "authenticationmethods any"),
        "deploy's settings changed:\n{d}"
    );
    let doctor = dev.exec(&["smith-host", "doctor"])?;
    ensure!(
        doctor.stdout.contains("certificate only") && doctor.success(),
        "{doctor}"
    );

    // An admin re-enables authorized_keys for them ahead of Smith's drop-in: doctor says
    // so, and pam_smith still refuses the planted key's session.
    let dev = fleet.host_mut("dev-1");
    dev.sh(
        "printf 'Match Group smith-users\\n\\tAuthorizedKeysFile .ssh/authorized_keys\\nMatch all\\n' \
         | cat - /etc/ssh/sshd_config > /tmp/c && cat /tmp/c > /etc/ssh/sshd_config",
    )?
    .ok()?;
    dev.sshd.take();
    dev.start_sshd()?;
    let dev = fleet.host("dev-1");
    let doctor = dev.exec(&["smith-host", "doctor"])?;
    ensure!(
        !doctor.success() && doctor.stdout.contains("around the certificate"),
        "doctor did not flag authorized_keys for Smith users: {doctor}"
    );
    let o = mallory.ssh("alice", dev, "echo planted-key-in")?;
    ensure!(
        !o.success() && !o.stdout.contains("planted-key-in"),
        "planted key logged in: {o}"
    );
    wait_for(
        "pam_smith's refusal in dev-1's trail",
        Duration::from_secs(15),
        || {
            let found = trail(&fleet, "dev-1")?.iter().any(|r| {
                r["kind"] == "denied"
                    && r["event"]["user"] == "alice"
                    && r["event"]["reason"]
                        .as_str()
                        .is_some_and(|s| s.contains("certificate only"))
            });
            Ok(found.then_some(()))
        },
    )?;
    alice.ssh("alice", dev, "true")?.ok()?;
    Ok(())
}
