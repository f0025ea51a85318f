//! Where every host-side file lives: the defaults of `smith_proto::paths` (and a few
//! more that only hostd needs), relocated under a root directory (`--root DIR` or
//! `root` in `host.toml`) and optionally overridden in `host.toml` `[paths]`.
//!
//! Owns: the mapping from a *logical* path (`/etc/ssh/sshd_config`) to the *effective*
//! one (`DIR/etc/ssh/sshd_config`). Must never: touch the file system.
//!
//! Overrides are logical paths too: they are relocated under the root like the
//! defaults. Note that nss_smith and pam_smith use the default cache, socket and
//! pending paths (pam_smith takes `cache=`/`socket=` arguments): overriding those here
//! is for tests and unusual layouts only.

use serde::{Deserialize, Serialize};
use smith_proto::paths as p;
use std::path::{Path, PathBuf};

/// Optional per-path overrides from `host.toml` `[paths]` (logical absolute paths).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathOverrides {
    pub state_dir: Option<PathBuf>,
    pub cache_file: Option<PathBuf>,
    pub pending_dir: Option<PathBuf>,
    pub spool_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub sshd_config: Option<PathBuf>,
    pub sshd_dropin: Option<PathBuf>,
    pub user_ca_keys: Option<PathBuf>,
    pub revoked_keys: Option<PathBuf>,
    pub sshd_pid_file: Option<PathBuf>,
}

impl PathOverrides {
    pub fn is_empty(&self) -> bool {
        *self == PathOverrides::default()
    }

    /// Every override must be an absolute path without `..`.
    pub fn validate(&self) -> Result<(), String> {
        let all = [
            ("state_dir", &self.state_dir),
            ("cache_file", &self.cache_file),
            ("pending_dir", &self.pending_dir),
            ("spool_dir", &self.spool_dir),
            ("socket", &self.socket),
            ("pid_file", &self.pid_file),
            ("sshd_config", &self.sshd_config),
            ("sshd_dropin", &self.sshd_dropin),
            ("user_ca_keys", &self.user_ca_keys),
            ("revoked_keys", &self.revoked_keys),
            ("sshd_pid_file", &self.sshd_pid_file),
        ];
        for (name, v) in all {
            if let Some(path) = v {
                check_logical(path).map_err(|e| format!("[paths] {name}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// A logical path must be absolute and must not climb out with `..`.
pub fn check_logical(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("'{}' is not an absolute path", path.display()));
    }
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("'{}' must not contain '..'", path.display()));
    }
    Ok(())
}

/// Every file hostd and `smith-host` read or write, as effective paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// The root every logical path is relocated under (`/` on a real host).
    pub root: PathBuf,
    pub config: PathBuf,
    pub host_key: PathBuf,
    pub host_cert: PathBuf,
    pub ca_bundle: PathBuf,
    pub state_dir: PathBuf,
    /// The applied snapshot (`HostState`, JSON).
    pub state_file: PathBuf,
    /// Last sync attempt/success (JSON, informational).
    pub sync_status_file: PathBuf,
    pub cache_file: PathBuf,
    pub pending_dir: PathBuf,
    pub spool_dir: PathBuf,
    /// Audit upload status (`audit-status.json`, for `status` and `doctor`).
    pub audit_status_file: PathBuf,
    /// Live SSH sessions by sshd pid (`sessions.json`), to attribute sudo to a key ID.
    pub sessions_file: PathBuf,
    /// pam_smith's record of each open SSH session (`/run/smith/sessions/<pid>`).
    pub session_records_dir: PathBuf,
    /// One principals file per login name (`AuthorizedPrincipalsFile <dir>/%u`).
    pub principals_dir: PathBuf,
    /// Where the sshd log reader stopped (`sshd-log.json`).
    pub sshd_log_position: PathBuf,
    /// `/etc/sudoers.d/smith`.
    pub sudoers: PathBuf,
    /// The rule-limited sudo grants' rules, for pam_smith (`/var/lib/smith/sudo-rules`).
    pub sudo_rules: PathBuf,
    /// `/proc` (never relocated: processes are the machine's).
    pub proc_root: PathBuf,
    /// What `activate` changed (`activation.json`).
    pub manifest: PathBuf,
    /// Original copies of files `activate` changed.
    pub backup_dir: PathBuf,
    pub run_dir: PathBuf,
    pub socket: PathBuf,
    pub pid_file: PathBuf,
    pub ssh_dir: PathBuf,
    pub sshd_config: PathBuf,
    pub sshd_dropin: PathBuf,
    pub user_ca_keys: PathBuf,
    pub revoked_keys: PathBuf,
    pub sshd_pid_file: PathBuf,
    pub nsswitch: PathBuf,
    pub pam_sshd: PathBuf,
    pub pam_sudo: PathBuf,
    /// `/etc/sudo.conf` (sudo's plugins: Smith's audit plugin).
    pub sudo_conf: PathBuf,
    pub passwd: PathBuf,
    pub group: PathBuf,
    /// Subordinate uid/gid ranges of local users (rootless containers).
    pub subuid: PathBuf,
    pub subgid: PathBuf,
    /// The Smith users and groups left out of the cache, and why (`skipped.json`, for
    /// `status` and `doctor`).
    pub skipped_file: PathBuf,
}

fn state_dir_skipped(root: &Path) -> PathBuf {
    relocate(root, p::STATE_DIR).join("skipped.json")
}

/// `root` + logical `path` (which must be absolute).
pub fn relocate(root: &Path, logical: impl AsRef<Path>) -> PathBuf {
    let logical = logical.as_ref();
    match logical.strip_prefix("/") {
        Ok(rel) => root.join(rel),
        Err(_) => root.join(logical),
    }
}

impl HostPaths {
    /// The defaults relocated under `root`.
    pub fn under(root: &Path) -> HostPaths {
        let r = |l: &str| relocate(root, l);
        let state_dir = r(p::STATE_DIR);
        HostPaths {
            root: root.to_path_buf(),
            config: r(p::CONFIG_FILE),
            host_key: r(p::HOST_KEY),
            host_cert: r(p::HOST_CERT),
            ca_bundle: r(p::CA_BUNDLE),
            state_file: state_dir.join("state.json"),
            sync_status_file: state_dir.join("sync-status.json"),
            manifest: state_dir.join("activation.json"),
            backup_dir: state_dir.join("backup"),
            spool_dir: state_dir.join("spool"),
            audit_status_file: state_dir.join("audit-status.json"),
            sessions_file: state_dir.join("sessions.json"),
            principals_dir: r(p::PRINCIPALS_DIR),
            session_records_dir: r(p::SESSIONS_DIR),
            sshd_log_position: state_dir.join("sshd-log.json"),
            sudoers: r(p::SUDOERS_FILE),
            sudo_rules: state_dir.join("sudo-rules"),
            proc_root: PathBuf::from("/proc"),
            state_dir,
            cache_file: r(p::CACHE_FILE),
            pending_dir: r(p::PENDING_DIR),
            run_dir: r(p::RUN_DIR),
            socket: r(p::SOCKET),
            pid_file: r("/run/smith/hostd.pid"),
            ssh_dir: r("/etc/ssh"),
            sshd_config: r("/etc/ssh/sshd_config"),
            sshd_dropin: r(p::SSHD_DROPIN),
            user_ca_keys: r(p::USER_CA_KEYS),
            revoked_keys: r(p::REVOKED_KEYS),
            sshd_pid_file: r("/run/sshd.pid"),
            nsswitch: r("/etc/nsswitch.conf"),
            pam_sshd: r("/etc/pam.d/sshd"),
            pam_sudo: r("/etc/pam.d/sudo"),
            sudo_conf: r("/etc/sudo.conf"),
            passwd: r("/etc/passwd"),
            group: r("/etc/group"),
            subuid: r("/etc/subuid"),
            subgid: r("/etc/subgid"),
            skipped_file: state_dir_skipped(root),
        }
    }

    /// Applies `[paths]` overrides (relocated under the root).
    pub fn with_overrides(mut self, o: &PathOverrides) -> HostPaths {
        let root = self.root.clone();
        let set = |slot: &mut PathBuf, v: &Option<PathBuf>| {
            if let Some(v) = v {
                *slot = relocate(&root, v);
            }
        };
        if let Some(sd) = &o.state_dir {
            let sd = relocate(&root, sd);
            self.state_file = sd.join("state.json");
            self.sync_status_file = sd.join("sync-status.json");
            self.manifest = sd.join("activation.json");
            self.backup_dir = sd.join("backup");
            self.spool_dir = sd.join("spool");
            self.audit_status_file = sd.join("audit-status.json");
            self.sessions_file = sd.join("sessions.json");
            self.principals_dir = sd.join("principals");
            self.sshd_log_position = sd.join("sshd-log.json");
            self.skipped_file = sd.join("skipped.json");
            self.sudo_rules = sd.join("sudo-rules");
            self.state_dir = sd;
        }
        set(&mut self.cache_file, &o.cache_file);
        set(&mut self.pending_dir, &o.pending_dir);
        set(&mut self.spool_dir, &o.spool_dir);
        set(&mut self.socket, &o.socket);
        set(&mut self.pid_file, &o.pid_file);
        set(&mut self.sshd_config, &o.sshd_config);
        set(&mut self.sshd_dropin, &o.sshd_dropin);
        set(&mut self.user_ca_keys, &o.user_ca_keys);
        set(&mut self.revoked_keys, &o.revoked_keys);
        set(&mut self.sshd_pid_file, &o.sshd_pid_file);
        if let Some(dir) = self.socket.parent() {
            self.run_dir = dir.to_path_buf();
        }
        self
    }

    /// Whether paths are relocated (tests, `--root`).
    pub fn is_relocated(&self) -> bool {
        self.root != Path::new("/")
    }

    /// The logical path of an effective one (for messages and for matching the
    /// contents of config files), e.g. `DIR/etc/ssh/x` → `/etc/ssh/x`.
    pub fn logical(&self, effective: &Path) -> PathBuf {
        match effective.strip_prefix(&self.root) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => effective.to_path_buf(),
        }
    }

    /// SSH host public keys (`ssh_host_*_key.pub`), sorted by name.
    pub fn ssh_host_public_keys(&self) -> Vec<PathBuf> {
        let mut keys: Vec<PathBuf> = match std::fs::read_dir(&self.ssh_dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("ssh_host_") && n.ends_with("_key.pub"))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        keys.sort();
        keys
    }
}

/// The host certificate path for a host public key: `ssh_host_ed25519_key.pub` →
/// `ssh_host_ed25519_key-cert.pub`.
pub fn host_cert_path_for(pubkey: &Path) -> PathBuf {
    let name = pubkey
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("ssh_host_key.pub");
    let stem = name.strip_suffix(".pub").unwrap_or(name);
    pubkey.with_file_name(format!("{stem}-cert.pub"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocation_and_logical() {
        let hp = HostPaths::under(Path::new("/tmp/h1"));
        assert_eq!(hp.config, Path::new("/tmp/h1/etc/smith/host.toml"));
        assert_eq!(hp.cache_file, Path::new("/tmp/h1/var/lib/smith/nss.cache"));
        assert_eq!(
            hp.logical(&hp.sshd_dropin),
            Path::new("/etc/ssh/sshd_config.d/50-smith.conf")
        );
        assert!(hp.is_relocated());
        let real = HostPaths::under(Path::new("/"));
        assert_eq!(real.socket, Path::new("/run/smith/hostd.sock"));
        assert!(!real.is_relocated());
    }

    #[test]
    fn overrides_are_relocated() {
        let o = PathOverrides {
            state_dir: Some("/srv/smith".into()),
            socket: Some("/run/x/h.sock".into()),
            ..Default::default()
        };
        let hp = HostPaths::under(Path::new("/r")).with_overrides(&o);
        assert_eq!(hp.state_file, Path::new("/r/srv/smith/state.json"));
        assert_eq!(hp.run_dir, Path::new("/r/run/x"));
        assert_eq!(hp.cache_file, Path::new("/r/var/lib/smith/nss.cache"));
        assert!(PathOverrides {
            cache_file: Some("rel".into()),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(check_logical(Path::new("/a/../b")).is_err());
    }

    #[test]
    fn host_cert_names() {
        assert_eq!(
            host_cert_path_for(Path::new("/etc/ssh/ssh_host_ed25519_key.pub")),
            Path::new("/etc/ssh/ssh_host_ed25519_key-cert.pub")
        );
    }
}
