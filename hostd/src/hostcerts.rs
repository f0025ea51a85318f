//! The host's SSH host certificates (`/etc/ssh/ssh_host_*_key-cert.pub`, sshd's
//! `HostCertificate`): which ones hostd keeps renewed, when they are due, checking the
//! certificates the CA returns, and replacing them.
//!
//! Managed certificates are those `smith-host activate` wrote (owned entries of the
//! activation manifest) for host keys that still exist: the drop-in names exactly
//! those, and `deactivate` removes exactly those. A certificate is due at 2/3 of its
//! lifetime, or when its file is missing, unreadable, or for another key.
//!
//! Owns: that list, the due check, the validation of renewed certificates (a host
//! certificate, for the key we sent, naming this host, valid now and for longer than
//! the current one) and their atomic replacement. Must never: replace a certificate with
//! one that fails those checks, or leave a half-written file (a failed renewal keeps the
//! old certificates: sshd keeps presenting them).

use crate::activate::manifest::{Kind, Manifest};
use crate::paths::{host_cert_path_for, HostPaths};
use smith_proto::HostName;
use std::path::PathBuf;

/// Mode of a host certificate file.
pub const CERT_MODE: u32 = 0o644;

/// One host key whose certificate hostd keeps renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    pub key_path: PathBuf,
    /// The public key, one OpenSSH line (what the renewal sends).
    pub key_line: String,
    pub cert_path: PathBuf,
}

/// What the current certificate file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertState {
    Missing,
    /// Unreadable, not a host certificate, or for another key.
    Invalid(String),
    /// Valid; due for renewal from `renew_at`.
    Current {
        renew_at: u64,
        valid_before: u64,
    },
}

impl CertState {
    pub fn due(&self, now: u64) -> bool {
        match self {
            CertState::Current { renew_at, .. } => now >= *renew_at,
            _ => true,
        }
    }
}

/// The managed host certificates (empty on a host activate did not give any).
pub fn managed(paths: &HostPaths) -> Vec<Managed> {
    let Ok(Some(manifest)) = Manifest::load(&paths.manifest) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for key_path in paths.ssh_host_public_keys() {
        let cert_path = host_cert_path_for(&key_path);
        if !manifest
            .entry(&cert_path)
            .is_some_and(|e| e.kind == Kind::Owned)
        {
            continue;
        }
        let line = std::fs::read_to_string(&key_path)
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.trim().to_string()));
        if let Some(l) = line.filter(|l| ssh_key::PublicKey::from_openssh(l).is_ok()) {
            out.push(Managed {
                key_path,
                key_line: l,
                cert_path,
            });
        }
    }
    out
}

/// When a certificate valid from `after` to `before` is due: at 2/3 of its lifetime.
pub fn renew_at(after: u64, before: u64) -> u64 {
    after + before.saturating_sub(after) / 3 * 2
}

fn same_key(cert: &ssh_key::Certificate, key_line: &str) -> bool {
    ssh_key::PublicKey::from_openssh(key_line).is_ok_and(|k| k.key_data() == cert.public_key())
}

/// Reads a certificate line and checks it is a host certificate for `key_line`.
fn parse_for(line: &str, key_line: &str) -> Result<ssh_key::Certificate, String> {
    let cert = ssh_key::Certificate::from_openssh(line.trim())
        .map_err(|e| format!("not an OpenSSH certificate: {e}"))?;
    if !cert.cert_type().is_host() {
        return Err("not a host certificate".into());
    }
    if !same_key(&cert, key_line) {
        return Err("certifies another key".into());
    }
    Ok(cert)
}

/// The state of `m`'s certificate file.
pub fn state(m: &Managed) -> CertState {
    let text = match std::fs::read_to_string(&m.cert_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return CertState::Missing,
        Err(e) => return CertState::Invalid(e.to_string()),
    };
    match parse_for(text.lines().next().unwrap_or(""), &m.key_line) {
        Ok(c) => CertState::Current {
            renew_at: renew_at(c.valid_after(), c.valid_before()),
            valid_before: c.valid_before(),
        },
        Err(e) => CertState::Invalid(e),
    }
}

/// Whether any managed certificate is due.
pub fn any_due(managed: &[Managed], now: u64) -> bool {
    managed.iter().any(|m| state(m).due(now))
}

/// Whether any managed certificate was signed by another key than `signing` (the host
/// CA key the CA signs with now, from the last sync): after a host CA rotation's switch
/// the host renews onto the new key at once. `None` (an older CA): never.
pub fn any_from_another_ca(managed: &[Managed], signing: Option<&str>) -> bool {
    let Some(signing) = signing.and_then(|l| ssh_key::PublicKey::from_openssh(l.trim()).ok())
    else {
        return false;
    };
    managed.iter().any(|m| {
        std::fs::read_to_string(&m.cert_path)
            .ok()
            .and_then(|t| parse_for(t.lines().next().unwrap_or(""), &m.key_line).ok())
            .is_some_and(|c| c.signature_key() != signing.key_data())
    })
}

/// Checks the CA's answer for `managed` (same order): every certificate must be a host
/// certificate for the key we sent, name `host`, be valid now, and outlive the current
/// one. Returns the lines to write.
pub fn check_renewed(
    managed: &[Managed],
    certs: &[String],
    host: &HostName,
    now: u64,
) -> Result<Vec<String>, String> {
    if certs.len() != managed.len() {
        return Err(format!(
            "the CA returned {} host certificate(s) for {} key(s)",
            certs.len(),
            managed.len()
        ));
    }
    let mut out = Vec::new();
    for (m, line) in managed.iter().zip(certs) {
        let line = line.trim();
        let what = m.key_path.display();
        if line.contains('\n') {
            return Err(format!("the certificate for {what} spans several lines"));
        }
        let cert = parse_for(line, &m.key_line).map_err(|e| format!("{what}: {e}"))?;
        if !cert.valid_principals().iter().any(|p| p == host.as_str()) {
            return Err(format!(
                "{what}: the certificate does not name {host} (principals: {})",
                cert.valid_principals().join(",")
            ));
        }
        // A minute of clock skew between the CA and this host is tolerated.
        if cert.valid_after() > now + 60 || cert.valid_before() <= now {
            return Err(format!("{what}: the certificate is not valid now"));
        }
        if let CertState::Current { valid_before, .. } = state(m) {
            if cert.valid_before() < valid_before {
                return Err(format!(
                    "{what}: the new certificate expires before the current one"
                ));
            }
        }
        out.push(line.to_string());
    }
    Ok(out)
}

/// Writes the certificates (atomically, one by one). Returns the paths whose content
/// changed. On an error the files already replaced hold valid new certificates and the
/// others their old ones.
pub fn write(managed: &[Managed], lines: &[String]) -> std::io::Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    for (m, line) in managed.iter().zip(lines) {
        let bytes = format!("{line}\n");
        if crate::fsutil::read_optional(&m.cert_path)?.as_deref() == Some(bytes.as_bytes()) {
            continue;
        }
        crate::fsutil::atomic_write(&m.cert_path, bytes.as_bytes(), CERT_MODE)?;
        changed.push(m.cert_path.clone());
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;
    use ssh_key::certificate::{Builder, CertType};
    use ssh_key::{Algorithm, PrivateKey};

    fn cert_for(key: &PrivateKey, ty: CertType, principal: &str, from: u64, to: u64) -> String {
        let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let mut b = Builder::new_with_random_nonce(
            &mut OsRng,
            key.public_key().key_data().clone(),
            from,
            to,
        )
        .unwrap();
        b.cert_type(ty).unwrap().valid_principal(principal).unwrap();
        b.sign(&ca).unwrap().to_openssh().unwrap()
    }

    #[test]
    fn due_at_two_thirds_missing_or_wrong_and_renewals_checked() {
        let d = tempfile::tempdir().unwrap();
        let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let other = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let m = Managed {
            key_path: d.path().join("ssh_host_ed25519_key.pub"),
            key_line: key.public_key().to_openssh().unwrap(),
            cert_path: d.path().join("ssh_host_ed25519_key-cert.pub"),
        };
        let host = HostName::new("web-1").unwrap();
        let now = 1_700_000_000;
        assert_eq!(state(&m), CertState::Missing);
        assert!(state(&m).due(now));
        // 0..300: due from 200.
        std::fs::write(
            &m.cert_path,
            cert_for(&key, CertType::Host, "web-1", now - 100, now + 200),
        )
        .unwrap();
        assert!(!state(&m).due(now));
        assert!(state(&m).due(now + 100));
        // A certificate for another key, or a user certificate: due (replace it).
        std::fs::write(
            &m.cert_path,
            cert_for(&other, CertType::Host, "web-1", now - 100, now + 200),
        )
        .unwrap();
        assert!(matches!(state(&m), CertState::Invalid(_)));
        std::fs::write(
            &m.cert_path,
            cert_for(&key, CertType::User, "web-1", now - 100, now + 200),
        )
        .unwrap();
        assert!(matches!(state(&m), CertState::Invalid(_)));

        let ms = vec![m.clone()];
        let good = cert_for(&key, CertType::Host, "web-1", now - 60, now + 3600);
        assert_eq!(
            check_renewed(&ms, std::slice::from_ref(&good), &host, now).unwrap(),
            vec![good.clone()]
        );
        for (bad, why) in [
            (
                cert_for(&other, CertType::Host, "web-1", now - 60, now + 3600),
                "another key",
            ),
            (
                cert_for(&key, CertType::User, "web-1", now - 60, now + 3600),
                "host certificate",
            ),
            (
                cert_for(&key, CertType::Host, "web-2", now - 60, now + 3600),
                "does not name",
            ),
            (
                cert_for(&key, CertType::Host, "web-1", now - 600, now - 1),
                "not valid now",
            ),
            ("garbage".to_string(), "not an OpenSSH certificate"),
        ] {
            let e = check_renewed(&ms, &[bad], &host, now).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
        assert!(check_renewed(&ms, &[], &host, now).is_err());

        // Writing: only changed files are reported.
        let changed = write(&ms, std::slice::from_ref(&good)).unwrap();
        assert_eq!(changed, vec![m.cert_path.clone()]);
        assert!(write(&ms, &[good]).unwrap().is_empty());
        assert!(!state(&m).due(now));
    }
}
