//! Running commands with a deadline and readable failures.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Default deadline for one command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cmd` to completion (stdin closed), killing it after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let desc = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {desc}"))?;
    // Drain pipes in threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let so = t_out.join().unwrap_or_default();
            let se = t_err.join().unwrap_or_default();
            bail!(
                "{desc} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&so),
                String::from_utf8_lossy(&se)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    if s.len() > 300 {
        s.truncate(300);
        s.push('…');
    }
    s
}

/// The outcome of a command, with helpers for assertions.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub desc: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn from_output(desc: String, o: Output) -> Outcome {
        Outcome {
            desc,
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    /// Fails with the whole story unless the command succeeded.
    pub fn ok(self) -> Result<Outcome> {
        if !self.success() {
            bail!("{self}");
        }
        Ok(self)
    }
    /// Fails unless the command failed.
    pub fn failed(self) -> Result<Outcome> {
        if self.success() {
            bail!("expected failure, but it succeeded: {self}");
        }
        Ok(self)
    }
    pub fn out(&self) -> &str {
        self.stdout.trim()
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.desc, self.code, self.stdout, self.stderr
        )
    }
}

/// Runs and wraps the output.
pub fn outcome(cmd: Command, timeout: Duration) -> Result<Outcome> {
    let desc = describe(&cmd);
    let o = run_with_timeout(cmd, timeout)?;
    Ok(Outcome::from_output(desc, o))
}

/// A background process killed (and reaped) on drop.
pub struct Background {
    pub name: String,
    pub child: Child,
}

impl Background {
    pub fn spawn(name: &str, mut cmd: Command, log: &std::path::Path) -> Result<Background> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log {}", log.display()))?;
        let f2 = f.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(f).stderr(f2);
        // Its own process group: killing it kills what it started too (`nsenter -p`
        // forks the program into the host's PID namespace).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", describe(&cmd)))?;
        Ok(Background {
            name: name.to_string(),
            child,
        })
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    pub fn kill(&mut self) {
        if self.is_running() {
            // SAFETY: kill(2) on the process group this child leads (process_group(0)
            // at spawn); no memory is passed.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` until it returns `Ok(Some(v))` or the deadline passes.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Runs `cargo xtask ARGS` in the workspace (never with the caller's
/// `SMITH_SIGNING_KEY`: a test signs only with the throwaway key it names).
pub fn xtask(args: &[&str], timeout: Duration) -> Result<Outcome> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(workspace())
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(args)
        .env_remove("SMITH_SIGNING_KEY")
        .env("RUST_BACKTRACE", "0");
    outcome(c, timeout)
}
