//! Issue 20's engineer's day, through real ssh, ssh-agent, rsync, sshd, sudo and
//! paramiko: host-aware certificates for every ssh tool, and `smith hosts`.
//!
//! One fleet for every scenario (CI budget): hosts `db-1` (`env=dev,role=db`), `web-1`
//! (`env=prod,role=web`) and `ci-1` (`env=ci`), all with smith-hostd. alice is in `dev`
//! (ssh on `env=dev`) and `prodsudo` (sudo on `env=prod`, with a reason). Her
//! workstation resolves the hosts' names (its own `/etc/hosts`) and has only `User
//! alice` and `BatchMode yes` in `~/.ssh/config` before `smith config ssh`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use smith_tests::cmd::{outcome, DEFAULT_TIMEOUT};
use smith_tests::{e2e_available, Client, Fleet, Outcome};
use std::collections::BTreeSet;
use std::time::Instant;

fn fleet() -> Result<Fleet> {
    let mut fleet = Fleet::new("day")?;
    fleet.start_ca()?;
    for args in [
        vec!["group", "add", "dev"],
        vec!["group", "add", "prodsudo"],
        vec!["user", "add", "alice", "--groups", "dev,prodsudo"],
    ] {
        fleet.admin_ok(&args)?;
    }
    fleet.grant("dev", "env=dev", "ssh", &[])?;
    fleet.grant("prodsudo", "env=prod", "sudo", &["--require-reason"])?;
    fleet.add_host("db-1", "env=dev,role=db")?;
    fleet.add_host("web-1", "env=prod,role=web")?;
    fleet.add_host("ci-1", "env=ci")?;
    Ok(fleet)
}

/// The certificates the CA issued to alice (`cert list`), newest first.
fn issued(fleet: &Fleet) -> Result<Vec<Value>> {
    let o = fleet.admin_ok(&["cert", "list", "--user", "alice", "--json"])?;
    let v: Value = serde_json::from_str(o.out()).with_context(|| format!("not JSON: {o}"))?;
    Ok(v.as_array().context("not an array")?.clone())
}

/// The key IDs of the certificates in alice's agent (their comments).
fn agent_certs(c: &Client) -> Result<BTreeSet<String>> {
    let o = c.run(&["ssh-add", "-L"])?;
    Ok(o.stdout
        .lines()
        .filter(|l| l.contains("-cert-v01@openssh.com"))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect())
}

/// Plain `ssh ARGS` on her workstation, with `env`.
fn ssh(c: &Client, args: &[&str], env: &[(&str, &str)]) -> Result<Outcome> {
    let mut cmd = c.base("ssh");
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    outcome(cmd, DEFAULT_TIMEOUT)
}

const PARAMIKO: &str = r#"
import sys, paramiko
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect(sys.argv[1], username="alice", allow_agent=True, look_for_keys=False, timeout=10)
_, out, _ = c.exec_command("id -un")
print(out.read().decode().strip())
"#;

#[test]
fn the_engineer_s_day_every_ssh_tool_gets_the_certificate_its_host_needs() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let mut fleet = fleet()?;
    let mut alice = fleet.engineer("alice")?;
    let names: Vec<(String, String)> = ["db-1", "web-1", "ci-1"]
        .iter()
        .map(|n| (n.to_string(), fleet.host(n).ip.clone()))
        .collect();
    let refs: Vec<(&str, &str)> = names
        .iter()
        .map(|(n, i)| (n.as_str(), i.as_str()))
        .collect();
    alice.workstation(&refs)?;
    let home = alice.home.clone();
    std::fs::write(
        home.join(".ssh/config"),
        "Host *\n    User alice\n    BatchMode yes\n    ConnectTimeout 10\n",
    )?;

    // Once.
    alice.smith(&["config", "ssh"])?.ok()?;

    // 1. Plain ssh to a dev host: the block gets a dev certificate.
    let o = ssh(&alice, &["db-1", "id -un"], &[])?.ok()?;
    ensure!(o.out() == "alice", "{o}");
    ensure!(issued(&fleet)?.len() == 1, "{:?}", issued(&fleet)?);
    // 2. rsync there: the same certificate serves.
    std::fs::write(home.join("notes.txt"), "day one\n")?;
    let mut rsync = alice.base("rsync");
    rsync
        .current_dir(&home)
        .args(["-a", "notes.txt", "db-1:notes.txt"]);
    outcome(rsync, DEFAULT_TIMEOUT)?.ok()?;
    let o = ssh(&alice, &["db-1", "cat notes.txt"], &[])?.ok()?;
    ensure!(o.out() == "day one", "{o}");
    ensure!(issued(&fleet)?.len() == 1, "rsync got a new certificate");

    // 3. A prod host without the reason its grant requires: the dev certificate is not
    //    taken as fitting prod, nothing is issued, and she is told how to give one.
    let o = ssh(&alice, &["web-1", "true"], &[])?.failed()?;
    ensure!(o.stderr.contains("SMITH_REASON"), "{o}");
    ensure!(issued(&fleet)?.len() == 1, "a refusal issued a certificate");
    // 4. With the reason: a prod certificate, and sudo works.
    let reason = [("SMITH_REASON", "INC-7")];
    let o = ssh(&alice, &["web-1", "sudo -n id -u"], &reason)?.ok()?;
    ensure!(o.out() == "0", "{o}");
    // 5. Back to the dev host: the dev certificate is still there and still fits.
    let o = ssh(&alice, &["db-1", "id -un"], &[])?.ok()?;
    ensure!(o.out() == "alice", "{o}");

    // Every login worked; the CA issued exactly two certificates, one per scope, and
    // the agent holds exactly those two.
    let certs = issued(&fleet)?;
    let scopes: BTreeSet<&str> = certs.iter().filter_map(|c| c["scope"].as_str()).collect();
    ensure!(
        certs.len() == 2 && scopes == BTreeSet::from(["env=dev", "env=prod"]),
        "{certs:?}"
    );
    let ids: BTreeSet<String> = certs
        .iter()
        .filter_map(|c| c["key_id"].as_str().map(str::to_string))
        .collect();
    ensure!(
        agent_certs(&alice)? == ids,
        "agent: {:?}",
        agent_certs(&alice)?
    );
    let decisions = fleet.admin_ok(&["decisions", "--user", "alice"])?;
    ensure!(
        decisions.stdout.contains("for host 'web-1' as 'alice'")
            && decisions.stdout.contains("INC-7"),
        "{decisions}"
    );

    // `smith hosts --json`: exactly the hosts her grants cover, each with its
    // certificate.
    let o = alice.smith(&["hosts", "--json"])?.ok()?;
    let v: Value = serde_json::from_str(o.out()).with_context(|| format!("{o}"))?;
    let hosts = v["hosts"].as_array().context("hosts")?;
    let listed: Vec<(&str, &str)> = hosts
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap_or(""),
                h["level"].as_str().unwrap_or(""),
            )
        })
        .collect();
    ensure!(listed == [("db-1", "ssh"), ("web-1", "sudo")], "{v}");
    ensure!(
        hosts.iter().all(|h| h["certificate"]["key_id"].is_string()),
        "{v}"
    );
    let o = alice.smith(&["hosts"])?.ok()?;
    ensure!(
        o.stdout
            .contains("#2 sudo env=prod (group prodsudo, reason)"),
        "{o}"
    );

    // The CA down: still-valid certificates keep working, with no call to it; a host
    // that is not Smith's is left alone, silently.
    fleet.stop_ca();
    ssh(&alice, &["db-1", "true"], &[])?.ok()?;
    ssh(&alice, &["web-1", "true"], &[])?.ok()?;
    let o = alice
        .smith(&[
            "cert",
            "--ensure",
            "--quiet",
            "--host=github.com",
            "--login=alice",
        ])?
        .ok()?;
    ensure!(o.stdout.is_empty() && o.stderr.is_empty(), "{o}");
    fleet.restart_ca()?;

    // A host she has no grant on: refused, nothing issued.
    ssh(&alice, &["ci-1", "true"], &[])?.failed()?;
    let o = alice.smith(&["cert", "--host", "ci-1"])?;
    ensure!(
        o.code == Some(3) && o.stderr.contains("none of your grants covers host 'ci-1'"),
        "{o}"
    );
    ensure!(issued(&fleet)?.len() == 2, "a certificate for ci-1");

    // Ansible's forks: many connections at once to a host whose certificate is gone
    // ask the CA once.
    alice.run(&["ssh-add", "-D"])?.ok()?;
    let started = Instant::now();
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut c = alice.base("ssh");
            c.args(["db-1", "true"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn()
        })
        .collect::<std::io::Result<_>>()?;
    for child in children {
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "a fork failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("8 parallel first connections: {:?}", started.elapsed());
    ensure!(
        issued(&fleet)?.len() == 3,
        "8 forks, {} new certificates",
        issued(&fleet)?.len() - 2
    );
    ensure!(
        agent_certs(&alice)?.len() == 1,
        "{:?}",
        agent_certs(&alice)?
    );
    // The check itself, with a fitting certificate in the agent: no network, quick.
    let started = Instant::now();
    for _ in 0..5 {
        alice
            .smith(&[
                "cert",
                "--ensure",
                "--quiet",
                "--host=db-1",
                "--login=alice",
            ])?
            .ok()?;
    }
    eprintln!(
        "smith cert --ensure --host with a fitting certificate: {:?} per run (including \
         ip netns exec and unshare)",
        started.elapsed() / 5
    );

    // A client that is not OpenSSH (paramiko) after the documented one-line pre-step.
    alice.run(&["ssh-add", "-D"])?.ok()?;
    let python = ["/usr/bin/python3", "-c", PARAMIKO, "web-1"];
    alice.run(&python)?.failed()?;
    alice
        .smith(&["cert", "--host", "web-1", "--reason", "INC-8"])?
        .ok()?;
    let o = alice.run(&python)?.ok()?;
    ensure!(o.out() == "alice", "{o}");

    // `smith ssh`, for those who prefer a wrapper to the block: the same check, then
    // ssh with the same options.
    alice.smith(&["config", "ssh", "--remove"])?.ok()?;
    alice.run(&["ssh-add", "-D"])?.ok()?;
    let o = alice
        .smith(&[
            "ssh",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "db-1",
            "id",
            "-un",
        ])?
        .ok()?;
    ensure!(o.out() == "alice", "{o}");
    ensure!(
        agent_certs(&alice)?.len() == 1,
        "{:?}",
        agent_certs(&alice)?
    );

    // Hostile names never reach the shell. With patterns that match anything (the
    // block's quoting is what stands), names and logins from a config (ssh checks only
    // those typed on its command line) holding a quote try to run a command.
    alice.smith(&["config", "ssh", "--hosts", "*"])?.ok()?;
    let before = issued(&fleet)?.len();
    let marker = |n: &str| home.join(format!("pwned-{n}"));
    let hostile = format!(
        "Host evil-host\n    HostName \"x';touch {};'y\"\n\
         Host evil-user\n    HostName db-1\n    User \"u';touch {};'\"\n\
         Host evil-escape\n    HostName \"x\\\\';touch {};'y\"\n",
        marker("host").display(),
        marker("user").display(),
        marker("escape").display()
    );
    let cfg_path = home.join(".ssh/config");
    let cfg = std::fs::read_to_string(&cfg_path)?;
    std::fs::write(&cfg_path, format!("{hostile}{cfg}"))?;
    for h in ["evil-host", "evil-user", "evil-escape"] {
        ssh(&alice, &[h, "true"], &[])?.failed()?;
    }
    for n in ["host", "user", "escape"] {
        ensure!(!marker(n).exists(), "the hostile {n} ran a command");
    }
    // The same names against an exec line without the block's Match criteria: the
    // attack is real (so the check above can fail).
    let exec = cfg
        .lines()
        .find(|l| l.starts_with("Match host \"*,"))
        .and_then(|l| l.split_once(" exec "))
        .map(|(_, e)| e.to_string())
        .context("the exec line")?;
    std::fs::write(
        home.join("unfiltered.conf"),
        format!("{hostile}Match host * exec {exec}\n"),
    )?;
    let unfiltered = home.join("unfiltered.conf");
    let mut g = alice.base("ssh");
    g.arg("-G").arg("-F").arg(&unfiltered).arg("evil-host");
    let _ = outcome(g, DEFAULT_TIMEOUT)?;
    ensure!(
        marker("host").exists(),
        "the unfiltered exec line was not attackable: the test proves nothing"
    );
    // Smith itself acts on no name that cannot be a host's: a newline, a huge one.
    for h in [
        "db-1\ntouch x",
        &"a".repeat(100_000)[..],
        "$(id)",
        "db-1;id",
    ] {
        let o = alice.smith(&[
            "cert",
            "--ensure",
            "--quiet",
            &format!("--host={h}"),
            "--login=alice",
        ])?;
        ensure!(
            o.success() && o.stdout.is_empty() && o.stderr.is_empty(),
            "{o}"
        );
    }
    ensure!(
        issued(&fleet)?.len() == before,
        "a hostile name got a certificate"
    );
    Ok(())
}
