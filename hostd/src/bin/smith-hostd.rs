//! `smith-hostd`: the Smith host daemon. See `smith_hostd::daemon`.

use clap::Parser;
use smith_hostd::config::LogTarget;
use std::path::PathBuf;

/// The Smith host daemon: syncs this host's users, groups and grants from the Smith CA
/// over mTLS, writes the NSS cache file and the sshd trust files, answers the NSS and
/// PAM modules on its local socket and records their audit events.
///
/// It runs in the foreground (systemd: Type=notify; READY=1 once the last snapshot is
/// loaded or the first sync completed). SIGUSR1 syncs now; SIGTERM stops it cleanly.
/// The host must have been enrolled with `smith-host activate` first.
#[derive(Parser, Debug)]
#[command(name = "smith-hostd", version)]
struct Args {
    /// Relocate every path under DIR (tests, private mount namespaces). Default: `root`
    /// from the config, else `/`.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Configuration file. Default: ROOT/etc/smith/host.toml.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Where to log: auto (journald under systemd, else stderr), journald or stderr.
    /// Default: `log` from the config. Level: SMITH_LOG (e.g. debug).
    #[arg(long, value_name = "TARGET")]
    log: Option<LogTarget>,
    /// Internal: answer lookups on stdin from NSS module SOURCE only (the daemon runs
    /// this to check Smith's names against the host's other NSS sources).
    #[arg(long, value_name = "SOURCE", hide = true)]
    nss_probe: Option<String>,
}

fn main() {
    // First thing, before any thread exists: nss_smith must never call back into this
    // process's own socket (it would wait on itself).
    std::env::set_var(smith_proto::paths::NSS_BYPASS_ENV, "1");
    // Few malloc arenas: the daemon is mostly idle and should stay small (every tokio
    // and blocking thread would otherwise get its own arena).
    // SAFETY: called before any other thread exists; mallopt only sets a glibc tunable.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let args = Args::parse();
    if let Some(source) = &args.nss_probe {
        std::process::exit(smith_hostd::nssprobe::probe_main(source));
    }
    let opts = smith_hostd::daemon::DaemonOptions {
        root: args.root,
        config: args.config,
        log: args.log,
    };
    if let Err(e) = smith_hostd::daemon::run(opts) {
        tracing::error!("{e:#}");
        eprintln!("smith-hostd: {e:#}");
        std::process::exit(1);
    }
}
