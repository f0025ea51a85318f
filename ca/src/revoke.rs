//! Certificate revocation: which issued certificates a request names (by serial, key
//! ID or user), the append-only `revocations` table, listing issued certificates, and
//! the `@ca` audit event of each revocation.
//!
//! A revocation is a [`Change::Revoke`](crate::model::Change::Revoke): it bumps the
//! global version, so hosts get the new KRL with their next sync (within about a
//! second: long polls wake up), and it is committed by the writer together with one
//! `@ca` audit record per certificate. Disabling or deleting a user (admin, SCIM)
//! revokes every still-valid certificate of theirs in the same transaction
//! ([`crate::server::Ca::mutate`] adds it).
//!
//! Owns: the SQL on `certificates` (read) and `revocations`. Must never: update or
//! delete a revocation, revoke a certificate this CA did not issue (unknown serials and
//! key IDs are refused), or count an expired certificate as revoked (it is reported as
//! expired and left out of the KRL).

use crate::db::StoreError;
use crate::model::Revocation;
use rusqlite::{params, Connection, OptionalExtension};
use smith_api::{IssuedCert, RevocationInfo};
use smith_proto::UserName;

/// Longest revocation reason accepted.
pub const MAX_REASON_LEN: usize = 256;

/// What a revocation request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Serial(u64),
    KeyId(String),
    User(UserName),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Serial(s) => write!(f, "serial {s}"),
            Selector::KeyId(k) => write!(f, "key ID {k}"),
            Selector::User(u) => write!(f, "user {u}"),
        }
    }
}

/// The certificates a request names, sorted out.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// To revoke now (still valid, not revoked yet).
    pub revoke: Vec<IssuedCert>,
    pub already_revoked: Vec<u64>,
    pub expired: Vec<u64>,
}

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

/// Issued certificates, newest first: all, a user's, and/or only those still valid
/// (not expired, not revoked).
pub fn list(
    conn: &Connection,
    user: Option<&str>,
    valid_only: bool,
    limit: u32,
    now: u64,
) -> Result<Vec<IssuedCert>, StoreError> {
    select_certs(
        conn,
        "WHERE (?1 IS NULL OR c.user_name = ?1)
           AND (?2 = 0 OR (c.valid_before > ?3 AND r.serial IS NULL))
         ORDER BY c.serial DESC LIMIT ?4",
        params![user, valid_only, sql_time(now), limit],
    )
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
    let mut st = conn.prepare(&sql)?;
    let rows = st.query_map(args, cert_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A Unix time as SQLite's signed integer.
fn sql_time(t: u64) -> i64 {
    t.min(i64::MAX as u64) as i64
}

/// The certificates `sel` names, sorted into to-revoke / already revoked / expired.
/// `None` when it names no certificate this CA issued.
pub fn plan(conn: &Connection, sel: &Selector, now: u64) -> Result<Option<Plan>, StoreError> {
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
    if certs.is_empty() {
        return Ok(None);
    }
    let mut p = Plan::default();
    for c in certs {
        if c.revoked.is_some() {
            p.already_revoked.push(c.serial);
        } else if c.valid_before <= now {
            p.expired.push(c.serial);
        } else {
            p.revoke.push(c);
        }
    }
    Ok(Some(p))
}

/// The still-valid, unrevoked certificates of `user` (for disable and delete).
pub fn valid_of_user(
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

/// The revocation rows for `certs`.
pub fn revocations(
    certs: &[IssuedCert],
    ca_key: &str,
    now: u64,
    reason: &str,
    via: &str,
) -> Vec<Revocation> {
    certs
        .iter()
        .map(|c| Revocation {
            serial: c.serial,
            key_id: c.key_id.clone(),
            user: c.user.clone(),
            valid_before: c.valid_before,
            ca_key: ca_key.to_string(),
            revoked_at: now,
            reason: reason.to_string(),
            via: via.to_string(),
        })
        .collect()
}

/// Inserts one revocation (inside the writer's transaction).
pub fn insert(conn: &Connection, r: &Revocation) -> Result<(), StoreError> {
    if r.serial > i64::MAX as u64 {
        return Err(StoreError::Corrupt(format!(
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
            r.via
        ],
    )?;
    Ok(())
}

/// Revocations whose certificates have not expired at `now` (what the KRL holds).
pub fn load_unexpired(conn: &Connection, now: u64) -> Result<Vec<Revocation>, StoreError> {
    let mut st = conn.prepare(
        "SELECT serial, key_id, user_name, valid_before, ca_key, revoked_at, reason, via
         FROM revocations WHERE valid_before > ?1 ORDER BY serial",
    )?;
    let rows = st.query_map([sql_time(now)], |r| {
        Ok(Revocation {
            serial: r.get::<_, i64>(0)? as u64,
            key_id: r.get(1)?,
            user: r.get(2)?,
            valid_before: r.get::<_, i64>(3)?.max(0) as u64,
            ca_key: r.get(4)?,
            revoked_at: r.get::<_, i64>(5)?.max(0) as u64,
            reason: r.get(6)?,
            via: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Whether `serial` is revoked.
#[allow(dead_code)]
pub fn is_revoked(conn: &Connection, serial: u64) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM revocations WHERE serial = ?1",
            [serial.min(i64::MAX as u64) as i64],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// The event text of a revocation's `@ca` audit record (compact JSON, fixed key order).
pub fn audit_event(r: &Revocation) -> String {
    serde_json::json!({
        "type": "cert_revocation",
        "serial": r.serial,
        "key_id": r.key_id,
        "user": r.user,
        "reason": r.reason,
        "via": r.via,
        "valid_before": r.valid_before,
        "at_unix": r.revoked_at,
    })
    .to_string()
}

/// Validates an admin's reason: bounded, printable.
pub fn check_reason(reason: &str) -> Result<(), String> {
    if reason.chars().count() > MAX_REASON_LEN {
        return Err(format!(
            "the reason is longer than {MAX_REASON_LEN} characters"
        ));
    }
    if reason.chars().any(|c| c.is_control()) {
        return Err("the reason may not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, crate::db::Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::db::Store::open(&dir.path().join("ca.db")).unwrap();
        (dir, store)
    }

    fn cert(conn: &Connection, serial: i64, user: &str, valid_before: i64) {
        conn.execute(
            "INSERT INTO certificates (serial, key_id, user_name, principals, scope, valid_after,
                 valid_before, request_id, public_key_fp, issued_at, source_ip, decision_id)
             VALUES (?1, ?2, ?3, ?3, '', 0, ?4, ?5, 'fp', 1, '127.0.0.1', 1)",
            params![
                serial,
                format!("smith:{user}:{serial}"),
                user,
                valid_before,
                serial.to_string()
            ],
        )
        .unwrap();
    }

    #[test]
    fn plans_sort_certificates_and_the_table_is_append_only() {
        let (_d, store) = db();
        let c = store.conn();
        cert(c, 1, "alice", 1000);
        cert(c, 2, "alice", 50);
        cert(c, 3, "alice", 1000);
        cert(c, 4, "bob", 1000);
        let now = 100;
        assert!(plan(c, &Selector::Serial(99), now).unwrap().is_none());
        assert!(plan(c, &Selector::KeyId("nope".into()), now)
            .unwrap()
            .is_none());
        let alice = UserName::new("alice").unwrap();
        let p = plan(c, &Selector::User(alice.clone()), now)
            .unwrap()
            .unwrap();
        let serials: Vec<u64> = p.revoke.iter().map(|c| c.serial).collect();
        assert_eq!((serials, p.expired.clone()), (vec![1, 3], vec![2]));
        let revs = revocations(
            &p.revoke[..1],
            "ssh-ed25519 AAAA",
            now,
            "lost laptop",
            "user",
        );
        insert(c, &revs[0]).unwrap();
        let p = plan(c, &Selector::User(alice.clone()), now)
            .unwrap()
            .unwrap();
        assert_eq!(p.already_revoked, vec![1]);
        assert_eq!(valid_of_user(c, &alice, now).unwrap().len(), 1);
        assert!(is_revoked(c, 1).unwrap() && !is_revoked(c, 3).unwrap());
        let p = plan(c, &Selector::KeyId("smith:bob:4".into()), now)
            .unwrap()
            .unwrap();
        assert_eq!(p.revoke[0].user, "bob");
        // The request id alone does not name a certificate: the whole key ID must match.
        assert!(plan(c, &Selector::KeyId("smith:alice:4".into()), now)
            .unwrap()
            .is_none());
        // Listing: newest first, `valid` leaves out revoked and expired.
        let all: Vec<u64> = list(c, Some("alice"), false, 10, now)
            .unwrap()
            .iter()
            .map(|c| c.serial)
            .collect();
        assert_eq!(all, vec![3, 2, 1]);
        let valid = list(c, None, true, 10, now).unwrap();
        assert_eq!(
            valid.iter().map(|c| c.serial).collect::<Vec<_>>(),
            vec![4, 3]
        );
        let listed = list(c, Some("alice"), false, 10, now).unwrap();
        assert_eq!(listed[2].revoked.as_ref().unwrap().reason, "lost laptop");
        // Unexpired revocations load; expired ones do not; rows are never changed.
        assert_eq!(load_unexpired(c, now).unwrap().len(), 1);
        assert!(load_unexpired(c, 1000).unwrap().is_empty());
        assert!(c.execute("DELETE FROM revocations", []).is_err());
        assert!(c
            .execute("UPDATE revocations SET reason = 'x'", [])
            .is_err());
        assert!(insert(c, &revs[0]).is_err(), "a serial is revoked once");
        let ev: serde_json::Value = serde_json::from_str(&audit_event(&revs[0])).unwrap();
        assert_eq!(
            (ev["type"].as_str(), ev["serial"].as_u64()),
            (Some("cert_revocation"), Some(1))
        );
    }
}
