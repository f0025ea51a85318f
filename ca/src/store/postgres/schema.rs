//! The PostgreSQL schema and its migrations.
//!
//! The model (users, groups, grants, tokens, hosts, settings) lives as an append-only
//! change log (`smith_log`, one row per committed change set, numbered under the lock of
//! the single `smith_head` row so that the numbering is commit order, never a SEQUENCE)
//! with periodic snapshots (`smith_snapshots`); replicas replay it. What is queried by
//! itself (certificates, decisions, revocations, host certificates, audit chains) has
//! its own table.
//!
//! Invariants:
//! - Migrations only add (tables, columns with defaults, indexes): a replica of the
//!   previous release keeps serving the migrated schema (rolling upgrades).
//! - `audit_records`, `audit_rejections`, `revocations`, `host_ssh_certs`,
//!   `host_cert_revocations` and `smith_log` refuse UPDATE, DELETE and TRUNCATE by
//!   trigger, whoever asks; with `--app-role` the serving role is not even granted them.
//! - Migrations run under an advisory lock: replicas that start together migrate once.
//!
//! Must never: renumber or rewrite a migration that shipped.

use super::pg_error;
use crate::store::StoreError;

/// The advisory lock key migrations hold ("smith-ca" in ASCII).
const MIGRATION_LOCK: i64 = 0x736d_6974_682d_6361;

/// One step of the schema.
pub(super) struct Migration {
    pub sql: &'static str,
    /// Whether a smith-ca that knows only the steps before this one may still serve the
    /// schema after it (a rolling upgrade: replicas of the previous release keep serving
    /// while the new ones start). True only for a step that adds (a table, a column with
    /// a default, an index) what older code can ignore without reading the policy wrong.
    pub older_may_serve: bool,
}

/// The schema's steps; the version of a database is how many it has applied.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        older_may_serve: false,
        sql: r#"
CREATE TABLE smith_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE smith_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE smith_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    version BIGINT,
    what TEXT NOT NULL,
    origin TEXT NOT NULL,
    changes TEXT NOT NULL
);
CREATE TABLE smith_snapshots (
    seq BIGINT PRIMARY KEY,
    taken_at BIGINT NOT NULL,
    model TEXT NOT NULL
);
CREATE TABLE smith_serials (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next BIGINT NOT NULL
);
CREATE TABLE certificates (
    serial BIGINT PRIMARY KEY,
    key_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    principals TEXT NOT NULL,
    scope TEXT NOT NULL,
    valid_after BIGINT NOT NULL,
    valid_before BIGINT NOT NULL,
    request_id TEXT NOT NULL UNIQUE,
    public_key_fp TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    source_ip TEXT NOT NULL,
    decision_id BIGINT NOT NULL
);
CREATE INDEX certificates_user ON certificates(user_name);
CREATE INDEX certificates_valid ON certificates(valid_before);
CREATE TABLE decisions (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    user_name TEXT NOT NULL,
    allowed BOOLEAN NOT NULL,
    reason TEXT NOT NULL,
    scope TEXT NOT NULL,
    requested_ttl_secs BIGINT NOT NULL,
    serial BIGINT,
    key_id TEXT,
    source_ip TEXT NOT NULL,
    grant_ids TEXT NOT NULL DEFAULT ''
);
CREATE INDEX decisions_user ON decisions(user_name, id);
CREATE INDEX decisions_at ON decisions(at);
CREATE TABLE revocations (
    serial BIGINT PRIMARY KEY,
    key_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    valid_before BIGINT NOT NULL,
    ca_key TEXT NOT NULL,
    revoked_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    via TEXT NOT NULL
);
CREATE TABLE host_ssh_certs (
    serial BIGINT PRIMARY KEY,
    host_id BIGINT NOT NULL,
    host TEXT NOT NULL,
    key_id TEXT NOT NULL,
    principals TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    valid_after BIGINT NOT NULL,
    valid_before BIGINT NOT NULL,
    issued_at BIGINT NOT NULL
);
CREATE INDEX host_ssh_certs_host ON host_ssh_certs(host_id, valid_before);
CREATE TABLE host_cert_revocations (
    serial BIGINT PRIMARY KEY,
    host TEXT NOT NULL,
    valid_before BIGINT NOT NULL,
    ca_key TEXT NOT NULL,
    revoked_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    via TEXT NOT NULL
);
CREATE TABLE disabled_users (name TEXT PRIMARY KEY, at BIGINT NOT NULL);
CREATE TABLE liveness (
    host_id BIGINT PRIMARY KEY,
    last_seen BIGINT,
    synced_version BIGINT
);
CREATE TABLE audit_heads (host TEXT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE audit_records (
    host TEXT NOT NULL,
    seq BIGINT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    event TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    user_name TEXT NOT NULL,
    at_unix BIGINT NOT NULL,
    PRIMARY KEY (host, seq)
);
CREATE INDEX audit_records_kind ON audit_records(kind, host, seq);
CREATE INDEX audit_records_received ON audit_records(received_at, host, seq);
CREATE TABLE audit_rejections (
    id BIGSERIAL PRIMARY KEY,
    host TEXT NOT NULL,
    seq BIGINT NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    records BIGINT NOT NULL
);
CREATE FUNCTION smith_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION smith_append_only();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION smith_append_only();
CREATE TRIGGER audit_rejections_append_only BEFORE UPDATE OR DELETE ON audit_rejections
    FOR EACH ROW EXECUTE FUNCTION smith_append_only();
CREATE TRIGGER audit_rejections_no_truncate BEFORE TRUNCATE ON audit_rejections
    FOR EACH STATEMENT EXECUTE FUNCTION smith_append_only();
CREATE TRIGGER revocations_append_only BEFORE UPDATE OR DELETE ON revocations
    FOR EACH ROW EXECUTE FUNCTION smith_append_only();
CREATE TRIGGER revocations_no_truncate BEFORE TRUNCATE ON revocations
    FOR EACH STATEMENT EXECUTE FUNCTION smith_append_only();
CREATE TRIGGER host_ssh_certs_append_only BEFORE UPDATE OR DELETE ON host_ssh_certs
    FOR EACH ROW EXECUTE FUNCTION smith_append_only();
CREATE TRIGGER host_ssh_certs_no_truncate BEFORE TRUNCATE ON host_ssh_certs
    FOR EACH STATEMENT EXECUTE FUNCTION smith_append_only();
CREATE TRIGGER host_cert_revocations_append_only BEFORE UPDATE OR DELETE
    ON host_cert_revocations FOR EACH ROW EXECUTE FUNCTION smith_append_only();
CREATE TRIGGER host_cert_revocations_no_truncate BEFORE TRUNCATE ON host_cert_revocations
    FOR EACH STATEMENT EXECUTE FUNCTION smith_append_only();
CREATE TRIGGER smith_log_append_only BEFORE UPDATE OR DELETE ON smith_log
    FOR EACH ROW EXECUTE FUNCTION smith_append_only();
CREATE TRIGGER smith_log_no_truncate BEFORE TRUNCATE ON smith_log
    FOR EACH STATEMENT EXECUTE FUNCTION smith_append_only();
"#,
    },
    // Jobs that run once across replicas: older replicas simply do not take part.
    Migration {
        older_may_serve: true,
        sql: r#"
CREATE TABLE smith_jobs (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until BIGINT NOT NULL
);
"#,
    },
    // The format of each change log entry and snapshot (see `LOG_FORMAT`): a replica
    // stops serving at an entry it cannot read rather than serve a policy it misreads.
    // Rows written before (and by older replicas) are format 1.
    Migration {
        older_may_serve: true,
        sql: r#"
ALTER TABLE smith_log ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
ALTER TABLE smith_snapshots ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
"#,
    },
];

/// The oldest schema a smith-ca must know to serve a database that has applied the
/// first `applied` steps: the last step older code may not serve past.
pub(super) fn oldest_server(applied: usize) -> i64 {
    MIGRATIONS
        .iter()
        .take(applied)
        .enumerate()
        .filter(|(_, m)| !m.older_may_serve)
        .map(|(i, _)| i as i64 + 1)
        .max()
        .unwrap_or(0)
}

/// Whether this smith-ca may serve a database whose schema is at `found` and needs a
/// smith-ca knowing at least `needs` (both from `smith_meta`).
pub(super) fn servable(found: i64, needs: i64) -> Result<(), StoreError> {
    let supported = MIGRATIONS.len() as i64;
    if found > supported && needs > supported {
        return Err(StoreError::TooNew {
            found: needs,
            supported,
        });
    }
    Ok(())
}

/// Tables the serving role may only read and append to.
const APPEND_ONLY: &[&str] = &[
    "audit_records",
    "audit_rejections",
    "revocations",
    "host_ssh_certs",
    "host_cert_revocations",
    "smith_log",
];

/// Tables the serving role may read and change.
const MUTABLE: &[&str] = &[
    "smith_meta",
    "smith_head",
    "smith_snapshots",
    "smith_serials",
    "certificates",
    "decisions",
    "disabled_users",
    "liveness",
    "audit_heads",
    "smith_jobs",
];

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i64,
    pub to: i64,
}

/// Brings the schema up to date (idempotent; under an advisory lock). `app_role`, when
/// given, is granted what the serving CA needs and no more: read and append on the
/// append-only tables, read and write on the others.
pub fn migrate(
    client: &mut postgres::Client,
    app_role: Option<&str>,
) -> Result<Migrated, StoreError> {
    let supported = MIGRATIONS.len() as i64;
    let mut tx = client.transaction().map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg_error)?;
    let from = version(&mut tx)?;
    servable(from, needs(&mut tx, from)?)?;
    for (i, m) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        tx.batch_execute(m.sql).map_err(pg_error)?;
        for (key, value) in [
            ("schema_version", i as i64 + 1),
            ("schema_oldest_server", oldest_server(i + 1)),
        ] {
            tx.execute(
                "INSERT INTO smith_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value.to_string()],
            )
            .map_err(pg_error)?;
        }
    }
    if let Some(role) = app_role {
        grant(&mut tx, role)?;
    }
    tx.commit().map_err(pg_error)?;
    Ok(Migrated {
        from,
        to: supported.max(from),
    })
}

/// The oldest schema a smith-ca must know to serve this database (written by every
/// migration; a database migrated before that key existed needs its own version).
pub(super) fn needs(c: &mut impl postgres::GenericClient, version: i64) -> Result<i64, StoreError> {
    if version == 0 {
        return Ok(0);
    }
    let row = c
        .query_opt(
            "SELECT value FROM smith_meta WHERE key = 'schema_oldest_server'",
            &[],
        )
        .map_err(pg_error)?;
    match row {
        None => Ok(version),
        Some(r) => {
            let v: String = r.get(0);
            v.parse()
                .map_err(|_| StoreError::Corrupt(format!("schema_oldest_server '{v}'")))
        }
    }
}

/// The schema version of the database (0: none yet).
pub(super) fn version(c: &mut impl postgres::GenericClient) -> Result<i64, StoreError> {
    let exists: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                            WHERE table_schema = current_schema() AND table_name = 'smith_meta')",
            &[],
        )
        .map_err(pg_error)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = c
        .query_opt(
            "SELECT value FROM smith_meta WHERE key = 'schema_version'",
            &[],
        )
        .map_err(pg_error)?;
    match row {
        None => Ok(0),
        Some(r) => {
            let v: String = r.get(0);
            v.parse()
                .map_err(|_| StoreError::Corrupt(format!("schema_version '{v}'")))
        }
    }
}

/// Grants `role` what serving needs. The role name is checked (letters, digits, `_`)
/// and quoted: it is spliced into the statements.
fn grant(tx: &mut postgres::Transaction<'_>, role: &str) -> Result<(), StoreError> {
    if role.is_empty()
        || role.len() > 63
        || !role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(StoreError::Conflict(format!(
            "'{}' is not a role name this tool accepts (letters, digits and _, at most 63)",
            role.escape_debug()
        )));
    }
    let mut sql = String::new();
    for t in APPEND_ONLY {
        sql.push_str(&format!(
            "REVOKE ALL ON {t} FROM \"{role}\"; GRANT SELECT, INSERT ON {t} TO \"{role}\";\n"
        ));
    }
    for t in MUTABLE {
        sql.push_str(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO \"{role}\";\n"
        ));
    }
    sql.push_str(&format!(
        "GRANT USAGE ON SEQUENCE decisions_id_seq, audit_rejections_id_seq TO \"{role}\";\n"
    ));
    tx.batch_execute(&sql).map_err(pg_error)
}
