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
    }
}
