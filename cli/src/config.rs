//! The CLI's effective configuration and where each value came from.
//!
//! Precedence: command-line flag, then environment (`SMITH_CA_URL`,
//! `SMITH_CA_FINGERPRINT`, `SMITH_TOKEN`), then the config file (`$SMITH_CONFIG`, else
//! `$XDG_CONFIG_HOME/smith/config.toml`, else `~/.config/smith/config.toml`) which may
//! hold `ca_url` and `ca_fingerprint` only.
//!
//! Must never: read a token from a file, or print a token (only whether one is set).

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub ca_url: Option<String>,
    pub ca_fingerprint: Option<String>,
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
    pub ssh_auth_sock: Option<String>,
}

/// Flag values as parsed by clap (no env fallback there: it is resolved here so the
/// source can be reported).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub ca_url: Option<String>,
    pub ca_fingerprint: Option<String>,
    pub token: Option<String>,
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
                    "{} is not a valid smith config (keys: ca_url, ca_fingerprint): {e}",
                    p.display()
                )
            })?
        }
        _ => FileConfig::default(),
    };
    let token = pick(flags.token, "SMITH_TOKEN", None);
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
        ssh_auth_sock: std::env::var("SSH_AUTH_SOCK")
            .ok()
            .filter(|s| !s.is_empty()),
    })
}

impl Effective {
    pub fn client(&self) -> anyhow::Result<smith_api::Client> {
        let url = self.ca_url.value.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "no CA URL: pass --ca-url https://HOST:PORT, set SMITH_CA_URL, or put ca_url in \
                 the config file"
            )
        })?;
        let fp = self.ca_fingerprint.value.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "no CA fingerprint: pass --ca-fingerprint SHA256:..., set SMITH_CA_FINGERPRINT, \
                 or put ca_fingerprint in the config file (ask your admin for it)"
            )
        })?;
        let token = self.token.value.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "no token: pass --token or set SMITH_TOKEN (your admin mints one with \
                 `smith-ca admin user token NAME`)"
            )
        })?;
        Ok(smith_api::Client::new(smith_api::ClientOptions {
            base_url: url,
            trust: smith_api::Trust::Fingerprint(fp),
            token: Some(token),
            identity: None,
            timeout: std::time::Duration::from_secs(30),
        })?)
    }
}
