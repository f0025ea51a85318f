//! Log setup for both binaries: structured `tracing` events to journald or stderr.
//!
//! Owns: choosing the sink (`auto` = journald when systemd connected our output to the
//! journal, i.e. `JOURNAL_STREAM` is set, else stderr) and the level filter
//! (`SMITH_LOG`, else `RUST_LOG`, e.g. `SMITH_LOG=debug`, default `info` for the daemon and `warn` for
//! the CLI). Must never: log secrets (tokens, private keys).

use crate::config::LogTarget;
use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("SMITH_LOG")
        .or_else(|_| EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| EnvFilter::new(default))
}

/// For the daemon. Returns the sink actually used.
pub fn init_daemon(target: LogTarget) -> LogTarget {
    let want_journald = match target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    if want_journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                let _ = tracing_subscriber::registry()
                    .with(filter("info"))
                    .with(layer.with_syslog_identifier("smith-hostd".into()))
                    .try_init();
                return LogTarget::Journald;
            }
            Err(e) => eprintln!("smith-hostd: journald is not available ({e}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::registry()
        .with(filter("info"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .try_init();
    LogTarget::Stderr
}

/// For `smith-host`: warnings and errors to stderr, without timestamps.
pub fn init_cli() {
    let _ = tracing_subscriber::registry()
        .with(filter("warn"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .without_time()
                .with_target(false),
        )
        .try_init();
}
