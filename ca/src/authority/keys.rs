//! The CA's keys as the authority holds them: a [`Signer`] per CA role (user CA, host
//! CA), the OpenSSH lines it publishes for each, and the TLS root.
//!
//! Where a CA key lives is said by `[keys]` in `D/ca.toml` (`user_ca = "pkcs11:..."`,
//! `host_ca = "pkcs11:..."`); a role not named there uses its key file in the data
//! directory (`D/user_ca`, `D/host_ca`). A token key's published public key is its
//! `.pub` file, written by `smith-ca init`; the token must prove it holds that key before
//! the CA starts.
//!
//! Must never: start with a token key that does not verify under the published key, or
//! read a PIN from anywhere but its pin-source.

use super::{Authority, Error};
use crate::datadir::DataDir;
use crate::signer::pkcs11::TokenKey;
use crate::signer::uri::Pkcs11Uri;
use crate::signer::{CaSigner, Signer};
use crate::tlsca::TlsRoot;
use anyhow::Context;
use ssh_key::{PrivateKey, PublicKey};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// The `[keys]` section of `D/ca.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// The user CA key's PKCS#11 URI (absent: the `user_ca` key file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_ca: Option<String>,
    /// The host CA key's PKCS#11 URI (absent: the `host_ca` key file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ca: Option<String>,
}

/// The CA's keys: the user CA and host CA signers, the TLS root.
///
/// `user_ca` and `host_ca` are the keys the data directory names (key file or ca.toml);
/// once a role was rotated, the model's key set (`crate::cakeys`) says which key signs
/// and which are published, and their signers are opened on first use and kept.
pub struct Keys {
    pub user_ca: Signer,
    pub host_ca: Signer,
    /// OpenSSH lines of the user CA keys hosts trust (the signing key first).
    pub user_ca_keys: Vec<String>,
    /// OpenSSH lines of the host CA keys clients trust.
    pub host_ca_keys: Vec<String>,
    pub tls_root: TlsRoot,
    /// Where `user_ca` and `host_ca` are: `file:NAME` or their PKCS#11 URI.
    pub user_ca_source: String,
    pub host_ca_source: String,
    /// The data directory (key files of rotated keys live there).
    pub(super) dd: Option<DataDir>,
    /// Signers of rotated keys, by their key (type and base64, no comment).
    pub(super) opened: RwLock<HashMap<String, Signer>>,
}

/// A public key line without its comment: what identifies a CA key.
pub fn key_of(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Keys {
    /// The signer of the key `public` kept at `source` (opened once, then kept).
    pub fn open_rotated(&self, public: &str, source: &str) -> anyhow::Result<Signer> {
        let id = key_of(public);
        if let Some(s) = self
            .opened
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(s.clone());
        }
        for (line, s) in [
            (&self.user_ca_keys, &self.user_ca),
            (&self.host_ca_keys, &self.host_ca),
        ] {
            if line.first().is_some_and(|l| key_of(l) == id) {
                return Ok(s.clone());
            }
        }
        let published = PublicKey::from_openssh(public.trim())
            .with_context(|| format!("'{public}' is not an OpenSSH public key"))?;
        let signer = if let Some(name) = source.strip_prefix("file:") {
            let dd = self
                .dd
                .as_ref()
                .context("no data directory to read CA key files from")?;
            let key = read_key(dd, &dd.root.join(name))?;
            if key.public_key().key_data() != published.key_data() {
                anyhow::bail!("{name} is not the key {public}");
            }
            Signer::File(Arc::new(CaSigner::new(&key)?))
        } else {
            let uri = Pkcs11Uri::parse(source)?;
            Signer::Token(Arc::new(TokenKey::open(&uri, published.key_data())?))
        };
        self.opened
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, signer.clone());
        Ok(signer)
    }
}

fn read_key(dd: &DataDir, path: &Path) -> anyhow::Result<PrivateKey> {
    let text = dd.read_secret(path)?;
    PrivateKey::from_openssh(text.trim())
        .with_context(|| format!("{} is not an OpenSSH private key", path.display()))
}

/// The signer of one CA role and its published OpenSSH line.
pub fn open_signer(
    dd: &DataDir,
    what: &str,
    uri: Option<&str>,
    private: &Path,
    public: &Path,
) -> anyhow::Result<(Signer, String)> {
    match uri {
        Some(uri) => {
            let uri =
                Pkcs11Uri::parse(uri).with_context(|| format!("[keys] of ca.toml, {what}"))?;
            let line = dd.read(public)?.trim().to_string();
            let published = PublicKey::from_openssh(&line)
                .with_context(|| format!("{} is not an OpenSSH public key", public.display()))?;
            let key = TokenKey::open(&uri, published.key_data())
                .with_context(|| format!("cannot use the {what} key {uri}"))?;
            Ok((Signer::Token(Arc::new(key)), line))
        }
        None => {
            let key = read_key(dd, private)?;
            let line = key.public_key().to_openssh()?;
            let signer = CaSigner::new(&key)
                .with_context(|| format!("{} is not a usable key", private.display()))?;
            Ok((Signer::File(Arc::new(signer)), line))
        }
    }
}

/// `[keys]` of `D/ca.toml` (empty when the file or the section is absent).
pub fn keys_file(dd: &DataDir) -> anyhow::Result<KeysFile> {
    let file = crate::oidc::read_ca_file(&dd.root).map_err(anyhow::Error::msg)?;
    Ok(file.keys.unwrap_or_default())
}

impl Keys {
    /// The keys of the data directory `dd` (and the tokens its ca.toml names).
    pub fn load(dd: &DataDir) -> anyhow::Result<Keys> {
        let kf = keys_file(dd)?;
        let source = |uri: &Option<String>, file: &str| {
            uri.clone().unwrap_or_else(|| format!("file:{file}"))
        };
        let (user_ca_source, host_ca_source) = (
            source(&kf.user_ca, "user_ca"),
            source(&kf.host_ca, "host_ca"),
        );
        let (user_ca, user_line) = open_signer(
            dd,
            "user CA",
            kf.user_ca.as_deref(),
            &dd.user_ca(),
            &dd.user_ca_pub(),
        )?;
        let (host_ca, host_line) = open_signer(
            dd,
            "host CA",
            kf.host_ca.as_deref(),
            &dd.host_ca(),
            &dd.host_ca_pub(),
        )?;
        let tls_root = TlsRoot::load(
            &dd.read(&dd.tls_root_cert())?,
            &dd.read_secret(&dd.tls_root_key())?,
        )
        .context("cannot load the TLS root")?;
        Ok(Keys {
            user_ca,
            host_ca,
            user_ca_keys: vec![user_line],
            host_ca_keys: vec![host_line],
            tls_root,
            user_ca_source,
            host_ca_source,
            dd: Some(dd.clone()),
            opened: RwLock::new(HashMap::new()),
        })
    }
}

/// A CA key's readiness, as `/v1/health` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignerStatus {
    pub role: &'static str,
    /// `file` or the key's PKCS#11 URI.
    pub source: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Authority {
    /// Whether each CA key signs now (tokens are asked at most once a second).
    pub fn signers_ready(&self) -> Vec<SignerStatus> {
        [
            ("user_ca", &self.keys.user_ca),
            ("host_ca", &self.keys.host_ca),
        ]
        .into_iter()
        .map(|(role, s)| {
            let r = s.probe();
            SignerStatus {
                role,
                source: s.source(),
                ok: r.is_ok(),
                error: r.err(),
            }
        })
        .collect()
    }

    /// The error for a failed signature by `signer`: unavailable when its token is
    /// down (503, retry), internal otherwise.
    pub(super) fn sign_failed(
        &self,
        which: &'static str,
        signer: &Signer,
        context: &'static str,
        e: impl std::fmt::Display,
    ) -> Error {
        match signer.down() {
            Some(detail) => Error::SignerUnavailable { which, detail },
            None => Error::internal(context, e),
        }
    }
}
