//! The CA's audit trail: every host's hash chain of events (sessions, sudo, denials,
//! sshd logins) uploaded by hostd, and the CA's own chain `@ca` of certificate issuance
//! decisions, all in one append-only store, verifiable offline.
//!
//! - [`store`]: the SQLite tables and every statement on them (append-only, enforced by
//!   triggers), chain checks and full verification;
//! - [`server`]: the host upload/head endpoints and the admin list/verify/rejections/
//!   out-of-band endpoints;
//! - [`oob`]: classification of sshd logins against issued certificates;
//! - [`cli`]: `smith-ca admin audit ...` and the offline `smith-ca audit verify`.
//!
//! The `@ca` chain is written by the issuance writer ([`crate::writer`]) in the same
//! transaction as each decision, with [`decision_event`] as the record's event text.
//!
//! Must never: update or delete an audit record, or let the `@ca` chain and the
//! decisions table diverge (same transaction).

pub mod cli;
pub mod oob;
pub mod server;
pub mod store;

/// The event text of the `@ca` record of an issuance decision (compact JSON, keys in
/// a fixed order; the exact text is what the chain hashes).
///
/// The keys are in alphabetical order, the text `serde_json::json!` produced for this
/// event before (its maps are sorted); a struct serializes that text without building a
/// map per decision on the writer thread.
pub fn decision_event(
    decision_id: u64,
    d: &crate::writer::DecisionRow,
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

/// The `type` of a [`decision_event`] (the `kind` column of its record).
pub const DECISION_KIND: &str = "cert_decision";

#[cfg(test)]
mod tests {
    use crate::writer::DecisionRow;

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
        let (kind, user, at) = super::store::derived(&super::decision_event(43, &d, None, None));
        assert_eq!(
            (kind.as_str(), user.as_str(), at),
            (super::DECISION_KIND, "alice", 1_700_000_000)
        );
    }
}
