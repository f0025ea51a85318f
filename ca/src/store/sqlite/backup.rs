//! Backups and restores of the SQLite store.
//!
//! - A backup is `VACUUM INTO` from a read-only connection: a consistent copy of the
//!   database as of one read transaction, taken while `smith-ca serve` keeps writing
//!   (WAL readers do not block the writer).
//! - A restore works on a copy of the backup, never on the backup: migrated to this
//!   build's schema, given a **new epoch** (hosts then take a full snapshot whatever
//!   version they had seen), with the identifiers that must never repeat carried over
//!   from the database it replaces when that one is readable (the serial high-water mark,
//!   the id, grant and host cursors, every allocated uid/gid: certificates, files on hosts
//!   and grant ids issued after the backup keep their meaning), and the restore recorded
//!   in the `@ca` chain. The caller swaps the copy in.
//!
//! Must never: write to the backup or to the replaced database, or give a restored
//! database the epoch it had.

use super::audit;
use super::load::{meta_get, meta_u64};
use super::persist::meta_set;
use super::schema::{migrate, open_connection};
use crate::audit::CA_CHAIN;
use crate::store::StoreError;
use rusqlite::{params, Connection, OpenFlags};
use smith_api::chain;
use std::path::Path;
use std::time::Duration;

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupInfo {
    pub taken_at: u64,
    pub version: u64,
    pub epoch: String,
    pub last_serial: u64,
    pub schema: i64,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestoreInfo {
    /// The backup's version and epoch.
    pub version: u64,
    pub backup_epoch: String,
    /// The restored database's new epoch.
    pub epoch: String,
    /// The serial high-water mark after the restore.
    pub last_serial: u64,
    /// Whether the replaced database's counters and allocated ids were carried over.
    pub carried_over: bool,
}

fn read_only(path: &Path) -> Result<Connection, StoreError> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(Duration::from_secs(10))?;
    Ok(c)
}

fn info(c: &Connection, now: u64) -> Result<BackupInfo, StoreError> {
    Ok(BackupInfo {
        taken_at: now,
        version: meta_u64(c, "version")?,
        epoch: meta_get(c, "epoch")?.unwrap_or_default(),
        last_serial: super::load::last_serial(c)?,
        schema: c.pragma_query_value(None, "user_version", |r| r.get(0))?,
    })
}

/// Copies the database at `db` to `out` (which must not exist), consistently, while it
/// may be in use.
pub fn backup(db: &Path, out: &Path, now: u64) -> Result<BackupInfo, StoreError> {
    let c = read_only(db)?;
    let out_text = out
        .to_str()
        .ok_or_else(|| StoreError::Corrupt(format!("{} is not UTF-8", out.display())))?;
    c.execute("VACUUM INTO ?1", params![out_text])?;
    // What the copy holds (not the source: it may have moved on).
    info(&read_only(out)?, now)
}

/// The counters and allocations of the database a restore replaces.
struct Carried {
    serial: u64,
    next_id: u64,
    next_grant_id: u64,
    next_host_id: u64,
    ids: Vec<(i64, String, String, i64)>,
}

fn carried(replaced: &Path) -> Result<Carried, StoreError> {
    let c = read_only(replaced)?;
    let mut st = c.prepare("SELECT id, kind, name, allocated_at FROM allocated_ids")?;
    let ids = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Carried {
        serial: super::load::last_serial(&c)?,
        next_id: meta_u64(&c, "next_id")?,
        next_grant_id: meta_u64(&c, "next_grant_id")?,
        next_host_id: meta_u64(&c, "next_host_id")?,
        ids,
    })
}

/// Prepares `work` (a fresh copy of a backup) to replace the database `replaced`: see
/// the module doc. `event` builds the `@ca` record of the restore from what it did.
pub fn restore(
    work: &Path,
    replaced: Option<&Path>,
    new_epoch: &str,
    now: u64,
    event: impl FnOnce(&RestoreInfo) -> String,
) -> Result<RestoreInfo, StoreError> {
    let carried = match replaced.filter(|p| p.exists()) {
        Some(p) => match carried(p) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "the database being replaced cannot be read: its counters are not carried over");
                None
            }
        },
        None => None,
    };
    let mut conn = open_connection(work)?;
    migrate(&mut conn)?;
    if meta_get(&conn, "sudo_gid")?.is_none() {
        return Err(StoreError::Corrupt(
            "the backup is not a Smith CA database".into(),
        ));
    }
    let backup_epoch = meta_get(&conn, "epoch")?.unwrap_or_default();
    let version = meta_u64(&conn, "version")?;
    let tx = conn.transaction()?;
    meta_set(&tx, "epoch", new_epoch)?;
    if let Some(c) = &carried {
        for (key, theirs) in [
            ("serial", c.serial),
            ("next_id", c.next_id),
            ("next_grant_id", c.next_grant_id),
            ("next_host_id", c.next_host_id),
        ] {
            let ours = meta_u64(&tx, key)?;
            meta_set(&tx, key, &ours.max(theirs).to_string())?;
        }
        for (id, kind, name, at) in &c.ids {
            tx.execute(
                "INSERT INTO allocated_ids (id, kind, name, allocated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO NOTHING",
                params![id, kind, name, at],
            )?;
        }
    }
    let out = RestoreInfo {
        version,
        backup_epoch,
        epoch: new_epoch.to_string(),
        last_serial: super::load::last_serial(&tx)?,
        carried_over: carried.is_some(),
    };
    let head = audit::head(&tx, CA_CHAIN)?;
    let rec = chain::next_record(CA_CHAIN, head.0, &head.1, event(&out));
    audit::insert(&tx, CA_CHAIN, &rec, now)?;
    tx.commit()?;
    // No WAL left beside the file the caller renames.
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    drop(conn);
    Ok(out)
}
