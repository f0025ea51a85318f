//! Issue 6's install test: the .deb packages in a fresh Debian root.
//!
//! 1. `cargo xtask package deb --fast --bin-dir <the built artifacts>` builds the debs
//!    (no release build: they package what `cargo build` made) and checks them: expected
//!    files, lintian, `systemd-analyze verify` of the units.
//! 2. A Debian 12 root from `debootstrap --variant=minbase` (plus openssh-server, sudo),
//!    cached as a tarball under `target/install-deb/` so it is downloaded once per
//!    clone, is unpacked into the fleet's directory.
//! 3. The root runs in its own network namespace (a veth into the fleet's LAN, where the
//!    real `smith-ca` runs) and a private mount + UTS namespace, through `chroot`: the
//!    machine's own `/etc` is never touched.
//! 4. Inside: `dpkg -i` (which must not change PAM or nsswitch.conf), `smith-host
//!    activate`, the root's own `sshd` and `smith-hostd`; alice logs in with a
//!    certificate from `smith cert`, root with authorized_keys; `smith-host deactivate`
//!    restores the post-install `/etc`; a second activation is then undone by
//!    `dpkg --purge` alone (prerm runs deactivate), and the root's `/etc` is identical,
//!    contents, modes and owners, to before the install.
//!
//! Also here: `cargo xtask package rpm` (file lists and scriptlets checked with
//! `rpm -qlp` / `rpm -qp --scripts`), and the Vagrant lab's syntax (`ruby -c`, `sh -n`).
//!
//! Skipped (with a message) unless root; with `SMITH_E2E_REQUIRED=1` a missing
//! prerequisite or an unreachable Debian mirror is a failure. `SMITH_DEBIAN_MIRROR`
//! overrides the mirror.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::{bail, ensure, Context, Result};
use smith_tests::cmd::{outcome, wait_for, xtask, Background, Outcome};
use smith_tests::{e2e_available, Fleet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SUITE: &str = "bookworm";
const INCLUDE: &str = "openssh-server,sudo,libpam-modules,libpam-runtime";
const HOST_NAME: &str = "deb-1";
const TAGS: &str = "env=pkg,os=debian";

/// The tests of this file run one at a time: they may install Debian packages, and
/// two apt-get runs at once would fight over dpkg's lock.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn required() -> bool {
    std::env::var("SMITH_E2E_REQUIRED").as_deref() == Ok("1")
}

/// A prerequisite this test cannot have: a failure when required, else a skip.
fn unavailable(msg: &str) -> Result<()> {
    if required() {
        bail!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    Ok(())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-ec").arg(script);
    c
}

fn run(cmd: Command, timeout: Duration) -> Result<Outcome> {
    outcome(cmd, timeout)
}

/// Installs debootstrap with apt-get when it is missing (the test runs as root).
fn ensure_debootstrap() -> Result<bool> {
    if Path::new("/usr/sbin/debootstrap").exists() {
        return Ok(true);
    }
    let o = run(
        sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends debootstrap"),
        Duration::from_secs(300),
    )?;
    if !o.success() {
        eprintln!("apt-get install debootstrap failed: {o}");
    }
    Ok(Path::new("/usr/sbin/debootstrap").exists())
}

/// The cached root tarball, made with debootstrap the first time.
fn root_tarball() -> Result<Option<PathBuf>> {
    let cache = workspace().join("target/install-deb");
    std::fs::create_dir_all(&cache)?;
    let tarball = cache.join(format!("{SUITE}-minbase-ssh.tar"));
    if tarball.exists() {
        return Ok(Some(tarball));
    }
    if !ensure_debootstrap()? {
        unavailable("debootstrap is not installed and could not be installed")?;
        return Ok(None);
    }
    let mirror = std::env::var("SMITH_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    let dir = cache.join("bootstrap.tmp");
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    eprintln!(
        "debootstrap {SUITE} ({INCLUDE}) from {mirror} into {}",
        dir.display()
    );
    // A private mount and PID namespace: whatever debootstrap mounts or a package's
    // postinst starts goes away with it.
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--pid",
        "--fork",
        "--propagation",
        "private",
        "--",
        "debootstrap",
    ])
    .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
    .arg(&dir)
    .arg(&mirror);
    let o = run(c, Duration::from_secs(480))?;
    if !o.success() {
        let _ = std::fs::remove_dir_all(&dir);
        let tail: Vec<&str> = o.stdout.lines().rev().take(15).collect();
        unavailable(&format!(
            "debootstrap could not build a {SUITE} root from {mirror} (is the mirror reachable?): {}\n{}",
            o.stderr.trim(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))?;
        return Ok(None);
    }
    // The downloaded .debs are not needed in the root.
    let tmp = cache.join("root.tar.tmp");
    run(
        sh(&format!(
            "rm -f {d}/var/cache/apt/archives/*.deb {d}/var/cache/apt/*.bin
             tar --numeric-owner -C {d} -cf {t} .",
            d = dir.display(),
            t = tmp.display()
        )),
        Duration::from_secs(300),
    )?
    .ok()
    .context("archiving the debootstrap root")?;
    std::fs::rename(&tmp, &tarball)?;
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "root cached in {} after {:.0?}",
        tarball.display(),
        started.elapsed()
    );
    Ok(Some(tarball))
}

/// `cargo xtask package deb` from the artifacts the suite runs against.
fn build_debs(out: &Path) -> Result<Vec<PathBuf>> {
    let bin_dir = std::env::var("SMITH_BIN_DIR").unwrap_or_else(|_| {
        workspace()
            .join("target/debug")
            .to_string_lossy()
            .into_owned()
    });
    let out_s = out.to_string_lossy().to_string();
    let o = xtask(
        &[
            "package",
            "deb",
            "--fast",
            "--bin-dir",
            &bin_dir,
            "--out",
            &out_s,
        ],
        Duration::from_secs(600),
    )?
    .ok()
    .context("cargo xtask package deb")?;
    for check in [
        "lintian: no errors, no warnings",
        "systemd-analyze verify: 2 units OK",
        "Overall exposure level for smith-hostd.service",
    ] {
        ensure!(
            o.stdout.contains(check),
            "cargo xtask package deb did not report {check:?}: {o}"
        );
    }
    let mut debs: Vec<PathBuf> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    Ok(debs)
}

/// The Debian root, running: a network namespace with a veth into the fleet's LAN, and
/// an anchor process holding a private mount + UTS namespace in which the root's
/// `/proc`, `/dev`, `/run` are mounted. Commands run through `nsenter` + `chroot`.
struct DebRoot {
    ns: String,
    ip: String,
    root: PathBuf,
    anchor: Child,
    procs: Vec<Background>,
}

impl DebRoot {
    fn start(fleet: &Fleet, root: &Path) -> Result<DebRoot> {
        let ns = format!("sm{}-deb", fleet.id);
        let ip = format!("10.213.{}.250", fleet.subnet);
        let veth = format!("v{}deb", fleet.id);
        run(
            sh(&format!(
                "ip netns del {ns} 2>/dev/null || true
                 ip netns add {ns}
                 ip -n {lan} link add {veth} type veth peer name eth0 netns {ns}
                 ip -n {lan} link set {veth} master br0 up
                 ip -n {ns} link set lo up
                 ip -n {ns} addr add {ip}/24 dev eth0
                 ip -n {ns} link set eth0 up",
                lan = fleet.lan_ns
            )),
            Duration::from_secs(30),
        )?
        .ok()
        .context("creating the root's network namespace")?;
        let r = root.display();
        let script = format!(
            "set -e
             mount -t proc proc {r}/proc
             mount --rbind /dev {r}/dev
             mount -t tmpfs -o mode=0755 tmpfs {r}/run
             mkdir -p {r}/run/sshd {r}/run/smith
             hostname {HOST_NAME}
             echo ready
             exec sleep 1000000000"
        );
        let mut anchor = Command::new("ip");
        anchor
            .args([
                "netns",
                "exec",
                &ns,
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
            ])
            .args(["/bin/sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = anchor.spawn().context("starting the root's anchor")?;
        let mut line = String::new();
        {
            use std::io::BufRead;
            let stdout = child.stdout.take().context("anchor stdout")?;
            std::io::BufReader::new(stdout).read_line(&mut line)?;
        }
        let deb = DebRoot {
            ns,
            ip,
            root: root.to_path_buf(),
            anchor: child,
            procs: Vec::new(),
        };
        if line.trim() != "ready" {
            bail!("the root's namespaces could not be set up");
        }
        Ok(deb)
    }

    /// `program` run inside the root (its own PATH, HOME and nothing else from ours).
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args([
            "-t",
            &self.anchor.id().to_string(),
            "-m",
            "-u",
            "-n",
            "--",
            "chroot",
        ])
        .arg(&self.root)
        .arg(program)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("LC_ALL", "C");
        c
    }

    fn sh(&self, script: &str) -> Result<Outcome> {
        let mut c = self.cmd("/bin/sh");
        c.arg("-ec").arg(script);
        run(c, Duration::from_secs(120))
    }

    fn exec(&self, argv: &[&str]) -> Result<Outcome> {
        let mut c = self.cmd(argv[0]);
        c.args(&argv[1..]);
        run(c, Duration::from_secs(120))
    }

    fn spawn(&mut self, name: &str, argv: &[&str], log: &Path) -> Result<()> {
        let mut c = self.cmd(argv[0]);
        c.args(&argv[1..]).env("RUST_LOG", "info");
        self.procs.push(Background::spawn(name, c, log)?);
        Ok(())
    }

    /// Stops every daemon started with [`DebRoot::spawn`].
    fn stop_all(&mut self) {
        for mut p in self.procs.drain(..) {
            p.kill();
        }
    }
}

impl Drop for DebRoot {
    fn drop(&mut self) {
        self.stop_all();
        let ns = &self.ns;
        let _ = run(
            sh(&format!("for p in $(ip netns pids {ns} 2>/dev/null); do kill -9 $p 2>/dev/null || true; done")),
            Duration::from_secs(10),
        );
        let _ = self.anchor.kill();
        let _ = self.anchor.wait();
        let _ = run(
            sh(&format!("ip netns del {ns} 2>/dev/null || true")),
            Duration::from_secs(10),
        );
    }
}

/// Every path under `dir` with its type, mode, owner, size and link target: together
/// with `diff -r` this says whether two trees are identical.
fn tree_listing(dir: &Path) -> Result<String> {
    let mut c = Command::new("find");
    c.arg(".")
        .args(["-printf", "%p %y %m %U:%G %s %l\n"])
        .current_dir(dir);
    let o = run(c, Duration::from_secs(60))?.ok()?;
    let mut lines: Vec<&str> = o.stdout.lines().collect();
    lines.sort_unstable();
    Ok(lines.join("\n"))
}

/// Fails with both differences unless `a` and `b` are identical trees.
fn same_tree(a: &Path, b: &Path, what: &str) -> Result<()> {
    let mut c = Command::new("diff");
    c.args(["-r", "--no-dereference"]).arg(a).arg(b);
    let d = run(c, Duration::from_secs(60))?;
    let (la, lb) = (tree_listing(a)?, tree_listing(b)?);
    if d.success() && la == lb {
        return Ok(());
    }
    let la: std::collections::BTreeSet<&str> = la.lines().collect();
    let lb: std::collections::BTreeSet<&str> = lb.lines().collect();
    let only_a: Vec<&&str> = la.difference(&lb).collect();
    let only_b: Vec<&&str> = lb.difference(&la).collect();
    bail!(
        "{what}: /etc differs\n--- diff -r\n{}{}\n--- only before: {only_a:#?}\n--- only after: {only_b:#?}",
        d.stdout,
        d.stderr
    )
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let mut c = Command::new("cp");
    c.arg("-a").arg(from).arg(to);
    run(c, Duration::from_secs(60))?.ok()?;
    Ok(())
}

fn json_field(o: &Outcome, field: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(o.out())
        .with_context(|| format!("expected JSON from {}: {o}", o.desc))?;
    Ok(v[field]
        .as_str()
        .with_context(|| format!("no {field:?} in {o}"))?
        .to_string())
}

#[test]
fn debs_install_activate_log_in_and_purge_without_a_trace() -> Result<()> {
    let _serial = serial();
    if !e2e_available() {
        return Ok(());
    }
    let started = Instant::now();
    let Some(tarball) = root_tarball()? else {
        return Ok(());
    };
    let debs_dir = workspace().join("target/install-deb/debs");
    let debs = build_debs(&debs_dir)?;
    let host_deb = debs
        .iter()
        .find(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("smith-host_"))
        })
        .context("no smith-host .deb")?;
    let cli_deb = debs
        .iter()
        .find(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("smith_"))
        })
        .context("no smith .deb")?;
    eprintln!("debs built after {:.0?}", started.elapsed());

    // The CA, alice with an ssh grant on env=pkg.
    let mut fleet = Fleet::new("install-deb")?;
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
            "env=pkg",
            "--level",
            "ssh",
            "--max-ttl",
            "1h",
        ],
    ] {
        fleet.admin_ok(&args)?;
    }

    // A fresh root, its /etc as debootstrap left it, and root's authorized key.
    let root = fleet.dir.join("root");
    std::fs::create_dir_all(&root)?;
    let mut untar = Command::new("tar");
    untar
        .args(["--numeric-owner", "-C"])
        .arg(&root)
        .arg("-xf")
        .arg(&tarball);
    run(untar, Duration::from_secs(120))?
        .ok()
        .context("unpacking the root")?;
    let etc_pristine = fleet.dir.join("etc.pristine");
    copy_tree(&root.join("etc"), &etc_pristine)?;
    let (admin_key, admin_pub) = fleet.admin_key()?;
    std::fs::create_dir_all(root.join("root/.ssh"))?;
    std::fs::write(
        root.join("root/.ssh/authorized_keys"),
        format!("{admin_pub}\n"),
    )?;
    let debs_in_root = root.join("tmp/smith-debs");
    std::fs::create_dir_all(&debs_in_root)?;
    for d in [host_deb, cli_deb] {
        std::fs::copy(d, debs_in_root.join(d.file_name().context("deb name")?))?;
    }
    let mut deb = DebRoot::start(&fleet, &root)?;

    // Installing changes neither PAM nor nsswitch.conf nor sshd's configuration.
    deb.sh("dpkg -i /tmp/smith-debs/*.deb")?
        .ok()
        .context("dpkg -i")?;
    let status = deb
        .exec(&[
            "dpkg-query",
            "-W",
            "-f",
            "${Package} ${Status}\n",
            "smith-host",
            "smith",
        ])?
        .ok()?;
    ensure!(
        status
            .out()
            .lines()
            .all(|l| l.ends_with("install ok installed")),
        "{status}"
    );
    for f in ["nsswitch.conf", "pam.d", "ssh", "sudoers", "sudoers.d"] {
        let mut c = Command::new("diff");
        c.args(["-r", "--no-dereference"])
            .arg(etc_pristine.join(f))
            .arg(root.join("etc").join(f));
        let d = run(c, Duration::from_secs(30))?;
        ensure!(d.success(), "installing the package changed /etc/{f}: {d}");
    }
    let profile = std::fs::read_to_string(root.join("usr/share/pam-configs/smith"))?;
    ensure!(
        profile.contains("Default: no"),
        "the pam-auth-update profile is enabled by default"
    );
    ensure!(
        root.join("usr")
            .join(smith_tests::fleet::MULTIARCH_LIBDIR)
            .join("libnss_smith.so.2")
            .exists(),
        "the NSS module is not in the multiarch libdir"
    );
    let etc_installed = fleet.dir.join("etc.installed");
    copy_tree(&root.join("etc"), &etc_installed)?;

    // Activate, start the root's own daemons, log in.
    let activate = |fleet: &Fleet, deb: &DebRoot| -> Result<()> {
        let token = fleet.host_token(HOST_NAME, TAGS)?;
        let ca = fleet.ca();
        deb.exec(&[
            "smith-host",
            "activate",
            "--ca",
            &ca.url,
            "--token",
            &token,
            "--ca-fingerprint",
            &ca.fingerprint,
            "--name",
            HOST_NAME,
            "--no-start",
        ])?
        .ok()
        .context("smith-host activate inside the root")?;
        Ok(())
    };
    activate(&fleet, &deb)?;
    let nss = std::fs::read_to_string(root.join("etc/nsswitch.conf"))?;
    ensure!(
        nss.lines()
            .any(|l| l.starts_with("passwd:") && l.contains("files") && l.contains("smith")),
        "activate did not add smith to nsswitch.conf:\n{nss}"
    );
    deb.spawn(
        "smith-hostd",
        &["/usr/sbin/smith-hostd"],
        &fleet.dir.join("deb-hostd.log"),
    )?;
    wait_for(
        "smith-hostd in the root to serve alice",
        Duration::from_secs(30),
        || {
            let o = deb.exec(&["getent", "passwd", "alice"])?;
            Ok(o.success().then_some(()))
        },
    )?;
    deb.exec(&["/usr/sbin/sshd", "-t"])?
        .ok()
        .context("sshd -t in the root")?;
    deb.spawn(
        "sshd",
        &["/usr/sbin/sshd", "-D", "-E", "/var/log/auth.log"],
        &fleet.dir.join("deb-sshd.out"),
    )?;
    let ip = deb.ip.clone();
    wait_for(
        "the root's sshd on port 22",
        Duration::from_secs(15),
        || {
            let mut c = fleet.lan_cmd("bash");
            c.args(["-c", &format!("exec 3<>/dev/tcp/{ip}/22")]);
            Ok(run(c, Duration::from_secs(5))?.success().then_some(()))
        },
    )?;

    let mut alice = fleet.client("alice")?;
    let t = fleet.admin_ok(&["user", "token", "alice", "--json"])?;
    alice.set_token(&json_field(&t, "token")?);
    alice
        .smith(&[
            "cert",
            "--scope",
            "env=pkg",
            "--ttl",
            "10m",
            "--reason",
            "install-test",
        ])?
        .ok()
        .context("smith cert")?;
    let ssh_opts = [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
    ];
    let mut argv: Vec<&str> = vec!["ssh"];
    argv.extend(ssh_opts);
    let target = format!("alice@{ip}");
    argv.extend([
        target.as_str(),
        "id -un; hostname; test -d \"$HOME\" && echo home-ok",
    ]);
    let login = alice.run(&argv)?;
    ensure!(
        login.success() && login.out() == format!("alice\n{HOST_NAME}\nhome-ok"),
        "alice's certificate login to the packaged host failed: {login}\n--- auth.log\n{}\n--- hostd\n{}",
        std::fs::read_to_string(root.join("var/log/auth.log")).unwrap_or_default(),
        std::fs::read_to_string(fleet.dir.join("deb-hostd.log")).unwrap_or_default()
    );
    // The local root account is untouched: authorized_keys still works.
    let key = admin_key.to_string_lossy().to_string();
    let mut argv: Vec<&str> = vec![
        "ssh",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-i",
        &key,
    ];
    argv.extend(ssh_opts);
    let root_target = format!("root@{ip}");
    argv.extend([root_target.as_str(), "id -u"]);
    let o = alice
        .run(&argv)?
        .ok()
        .context("root's authorized_keys login")?;
    ensure!(o.out() == "0", "{o}");
    eprintln!("logins done after {:.0?}", started.elapsed());

    // deactivate restores /etc as the package left it.
    deb.stop_all();
    deb.exec(&["smith-host", "deactivate"])?
        .ok()
        .context("smith-host deactivate")?;
    same_tree(
        &etc_installed,
        &root.join("etc"),
        "after smith-host deactivate",
    )?;

    // Enrolled again (the admin removes the old enrollment first), then purged while
    // active: prerm deactivates, postrm cleans up.
    fleet.admin_ok(&["host", "remove", HOST_NAME])?;
    activate(&fleet, &deb)?;
    ensure!(
        root.join("etc/ssh/sshd_config.d/50-smith.conf").exists(),
        "second activation wrote no drop-in"
    );
    deb.exec(&["dpkg", "--purge", "smith-host", "smith"])?
        .ok()
        .context("dpkg --purge")?;
    let gone = deb.exec(&["dpkg-query", "-W", "-f", "${Status}\n", "smith-host"])?;
    ensure!(
        !gone.stdout.contains("installed"),
        "smith-host still installed after purge: {gone}"
    );
    ensure!(
        !root.join("var/lib/smith").exists(),
        "/var/lib/smith survived the purge"
    );
    std::fs::remove_dir_all(&debs_in_root)?;
    same_tree(&etc_pristine, &root.join("etc"), "after dpkg --purge")?;
    eprintln!("install test passed in {:.0?}", started.elapsed());
    drop(deb);
    Ok(())
}

#[test]
fn rpms_carry_the_files_and_scriptlets() -> Result<()> {
    let _serial = serial();
    if !e2e_available() {
        return Ok(());
    }
    let bin_dir = std::env::var("SMITH_BIN_DIR").unwrap_or_else(|_| {
        workspace()
            .join("target/debug")
            .to_string_lossy()
            .into_owned()
    });
    let out = workspace().join("target/install-deb/rpms");
    let out_s = out.to_string_lossy().to_string();
    // xtask checks every expected path (`rpm -qlp`) and scriptlet (`rpm -qp --scripts`)
    // and fails otherwise; here we check that it did, on the packages themselves too.
    let o = xtask(
        &["package", "rpm", "--bin-dir", &bin_dir, "--out", &out_s],
        Duration::from_secs(600),
    )?
    .ok()
    .context("cargo xtask package rpm")?;
    ensure!(
        o.stdout
            .contains("rpm file lists and scriptlets as expected"),
        "{o}"
    );
    let host_rpm = std::fs::read_dir(out.join("RPMS/x86_64"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("smith-host-"))
        })
        .context("no smith-host rpm")?;
    let mut c = Command::new("rpm");
    c.arg("-qlp").arg(&host_rpm);
    let list = run(c, Duration::from_secs(60))?.ok()?;
    for f in [
        "/usr/lib64/libnss_smith.so.2",
        "/usr/lib64/security/pam_smith.so",
        "/usr/sbin/smith-hostd",
        "/usr/lib/systemd/system/smith-hostd.service",
    ] {
        ensure!(
            list.stdout.lines().any(|l| l == f),
            "{f} not in {}: {list}",
            host_rpm.display()
        );
    }
    let mut c = Command::new("rpm");
    c.args(["-qp", "--scripts"]).arg(&host_rpm);
    let scripts = run(c, Duration::from_secs(60))?.ok()?;
    ensure!(
        scripts.stdout.contains("preuninstall") && scripts.stdout.contains("smith-host deactivate"),
        "the erase scriptlet does not deactivate the host: {scripts}"
    );
    Ok(())
}

#[test]
fn the_vagrant_lab_parses() -> Result<()> {
    let _serial = serial();
    let dir = workspace().join("vagrant");
    let o = run(
        sh(&format!("sh -n {}/enroll.sh", dir.display())),
        Duration::from_secs(30),
    )?;
    ensure!(o.success(), "vagrant/enroll.sh does not parse: {o}");
    if !Path::new("/usr/bin/ruby").exists() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let _ = run(
                sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends ruby"),
                Duration::from_secs(300),
            );
        }
        if !Path::new("/usr/bin/ruby").exists() {
            return unavailable("ruby is not installed: cannot check vagrant/Vagrantfile");
        }
    }
    let mut c = Command::new("ruby");
    c.arg("-c").arg(dir.join("Vagrantfile"));
    let o = run(c, Duration::from_secs(30))?;
    ensure!(
        o.success() && o.stdout.contains("Syntax OK"),
        "ruby -c Vagrantfile: {o}"
    );
    Ok(())
}
