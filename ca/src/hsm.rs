//! CA keys in PKCS#11 tokens, as the operator meets them: `smith-ca init --user-ca
//! pkcs11:... --host-ca pkcs11:...` (use the key the URI names, or generate it on the
//! token) and `smith-ca hsm selftest` (sign and verify a test certificate with each CA
//! key, print the public keys).
//!
//! Must never: write a token key's private half anywhere (there is none to write: keys
//! are generated inside the token, sensitive and not extractable), or write a PIN.

use crate::authority::keys::{keys_file, open_signer, KeysFile};
use crate::datadir::DataDir;
use crate::signer::pkcs11::{find_or_generate, TokenAlg, TokenKey};
use crate::signer::uri::Pkcs11Uri;
use crate::signer::Signer;
use crate::sshca::{self, CaAlgorithm};
use anyhow::Context;
use ssh_key::{HashAlg, PublicKey};
use std::path::Path;
use std::time::Instant;

/// A new CA key for `smith-ca init`: (the private key file's text, `None` for a token
/// key; the OpenSSH public key line).
pub fn ca_key(
    what: &str,
    comment: &str,
    alg: CaAlgorithm,
    uri: Option<&str>,
) -> anyhow::Result<(Option<String>, String)> {
    let Some(uri) = uri else {
        let key = sshca::generate(alg, comment)?;
        return Ok((
            Some(sshca::private_openssh(&key)?),
            key.public_key().to_openssh()?,
        ));
    };
    let uri = Pkcs11Uri::parse(uri).with_context(|| format!("the {what} key"))?;
    let talg = match alg {
        CaAlgorithm::EcdsaP256 => TokenAlg::EcdsaP256,
        CaAlgorithm::Ed25519 => TokenAlg::Ed25519,
        other => anyhow::bail!(
            "a {what} key in a token is ecdsa-p256 or ed25519, not {}",
            other.as_str()
        ),
    };
    let on = find_or_generate(&uri, talg).with_context(|| format!("the {what} key {uri}"))?;
    // Prove the token signs with it before the CA publishes it.
    TokenKey::open(&uri, &on.public).with_context(|| format!("the {what} key {uri}"))?;
    let public = PublicKey::new(on.public, comment);
    let line = public.to_openssh()?;
    tracing::info!(
        key = %uri,
        generated = on.generated,
        alg = on.alg.as_str(),
        fingerprint = %public.fingerprint(HashAlg::Sha256),
        "{what} key in the token"
    );
    Ok((None, line))
}

/// The `ca.toml` text naming the token keys, if any.
pub fn keys_toml(user_ca: Option<&str>, host_ca: Option<&str>) -> anyhow::Result<Option<String>> {
    if user_ca.is_none() && host_ca.is_none() {
        return Ok(None);
    }
    for (what, u) in [("--user-ca", user_ca), ("--host-ca", host_ca)] {
        if let Some(u) = u {
            Pkcs11Uri::parse(u).with_context(|| what.to_string())?;
        }
    }
    #[derive(serde::Serialize)]
    struct File<'a> {
        keys: &'a KeysFile,
    }
    let keys = KeysFile {
        user_ca: user_ca.map(str::to_string),
        host_ca: host_ca.map(str::to_string),
    };
    let body = toml::to_string(&File { keys: &keys })?;
    Ok(Some(format!(
        "# Written by `smith-ca init`. The CA keys named here live in a PKCS#11 token;\n\
         # their PINs come from each URI's pin-source, never from this file.\n{body}"
    )))
}

/// One CA key's self-test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SelfTest {
    pub role: &'static str,
    /// `file` or the PKCS#11 URI.
    pub source: String,
    pub public_key: String,
    pub fingerprint: String,
    /// Microseconds to sign the test certificate.
    pub sign_us: u64,
    pub verified: bool,
}

/// `smith-ca hsm selftest`: each CA key of `dd` (as `serve` would load it) signs a test
/// certificate, which is verified against the published key.
pub fn selftest(dd: &DataDir) -> anyhow::Result<Vec<SelfTest>> {
    let kf = keys_file(dd)?;
    let mut out = Vec::new();
    for (role, uri, private, public) in [
        ("user_ca", kf.user_ca, dd.user_ca(), dd.user_ca_pub()),
        ("host_ca", kf.host_ca, dd.host_ca(), dd.host_ca_pub()),
    ] {
        let (signer, line) = open_signer(dd, role, uri.as_deref(), &private, &public)?;
        out.push(test_one(role, &signer, &line)?);
    }
    Ok(out)
}

fn test_one(role: &'static str, signer: &Signer, line: &str) -> anyhow::Result<SelfTest> {
    let published = PublicKey::from_openssh(line)?;
    let fp = published.fingerprint(HashAlg::Sha256);
    let subject = sshca::generate(CaAlgorithm::Ed25519, "selftest")?;
    let now = crate::authority::now();
    let t = Instant::now();
    let cert = if role == "user_ca" {
        sshca::sign_user_cert(
            signer,
            subject.public_key(),
            &sshca::UserCertSpec {
                serial: 1,
                key_id: "smith-hsm-selftest",
                principals: &["selftest".to_string()],
                valid_after: now.saturating_sub(60),
                valid_before: now + 60,
                source_address: None,
                scope: None,
                permits: Default::default(),
                force_command: None,
                grants: None,
            },
        )
    } else {
        sshca::sign_host_cert(
            signer,
            subject.public_key(),
            1,
            "smith-hsm-selftest",
            &["selftest.invalid".to_string()],
            now.saturating_sub(60),
            now + 60,
        )
    }
    .with_context(|| format!("the {role} key ({}) cannot sign", signer.source()))?;
    let sign_us = t.elapsed().as_micros() as u64;
    cert.validate_at(now, &[fp])
        .with_context(|| format!("the {role} key's test certificate does not verify"))?;
    Ok(SelfTest {
        role,
        source: signer.source(),
        public_key: line.to_string(),
        fingerprint: fp.to_string(),
        sign_us,
        verified: true,
    })
}

/// `smith-ca hsm selftest --data-dir D [--json]`.
pub fn run_selftest(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let dd = DataDir::new(data_dir);
    let r = selftest(&dd)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for t in &r {
            println!(
                "{}: signed and verified a test certificate in {} us\n  key: {}\n  fingerprint: {}\n  public key: {}",
                t.role, t.sign_us, t.source, t.fingerprint, t.public_key
            );
        }
    }
    Ok(())
}
