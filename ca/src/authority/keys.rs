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
use std::path::Path;
use std::sync::Arc;

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
pub struct Keys {
    pub user_ca: Signer,
    pub host_ca: Signer,
    /// OpenSSH lines of the user CA keys hosts trust (the signing key first).
    pub user_ca_keys: Vec<String>,
    /// OpenSSH lines of the host CA keys clients trust.
    pub host_ca_keys: Vec<String>,
    pub tls_root: TlsRoot,
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
