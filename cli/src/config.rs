//! The CLI's effective configuration and where each value came from.
//!
//! Precedence: command-line flag, then environment (`SMITH_CA_URL`,
//! `SMITH_CA_FINGERPRINT`, `SMITH_TOKEN`, `SMITH_PROFILE`), then the config file
//! (`$SMITH_CONFIG`, else `$XDG_CONFIG_HOME/smith/config.toml`, else
//! `~/.config/smith/config.toml`) which may hold `ca_url`, `ca_fingerprint` and
//! `ssh_hosts` (the default host patterns of `smith config ssh`) only.
//!
//! The credential for the CA ([`Effective::credential`]): a token from the flag or
//! `SMITH_TOKEN` first, else the ID token `smith login` kept in the kernel keyring for
//! this profile and CA (with its nonce), renewed with the kept refresh token when it
//! expired (see [`crate::login::kept_credential`]).
//!
//! Must never: read a token from a file, or print a token (only whether one is set).

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub ca_url: Option<String>,
    pub ca_fingerprint: Option<String>,
    /// Host patterns for `smith config ssh` (`"*.example.com 10.0.*"` or a list).
    pub ssh_hosts: Option<SshHosts>,
}

/// `ssh_hosts` as one string of patterns (separated by spaces or commas) or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SshHosts {
    One(String),
    Many(Vec<String>),
}

impl SshHosts {
    pub fn patterns(&self) -> Vec<String> {
        let split = |s: &str| -> Vec<String> {
            s.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        };
        match self {
            SshHosts::One(s) => split(s),
            SshHosts::Many(v) => v.iter().flat_map(|s| split(s)).collect(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Setting {
    pub value: Option<String>,
    /// `flag`, `env SMITH_...`, `config file` or `unset`.
    pub source: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Effective {
    pub config_file: Option<String>,
    pub ca_url: Setting,
    pub ca_fingerprint: Setting,
    #[serde(skip)]
    pub token: Setting,
    pub token_source: String,
    /// The sign-in profile (`--profile`, `SMITH_PROFILE`, default `default`).
    pub profile: Setting,
    pub ssh_auth_sock: Option<String>,
    /// `ssh_hosts` from the config file (patterns), if set.
    pub ssh_hosts: Option<Vec<String>>,
}

/// What `smith cert` presents to the CA.
#[derive(Clone)]
pub enum Credential {
    /// A Smith token (`--token`/`SMITH_TOKEN`).
    Token(String),
    /// An OIDC ID token from `smith login`, with the nonce of its sign-in.
    IdToken {
        token: String,
        nonce: Option<String>,
    },
}

impl Credential {
    pub fn bearer(&self) -> &str {
        match self {
            Credential::Token(t) => t,
            Credential::IdToken { token, .. } => token,
        }
    }
    pub fn nonce(&self) -> Option<String> {
        match self {
            Credential::Token(_) => None,
            Credential::IdToken { nonce, .. } => nonce.clone(),
        }
    }
}

/// Flag values as parsed by clap (no env fallback there: it is resolved here so the
/// source can be reported).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub ca_url: Option<String>,
    pub ca_fingerprint: Option<String>,
    pub token: Option<String>,
    pub profile: Option<String>,
}

/// Where `smith` keeps non-secret state (the settings of the last `smith cert`, per
/// profile): the config file's directory. `create` tells whether it may be created
/// (only the default location, never a directory named by `$SMITH_CONFIG`).
pub fn state_dir() -> Option<(PathBuf, bool)> {
    let dir = config_path()?.parent()?.to_path_buf();
    Some((dir, std::env::var_os("SMITH_CONFIG").is_none()))
}

pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SMITH_CONFIG") {
        return Some(PathBuf::from(p));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("smith/config.toml"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/smith/config.toml"))
}

fn pick(flag: Option<String>, env: &str, file: Option<String>) -> Setting {
    if let Some(v) = flag.filter(|v| !v.is_empty()) {
        return Setting {
            value: Some(v),
            source: "flag".into(),
        };
    }
    if let Some(v) = std::env::var(env).ok().filter(|v| !v.is_empty()) {
        return Setting {
            value: Some(v),
            source: format!("env {env}"),
        };
    }
    if let Some(v) = file.filter(|v| !v.is_empty()) {
        return Setting {
            value: Some(v),
            source: "config file".into(),
        };
    }
    Setting {
        value: None,
        source: "unset".into(),
    }
}

pub fn resolve(flags: Flags) -> anyhow::Result<Effective> {
    let path = config_path();
    let file = match &path {
        Some(p) if p.exists() => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
            toml::from_str::<FileConfig>(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a valid smith config (keys: ca_url, ca_fingerprint, ssh_hosts): {e}",
                    p.display()
                )
            })?
        }
        _ => FileConfig::default(),
    };
    let token = pick(flags.token, "SMITH_TOKEN", None);
    let mut profile = pick(flags.profile, "SMITH_PROFILE", None);
    if profile.value.is_none() {
        profile = Setting {
            value: Some("default".into()),
            source: "default".into(),
        };
    }
    if let Some(p) = &profile.value {
        crate::keyring::check_profile(p).map_err(anyhow::Error::msg)?;
    }
    Ok(Effective {
        config_file: path.filter(|p| p.exists()).map(|p| p.display().to_string()),
        ca_url: pick(flags.ca_url, "SMITH_CA_URL", file.ca_url),
        ca_fingerprint: pick(
            flags.ca_fingerprint,
            "SMITH_CA_FINGERPRINT",
            file.ca_fingerprint,
        ),
        token_source: token.source.clone(),
        token,
        profile,
        ssh_auth_sock: std::env::var("SSH_AUTH_SOCK")
            .ok()
            .filter(|s| !s.is_empty()),
        ssh_hosts: file.ssh_hosts.as_ref().map(SshHosts::patterns),
    })
}

impl Effective {
    pub fn profile(&self) -> &str {
        self.profile.value.as_deref().unwrap_or("default")
    }

    /// The CA's URLs: the setting is one URL or a list of the CA's replicas
    /// (`SMITH_CA_URL=URL1,URL2`, `--ca-url` repeated), preferred first.
    pub fn ca_urls(&self) -> anyhow::Result<Vec<String>> {
        let urls = smith_api::replicas::split_urls(&[self.ca_url.value.as_deref().unwrap_or("")]);
        if urls.is_empty() {
            anyhow::bail!(
                "no CA URL: pass --ca-url https://HOST:PORT, set SMITH_CA_URL, or put ca_url in \
                 the config file (several replicas: SMITH_CA_URL=URL1,URL2)"
            );
        }
        Ok(urls)
    }

    /// The CA's first (preferred) URL: what sign-ins and the last certificate are kept
    /// under, whichever replica answers.
    pub fn ca_url(&self) -> anyhow::Result<String> {
        Ok(self.ca_urls()?.remove(0))
    }

    /// The credential for the CA: the token flag/env, else this profile's sign-in.
    pub fn credential(&self) -> anyhow::Result<Credential> {
        if let Some(t) = &self.token.value {
            return Ok(Credential::Token(t.clone()));
        }
        crate::login::kept_credential(self.profile(), &self.ca_url()?)
    }

    /// A pinned client for the CA with `token` as the bearer (or none).
    pub fn client_with(&self, token: Option<String>) -> anyhow::Result<smith_api::Client> {
        self.client_with_timeout(token, Duration::from_secs(30))
    }

    /// [`Effective::client_with`] whose requests give up after `timeout`.
    pub fn client_with_timeout(
        &self,
        token: Option<String>,
        timeout: Duration,
    ) -> anyhow::Result<smith_api::Client> {
        let urls = self.ca_urls()?;
        let fp = self.ca_fingerprint.value.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "no CA fingerprint: pass --ca-fingerprint SHA256:..., set SMITH_CA_FINGERPRINT, \
                 or put ca_fingerprint in the config file (ask your admin for it)"
            )
        })?;
        let replicas = failover_replicas(urls)?;
        Ok(smith_api::Client::new(smith_api::ClientOptions {
            token,
            unreachable_hint: Some(smith_api::client::CLI_UNREACHABLE_HINT),
            timeout,
            replicas: Some(replicas.clone()),
            ..smith_api::ClientOptions::new(replicas.url(0), smith_api::Trust::Fingerprint(fp))
        })?)
    }
}

/// The CA's replicas for one command: each request goes to the first that answers, and
/// a move to another one is said on stderr.
pub fn failover_replicas(urls: Vec<String>) -> anyhow::Result<std::sync::Arc<smith_api::Replicas>> {
    let r = smith_api::Replicas::with(
        urls,
        smith_api::replicas::DEFAULT_RETRY_PREFERRED,
        Some(Box::new(|f: &smith_api::replicas::Failover| {
            if !f.returned {
                eprintln!(
                    "smith: the CA replica {} did not answer; using {} ({})",
                    f.from, f.to, f.reason
                );
            }
        })),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(std::sync::Arc::new(r))
}
