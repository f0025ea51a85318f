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
pub fn decision_event(
    decision_id: u64,
    d: &crate::writer::DecisionRow,
    serial: Option<u64>,
    key_id: Option<&str>,
) -> String {
    serde_json::json!({
        "type": "cert_decision",
        "decision_id": decision_id,
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
