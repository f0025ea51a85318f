//! The CA's signing keys: [`Signer`], one CA key whatever holds it: a key file
//! prepared once for the hot path ([`CaSigner`]) or a key inside a PKCS#11 token
//! ([`pkcs11::TokenKey`], named by a [`uri::Pkcs11Uri`]). The authority core owns one per
//! CA role (user CA, host CA) and signs every certificate through it; both sign with
//! `ssh-key`'s certificate builder (`signature::Signer` plus `From<&Signer> for KeyData`).
//!
//! File keys:
//! `ssh-key` signs with an Ed25519 [`PrivateKey`] by rebuilding an
//! `ed25519_dalek::SigningKey` from the secret bytes (a SHA-512 and a base-point
//! multiplication) and decompressing and comparing the public key, on every signature:
//! about as much work again as the signature itself. [`CaSigner`] does that check once,
//! at load, and then only signs. For ECDSA P-256 it rebuilds the signing key (another
//! scalar multiplication) and signs with generic code, about 310 µs a certificate here;
//! [`CaSigner`] signs P-256 with `ring` (precomputed tables, the key checked once), and
//! encodes `r` and `s` as OpenSSH wants them (two mpints). Other algorithms (P-384, RSA)
//! sign through `ssh-key` as before.
//!
//! Must never: sign with a key whose public half differs from the CA's published key
//! (checked at construction, and for token keys on every new session), or expose the
//! secret.

pub mod pkcs11;
pub mod uri;

use ssh_key::public::KeyData;
use ssh_key::{Algorithm, PrivateKey, Signature};
use std::sync::Arc;

/// One CA key, whatever holds it (cheap to clone).
#[derive(Clone)]
pub enum Signer {
    /// A key file of the data directory.
    File(Arc<CaSigner>),
    /// A key in a PKCS#11 token.
    Token(Arc<pkcs11::TokenKey>),
}

impl Signer {
    /// The public key certificates name as their signer.
    pub fn public(&self) -> KeyData {
        KeyData::from(self)
    }

    /// Where the key lives: `file` or its PKCS#11 URI.
    pub fn source(&self) -> String {
        match self {
            Signer::File(_) => "file".into(),
            Signer::Token(t) => t.uri().to_string(),
        }
    }

    /// Why signing does not work right now (`None` when it does or may).
    pub fn down(&self) -> Option<String> {
        match self {
            Signer::File(_) => None,
            Signer::Token(t) => t
                .down()
                .map(|(since, why)| format!("{why} (for {}s)", since.as_secs())),
        }
    }

    /// Readiness: whether the key signs now (a token is asked at most once a second).
    pub fn probe(&self) -> Result<(), String> {
        match self {
            Signer::File(_) => Ok(()),
            Signer::Token(t) => t.probe().map_err(|e| e.to_string()),
        }
    }
}

impl signature::Signer<Signature> for Signer {
    fn try_sign(&self, msg: &[u8]) -> signature::Result<Signature> {
        match self {
            Signer::File(f) => f.try_sign(msg),
            Signer::Token(t) => t.sign(msg).map_err(signature::Error::from_source),
        }
    }
}

impl From<&Signer> for KeyData {
    fn from(s: &Signer) -> KeyData {
        match s {
            Signer::File(f) => KeyData::from(f.as_ref()),
            Signer::Token(t) => t.public().clone(),
        }
    }
}

/// A CA key ready to sign certificates ([`ssh_key::SigningKey`]).
pub enum CaSigner {
    /// Ed25519: the expanded dalek key and its (checked) public key.
    Ed25519 {
        key: Box<ed25519_dalek::SigningKey>,
        public: KeyData,
    },
    /// ECDSA P-256: `ring`'s key pair (checked against the public key at load).
    EcdsaP256 {
        key: Box<ring::signature::EcdsaKeyPair>,
        rng: ring::rand::SystemRandom,
        public: KeyData,
    },
    /// Any other algorithm: `ssh-key`'s own signing.
    Other(Box<PrivateKey>),
}

/// An OpenSSH mpint of a positive big-endian integer: no leading zero bytes, one zero
/// byte in front when the top bit is set (it would read as negative).
fn put_mpint(out: &mut Vec<u8>, bytes: &[u8]) {
    let trimmed = match bytes.iter().position(|b| *b != 0) {
        Some(i) => &bytes[i..],
        None => &[],
    };
    let pad = trimmed.first().is_some_and(|b| b & 0x80 != 0);
    let len = trimmed.len() + usize::from(pad);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    if pad {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
}

impl CaSigner {
    /// Prepares `key`; an Ed25519 key whose public half does not match its secret is
    /// refused (a corrupt key file).
    pub fn new(key: &PrivateKey) -> Result<CaSigner, ssh_key::Error> {
        if let Some(ssh_key::private::EcdsaKeypair::NistP256 { public, private }) =
            key.key_data().ecdsa()
        {
            let rng = ring::rand::SystemRandom::new();
            let pair = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                private.as_slice(),
                public.as_bytes(),
                &rng,
            )
            .map_err(|_| ssh_key::Error::Crypto)?;
            return Ok(CaSigner::EcdsaP256 {
                key: Box::new(pair),
                rng,
                public: key.public_key().key_data().clone(),
            });
        }
        match key.key_data().ed25519() {
            Some(kp) => {
                // The same consistency check ssh-key makes before each signature.
                let key = ed25519_dalek::SigningKey::try_from(kp)?;
                let public = key_data_of(key.verifying_key());
                Ok(CaSigner::Ed25519 {
                    key: Box::new(key),
                    public,
                })
            }
            None => Ok(CaSigner::Other(Box::new(key.clone()))),
        }
    }
}

fn key_data_of(vk: ed25519_dalek::VerifyingKey) -> KeyData {
    KeyData::Ed25519(ssh_key::public::Ed25519PublicKey(vk.to_bytes()))
}

impl signature::Signer<Signature> for CaSigner {
    fn try_sign(&self, msg: &[u8]) -> signature::Result<Signature> {
        match self {
            CaSigner::Ed25519 { key, .. } => {
                let sig = ed25519_dalek::Signer::sign(key.as_ref(), msg);
                Signature::new(Algorithm::Ed25519, sig.to_bytes().to_vec())
                    .map_err(signature::Error::from_source)
            }
            CaSigner::EcdsaP256 { key, rng, .. } => {
                let sig = key.sign(rng, msg).map_err(|_| signature::Error::new())?;
                let (r, s) = sig.as_ref().split_at(32);
                let mut data = Vec::with_capacity(2 * (4 + 33));
                put_mpint(&mut data, r);
                put_mpint(&mut data, s);
                Signature::new(
                    Algorithm::Ecdsa {
                        curve: ssh_key::EcdsaCurve::NistP256,
                    },
                    data,
                )
                .map_err(signature::Error::from_source)
            }
            CaSigner::Other(k) => k.try_sign(msg),
        }
    }
}

impl From<&CaSigner> for KeyData {
    fn from(s: &CaSigner) -> KeyData {
        match s {
            CaSigner::Ed25519 { public, .. } | CaSigner::EcdsaP256 { public, .. } => public.clone(),
            CaSigner::Other(k) => k.public_key().key_data().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sshca::{generate, sign_user_cert, CaAlgorithm, UserCertSpec};
    use ssh_key::HashAlg;

    fn spec() -> UserCertSpec<'static> {
        UserCertSpec {
            serial: 7,
            key_id: "smith:alice:0123456789abcdef",
            principals: Vec::leak(vec!["alice".to_string()]),
            valid_after: 1000,
            valid_before: 5000,
            source_address: None,
            scope: Some("env=dev".into()),
            permits: Default::default(),
            force_command: None,
            grants: None,
        }
    }

    #[test]
    fn prepared_keys_sign_like_ssh_key_does() {
        let subject = generate(CaAlgorithm::Ed25519, "alice").unwrap();
        for alg in [CaAlgorithm::Ed25519, CaAlgorithm::EcdsaP256] {
            let ca = generate(alg, "ca").unwrap();
            let signer = CaSigner::new(&ca).unwrap();
            assert_eq!(KeyData::from(&signer), *ca.public_key().key_data());
            let cert = sign_user_cert(&signer, subject.public_key(), &spec()).unwrap();
            cert.validate_at(2000, &[ca.public_key().fingerprint(HashAlg::Sha256)])
                .unwrap();
            assert_eq!(cert.signature_key(), ca.public_key().key_data());
            // Same bytes as ssh-key's own signing (Ed25519 is deterministic; ECDSA
            // signatures at least verify, above).
            if alg == CaAlgorithm::Ed25519 {
                let msg = b"to be signed";
                let ours = signature::Signer::<Signature>::try_sign(&signer, msg).unwrap();
                let theirs = signature::Signer::<Signature>::try_sign(&ca, msg).unwrap();
                assert_eq!(ours, theirs);
            }
        }
    }

    #[test]
    fn p256_signatures_verify_whatever_their_r_and_s() {
        // r or s with the top bit set (half of them) needs a zero byte in front, one
        // starting with a zero byte (1 in 256) loses it: sign enough to meet both.
        let subject = generate(CaAlgorithm::Ed25519, "alice").unwrap();
        let ca = generate(CaAlgorithm::EcdsaP256, "ca").unwrap();
        let signer = CaSigner::new(&ca).unwrap();
        assert!(matches!(signer, CaSigner::EcdsaP256 { .. }));
        let fp = ca.public_key().fingerprint(HashAlg::Sha256);
        for _ in 0..600 {
            let cert = sign_user_cert(&signer, subject.public_key(), &spec()).unwrap();
            cert.validate_at(2000, &[fp]).unwrap();
        }
        let mut v = Vec::new();
        put_mpint(&mut v, &[0, 0, 0x7f, 1]);
        assert_eq!(v, [0, 0, 0, 2, 0x7f, 1]);
        v.clear();
        put_mpint(&mut v, &[0x80, 1]);
        assert_eq!(v, [0, 0, 0, 3, 0, 0x80, 1]);
        v.clear();
        put_mpint(&mut v, &[0, 0]);
        assert_eq!(v, [0, 0, 0, 0]);
    }

    #[test]
    fn a_key_whose_halves_differ_is_refused() {
        let a = generate(CaAlgorithm::Ed25519, "a").unwrap();
        let b = generate(CaAlgorithm::Ed25519, "b").unwrap();
        let (ka, kb) = (
            a.key_data().ed25519().unwrap(),
            b.key_data().ed25519().unwrap(),
        );
        let mixed = ssh_key::private::Ed25519Keypair {
            public: kb.public,
            private: ka.private.clone(),
        };
        let key = PrivateKey::from(mixed);
        assert!(CaSigner::new(&key).is_err());
    }

    /// Signing cost per user certificate and CA algorithm (a probe for choosing the
    /// default; the figure that counts is `cargo xtask bench --only ca`).
    #[test]
    #[ignore = "timing probe: cargo test --release -p smith-ca --lib sign_rate -- --ignored --nocapture"]
    fn sign_rate() {
        let subject = generate(CaAlgorithm::Ed25519, "alice").unwrap();
        for alg in [CaAlgorithm::Ed25519, CaAlgorithm::EcdsaP256] {
            let ca = generate(alg, "ca").unwrap();
            let signer = CaSigner::new(&ca).unwrap();
            let n = 2000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                sign_user_cert(&signer, subject.public_key(), &spec()).unwrap();
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            eprintln!(
                "{alg:?}: {us:.1} us per certificate, {:.0}/s on one core",
                1e6 / us
            );
        }
    }
}
