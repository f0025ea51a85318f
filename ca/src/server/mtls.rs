//! Verification of hosts' mTLS client certificates during the TLS handshake.
//!
//! A client certificate is checked with rustls' WebPKI verifier against the CA's TLS root,
//! with one difference: a certificate that is refused *only* because it is expired or not
//! yet valid (its chain and signatures verify at a time inside its own validity) is let
//! through the handshake. The API then answers 401 `client_cert_expired` (or
//! `client_cert_not_yet_valid`) with a sentence hostd can show ("re-enroll with
//! `smith-host activate --token ...`"), instead of a bare TLS alert the host could only
//! report as a connection failure. [`crate::tlsca::PeerCert::validity_error`] is that
//! check, done by [`super::hosts::host_of`], the only door to the mTLS endpoints.
//!
//! Must never: accept a certificate that does not chain to the CA's root, or one with
//! any defect other than its validity period; or let a caller use a client certificate
//! without going through `host_of`.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

/// WebPKI client verification that lets a certificate outside its validity period through
/// (see the module doc).
#[derive(Debug)]
pub struct LenientValidity {
    inner: Arc<dyn ClientCertVerifier>,
}

impl LenientValidity {
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> LenientValidity {
        LenientValidity { inner }
    }
}

fn is_validity_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. }
        )
    )
}

/// The middle of a certificate's validity period, as the verification time at which a
/// certificate refused only for its dates must verify.
fn inside_validity(end_entity: &CertificateDer<'_>) -> Option<UnixTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(end_entity.as_ref()).ok()?;
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    if nb < 0 || na < nb {
        return None;
    }
    let mid = nb + (na - nb) / 2;
    Some(UnixTime::since_unix_epoch(Duration::from_secs(mid as u64)))
}

impl ClientCertVerifier for LenientValidity {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(e) if is_validity_error(&e) => {
                let at = inside_validity(end_entity).ok_or(e)?;
                // Everything but the dates must hold: same verifier, a time inside the
                // certificate's own validity.
                self.inner.verify_client_cert(end_entity, intermediates, at)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, IsCa, KeyPair};
    use rustls::server::WebPkiClientVerifier;
    use rustls::RootCertStore;

    fn at(secs: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    struct Root {
        cert: rcgen::Certificate,
        issuer: rcgen::Issuer<'static, KeyPair>,
    }

    fn root() -> Root {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "root");
        p.not_before = at(1_000_000_000);
        p.not_after = at(4_000_000_000);
        let cert = p.self_signed(&key).unwrap();
        Root {
            cert,
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    fn leaf(issuer: &Root, not_before: i64, not_after: i64) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["web-1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "web-1");
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = at(not_before);
        p.not_after = at(not_after);
        p.signed_by(&key, &issuer.issuer).unwrap().der().clone()
    }

    fn verifier(r: &Root) -> LenientValidity {
        let mut roots = RootCertStore::empty();
        roots.add(r.cert.der().clone()).unwrap();
        let inner = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            smith_api::tls::provider(),
        )
        .build()
        .unwrap();
        LenientValidity::new(inner)
    }

    #[test]
    fn only_the_dates_are_forgiven() {
        let r = root();
        let v = verifier(&r);
        let now = UnixTime::since_unix_epoch(Duration::from_secs(2_000_000_000));
        // Valid, expired and not-yet-valid certificates of the right root pass.
        for (nb, na) in [
            (1_900_000_000, 2_100_000_000),
            (1_500_000_000, 1_600_000_000),
            (2_500_000_000, 2_600_000_000),
        ] {
            assert!(
                v.verify_client_cert(&leaf(&r, nb, na), &[], now).is_ok(),
                "{nb}..{na}"
            );
        }
        // Another root's certificates do not, expired or not.
        let other = root();
        for (nb, na) in [
            (1_900_000_000, 2_100_000_000),
            (1_500_000_000, 1_600_000_000),
        ] {
            let e = v
                .verify_client_cert(&leaf(&other, nb, na), &[], now)
                .unwrap_err();
            assert!(!is_validity_error(&e), "{e}");
        }
        // Garbage is refused.
        assert!(v
            .verify_client_cert(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]), &[], now)
            .is_err());
    }
}
