//! `cargo xtask demo`: the whole story on one machine, readably.
//!
//! A CA and two hosts (`web-1` tagged `env=prod,role=web`, `db-1` tagged
//! `env=dev,role=db`), each host a set of Linux namespaces with its own `/etc`, `sshd`
//! and `smith-hostd` (the `smith-tests` fleet). Alice (group dev: ssh on env=dev) and
//! Oscar (group ops: sudo on env=prod) use real `smith`, `ssh-agent` and `ssh`. Nothing
//! on this machine's own `/etc` changes; everything is removed at the end.

use crate::{deps, workspace_root};
use anyhow::{bail, Result};
use smith_tests::cmd::wait_for;
use smith_tests::{Fleet, Outcome};
use std::process::Command;
use std::time::{Duration, Instant};

const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

struct Narrator {
    color: bool,
    step: u32,
}

impl Narrator {
    fn paint(&self, code: &'static str) -> &'static str {
        if self.color {
            code
        } else {
            ""
        }
    }
    fn chapter(&mut self, title: &str) {
        self.step += 1;
        println!(
            "\n{}{}. {title}{}",
            self.paint(BOLD),
            self.step,
            self.paint(RESET)
        );
    }
    fn say(&self, text: &str) {
        println!("   {text}");
    }
    /// Shows `$ shown` and the outcome's output, indented.
    fn show(&self, who: &str, shown: &str, o: &Outcome) {
        println!("   {}{who}$ {shown}{}", self.paint(DIM), self.paint(RESET));
        let text = if o.stdout.trim().is_empty() {
            o.stderr.trim()
        } else {
            o.stdout.trim()
        };
        for line in text.lines().take(14) {
            println!("     {line}");
        }
        let verdict = if o.success() {
            format!("{}ok{}", self.paint(GREEN), self.paint(RESET))
        } else {
            format!(
                "{}refused (exit {:?}){}",
                self.paint(RED),
                o.code,
                self.paint(RESET)
            )
        };
        println!("     → {verdict}");
    }
}

fn expect(o: Outcome, want_success: bool, what: &str) -> Result<Outcome> {
    if o.success() != want_success {
        bail!("demo step went wrong ({what}):\n{o}");
    }
    Ok(o)
}

pub fn run(no_install: bool, keep: bool) -> Result<()> {
    if !deps::is_root() {
        bail!(
            "the demo builds hosts out of Linux namespaces and needs root: run `sudo -E cargo xtask demo` \
             (it never modifies this machine's /etc; it only installs missing Debian packages)"
        );
    }
    if !no_install {
        deps::ensure()?;
    }
    let root = workspace_root();
    println!("Building Smith (cargo build --workspace) ...");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--workspace", "--bins", "--lib", "--quiet"])
        .status()?;
    if !st.success() {
        bail!("cargo build failed");
    }
    std::env::set_var("SMITH_BIN_DIR", root.join("target/debug"));
    std::env::set_var("SMITH_FLEET_DIR", root.join("target/demo"));
    if keep {
        std::env::set_var("SMITH_FLEET_KEEP", "1");
    }
    let mut n = Narrator {
        color: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        step: 0,
    };
    let started = Instant::now();
    story(&mut n)?;
    println!(
        "\n{}The whole story took {:.0?}; every namespace, process and file of the demo is gone.{}",
        n.paint(BOLD),
        started.elapsed(),
        n.paint(RESET)
    );
    Ok(())
}

fn story(n: &mut Narrator) -> Result<()> {
    n.chapter("The CA: keys, TLS root, a bootstrap admin token");
    let mut fleet = Fleet::new("demo")?;
    fleet.start_ca()?;
    let ca = fleet.ca();
    n.say(&format!("smith-ca serve listens on {}", ca.url));
    n.say(&format!(
        "TLS root fingerprint (every client pins it): {}",
        ca.fingerprint
    ));

    n.chapter("The admin maps groups to host tags");
    for args in [
        vec!["group", "add", "dev"],
        vec!["group", "add", "ops"],
        vec!["user", "add", "alice", "--groups", "dev"],
        vec!["user", "add", "oscar", "--groups", "ops"],
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
    ] {
        let o = expect(fleet.admin(&args)?, true, "admin setup")?;
        n.show("admin", &format!("smith-ca admin {}", args.join(" ")), &o);
    }
    let o = fleet.admin(&["grant", "list"])?;
    n.show("admin", "smith-ca admin grant list", &o);

    n.chapter("Two hosts enroll with one-time tokens");
    n.say(
        "Each host is a network + mount + UTS namespace with its own /etc, sshd and smith-hostd.",
    );
    for (name, tags) in [("web-1", "env=prod,role=web"), ("db-1", "env=dev,role=db")] {
        fleet.add_host(name, tags)?;
        n.say(&format!(
            "{name} ({tags}): smith-host activate --ca {} --token … --ca-fingerprint …",
            fleet.ca().url
        ));
    }
    let o = fleet.host("db-1").exec(&["smith-host", "status"])?;
    n.show("root@db-1", "smith-host status", &o);

    n.chapter("Alice asks for access to dev for 60 minutes");
    let alice = fleet.engineer("alice")?;
    let o = expect(
        alice.smith(&[
            "cert", "--scope", "env=dev", "--ttl", "60m", "--reason", "INC-42",
        ])?,
        true,
        "alice's certificate",
    )?;
    n.show(
        "alice",
        "smith cert --scope env=dev --ttl 60m --reason INC-42",
        &o,
    );
    let o = alice.run(&["ssh-add", "-l"])?;
    n.show("alice", "ssh-add -l", &o);

    n.chapter("Plain ssh now works where her grant and scope allow, and only there");
    let db = fleet.host("db-1");
    let web = fleet.host("web-1");
    let o = expect(
        alice.ssh("alice", db, "id; echo home: $HOME")?,
        true,
        "alice on db-1",
    )?;
    n.show("alice", "ssh alice@db-1 'id; echo home: $HOME'", &o);
    let o = expect(alice.ssh("alice", web, "true")?, false, "alice on web-1")?;
    n.show("alice", "ssh alice@web-1 true", &o);
    let o = web.exec(&["getent", "passwd", "alice"])?;
    n.show(
        "root@web-1",
        "getent passwd alice   (web-1 does not even know her)",
        &o,
    );

    n.chapter("Oscar, on call, gets sudo on prod");
    let oscar = fleet.engineer("oscar")?;
    expect(
        oscar.smith(&[
            "cert", "--scope", "env=prod", "--ttl", "30m", "--reason", "on-call",
        ])?,
        true,
        "oscar's certificate",
    )?;
    let o = oscar.ssh("oscar", web, "sudo -n id -u")?;
    n.show("oscar", "ssh oscar@web-1 sudo -n id -u", &o);

    n.chapter("The admin removes Oscar from ops: every host follows within a second");
    let o = expect(
        fleet.admin(&["group", "remove-member", "ops", "oscar"])?,
        true,
        "remove-member",
    )?;
    n.show("admin", "smith-ca admin group remove-member ops oscar", &o);
    let t = Instant::now();
    wait_for("oscar to be refused", Duration::from_secs(10), || {
        Ok((!oscar.ssh("oscar", web, "true")?.success()).then_some(()))
    })?;
    n.say(&format!(
        "oscar is refused on web-1 {:.0?} later, with no action on the host",
        t.elapsed()
    ));

    n.chapter("Hosts keep working offline: kill smith-hostd on db-1");
    fleet.host_mut("db-1").kill_hostd();
    let o = expect(
        alice.ssh("alice", fleet.host("db-1"), "echo still in")?,
        true,
        "alice with hostd dead",
    )?;
    n.show(
        "alice",
        "ssh alice@db-1 'echo still in'   (smith-hostd is dead)",
        &o,
    );
    fleet.host_mut("db-1").start_hostd()?;
    n.say("smith-hostd restarted and caught up from the CA.");

    n.chapter("Cleaning up");
    drop(fleet);
    Ok(())
}
