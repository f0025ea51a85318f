//! OpenSSH key revocation lists (KRL, the binary format of OpenSSH's PROTOCOL.krl):
//! what hosts put in sshd's `RevokedKeys` so that sshd itself refuses a revoked
//! certificate, whatever Smith's own checks say.
//!
//! Layout written here:
//!
//! ```text
//! "SSHKRL\n\0" (8 bytes)  uint32 format version (1)  uint64 krl_version
//! uint64 generated_date  uint64 flags (0)  string reserved ("")  string comment
//! then per CA key: byte 1 (certificates)  string {
//!     string ca_key (the CA public key blob)  string reserved ("")
//!     [byte 0x20 string {uint64 serial ...}]            serials not in a run
//!     [byte 0x21 string {uint64 min, uint64 max}]...    one per run of >= 3 serials
//!     [byte 0x23 string {string key_id ...}]            key IDs
//! }
//! ```
//!
//! One certificate section per CA key (during a user CA rotation there are several), so
//! a serial revoked under one CA key never revokes another CA's certificate. Serial 0 is
//! never written (OpenSSH ignores it: it is what a CA that sets no serial uses).
//!
//! Owns: the encoding only. Must never: shell out (`ssh-keygen -k` is not used), sign the
//! KRL (OpenSSH >= 9.4 refuses signed KRLs; hosts get it over the pinned mTLS channel),
//! or write a section without entries (a KRL with no revocation is not built at all:
//! hosts then write an empty `RevokedKeys` file, which sshd accepts).

use ssh_encoding::Encode;
use ssh_key::PublicKey;
use std::collections::BTreeSet;

pub const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
pub const FORMAT_VERSION: u32 = 1;
const SECTION_CERTIFICATES: u8 = 1;
const CERT_SERIAL_LIST: u8 = 0x20;
const CERT_SERIAL_RANGE: u8 = 0x21;
const CERT_KEY_ID: u8 = 0x23;
/// Runs of at least this many consecutive serials are written as one range (16 bytes
/// and a 5-byte subsection header instead of 8 bytes per serial).
pub const MIN_RUN: u64 = 3;

#[derive(Debug, thiserror::Error)]
pub enum KrlError {
    #[error("cannot encode the KRL: {0}")]
    Encode(#[from] ssh_encoding::Error),
    #[error("cannot encode the CA key for the KRL: {0}")]
    Key(#[from] ssh_key::Error),
}

/// What one CA key's certificates section revokes.
#[derive(Debug, Clone)]
pub struct CaRevocations {
    /// The CA key that signed the revoked certificates.
    pub ca_key: PublicKey,
    pub serials: BTreeSet<u64>,
    pub key_ids: BTreeSet<String>,
}

impl CaRevocations {
    pub fn new(ca_key: PublicKey) -> CaRevocations {
        CaRevocations {
            ca_key,
            serials: BTreeSet::new(),
            key_ids: BTreeSet::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.serials.iter().all(|s| *s == 0) && self.key_ids.is_empty()
    }
}

/// A whole KRL.
#[derive(Debug, Clone)]
pub struct Krl {
    /// Increases with every change (Smith uses the CA's policy version).
    pub version: u64,
    /// Unix seconds.
    pub generated_at: u64,
    pub comment: String,
    pub sections: Vec<CaRevocations>,
}

/// Consecutive runs `(first, last)` of a sorted set, serial 0 left out.
pub fn runs(serials: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &s in serials.iter().filter(|s| **s != 0) {
        match out.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(s) => *last = s,
            _ => out.push((s, s)),
        }
    }
    out
}

fn subsection(out: &mut Vec<u8>, kind: u8, body: &[u8]) -> Result<(), KrlError> {
    kind.encode(out)?;
    body.encode(out)?;
    Ok(())
}

fn cert_section(c: &CaRevocations) -> Result<Vec<u8>, KrlError> {
    let mut s = Vec::new();
    let mut blob = Vec::new();
    c.ca_key.key_data().encode(&mut blob)?;
    blob.as_slice().encode(&mut s)?;
    "".encode(&mut s)?; // reserved
    let mut singles = Vec::new();
    let mut ranges = Vec::new();
    for (lo, hi) in runs(&c.serials) {
        if hi - lo + 1 >= MIN_RUN {
            ranges.push((lo, hi));
        } else {
            for v in lo..=hi {
                v.encode(&mut singles)?;
            }
        }
    }
    if !singles.is_empty() {
        subsection(&mut s, CERT_SERIAL_LIST, &singles)?;
    }
    for (lo, hi) in ranges {
        let mut r = Vec::with_capacity(16);
        lo.encode(&mut r)?;
        hi.encode(&mut r)?;
        subsection(&mut s, CERT_SERIAL_RANGE, &r)?;
    }
    if !c.key_ids.is_empty() {
        let mut ids = Vec::new();
        for k in &c.key_ids {
            k.as_str().encode(&mut ids)?;
        }
        subsection(&mut s, CERT_KEY_ID, &ids)?;
    }
    Ok(s)
}

impl Krl {
    /// Whether the KRL revokes nothing.
    pub fn is_empty(&self) -> bool {
        self.sections.iter().all(CaRevocations::is_empty)
    }

    /// The binary KRL.
    pub fn encode(&self) -> Result<Vec<u8>, KrlError> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        FORMAT_VERSION.encode(&mut out)?;
        self.version.encode(&mut out)?;
        self.generated_at.encode(&mut out)?;
        0u64.encode(&mut out)?; // flags
        "".encode(&mut out)?; // reserved
        self.comment.as_str().encode(&mut out)?;
        for c in self.sections.iter().filter(|c| !c.is_empty()) {
            let body = cert_section(c)?;
            SECTION_CERTIFICATES.encode(&mut out)?;
            body.as_slice().encode(&mut out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sshca::{generate, sign_user_cert, CaAlgorithm, UserCertSpec};
    use ssh_key::PrivateKey;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    #[test]
    fn runs_merge_consecutive_serials_and_skip_zero() {
        let s: BTreeSet<u64> = [0, 1, 2, 3, 7, 9, 10, u64::MAX].into_iter().collect();
        assert_eq!(
            runs(&s),
            vec![(1, 3), (7, 7), (9, 10), (u64::MAX, u64::MAX)]
        );
        assert!(runs(&BTreeSet::new()).is_empty());
    }

    #[test]
    fn header_and_sections_are_laid_out_as_protocol_krl_says() {
        let ca = generate(CaAlgorithm::Ed25519, "ca").unwrap();
        let mut c = CaRevocations::new(ca.public_key().clone());
        c.serials.extend([5, 10, 11, 12, 13]);
        c.key_ids.insert("smith:alice:1".into());
        let krl = Krl {
            version: 42,
            generated_at: 1_700_000_000,
            comment: "smith".into(),
            sections: vec![c, CaRevocations::new(ca.public_key().clone())],
        };
        let b = krl.encode().unwrap();
        assert_eq!(&b[..8], b"SSHKRL\n\0");
        assert_eq!(&b[8..12], &1u32.to_be_bytes());
        assert_eq!(&b[12..20], &42u64.to_be_bytes());
        assert_eq!(&b[20..28], &1_700_000_000u64.to_be_bytes());
        assert_eq!(&b[28..36], &0u64.to_be_bytes());
        assert_eq!(&b[36..40], &0u32.to_be_bytes());
        assert_eq!(&b[40..44], &5u32.to_be_bytes());
        assert_eq!(&b[44..49], b"smith");
        // Exactly one certificates section: the empty one is left out.
        assert_eq!(b[49], SECTION_CERTIFICATES);
        let len = u32::from_be_bytes([b[50], b[51], b[52], b[53]]) as usize;
        assert_eq!(b.len(), 54 + len);
        let body = &b[54..];
        let key_len = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
        assert_eq!(
            &body[4..4 + key_len],
            ca.public_key().to_bytes().unwrap().as_slice()
        );
        let rest = &body[4 + key_len..];
        assert_eq!(&rest[..4], &0u32.to_be_bytes()); // reserved
        assert_eq!(rest[4], CERT_SERIAL_LIST);
        assert_eq!(&rest[5..9], &8u32.to_be_bytes());
        assert_eq!(&rest[9..17], &5u64.to_be_bytes());
        assert_eq!(rest[17], CERT_SERIAL_RANGE);
        assert_eq!(&rest[22..30], &10u64.to_be_bytes());
        assert_eq!(&rest[30..38], &13u64.to_be_bytes());
        assert_eq!(rest[38], CERT_KEY_ID);
        assert!(!krl.is_empty());
        let empty = Krl {
            sections: vec![CaRevocations::new(ca.public_key().clone())],
            ..krl
        };
        assert!(empty.is_empty());
        assert_eq!(empty.encode().unwrap().len(), 49);
    }

    fn keygen_available() -> bool {
        let ok = Path::new("/usr/bin/ssh-keygen").exists();
        if !ok {
            assert!(
                !std::env::var("SMITH_E2E_REQUIRED").is_ok_and(|v| v == "1"),
                "ssh-keygen is required"
            );
            eprintln!("SKIP: ssh-keygen not found");
        }
        ok
    }

    fn cert_file(dir: &Path, ca: &PrivateKey, serial: u64, key_id: &str) -> PathBuf {
        let subject = generate(CaAlgorithm::Ed25519, "alice").unwrap();
        let cert = sign_user_cert(
            ca,
            subject.public_key(),
            &UserCertSpec {
                serial,
                key_id,
                principals: Vec::leak(vec!["alice".to_string()]),
                valid_after: 0,
                valid_before: 4_000_000_000,
                source_address: None,
                scope: None,
                permits: Default::default(),
                force_command: None,
                grants: None,
            },
        )
        .unwrap();
        let p = dir.join(format!("{key_id}-{serial}-cert.pub"));
        std::fs::write(&p, format!("{}\n", cert.to_openssh().unwrap())).unwrap();
        p
    }

    /// `ssh-keygen -Q -f KRL CERT`: exit 1 and "REVOKED" when revoked, 0 and "ok" else.
    fn revoked(krl: &Path, cert: &Path) -> bool {
        let o = Command::new("ssh-keygen")
            .arg("-Q")
            .arg("-f")
            .arg(krl)
            .arg(cert)
            .output()
            .unwrap();
        let out =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        match o.status.code() {
            Some(1) if out.contains("REVOKED") => true,
            Some(0) if out.contains("ok") => false,
            other => panic!("ssh-keygen -Q: {other:?} {out}"),
        }
    }

    #[test]
    fn ssh_keygen_reads_it_serials_ranges_key_ids_and_several_ca_keys() {
        if !keygen_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ca1 = generate(CaAlgorithm::Ed25519, "ca1").unwrap();
        let ca2 = generate(CaAlgorithm::EcdsaP256, "ca2").unwrap();
        let ca3 = generate(CaAlgorithm::Ed25519, "ca3").unwrap();
        let mut s1 = CaRevocations::new(ca1.public_key().clone());
        s1.serials.extend([3, 7, 8]); // a single and a short run: serial list
        s1.serials.extend(100..=200); // a run: range
        s1.key_ids.insert("smith:alice:by-key-id".into());
        let mut s2 = CaRevocations::new(ca2.public_key().clone());
        s2.serials.insert(50);
        let krl = Krl {
            version: 7,
            generated_at: 1_700_000_000,
            comment: "smith test".into(),
            sections: vec![s1, s2],
        };
        let path = dir.path().join("revoked.krl");
        std::fs::write(&path, krl.encode().unwrap()).unwrap();
        let d = dir.path();
        for (ca, serial, id, want) in [
            (&ca1, 3, "a", true),
            (&ca1, 4, "a", false),
            (&ca1, 7, "a", true),
            (&ca1, 8, "a", true),
            (&ca1, 9, "a", false),
            (&ca1, 99, "a", false),
            (&ca1, 100, "a", true),
            (&ca1, 150, "a", true),
            (&ca1, 200, "a", true),
            (&ca1, 201, "a", false),
            (&ca1, 5000, "smith:alice:by-key-id", true),
            // The same serials under another CA key are not revoked.
            (&ca2, 3, "a", false),
            (&ca2, 150, "a", false),
            (&ca2, 50, "a", true),
            (&ca1, 50, "a", false),
            (&ca3, 3, "smith:alice:by-key-id", false),
        ] {
            let cert = cert_file(d, ca, serial, id);
            assert_eq!(
                revoked(&path, &cert),
                want,
                "serial {serial} key ID {id} under {}",
                ca.comment()
            );
        }
        // `ssh-keygen -Q -l` lists what it parsed.
        let o = Command::new("ssh-keygen")
            .args(["-Q", "-l", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{listing}");
        assert!(listing.contains("KRL version 7"), "{listing}");
        assert!(listing.contains("smith test"), "{listing}");
        assert!(
            listing.contains("serial: 3") && listing.contains("serial: 100-200"),
            "{listing}"
        );
        assert!(listing.contains("id: smith:alice:by-key-id"), "{listing}");
        // (An empty file, what hosts write when nothing is revoked, is not a KRL for
        // `ssh-keygen -Q`; sshd reads it as an empty key list: tests/revocation.rs
        // checks that with a real sshd.)
    }
}
