//! `pam_smith.so`: the PAM module that lets Smith decide, on a host, whether a Smith user
//! may use a service, sets up their session, and records it.
//!
//! - `account`: local users (in `/etc/passwd`) → `PAM_IGNORE`, always; users unknown to
//!   Smith → `PAM_IGNORE`; a Smith user needs a grant of at least `level=` (`ssh` by
//!   default, `sudo` in sudo's stack) → `PAM_SUCCESS`, else `PAM_PERM_DENIED` (logged,
//!   reported to hostd); no valid cache → `PAM_AUTHINFO_UNAVAIL` for non-local users.
//!   With `level=sudo` every decision is also recorded as a sudo audit event.
//! - `session` (open): the certificate in `SSH_AUTH_INFO_0` must pass
//!   `policy::check_certificate` (defence in depth), the home directory is created from
//!   the skeleton, and the session is recorded (key ID, serial); close records the
//!   duration.
//! - `auth`, `setcred`: `PAM_IGNORE`.
//!
//! Must never (it runs inside sshd and sudo, as root): start threads, unwind into
//! libpam, abort, block for long (socket exchanges are bounded), resolve users through
//! NSS, follow symlinks when creating homes, or let a non-local user in on doubt.
//!
//! Layers: [`entry`] (exported symbols, local-user short cut, panics caught), [`hooks`]
//! (per-phase logic), [`identity`] (passwd + cache), [`home`], [`report`] (events to
//! hostd or the pending directory), [`sudo`] (argv of sudo), [`args`], [`pam`] (libpam
//! FFI).

pub mod args;
pub mod entry;
pub mod home;
pub mod hooks;
pub mod identity;
pub mod pam;
pub mod report;
pub mod sudo;
pub mod sudo_plugin;

/// A fresh, private directory for a unit test.
#[cfg(test)]
pub(crate) fn test_dir(label: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "pam-smith-{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[cfg(test)]
pub(crate) mod tests {
    use smith_proto::cache::{CacheContents, CacheGroup, CacheUser};
    use smith_proto::Level;

    pub(crate) fn contents() -> CacheContents {
        let user = |name: &str, uid: u32, level, gids: Vec<u32>| CacheUser {
            name: name.into(),
            uid,
            gid: uid,
            gecos: String::new(),
            dir: format!("/home/{name}"),
            shell: "/bin/bash".into(),
            level,
            gids,
        };
        CacheContents {
            host_name: "web-1".into(),
            host_tags: "env=prod,role=web".into(),
            generation: 1,
            snapshot_version: 1,
            written_at: 0,
            sudo_gid: 200_000,
            users: vec![
                user("alice", 200_001, Level::Ssh, vec![200_010]),
                user("oscar", 200_002, Level::Sudo, vec![200_000]),
            ],
            groups: vec![
                CacheGroup {
                    name: "dev".into(),
                    gid: 200_010,
                    members: vec!["alice".into()],
                },
                CacheGroup {
                    name: "smith-sudo".into(),
                    gid: 200_000,
                    members: vec!["oscar".into()],
                },
            ],
        }
    }
}
