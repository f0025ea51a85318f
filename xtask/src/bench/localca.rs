//! A release `smith-ca` on loopback for the issuance and simulated-propagation parts:
//! `smith-ca init` into a fresh data directory, `smith-ca serve --listen 127.0.0.1:0`,
//! and a clean stop (SIGTERM, so the writer flushes) when dropped.
//!
//! Must never: listen anywhere but loopback, or reuse a data directory (every run starts
//! from an empty CA so that figures are comparable).

use super::util::{progress, register_pid, unregister_pid};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct LocalCa {
    pub data_dir: PathBuf,
    pub url: String,
    pub fingerprint: String,
    pub admin_token: String,
    child: Child,
}

impl LocalCa {
    /// Initializes and starts a CA from `bin_dir` in `dir/ca`, logging to `dir/ca.log`.
    pub fn start(bin_dir: &Path, dir: &Path) -> Result<LocalCa> {
        LocalCa::start_with(bin_dir, dir, &[], &[])
    }

    /// [`LocalCa::start`] with more `smith-ca init` arguments and `env` added to the
    /// environment of `init` and `serve` (e.g. CA keys in a SoftHSM2 token).
    pub fn start_with(
        bin_dir: &Path,
        dir: &Path,
        init_args: &[&str],
        env: &[(&str, &Path)],
    ) -> Result<LocalCa> {
        std::fs::create_dir_all(dir)?;
        let data_dir = dir.join("ca");
        let _ = std::fs::remove_dir_all(&data_dir);
        let ca_bin = bin_dir.join("smith-ca");
        let out = Command::new(&ca_bin)
            .args(["init", "--data-dir"])
            .arg(&data_dir)
            .args(["--san", "127.0.0.1", "--json"])
            .args(init_args)
            .envs(env.iter().copied())
            .output()
            .with_context(|| format!("running {} init", ca_bin.display()))?;
        if !out.status.success() {
            bail!(
                "smith-ca init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("smith-ca init --json printed no JSON")?;
        let fingerprint = v["root_fingerprint"]
            .as_str()
            .context("no root_fingerprint")?
            .to_string();
        let admin_token = v["admin_token"]
            .as_str()
            .context("no admin_token")?
            .to_string();
        LocalCa::serve(bin_dir, dir, data_dir, fingerprint, admin_token, env)
    }

    /// A replica: `smith-ca serve` over a copy of this CA's data directory in `dir/ca`
    /// (on a PostgreSQL database, it serves the same CA).
    pub fn replica(&self, bin_dir: &Path, dir: &Path) -> Result<LocalCa> {
        std::fs::create_dir_all(dir)?;
        let data_dir = dir.join("ca");
        let _ = std::fs::remove_dir_all(&data_dir);
        let st = Command::new("cp")
            .arg("-a")
            .arg(&self.data_dir)
            .arg(&data_dir)
            .status()?;
        if !st.success() {
            bail!("copying {}", self.data_dir.display());
        }
        let _ = std::fs::remove_file(data_dir.join("ca.lock"));
        LocalCa::serve(
            bin_dir,
            dir,
            data_dir,
            self.fingerprint.clone(),
            self.admin_token.clone(),
            &[],
        )
    }

    fn serve(
        bin_dir: &Path,
        dir: &Path,
        data_dir: PathBuf,
        fingerprint: String,
        admin_token: String,
        env: &[(&str, &Path)],
    ) -> Result<LocalCa> {
        let ca_bin = bin_dir.join("smith-ca");
        let log = std::fs::File::create(dir.join("ca.log"))?;
        let mut child = Command::new(&ca_bin)
            .args(["serve", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen", "127.0.0.1:0"])
            // The bench issues thousands of certificates per user.
            .args(["--issuance-rate", "off"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting smith-ca serve")?;
        register_pid(child.id());
        let stdout = child.stdout.take().context("smith-ca stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut log2 = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("ca.log"))?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("smith-ca listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
                let _ = writeln!(log2, "{line}");
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                bail!(
                    "smith-ca serve did not say where it listens within 30 s; see {}",
                    dir.join("ca.log").display()
                );
            }
        };
        progress(format!(
            "CA (release) listening on {addr}, pid {}",
            child.id()
        ));
        Ok(LocalCa {
            data_dir,
            url: format!("https://{addr}"),
            fingerprint,
            admin_token,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn db(&self) -> PathBuf {
        self.data_dir.join("ca.db")
    }
}

impl Drop for LocalCa {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..150 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                unregister_pid(self.child.id());
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        unregister_pid(self.child.id());
    }
}

/// Rows in one table of the CA's SQLite (read-only connection; the CA keeps running).
pub fn count_rows(db: &Path, table: &str) -> Result<u64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {} read-only", db.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let n: i64 = conn
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .with_context(|| format!("counting rows of {table}"))?;
    Ok(n as u64)
}
