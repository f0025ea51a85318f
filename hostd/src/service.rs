//! Talking to the host's services: reloading sshd, starting and stopping smith-hostd,
//! signalling the daemon (`smith-host sync`).
//!
//! Owns: the choice between systemd (`systemctl`, only when systemd runs and paths are
//! not relocated) and pid files (`/run/sshd.pid`, `/run/smith/hostd.pid`, checked
//! against `/proc/PID/comm` so a recycled pid is never signalled). Must never: signal
//! a process that is not the expected program, or touch the machine's own services
//! when paths are relocated (`--root`).

use crate::paths::HostPaths;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether to use systemctl: systemd is PID 1 and we manage the real root.
pub fn use_systemd(paths: &HostPaths) -> bool {
    !paths.is_relocated() && Path::new("/run/systemd/system").is_dir()
}

/// The pid in a pid file, if the file exists and holds one.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 1)
}

/// `/proc/PID/comm`.
pub fn process_name(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether `pid` runs (and is not a zombie) and is named `comm`.
pub fn is_alive(pid: i32, comm: &str) -> bool {
    if process_name(pid).as_deref() != Some(comm) {
        return false;
    }
    // /proc/PID/stat: "pid (comm) STATE ..."; Z = exited, not yet reaped.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// The pid from `pid_file` if that process runs and is named `comm`.
pub fn running_pid(pid_file: &Path, comm: &str) -> Option<i32> {
    let pid = read_pid(pid_file)?;
    is_alive(pid, comm).then_some(pid)
}

/// Sends `sig` to the process in `pid_file` if it is `comm`.
pub fn signal_pid_file(pid_file: &Path, comm: &str, sig: Signal) -> Result<i32, String> {
    let pid = running_pid(pid_file, comm)
        .ok_or_else(|| format!("no running {comm} found through {}", pid_file.display()))?;
    kill(Pid::from_raw(pid), sig).map_err(|e| format!("cannot signal {comm} (pid {pid}): {e}"))?;
    Ok(pid)
}

/// A binary installed next to the running one (`smith-hostd` beside `smith-host`),
/// else the bare name (found through `PATH`).
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The exact command that runs the daemon in the foreground for these paths.
pub fn hostd_command(paths: &HostPaths) -> String {
    let mut cmd = sibling_binary("smith-hostd").display().to_string();
    if paths.is_relocated() {
        cmd.push_str(&format!(" --root {}", paths.root.display()));
    }
    cmd
}

fn systemctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Reloads sshd so it reads the drop-in: `systemctl reload ssh|sshd` under systemd,
/// else SIGHUP to the pid in the sshd pid file. Returns what was done.
pub fn reload_sshd(paths: &HostPaths) -> Result<String, String> {
    if use_systemd(paths) {
        check_sshd_config()?;
        for unit in ["ssh", "sshd"] {
            if systemctl(&["reload", unit]).is_ok() {
                return Ok(format!("reloaded sshd (systemctl reload {unit})"));
            }
        }
        return Err("systemctl reload ssh/sshd failed; reload sshd by hand".into());
    }
    let pid = running_pid(&paths.sshd_pid_file, "sshd").ok_or_else(|| {
        format!(
            "no running sshd found through {}",
            paths.sshd_pid_file.display()
        )
    })?;
    if !paths.is_relocated() {
        check_sshd_config()?;
    }
    kill(Pid::from_raw(pid), Signal::SIGHUP)
        .map_err(|e| format!("cannot signal sshd (pid {pid}): {e}"))?;
    Ok(format!("reloaded sshd (SIGHUP to pid {pid})"))
}

/// `sshd -t`: never reload an sshd into a configuration it rejects (that would lock
/// everyone out at its next restart).
fn check_sshd_config() -> Result<(), String> {
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.exists() {
        return Ok(());
    }
    let out = Command::new(sshd)
        .arg("-t")
        .output()
        .map_err(|e| format!("cannot run sshd -t: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "sshd -t rejects the configuration, so sshd was not reloaded: {}\nfix it, or undo Smith's changes with `smith-host deactivate`",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Starts the daemon under systemd (`systemctl enable --now smith-hostd`).
pub fn start_daemon(paths: &HostPaths) -> Result<String, String> {
    if !use_systemd(paths) {
        return Err(format!(
            "systemd is not running here; start the daemon yourself: {}",
            hostd_command(paths)
        ));
    }
    systemctl(&["enable", "--now", "smith-hostd"])?;
    Ok("started smith-hostd (systemctl enable --now smith-hostd)".into())
}

/// Stops the daemon: systemd, else SIGTERM through its pid file and wait (5 s).
pub fn stop_daemon(paths: &HostPaths) -> Result<Option<String>, String> {
    if use_systemd(paths) {
        systemctl(&["disable", "--now", "smith-hostd"])?;
        return Ok(Some(
            "stopped smith-hostd (systemctl disable --now smith-hostd)".into(),
        ));
    }
    let Some(pid) = running_pid(&paths.pid_file, "smith-hostd") else {
        return Ok(None);
    };
    kill(Pid::from_raw(pid), Signal::SIGTERM)
        .map_err(|e| format!("cannot stop smith-hostd (pid {pid}): {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !is_alive(pid, "smith-hostd") {
            return Ok(Some(format!("stopped smith-hostd (pid {pid})")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "smith-hostd (pid {pid}) did not stop within 5 s after SIGTERM"
    ))
}
