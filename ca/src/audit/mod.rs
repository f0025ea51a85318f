//! The CA's audit trail: every host's hash chain of events (sessions, sudo, denials,
//! sshd logins) uploaded by hostd, and the CA's own chain `@ca` of certificate issuance
//! decisions and revocations, all in one append-only store, verifiable offline.
//!
//! This module holds what every store shares (pure functions, no I/O): the record types,
//! the check that an upload continues a stored chain ([`check_batch`]), the full
//! verification of stored chains ([`ChainVerifier`]), the columns derived from an event
//! for queries ([`derived`]) and the `@ca` event texts. The stores
//! ([`crate::store`]) keep the rows; [`oob`] classifies sshd logins; [`cli`] is
//! `smith-ca admin audit ...` and the offline `smith-ca audit verify`.
//!
//! Must never: accept a batch that does not continue its chain, or let the `@ca` chain
//! and the decisions diverge (stores write both in one transaction).

pub mod cli;
pub mod oob;

use crate::store::DecisionRow;
use smith_api::chain::{self, AuditAck, AuditRecord, GENESIS};
use smith_api::ErrorCode;

/// The CA's own chain (issuance decisions, revocations). `@` is not allowed in host names.
pub const CA_CHAIN: &str = "@ca";

/// Why an upload was refused: [`ErrorCode::AuditChainBroken`] or
/// [`ErrorCode::AuditReplay`] (smith-api's type: hostd reads the record back from its
/// message).
pub use smith_api::chain::Refusal as Rejected;

/// A host upload's outcome: the new head, or why the batch was refused (the refusal
/// itself is stored).
pub type AuditOutcome = Result<AuditAck, Rejected>;

pub fn ack_of(head: (u64, [u8; 32])) -> AuditAck {
    AuditAck {
        acked_through: head.0,
        head_hash: hex::encode(head.1),
    }
}

/// Checks that `records` continue `host`'s chain whose head is `head`: the new head, or
/// why not. Nothing is written.
pub fn check_batch(
    head: (u64, [u8; 32]),
    host: &str,
    records: &[AuditRecord],
) -> Result<(u64, [u8; 32]), Rejected> {
    let (seq, hash) = head;
    // At or below the head, wholly or in part: the host is behind on what the CA has
    // (an upload of a killed hostd can land after its successor read the head). It asks
    // the head again, reconciles (the head record must be its own) and sends the rest.
    if records.first().is_some_and(|r| r.seq <= seq) {
        let last = records.iter().map(|r| r.seq).max().unwrap_or(0);
        return Err(Rejected {
            code: ErrorCode::AuditReplay,
            seq: last,
            reason: format!(
                "the CA's chain for {host} is already at seq {seq}; ask GET /v1/host/audit/head \
                 and send what follows it"
            ),
        });
    }
    chain::verify_chain(host, seq, hash, records).map_err(|e| Rejected {
        code: ErrorCode::AuditChainBroken,
        seq: e.seq,
        reason: e.reason,
    })
}

/// The fields copied out of an event for queries: (kind, user, at_unix).
pub fn derived(event: &str) -> (String, String, i64) {
    let v: serde_json::Value = serde_json::from_str(event).unwrap_or_default();
    let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("unknown");
    let kind = match (kind, v.get("phase").and_then(|p| p.as_str())) {
        ("session", Some(p)) => format!("session_{p}"),
        (k, _) => k.to_string(),
    };
    // A change record's "user" is its actor: `audit list --user X` shows what X did.
    let user_key = if kind == CHANGE_KIND { "actor" } else { "user" };
    let user = v
        .get(user_key)
        .and_then(|u| u.as_str())
        .unwrap_or("")
        .to_string();
    let at = v.get("at_unix").and_then(|a| a.as_i64()).unwrap_or(0);
    (kind, user, at)
}

/// One stored record, for listing (the wire type of `GET /v1/admin/audit`).
pub use smith_api::AuditEntry as Entry;

/// Which records to list: with a limit, the most recent `limit` records (by reception)
/// matching the filters, shown in chain order per host (hosts by name, `@ca` first).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub host: Option<String>,
    /// The `kind` column (`cert_decision`, `change`, `sudo`, ...).
    pub kind: Option<String>,
    /// The `user` column (the actor, for change records).
    pub user: Option<String>,
    pub since: Option<u64>,
    pub limit: u32,
}

/// The wire types of `GET /v1/admin/audit/verify`.
pub use smith_api::{
    AuditBreak as Break, AuditChainReport as ChainReport, AuditVerifyReport as VerifyReport,
};

/// A stored record as verification reads it: the record and the query columns stored
/// beside it.
pub struct StoredRecord {
    pub host: String,
    pub record: AuditRecord,
    /// (kind, user, at_unix) as stored.
    pub columns: (String, String, i64),
}

/// Recomputes chains from stored rows fed in (host, seq) order: sequence continuity from
/// 1, each `prev_hash`, each `hash` over the stored event text, and the query columns
/// against the event.
#[derive(Default)]
pub struct ChainVerifier {
    chains: Vec<ChainReport>,
    breaks: Vec<Break>,
    total: u64,
    /// Current host: (prev seq, prev hash, broken).
    cur: Option<(String, u64, [u8; 32], bool)>,
}

impl ChainVerifier {
    pub fn push(&mut self, row: StoredRecord) {
        self.total += 1;
        let StoredRecord {
            host,
            record: rec,
            columns,
        } = row;
        if self.cur.as_ref().is_none_or(|c| c.0 != host) {
            self.cur = Some((host.clone(), 0, GENESIS, false));
            self.chains.push(ChainReport {
                host: host.clone(),
                records: 0,
                head_seq: 0,
                head_hash: hex::encode(GENESIS),
            });
        }
        let (Some(c), Some(report)) = (self.cur.as_mut(), self.chains.last_mut()) else {
            return;
        };
        report.records += 1;
        report.head_seq = rec.seq;
        report.head_hash = rec.hash.clone();
        if c.3 {
            return;
        }
        let mut problem = chain::verify_chain(&host, c.1, c.2, std::iter::once(&rec))
            .err()
            .map(|e| e.reason);
        if problem.is_none() && derived(&rec.event) != columns {
            problem = Some(
                "the stored kind/user/time columns do not match the record's event (altered row)"
                    .into(),
            );
        }
        match problem {
            Some(reason) => {
                c.3 = true;
                self.breaks.push(Break {
                    host,
                    seq: rec.seq,
                    reason,
                });
            }
            None => {
                c.1 = rec.seq;
                c.2 = chain::parse_hash(&rec.hash).unwrap_or(GENESIS);
            }
        }
    }

    pub fn finish(self) -> VerifyReport {
        VerifyReport {
            ok: self.breaks.is_empty(),
            records: self.total,
            first_break: self.breaks.first().cloned(),
            chains: self.chains,
            breaks: self.breaks,
        }
    }
}

/// The wire type of `GET /v1/admin/audit/rejections`.
pub use smith_api::AuditRejection as RejectionInfo;

/// The event text of the `@ca` record of an issuance decision (compact JSON, keys in
/// a fixed order; the exact text is what the chain hashes).
///
/// The keys are in alphabetical order, the text `serde_json::json!` produced for this
/// event before (its maps are sorted); a struct serializes that text without building a
/// map per decision on the writer thread.
pub fn decision_event(
    decision_id: u64,
    d: &DecisionRow,
    serial: Option<u64>,
    key_id: Option<&str>,
) -> String {
    #[derive(serde::Serialize)]
    struct Event<'a> {
        allowed: bool,
        at_unix: u64,
        decision_id: u64,
        grant_ids: &'a [u64],
        key_id: Option<&'a str>,
        reason: &'a str,
        requested_ttl_secs: u64,
        scope: &'a str,
        serial: Option<u64>,
        source: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        user: &'a str,
    }
    let e = Event {
        allowed: d.allowed,
        at_unix: d.at,
        decision_id,
        grant_ids: &d.grant_ids,
        key_id,
        reason: &d.reason,
        requested_ttl_secs: d.requested_ttl_secs,
        scope: &d.scope,
        serial,
        source: &d.source_ip,
        kind: DECISION_KIND,
        user: &d.user,
    };
    // Serializing borrowed strings and integers into a Vec cannot fail.
    serde_json::to_string(&e).unwrap_or_default()
}

/// The event text of a revocation's `@ca` audit record (compact JSON, fixed key order).
pub fn revocation_event(r: &crate::model::Revocation) -> String {
    serde_json::json!({
        "type": "cert_revocation",
        "serial": r.serial,
        "key_id": r.key_id,
        "user": r.user,
        "reason": r.reason,
        "via": r.via.as_str(),
        "valid_before": r.valid_before,
        "at_unix": r.revoked_at,
    })
    .to_string()
}

/// The event text of a host certificate revocation's `@ca` audit record.
pub fn host_revocation_event(r: &crate::model::HostCertRevocation) -> String {
    serde_json::json!({
        "type": "host_cert_revocation",
        "serial": r.serial,
        "host": r.host.as_str(),
        "reason": r.reason,
        "via": r.via,
        "valid_before": r.valid_before,
        "at_unix": r.revoked_at,
    })
    .to_string()
}

/// The `type` of a [`decision_event`] (the `kind` column of its record).
pub const DECISION_KIND: &str = "cert_decision";

/// The `type` of a [`change_event`].
pub const CHANGE_KIND: &str = "change";

/// The event text of the `@ca` record every committed change gets, in the same
/// transaction: when, the origin's kind, the actor, the request's source address, the
/// public id of the token that authenticated it, what was asked, and the policy version
/// it made (absent when it changed nothing hosts receive). Keys sorted (compact JSON).
pub fn change_event(c: &crate::store::Commit) -> String {
    change_event_of(&c.origin, &c.what, c.new_version, c.now)
}

/// [`change_event`] of a change made outside a commit (a restore).
pub fn change_event_of(
    origin: &crate::origin::Origin,
    what: &str,
    version: Option<u64>,
    at: u64,
) -> String {
    serde_json::json!({
        "type": CHANGE_KIND,
        "at_unix": at,
        "origin": origin.kind(),
        "actor": origin.actor_name(),
        "source": origin.source.map(|s| s.to_string()),
        "token_id": origin.token_id,
        "what": what,
        "version": version,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use crate::store::DecisionRow;

    /// The text the chain has always hashed for a decision: what `json!` printed.
    fn reference(id: u64, d: &DecisionRow, serial: Option<u64>, key_id: Option<&str>) -> String {
        serde_json::json!({
            "type": "cert_decision",
            "decision_id": id,
            "user": d.user,
            "allowed": d.allowed,
            "reason": d.reason,
            "scope": d.scope,
            "requested_ttl_secs": d.requested_ttl_secs,
            "serial": serial,
            "key_id": key_id,
            "source": d.source_ip,
            "grant_ids": d.grant_ids,
            "at_unix": d.at,
        })
        .to_string()
    }

    #[test]
    fn decision_event_text_is_unchanged() {
        let mut d = DecisionRow {
            at: 1_700_000_000,
            user: "alice".into(),
            allowed: true,
            reason: "issued for scope 'env=dev' by grant 1 (\"quoted\", \u{e9}\n)".into(),
            scope: "env=dev".into(),
            requested_ttl_secs: 3600,
            source_ip: "127.0.0.1".into(),
            grant_ids: vec![1, 7],
        };
        let ours = super::decision_event(42, &d, Some(9), Some("smith:alice:00"));
        assert_eq!(ours, reference(42, &d, Some(9), Some("smith:alice:00")));
        assert!(ours.starts_with("{\"allowed\":true,"), "{ours}");
        d.allowed = false;
        d.grant_ids.clear();
        assert_eq!(
            super::decision_event(43, &d, None, None),
            reference(43, &d, None, None)
        );
        let (kind, user, at) = super::derived(&super::decision_event(43, &d, None, None));
        assert_eq!(
            (kind.as_str(), user.as_str(), at),
            (super::DECISION_KIND, "alice", 1_700_000_000)
        );
    }
}
