//! `smith-ca store copy`: moves an embedded (SQLite) CA into a PostgreSQL database with
//! nothing lost, so that the same data directory (and its copies, the replicas) serve it
//! from there.
//!
//! What moves: the model (users, groups, grants, tokens, hosts, settings, the policy
//! version and the epoch, so hosts go on syncing without a full snapshot), every
//! certificate, decision, revocation, host certificate, audit record (every chain,
//! `@ca` included, byte for byte: chains still verify) and rejection, hosts' last
//! contact, and the serial high-water mark (serials continue after it). One `@ca`
//! record says the copy happened.
//!
//! Invariants: all or nothing (one PostgreSQL transaction); the target must hold no CA;
//! the source is only read.
//!
//! Must never: run while a `smith-ca serve` writes the source (the caller holds the data
//! directory's lock).

use super::postgres::{self, Connector, PgStore};
use super::sqlite::SqliteStore;
use super::{Store, StoreError};
use ::postgres::types::ToSql;
use rusqlite::OpenFlags;
use std::path::Path;

/// What a copy moved.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Copied {
    pub version: u64,
    pub epoch: String,
    pub last_serial: u64,
    /// Rows per table, in copy order.
    pub tables: Vec<(String, u64)>,
}

/// A column's type in both databases.
#[derive(Clone, Copy)]
enum Col {
    Int,
    OptInt,
    Text,
    OptText,
    Bool,
}

const TABLES: &[(&str, &[(&str, Col)])] = {
    use Col::*;
    &[
        (
            "certificates",
            &[
                ("serial", Int),
                ("key_id", Text),
                ("user_name", Text),
                ("principals", Text),
                ("scope", Text),
                ("valid_after", Int),
                ("valid_before", Int),
                ("request_id", Text),
                ("public_key_fp", Text),
                ("issued_at", Int),
                ("source_ip", Text),
                ("decision_id", Int),
            ],
        ),
        (
            "decisions",
            &[
                ("id", Int),
                ("at", Int),
                ("user_name", Text),
                ("allowed", Bool),
                ("reason", Text),
                ("scope", Text),
                ("requested_ttl_secs", Int),
                ("serial", OptInt),
                ("key_id", OptText),
                ("source_ip", Text),
                ("grant_ids", Text),
            ],
        ),
        (
            "revocations",
            &[
                ("serial", Int),
                ("key_id", Text),
                ("user_name", Text),
                ("valid_before", Int),
                ("ca_key", Text),
                ("revoked_at", Int),
                ("reason", Text),
                ("via", Text),
            ],
        ),
        (
            "host_ssh_certs",
            &[
                ("serial", Int),
                ("host_id", Int),
                ("host", Text),
                ("key_id", Text),
                ("principals", Text),
                ("key_fingerprint", Text),
                ("valid_after", Int),
                ("valid_before", Int),
                ("issued_at", Int),
            ],
        ),
        (
            "host_cert_revocations",
            &[
                ("serial", Int),
                ("host", Text),
                ("valid_before", Int),
                ("ca_key", Text),
                ("revoked_at", Int),
                ("reason", Text),
                ("via", Text),
            ],
        ),
        (
            "audit_records",
            &[
                ("host", Text),
                ("seq", Int),
                ("prev_hash", Text),
                ("hash", Text),
                ("event", Text),
                ("received_at", Int),
                ("kind", Text),
                ("user_name", Text),
                ("at_unix", Int),
            ],
        ),
        (
            "audit_rejections",
            &[
                ("id", Int),
                ("host", Text),
                ("seq", Int),
                ("code", Text),
                ("reason", Text),
                ("at", Int),
                ("first_seq", Int),
                ("last_seq", Int),
                ("records", Int),
            ],
        ),
    ]
};

fn sqlite_err(e: rusqlite::Error) -> StoreError {
    StoreError::Sql(e)
}

/// Copies the SQLite database `src` into the (empty) database `to`, reporting each
/// table as it goes through `progress`.
pub fn sqlite_to_postgres(
    src: &Path,
    to: Connector,
    now: u64,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<Copied, StoreError> {
    let loaded = {
        let store = SqliteStore::open(src)?;
        if !store.is_initialized()? {
            return Err(StoreError::Corrupt(format!(
                "{} holds no CA",
                src.display()
            )));
        }
        let l = store.load(now)?;
        store.shutdown();
        l
    };
    let target = PgStore::open(to.clone(), true)?;
    if target.is_initialized()? {
        return Err(StoreError::Conflict(format!(
            "{} already holds a CA: copy into an empty database",
            to.shown()
        )));
    }
    target.shutdown();
    drop(target);
    let conn = rusqlite::Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite_err)?;
    let mut client = to.connect()?;
    let mut tx = client.transaction().map_err(postgres::pg_error)?;
    let model = &loaded.model;
    let snapshot = serde_json::to_string(&model.export())
        .map_err(|e| StoreError::Corrupt(format!("snapshot: {e}")))?;
    tx.execute(
        "INSERT INTO smith_head (id, seq, version) VALUES (1, 0, $1)",
        &[&postgres::big(model.version())],
    )
    .map_err(postgres::pg_error)?;
    tx.execute(
        "INSERT INTO smith_snapshots (seq, taken_at, model, format) VALUES (0, $1, $2, $3)",
        &[&postgres::big(now), &snapshot, &postgres::LOG_FORMAT],
    )
    .map_err(postgres::pg_error)?;
    tx.execute(
        "INSERT INTO smith_serials (id, next) VALUES (1, $1)",
        &[&postgres::big(loaded.last_serial.saturating_add(1))],
    )
    .map_err(postgres::pg_error)?;
    tx.execute(
        "INSERT INTO smith_meta (key, value) VALUES ('epoch', $1), ('copied_from', $2),
                ('created_at', $3)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&model.epoch(), &src.display().to_string(), &now.to_string()],
    )
    .map_err(postgres::pg_error)?;
    let mut copied = Copied {
        version: model.version(),
        epoch: model.epoch().to_string(),
        last_serial: loaded.last_serial,
        tables: Vec::new(),
    };
    for (table, cols) in TABLES {
        let n = copy_table(&conn, &mut tx, table, cols)?;
        progress(table, n);
        copied.tables.push((table.to_string(), n));
    }
    // Sequences continue after the copied ids; chain heads are the last records.
    tx.batch_execute(
        "SELECT setval('decisions_id_seq', GREATEST((SELECT MAX(id) FROM decisions), 1));
         SELECT setval('audit_rejections_id_seq',
                       GREATEST((SELECT MAX(id) FROM audit_rejections), 1));
         INSERT INTO audit_heads (host, seq, hash)
             SELECT DISTINCT ON (host) host, seq, hash FROM audit_records
             ORDER BY host, seq DESC;",
    )
    .map_err(postgres::pg_error)?;
    // Hosts' last contact and users' disable times.
    let mut n = 0;
    {
        let mut st = conn
            .prepare("SELECT id, last_seen, synced_version FROM hosts")
            .map_err(sqlite_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })
            .map_err(sqlite_err)?;
        for row in rows {
            let (id, seen, v) = row.map_err(sqlite_err)?;
            tx.execute(
                "INSERT INTO liveness (host_id, last_seen, synced_version) VALUES ($1, $2, $3)",
                &[&id, &seen, &v],
            )
            .map_err(postgres::pg_error)?;
            n += 1;
        }
    }
    progress("liveness", n);
    copied.tables.push(("liveness".into(), n));
    let mut n = 0;
    {
        let mut st = conn
            .prepare("SELECT name, disabled_at FROM users WHERE disabled_at IS NOT NULL")
            .map_err(sqlite_err)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(sqlite_err)?;
        for row in rows {
            let (name, at) = row.map_err(sqlite_err)?;
            tx.execute(
                "INSERT INTO disabled_users (name, at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&name, &at],
            )
            .map_err(postgres::pg_error)?;
            n += 1;
        }
    }
    progress("disabled_users", n);
    copied.tables.push(("disabled_users".into(), n));
    let event = serde_json::json!({
        "type": "store_copy",
        "at_unix": now,
        "from": src.display().to_string(),
        "version": model.version(),
        "last_serial": loaded.last_serial,
        "tables": copied.tables,
    })
    .to_string();
    postgres::append_ca(&mut tx, vec![(event, None)], now)?;
    tx.commit().map_err(postgres::pg_error)?;
    Ok(copied)
}

/// Copies every row of `table` (columns `cols`) inside `tx`.
fn copy_table(
    conn: &rusqlite::Connection,
    tx: &mut ::postgres::Transaction<'_>,
    table: &str,
    cols: &[(&str, Col)],
) -> Result<u64, StoreError> {
    let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
    let select = format!("SELECT {} FROM {table}", names.join(", "));
    let placeholders: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
    let insert = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names.join(", "),
        placeholders.join(", ")
    );
    let stmt = tx.prepare(&insert).map_err(postgres::pg_error)?;
    let mut st = conn.prepare(&select).map_err(sqlite_err)?;
    let mut rows = st.query([]).map_err(sqlite_err)?;
    let mut n = 0u64;
    while let Some(r) = rows.next().map_err(sqlite_err)? {
        let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(cols.len());
        for (i, (_, ty)) in cols.iter().enumerate() {
            let v: Box<dyn ToSql + Sync> = match ty {
                Col::Int => Box::new(r.get::<_, i64>(i).map_err(sqlite_err)?),
                Col::OptInt => Box::new(r.get::<_, Option<i64>>(i).map_err(sqlite_err)?),
                Col::Text => Box::new(r.get::<_, String>(i).map_err(sqlite_err)?),
                Col::OptText => Box::new(r.get::<_, Option<String>>(i).map_err(sqlite_err)?),
                Col::Bool => Box::new(r.get::<_, i64>(i).map_err(sqlite_err)? != 0),
            };
            values.push(v);
        }
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|b| b.as_ref()).collect();
        tx.execute(&stmt, &params).map_err(postgres::pg_error)?;
        n += 1;
    }
    Ok(n)
}
