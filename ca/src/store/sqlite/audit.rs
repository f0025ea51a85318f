//! The audit tables: per-host hash chains (`audit_records`) and the record of every
//! rejected upload (`audit_rejections`).
//!
//! Schema (migration 3): `audit_records(host, seq, prev_hash, hash, event, received_at,
//! kind, user_name, at_unix)`, primary key `(host, seq)`; `kind`/`user_name`/`at_unix`
//! are copied out of the event JSON for queries (and re-checked by verification).
//! Triggers abort any UPDATE or DELETE on both tables.
//!
//! Must never: contain an UPDATE or a DELETE of them, or store a record that does not
//! continue its host's chain (the writer checks with [`crate::audit::check_batch`]).

use crate::audit::{
    derived, ChainVerifier, Entry, Filter, Rejected, RejectionInfo, StoredRecord, VerifyReport,
};
use crate::store::{OobInputs, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use smith_api::chain::{self, AuditRecord, GENESIS};
use std::collections::HashMap;

/// The head of `host`'s chain: (last seq, its hash), (0, zeros) when empty.
pub(super) fn head(conn: &Connection, host: &str) -> rusqlite::Result<(u64, [u8; 32])> {
    let row: Option<(i64, String)> = conn
        .prepare_cached(
            "SELECT seq, hash FROM audit_records WHERE host = ?1 ORDER BY seq DESC LIMIT 1",
        )?
        .query_row([host], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        Some((seq, h)) => (seq as u64, chain::parse_hash(&h).unwrap_or(GENESIS)),
        None => (0, GENESIS),
    })
}

/// Inserts one record (already verified).
pub(super) fn insert(
    conn: &Connection,
    host: &str,
    r: &AuditRecord,
    received_at: u64,
) -> rusqlite::Result<()> {
    let (kind, user, at) = derived(&r.event);
    insert_derived(conn, host, r, received_at, (&kind, &user, at))
}

/// [`insert`] when the caller built the event and knows what [`derived`] would read
/// from it (the writer's `@ca` decision records), without parsing it again.
pub(super) fn insert_derived(
    conn: &Connection,
    host: &str,
    r: &AuditRecord,
    received_at: u64,
    (kind, user, at): (&str, &str, i64),
) -> rusqlite::Result<()> {
    let mut st = conn.prepare_cached(
        "INSERT INTO audit_records (host, seq, prev_hash, hash, event, received_at, kind,
                                    user_name, at_unix)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    st.execute(params![
        host,
        r.seq as i64,
        r.prev_hash,
        r.hash,
        r.event,
        received_at as i64,
        kind,
        user,
        at
    ])?;
    Ok(())
}

/// Records a rejected upload (append-only).
pub(super) fn record_rejection(
    conn: &Connection,
    host: &str,
    rej: &Rejected,
    records: &[AuditRecord],
    at: u64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit_rejections (host, seq, code, reason, at, first_seq, last_seq, records)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            host,
            rej.seq as i64,
            rej.code.as_str(),
            rej.reason,
            at as i64,
            records.first().map(|r| r.seq as i64).unwrap_or(0),
            records.last().map(|r| r.seq as i64).unwrap_or(0),
            records.len() as i64
        ],
    )?;
    Ok(())
}

pub(super) fn list(conn: &Connection, f: &Filter) -> rusqlite::Result<Vec<Entry>> {
    let mut st = conn.prepare(
        "SELECT host, seq, kind, user_name, at_unix, received_at, hash, event FROM (
             SELECT * FROM audit_records
             WHERE (?1 IS NULL OR host = ?1) AND (?2 IS NULL OR user_name = ?2)
               AND (?3 IS NULL OR at_unix >= ?3) AND (?5 IS NULL OR kind = ?5)
             ORDER BY received_at DESC, host DESC, seq DESC LIMIT ?4)
         ORDER BY host, seq",
    )?;
    let rows = st.query_map(
        params![
            f.host,
            f.user,
            f.since.map(|s| s.min(i64::MAX as u64) as i64),
            f.limit.max(1) as i64,
            f.kind
        ],
        |r| {
            let event: String = r.get(7)?;
            Ok(Entry {
                host: r.get(0)?,
                seq: r.get::<_, i64>(1)? as u64,
                kind: r.get(2)?,
                user: r.get(3)?,
                at_unix: r.get::<_, i64>(4)?.max(0) as u64,
                received_at: r.get::<_, i64>(5)?.max(0) as u64,
                hash: r.get(6)?,
                event: serde_json::from_str(&event).unwrap_or(serde_json::Value::String(event)),
            })
        },
    )?;
    rows.collect()
}

/// Every chain recomputed from the rows in the database.
pub(super) fn verify_all(conn: &Connection) -> rusqlite::Result<VerifyReport> {
    let mut st = conn.prepare(
        "SELECT host, seq, prev_hash, hash, event, kind, user_name, at_unix
         FROM audit_records ORDER BY host, seq",
    )?;
    let mut rows = st.query([])?;
    let mut v = ChainVerifier::default();
    while let Some(r) = rows.next()? {
        v.push(StoredRecord {
            host: r.get(0)?,
            record: AuditRecord {
                seq: r.get::<_, i64>(1)? as u64,
                prev_hash: r.get(2)?,
                hash: r.get(3)?,
                event: r.get(4)?,
            },
            columns: (r.get(5)?, r.get(6)?, r.get(7)?),
        });
    }
    Ok(v.finish())
}

pub(super) fn rejections(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<RejectionInfo>> {
    let mut st = conn.prepare(
        "SELECT id, host, seq, code, reason, at, first_seq, last_seq, records FROM (
             SELECT * FROM audit_rejections ORDER BY id DESC LIMIT ?1) ORDER BY id",
    )?;
    let rows = st.query_map([limit.max(1) as i64], |r| {
        Ok(RejectionInfo {
            id: r.get::<_, i64>(0)? as u64,
            host: r.get(1)?,
            seq: r.get::<_, i64>(2)? as u64,
            code: r.get(3)?,
            reason: r.get(4)?,
            at: r.get::<_, i64>(5)? as u64,
            first_seq: r.get::<_, i64>(6)? as u64,
            last_seq: r.get::<_, i64>(7)? as u64,
            records: r.get::<_, i64>(8)? as u64,
        })
    })?;
    rows.collect()
}

/// What the out-of-band classification reads: sshd events, what was issued under the
/// serials they name, and when users were disabled.
pub(super) fn oob_inputs(conn: &Connection) -> Result<OobInputs, StoreError> {
    let mut st = conn.prepare(
        "SELECT host, seq, event FROM audit_records WHERE kind = 'sshd' ORDER BY host, seq",
    )?;
    let sshd_events = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })?
        .collect::<Result<Vec<(String, u64, String)>, _>>()?;
    let serials: std::collections::HashSet<u64> = sshd_events
        .iter()
        .filter_map(|(_, _, e)| {
            serde_json::from_str::<serde_json::Value>(e)
                .ok()?
                .get("serial")?
                .as_u64()
        })
        .collect();
    let mut issued = HashMap::new();
    {
        let mut st = conn.prepare_cached(
            "SELECT user_name, key_id, principals FROM certificates WHERE serial = ?1",
        )?;
        for serial in serials {
            if serial > i64::MAX as u64 {
                continue;
            }
            let mut rows = st.query([serial as i64])?;
            if let Some(r) = rows.next()? {
                let principals: String = r.get(2)?;
                issued.insert(
                    serial,
                    crate::audit::oob::Issued {
                        user: r.get(0)?,
                        key_id: r.get(1)?,
                        principals: principals.split(',').map(String::from).collect(),
                    },
                );
            }
        }
    }
    let mut disabled = HashMap::new();
    let mut st =
        conn.prepare("SELECT name, disabled_at FROM users WHERE disabled_at IS NOT NULL")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (name, at) = row?;
        disabled.insert(name, at.max(0) as u64);
    }
    Ok(OobInputs {
        sshd_events,
        issued,
        disabled,
    })
}
