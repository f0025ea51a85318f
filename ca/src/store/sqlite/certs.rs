//! Issued certificates (read) and the append-only `revocations` table.
//!
//! Must never: update or delete a revocation (triggers abort it), or find a key ID by
//! anything but its exact text.

use crate::model::{HostCertRevocation, HostSshCert, Revocation, RevokeVia};
use crate::store::{
    CertQuery, HostCertQuery, HostCertSelector, HostPlan, Plan, Selector, StoreError,
};
use rusqlite::{params, Connection};
use smith_api::{HostCertInfo, IssuedCert, RevocationInfo};
use smith_proto::{HostName, UserName};

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

/// Records one SSH host certificate (inside a commit's transaction).
pub(super) fn insert_host_ssh_cert(conn: &Connection, c: &HostSshCert) -> Result<(), StoreError> {
    if c.serial > i64::MAX as u64 {
        return Err(StoreError::Conflict(format!(
            "serial {} out of range",
            c.serial
        )));
    }
    conn.execute(
        "INSERT INTO host_ssh_certs (serial, host_id, host, key_id, principals, key_fingerprint,
                                     valid_after, valid_before, issued_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            c.serial as i64,
            c.host_id as i64,
            c.host.as_str(),
            c.key_id,
            c.principals
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(","),
            c.key_fingerprint,
            sql_time(c.valid_after),
            sql_time(c.valid_before),
            sql_time(c.issued_at)
        ],
    )?;
    Ok(())
}

/// Inserts one host certificate revocation (inside a commit's transaction).
pub(super) fn insert_host_revocation(
    conn: &Connection,
    r: &HostCertRevocation,
) -> Result<(), StoreError> {
    if r.serial > i64::MAX as u64 {
        return Err(StoreError::Conflict(format!(
            "serial {} out of range",
            r.serial
        )));
    }
    conn.execute(
        "INSERT INTO host_cert_revocations (serial, host, valid_before, ca_key, revoked_at,
                                            reason, via)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            r.serial as i64,
            r.host.as_str(),
            sql_time(r.valid_before),
            r.ca_key,
            sql_time(r.revoked_at),
            r.reason,
            r.via
        ],
    )?;
    Ok(())
}

/// Host certificate revocations whose certificates have not expired at `now`.
pub(super) fn load_unexpired_host_revocations(
    conn: &Connection,
    now: u64,
) -> Result<Vec<HostCertRevocation>, StoreError> {
    let mut st = conn.prepare(
        "SELECT serial, host, valid_before, ca_key, revoked_at, reason, via
         FROM host_cert_revocations WHERE valid_before > ?1 ORDER BY serial",
    )?;
    let rows = st.query_map([sql_time(now)], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            (
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ),
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (serial, host, (valid_before, ca_key, revoked_at, reason, via)) = row?;
        out.push(HostCertRevocation {
            serial: serial as u64,
            host: HostName::new(&host)
                .map_err(|e| StoreError::Corrupt(format!("host certificate revocation: {e}")))?,
            valid_before: valid_before.max(0) as u64,
            ca_key,
            revoked_at: revoked_at.max(0) as u64,
            reason,
            via,
        });
    }
    Ok(out)
}

const HOST_CERT_COLUMNS: &str = "c.serial, c.host, c.key_id, c.principals, c.key_fingerprint,
     c.valid_after, c.valid_before, c.issued_at, r.revoked_at, r.reason, r.via";

fn select_host_certs(
    conn: &Connection,
    tail: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<HostCertInfo>, StoreError> {
    let sql = format!(
        "SELECT {HOST_CERT_COLUMNS} FROM host_ssh_certs c
         LEFT JOIN host_cert_revocations r ON r.serial = c.serial {tail}"
    );
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let host: String = r.get(1)?;
        let principals: String = r.get(3)?;
        let revoked_at: Option<i64> = r.get(8)?;
        out.push(HostCertInfo {
            serial: r.get::<_, i64>(0)? as u64,
            host: HostName::new(&host)
                .map_err(|e| StoreError::Corrupt(format!("host certificate's host: {e}")))?,
            key_id: r.get(2)?,
            principals: principals
                .split(',')
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect(),
            key_fingerprint: r.get(4)?,
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
        });
    }
    Ok(out)
}

pub(super) fn host_certs(
    conn: &Connection,
    q: &HostCertQuery,
) -> Result<Vec<HostCertInfo>, StoreError> {
    select_host_certs(
        conn,
        "WHERE (?1 IS NULL OR c.host = ?1)
           AND (?2 = 0 OR (c.valid_before > ?3 AND r.serial IS NULL))
         ORDER BY c.issued_at DESC, c.serial DESC LIMIT ?4",
        params![
            q.host.as_ref().map(|h| h.as_str()),
            q.valid_only,
            sql_time(q.now),
            q.limit
        ],
    )
}

pub(super) fn host_cert_plan(
    conn: &Connection,
    sel: HostCertSelector,
    now: u64,
) -> Result<Option<HostPlan>, StoreError> {
    let certs = match sel {
        HostCertSelector::Serial(s) if s > i64::MAX as u64 => return Ok(None),
        HostCertSelector::Serial(s) => {
            select_host_certs(conn, "WHERE c.serial = ?1", params![s as i64])?
        }
        HostCertSelector::Host(id) => select_host_certs(
            conn,
            "WHERE c.host_id = ?1 ORDER BY c.serial",
            params![id as i64],
        )?,
    };
    Ok(HostPlan::of(certs, now))
}
