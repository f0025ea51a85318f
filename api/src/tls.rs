//! TLS root fingerprints and client-side TLS configuration.
//!
//! A fingerprint is `SHA256:` followed by the unpadded standard base64 of the SHA-256 of
//! the root certificate's DER (the same style `ssh-keygen -l` uses). 64 hex digits,
//! optionally separated by colons, are accepted too.
//!
//! Trust is either a known root (PEM, e.g. `/etc/smith/ca.crt` after enrollment) or only
//! a fingerprint (first contact, like `step ca bootstrap`): then the server's chain must
//! contain a certificate with that fingerprint, and the chain is verified with exactly
//! that certificate as the only root, names and key usages included.

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// `SHA256:<base64>` of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Parses `SHA256:<base64>` or 64 hex digits (colons allowed).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    let bytes = if let Some(b64) = s.strip_prefix("SHA256:") {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64.trim_end_matches('='))
            .map_err(|_| format!("fingerprint '{s}' is not SHA256:<base64>"))?
    } else {
        hex::decode(s.replace(':', "")).map_err(|_| {
            format!("fingerprint '{s}' is neither SHA256:<base64> nor 64 hex digits")
        })?
    };
    bytes
        .try_into()
        .map_err(|_| format!("fingerprint '{s}' is not 32 bytes long"))
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate from PEM text.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| format!("cannot read PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found in PEM".into());
    }
    Ok(certs)
}

pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    use rustls_pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("cannot read PEM private key: {e}"))
}

#[derive(Debug)]
struct PinnedRootVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedRootVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let root = std::iter::once(end_entity)
            .chain(intermediates.iter())
            .find(|c| Sha256::digest(c.as_ref()).as_slice() == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the server's TLS certificate chain does not contain the pinned CA root {} \
                     (wrong --ca-fingerprint, or not a Smith CA)",
                    fingerprint_of_pin(&self.pin)
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(root.clone().into_owned())?;
        let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn fingerprint_of_pin(pin: &[u8; 32]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(pin)
    )
}

/// How the client decides to trust the CA.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Only a fingerprint of the root is known (first contact).
    Fingerprint(String),
    /// The root certificate itself (PEM).
    RootPem(Vec<u8>),
}

/// An mTLS client identity (PEM certificate chain and PEM private key).
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// A rustls client configuration that trusts only the Smith CA root.
pub fn client_config(
    trust: &Trust,
    identity: Option<&Identity>,
) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match trust {
        Trust::Fingerprint(fp) => {
            let pin = parse_fingerprint(fp)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedRootVerifier { pin, provider }))
        }
        Trust::RootPem(pem) => {
            let mut roots = RootCertStore::empty();
            for c in certs_from_pem(pem)? {
                roots
                    .add(c)
                    .map_err(|e| format!("cannot use the CA root certificate: {e}"))?;
            }
            builder.with_root_certificates(roots)
        }
    };
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(id) => builder
            .with_client_auth_cert(certs_from_pem(&id.cert_pem)?, key_from_pem(&id.key_pem)?)
            .map_err(|e| format!("cannot use the client certificate: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_formats() {
        let fp = fingerprint(b"hello");
        assert!(fp.starts_with("SHA256:"));
        let raw = parse_fingerprint(&fp).unwrap();
        assert_eq!(parse_fingerprint(&hex::encode(raw)).unwrap(), raw);
        let colons: Vec<String> = raw.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_fingerprint(&colons.join(":")).unwrap(), raw);
        assert!(parse_fingerprint("SHA256:abc").is_err());
        assert!(parse_fingerprint("nothex").is_err());
    }
}
