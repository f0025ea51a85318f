//! `smith-hostd` library: everything the host daemon (`smith-hostd`) and its CLI
//! (`smith-host`) do on a Smith host.
//!
//! Owns, on the host: enrollment and the files it writes (`activate`, `deactivate`),
//! the sync with the CA over mTLS, the NSS cache file, the user CA keys and KRL files,
//! the local socket server, the audit spool (hash chain, upload to the CA) and the
//! ingestion of pending event files and of sshd's own log, the session table that
//! attributes sudo to a certificate, `/etc/sudoers.d/smith`, the principals files sshd
//! decides logins from ([`logins`]: grant-bound certificates), and the same decision
//! explained (`smith-host principals`).
//!
//! Must never: shadow or modify a local account, let in anyone who was not allowed at
//! the last successful sync, lock out anyone who was, leave a half-written file behind,
//! or resolve users through NSS itself (it reads `/etc/passwd` and `/etc/group`
//! directly and runs with [`smith_proto::paths::NSS_BYPASS_ENV`] set).
//!
//! Every path comes from [`paths::HostPaths`], i.e. from `smith_proto::paths`
//! relocated under `--root` and overridable in `host.toml`.

pub mod activate;
pub mod cachefile;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod fsutil;
pub mod hostcerts;
pub mod identity;
pub mod local;
pub mod localclient;
pub mod logging;
pub mod logins;
pub mod nssprobe;
pub mod oneshot;
pub mod paths;
pub mod principals;
pub mod refusal;
pub mod removal;
pub mod service;
pub mod sessions;
pub mod spool;
pub mod sshdlog;
pub mod state;
pub mod status;
pub mod store;
pub mod sudoers;
pub mod syncclient;
pub mod terminate;
pub mod trust;
pub mod view;

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
