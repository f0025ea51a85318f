//! The per-host audit hash chain, computed identically by hostd (when it spools an
//! event) and the CA (when it accepts an upload and in `smith-ca admin audit verify`).
//!
//! `hash(n) = SHA-256("smith-audit-v1" || host || 0x00 || seq(n) as u64 BE || hash(n-1) || event)`
//! where `event` is the exact JSON text stored in the record and `hash(0)` of the first
//! record's predecessor is 32 zero bytes. Sequence numbers start at 1 and increase by 1.

use crate::ErrorCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

pub const GENESIS: [u8; 32] = [0u8; 32];

/// One spooled/uploaded audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: u64,
    /// Hex SHA-256 of the previous record (zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 of this record.
    pub hash: String,
    /// JSON text of a `smith_proto::event::HostEvent`, hashed byte for byte.
    pub event: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditBatch {
    pub records: Vec<AuditRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditAck {
    /// Highest sequence number the CA has durably stored for this host.
    pub acked_through: u64,
    pub head_hash: String,
}

pub fn record_hash(host: &str, seq: u64, prev: &[u8; 32], event: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"smith-audit-v1");
    h.update(host.as_bytes());
    h.update([0u8]);
    h.update(seq.to_be_bytes());
    h.update(prev);
    h.update(event.as_bytes());
    h.finalize().into()
}

/// Builds the record that follows `(prev_seq, prev_hash)`.
pub fn next_record(host: &str, prev_seq: u64, prev_hash: &[u8; 32], event: String) -> AuditRecord {
    let seq = prev_seq + 1;
    let hash = record_hash(host, seq, prev_hash, &event);
    AuditRecord {
        seq,
        prev_hash: hex::encode(prev_hash),
        hash: hex::encode(hash),
        event,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainError {
    pub seq: u64,
    pub reason: String,
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "audit chain broken at record {}: {}",
            self.seq, self.reason
        )
    }
}

impl std::error::Error for ChainError {}

pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

/// Verifies that `records` continue the chain whose last record was `(prev_seq,
/// prev_hash)`. Returns the new head.
pub fn verify_chain<'a>(
    host: &str,
    mut prev_seq: u64,
    mut prev_hash: [u8; 32],
    records: impl IntoIterator<Item = &'a AuditRecord>,
) -> Result<(u64, [u8; 32]), ChainError> {
    for r in records {
        if r.seq != prev_seq + 1 {
            return Err(ChainError {
                seq: r.seq,
                reason: if r.seq <= prev_seq {
                    format!(
                        "sequence {} was already recorded (replay or reordering)",
                        r.seq
                    )
                } else {
                    format!("gap: expected sequence {} next", prev_seq + 1)
                },
            });
        }
        if parse_hash(&r.prev_hash) != Some(prev_hash) {
            return Err(ChainError {
                seq: r.seq,
                reason: "previous-hash field does not match the previous record".into(),
            });
        }
        let h = record_hash(host, r.seq, &prev_hash, &r.event);
        if parse_hash(&r.hash) != Some(h) {
            return Err(ChainError {
                seq: r.seq,
                reason: "record hash does not match its contents (altered record)".into(),
            });
        }
        prev_seq = r.seq;
        prev_hash = h;
    }
    Ok((prev_seq, prev_hash))
}

/// Why the CA refused an audit upload: 409 `audit_chain_broken` (the record at `seq`
/// does not continue the chain) or `audit_replay` (every record up to `seq` is stored
/// already). The wire body has only a code and a message, so the message states `seq`
/// in the fixed form [`Refusal::message`] writes and [`Refusal::seq_in`] reads back;
/// both live here so that they cannot drift apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub seq: u64,
    pub reason: String,
}

impl Refusal {
    /// The message the CA answers with.
    pub fn message(&self) -> String {
        match self.code {
            ErrorCode::AuditReplay => format!(
                "audit replay: every record of this batch (up to seq {}) is already stored; {}",
                self.seq, self.reason
            ),
            _ => format!("audit chain broken at record {}: {}", self.seq, self.reason),
        }
    }

    /// The record a refusal message names: the first `record N` (or, from other
    /// versions of the CA, `seq N` / `sequence N`).
    pub fn seq_in(message: &str) -> Option<u64> {
        for key in ["record ", "seq ", "sequence "] {
            if let Some(i) = message.find(key) {
                let digits: String = message[i + key.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                if let Ok(n) = digits.parse() {
                    return Some(n);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        let (mut seq, mut h) = (0, GENESIS);
        for i in 0..n {
            let r = next_record("web-1", seq, &h, format!("{{\"i\":{i}}}"));
            seq = r.seq;
            h = parse_hash(&r.hash).unwrap();
            out.push(r);
        }
        out
    }

    #[test]
    fn valid_chain_verifies_in_pieces() {
        let c = chain(10);
        let (s, h) = verify_chain("web-1", 0, GENESIS, &c[..4]).unwrap();
        assert_eq!(verify_chain("web-1", s, h, &c[4..]).unwrap().0, 10);
    }

    #[test]
    fn tampering_replay_gap_and_host_are_detected() {
        let c = chain(5);
        let mut t = c.clone();
        t[2].event = "{\"i\":9}".into();
        assert_eq!(verify_chain("web-1", 0, GENESIS, &t).unwrap_err().seq, 3);
        let (s, h) = verify_chain("web-1", 0, GENESIS, &c).unwrap();
        assert!(verify_chain("web-1", s, h, &c[3..])
            .unwrap_err()
            .reason
            .contains("replay"));
        assert!(verify_chain("web-1", 0, GENESIS, &c[1..])
            .unwrap_err()
            .reason
            .contains("gap"));
        assert!(verify_chain("db-1", 0, GENESIS, &c).is_err());
    }

    #[test]
    fn a_refusal_names_its_record_in_a_form_read_back() {
        for code in [ErrorCode::AuditChainBroken, ErrorCode::AuditReplay] {
            let r = Refusal {
                code,
                seq: 17,
                reason: "gap: expected sequence 12 next".into(),
            };
            assert_eq!(Refusal::seq_in(&r.message()), Some(17), "{code}");
        }
        assert_eq!(Refusal::seq_in("record 5 seq 7"), Some(5));
        assert_eq!(Refusal::seq_in("sequence 9 was already recorded"), Some(9));
        assert_eq!(Refusal::seq_in("no number here"), None);
    }
}
