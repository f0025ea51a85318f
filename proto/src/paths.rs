//! The host-side paths fixed by the design brief. Every one can be relocated (hostd's
//! `--root`/config); the NSS module uses the defaults, which tests make private with
//! mount namespaces.

pub const CONFIG_FILE: &str = "/etc/smith/host.toml";
pub const HOST_KEY: &str = "/etc/smith/host.key";
pub const HOST_CERT: &str = "/etc/smith/host.crt";
pub const CA_BUNDLE: &str = "/etc/smith/ca.crt";
pub const STATE_DIR: &str = "/var/lib/smith";
/// The NSS cache file hostd writes and the modules map.
pub const CACHE_FILE: &str = "/var/lib/smith/nss.cache";
/// Events pam_smith could not hand to hostd, one file each, picked up by hostd.
pub const PENDING_DIR: &str = "/var/lib/smith/pending";
/// Where pam_smith queues an event when [`PENDING_DIR`] cannot take it (its file system
/// full: issue 18): `pending` in the socket's directory, in memory (`/run`), picked up by
/// hostd like the other. See [`spare_pending_dir`].
pub const SPARE_PENDING_DIR: &str = "/run/smith/pending";

/// The spare pending directory that goes with hostd's socket at `socket` (the socket's
/// directory + `pending`; [`SPARE_PENDING_DIR`] for the default socket), so pam_smith's
/// `socket=` and hostd's relocated paths agree without another setting.
pub fn spare_pending_dir(socket: &std::path::Path) -> std::path::PathBuf {
    socket
        .parent()
        .unwrap_or(std::path::Path::new(RUN_DIR))
        .join("pending")
}
/// One file per login name hostd keeps current: the certificate principals that may log
/// in as that name here (sshd's `AuthorizedPrincipalsFile`, pam_smith's sudo check).
pub const PRINCIPALS_DIR: &str = "/var/lib/smith/principals";
/// One file per open SSH session of a Smith certificate, written by pam_smith at
/// `open_session` (root, 0600): the session's process and its certificate's grants, read
/// by pam_smith in sudo.
pub const SESSIONS_DIR: &str = "/run/smith/sessions";
/// hostd's sync status (JSON; `last_sync_unix` is read by pam_smith's `max_age=`).
pub const SYNC_STATUS_FILE: &str = "/var/lib/smith/sync-status.json";
pub const RUN_DIR: &str = "/run/smith";
pub const SOCKET: &str = "/run/smith/hostd.sock";
pub const SSHD_DROPIN: &str = "/etc/ssh/sshd_config.d/50-smith.conf";
pub const USER_CA_KEYS: &str = "/etc/ssh/smith_user_ca.pub";
pub const REVOKED_KEYS: &str = "/etc/ssh/smith_revoked.krl";
pub const SUDOERS_FILE: &str = "/etc/sudoers.d/smith";
/// The command rules of this host's rule-limited sudo grants, written by hostd with the
/// sudoers file, read by pam_smith's sudo approval (root's, 0644).
pub const SUDO_RULES_FILE: &str = "/var/lib/smith/sudo-rules";
/// Set in hostd's own environment: nss_smith never calls the socket from a process that
/// has it, so hostd cannot recurse into itself through glibc.
pub const NSS_BYPASS_ENV: &str = "SMITH_NSS_BYPASS";
