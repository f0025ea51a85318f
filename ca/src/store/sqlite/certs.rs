//! Issued certificates (read) and the append-only `revocations` table.
//!
//! Must never: update or delete a revocation (triggers abort it), or find a key ID by
//! anything but its exact text.

use crate::model::{Revocation, RevokeVia};
use crate::store::{CertQuery, Plan, Selector, StoreError};
use rusqlite::{params, Connection};
use smith_api::{IssuedCert, RevocationInfo};
use smith_proto::UserName;

const CERT_COLUMNS: &str = "c.serial, c.key_id, c.user_name, c.principals, c.scope, c.valid_after,
     c.valid_before, c.issued_at, r.revoked_at, r.reason, r.via";

fn cert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IssuedCert> {
    let principals: String = r.get(3)?;
    let revoked_at: Option<i64> = r.get(8)?;
    Ok(IssuedCert {
        serial: r.get::<_, i64>(0)? as u64,
        key_id: r.get(1)?,
        user: r.get(2)?,
        principals: principals
            .split(',')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect(),
        scope: r.get(4)?,
        valid_after: r.get::<_, i64>(5)?.max(0) as u64,
        valid_before: r.get::<_, i64>(6)?.max(0) as u64,
        issued_at: r.get::<_, i64>(7)?.max(0) as u64,
        revoked: match revoked_at {
            Some(at) => Some(RevocationInfo {
                revoked_at: at.max(0) as u64,
                reason: r.get(9)?,
                via: r.get(10)?,
            }),
            None => None,
        },
    })
}

/// A Unix time as SQLite's signed integer.
pub(super) fn sql_time(t: u64) -> i64 {
    t.min(i64::MAX as u64) as i64
}

/// Certificates (with their revocation, if any) selected by `tail` (WHERE/ORDER BY over
/// `c` = certificates and `r` = revocations).
fn select_certs(
    conn: &Connection,
    tail: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<IssuedCert>, StoreError> {
    let sql = format!(
        "SELECT {CERT_COLUMNS} FROM certificates c LEFT JOIN revocations r ON r.serial = c.serial
         {tail}"
    );
    let mut st = conn.prepare_cached(&sql)?;
    let rows = st.query_map(args, cert_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Issued certificates, newest first.
pub(super) fn list(conn: &Connection, q: &CertQuery) -> Result<Vec<IssuedCert>, StoreError> {
    select_certs(
        conn,
        "WHERE (?1 IS NULL OR c.user_name = ?1)
           AND (?2 = 0 OR (c.valid_before > ?3 AND r.serial IS NULL))
         ORDER BY c.serial DESC LIMIT ?4",
        params![
            q.user.as_ref().map(|u| u.as_str()),
            q.valid_only,
            sql_time(q.now),
            q.limit
        ],
    )
}

/// The certificates `sel` names, sorted out; `None` when it names none.
pub(super) fn plan(
    conn: &Connection,
    sel: &Selector,
    now: u64,
) -> Result<Option<Plan>, StoreError> {
    use rusqlite::types::Value;
    let (clause, args): (&str, Vec<Value>) = match sel {
        Selector::Serial(s) => {
            if *s > i64::MAX as u64 {
                return Ok(None);
            }
            ("c.serial = ?1", vec![(*s as i64).into()])
        }
        // Through the unique request-id index: a key ID is `smith:<user>:<request id>`.
        Selector::KeyId(k) => match k.rsplit_once(':') {
            Some((_, rid)) => (
                "c.request_id = ?1 AND c.key_id = ?2",
                vec![rid.to_string().into(), k.clone().into()],
            ),
            None => return Ok(None),
        },
        // An admin's explicit revocation: every certificate of the user (a scan; no index
        // is keyed by user, see migration 6).
        Selector::User(u) => ("c.user_name = ?1", vec![u.to_string().into()]),
    };
    let certs = select_certs(
        conn,
        &format!("WHERE {clause} ORDER BY c.serial"),
        rusqlite::params_from_iter(args),
    )?;
    Ok(Plan::of(certs, now))
}

/// The still-valid, unrevoked certificates of `user` (for disable and delete).
pub(super) fn valid_of_user(
    conn: &Connection,
    user: &UserName,
    now: u64,
) -> Result<Vec<IssuedCert>, StoreError> {
    // Through the `valid_before` index: only certificates that have not expired yet.
    select_certs(
        conn,
        "WHERE c.valid_before > ?2 AND c.user_name = ?1 AND r.serial IS NULL
         ORDER BY c.serial",
        params![user.as_str(), sql_time(now)],
    )
}

/// Inserts one revocation (inside a commit's transaction).
pub(super) fn insert_revocation(conn: &Connection, r: &Revocation) -> Result<(), StoreError> {
    if r.serial > i64::MAX as u64 {
        return Err(StoreError::Conflict(format!(
            "serial {} out of range",
            r.serial
        )));
    }
    conn.execute(
        "INSERT INTO revocations (serial, key_id, user_name, valid_before, ca_key, revoked_at,
                                  reason, via)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            r.serial as i64,
            r.key_id,
            r.user,
            sql_time(r.valid_before),
            r.ca_key,
            r.revoked_at as i64,
            r.reason,
            r.via.as_str()
        ],
    )?;
    Ok(())
}

/// Revocations whose certificates have not expired at `now` (what the KRL holds).
pub(super) fn load_unexpired(conn: &Connection, now: u64) -> Result<Vec<Revocation>, StoreError> {
    let mut st = conn.prepare(
        "SELECT serial, key_id, user_name, valid_before, ca_key, revoked_at, reason, via
         FROM revocations WHERE valid_before > ?1 ORDER BY serial",
    )?;
    let rows = st.query_map([sql_time(now)], |r| {
        Ok((
            Revocation {
                serial: r.get::<_, i64>(0)? as u64,
                key_id: r.get(1)?,
                user: r.get(2)?,
                valid_before: r.get::<_, i64>(3)?.max(0) as u64,
                ca_key: r.get(4)?,
                revoked_at: r.get::<_, i64>(5)?.max(0) as u64,
                reason: r.get(6)?,
                via: RevokeVia::Serial,
            },
            r.get::<_, String>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (mut rev, via) = row?;
        rev.via = RevokeVia::parse(&via)
            .ok_or_else(|| StoreError::Corrupt(format!("revocation via '{via}'")))?;
        out.push(rev);
    }
    Ok(out)
}
