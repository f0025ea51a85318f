//! The README's "The story by hand" block, run as written through the real binaries, so
//! that what a newcomer pastes works.
//!
//! The block is read from `README.md` when the test runs (never copied here): it is split
//! into its sections by their comment headers (`# The CA`, `# On the host (as root)`,
//! `# Alice`, `# Revocation ...`, `# Host certificates ...`), trailing `# comments` are cut
//! off, and each command line runs through `sh -c`, so quoting is the shell's. A renamed
//! flag, a changed output or a line the test does not know how to run fails the test.
//!
//! Where it runs: the CA, the admin's shell and Alice's workstation in the fleet's LAN
//! namespace, the host `db-1.example.com` (tags `env=dev,role=db`) as a fleet host.
//!
//! What differs from pasting the block into a shell, and why:
//! - **Names**: `ca.example.com` and `db-1.example.com` resolve through a hosts file
//!   bind-mounted over `/etc/hosts` inside each LAN command (`ip netns exec` runs every
//!   command in a mount namespace of its own, so the machine's `/etc` is never touched);
//!   the host gets `ca.example.com` appended to its own (overlay) `/etc/hosts`.
//! - **`/var/lib/smith-ca`** becomes a directory of the fleet (the machine's `/var` is
//!   not the test's to write).
//! - **The exports**: `smith-ca init --url ...` prints an `export SMITH_CA_URL=...
//!   SMITH_CA_FINGERPRINT=... SMITH_TOKEN=...` line with the real fingerprint and admin
//!   token. That printed line is what the admin's shell runs ("paste the exports"), in
//!   place of the README's line with `SHA256:...` and `<admin token>`; the README's line
//!   must have the same variables and the same URL. The host's shell gets the two CA
//!   variables of it (the README's activate line uses them), Alice's workstation the
//!   same two (her own token is given on her `smith cert` line).
//! - **Placeholders** `<host token>`, `<alice token>` and `<N>` are what the commands
//!   before them printed: the host token, Alice's token, the serial of
//!   `cert list --user alice --valid`.
//! - **`smith-ca serve`** runs in the background; the test waits until the CA answers.
//! - **`smith-host activate`** gets `--no-start`: a fleet host has no systemd, so the test
//!   starts `smith-hostd` (as its unit would) and `sshd` itself, as `Fleet::add_host` does.
//! - **`ssh alice@db-1.example.com`** gets `-F ~/.ssh/config -o
//!   UserKnownHostsFile=~/.ssh/known_hosts` with Alice's HOME (OpenSSH takes `~` from the
//!   passwd entry, which is root's here, not from `$HOME`), `-o BatchMode=yes` (no
//!   prompt may hang the test) and a remote command. Never `StrictHostKeyChecking=no`: the
//!   host is trusted through the `@cert-authority` line `smith config ssh` wrote.
//!
//! What is checked beyond every line succeeding: the README's `smith-ca serve` line is
//! the one `smith-ca init` suggests (but for the data directory); Alice's ssh login works
//! (`id -un` says alice); after `cert
//! revoke` the same login is refused by sshd within 30 s (the KRL hostd syncs); after
//! `host cert revoke` ssh refuses the host's certificate (`smith cert --ensure`, run by
//! the `Match exec` block, refreshed `~/.ssh/smith_revoked_host_keys`; the test removes
//! the stamp that keeps the list a minute, as if that minute had passed); `host tags
//! --set` reports the new tags.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::{bail, ensure, Context, Result};
use smith_tests::cmd::{outcome, wait_for, Background, DEFAULT_TIMEOUT};
use smith_tests::{e2e_available, Client, Fleet, Outcome};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const HOST: &str = "db-1.example.com";
const HOST_TAGS: &str = "env=dev,role=db";
const CA_NAME: &str = "ca.example.com";
const README_DATA_DIR: &str = "/var/lib/smith-ca";

/// One section of the block: its header comment and its command lines.
#[derive(Debug)]
struct Section {
    header: String,
    lines: Vec<String>,
}

/// `line` without its trailing `# comment` (a `#` outside quotes, at the start or after
/// whitespace), trimmed.
fn strip_comment(line: &str) -> String {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev_space => return line[..i].trim().to_string(),
            None => {}
        }
        prev_space = c.is_whitespace();
    }
    line.trim().to_string()
}

/// The sections of the ```sh block right after `## The story by hand`.
fn story_block(readme: &str) -> Result<Vec<Section>> {
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|l| l.trim() == "## The story by hand")
        .context("README.md has no '## The story by hand' heading")?;
    let fence = lines
        .by_ref()
        .find(|l| !l.trim().is_empty())
        .context("nothing after '## The story by hand'")?;
    ensure!(
        fence.trim() == "```sh",
        "'## The story by hand' is not followed by a ```sh block but by {fence:?}"
    );
    let mut sections: Vec<Section> = Vec::new();
    for l in lines.by_ref() {
        let t = l.trim();
        if t == "```" {
            return Ok(sections);
        }
        if t.is_empty() {
            continue;
        }
        if t.starts_with('#') {
            sections.push(Section {
                header: t.to_string(),
                lines: Vec::new(),
            });
            continue;
        }
        let cmd = strip_comment(t);
        let section = sections
            .last_mut()
            .with_context(|| format!("a command before any section header: {t}"))?;
        section.lines.push(cmd);
    }
    bail!("the story block is not closed by ```")
}

/// The words of `export A=x B=y`: the variable names and values.
fn export_vars(line: &str) -> Result<Vec<(String, String)>> {
    let rest = line
        .trim()
        .strip_prefix("export ")
        .with_context(|| format!("not an export line: {line}"))?;
    rest.split_whitespace()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("'{w}' in {line:?} is not NAME=VALUE"))
        })
        .collect()
}

fn show(o: &Outcome) {
    eprintln!("  -> exit {:?}", o.code);
    for l in o.stdout.lines() {
        eprintln!("  | {l}");
    }
    for l in o.stderr.lines() {
        eprintln!("  ! {l}");
    }
}

/// `line` with each `<placeholder>` as one word (so that it splits into the words of the
/// command the shell sees).
fn mask(line: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in line.chars() {
        match c {
            '<' => {
                inside = true;
                out.push_str("PLACEHOLDER");
            }
            '>' if inside => inside = false,
            _ if inside => {}
            _ => out.push(c),
        }
    }
    out
}

/// What the test runs the block with, and what the commands printed so far.
struct Story {
    // Dropped before the fleet: the processes first, then the namespaces.
    serve: Option<Background>,
    alice: Option<Client>,
    fleet: Fleet,
    /// `PATH` with the Smith binaries first.
    path: String,
    /// The hosts file mounted over `/etc/hosts` in LAN commands.
    hosts_file: PathBuf,
    data_dir: String,
    /// The address the host will get (the fleet's first host).
    host_ip: String,
    /// The export line `smith-ca init` printed.
    exports: Option<String>,
    /// The `smith-ca serve` command `smith-ca init` suggested.
    suggested_serve: Option<String>,
    url: String,
    fingerprint: String,
    host_token: Option<String>,
    alice_token: Option<String>,
    serial: Option<String>,
    /// The README's ssh line (Alice's section), for the checks after revocations.
    ssh_line: Option<String>,
    /// What has been shown to work, in order.
    proven: Vec<&'static str>,
}

impl Story {
    fn new() -> Result<Story> {
        let fleet = Fleet::new("readme")?;
        let dir = std::fs::canonicalize(&fleet.dir)?;
        let bins = std::fs::canonicalize(&fleet.bins.dir)?;
        let path = format!(
            "{}:{}",
            bins.display(),
            std::env::var("PATH").unwrap_or_else(|_| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            })
        );
        let hosts_file = dir.join("lan-hosts");
        let machine = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let host_ip = format!("10.213.{}.10", fleet.subnet);
        std::fs::write(
            &hosts_file,
            format!(
                "{}\n{} {CA_NAME}\n{host_ip} {HOST}\n",
                machine.trim_end(),
                fleet.lan_ip()
            ),
        )?;
        Ok(Story {
            serve: None,
            alice: None,
            path,
            hosts_file,
            data_dir: dir.join("smith-ca").display().to_string(),
            host_ip,
            exports: None,
            suggested_serve: None,
            url: String::new(),
            fingerprint: String::new(),
            host_token: None,
            alice_token: None,
            serial: None,
            ssh_line: None,
            proven: Vec::new(),
            fleet,
        })
    }

    /// A README line with the placeholders filled in.
    fn fill(&self, line: &str) -> Result<String> {
        let mut s = line.replace(README_DATA_DIR, &self.data_dir);
        for (placeholder, value) in [
            ("<host token>", &self.host_token),
            ("<alice token>", &self.alice_token),
            ("<N>", &self.serial),
        ] {
            if s.contains(placeholder) {
                let v = value.as_ref().with_context(|| {
                    format!("{placeholder} in {line:?}, but no command before it printed one")
                })?;
                s = s.replace(placeholder, v);
            }
        }
        ensure!(
            !s.contains('<') && !s.contains("..."),
            "{line:?} holds a placeholder this test does not know how to fill"
        );
        Ok(s)
    }

    /// `script` by `sh` in the LAN namespace, with the README's host names resolving.
    fn lan_script(&self, script: &str) -> Command {
        let mut c = self.fleet.lan_cmd("/bin/sh");
        c.arg("-c")
            .arg(format!(
                "mount --bind '{}' /etc/hosts || exit 97\n{script}",
                self.hosts_file.display()
            ))
            .env("PATH", &self.path);
        c
    }

    fn run(&self, c: Command) -> Result<Outcome> {
        let o = outcome(c, DEFAULT_TIMEOUT)?;
        show(&o);
        Ok(o)
    }

    /// A line of the admin's shell, after the exports `smith-ca init` printed.
    fn admin(&self, line: &str) -> Result<Outcome> {
        let exports = self
            .exports
            .as_ref()
            .context("an admin command before smith-ca init printed the exports")?;
        self.run(self.lan_script(&format!("{exports}\n{line}")))
    }

    /// Alice's workstation (created on first use): a HOME, an ssh-agent, and the CA's
    /// URL and fingerprint from the exports.
    fn alice_client(&mut self) -> Result<&Client> {
        if self.alice.is_none() {
            let mut c = self.fleet.client("alice")?;
            c.env.insert("PATH".into(), self.path.clone());
            c.env.insert("SMITH_CA_URL".into(), self.url.clone());
            c.env
                .insert("SMITH_CA_FINGERPRINT".into(), self.fingerprint.clone());
            self.alice = Some(c);
        }
        Ok(self.alice.as_ref().unwrap())
    }

    /// A line of Alice's shell on her workstation (`verbose`: print it and its output).
    fn alice(&self, line: &str, verbose: bool) -> Result<Outcome> {
        let alice = self
            .alice
            .as_ref()
            .context("Alice has no workstation yet")?;
        let script = format!(
            "mount --bind '{}' /etc/hosts || exit 97\n{line}",
            self.hosts_file.display()
        );
        let o = alice.run(&["/bin/sh", "-c", &script])?;
        if verbose {
            show(&o);
        }
        Ok(o)
    }

    /// The README's ssh line as Alice, with the options the module doc explains and
    /// `id -un` as the remote command.
    fn alice_ssh(&self, verbose: bool) -> Result<Outcome> {
        let line = self
            .ssh_line
            .as_ref()
            .context("the README's Alice section has no ssh line")?;
        let rest = line
            .strip_prefix("ssh ")
            .with_context(|| format!("not an ssh line: {line}"))?;
        ensure!(
            !line.contains("StrictHostKeyChecking") && !line.contains("KnownHostsFile"),
            "the README's ssh line changes host key checking: {line}"
        );
        self.alice(
            &format!(
                "ssh -F \"$HOME/.ssh/config\" -o UserKnownHostsFile=\"$HOME/.ssh/known_hosts\" \
                 -o BatchMode=yes -o ConnectTimeout=10 {rest} id -un"
            ),
            verbose,
        )
    }

    /// The host, built (not yet running Smith) on first use.
    fn host_ready(&mut self) -> Result<()> {
        if self.fleet.hosts.iter().any(|h| h.name == HOST) {
            return Ok(());
        }
        let i = self.fleet.create_host(HOST, HOST_TAGS)?;
        ensure!(
            self.fleet.hosts[i].ip == self.host_ip,
            "the host got {}, the LAN's hosts file says {}",
            self.fleet.hosts[i].ip,
            self.host_ip
        );
        let lan = self.fleet.lan_ip();
        eprintln!(
            "  (test: host {HOST} built at {}; {CA_NAME} added to its /etc/hosts)",
            self.host_ip
        );
        self.host_sh(&format!("echo '{lan} {CA_NAME}' >> /etc/hosts"))?
            .ok()?;
        Ok(())
    }

    fn host_sh(&self, script: &str) -> Result<Outcome> {
        let o = self.fleet.host(HOST).sh(script)?;
        show(&o);
        Ok(o)
    }

    fn step(&mut self, section: &str, line: &str) -> Result<()> {
        eprintln!("\n$ {line}");
        let masked = mask(line);
        let words: Vec<&str> = masked.split_whitespace().collect();
        // The command word comes after any `NAME=value` assignments.
        let start = words
            .iter()
            .position(|w| !w.contains('=') || w.starts_with('-'))
            .unwrap_or(words.len());
        match &words[start..] {
            ["smith-ca", "init", ..] => self.init(line),
            ["smith-ca", "serve", ..] => self.serve(line),
            ["export", ..] => self.export(line),
            ["smith-ca", "admin", rest @ ..] => self.admin_step(line, rest),
            ["smith-host", "activate", ..] => self.activate(line),
            ["smith-host", ..] => {
                self.host_ready()?;
                self.host_sh(&self.fill(line)?)?.ok()?;
                Ok(())
            }
            ["smith", rest @ ..] => self.alice_smith(line, rest),
            ["ssh", ..] if section.starts_with("# Alice") => {
                self.ssh_line = Some(line.to_string());
                self.alice_client()?;
                let o = self.alice_ssh(true)?;
                ensure!(
                    o.success() && o.out() == "alice",
                    "Alice's ssh login as the README shows it failed:\n{o}"
                );
                self.proven.push("ssh login");
                Ok(())
            }
            _ => bail!(
                "the test does not know how to run this README line (section {section:?}): {line}"
            ),
        }
    }

    fn init(&mut self, line: &str) -> Result<()> {
        let o = self.run(self.lan_script(&self.fill(line)?))?.ok()?;
        let printed: Vec<&str> = o.stdout.lines().map(str::trim).collect();
        let exports = printed
            .iter()
            .find(|l| l.starts_with("export SMITH_CA_URL="))
            .with_context(|| {
                format!("smith-ca init printed no 'export SMITH_CA_URL=' line:\n{o}")
            })?;
        let vars = export_vars(exports)?;
        let get = |k: &str| {
            vars.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .with_context(|| format!("the printed export line has no {k}: {exports}"))
        };
        self.url = get("SMITH_CA_URL")?;
        self.fingerprint = get("SMITH_CA_FINGERPRINT")?;
        ensure!(
            self.fingerprint.starts_with("SHA256:"),
            "the printed fingerprint is {}",
            self.fingerprint
        );
        ensure!(!get("SMITH_TOKEN")?.is_empty(), "empty admin token");
        self.exports = Some(exports.to_string());
        let serve = printed
            .iter()
            .find(|l| l.starts_with("smith-ca serve "))
            .with_context(|| format!("smith-ca init printed no 'smith-ca serve' line:\n{o}"))?;
        self.suggested_serve = Some(serve.to_string());
        Ok(())
    }

    fn serve(&mut self, line: &str) -> Result<()> {
        // The README's serve line is the one `smith-ca init` suggests (but for the data
        // directory it names).
        let without_data_dir = |l: &str| {
            let w: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            let mut out = Vec::new();
            let mut skip = false;
            for x in w {
                if skip {
                    skip = false;
                    continue;
                }
                if x == "--data-dir" {
                    skip = true;
                }
                out.push(x);
            }
            out
        };
        let suggested = self
            .suggested_serve
            .as_ref()
            .context("smith-ca serve before smith-ca init")?;
        ensure!(
            without_data_dir(suggested) == without_data_dir(line),
            "the README's serve line differs from what smith-ca init suggests:\n  README: {line}\n  init:   {suggested}"
        );
        let mut c = self.lan_script(&format!("exec {}", self.fill(line)?));
        c.env("RUST_LOG", "info");
        let log = self.fleet.dir.join("ca.log");
        self.serve = Some(Background::spawn("smith-ca serve", c, &log)?);
        let t0 = Instant::now();
        let answered = wait_for("the CA to answer", Duration::from_secs(20), || {
            let exports = self.exports.as_ref().unwrap();
            let o = outcome(
                self.lan_script(&format!("{exports}\nsmith-ca admin user list")),
                Duration::from_secs(10),
            )?;
            Ok(o.success().then_some(()))
        });
        if let Err(e) = answered {
            bail!(
                "{e:#}\nsmith-ca serve's log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        eprintln!(
            "  (the CA answers at {} after {:?})",
            self.url,
            t0.elapsed()
        );
        self.proven.push("CA serves");
        Ok(())
    }

    fn export(&mut self, line: &str) -> Result<()> {
        let printed = self
            .exports
            .clone()
            .context("the export line before smith-ca init")?;
        let readme = export_vars(&mask(line))?;
        let real = export_vars(&printed)?;
        let names = |v: &[(String, String)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        ensure!(
            names(&readme) == names(&real),
            "the README exports {:?}, smith-ca init prints {:?}",
            names(&readme),
            names(&real)
        );
        let readme_url = &readme[0].1;
        ensure!(
            *readme_url == self.url,
            "the README exports SMITH_CA_URL={readme_url}, smith-ca init prints {}",
            self.url
        );
        eprintln!("  (pasted instead: {printed})");
        self.proven.push("exports");
        Ok(())
    }

    fn admin_step(&mut self, line: &str, rest: &[&str]) -> Result<()> {
        let o = self.admin(&self.fill(line)?)?.ok()?;
        match rest {
            ["host", "token", ..] => {
                ensure!(o.out().lines().count() == 1 && !o.out().is_empty(), "{o}");
                self.host_token = Some(o.out().to_string());
            }
            ["user", "token", "alice", ..] => {
                ensure!(o.out().lines().count() == 1 && !o.out().is_empty(), "{o}");
                self.alice_token = Some(o.out().to_string());
            }
            ["cert", "list", ..] => {
                let serials: Vec<&str> = o
                    .stdout
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("serial "))
                    .filter_map(|l| l.split_whitespace().next())
                    .collect();
                ensure!(
                    serials.len() == 1,
                    "expected alice's one valid certificate, got serials {serials:?}:\n{o}"
                );
                self.serial = Some(serials[0].to_string());
            }
            ["cert", "revoke", ..] => {
                let serial = self.serial.clone().unwrap_or_default();
                ensure!(
                    o.stdout.contains("revoked") && o.stdout.contains(&serial),
                    "cert revoke did not report revoking serial {serial}:\n{o}"
                );
                self.revoked_cert_refused()?;
            }
            ["host", "certs", ..] => {
                ensure!(
                    o.stdout.contains(HOST) && o.stdout.contains("valid until"),
                    "no valid host certificate of {HOST} listed:\n{o}"
                );
            }
            ["host", "cert", "revoke", ..] => {
                ensure!(
                    o.stdout.contains("REVOKED") && o.stdout.contains(HOST),
                    "host cert revoke did not report revoking {HOST}'s certificate:\n{o}"
                );
                self.revoked_host_cert_refused()?;
            }
            ["host", "tags", _, "--set", tags, ..] => {
                let want = format!("now has tags {tags}");
                ensure!(o.stdout.contains(&want), "expected '{want}':\n{o}");
                self.proven.push("host tags");
            }
            _ => {}
        }
        Ok(())
    }

    fn activate(&mut self, line: &str) -> Result<()> {
        self.host_ready()?;
        let script = format!(
            "export SMITH_CA_URL='{}' SMITH_CA_FINGERPRINT='{}'\n{} --no-start",
            self.url,
            self.fingerprint,
            self.fill(line)?
        );
        self.host_sh(&script)?.ok()?;
        let host = self.fleet.host_mut(HOST);
        host.start_hostd()?;
        host.start_sshd()?;
        eprintln!("  (test: started smith-hostd and sshd, as systemd would)");
        self.proven.push("host activated");
        Ok(())
    }

    fn alice_smith(&mut self, line: &str, rest: &[&str]) -> Result<()> {
        self.alice_client()?;
        let filled = self.fill(line)?;
        self.alice(&filled, true)?.ok()?;
        if let ["config", "ssh", ..] = rest {
            let home = &self.alice.as_ref().unwrap().home;
            let known = std::fs::read_to_string(home.join(".ssh/known_hosts"))?;
            ensure!(
                known
                    .lines()
                    .any(|l| l.starts_with("@cert-authority") && l.contains(HOST)),
                "smith config ssh wrote no @cert-authority line for {HOST}:\n{known}"
            );
        }
        Ok(())
    }

    /// After `cert revoke`: the same ssh is refused by the host's sshd within 30 s.
    fn revoked_cert_refused(&mut self) -> Result<()> {
        let t0 = Instant::now();
        let r = wait_for(
            "the host's sshd to refuse the revoked certificate",
            Duration::from_secs(30),
            || {
                let o = self.alice_ssh(false)?;
                if o.success() {
                    std::thread::sleep(Duration::from_millis(300));
                    return Ok(None);
                }
                ensure!(
                    o.stderr.contains("Permission denied"),
                    "ssh failed, but not for authentication:\n{o}"
                );
                Ok(Some(o))
            },
        )?;
        eprintln!("  (ssh refused {:?} after the revocation)", t0.elapsed());
        show(&r);
        let log = self.fleet.host(HOST).auth_log();
        ensure!(
            log.contains("revoked"),
            "sshd did not log a revoked key:\n{log}"
        );
        self.proven.push("revoked certificate refused");
        Ok(())
    }

    /// After `host cert revoke`: ssh refuses the host's certificate (a minute later: the
    /// list the `Match exec` block fetched stands that long).
    fn revoked_host_cert_refused(&mut self) -> Result<()> {
        let home = &self.alice.as_ref().context("Alice's workstation")?.home;
        let stamp = home.join(".config/smith/trust-checked");
        if stamp.exists() {
            std::fs::remove_file(&stamp)?;
            eprintln!("  (test: a minute later: the revoked host certificates are fetched again)");
        }
        let o = self.alice_ssh(true)?;
        ensure!(
            !o.success() && o.stderr.contains("revoked by file"),
            "ssh did not refuse the revoked host certificate:\n{o}"
        );
        self.proven.push("revoked host certificate refused");
        Ok(())
    }
}

#[test]
fn the_story_by_hand_works_as_written() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let t0 = Instant::now();
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .with_context(|| format!("reading {}", readme_path.display()))?;
    let sections = story_block(&readme)?;
    let headers: Vec<&str> = sections.iter().map(|s| s.header.as_str()).collect();
    let expected = [
        "# The CA",
        "# On the host",
        "# Alice",
        "# Revocation",
        "# Host certificates",
    ];
    ensure!(
        headers.len() == expected.len()
            && headers.iter().zip(expected).all(|(h, e)| h.starts_with(e)),
        "the story's sections are {headers:?}, expected headers starting with {expected:?}"
    );
    let mut story = Story::new()?;
    for s in &sections {
        eprintln!("\n===== {}", s.header);
        for line in &s.lines {
            story
                .step(&s.header, line)
                .with_context(|| format!("README line `{line}` ({})", s.header))?;
        }
    }
    let want = [
        "CA serves",
        "exports",
        "host activated",
        "ssh login",
        "revoked certificate refused",
        "revoked host certificate refused",
        "host tags",
    ];
    ensure!(
        story.proven == want,
        "the story proved {:?}, expected {want:?}",
        story.proven
    );
    eprintln!("\nthe README's story ran as written in {:?}", t0.elapsed());
    Ok(())
}
