//! Test harness: a private mount namespace in which glibc sees `libnss_smith.so.2`, an
//! `nsswitch.conf` with `passwd: files smith`, a test `/etc/passwd`, a cache file and a
//! socket directory that the test controls from outside. The machine's own `/etc`,
//! `/usr` and `/var` are never modified: every change is a mount inside a namespace
//! created with `unshare --mount --propagation private` for one command.
//!
//! Layout of a sandbox directory `D` and what it becomes inside the namespace:
//! - `D/lib/libnss_smith.so.2` → `/usr/lib/x86_64-linux-gnu/` (read-only overlay with
//!   the real directory as the lower layer);
//! - `D/etc/{nsswitch.conf,passwd,group}` → bind-mounted over `/etc/...`;
//! - `D/state` → `/var/lib/smith` (`/var/lib` gets a writable overlay whose upper layer
//!   is a namespace-private tmpfs, so the mount point can be created);
//! - `D/run` → `/run/smith` (`/run` is a fresh tmpfs).
//!
//! The test writes `D/state/nss.cache` and listens on `D/run/hostd.sock` from outside.

#![allow(dead_code)]

use smith_proto::cache::{build, CacheContents, CacheView, STALE_OFFSET};
use smith_proto::wire::{read_frame, write_frame, Request, Response, WireGroup, WireUser};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const LIBDIR: &str = "/usr/lib/x86_64-linux-gnu";

/// Whether the namespace tests can run; a failure (panic) instead of a skip when
/// `SMITH_E2E_REQUIRED=1`.
pub fn ready(extra_tools: &[&str]) -> bool {
    let required = std::env::var("SMITH_E2E_REQUIRED").as_deref() == Ok("1");
    let mut missing = Vec::new();
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_string());
    }
    for t in ["/usr/bin/unshare", "/usr/bin/getent", "/usr/bin/id"]
        .iter()
        .chain(extra_tools)
    {
        if !Path::new(t).exists() {
            missing.push(t.to_string());
        }
    }
    if !Path::new(LIBDIR).is_dir() {
        missing.push(LIBDIR.to_string());
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

/// The built cdylib (`libnss_smith.so` next to the test binary's deps directory).
pub fn built_module(file: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    for cand in [deps.join(file), deps.join("..").join(file)] {
        if cand.exists() {
            return cand;
        }
    }
    panic!(
        "{file} not found next to {}: build the crate first (cargo build -p ...)",
        deps.display()
    );
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Sandbox {
    pub dir: PathBuf,
    extra_setup: String,
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
        for d in ["lib/security", "etc", "state", "run", "scratch"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        // The state and socket dirs are mount points for /var/lib/smith and /run/smith.
        for d in ["state", "run"] {
            std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::copy(
            built_module("libnss_smith.so"),
            dir.join("lib/libnss_smith.so.2"),
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/nsswitch.conf"),
            "passwd: files smith\ngroup: files smith\nshadow: files\nhosts: files\n",
        )
        .unwrap();
        std::fs::copy("/etc/passwd", dir.join("etc/passwd")).unwrap();
        std::fs::copy("/etc/group", dir.join("etc/group")).unwrap();
        Sandbox {
            dir,
            extra_setup: String::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Extra mounts/commands run (as part of the namespace setup) before each command.
    pub fn add_setup(&mut self, script: &str) {
        self.extra_setup.push_str(script);
        self.extra_setup.push('\n');
    }

    pub fn append(&self, rel: &str, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path(rel))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn setup_script(&self) -> String {
        let d = self.dir.display();
        format!(
            "mount -t tmpfs -o mode=0700 tmpfs {d}/scratch
mkdir {d}/scratch/u {d}/scratch/w
mount -t overlay overlay -o lowerdir={d}/lib:{LIBDIR} {LIBDIR}
mount --bind {d}/etc/nsswitch.conf /etc/nsswitch.conf
mount --bind {d}/etc/passwd /etc/passwd
mount --bind {d}/etc/group /etc/group
mount -t overlay overlay -o lowerdir=/var/lib,upperdir={d}/scratch/u,workdir={d}/scratch/w /var/lib
mkdir -p /var/lib/smith
mount --bind {d}/state /var/lib/smith
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/smith
mount --bind {d}/run /run/smith
{}
",
            self.extra_setup
        )
    }

    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("timeout");
        c.args([
            "-s",
            "KILL",
            "120",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
        ])
        .arg("/bin/sh")
        .arg("-ec")
        .arg(format!("{}\n{script}", self.setup_script()))
        .env_remove("SMITH_NSS_BYPASS");
        c
    }

    /// Runs `script` (sh) inside a fresh namespace; returns its output.
    pub fn run(&self, script: &str) -> Output {
        self.command(script)
            .stdin(Stdio::null())
            .output()
            .expect("spawn unshare")
    }

    pub fn run_env(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let mut c = self.command(script);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::null()).output().expect("spawn unshare")
    }

    /// Starts `script` in a namespace without waiting.
    pub fn spawn(&self, script: &str) -> std::process::Child {
        self.command(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn unshare")
    }

    pub fn cache_path(&self) -> PathBuf {
        self.path("state/nss.cache")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.path("run/hostd.sock")
    }

    /// Writes the cache the way hostd does: new file, fsync, rename over, then flag the
    /// old file stale.
    pub fn write_cache(&self, c: &CacheContents) {
        self.write_cache_bytes(&build(c).expect("valid cache contents"));
    }

    pub fn write_cache_bytes(&self, bytes: &[u8]) {
        let path = self.cache_path();
        let old = std::fs::OpenOptions::new().write(true).open(&path).ok();
        let tmp = path.with_extension("new");
        {
            let mut f = std::fs::File::create(&tmp).unwrap();
            f.write_all(bytes).unwrap();
            f.sync_all().unwrap();
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        if let Some(old) = old {
            std::os::unix::fs::FileExt::write_at(&old, &1u32.to_le_bytes(), STALE_OFFSET as u64)
                .unwrap();
        }
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

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn describe(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// How the fake daemon behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers from its contents.
    Answer,
    /// Accepts connections and never answers.
    Silent,
}

/// A stand-in for hostd's socket server, answering lookups from `CacheContents` (via the
/// same cache format, so answers match what the file would say) and recording events.
pub struct FakeHostd {
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    path: PathBuf,
}

impl FakeHostd {
    pub fn start(path: &Path, contents: &CacheContents, behaviour: Behaviour) -> FakeHostd {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let bytes = Arc::new(build(contents).unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c2, r2, s2) = (connections.clone(), requests.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let mut seq = 0u64;
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        c2.fetch_add(1, Ordering::SeqCst);
                        if behaviour == Behaviour::Silent {
                            held.push(s);
                            continue;
                        }
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let (bytes, r2) = (bytes.clone(), r2.clone());
                        seq += 1000;
                        let base = seq;
                        std::thread::spawn(move || serve(s, &bytes, &r2, base));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeHostd {
            connections,
            requests,
            stop,
            path: path.to_path_buf(),
        }
    }

    pub fn events(&self) -> Vec<smith_proto::event::HostEvent> {
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

fn serve(
    mut s: std::os::unix::net::UnixStream,
    bytes: &[u8],
    log: &Mutex<Vec<Request>>,
    mut seq: u64,
) {
    let v = CacheView::parse(bytes).unwrap();
    let wire_user = |u: smith_proto::cache::UserEntry<'_>| WireUser {
        name: String::from_utf8_lossy(u.name).into(),
        uid: u.uid,
        gid: u.gid,
        gecos: String::from_utf8_lossy(u.gecos).into(),
        dir: String::from_utf8_lossy(u.dir).into(),
        shell: String::from_utf8_lossy(u.shell).into(),
        level: u.level.map(|l| l as u8).unwrap_or(0),
    };
    let wire_group = |g: smith_proto::cache::GroupEntry<'_>| WireGroup {
        name: String::from_utf8_lossy(g.name).into(),
        gid: g.gid,
        members: g
            .members
            .iter()
            .map(|m| String::from_utf8_lossy(m.unwrap()).into())
            .collect(),
    };
    while let Ok(frame) = read_frame(&mut s) {
        let Ok(req) = Request::decode(&frame) else {
            return;
        };
        log.lock().unwrap().push(req.clone());
        let resp = match req {
            Request::Ping => Response::Pong {
                snapshot_version: v.snapshot_version(),
                users: v.n_users(),
                last_sync_unix: 0,
            },
            Request::UserByName(n) => {
                Response::User(v.user_by_name(n.as_bytes()).unwrap().map(wire_user))
            }
            Request::UserByUid(u) => Response::User(v.user_by_uid(u).unwrap().map(wire_user)),
            Request::GroupByName(n) => {
                Response::Group(v.group_by_name(n.as_bytes()).unwrap().map(wire_group))
            }
            Request::GroupByGid(g) => Response::Group(v.group_by_gid(g).unwrap().map(wire_group)),
            Request::GroupsOfUser(n) => Response::Gids(
                v.user_by_name(n.as_bytes())
                    .unwrap()
                    .map(|u| u.gids.iter().collect()),
            ),
            Request::GidsOf(n) => {
                let gids = v
                    .user_by_name(n.as_bytes())
                    .unwrap()
                    .map(|u| u.gids.iter().collect());
                Response::GidsOf { user: n, gids }
            }
            Request::Event { .. } => {
                seq += 1;
                Response::Ack(seq)
            }
        };
        if write_frame(&mut s, &resp.encode()).is_err() {
            return;
        }
    }
}
