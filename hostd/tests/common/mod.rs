//! Shared test support for hostd's integration tests: the real CA (the test kit's,
//! in-process) set up with the users these tests assume, host roots populated with copies
//! of the machine's sshd/nsswitch/PAM files, tree snapshots for byte-for-byte comparisons,
//! and helpers to run the real binaries.
#![allow(dead_code)]

#[allow(unused_imports)] // each test crate uses some of them
pub use smith_testkit::hostile::{Tamper, TamperingProxy};
pub use smith_testkit::ServeConfig;
pub use smith_testkit::TestCa;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn smith_host() -> &'static str {
    env!("CARGO_BIN_EXE_smith-host")
}
pub fn smith_hostd() -> &'static str {
    env!("CARGO_BIN_EXE_smith-hostd")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether tests that need root may run; with `SMITH_E2E_REQUIRED=1` a missing
/// prerequisite is a failure, not a skip.
pub fn root_available(what: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("SMITH_E2E_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{what} needs root (SMITH_E2E_REQUIRED=1)");
    }
    eprintln!("skipping {what}: needs root");
    false
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// --- an OpenSSH user CA key (ssh-keygen) -----------------------------------------------------

/// An OpenSSH CA key made with ssh-keygen, to certify keys for `smith-host principals`
/// (certificates no CA would issue: expired, not yet valid, odd scopes). It serves nothing.
pub struct SshCa {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub public: String,
}

impl SshCa {
    pub fn new() -> SshCa {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "test-ca", "-f"])
                .arg(&key),
        );
        let public = std::fs::read_to_string(key.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string();
        SshCa { dir, key, public }
    }

    /// Signs `pubkey_line`; returns the certificate line. `extra` are ssh-keygen options.
    pub fn sign(
        &self,
        pubkey_line: &str,
        id: &str,
        principals: &str,
        host: bool,
        extra: &[&str],
    ) -> String {
        let n = rand_suffix();
        let p = self.dir.path().join(format!("k{n}.pub"));
        std::fs::write(&p, format!("{pubkey_line}\n")).unwrap();
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-s"])
            .arg(&self.key)
            .args(["-I", id, "-n", principals]);
        if host {
            c.arg("-h");
        }
        c.args(extra).arg(&p);
        run_ok(&mut c);
        let cert = self.dir.path().join(format!("k{n}-cert.pub"));
        std::fs::read_to_string(cert).unwrap().trim().to_string()
    }

    /// A fresh user key and a certificate for it; returns the certificate's base64 (%k).
    pub fn user_cert_b64(&self, principal: &str, validity: &str, scope: Option<&str>) -> String {
        let n = rand_suffix();
        let k = self.dir.path().join(format!("u{n}"));
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&k),
        );
        let pubkey = std::fs::read_to_string(k.with_extension("pub")).unwrap();
        let scope_opt = scope.map(|s| format!("extension:scope@smith={s}"));
        let mut extra = vec!["-V", validity];
        if let Some(s) = &scope_opt {
            extra.push("-O");
            extra.push(s);
        }
        let line = self.sign(
            pubkey.trim(),
            &format!("smith:{principal}:test{n}"),
            principal,
            false,
            &extra,
        );
        line.split_whitespace().nth(1).unwrap().to_string()
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst) * 1000 + std::process::id() as u64 % 1000
}

pub fn run_ok(c: &mut Command) -> Output {
    let o = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    assert!(
        o.status.success(),
        "{c:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

// --- the real CA --------------------------------------------------------------------------

/// The real CA, in-process (the test kit's), with the directory these tests assume:
/// groups dev (gid 200010) and ops (200011), alice (uid 200001, in dev) with ssh and oscar
/// (uid 200002, in ops) with sudo on every env=prod and env=dev host.
pub fn test_ca() -> TestCa {
    test_ca_with(|_| {})
}

/// [`test_ca`] with its serve settings changed by `configure` (e.g. short certificate
/// lifetimes).
pub fn test_ca_with(configure: impl FnOnce(&mut ServeConfig)) -> TestCa {
    let ca = TestCa::in_process_with(configure);
    ca.add_group("dev", Some(200010));
    ca.add_group("ops", Some(200011));
    ca.add_user("alice", &["dev"], Some(200001));
    ca.add_user("oscar", &["ops"], Some(200002));
    for env in ["env=prod", "env=dev"] {
        ca.grant("dev", env, "ssh");
        ca.grant("ops", env, "sudo");
    }
    ca
}

/// SSH host keys of a [`HostRoot`] (ed25519 and ecdsa): the CA certifies each at
/// enrollment and at every renewal.
pub const HOST_KEYS: usize = 2;

/// How many times the CA renewed `host`'s credentials (each renewal certifies its SSH
/// host keys again).
pub fn renewals(ca: &TestCa, host: &str) -> usize {
    (ca.host_ssh_certs(host).len() / HOST_KEYS).saturating_sub(1)
}

/// The `sync request since=N wait=S` lines of a daemon's debug log: (since, wait).
pub fn sync_requests(log: &str) -> Vec<(u64, u64)> {
    let field = |l: &str, name: &str| -> Option<u64> {
        let v = l.split(&format!("{name}=")).nth(1)?;
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    log.lines()
        .filter(|l| l.contains("sync request"))
        .filter_map(|l| Some((field(l, "since")?, field(l, "wait")?)))
        .collect()
}

// --- host roots ----------------------------------------------------------------------------

/// A host's private file system under a temporary directory.
pub struct HostRoot {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
}

const SAMPLE_SSHD: &str = "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\nPrintMotd no\nAcceptEnv LANG LC_*\nSubsystem sftp /usr/lib/openssh/sftp-server\n";
const SAMPLE_NSS: &str = "passwd:         files systemd\ngroup:          files systemd\nshadow:         files systemd\ngshadow:        files systemd\n\nhosts:          files dns\n";
const SAMPLE_PAM_SSHD: &str = "@include common-auth\naccount    required     pam_nologin.so\n@include common-account\nsession    required     pam_loginuid.so\n@include common-session\nsession    optional     pam_motd.so  motd=/run/motd.dynamic\n@include common-password\n";
const SAMPLE_PAM_SUDO: &str = "#%PAM-1.0\nsession    required   pam_limits.so\n@include common-auth\n@include common-account\n@include common-session-noninteractive\n";

const SAMPLE_SUDO_CONF: &str =
    "# sudo.conf\n#Plugin sudoers_policy sudoers.so\nSet disable_coredump false\n";

fn copy_or(src: &str, dst: &Path, sample: &str) {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    match std::fs::read(src) {
        Ok(b) => std::fs::write(dst, b).unwrap(),
        Err(_) => std::fs::write(dst, sample).unwrap(),
    }
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o644)).unwrap();
}

impl HostRoot {
    /// Copies of the machine's sshd_config, nsswitch.conf, pam.d/{sshd,sudo} and
    /// sudo.conf (or Debian-like samples), a placeholder pam_smith.so, fresh SSH host keys, and local accounts root, deploy
    /// (uid 1001), svc (uid 200050) and a local group `lab`.
    pub fn new() -> HostRoot {
        let tmp = tempfile::Builder::new()
            .prefix("smith-host-")
            .tempdir()
            .unwrap();
        // Let unprivileged users (sshd's principals user, `nobody` tests) traverse it.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let etc = root.join("etc");
        copy_or(
            "/etc/ssh/sshd_config",
            &etc.join("ssh/sshd_config"),
            SAMPLE_SSHD,
        );
        std::fs::create_dir_all(etc.join("ssh/sshd_config.d")).unwrap();
        copy_or("/etc/nsswitch.conf", &etc.join("nsswitch.conf"), SAMPLE_NSS);
        copy_or("/etc/pam.d/sshd", &etc.join("pam.d/sshd"), SAMPLE_PAM_SSHD);
        copy_or("/etc/pam.d/sudo", &etc.join("pam.d/sudo"), SAMPLE_PAM_SUDO);
        copy_or("/etc/sudo.conf", &etc.join("sudo.conf"), SAMPLE_SUDO_CONF);
        // The installed PAM module (a placeholder: nothing loads it here), so that
        // activate adds sudo's audit plugin to sudo.conf as on a real host.
        let module = root.join("usr/lib/x86_64-linux-gnu/security/pam_smith.so");
        std::fs::create_dir_all(module.parent().unwrap()).unwrap();
        std::fs::write(&module, b"").unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\ndeploy:x:1001:1001:Deploy:/home/deploy:/bin/bash\nsvc:x:200050:200050::/srv:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("group"),
            "root:x:0:\nnogroup:x:65534:\ndeploy:x:1001:\nlab:x:3000:deploy\n",
        )
        .unwrap();
        for t in ["ed25519", "ecdsa"] {
            let k = etc.join(format!("ssh/ssh_host_{t}_key"));
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", t, "-N", "", "-f"])
                    .arg(&k),
            );
        }
        HostRoot { tmp, root }
    }

    pub fn path(&self, logical: &str) -> PathBuf {
        self.root.join(logical.trim_start_matches('/'))
    }

    pub fn read(&self, logical: &str) -> String {
        std::fs::read_to_string(self.path(logical)).unwrap_or_else(|e| panic!("{logical}: {e}"))
    }

    /// `smith-host --root ROOT ARGS`.
    pub fn host_cmd(&self, args: &[&str]) -> Output {
        Command::new(smith_host())
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env_remove("SMITH_CA_URL")
            .env_remove("SMITH_CA_FINGERPRINT")
            .env_remove("SMITH_ENROLL_TOKEN")
            .output()
            .unwrap()
    }

    pub fn activate(&self, ca: &TestCa, token: &str, name: &str) -> Output {
        self.activate_at(&ca.url, &ca.fingerprint, token, name)
    }

    /// `activate --ca URL --token T --ca-fingerprint FP --name NAME --no-start --json`.
    pub fn activate_at(&self, url: &str, fingerprint: &str, token: &str, name: &str) -> Output {
        self.host_cmd(&[
            "activate",
            "--ca",
            url,
            "--token",
            token,
            "--ca-fingerprint",
            fingerprint,
            "--name",
            name,
            "--no-start",
            "--json",
        ])
    }

    /// Activates as `name` with a fresh token for `tags`; panics on failure.
    pub fn activate_ok(&self, ca: &TestCa, name: &str, tags: &str) -> serde_json::Value {
        let o = self.activate(ca, &ca.host_token(tags, name), name);
        assert!(
            o.status.success(),
            "activate failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The host's mTLS client certificate and key files (what it presents to the CA).
    pub fn identity_files(&self) -> (PathBuf, PathBuf) {
        (
            self.path("/etc/smith/host.crt"),
            self.path("/etc/smith/host.key"),
        )
    }

    /// Starts smith-hostd in the foreground, logging to `hostd.log` beside the root.
    pub fn start_daemon(&self) -> Daemon {
        let log = self.tmp.path().join("hostd.log");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(smith_hostd())
            .arg("--root")
            .arg(&self.root)
            .args(["--log", "stderr"])
            .env("SMITH_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        let d = Daemon { child, log };
        let sock = self.path("/run/smith/hostd.sock");
        wait_for("the daemon's socket", Duration::from_secs(20), || {
            smith_hostd::localclient::ping(&sock).ok()
        });
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.path("/run/smith/hostd.sock")
    }

    /// The cache file parsed back into contents.
    pub fn cache(&self) -> Option<smith_proto::cache::CacheContents> {
        let b = std::fs::read(self.path("/var/lib/smith/nss.cache")).ok()?;
        let v = smith_proto::cache::CacheView::parse(&b).ok()?;
        smith_hostd::view::contents_from_view(&v)
    }

    pub fn cache_users(&self) -> Vec<String> {
        self.cache()
            .map(|c| c.users.into_iter().map(|u| u.name).collect())
            .unwrap_or_default()
    }
}

pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }
    /// SIGTERM and wait; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "daemon did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// SIGKILL (no clean shutdown).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- tree snapshots ------------------------------------------------------------------------

/// Every entry under `dir`: relative path → (type, mode, bytes).
pub fn snapshot(dir: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (char, u32, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.is_dir() {
                out.insert(rel, ('d', mode, Vec::new()));
                walk(base, &p, out);
            } else if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    (
                        'l',
                        0,
                        std::fs::read_link(&p)
                            .unwrap()
                            .display()
                            .to_string()
                            .into_bytes(),
                    ),
                );
            } else if m.is_file() {
                out.insert(rel, ('f', mode, std::fs::read(&p).unwrap()));
            } else {
                out.insert(rel, ('s', mode, Vec::new()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Asserts two snapshots are equal, naming the differences.
pub fn assert_same_tree(
    a: &BTreeMap<String, (char, u32, Vec<u8>)>,
    b: &BTreeMap<String, (char, u32, Vec<u8>)>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => diffs.push(format!("{k} disappeared")),
            Some(w) if w != v => diffs.push(format!(
                "{k} differs: {:?} {:o} {:?} vs {:?} {:o} {:?}",
                v.0,
                v.1,
                String::from_utf8_lossy(&v.2)
                    .chars()
                    .take(200)
                    .collect::<String>(),
                w.0,
                w.1,
                String::from_utf8_lossy(&w.2)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            diffs.push(format!("{k} appeared"));
        }
    }
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
}

/// Runs `/usr/sbin/sshd ARGS` in a private mount namespace with a fresh `/run` (sshd
/// needs `/run/sshd`; the machine's own is never touched). `None` when sshd or root is
/// unavailable (a failure under SMITH_E2E_REQUIRED=1).
pub fn sshd_in_ns(args: &[&str]) -> Option<Output> {
    if !Path::new("/usr/sbin/sshd").exists() {
        assert!(
            !std::env::var("SMITH_E2E_REQUIRED").is_ok_and(|v| v == "1"),
            "/usr/sbin/sshd is required"
        );
        return None;
    }
    if !root_available("sshd checks") {
        return None;
    }
    Some(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd && exec /usr/sbin/sshd \"$@\"",
            )
            .arg("sh")
            .args(args)
            .output()
            .unwrap(),
    )
}
