//! `xtask bench-helper wait-user`: runs inside a fleet host (through `nsenter`) and
//! watches a user appear or disappear through glibc's `getpwnam_r`, i.e. through the
//! host's own nsswitch.conf and nss_smith, in one long-lived process (as sshd would).
//!
//! Protocol on stdout: `ready present|absent` once the initial state is known, then
//! `seen <CLOCK_MONOTONIC ns>` when the wanted state is first observed, or `timeout`.
//! CLOCK_MONOTONIC is shared by every namespace of the machine, so the caller subtracts
//! its own timestamp.
//!
//! Must never: exit 0 without having observed the wanted state.

use super::util::mono_ns;
use anyhow::{bail, Result};
use std::ffi::CString;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum HelperCmd {
    /// Print `ready STATE`, then `seen NS` once NAME is present/absent through getpwnam_r.
    WaitUser {
        name: String,
        /// The state to wait for.
        #[arg(long, value_parser = ["present", "absent"])]
        until: String,
        #[arg(long, default_value_t = 20_000)]
        timeout_ms: u64,
        /// Pause between lookups.
        #[arg(long, default_value_t = 100)]
        poll_us: u64,
    },
    /// Run CMD N times (optionally as USER) and print `p50_us p90_us` of its wall time.
    ExecTimes {
        #[arg(long, default_value_t = 30)]
        n: usize,
        #[arg(long, value_name = "USER")]
        as_user: Option<String>,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Append 200 bytes + fdatasync N times to a file in DIR; print `p50_us p90_us`.
    FsyncTimes {
        dir: std::path::PathBuf,
        #[arg(long, default_value_t = 30)]
        n: usize,
    },
}

/// (uid, gid) of a local user, through glibc.
fn ids_of(user: &str) -> Result<(u32, u32)> {
    let c = CString::new(user)?;
    let mut buf = vec![0u8; 1 << 14];
    // SAFETY: as in `present`: valid name, our own struct and buffer.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: see above.
    let rc = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut res,
        )
    };
    if rc != 0 || res.is_null() {
        bail!("no user {user}");
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

fn print_times(mut us: Vec<f64>) {
    us.sort_by(|a, b| a.total_cmp(b));
    let q = |q: f64| us[((us.len() - 1) as f64 * q) as usize];
    println!("{:.0} {:.0}", q(0.5), q(0.9));
}

/// Whether glibc finds `name` now.
fn present(name: &CString, buf: &mut [u8]) -> bool {
    // SAFETY: all-zero is a valid `struct passwd` (pointers NULL, ids 0).
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: name is NUL-terminated; pw, buf and res are ours and live across the call;
    // buf.len() is the buffer's real size.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut res,
        )
    };
    rc == 0 && !res.is_null()
}

pub fn run(cmd: HelperCmd) -> Result<()> {
    match cmd {
        HelperCmd::WaitUser {
            name,
            until,
            timeout_ms,
            poll_us,
        } => {
            let want = until == "present";
            let cname = CString::new(name)?;
            let mut buf = vec![0u8; 1 << 16];
            let mut out = std::io::stdout().lock();
            let now = present(&cname, &mut buf);
            writeln!(out, "ready {}", if now { "present" } else { "absent" })?;
            out.flush()?;
            let deadline = Instant::now() + Duration::from_millis(timeout_ms);
            loop {
                if present(&cname, &mut buf) == want {
                    writeln!(out, "seen {}", mono_ns())?;
                    out.flush()?;
                    return Ok(());
                }
                if Instant::now() > deadline {
                    writeln!(out, "timeout")?;
                    out.flush()?;
                    bail!("{until} not observed within {timeout_ms} ms");
                }
                std::thread::sleep(Duration::from_micros(poll_us));
            }
        }
        HelperCmd::ExecTimes { n, as_user, cmd } => {
            use std::os::unix::process::CommandExt;
            let ids = as_user.as_deref().map(ids_of).transpose()?;
            let mut us = Vec::with_capacity(n);
            for _ in 0..n.max(1) {
                let mut c = std::process::Command::new(&cmd[0]);
                c.args(&cmd[1..])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
                if let Some((uid, gid)) = ids {
                    // std drops supplementary groups when root sets a uid.
                    c.uid(uid).gid(gid);
                }
                let t = Instant::now();
                let st = c.status()?;
                us.push(t.elapsed().as_secs_f64() * 1e6);
                if !st.success() {
                    bail!("{} exited with {st}", cmd.join(" "));
                }
            }
            print_times(us);
            Ok(())
        }
        HelperCmd::FsyncTimes { dir, n } => {
            let path = dir.join(format!(".bench-fsync-{}", std::process::id()));
            let mut f = std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            let mut us = Vec::with_capacity(n);
            for _ in 0..n.max(1) {
                f.write_all(&[b'x'; 200])?;
                let t = Instant::now();
                f.sync_data()?;
                us.push(t.elapsed().as_secs_f64() * 1e6);
            }
            drop(f);
            std::fs::remove_file(&path)?;
            print_times(us);
            Ok(())
        }
    }
}
