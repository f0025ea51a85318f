//! A real PostgreSQL server for tests: Debian's `postgresql` binaries, a cluster made by
//! `initdb` in `$TMPDIR/smith-pg/pg-PID` (as the `postgres` user, since the server refuses
//! root), listening only on its own Unix socket (no TCP, no system service).
//!
//! The server dies with the test process (`PR_SET_PDEATHSIG` on a thread that never
//! ends), and each caller gets a database of its own ([`PgServer::create_database`]).
//!
//! Must never: touch the machine's own clusters, or listen on a network address.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct PgServer {
    /// The cluster's directory (data and socket).
    pub dir: PathBuf,
    /// The directory of the server's socket.
    pub socket_dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    uid: u32,
    gid: u32,
    child: Mutex<Option<Child>>,
    next_db: AtomicU32,
}

/// The directory of the newest installed server's binaries.
pub fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists() && p.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == "postgres")
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

static SHARED: OnceLock<Option<&'static PgServer>> = OnceLock::new();

/// The test process's server, started on first use; `None` (a skip, printed) when
/// PostgreSQL is not installed, unless `SMITH_E2E_REQUIRED=1` (then a panic).
pub fn shared(what: &str) -> Option<&'static PgServer> {
    let s = *SHARED.get_or_init(|| {
        // Started from a thread that never ends: the server's parent-death signal
        // follows the thread that forked it, and test threads end.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = PgServer::start().map(|s| &*Box::leak(Box::new(s)));
            let _ = tx.send(r);
            loop {
                std::thread::park();
            }
        });
        match rx.recv() {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                eprintln!("cannot start PostgreSQL: {e:#}");
                None
            }
            Err(_) => None,
        }
    });
    if s.is_none() {
        if std::env::var("SMITH_E2E_REQUIRED").as_deref() == Ok("1") {
            panic!("{what}: SMITH_E2E_REQUIRED=1 but PostgreSQL cannot start (install postgresql)");
        }
        eprintln!("SKIP {what}: PostgreSQL is not available");
    }
    s
}

impl PgServer {
    /// Makes a cluster and starts its server (see the module doc).
    pub fn start() -> anyhow::Result<PgServer> {
        use anyhow::Context;
        let bin = bin_dir().context("no PostgreSQL server under /usr/lib/postgresql")?;
        let (uid, gid) = postgres_ids().context("no postgres user")?;
        // Under the system's temporary directory: the postgres user reaches it without
        // any permission of the machine's own changing, and the socket's path stays
        // short (a Unix socket path has at most 107 bytes).
        let base = std::env::temp_dir().join("smith-pg");
        std::fs::create_dir_all(&base)?;
        // Clusters of test processes that are gone (their servers died with them).
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let Some(pid) = name.strip_prefix("pg-").and_then(|p| p.parse::<u32>().ok()) else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(format!("pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let socket_dir = dir.join("run");
        std::fs::create_dir_all(&socket_dir)?;
        for d in [&dir, &socket_dir] {
            std::os::unix::fs::chown(d, Some(uid), Some(gid))?;
        }
        let data = dir.join("data");
        let out = Command::new(bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .uid(uid)
            .gid(gid)
            .current_dir(&dir)
            .output()
            .context("running initdb")?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = 20000 + (std::process::id() % 20000) as u16;
        let server = PgServer {
            dir,
            socket_dir,
            port,
            bin,
            uid,
            gid,
            child: Mutex::new(None),
            next_db: AtomicU32::new(0),
        };
        server.run()?;
        Ok(server)
    }

    /// Starts the server process (again, after [`PgServer::kill`]), and waits until it
    /// answers.
    pub fn run(&self) -> anyhow::Result<()> {
        use anyhow::Context;
        let log = std::fs::File::create(self.dir.join("server.log"))?;
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-c", "listen_addresses=", "-c"])
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir.display()
            ))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "max_connections=300", "-c", "fsync=on"])
            .uid(self.uid)
            .gid(self.gid)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches only this (child) process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting postgres")?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h"])
                .arg(&self.socket_dir)
                .args(["-p", &self.port.to_string(), "-U", "postgres", "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The postmaster's pid while the server runs (its backends are its children).
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.id())
    }

    /// Stops the server at once, as `pg_ctl stop -m immediate` does (SIGQUIT: no
    /// checkpoint, crash recovery at the next start).
    pub fn stop_immediate(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // SAFETY: signalling our own child, whose pid we hold.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGQUIT);
            }
            let _ = c.wait();
        }
    }

    /// The URL of database `db` as role `user`.
    pub fn url(&self, db: &str, user: &str) -> String {
        let sock: String = self
            .socket_dir
            .display()
            .to_string()
            .replace('%', "%25")
            .replace('/', "%2F");
        format!("postgresql://{user}@{sock}:{}/{db}", self.port)
    }

    /// A new empty database; returns its URL as the superuser.
    pub fn create_database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let db = format!("smith_{}_{n}", std::process::id());
        let out = self.psql("postgres", &format!("CREATE DATABASE {db}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&db, "postgres")
    }

    /// Runs `sql` with psql on database `db` as the superuser.
    pub fn psql(&self, db: &str, sql: &str) -> std::process::Output {
        self.psql_as(db, "postgres", sql)
    }

    /// Runs `sql` with psql on database `db` as `user`.
    pub fn psql_as(&self, db: &str, user: &str, sql: &str) -> std::process::Output {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                db,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("psql")
    }

    /// The database name of a URL made by [`PgServer::url`].
    pub fn db_of(url: &str) -> String {
        url.rsplit('/').next().unwrap_or_default().to_string()
    }
}
