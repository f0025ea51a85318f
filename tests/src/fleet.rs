//! A fleet of test hosts on one machine.
//!
//! - The **LAN** is a network namespace holding a bridge (`10.213.N.1/24`); the CA and
//!   every client (engineers running `smith`, `ssh`, `ssh-agent`) run there.
//! - Each **host** is a network namespace (a veth into the bridge, `10.213.N.(10+i)`) plus
//!   a private mount and UTS namespace held open by an anchor process. Inside it, `/etc`,
//!   `/usr` and `/var` are overlays over the machine's own (writes land in the host's
//!   directory), `/home`, `/root` and `/tmp` are private, `/run` is a fresh tmpfs. The
//!   Smith binaries and modules are placed in the `/usr` overlay exactly where packages
//!   install them, so glibc, PAM and sshd find them inside the host only.
//! - Commands run inside a host through `nsenter` into the anchor's namespaces.
//!
//! The machine's own `/etc` is never modified. Everything is torn down on drop (set
//! `SMITH_FLEET_KEEP=1` to keep the directories for a post-mortem).

use crate::cmd::{outcome, wait_for, Background, Outcome, DEFAULT_TIMEOUT};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub const MULTIARCH_LIBDIR: &str = "lib/x86_64-linux-gnu";

/// Where the built Smith artifacts are.
#[derive(Debug, Clone)]
pub struct Bins {
    pub dir: PathBuf,
}

impl Bins {
    pub fn locate() -> Result<Bins> {
        let dir = match std::env::var_os("SMITH_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"),
        };
        let bins = Bins { dir };
        for f in [
            "smith-ca",
            "smith",
            "smith-hostd",
            "smith-host",
            "libnss_smith.so",
            "libpam_smith.so",
        ] {
            if !bins.dir.join(f).exists() {
                bail!(
                    "{} is missing: build everything first (`cargo build --workspace`), or run `cargo xtask test`",
                    bins.dir.join(f).display()
                );
            }
        }
        Ok(bins)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Whether end-to-end tests can run here; panics (a failure, not a skip) when they are
/// required (`SMITH_E2E_REQUIRED=1`, as in CI) but cannot.
pub fn e2e_available() -> bool {
    let required = std::env::var("SMITH_E2E_REQUIRED").as_deref() == Ok("1");
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_string());
    }
    for tool in [
        "/usr/sbin/sshd",
        "/usr/bin/ssh",
        "/usr/bin/ssh-keygen",
        "/usr/bin/ssh-agent",
        "/usr/bin/ssh-add",
        "/usr/bin/sudo",
        "/usr/bin/pamtester",
        "/usr/bin/nsenter",
        "/usr/bin/unshare",
        "/usr/bin/getent",
    ] {
        if !Path::new(tool).exists() {
            missing.push(tool.to_string());
        }
    }
    if which("ip").is_none() {
        missing.push("ip (iproute2)".into());
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "end-to-end prerequisites missing: {} (run `cargo xtask test`, which installs them, as root)",
        missing.join(", ")
    );
    if required {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

fn which(tool: &str) -> Option<PathBuf> {
    for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(d).join(tool);
        if p.exists() {
            return Some(p);
        }
    }
    None
}

static FLEET_COUNTER: AtomicU32 = AtomicU32::new(0);

fn sh(script: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-ec").arg(script);
    c
}

fn run_ok(cmd: Command) -> Result<Outcome> {
    outcome(cmd, DEFAULT_TIMEOUT)?.ok()
}

/// The CA started by [`Fleet::start_ca`].
pub struct Ca {
    pub data_dir: PathBuf,
    pub url: String,
    pub fingerprint: String,
    pub admin_token: String,
    pub listen: String,
    /// Extra `smith-ca serve` arguments (e.g. OIDC settings).
    pub serve_args: Vec<String>,
    /// Extra environment of `smith-ca serve`.
    pub serve_env: Vec<(String, String)>,
    /// Its log file.
    pub log: PathBuf,
    pub(crate) process: Option<Background>,
}

pub struct Host {
    pub name: String,
    pub tags: String,
    pub ns: String,
    pub ip: String,
    pub dir: PathBuf,
    lan_ns: String,
    anchor: Child,
    /// The host's PID namespace's init, as the machine sees it: commands enter its
    /// namespaces.
    init: u32,
    pub hostd: Option<Background>,
    pub sshd: Option<Background>,
}

pub struct Fleet {
    pub id: String,
    pub dir: PathBuf,
    pub lan_ns: String,
    pub subnet: u8,
    pub bins: Bins,
    pub ca: Option<Ca>,
    /// More replicas of the CA ([`Fleet::start_replica`]).
    pub replicas: Vec<Ca>,
    pub hosts: Vec<Host>,
    background: Mutex<Vec<Background>>,
    next_host: u8,
}

impl Fleet {
    /// A new, empty LAN. `label` names the fleet in directories and logs.
    pub fn new(label: &str) -> Result<Fleet> {
        let bins = Bins::locate()?;
        let n = FLEET_COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let id = format!("{:x}{}", pid % 0xfff, n);
        // Subnet 10.213.X.0/24, X from the pid and counter (a collision only fails the
        // `ip` commands with a clear error, it never reaches the machine's networks).
        let subnet = ((pid as u64 * 7 + n as u64 * 13) % 200 + 20) as u8;
        let base = std::env::var_os("SMITH_FLEET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fleet"));
        let dir = base.join(format!("{label}-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let lan_ns = format!("sm{id}-lan");
        let mut fleet = Fleet {
            id,
            dir,
            lan_ns,
            subnet,
            bins,
            ca: None,
            replicas: Vec::new(),
            hosts: Vec::new(),
            background: Mutex::new(Vec::new()),
            next_host: 10,
        };
        fleet.create_lan()?;
        Ok(fleet)
    }

    fn create_lan(&mut self) -> Result<()> {
        let ns = &self.lan_ns;
        let _ = outcome(
            sh(&format!("ip netns del {ns} 2>/dev/null || true")),
            DEFAULT_TIMEOUT,
        );
        run_ok(sh(&format!(
            "ip netns add {ns}
             ip -n {ns} link set lo up
             ip -n {ns} link add br0 type bridge
             ip -n {ns} addr add 10.213.{s}.1/24 dev br0
             ip -n {ns} link set br0 up",
            s = self.subnet
        )))
        .context("creating the LAN namespace")?;
        Ok(())
    }

    /// The LAN address of the CA / clients.
    pub fn lan_ip(&self) -> String {
        format!("10.213.{}.1", self.subnet)
    }

    /// A command run in the LAN namespace (where the CA and clients live).
    pub fn lan_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.lan_ns]).arg(program);
        c
    }

    pub fn keep_background(&self, b: Background) {
        self.background.lock().unwrap().push(b);
    }

    // --- the CA ---------------------------------------------------------------------------

    /// [`Fleet::start_ca`] with the CA on a fresh database of the test process's
    /// PostgreSQL server (replicas need it: [`Fleet::start_replica`]).
    pub fn start_ca_on_postgres(&mut self) -> Result<&Ca> {
        let server =
            crate::pg::shared("a CA on PostgreSQL").context("PostgreSQL is not available")?;
        let url = server.create_database();
        self.start_ca_init_with(&["--database", &url], &[])
    }

    /// `smith-ca init` + `smith-ca serve` on the LAN address.
    pub fn start_ca(&mut self) -> Result<&Ca> {
        self.start_ca_with(&[])
    }

    /// Like [`Fleet::start_ca`], with extra `smith-ca serve` arguments.
    pub fn start_ca_with(&mut self, serve_args: &[&str]) -> Result<&Ca> {
        self.start_ca_init_with(&[], serve_args)
    }

    /// Like [`Fleet::start_ca`], with extra `smith-ca init` arguments (e.g.
    /// `--user-ca-algorithm ecdsa-p256`) and extra `smith-ca serve` arguments.
    pub fn start_ca_init_with(&mut self, init_args: &[&str], serve_args: &[&str]) -> Result<&Ca> {
        let data_dir = self.dir.join("ca");
        let listen = format!("{}:8443", self.lan_ip());
        let mut init = Command::new(self.bins.path("smith-ca"));
        init.args(["init", "--data-dir"])
            .arg(&data_dir)
            .args(["--san", &self.lan_ip(), "--json"])
            .args(init_args);
        let out = run_ok(init).context("smith-ca init")?;
        let v: serde_json::Value = serde_json::from_str(out.out())
            .with_context(|| format!("smith-ca init --json printed {:?}", out.stdout))?;
        let fingerprint = v["root_fingerprint"]
            .as_str()
            .context("root_fingerprint")?
            .to_string();
        let admin_token = v["admin_token"]
            .as_str()
            .context("admin_token")?
            .to_string();
        let mut ca = Ca {
            data_dir,
            url: format!("https://{listen}"),
            fingerprint,
            admin_token,
            listen,
            serve_args: serve_args.iter().map(|a| a.to_string()).collect(),
            serve_env: Vec::new(),
            log: self.dir.join("ca.log"),
            process: None,
        };
        self.ca_serve(&mut ca)?;
        self.ca = Some(ca);
        Ok(self.ca.as_ref().unwrap())
    }

    fn ca_serve(&self, ca: &mut Ca) -> Result<()> {
        let mut serve = self.lan_cmd(self.bins.path("smith-ca"));
        serve
            .args(["serve", "--data-dir"])
            .arg(&ca.data_dir)
            .args(["--listen", &ca.listen])
            .args(&ca.serve_args)
            .envs(ca.serve_env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info");
        ca.process = Some(Background::spawn("smith-ca", serve, &ca.log)?);
        let url = ca.url.clone();
        let fp = ca.fingerprint.clone();
        wait_for("the CA to answer", Duration::from_secs(20), || {
            let mut c = self.lan_cmd(self.bins.path("smith-ca"));
            c.args(["admin", "user", "list", "--json"])
                .env("SMITH_CA_URL", &url)
                .env("SMITH_CA_FINGERPRINT", &fp)
                .env("SMITH_TOKEN", &ca.admin_token);
            let o = outcome(c, Duration::from_secs(10))?;
            Ok(o.success().then_some(()))
        })
    }

    pub fn ca(&self) -> &Ca {
        self.ca.as_ref().expect("start_ca first")
    }

    /// Stops the CA process (state stays on disk).
    pub fn stop_ca(&mut self) {
        if let Some(ca) = self.ca.as_mut() {
            if let Some(mut p) = ca.process.take() {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe { libc::kill(p.pid() as i32, libc::SIGTERM) };
                let _ = wait_for("the CA to stop", Duration::from_secs(10), || {
                    Ok((!p.is_running()).then_some(()))
                });
                p.kill();
            }
        }
    }

    /// Starts one more replica of the fleet's CA (`smith-ca serve` over a copy of its
    /// data directory; the CA must be on PostgreSQL, [`Fleet::start_ca_on_postgres`])
    /// on its own LAN address, `10.213.N.(2+k)`: its URL is `https://10.213.N.(2+k):8443`,
    /// a name the certificate from `smith-ca init` does not hold, so it presents one
    /// issued at start for `--name` (clients pin the root). Returns its index in
    /// [`Fleet::replicas`].
    pub fn start_replica(&mut self) -> Result<usize> {
        let k = self.replicas.len();
        let ip = self.replica_ip(k);
        run_ok(sh(&format!(
            "ip -n {} addr add {ip}/24 dev br0",
            self.lan_ns
        )))
        .with_context(|| format!("adding the replica address {ip}"))?;
        let base = self.ca();
        let listen = format!("{ip}:8443");
        let mut serve_args = base.serve_args.clone();
        serve_args.extend(["--name".to_string(), ip.clone()]);
        // A copy of the data directory, as on another machine (the CA must be on a
        // shared database: see `Fleet::start_ca_on_postgres`).
        let data_dir = self.dir.join(format!("ca-replica{}", k + 1));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(&base.data_dir).arg(&data_dir);
        run_ok(cp).context("copying the CA's data directory")?;
        let _ = std::fs::remove_file(data_dir.join("ca.lock"));
        let mut replica = Ca {
            data_dir,
            url: format!("https://{listen}"),
            fingerprint: base.fingerprint.clone(),
            admin_token: base.admin_token.clone(),
            listen,
            serve_args,
            serve_env: vec![],
            log: self.dir.join(format!("ca-replica{}.log", k + 1)),
            process: None,
        };
        self.ca_serve(&mut replica)?;
        self.replicas.push(replica);
        Ok(k)
    }

    fn replica_ip(&self, k: usize) -> String {
        format!("10.213.{}.{}", self.subnet, 2 + k)
    }

    /// The URL replica `k` (from 0) has once started (hosts may be given it before).
    pub fn replica_url(&self, k: usize) -> String {
        format!("https://{}:8443", self.replica_ip(k))
    }

    /// Every CA URL: the first CA's, then its replicas'.
    pub fn ca_urls(&self) -> Vec<String> {
        let mut urls = vec![self.ca().url.clone()];
        urls.extend(self.replicas.iter().map(|r| r.url.clone()));
        urls
    }

    /// The CA (`0`) or replica `i - 1`.
    pub fn ca_replica(&mut self, i: usize) -> &mut Ca {
        match i {
            0 => self.ca.as_mut().expect("start_ca first"),
            _ => &mut self.replicas[i - 1],
        }
    }

    /// Sends `signal` to the CA (`0`) or replica `i - 1` (SIGKILL: it is gone; SIGSTOP:
    /// it hangs, its sockets open; SIGCONT: it goes on).
    pub fn signal_ca(&mut self, i: usize, signal: i32) -> Result<()> {
        let ca = self.ca_replica(i);
        let p = ca.process.as_mut().context("that CA is not running")?;
        // SAFETY: kill(2) on our own child's pid; no memory is passed.
        if unsafe { libc::kill(p.pid() as i32, signal) } != 0 {
            bail!(
                "kill({}, {signal}): {}",
                p.pid(),
                std::io::Error::last_os_error()
            );
        }
        if signal == libc::SIGKILL {
            if let Some(mut p) = ca.process.take() {
                p.kill();
            }
        }
        Ok(())
    }

    /// Starts the CA (`0`) or replica `i - 1` again (after [`Fleet::signal_ca`] killed
    /// it).
    pub fn restart_replica(&mut self, i: usize) -> Result<()> {
        let mut ca = std::mem::replace(
            self.ca_replica(i),
            Ca {
                data_dir: PathBuf::new(),
                url: String::new(),
                fingerprint: String::new(),
                admin_token: String::new(),
                listen: String::new(),
                serve_args: Vec::new(),
                serve_env: Vec::new(),
                log: PathBuf::new(),
                process: None,
            },
        );
        if let Some(mut p) = ca.process.take() {
            p.kill();
        }
        let r = self.ca_serve(&mut ca);
        *self.ca_replica(i) = ca;
        r
    }

    /// Starts the CA again from its data dir.
    pub fn restart_ca(&mut self) -> Result<()> {
        self.stop_ca();
        let mut ca = self.ca.take().context("no CA")?;
        let r = self.ca_serve(&mut ca);
        self.ca = Some(ca);
        r
    }

    /// `smith-ca admin ARGS` as the admin.
    pub fn admin(&self, args: &[&str]) -> Result<Outcome> {
        let ca = self.ca();
        let mut c = self.lan_cmd(self.bins.path("smith-ca"));
        c.arg("admin")
            .args(args)
            .env("SMITH_CA_URL", self.ca_urls().join(","))
            .env("SMITH_CA_FINGERPRINT", &ca.fingerprint)
            .env("SMITH_TOKEN", &ca.admin_token);
        outcome(c, DEFAULT_TIMEOUT)
    }

    /// `smith-ca admin ARGS`, which must succeed.
    pub fn admin_ok(&self, args: &[&str]) -> Result<Outcome> {
        self.admin(args)?.ok()
    }

    /// `grant add --group GROUP --tags TAGS --level LEVEL --max-ttl 8h EXTRA... --json`:
    /// the grant as the CA stored it.
    pub fn grant(
        &self,
        group: &str,
        tags: &str,
        level: &str,
        extra: &[&str],
    ) -> Result<serde_json::Value> {
        let mut a = vec![
            "grant",
            "add",
            "--group",
            group,
            "--tags",
            tags,
            "--level",
            level,
            "--max-ttl",
            "8h",
        ];
        a.extend_from_slice(extra);
        a.push("--json");
        let o = self.admin_ok(&a)?;
        serde_json::from_str(o.out()).with_context(|| format!("grant add printed {o}"))
    }

    /// Every audit record of `host` at the CA (`audit list --json`), in chain order.
    pub fn trail(&self, host: &str) -> Result<Vec<serde_json::Value>> {
        let o = self.admin_ok(&[
            "audit", "list", "--host", host, "--limit", "100000", "--json",
        ])?;
        let v: serde_json::Value =
            serde_json::from_str(o.out()).with_context(|| format!("not JSON: {o}"))?;
        let mut records = v.as_array().context("not an array")?.clone();
        records.sort_by_key(|r| r["seq"].as_u64().unwrap_or(0));
        Ok(records)
    }

    /// A fresh single-use enrollment token for host `name` with `tags`.
    pub fn host_token(&self, name: &str, tags: &str) -> Result<String> {
        let o = self.admin_ok(&[
            "host", "token", "--tags", tags, "--ttl", "1h", "--json", "--name", name,
        ])?;
        let v: serde_json::Value = serde_json::from_str(o.out())
            .with_context(|| format!("host token --json printed {:?}", o.stdout))?;
        Ok(v["token"].as_str().context("token field")?.to_string())
    }

    // --- hosts ----------------------------------------------------------------------------

    /// Builds host `name` with `tags`, enrolls it with `smith-host activate`, starts
    /// `smith-hostd` and `sshd`.
    pub fn add_host(&mut self, name: &str, tags: &str) -> Result<usize> {
        self.add_host_named(name, tags, &[])
    }

    /// [`Fleet::add_host`] whose SSH host certificates also name `ssh_names` (allowed by
    /// its enrollment token and asked for at activation).
    pub fn add_host_named(&mut self, name: &str, tags: &str, ssh_names: &[&str]) -> Result<usize> {
        let mut args = vec![
            "host", "token", "--tags", tags, "--ttl", "1h", "--json", "--name", name,
        ];
        for n in ssh_names {
            args.extend(["--ssh-name", n]);
        }
        let o = self.admin_ok(&args)?;
        let v: serde_json::Value = serde_json::from_str(o.out())
            .with_context(|| format!("host token --json printed {:?}", o.stdout))?;
        let token = v["token"].as_str().context("token field")?.to_string();
        let idx = self.create_host(name, tags)?;
        let ca_urls = vec![self.ca().url.clone()];
        self.activate_host(idx, &token, &ca_urls, ssh_names)?;
        self.hosts[idx].start_hostd()?;
        self.hosts[idx].start_sshd()?;
        Ok(idx)
    }

    /// [`Fleet::add_host`] activated with several CA URLs (`--ca` repeated: the CA and
    /// its replicas, preferred first), with `host.toml` settings changed to `settings`
    /// (key, value) before hostd starts.
    pub fn add_host_with_cas(
        &mut self,
        name: &str,
        tags: &str,
        ca_urls: &[String],
        settings: &[(&str, &str)],
    ) -> Result<usize> {
        let token = self.host_token(name, tags)?;
        let idx = self.create_host(name, tags)?;
        self.activate_host(idx, &token, ca_urls, &[])?;
        for (k, v) in settings {
            self.hosts[idx]
                .sh(&format!(
                    "sed -i 's/^{k} = .*/{k} = {v}/' /etc/smith/host.toml
                     grep -q '^{k} = {v}$' /etc/smith/host.toml"
                ))?
                .ok()
                .with_context(|| format!("setting {k} in host.toml"))?;
        }
        self.hosts[idx].start_hostd()?;
        self.hosts[idx].start_sshd()?;
        Ok(idx)
    }

    /// `smith-host activate --ca URL... --token T --no-start` in host `idx`.
    fn activate_host(
        &self,
        idx: usize,
        token: &str,
        ca_urls: &[String],
        ssh_names: &[&str],
    ) -> Result<()> {
        let fp = self.ca().fingerprint.clone();
        let name = self.hosts[idx].name.clone();
        let mut activate = vec!["smith-host", "activate"];
        for u in ca_urls {
            activate.extend(["--ca", u.as_str()]);
        }
        activate.extend([
            "--token",
            token,
            "--ca-fingerprint",
            &fp,
            "--name",
            &name,
            "--no-start",
        ]);
        for n in ssh_names {
            activate.extend(["--ssh-name", n]);
        }
        self.hosts[idx]
            .exec(&activate)?
            .ok()
            .context("smith-host activate")?;
        Ok(())
    }

    /// Builds the namespaces and private filesystem of a host, with local accounts
    /// (`root` and `deploy`, both reachable with the fleet's admin key) and sshd host
    /// keys, but nothing of Smith enabled.
    pub fn create_host(&mut self, name: &str, tags: &str) -> Result<usize> {
        let i = self.next_host;
        self.next_host += 1;
        let ns = format!("sm{}-h{}", self.id, i);
        let ip = format!("10.213.{}.{}", self.subnet, i);
        let dir = self.dir.join(name);
        for d in [
            "etc.upper",
            "etc.work",
            "usr.upper",
            "usr.work",
            "var.upper",
            "var.work",
            "home",
            "root",
            "tmp",
        ] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        self.install_artifacts(&dir.join("usr.upper"))?;
        let veth = format!("v{}h{}", self.id, i);
        run_ok(sh(&format!(
            "ip netns del {ns} 2>/dev/null || true
             ip netns add {ns}
             ip -n {lan} link add {veth} type veth peer name eth0 netns {ns}
             ip -n {lan} link set {veth} master br0 up
             ip -n {ns} link set lo up
             ip -n {ns} addr add {ip}/24 dev eth0
             ip -n {ns} link set eth0 up",
            lan = self.lan_ns
        )))
        .with_context(|| format!("creating the network of {name}"))?;

        let d = dir.display();
        let script = format!(
            "set -e
             mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/etc.upper,workdir={d}/etc.work /etc
             mount -t overlay overlay -o lowerdir=/usr,upperdir={d}/usr.upper,workdir={d}/usr.work /usr
             mount -t overlay overlay -o lowerdir=/var,upperdir={d}/var.upper,workdir={d}/var.work /var
             mount --bind {d}/home /home
             mount --bind {d}/root /root
             mount --bind {d}/tmp /tmp
             chmod 1777 /tmp
             mount -t tmpfs -o mode=0755 tmpfs /run
             mkdir -p /run/sshd /run/smith
             hostname {name}
             echo ready
             exec /bin/bash -c 'while :; do sleep 1; done'"
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
                // Its own PID namespace (issue 16): ending a user's processes on one
                // host leaves the same uid's processes on another alone. Its init (a
                // bash loop) reaps orphans; it dies with the anchor, and the kernel ends
                // everything in the namespace with it.
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
            ])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = anchor.spawn().context("starting the host anchor")?;
        let stdout = child.stdout.take().context("anchor stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            bail!("host {name} namespace setup failed: {err}");
        }
        let init = pid_namespace_init(child.id())
            .with_context(|| format!("finding the init of {name}'s PID namespace"))?;
        let host = Host {
            init,
            name: name.to_string(),
            tags: tags.to_string(),
            ns,
            ip,
            dir,
            lan_ns: self.lan_ns.clone(),
            anchor: child,
            hostd: None,
            sshd: None,
        };
        let lan_ip = self.lan_ip();
        host.sh(&format!(
            "rm -f /etc/ssh/ssh_host_*
             ssh-keygen -q -A
             echo {name} > /etc/hostname
             echo '127.0.1.1 {name}' >> /etc/hosts
             echo '{lan_ip} smith-ca' >> /etc/hosts
             mkdir -p /etc/ssh/sshd_config.d
             printf 'PasswordAuthentication no\\nKbdInteractiveAuthentication no\\nUseDNS no\\nLogLevel VERBOSE\\nPermitRootLogin prohibit-password\\nMaxStartups 100:30:200\\n' > /etc/ssh/sshd_config.d/10-fleet.conf
             id deploy >/dev/null 2>&1 || useradd -m -s /bin/bash deploy
             mkdir -p /root/.ssh && chmod 700 /root/.ssh"
        ))?
        .ok()
        .with_context(|| format!("preparing {name}"))?;
        self.hosts.push(host);
        let idx = self.hosts.len() - 1;
        // Local accounts reachable with the fleet's admin key.
        let admin_pub = self.admin_key()?.1;
        self.hosts[idx].authorize_key("root", &admin_pub)?;
        self.hosts[idx].authorize_key("deploy", &admin_pub)?;
        Ok(idx)
    }

    /// The binaries and modules, placed where the packages put them.
    fn install_artifacts(&self, usr: &Path) -> Result<()> {
        let lib = usr.join(MULTIARCH_LIBDIR);
        std::fs::create_dir_all(lib.join("security"))?;
        std::fs::create_dir_all(usr.join("sbin"))?;
        std::fs::create_dir_all(usr.join("bin"))?;
        let copies = [
            ("smith-hostd", usr.join("sbin/smith-hostd")),
            ("smith-host", usr.join("sbin/smith-host")),
            ("smith", usr.join("bin/smith")),
            ("libnss_smith.so", lib.join("libnss_smith.so.2")),
            ("libpam_smith.so", lib.join("security/pam_smith.so")),
        ];
        for (src, dst) in copies {
            std::fs::copy(self.bins.path(src), &dst)
                .with_context(|| format!("copying {src} into the host's /usr"))?;
            set_mode(&dst, 0o755)?;
        }
        Ok(())
    }

    /// The fleet's operator key pair (private key path, public key line), used for
    /// `authorized_keys` logins of local accounts.
    pub fn admin_key(&self) -> Result<(PathBuf, String)> {
        let key = self.dir.join("admin_ed25519");
        if !key.exists() {
            run_ok({
                let mut c = Command::new("ssh-keygen");
                c.args(["-q", "-t", "ed25519", "-N", "", "-C", "fleet-admin", "-f"])
                    .arg(&key);
                c
            })?;
        }
        let public = std::fs::read_to_string(key.with_extension("pub"))
            .or_else(|_| std::fs::read_to_string(format!("{}.pub", key.display())))?;
        Ok((key, public.trim().to_string()))
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    pub fn host_mut(&mut self, name: &str) -> &mut Host {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    // --- clients --------------------------------------------------------------------------

    /// [`Fleet::client`] for Smith user `who`, with the per-user token the admin minted
    /// (`smith-ca admin user token`) set as `SMITH_TOKEN`.
    pub fn engineer(&self, who: &str) -> Result<Client> {
        let o = self.admin_ok(&["user", "token", who, "--json"])?;
        let v: serde_json::Value = serde_json::from_str(o.out())
            .with_context(|| format!("user token --json printed {:?}", o.stdout))?;
        let mut c = self.client(who)?;
        c.set_token(v["token"].as_str().context("token field")?);
        Ok(c)
    }

    /// An engineer's workstation in the LAN: a HOME and a running `ssh-agent`.
    pub fn client(&self, who: &str) -> Result<Client> {
        let home = self.dir.join("clients").join(who);
        std::fs::create_dir_all(home.join(".ssh"))?;
        set_mode(&home, 0o700)?;
        let sock = home.join("agent.sock");
        let _ = std::fs::remove_file(&sock);
        let mut agent = Command::new("ssh-agent");
        agent.arg("-D").arg("-a").arg(&sock);
        let bg = Background::spawn(&format!("ssh-agent-{who}"), agent, &home.join("agent.log"))?;
        wait_for("ssh-agent socket", Duration::from_secs(5), || {
            Ok(sock.exists().then_some(()))
        })?;
        let mut env = HashMap::new();
        // Engineers of one fleet share the test's Unix user: a profile each keeps their
        // OIDC sign-ins (kernel keyring) apart.
        env.insert("SMITH_PROFILE".to_string(), who.to_string());
        if let Some(ca) = &self.ca {
            env.insert("SMITH_CA_URL".to_string(), ca.url.clone());
            env.insert("SMITH_CA_FINGERPRINT".to_string(), ca.fingerprint.clone());
        }
        Ok(Client {
            who: who.to_string(),
            home,
            agent_sock: sock,
            lan_ns: self.lan_ns.clone(),
            bins: self.bins.clone(),
            env,
            hosts_file: None,
            _agent: bg,
        })
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.background.lock().map(|mut b| b.clear()).ok();
        for h in &mut self.hosts {
            h.hostd.take();
            h.sshd.take();
        }
        for r in &mut self.replicas {
            r.process.take();
        }
        self.stop_ca();
        let mut namespaces: Vec<String> = self.hosts.iter().map(|h| h.ns.clone()).collect();
        namespaces.push(self.lan_ns.clone());
        for ns in &namespaces {
            // Every process left in the namespace (sshd sessions, sudo, ...).
            let _ = outcome(
                sh(&format!("for p in $(ip netns pids {ns} 2>/dev/null); do kill -9 $p 2>/dev/null || true; done")),
                Duration::from_secs(10),
            );
        }
        for h in &mut self.hosts {
            let _ = h.anchor.kill();
            let _ = h.anchor.wait();
        }
        for ns in &namespaces {
            let _ = outcome(
                sh(&format!("ip netns del {ns} 2>/dev/null || true")),
                Duration::from_secs(10),
            );
        }
        if std::env::var("SMITH_FLEET_KEEP").as_deref() != Ok("1") && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("fleet directory kept: {}", self.dir.display());
        }
    }
}

/// The part of `packaging/systemd/smith-hostd.service` that changes what the daemon
/// can see and do, emulated for a host without systemd (issue 14, L11): its
/// `ProtectProc=` and `ProcSubset=` become a private `/proc` mount with `hidepid=` and
/// `subset=pid` (in hostd's own mount namespace), and `CapabilityBoundingSet=` becomes
/// `setpriv --bounding-set=-all,+...` (root with exactly those capabilities). Returns a shell
/// script prefix that ends in `exec [setpriv ...]`: the daemon's path follows it. The
/// unit file is read, not copied, so a change to it is what the fleet tests run.
pub fn unit_sandbox() -> Result<String> {
    let unit_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/smith-hostd.service");
    let unit = std::fs::read_to_string(&unit_path)
        .with_context(|| format!("reading {}", unit_path.display()))?;
    let value = |key: &str| {
        unit.lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
    };
    for key in ["User=", "Group=", "DynamicUser="] {
        if let Some(v) = value(key) {
            bail!("cannot emulate {key}{v} (hostd is expected to run as root:root)");
        }
    }
    let mut opts = Vec::new();
    match value("ProtectProc=").as_deref() {
        None | Some("default") => {}
        Some(v @ ("noaccess" | "invisible" | "ptraceable")) => opts.push(format!("hidepid={v}")),
        Some(v) => bail!("cannot emulate ProtectProc={v}"),
    }
    match value("ProcSubset=").as_deref() {
        None | Some("all") => {}
        Some("pid") => opts.push("subset=pid".to_string()),
        Some(v) => bail!("cannot emulate ProcSubset={v}"),
    }
    let mut script = String::new();
    if !opts.is_empty() {
        script.push_str(&format!("mount -t proc -o {} proc /proc\n", opts.join(",")));
    }
    script.push_str("exec ");
    match value("CapabilityBoundingSet=").as_deref() {
        None => {}
        Some(v) => {
            // `CAP_KILL CAP_CHOWN` → `-all,+kill,+chown`: root with exactly those.
            let mut set = String::from("-all");
            for cap in v.split_whitespace() {
                let Some(name) = cap.strip_prefix("CAP_") else {
                    bail!("cannot emulate CapabilityBoundingSet={v}");
                };
                set.push_str(&format!(",+{}", name.to_ascii_lowercase()));
            }
            script.push_str(&format!(
                "/usr/bin/setpriv --bounding-set={set} --inh-caps=-all --ambient-caps=-all -- "
            ));
        }
    }
    Ok(script)
}

/// The children of `pid` (`/proc/PID/task/*/children`).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The first process named `comm` at or under `top` (breadth first).
fn named_under(top: u32, comm: &str) -> Result<u32> {
    let mut todo = std::collections::VecDeque::from([top]);
    while let Some(p) = todo.pop_front() {
        let name = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if name.trim() == comm {
            return Ok(p);
        }
        todo.extend(children(p));
    }
    bail!("no {comm} process under pid {top}")
}

/// The first process under `pid` in another PID namespace than ours.
fn pid_namespace_init(pid: u32) -> Result<u32> {
    let ours = std::fs::read_link("/proc/self/ns/pid")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let mut todo = vec![pid];
        while let Some(p) = todo.pop() {
            match std::fs::read_link(format!("/proc/{p}/ns/pid")) {
                Ok(ns) if ns != ours => return Ok(p),
                _ => todo.extend(children(p)),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("no process in a new PID namespace under pid {pid}")
}

pub fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

impl Host {
    fn anchor_pid(&self) -> u32 {
        self.init
    }

    /// smith-hostd's pid as the machine sees it (the process under the `nsenter` that
    /// started it), checked by its name.
    pub fn hostd_pid(&self) -> Result<u32> {
        let top = self
            .hostd
            .as_ref()
            .context("smith-hostd is not running")?
            .pid();
        named_under(top, "smith-hostd")
    }

    /// The listening sshd's pid as the machine sees it (the first `sshd` under the
    /// `nsenter` that started it; its connections are below it).
    pub fn sshd_pid(&self) -> Result<u32> {
        let top = self.sshd.as_ref().context("sshd is not running")?.pid();
        named_under(top, "sshd")
    }

    /// A command that runs inside this host.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args([
            "-t",
            &self.anchor_pid().to_string(),
            "-m",
            "-u",
            "-n",
            "-p",
            "--",
        ])
        .arg(program)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env_remove("SMITH_NSS_BYPASS");
        c
    }

    /// Runs `argv` inside this host.
    pub fn exec(&self, argv: &[&str]) -> Result<Outcome> {
        let mut c = self.cmd(argv[0]);
        c.args(&argv[1..]);
        outcome(c, DEFAULT_TIMEOUT)
    }

    /// Runs a shell script inside this host.
    pub fn sh(&self, script: &str) -> Result<Outcome> {
        let mut c = self.cmd("/bin/sh");
        c.arg("-ec").arg(script);
        outcome(c, DEFAULT_TIMEOUT)
    }

    pub fn authorize_key(&self, user: &str, public: &str) -> Result<()> {
        self.sh(&format!(
            "h=$(getent passwd {user} | cut -d: -f6)
             mkdir -p $h/.ssh
             echo '{public}' >> $h/.ssh/authorized_keys
             chown -R {user}: $h/.ssh
             chmod 700 $h/.ssh
             chmod 600 $h/.ssh/authorized_keys"
        ))?
        .ok()?;
        Ok(())
    }

    /// Starts `smith-hostd` in the foreground inside the host, as its systemd unit would
    /// run it (see [`unit_sandbox`]), and waits until its socket answers.
    pub fn start_hostd(&mut self) -> Result<()> {
        self.start_hostd_env(&[])
    }

    /// [`Host::start_hostd`] with extra environment (e.g. libfaketime's `LD_PRELOAD`).
    pub fn start_hostd_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        let mut c = self.cmd("/usr/bin/unshare");
        c.args(["--mount", "--propagation", "slave", "--", "/bin/sh", "-ec"])
            .arg(format!("{}/usr/sbin/smith-hostd", unit_sandbox()?));
        c.env("RUST_LOG", "info");
        c.envs(env.iter().copied());
        self.hostd = Some(Background::spawn(
            "smith-hostd",
            c,
            &self.dir.join("hostd.log"),
        )?);
        let pid = self.anchor_pid();
        wait_for("smith-hostd's socket", Duration::from_secs(20), || {
            let mut c = Command::new("nsenter");
            c.args([
                "-t",
                &pid.to_string(),
                "-m",
                "-u",
                "-n",
                "-p",
                "--",
                "/usr/sbin/smith-host",
                "status",
                "--json",
            ]);
            let o = outcome(c, Duration::from_secs(10))?;
            let v: serde_json::Value = match serde_json::from_str(o.out()) {
                Ok(v) => v,
                Err(_) => return Ok(None),
            };
            Ok((v["daemon_reachable"] == serde_json::Value::Bool(true)).then_some(()))
        })
    }

    /// Kills smith-hostd (SIGKILL: no clean shutdown) and waits until it is gone (its
    /// pid file lock released), so that a new one can start at once.
    pub fn kill_hostd(&mut self) {
        let pid = self.hostd_pid().ok();
        if let Some(mut h) = self.hostd.take() {
            h.kill();
        }
        if let Some(pid) = pid {
            let gone = || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| {
                        s.rsplit(')')
                            .next()
                            .is_some_and(|r| r.trim_start().starts_with('Z'))
                    })
                    .unwrap_or(true)
            };
            let _ = wait_for("smith-hostd to exit", Duration::from_secs(10), || {
                Ok(gone().then_some(()))
            });
        }
    }

    /// Starts sshd (foreground, logging to /var/log/auth.log inside the host) and waits
    /// for port 22.
    pub fn start_sshd(&mut self) -> Result<()> {
        self.start_sshd_env(&[])
    }

    /// [`Host::start_sshd`] with extra environment (e.g. libfaketime's `LD_PRELOAD`).
    pub fn start_sshd_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        self.sh("/usr/sbin/sshd -t")?
            .ok()
            .context("sshd -t (config check)")?;
        let mut c = self.cmd("/usr/sbin/sshd");
        c.args(["-D", "-E", "/var/log/auth.log"]);
        c.envs(env.iter().copied());
        self.sshd = Some(Background::spawn("sshd", c, &self.dir.join("sshd.out"))?);
        let ip = self.ip.clone();
        let lan = self.lan_ns.clone();
        wait_for("sshd on port 22", Duration::from_secs(10), || {
            let mut c = Command::new("ip");
            c.args([
                "netns",
                "exec",
                &lan,
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{ip}/22"),
            ]);
            Ok(outcome(c, Duration::from_secs(5))?.success().then_some(()))
        })
    }

    /// sshd's own log inside the host.
    pub fn auth_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("var.upper/log/auth.log")).unwrap_or_default()
    }

    pub fn hostd_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("hostd.log")).unwrap_or_default()
    }
}

/// An engineer's side: HOME, ssh-agent, `smith` and `ssh` in the LAN.
pub struct Client {
    pub who: String,
    pub home: PathBuf,
    pub agent_sock: PathBuf,
    lan_ns: String,
    bins: Bins,
    pub env: HashMap<String, String>,
    /// Set by [`Client::workstation`]: this file is the commands' `/etc/hosts`.
    hosts_file: Option<PathBuf>,
    _agent: Background,
}

impl Client {
    /// Makes this client a workstation where plain `ssh NAME` works: its commands see
    /// an `/etc/hosts` naming the fleet's hosts (`(name, ip)`), and its home as root's
    /// (ssh finds `~/.ssh` through the passwd entry, not `$HOME`), each in a mount
    /// namespace of its own (the machine's files are untouched), and without a
    /// controlling terminal (as under CI: nothing can prompt on `/dev/tty`).
    pub fn workstation(&mut self, names: &[(&str, &str)]) -> Result<()> {
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for (name, ip) in names {
            hosts.push_str(&format!("{ip} {name}\n"));
        }
        let path = self.home.join("hosts");
        std::fs::write(&path, hosts)?;
        self.hosts_file = Some(path);
        Ok(())
    }

    /// A command in the client's environment (its HOME, agent and CA settings), in the LAN.
    pub fn base(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.lan_ns]);
        if let Some(hosts) = &self.hosts_file {
            c.args([
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                "mount --bind \"$1\" /etc/hosts && mount --bind \"$HOME\" /root && shift && exec setsid -w \"$@\"",
                "sh",
            ])
            .arg(hosts);
        }
        c.arg(program)
            .env("HOME", &self.home)
            .env("SSH_AUTH_SOCK", &self.agent_sock)
            .env_remove("SMITH_TOKEN");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Starts `smith ARGS` in the background with stderr piped (for interactive flows
    /// such as `smith login`, whose prompts arrive on stderr).
    pub fn spawn_smith(&self, args: &[&str]) -> Result<std::process::Child> {
        let mut c = self.base(self.bins.path("smith"));
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().context("starting smith")
    }

    pub fn set_token(&mut self, token: &str) {
        self.env.insert("SMITH_TOKEN".into(), token.into());
    }

    /// `smith ARGS`.
    pub fn smith(&self, args: &[&str]) -> Result<Outcome> {
        let mut c = self.base(self.bins.path("smith"));
        c.args(args);
        outcome(c, DEFAULT_TIMEOUT)
    }

    /// `ssh [opts] user@host CMD` through the agent, no host-key prompts.
    pub fn ssh(&self, user: &str, host: &Host, command: &str) -> Result<Outcome> {
        self.ssh_with(user, host, command, &[])
    }

    pub fn ssh_with(
        &self,
        user: &str,
        host: &Host,
        command: &str,
        extra: &[&str],
    ) -> Result<Outcome> {
        outcome(
            self.ssh_command(user, host, command, extra),
            DEFAULT_TIMEOUT,
        )
    }

    /// An SSH session that stays open in the background (`command` runs until it ends
    /// or the session is ended); the caller kills and reaps the child.
    pub fn ssh_session(&self, user: &str, host: &Host, command: &str) -> Result<Child> {
        let mut c = self.ssh_command(user, host, command, &[]);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.spawn()
            .with_context(|| format!("an ssh session of {user} to {}", host.name))
    }

    /// The `ssh` command [`Client::ssh_with`] runs, to be spawned as the caller needs.
    pub fn ssh_command(&self, user: &str, host: &Host, command: &str, extra: &[&str]) -> Command {
        let mut c = self.base("ssh");
        c.args([
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
        ])
        .args(extra)
        .arg(format!("{user}@{}", host.ip))
        .arg(command);
        c
    }

    /// Any command in the client's environment.
    pub fn run(&self, argv: &[&str]) -> Result<Outcome> {
        let mut c = self.base(argv[0]);
        c.args(&argv[1..]);
        outcome(c, DEFAULT_TIMEOUT)
    }

    /// `smith login --no-browser`, completed by a scripted browser in the LAN signing in
    /// at the test OpenID Provider as `account` (its `sub`). Returns smith's stdout.
    pub fn sign_in(&self, account: &str) -> Result<String> {
        let mut child = self.spawn_smith(&["login", "--no-browser"])?;
        let stderr = child.stderr.take().context("stderr")?;
        let mut reader = BufReader::new(stderr);
        let mut seen = String::new();
        let url = loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                bail!("smith login ended before printing a URL: {seen}");
            }
            seen.push_str(&line);
            if let Some(u) = crate::oidc::login_url(&seen) {
                break u;
            }
        };
        let drain = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
            rest
        });
        crate::oidc::Browser::in_netns(&self.lan_ns)
            .sign_in(&url, account, true)
            .map_err(anyhow::Error::msg)?;
        let out = child.wait_with_output()?;
        let err = drain.join().unwrap_or_default();
        if !out.status.success() {
            bail!(
                "smith login failed: {}{err}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
