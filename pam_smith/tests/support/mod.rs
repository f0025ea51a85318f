//! Test harness: a private mount namespace per command in which libpam finds
//! `pam_smith.so`, the test's PAM service files, `/home`, `/etc/skel`, `/etc/passwd`, a
//! cache file, hostd's socket directory and a syslog socket, all controlled from the
//! test. The machine's own `/etc`, `/usr`, `/var`, `/home` and `/dev` are never
//! modified: every change is a mount inside `unshare --mount --propagation private`
//! (plus `--pid --fork`, so nothing a test starts can outlive it).
//!
//! Sandbox `D` → inside the namespace:
//! - `D/lib/security/pam_smith.so` → `/usr/lib/x86_64-linux-gnu/security/` (read-only
//!   overlay, the real directory as lower layer);
//! - `D/etc/pam.d` (a copy of the machine's plus the test services) → `/etc/pam.d`;
//!   `D/etc/passwd` → `/etc/passwd`; `D/etc/skel` → `/etc/skel`; `D/home` → `/home`;
//! - `D/state` → `/var/lib/smith` (`/var/lib` gets an overlay whose upper layer is a
//!   namespace-private tmpfs); `D/run` → `/run/smith` (`/run` a fresh tmpfs);
//! - `/dev` a fresh tmpfs with `null`, `zero`, `urandom`, `random`, `tty` and `pts`
//!   bound from the real one, and `D/log.sock` (a datagram socket the test reads) bound
//!   at `/dev/log`, so what the module sends to syslog can be asserted.

#![allow(dead_code)]

use smith_proto::cache::{build, CacheContents, CacheView, STALE_OFFSET};
use smith_proto::event::HostEvent;
use smith_proto::wire::{read_frame, write_frame, Request, Response};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const LIBDIR: &str = "/usr/lib/x86_64-linux-gnu";

/// Whether the namespace tests can run; a failure (panic) instead of a skip when
/// `SMITH_E2E_REQUIRED=1`.
pub fn ready() -> bool {
    let required = std::env::var("SMITH_E2E_REQUIRED").as_deref() == Ok("1");
    let mut missing = Vec::new();
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_string());
    }
    for t in [
        "/usr/bin/unshare",
        "/usr/bin/pamtester",
        "/usr/bin/ssh-keygen",
    ] {
        if !Path::new(t).exists() {
            missing.push(t.to_string());
        }
    }
    for m in ["pam_exec.so", "pam_permit.so"] {
        if !Path::new(LIBDIR).join("security").join(m).exists() {
            missing.push(m.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "namespace test prerequisites missing: {}",
        missing.join(", ")
    );
    if required {
        panic!("{msg} (SMITH_E2E_REQUIRED=1)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// The built module (`libpam_smith.so` next to the test binary's deps directory).
pub fn built_module(file: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    for cand in [deps.join(file), deps.join("..").join(file)] {
        if cand.exists() {
            return cand;
        }
    }
    panic!(
        "{file} not found next to {}: build the crate first",
        deps.display()
    );
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Sandbox {
    pub dir: PathBuf,
    pub syslog: Syslog,
    /// Also a private network namespace (loopback up), for sshd.
    net: bool,
    extra_setup: String,
}

/// Builds nss_smith (a no-op when it is up to date) and returns `libnss_smith.so`. The
/// tests that run real sshd/sudo need both modules; cargo only builds this package's
/// own dependencies, so without this the NSS module could be missing or stale.
pub fn nss_module() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("target dir");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "--quiet", "-p", "nss_smith", "--lib"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        c.arg("--release");
    }
    let o = c.output().expect("run cargo");
    assert!(
        o.status.success(),
        "cargo build -p nss_smith: {}",
        describe(&o)
    );
    let so = profile_dir.join("libnss_smith.so");
    assert!(so.exists(), "{} missing after the build", so.display());
    so
}

impl Sandbox {
    pub fn new(label: &str) -> Sandbox {
        let base = std::env::var_os("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!(
            "{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for d in [
            "lib/security",
            "etc/skel/.config",
            "home",
            "state",
            "run",
            "scratch",
        ] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        for d in ["state", "run", "home"] {
            std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::copy(
            built_module("libpam_smith.so"),
            dir.join("lib/security/pam_smith.so"),
        )
        .unwrap();
        let st = Command::new("cp")
            .args(["-a", "/etc/pam.d"])
            .arg(dir.join("etc/pam.d"))
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::copy("/etc/passwd", dir.join("etc/passwd")).unwrap();
        std::fs::write(dir.join("etc/skel/.bashrc"), "# skel bashrc\n").unwrap();
        std::fs::write(dir.join("etc/skel/.config/app.conf"), "x=1\n").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.join("etc/skel/shadow-link")).unwrap();
        // pam_exec target: records which users fell through pam_smith (PAM_IGNORE).
        let fell = dir.join("fell.sh");
        std::fs::write(
            &fell,
            format!(
                "#!/bin/sh\necho \"$PAM_USER $PAM_TYPE\" >> {}\n",
                dir.join("fellthrough").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fell, std::fs::Permissions::from_mode(0o755)).unwrap();
        let syslog = Syslog::start(&dir.join("log.sock"));
        Sandbox {
            dir,
            syslog,
            net: false,
            extra_setup: String::new(),
        }
    }

    /// Runs commands in a private network namespace too (loopback only).
    pub fn with_net(mut self) -> Sandbox {
        self.net = true;
        self
    }

    /// Makes glibc see Smith users: `libnss_smith.so.2` in the lib overlay and
    /// `passwd: files smith` / `group: files smith`.
    pub fn with_nss(mut self) -> Sandbox {
        std::fs::copy(nss_module(), self.path("lib/libnss_smith.so.2")).unwrap();
        std::fs::write(
            self.path("etc/nsswitch.conf"),
            "passwd: files smith\ngroup: files smith\nshadow: files\nhosts: files\n",
        )
        .unwrap();
        self.add_setup(&format!(
            "mount --bind {} /etc/nsswitch.conf",
            self.path("etc/nsswitch.conf").display()
        ));
        self
    }

    /// Extra setup lines run in the namespace before each command.
    pub fn add_setup(&mut self, script: &str) {
        self.extra_setup.push_str(script);
        self.extra_setup.push('\n');
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn append(&self, rel: &str, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path(rel))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Writes a PAM service file `/etc/pam.d/<name>`.
    pub fn service(&self, name: &str, text: &str) {
        std::fs::write(self.path(&format!("etc/pam.d/{name}")), text).unwrap();
    }

    /// The pam_exec line that records a fall-through.
    pub fn fell_line(&self, kind: &str) -> String {
        format!(
            "{kind} required pam_exec.so quiet {}\n",
            self.path("fell.sh").display()
        )
    }

    pub fn fellthrough(&self) -> String {
        std::fs::read_to_string(self.path("fellthrough")).unwrap_or_default()
    }

    fn setup_script(&self) -> String {
        let d = self.dir.display();
        format!(
            "mount -t tmpfs -o mode=0700 tmpfs {d}/scratch
mkdir {d}/scratch/u {d}/scratch/w {d}/scratch/dev
mount -t overlay overlay -o lowerdir={d}/lib:{LIBDIR} {LIBDIR}
mount --bind {d}/etc/pam.d /etc/pam.d
mount --bind {d}/etc/passwd /etc/passwd
mount --bind {d}/etc/skel /etc/skel
mount --bind {d}/home /home
mount -t overlay overlay -o lowerdir=/var/lib,upperdir={d}/scratch/u,workdir={d}/scratch/w /var/lib
mkdir -p /var/lib/smith
mount --bind {d}/state /var/lib/smith
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/smith
mount --bind {d}/run /run/smith
mount --rbind /dev {d}/scratch/dev
mount -t tmpfs -o mode=0755 tmpfs /dev
for n in null zero full random urandom tty; do touch /dev/$n; mount --bind {d}/scratch/dev/$n /dev/$n; done
mkdir /dev/pts; mount --rbind {d}/scratch/dev/pts /dev/pts
ln -s /proc/self/fd /dev/fd
touch /dev/log; mount --bind {d}/log.sock /dev/log
{net}
{extra}
",
            net = if self.net { "ip link set lo up" } else { "" },
            extra = self.extra_setup,
        )
    }

    /// Runs `script` (sh) inside a fresh namespace.
    pub fn run(&self, script: &str) -> Output {
        let mut c = Command::new("timeout");
        // --pid --fork: the shell is the namespace's first process, so when it ends (or
        // `timeout` kills it) the kernel kills everything it started (sshd included).
        c.args([
            "-s",
            "KILL",
            "60",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
        ]);
        if self.net {
            c.arg("--net");
        }
        c.arg("--")
            .arg("/bin/sh")
            .arg("-ec")
            .arg(format!("{}\n{script}", self.setup_script()))
            .stdin(Stdio::null());
        c.output().expect("spawn unshare")
    }

    /// `pamtester` with `args` (each passed as one argument, quoted for sh).
    pub fn pamtester(&self, args: &[&str]) -> Output {
        let quoted: Vec<String> = args
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        self.run(&format!("exec pamtester {}", quoted.join(" ")))
    }

    pub fn cache_path(&self) -> PathBuf {
        self.path("state/nss.cache")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.path("run/hostd.sock")
    }

    pub fn pending_dir(&self) -> PathBuf {
        self.path("state/pending")
    }

    /// Pending events, oldest first.
    pub fn pending_events(&self) -> Vec<HostEvent> {
        let Ok(rd) = std::fs::read_dir(self.pending_dir()) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "evt"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| smith_proto::wire::decode_event(&std::fs::read(f).unwrap()).unwrap())
            .collect()
    }

    pub fn clear_pending(&self) {
        let _ = std::fs::remove_dir_all(self.pending_dir());
    }

    /// Writes the cache as hostd does (new file, rename over, old flagged stale).
    pub fn write_cache(&self, c: &CacheContents) {
        let path = self.cache_path();
        let old = std::fs::OpenOptions::new().write(true).open(&path).ok();
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, build(c).expect("valid contents")).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        if let Some(old) = old {
            std::os::unix::fs::FileExt::write_at(&old, &1u32.to_le_bytes(), STALE_OFFSET as u64)
                .unwrap();
        }
    }

    /// Writes `user`'s principals file as hostd does (`/var/lib/smith/principals/USER`).
    pub fn write_principals(&self, user: &str, lines: &[&str]) {
        let dir = self.path("state/principals");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(user), format!("# hostd\n{}\n", lines.join("\n"))).unwrap();
    }

    pub fn remove_cache(&self) {
        let _ = std::fs::remove_file(self.cache_path());
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::env::var_os("SMITH_KEEP_SANDBOX").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn describe(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A syslog receiver: the datagram socket glibc's `syslog()` writes to at `/dev/log`.
pub struct Syslog {
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Syslog {
    fn start(path: &Path) -> Syslog {
        let sock = UnixDatagram::bind(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l2, s2) = (lines.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while !s2.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    l2.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        Syslog { lines, stop }
    }

    /// Everything received so far (waits briefly for in-flight datagrams).
    pub fn lines(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(150));
        self.lines.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.lines.lock().unwrap().clear();
    }

    /// The lines from pam_smith containing `needle`.
    pub fn find(&self, needle: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.contains("pam_smith") && l.contains(needle))
            .collect()
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A stand-in for hostd's socket server: records events (Ack), answers lookups from
/// the cache format.
pub struct FakeHostd {
    pub requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    path: PathBuf,
}

impl FakeHostd {
    pub fn start(path: &Path, contents: &CacheContents) -> FakeHostd {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let bytes = Arc::new(build(contents).unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r2, s2) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let v = CacheView::parse(&bytes).unwrap();
                        while let Ok(frame) = read_frame(&mut s) {
                            let Ok(req) = Request::decode(&frame) else {
                                break;
                            };
                            r2.lock().unwrap().push(req.clone());
                            let resp = match req {
                                Request::Event { .. } => {
                                    seq += 1;
                                    Response::Ack(seq)
                                }
                                Request::Ping => Response::Pong {
                                    snapshot_version: v.snapshot_version(),
                                    users: v.n_users(),
                                    last_sync_unix: 0,
                                },
                                _ => Response::User(None),
                            };
                            if write_frame(&mut s, &resp.encode()).is_err() {
                                break;
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeHostd {
            requests,
            stop,
            path: path.to_path_buf(),
        }
    }

    pub fn events(&self) -> Vec<HostEvent> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| match r {
                Request::Event { event, .. } => Some(event.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Drop for FakeHostd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
    }
}
