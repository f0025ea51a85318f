//! `/etc/smith/host.toml`: the host's configuration, and how the binaries find it.
//!
//! Owns: the config schema (TOML, unknown keys refused), its defaults, validation,
//! rendering (what `activate` writes) and the resolution of `--root`/`--config` into
//! [`HostPaths`]. Must never: write files (callers do, atomically).

use crate::paths::{relocate, HostPaths, PathOverrides};
use serde::{Deserialize, Serialize};
use smith_proto::HostName;
use std::path::{Path, PathBuf};

pub const DEFAULT_HOME_BASE: &str = "/home";
pub const DEFAULT_SYNC_WAIT_SECS: u64 = 25;
/// After moving off the first CA URL, the earlier ones are tried again this often.
pub const DEFAULT_CA_RETRY_PREFERRED_SECS: u64 = 30;
pub const MAX_SYNC_WAIT_SECS: u64 = 60;
pub const DEFAULT_PRINCIPALS_USER: &str = "nobody";
/// A sync that would end more than this percentage of the served users...
pub const DEFAULT_REMOVAL_HOLD_PERCENT: u8 = 50;
/// ...and more than this many is held rather than carried out.
pub const DEFAULT_REMOVAL_HOLD_MIN: usize = 10;

/// Where hostd sends its logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// journald when started by systemd with its output connected to the journal
    /// (`JOURNAL_STREAM` set), else stderr.
    #[default]
    Auto,
    Journald,
    Stderr,
}

impl std::str::FromStr for LogTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(LogTarget::Auto),
            "journald" => Ok(LogTarget::Journald),
            "stderr" => Ok(LogTarget::Stderr),
            _ => Err(format!("log must be auto, journald or stderr, not '{s}'")),
        }
    }
}

fn default_sshd_log() -> String {
    "auto".into()
}

fn default_home_base() -> String {
    DEFAULT_HOME_BASE.into()
}
fn default_sync_wait() -> u64 {
    DEFAULT_SYNC_WAIT_SECS
}
fn default_retry_preferred() -> u64 {
    DEFAULT_CA_RETRY_PREFERRED_SECS
}
fn is_default_retry_preferred(v: &u64) -> bool {
    *v == DEFAULT_CA_RETRY_PREFERRED_SECS
}
fn default_hold_percent() -> u8 {
    DEFAULT_REMOVAL_HOLD_PERCENT
}
fn default_hold_min() -> usize {
    DEFAULT_REMOVAL_HOLD_MIN
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn default_principals_user() -> String {
    DEFAULT_PRINCIPALS_USER.into()
}

/// The contents of `host.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The CA's base URL, `https://...` (one replica; files written before replicas
    /// have only this key). Empty when `ca_urls` is used. Read through
    /// [`HostConfig::ca_urls`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_url: String,
    /// The CA's replicas, preferred first (`smith-host activate --ca URL --ca URL2`);
    /// hostd moves to the next when the one in use dies or hangs. A file has `ca_url`
    /// or `ca_urls`, not both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_urls: Vec<String>,
    /// After moving off the first URL, try the earlier ones again this often (seconds,
    /// 1-3600, default 30).
    #[serde(
        default = "default_retry_preferred",
        skip_serializing_if = "is_default_retry_preferred"
    )]
    pub ca_retry_preferred_secs: u64,
    /// This host's enrolled name (the CN of its mTLS certificate).
    pub host_name: HostName,
    /// Fingerprint of the CA's TLS root pinned at enrollment (informational; the root
    /// itself is in `ca.crt`).
    #[serde(default)]
    pub ca_fingerprint: Option<String>,
    /// Smith users' home directories are `home_base/NAME`.
    #[serde(default = "default_home_base")]
    pub home_base: String,
    /// Long-poll duration asked of the CA (1-60 s).
    #[serde(default = "default_sync_wait")]
    pub sync_wait_secs: u64,
    /// `AuthorizedPrincipalsCommandUser` in the sshd drop-in.
    #[serde(default = "default_principals_user")]
    pub principals_user: String,
    #[serde(default)]
    pub log: LogTarget,
    /// sshd's own log, read for accepted and failed logins: `auto` (the journal when
    /// journald runs, else `/var/log/auth.log`, else `/var/log/secure`), `journal`, `off`,
    /// or the absolute path of a log file (relocated under `root`).
    #[serde(default = "default_sshd_log")]
    pub sshd_log: String,
    /// What happens to the processes of a user who loses access to this host:
    /// `terminate` (default) ends them, `keep` only records it (see `crate::removal`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_removal: crate::removal::OnRemoval,
    /// Hold (record, alert, end nothing) a sync that would end more than this
    /// percentage of the served users at once (1-100, default 50)...
    #[serde(default = "default_hold_percent")]
    pub removal_hold_percent: u8,
    /// ...and more than this many users (default 10).
    #[serde(default = "default_hold_min")]
    pub removal_hold_min: usize,
    /// Relocate every path under this directory (tests; `--root` wins).
    #[serde(default)]
    pub root: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "PathOverrides::is_empty")]
    pub paths: PathOverrides,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}\nhint: fix the file, or run `smith-host activate` again to rewrite it")]
    Invalid { path: PathBuf, message: String },
}

impl HostConfig {
    pub fn new(ca_url: String, host_name: HostName) -> HostConfig {
        HostConfig {
            ca_url,
            ca_urls: Vec::new(),
            ca_retry_preferred_secs: DEFAULT_CA_RETRY_PREFERRED_SECS,
            host_name,
            ca_fingerprint: None,
            home_base: default_home_base(),
            sync_wait_secs: DEFAULT_SYNC_WAIT_SECS,
            principals_user: default_principals_user(),
            log: LogTarget::Auto,
            sshd_log: default_sshd_log(),
            on_removal: Default::default(),
            removal_hold_percent: DEFAULT_REMOVAL_HOLD_PERCENT,
            removal_hold_min: DEFAULT_REMOVAL_HOLD_MIN,
            root: None,
            paths: PathOverrides::default(),
        }
    }

    pub fn parse(text: &str) -> Result<HostConfig, String> {
        let c: HostConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        HostConfig::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// The CA's URLs, preferred first.
    pub fn ca_urls(&self) -> Vec<String> {
        if self.ca_urls.is_empty() {
            vec![self.ca_url.clone()]
        } else {
            self.ca_urls.clone()
        }
    }

    /// The first (preferred) CA URL.
    pub fn primary_ca_url(&self) -> String {
        self.ca_urls().into_iter().next().unwrap_or_default()
    }

    /// Sets the CA's URLs: one is written as `ca_url` (as every version reads it),
    /// several as `ca_urls`.
    pub fn set_ca_urls(&mut self, urls: Vec<String>) {
        let urls: Vec<String> = urls
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        if urls.len() == 1 {
            self.ca_url = urls[0].clone();
            self.ca_urls = Vec::new();
        } else {
            self.ca_url = String::new();
            self.ca_urls = urls;
        }
    }

    /// The replicas hostd and `smith-host` use (one shared [`smith_api::Replicas`] per
    /// process), calling `on_failover` at each move.
    pub fn replicas(
        &self,
        on_failover: Option<smith_api::replicas::OnFailover>,
    ) -> Result<std::sync::Arc<smith_api::Replicas>, String> {
        smith_api::Replicas::with(
            self.ca_urls(),
            std::time::Duration::from_secs(self.ca_retry_preferred_secs),
            on_failover,
        )
        .map(std::sync::Arc::new)
    }

    pub fn validate(&self) -> Result<(), String> {
        match (self.ca_url.is_empty(), self.ca_urls.is_empty()) {
            (false, false) => {
                return Err("give the CA as ca_url or as ca_urls, not both".into());
            }
            (true, true) => return Err("ca_url (or ca_urls) is required".into()),
            _ => {}
        }
        for u in self.ca_urls() {
            validate_ca_url(&u)?;
        }
        smith_api::Replicas::new(self.ca_urls()).map_err(|e| format!("ca_urls: {e}"))?;
        if !(1..=3600).contains(&self.ca_retry_preferred_secs) {
            return Err(format!(
                "ca_retry_preferred_secs must be between 1 and 3600, not {}",
                self.ca_retry_preferred_secs
            ));
        }
        if !(1..=MAX_SYNC_WAIT_SECS).contains(&self.sync_wait_secs) {
            return Err(format!(
                "sync_wait_secs must be between 1 and {MAX_SYNC_WAIT_SECS}, not {}",
                self.sync_wait_secs
            ));
        }
        crate::paths::check_logical(Path::new(&self.home_base))
            .map_err(|e| format!("home_base: {e}"))?;
        if self.home_base.contains(':') || self.home_base.contains('\n') {
            return Err("home_base must not contain ':' or a newline".into());
        }
        let u = &self.principals_user;
        if u.is_empty()
            || u.len() > 32
            || !u
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "principals_user '{}' is not a valid local account name",
                u.escape_debug()
            ));
        }
        if !(1..=100).contains(&self.removal_hold_percent) {
            return Err(format!(
                "removal_hold_percent must be between 1 and 100, not {}",
                self.removal_hold_percent
            ));
        }
        if let Some(fp) = &self.ca_fingerprint {
            smith_api::tls::parse_fingerprint(fp).map_err(|e| format!("ca_fingerprint: {e}"))?;
        }
        if let Some(root) = &self.root {
            crate::paths::check_logical(root).map_err(|e| format!("root: {e}"))?;
        }
        if !matches!(self.sshd_log.as_str(), "auto" | "journal" | "off") {
            crate::paths::check_logical(Path::new(&self.sshd_log)).map_err(|e| {
                format!("sshd_log must be auto, journal, off or an absolute path: {e}")
            })?;
        }
        self.paths.validate()
    }

    /// The file `activate` writes: every setting, documented, defaults shown.
    pub fn render(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut out = String::new();
        out.push_str("# Smith host configuration, written by `smith-host activate`.\n");
        out.push_str("# Unknown keys are refused. See hostd/README.md.\n\n");
        out.push_str("# The CA (HTTPS; its TLS root is pinned in ca.crt next to this file):\n");
        out.push_str(
            "# One URL as ca_url, or the CA's replicas as the list ca_urls (preferred first).\n",
        );
        if self.ca_urls.is_empty() {
            out.push_str(&format!("ca_url = {}\n", q(&self.ca_url)));
        } else {
            let list: Vec<String> = self.ca_urls.iter().map(|u| q(u)).collect();
            out.push_str(&format!("ca_urls = [{}]\n", list.join(", ")));
        }
        if self.ca_urls.len() > 1 || !is_default_retry_preferred(&self.ca_retry_preferred_secs) {
            out.push_str(
                "# After moving off the first URL (it died or hung), try it again every\n\
                 # this many seconds (default 30).\n",
            );
            out.push_str(&format!(
                "ca_retry_preferred_secs = {}\n",
                self.ca_retry_preferred_secs
            ));
        }
        out.push_str("# This host's enrolled name (CN of host.crt).\n");
        out.push_str(&format!("host_name = {}\n", q(self.host_name.as_str())));
        if let Some(fp) = &self.ca_fingerprint {
            out.push_str("# Fingerprint of the CA root pinned at enrollment.\n");
            out.push_str(&format!("ca_fingerprint = {}\n", q(fp)));
        }
        out.push_str("# Smith users' home directories are home_base/NAME (default \"/home\").\n");
        out.push_str(&format!("home_base = {}\n", q(&self.home_base)));
        out.push_str("# Seconds a sync long-poll waits at the CA (1-60, default 25).\n");
        out.push_str(&format!("sync_wait_secs = {}\n", self.sync_wait_secs));
        out.push_str("# Account sshd runs `smith-host principals` as (default \"nobody\").\n");
        out.push_str(&format!("principals_user = {}\n", q(&self.principals_user)));
        out.push_str("# Logs: auto (journald under systemd, else stderr), journald, stderr.\n");
        let log = match self.log {
            LogTarget::Auto => "auto",
            LogTarget::Journald => "journald",
            LogTarget::Stderr => "stderr",
        };
        out.push_str(&format!("log = {}\n", q(log)));
        out.push_str(
            "# sshd's own log, for accepted/failed logins: auto (journal, else\n\
             # /var/log/auth.log, else /var/log/secure), journal, off, or a file path.\n",
        );
        out.push_str(&format!("sshd_log = {}\n", q(&self.sshd_log)));
        out.push_str("# When a user loses access here: terminate (end their processes) or keep.\n");
        let on = match self.on_removal {
            crate::removal::OnRemoval::Terminate => "terminate",
            crate::removal::OnRemoval::Keep => "keep",
        };
        out.push_str(&format!("on_removal = {}\n", q(on)));
        out.push_str(
            "# Hold, alert and end nothing when one sync would end more than this\n\
             # percentage of the served users (default 50) and more than\n\
             # removal_hold_min users (default 10); `smith-host terminate` ends them.\n",
        );
        out.push_str(&format!(
            "removal_hold_percent = {}\nremoval_hold_min = {}\n",
            self.removal_hold_percent, self.removal_hold_min
        ));
        if let Some(root) = &self.root {
            out.push_str("# Every path is relocated under this directory.\n");
            out.push_str(&format!("root = {}\n", q(&root.to_string_lossy())));
        }
        if !self.paths.is_empty() {
            out.push_str("\n[paths]\n");
            if let Ok(t) = toml::to_string(&self.paths) {
                out.push_str(&t);
            }
        }
        out
    }
}

pub fn validate_ca_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("CA URL '{url}' must start with https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("CA URL '{url}' has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "CA URL '{}' contains whitespace",
            url.escape_debug()
        ));
    }
    Ok(())
}

/// The paths and (if present) configuration a command works with.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub paths: HostPaths,
    pub config: Option<HostConfig>,
}

/// Finds the configuration: `config_flag`, else `ROOT/etc/smith/host.toml` where ROOT is
/// `root_flag` or `/`. A `root` in the file applies when no `--root` was given.
/// A missing file is not an error (not enrolled yet); an invalid one is.
pub fn resolve(
    root_flag: Option<&Path>,
    config_flag: Option<&Path>,
) -> Result<Resolved, ConfigError> {
    let root0 = root_flag.unwrap_or(Path::new("/")).to_path_buf();
    let config_path = match config_flag {
        Some(c) => c.to_path_buf(),
        None => relocate(&root0, smith_proto::paths::CONFIG_FILE),
    };
    let config = match std::fs::metadata(&config_path) {
        Ok(_) => Some(HostConfig::load(&config_path)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(ConfigError::Read {
                path: config_path,
                source,
            })
        }
    };
    let root = match (root_flag, config.as_ref().and_then(|c| c.root.as_ref())) {
        (Some(r), _) => r.to_path_buf(),
        (None, Some(r)) => r.clone(),
        (None, None) => PathBuf::from("/"),
    };
    let mut paths = HostPaths::under(&root);
    if let Some(c) = &config {
        paths = paths.with_overrides(&c.paths);
    }
    paths.config = config_path;
    Ok(Resolved { paths, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HostConfig {
        HostConfig::new(
            "https://ca.example:8443".into(),
            HostName::new("web-1").unwrap(),
        )
    }

    #[test]
    fn render_parses_back_identically() {
        let mut c = sample();
        c.ca_fingerprint = Some(smith_api::tls::fingerprint(b"x"));
        assert_eq!(HostConfig::parse(&c.render()).unwrap(), c);
        c.paths.cache_file = Some("/tmp/x.cache".into());
        c.root = Some("/tmp/r".into());
        c.log = LogTarget::Stderr;
        assert_eq!(HostConfig::parse(&c.render()).unwrap(), c);
    }

    #[test]
    fn several_ca_urls_render_and_parse_back_and_the_old_key_still_reads() {
        let mut c = sample();
        c.set_ca_urls(vec!["https://ca1:8443/".into(), "https://ca2:8443".into()]);
        c.ca_retry_preferred_secs = 5;
        let text = c.render();
        assert!(
            text.contains("ca_urls = [\"https://ca1:8443\", \"https://ca2:8443\"]"),
            "{text}"
        );
        assert!(!text.contains("\nca_url ="), "{text}");
        let back = HostConfig::parse(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.ca_urls(), vec!["https://ca1:8443", "https://ca2:8443"]);
        assert_eq!(back.primary_ca_url(), "https://ca1:8443");
        // One URL is written as every earlier version reads it.
        c.set_ca_urls(vec!["https://ca1:8443".into()]);
        c.ca_retry_preferred_secs = DEFAULT_CA_RETRY_PREFERRED_SECS;
        let text = c.render();
        assert!(text.contains("\nca_url = \"https://ca1:8443\"\n"), "{text}");
        assert!(!text.contains("ca_urls ="), "{text}");
        assert!(!text.contains("ca_retry_preferred_secs"), "{text}");
        let old = HostConfig::parse("ca_url = \"https://ca:1\"\nhost_name = \"db-1\"\n").unwrap();
        assert_eq!(old.ca_urls(), vec!["https://ca:1"]);
        assert_eq!(old.ca_retry_preferred_secs, 30);
        for bad in [
            "ca_url = \"https://a\"\nca_urls = [\"https://b\"]\nhost_name = \"a\"\n",
            "host_name = \"a\"\n",
            "ca_urls = []\nhost_name = \"a\"\n",
            "ca_urls = [\"https://a\", \"http://b\"]\nhost_name = \"a\"\n",
            "ca_urls = [\"https://a\", \"https://a/\"]\nhost_name = \"a\"\n",
            "ca_urls = [\"https://a\"]\nhost_name = \"a\"\nca_retry_preferred_secs = 0\n",
        ] {
            assert!(HostConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_and_refusals() {
        let c = HostConfig::parse("ca_url = \"https://ca:1\"\nhost_name = \"db-1\"\n").unwrap();
        assert_eq!(c.home_base, "/home");
        assert_eq!(c.sync_wait_secs, 25);
        assert_eq!(c.principals_user, "nobody");
        for bad in [
            "ca_url = \"http://ca\"\nhost_name = \"a\"\n",
            "ca_url = \"https://ca\"\nhost_name = \"A B\"\n",
            "ca_url = \"https://ca\"\nhost_name = \"a\"\nunknown = 1\n",
            "ca_url = \"https://ca\"\nhost_name = \"a\"\nsync_wait_secs = 0\n",
            "ca_url = \"https://ca\"\nhost_name = \"a\"\nhome_base = \"home\"\n",
            "ca_url = \"https://ca\"\nhost_name = \"a\"\nprincipals_user = \"a b\"\n",
            "ca_url = \"https://ca\"\nhost_name = \"a\"\n[paths]\nbogus = \"/x\"\n",
            "ca_url = \"https://ca\"\nhost_name = \"a\"\nsshd_log = \"auth.log\"\n",
        ] {
            assert!(HostConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
