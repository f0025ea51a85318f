//! The CA's TLS side: the root (ECDSA P-256, 10 years), the HTTPS server certificate it
//! signs, mTLS client certificates for hosts (from their CSRs), and reading the identity
//! out of a verified client certificate.
//!
//! Must never: copy a CSR's subject, SANs or extensions into a certificate (the CA sets
//! the name from the enrollment), or issue a client certificate usable as a server
//! certificate or a CA.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use smith_proto::HostName;
use std::time::Duration;
use time::OffsetDateTime;

pub const ROOT_LIFETIME: Duration = Duration::from_secs(3650 * 86400);
pub const SERVER_LIFETIME: Duration = Duration::from_secs(5 * 365 * 86400);
/// Backdating for clock skew between the CA and hosts.
pub const BACKDATE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum TlsCaError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the certificate signing request is not valid: {0}")]
    BadCsr(String),
    #[error("{0}")]
    Other(String),
}

fn offset(now_unix: u64, delta_secs: i64) -> OffsetDateTime {
    let t = now_unix as i64 + delta_secs;
    OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> (SerialNumber, String) {
    let mut b = [0u8; 16];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut b);
    // Positive, no leading zero byte: DER keeps these 16 bytes as they are.
    b[0] = (b[0] & 0x7f) | 0x01;
    (SerialNumber::from_slice(&b), hex::encode(b))
}

/// PEM texts written by `init`.
pub struct GeneratedTls {
    pub root_key_pem: String,
    pub root_cert_pem: String,
    pub root_der: Vec<u8>,
    pub server_key_pem: String,
    pub server_cert_pem: String,
}

fn root_params(now: u64) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Smith CA TLS root");
    dn.push(DnType::OrganizationName, "Smith");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = offset(now, -(BACKDATE.as_secs() as i64));
    p.not_after = offset(now, ROOT_LIFETIME.as_secs() as i64);
    p.serial_number = Some(random_serial().0);
    p
}

/// Generates the root and a server certificate for `sans` (DNS names or IP addresses).
pub fn generate(sans: &[String], now: u64) -> Result<GeneratedTls, TlsCaError> {
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let root_key_pem = root_key.serialize_pem();
    let params = root_params(now);
    let root_cert = params.self_signed(&root_key)?;
    let issuer = Issuer::new(params, root_key);

    let (server_cert_pem, server_key_pem) = server_cert(sans, now, &issuer)?;
    Ok(GeneratedTls {
        root_key_pem,
        root_cert_pem: root_cert.pem(),
        root_der: root_cert.der().to_vec(),
        server_key_pem,
        server_cert_pem,
    })
}

/// A new HTTPS server key and certificate for `sans` signed by `issuer`: (cert PEM,
/// key PEM).
fn server_cert(
    sans: &[String],
    now: u64,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), TlsCaError> {
    let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut sp = CertificateParams::new(sans.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "smith-ca");
    sp.distinguished_name = dn;
    sp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sp.use_authority_key_identifier_extension = true;
    sp.not_before = offset(now, -(BACKDATE.as_secs() as i64));
    sp.not_after = offset(now, SERVER_LIFETIME.as_secs() as i64);
    sp.serial_number = Some(random_serial().0);
    let server_cert = sp.signed_by(&server_key, issuer)?;
    Ok((server_cert.pem(), server_key.serialize_pem()))
}

/// The loaded root, able to sign host client certificates.
pub struct TlsRoot {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TlsRoot {
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<TlsRoot, TlsCaError> {
        let key = KeyPair::from_pem(key_pem)?;
        let der = smith_api::tls::certs_from_pem(cert_pem.as_bytes())
            .map_err(TlsCaError::Other)?
            .into_iter()
            .next()
            .ok_or_else(|| TlsCaError::Other("the root certificate file is empty".into()))?;
        let issuer = Issuer::from_ca_cert_der(&der, key)?;
        Ok(TlsRoot {
            cert_pem: cert_pem.to_string(),
            cert_der: der,
            issuer,
        })
    }

    /// A new HTTPS server key and certificate for `names` (DNS names or IPs): what a
    /// replica reached under its own names presents (`serve --name`). (cert PEM, key
    /// PEM).
    pub fn issue_server_cert(
        &self,
        names: &[String],
        now: u64,
    ) -> Result<(String, String), TlsCaError> {
        server_cert(names, now, &self.issuer)
    }

    /// Issues an mTLS client certificate for `host` from a PEM CSR. Returns the PEM
    /// certificate, its serial (hex) and its not-after (unix seconds).
    pub fn issue_client_cert(
        &self,
        host: &HostName,
        csr_pem: &str,
        lifetime: Duration,
        now: u64,
    ) -> Result<(String, String, u64), TlsCaError> {
        if csr_pem.len() > 16 * 1024 {
            return Err(TlsCaError::BadCsr("CSR is larger than 16 KiB".into()));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| TlsCaError::BadCsr(format!("{e} (expected a PEM PKCS#10 request)")))?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host.as_str());
        p.distinguished_name = dn;
        let dns = host
            .as_str()
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| TlsCaError::Other(e.to_string()))?;
        p.subject_alt_names = vec![SanType::DnsName(dns)];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        p.not_before = offset(now, -(BACKDATE.as_secs() as i64));
        let not_after = now + lifetime.as_secs();
        p.not_after = offset(not_after, 0);
        let (serial, serial_hex) = random_serial();
        p.serial_number = Some(serial);
        let cert = p.signed_by(&csr.public_key, &self.issuer)?;
        Ok((cert.pem(), serial_hex, not_after))
    }
}

/// Identity of a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// Subject CN.
    pub common_name: String,
    /// Hex of the serial number bytes.
    pub serial: String,
    /// Validity, Unix seconds (the handshake lets certificates outside it through:
    /// see `server::mtls`).
    pub not_before: i64,
    pub not_after: i64,
}

/// Why a client certificate is outside its validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidityError {
    Expired { not_after: i64 },
    NotYetValid { not_before: i64 },
}

impl PeerCert {
    /// Whether the certificate is valid at `now` (Unix seconds).
    pub fn validity_error(&self, now: u64) -> Option<ValidityError> {
        let now = now.min(i64::MAX as u64) as i64;
        if now > self.not_after {
            Some(ValidityError::Expired {
                not_after: self.not_after,
            })
        } else if now < self.not_before {
            Some(ValidityError::NotYetValid {
                not_before: self.not_before,
            })
        } else {
            None
        }
    }
}

/// Reads CN, serial and validity from a client certificate rustls has already verified
/// (all but its dates: callers check [`PeerCert::validity_error`]).
pub fn peer_identity(der: &[u8]) -> Option<PeerCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    Some(PeerCert {
        common_name: cn,
        serial: hex::encode(cert.tbs_certificate.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_cert_has_the_host_name_and_client_auth_only() {
        let now = 1_700_000_000;
        let g = generate(&["localhost".into(), "127.0.0.1".into()], now).unwrap();
        let root = TlsRoot::load(&g.root_cert_pem, &g.root_key_pem).unwrap();
        let host_key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        req.distinguished_name.push(DnType::CommonName, "evil");
        let csr = req.serialize_request(&host_key).unwrap().pem().unwrap();
        let host = HostName::new("web-1").unwrap();
        let (pem, serial, not_after) = root
            .issue_client_cert(&host, &csr, Duration::from_secs(86400), now)
            .unwrap();
        assert_eq!(not_after, now + 86400);
        let der = smith_api::tls::certs_from_pem(pem.as_bytes()).unwrap();
        let id = peer_identity(&der[0]).unwrap();
        assert_eq!(id.common_name, "web-1");
        assert_eq!(id.serial, serial);
        let (_, c) = x509_parser::parse_x509_certificate(&der[0]).unwrap();
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let san = c.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names.len(), 1);
        assert!(format!("{:?}", san.general_names[0]).contains("web-1"));
        assert!(root
            .issue_client_cert(&host, "not a csr", Duration::from_secs(60), now)
            .is_err());
    }
}
