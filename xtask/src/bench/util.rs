//! Small tools the bench parts share: percentiles, the monotonic clock as nanoseconds,
//! per-process memory and CPU from `/proc`, entering a network namespace, progress lines.
//!
//! Must never: change anything outside the calling thread (a network namespace is
//! entered by the calling thread only, never by the whole process).

use anyhow::{bail, Context, Result};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Progress output (stderr), prefixed with the time since the bench started.
pub fn progress(msg: impl AsRef<str>) {
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs();
    eprintln!("[bench {:02}:{:02}] {}", t / 60, t % 60, msg.as_ref());
}

pub fn start_clock() {
    STARTED.get_or_init(Instant::now);
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every namespace of this machine, so
/// a timestamp printed by a helper inside a host compares with ours.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sorted-sample statistics (same index rule as nssbench: `lat[(n-1)*q]`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

pub fn stats(samples: &[f64]) -> Stats {
    if samples.is_empty() {
        return Stats::default();
    }
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    Stats {
        n: v.len(),
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        max: v[v.len() - 1],
    }
}

/// Resident set size of `pid` in MB (10^6 bytes; `VmRSS`, which the kernel counts in KiB).
pub fn rss_mb(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (did the process exit?)"))?;
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kb: f64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .context("VmRSS is not a number")?;
            return Ok(kb * 1024.0 / 1e6);
        }
    }
    bail!("no VmRSS in /proc/{pid}/status")
}

/// User + system CPU time of `pid` (all its threads) in seconds.
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (did the process exit?)"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = s
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / hz)
}

/// CPU seconds (user + system) used by this process so far.
pub fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Moves the calling thread (only) into the named network namespace (`ip netns`). Threads
/// and processes it creates afterwards are in that namespace too.
pub fn enter_netns(name: &str) -> Result<()> {
    let path = format!("/var/run/netns/{name}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a descriptor we hold open; affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "cannot enter network namespace {name}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A tokio runtime sized for this 2-core machine (its threads live in the network
/// namespace of the thread that builds it).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")
}

/// Load averages from /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// --- cleanup on Ctrl-C / SIGTERM -------------------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Network namespaces and processes this bench created and must not leave behind.
static NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Removed on interruption too (unless the caller wants it kept).
static WORK_DIR: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);

pub fn register_work_dir(dir: &std::path::Path) {
    if let Ok(mut w) = WORK_DIR.lock() {
        *w = Some(dir.to_path_buf());
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// On SIGINT/SIGTERM/SIGHUP: kill every registered process and every process in a
/// registered network namespace, delete those namespaces, exit 130. (A handler, not a
/// blocked mask: children get the default dispositions back at exec.)
pub fn install_interrupt_cleanup() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic (async-
        // signal-safe); sa_mask empty; installing it has no other effect.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    std::thread::spawn(|| loop {
        std::thread::sleep(Duration::from_millis(100));
        if INTERRUPTED.load(Ordering::SeqCst) {
            progress("interrupted: stopping what the bench started");
            cleanup_registered();
            std::process::exit(130);
        }
    });
}

pub fn register_netns(name: &str) {
    if let Ok(mut v) = NAMESPACES.lock() {
        v.push(name.to_string());
    }
}

pub fn unregister_netns(name: &str) {
    if let Ok(mut v) = NAMESPACES.lock() {
        v.retain(|n| n != name);
    }
}

pub fn register_pid(pid: u32) {
    if let Ok(mut v) = PIDS.lock() {
        v.push(pid);
    }
}

pub fn unregister_pid(pid: u32) {
    if let Ok(mut v) = PIDS.lock() {
        v.retain(|p| *p != pid);
    }
}

fn cleanup_registered() {
    let pids = PIDS.lock().map(|v| v.clone()).unwrap_or_default();
    for pid in pids {
        // SAFETY: kill(2) on a child this bench started and has not reaped yet.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let namespaces = NAMESPACES.lock().map(|v| v.clone()).unwrap_or_default();
    for ns in namespaces {
        if let Ok(o) = std::process::Command::new("ip")
            .args(["netns", "pids", &ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill(2) on a process inside a namespace this bench created.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .status();
    }
}

/// Ten thousand hosts are ten thousand sockets in this process (and a third of that in
/// each replica, which inherits the limit): the soft limit goes up to the hard one.
pub fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_lower_index() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = stats(&v);
        assert_eq!(s.p50, 50.0);
        assert_eq!(s.p99, 99.0);
        assert_eq!(s.max, 100.0);
        assert_eq!(stats(&[]).n, 0);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_mb(pid).unwrap() > 0.0);
        assert!(cpu_secs(pid).unwrap() >= 0.0);
    }
}
