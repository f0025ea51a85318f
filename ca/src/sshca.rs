//! OpenSSH CA keys and certificates: generating the user and host CA keys, signing user
//! certificates (principals, permits and `grants@smith` from the grants they are issued
//! under) and host certificates.
//!
//! Must never: sign a certificate without explicit principals (an empty list is a
//! "golden ticket" to OpenSSH), or accept a certificate or a weak key as the key to sign.

use rand::rngs::OsRng;
use ssh_key::certificate::{Builder, CertType};
use ssh_key::private::RsaKeypair;
use ssh_key::{Algorithm, Certificate, EcdsaCurve, HashAlg, LineEnding, PrivateKey, PublicKey};

/// RSA CA keys are generated with this many bits (signatures are rsa-sha2-512).
pub const RSA_BITS: usize = 3072;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaAlgorithm {
    Ed25519,
    EcdsaP256,
    EcdsaP384,
    Rsa,
}

impl CaAlgorithm {
    pub fn parse(s: &str) -> Result<CaAlgorithm, String> {
        Ok(match s {
            "ed25519" => CaAlgorithm::Ed25519,
            "ecdsa-p256" => CaAlgorithm::EcdsaP256,
            "ecdsa-p384" => CaAlgorithm::EcdsaP384,
            "rsa" => CaAlgorithm::Rsa,
            _ => {
                return Err(format!(
                    "unknown CA key algorithm '{}': use ed25519, ecdsa-p256, ecdsa-p384 or rsa",
                    s.escape_debug()
                ))
            }
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CaAlgorithm::Ed25519 => "ed25519",
            CaAlgorithm::EcdsaP256 => "ecdsa-p256",
            CaAlgorithm::EcdsaP384 => "ecdsa-p384",
            CaAlgorithm::Rsa => "rsa",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshCaError {
    #[error("cannot generate the key: {0}")]
    Keygen(ssh_key::Error),
    #[error("cannot sign the certificate: {0}")]
    Sign(ssh_key::Error),
    #[error("{0}")]
    BadKey(String),
}

/// Generates a CA key with `comment`.
pub fn generate(alg: CaAlgorithm, comment: &str) -> Result<PrivateKey, SshCaError> {
    let mut key = match alg {
        CaAlgorithm::Ed25519 => PrivateKey::random(&mut OsRng, Algorithm::Ed25519),
        CaAlgorithm::EcdsaP256 => PrivateKey::random(
            &mut OsRng,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        ),
        CaAlgorithm::EcdsaP384 => PrivateKey::random(
            &mut OsRng,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
        ),
        CaAlgorithm::Rsa => RsaKeypair::random(&mut OsRng, RSA_BITS)
            .and_then(|k| PrivateKey::new(k.into(), comment)),
    }
    .map_err(SshCaError::Keygen)?;
    key.set_comment(comment);
    Ok(key)
}

/// OpenSSH private key text of `key`.
pub fn private_openssh(key: &PrivateKey) -> Result<String, SshCaError> {
    key.to_openssh(LineEnding::LF)
        .map(|z| z.to_string())
        .map_err(SshCaError::Keygen)
}

/// Parses an OpenSSH public key line to certify and checks it is acceptable: not a
/// certificate, not DSA, RSA at least 2048 bits.
pub fn parse_subject_key(line: &str) -> Result<PublicKey, SshCaError> {
    let line = line.trim();
    if line.len() > 16 * 1024 {
        return Err(SshCaError::BadKey("public key is too long".into()));
    }
    if line.contains("-cert-v01@openssh.com") {
        return Err(SshCaError::BadKey(
            "a certificate was sent where a public key is expected".into(),
        ));
    }
    let key = PublicKey::from_openssh(line).map_err(|e| {
        SshCaError::BadKey(format!(
            "not an OpenSSH public key line (`ssh-ed25519 AAAA...`): {e}"
        ))
    })?;
    match key.key_data() {
        ssh_key::public::KeyData::Ed25519(_)
        | ssh_key::public::KeyData::Ecdsa(_)
        | ssh_key::public::KeyData::SkEd25519(_)
        | ssh_key::public::KeyData::SkEcdsaSha2NistP256(_) => Ok(key),
        ssh_key::public::KeyData::Rsa(rsa) => {
            let bits = rsa.n.as_positive_bytes().map(|b| b.len() * 8).unwrap_or(0);
            if bits < 2048 {
                Err(SshCaError::BadKey(format!(
                    "RSA key of {bits} bits is too weak; use ed25519 or RSA >= 2048 bits"
                )))
            } else {
                Ok(key)
            }
        }
        _ => Err(SshCaError::BadKey(format!(
            "key type {} is not accepted; use ed25519, ecdsa or rsa",
            key.algorithm()
        ))),
    }
}

/// What goes into a user certificate.
pub struct UserCertSpec<'a> {
    pub serial: u64,
    pub key_id: &'a str,
    /// The user's login first (never empty), then what the grants add.
    pub principals: &'a [String],
    pub valid_after: u64,
    pub valid_before: u64,
    /// `source-address` critical option (comma-separated CIDRs).
    pub source_address: Option<String>,
    /// `scope@smith` extension text (what was asked; read by hosts of older Smith
    /// versions); `None` = no extension.
    pub scope: Option<String>,
    /// The `permit-*` extensions.
    pub permits: smith_proto::grants::Permits,
    /// `force-command` critical option.
    pub force_command: Option<&'a str>,
    /// `grants@smith` extension text (the authorizing grants).
    pub grants: Option<&'a str>,
}

pub fn sign_user_cert<S: ssh_key::SigningKey>(
    ca: &S,
    subject: &PublicKey,
    spec: &UserCertSpec<'_>,
) -> Result<Certificate, SshCaError> {
    let mut b = Builder::new_with_random_nonce(
        &mut OsRng,
        subject.key_data().clone(),
        spec.valid_after,
        spec.valid_before,
    )
    .map_err(SshCaError::Sign)?;
    b.serial(spec.serial)
        .and_then(|b| b.cert_type(CertType::User))
        .and_then(|b| b.key_id(spec.key_id))
        .map_err(SshCaError::Sign)?;
    if spec.principals.is_empty() {
        return Err(SshCaError::Sign(ssh_key::Error::FormatEncoding));
    }
    for p in spec.principals {
        b.valid_principal(p.as_str()).map_err(SshCaError::Sign)?;
    }
    if let Some(c) = spec.force_command {
        b.critical_option("force-command", c)
            .map_err(SshCaError::Sign)?;
    }
    if let Some(sa) = &spec.source_address {
        b.critical_option("source-address", sa.as_str())
            .map_err(SshCaError::Sign)?;
    }
    for ext in spec.permits.extensions() {
        b.extension(ext, "").map_err(SshCaError::Sign)?;
    }
    if let Some(g) = spec.grants.filter(|g| !g.is_empty()) {
        b.extension(smith_proto::grants::GRANTS_EXTENSION, g)
            .map_err(SshCaError::Sign)?;
    }
    if let Some(scope) = spec.scope.as_deref().filter(|s| !s.is_empty()) {
        b.extension(smith_proto::sshcert::SCOPE_EXTENSION, scope)
            .map_err(SshCaError::Sign)?;
    }
    b.sign(ca).map_err(SshCaError::Sign)
}

/// Signs an SSH host key with the host CA, principals = the host's names.
pub fn sign_host_cert<S: ssh_key::SigningKey>(
    ca: &S,
    host_key: &PublicKey,
    serial: u64,
    key_id: &str,
    principals: &[String],
    valid_after: u64,
    valid_before: u64,
) -> Result<Certificate, SshCaError> {
    if principals.is_empty() {
        return Err(SshCaError::BadKey(
            "a host certificate needs principals".into(),
        ));
    }
    let mut b = Builder::new_with_random_nonce(
        &mut OsRng,
        host_key.key_data().clone(),
        valid_after,
        valid_before,
    )
    .map_err(SshCaError::Sign)?;
    b.serial(serial)
        .and_then(|b| b.cert_type(CertType::Host))
        .and_then(|b| b.key_id(key_id))
        .map_err(SshCaError::Sign)?;
    for p in principals {
        b.valid_principal(p.as_str()).map_err(SshCaError::Sign)?;
    }
    b.sign(ca).map_err(SshCaError::Sign)
}

/// SHA-256 fingerprint of a public key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use smith_proto::sshcert;

    fn spec(scope: Option<&str>, sa: Option<&str>) -> UserCertSpec<'static> {
        UserCertSpec {
            serial: 42,
            key_id: "smith:alice:0123456789abcdef",
            principals: Vec::leak(vec!["alice".to_string()]),
            valid_after: 1000,
            valid_before: 5000,
            source_address: sa.map(str::to_string),
            scope: scope.map(str::to_string),
            permits: Default::default(),
            force_command: None,
            grants: None,
        }
    }

    #[test]
    fn scope_extension_round_trips_through_the_proto_reader() {
        let ca = generate(CaAlgorithm::Ed25519, "test-ca").unwrap();
        let subject = generate(CaAlgorithm::Ed25519, "alice").unwrap();
        let cert = sign_user_cert(
            &ca,
            subject.public_key(),
            &spec(Some("env=prod,role=web"), Some("10.0.0.0/8,192.168.1.0/24")),
        )
        .unwrap();
        let blob = cert.to_bytes().unwrap();
        let info = sshcert::parse_cert(&blob).unwrap();
        assert_eq!(info.scope().as_deref(), Some("env=prod,role=web"));
        assert_eq!(info.serial, 42);
        assert_eq!(info.key_id, "smith:alice:0123456789abcdef");
        assert_eq!(info.principals, vec!["alice"]);
        assert_eq!((info.valid_after, info.valid_before), (1000, 5000));
        assert!(info.is_user_cert());
        let names: Vec<&str> = info.extensions.iter().map(|(n, _)| n.as_str()).collect();
        for p in smith_proto::grants::Permits::default().extensions() {
            assert!(names.contains(&p), "{p} missing from {names:?}");
        }
        assert!(!names.contains(&"permit-agent-forwarding"), "{names:?}");
        // The critical option's data is an SSH string holding the CIDR list.
        let (_, data) = info
            .critical_options
            .iter()
            .find(|(n, _)| n == "source-address")
            .unwrap();
        assert_eq!(&data[4..], b"10.0.0.0/8,192.168.1.0/24");
        // Signature verifies against the CA key.
        cert.validate_at(2000, &[ca.public_key().fingerprint(HashAlg::Sha256)])
            .unwrap();
    }

    #[test]
    fn no_scope_means_no_extension() {
        let ca = generate(CaAlgorithm::EcdsaP256, "test-ca").unwrap();
        let subject = generate(CaAlgorithm::Ed25519, "alice").unwrap();
        let cert = sign_user_cert(&ca, subject.public_key(), &spec(None, None)).unwrap();
        let info = sshcert::parse_cert(&cert.to_bytes().unwrap()).unwrap();
        assert_eq!(info.scope(), None);
        assert!(info.critical_options.is_empty());
    }

    #[test]
    fn refuses_bad_subject_keys() {
        assert!(parse_subject_key("garbage").is_err());
        assert!(parse_subject_key("ssh-ed25519-cert-v01@openssh.com AAAA").is_err());
        let k = generate(CaAlgorithm::Ed25519, "x").unwrap();
        let line = k.public_key().to_openssh().unwrap();
        assert!(parse_subject_key(&line).is_ok());
        assert!(parse_subject_key(&"A".repeat(20000)).is_err());
    }
}
