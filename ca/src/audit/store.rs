//! The append-only audit store in SQLite: per-host hash chains (`audit_records`) and
//! the record of every rejected upload (`audit_rejections`).
//!
//! Schema (migration 3 in [`crate::db`]): `audit_records(host, seq, prev_hash, hash,
//! event, received_at, kind, user_name, at_unix)`, primary key `(host, seq)`;
//! `kind`/`user_name`/`at_unix` are copied out of the event JSON for queries (and
//! re-checked by [`verify_all`]). Triggers abort any UPDATE or DELETE on both tables.
//!
//! Owns: every SQL statement on the audit tables. Must never: contain an UPDATE or a
//! DELETE of them (there is none; the triggers enforce it for everyone else), or store
//! a record that does not continue its host's chain.

use rusqlite::{params, Connection, OptionalExtension};
use smith_api::chain::{self, AuditAck, AuditRecord, GENESIS};
use smith_api::ErrorCode;

/// The CA's own chain (issuance decisions). `@` is not allowed in host names.
pub const CA_CHAIN: &str = "@ca";

/// Why an upload was refused (the message format is smith-api's, which hostd reads).
pub use smith_api::chain::Refusal as Rejected;

/// The head of `host`'s chain: (last seq, its hash), (0, zeros) when empty.
pub fn head(conn: &Connection, host: &str) -> rusqlite::Result<(u64, [u8; 32])> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, hash FROM audit_records WHERE host = ?1 ORDER BY seq DESC LIMIT 1",
            [host],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        Some((seq, h)) => (seq as u64, chain::parse_hash(&h).unwrap_or(GENESIS)),
        None => (0, GENESIS),
    })
}

pub fn ack_of(head: (u64, [u8; 32])) -> AuditAck {
    AuditAck {
        acked_through: head.0,
        head_hash: hex::encode(head.1),
    }
}

/// The fields copied out of an event for queries: (kind, user, at_unix).
pub fn derived(event: &str) -> (String, String, i64) {
    let v: serde_json::Value = serde_json::from_str(event).unwrap_or_default();
    let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("unknown");
    let kind = match (kind, v.get("phase").and_then(|p| p.as_str())) {
        ("session", Some(p)) => format!("session_{p}"),
        (k, _) => k.to_string(),
    };
    let user = v
        .get("user")
        .and_then(|u| u.as_str())
        .unwrap_or("")
        .to_string();
    let at = v.get("at_unix").and_then(|a| a.as_i64()).unwrap_or(0);
    (kind, user, at)
}

/// Inserts one record (already verified).
pub fn insert(
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
pub fn insert_derived(
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

/// Checks that `records` continue `host`'s stored chain. Nothing is written.
pub fn check_batch(
    conn: &Connection,
    host: &str,
    records: &[AuditRecord],
) -> rusqlite::Result<Result<(u64, [u8; 32]), Rejected>> {
    let (seq, hash) = head(conn, host)?;
    // At or below the head, wholly or in part: the host is behind on what the CA has
    // (an upload of a killed hostd can land after its successor read the head). It asks
    // the head again, reconciles (the head record must be its own) and sends the rest.
    if records.first().is_some_and(|r| r.seq <= seq) {
        let last = records.iter().map(|r| r.seq).max().unwrap_or(0);
        return Ok(Err(Rejected {
            code: ErrorCode::AuditReplay,
            seq: last,
            reason: format!(
                "the CA's chain for {host} is already at seq {seq}; ask GET /v1/host/audit/head \
                 and send what follows it"
            ),
        }));
    }
    Ok(
        chain::verify_chain(host, seq, hash, records).map_err(|e| Rejected {
            code: ErrorCode::AuditChainBroken,
            seq: e.seq,
            reason: e.reason,
        }),
    )
}

/// Records a rejected upload (append-only).
pub fn record_rejection(
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

/// One stored record, for listing (the wire type of `GET /v1/admin/audit`).
pub use smith_api::AuditEntry as Entry;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub host: Option<String>,
    pub user: Option<String>,
    pub since: Option<u64>,
    pub limit: u32,
}

/// Records matching `f`, in chain order per host (hosts by name, `@ca` first). With a
/// limit, the most recent `limit` records of that order.
pub fn list(conn: &Connection, f: &Filter) -> rusqlite::Result<Vec<Entry>> {
    let mut st = conn.prepare(
        "SELECT host, seq, kind, user_name, at_unix, received_at, hash, event FROM (
             SELECT * FROM audit_records
             WHERE (?1 IS NULL OR host = ?1) AND (?2 IS NULL OR user_name = ?2)
               AND (?3 IS NULL OR at_unix >= ?3)
             ORDER BY received_at DESC, host DESC, seq DESC LIMIT ?4)
         ORDER BY host, seq",
    )?;
    let rows = st.query_map(
        params![
            f.host,
            f.user,
            f.since.map(|s| s as i64),
            f.limit.max(1) as i64
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

/// The wire types of `GET /v1/admin/audit/verify`.
pub use smith_api::{
    AuditBreak as Break, AuditChainReport as ChainReport, AuditVerifyReport as VerifyReport,
};

/// Recomputes every chain from the rows in the database: sequence continuity from 1,
/// each `prev_hash`, each `hash` over the stored event text, and the query columns
/// against the event.
pub fn verify_all(conn: &Connection) -> rusqlite::Result<VerifyReport> {
    let mut st = conn.prepare(
        "SELECT host, seq, prev_hash, hash, event, kind, user_name, at_unix
         FROM audit_records ORDER BY host, seq",
    )?;
    let mut rows = st.query([])?;
    let mut chains: Vec<ChainReport> = Vec::new();
    let mut breaks: Vec<Break> = Vec::new();
    let mut total = 0u64;
    // Per current host: (prev seq, prev hash, broken).
    let mut cur: Option<(String, u64, [u8; 32], bool)> = None;
    while let Some(r) = rows.next()? {
        total += 1;
        let host: String = r.get(0)?;
        let seq = r.get::<_, i64>(1)? as u64;
        let rec = AuditRecord {
            seq,
            prev_hash: r.get(2)?,
            hash: r.get(3)?,
            event: r.get(4)?,
        };
        let cols: (String, String, i64) = (r.get(5)?, r.get(6)?, r.get(7)?);
        if cur.as_ref().map(|c| c.0 != host).unwrap_or(true) {
            cur = Some((host.clone(), 0, GENESIS, false));
            chains.push(ChainReport {
                host: host.clone(),
                records: 0,
                head_seq: 0,
                head_hash: hex::encode(GENESIS),
            });
        }
        let (Some(c), Some(report)) = (cur.as_mut(), chains.last_mut()) else {
            continue;
        };
        report.records += 1;
        report.head_seq = seq;
        report.head_hash = rec.hash.clone();
        if c.3 {
            continue;
        }
        let mut problem = chain::verify_chain(&host, c.1, c.2, std::iter::once(&rec))
            .err()
            .map(|e| e.reason);
        if problem.is_none() && derived(&rec.event) != cols {
            problem = Some(
                "the stored kind/user/time columns do not match the record's event (altered row)"
                    .into(),
            );
        }
        match problem {
            Some(reason) => {
                c.3 = true;
                breaks.push(Break {
                    host: host.clone(),
                    seq,
                    reason,
                });
            }
            None => {
                c.1 = seq;
                c.2 = chain::parse_hash(&rec.hash).unwrap_or(GENESIS);
            }
        }
    }
    Ok(VerifyReport {
        ok: breaks.is_empty(),
        records: total,
        first_break: breaks.first().cloned(),
        chains,
        breaks,
    })
}

/// The wire type of `GET /v1/admin/audit/rejections`.
pub use smith_api::AuditRejection as RejectionInfo;

pub fn rejections(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<RejectionInfo>> {
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

/// Every `sshd` event: (host, seq, event JSON).
pub fn sshd_events(conn: &Connection) -> rusqlite::Result<Vec<(String, u64, String)>> {
    let mut st = conn.prepare(
        "SELECT host, seq, event FROM audit_records WHERE kind = 'sshd' ORDER BY host, seq",
    )?;
    let rows = st.query_map([], |r| {
        Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
    })?;
    rows.collect()
}
