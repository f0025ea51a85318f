//! The host's mTLS identity: its private key (`host.key`, ECDSA P-256), the client
//! certificate the CA issued (`host.crt`) and the pinned CA root (`ca.crt`).
//!
//! Owns: key and CSR generation (rcgen), reading the certificate's name and validity
//! (x509-parser), checking that key and certificate belong together, and when to
//! renew. Must never: write the private key anywhere but `host.key` (0600), or log it.

use smith_api::tls::{Identity, Trust};
use smith_proto::HostName;
use std::path::Path;

/// `host.key` mode.
pub const KEY_MODE: u32 = 0o600;
/// `host.crt` and `ca.crt` mode.
pub const CERT_MODE: u32 = 0o644;

/// A fresh key and a CSR naming the host (CN and DNS SAN = host name).
pub struct NewKey {
    pub key_pem: String,
    pub csr_pem: String,
}

pub fn generate_key_and_csr(host: &HostName) -> Result<NewKey, String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot generate the host key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()])
        .map_err(|e| format!("cannot build the certificate request: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host.as_str());
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("cannot sign the certificate request: {e}"))?;
    let csr_pem = csr
        .pem()
        .map_err(|e| format!("cannot encode the certificate request: {e}"))?;
    Ok(NewKey {
        key_pem: key.serialize_pem(),
        csr_pem,
    })
}

/// What hostd needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub common_name: Option<String>,
    pub not_before: u64,
    pub not_after: u64,
    /// The raw public key (subjectPublicKey bits).
    pub public_key: Vec<u8>,
    /// `SHA256:...` of the DER.
    pub fingerprint: String,
}

impl CertSummary {
    /// When to renew: at 2/3 of the lifetime.
    pub fn renew_at(&self) -> u64 {
        let life = self.not_after.saturating_sub(self.not_before);
        self.not_before + life * 2 / 3
    }
    pub fn is_valid_at(&self, now: u64) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// Parses the first certificate of a PEM text.
pub fn summarize_pem(pem: &[u8]) -> Result<CertSummary, String> {
    let (_, p) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
    summarize_der(&p.contents)
}

pub fn summarize_der(der: &[u8]) -> Result<CertSummary, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let ts = |t: i64| u64::try_from(t).unwrap_or(0);
    Ok(CertSummary {
        common_name,
        not_before: ts(cert.validity().not_before.timestamp()),
        not_after: ts(cert.validity().not_after.timestamp()),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        fingerprint: smith_api::tls::fingerprint(der),
    })
}

/// The DER of the first certificate in a PEM text.
pub fn first_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let certs = smith_api::tls::certs_from_pem(pem)?;
    certs
        .into_iter()
        .next()
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| "no certificate in PEM".to_string())
}

/// Whether `key_pem` is the private key of the certificate `cert_pem`.
pub fn key_matches_cert(key_pem: &str, cert_pem: &[u8]) -> Result<bool, String> {
    use rcgen::PublicKeyData;
    let key =
        rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("cannot read the host key: {e}"))?;
    let cert = summarize_pem(cert_pem)?;
    Ok(key.der_bytes() == cert.public_key.as_slice())
}

/// Everything needed to talk to the CA as this host.
#[derive(Debug, Clone)]
pub struct HostCredentials {
    pub trust: Trust,
    pub identity: Identity,
    pub cert: CertSummary,
    pub root_fingerprint: String,
}

/// Loads `ca.crt`, `host.crt` and `host.key`.
pub fn load_credentials(
    ca_bundle: &Path,
    host_cert: &Path,
    host_key: &Path,
) -> Result<HostCredentials, String> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| {
            format!(
                "cannot read {}: {e}\nhint: is this host enrolled? run `smith-host activate`",
                p.display()
            )
        })
    };
    let root_pem = read(ca_bundle)?;
    let cert_pem = read(host_cert)?;
    let key_pem = read(host_key)?;
    let root_der = first_der(&root_pem).map_err(|e| format!("{}: {e}", ca_bundle.display()))?;
    let cert = summarize_pem(&cert_pem).map_err(|e| format!("{}: {e}", host_cert.display()))?;
    Ok(HostCredentials {
        trust: Trust::RootPem(root_pem),
        identity: Identity { cert_pem, key_pem },
        cert,
        root_fingerprint: smith_api::tls::fingerprint(&root_der),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_names_the_host_and_key_matches() {
        let host = HostName::new("web-1").unwrap();
        let k = generate_key_and_csr(&host).unwrap();
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&k.csr_pem).unwrap();
        // Self-sign the CSR's key to get a certificate for the match check.
        let key = rcgen::KeyPair::from_pem(&k.key_pem).unwrap();
        let cert = csr.params.self_signed(&key).unwrap();
        let s = summarize_pem(cert.pem().as_bytes()).unwrap();
        assert_eq!(s.common_name.as_deref(), Some("web-1"));
        assert!(key_matches_cert(&k.key_pem, cert.pem().as_bytes()).unwrap());
        let other = generate_key_and_csr(&host).unwrap();
        assert!(!key_matches_cert(&other.key_pem, cert.pem().as_bytes()).unwrap());
        assert!(s.renew_at() > s.not_before);
    }
}
