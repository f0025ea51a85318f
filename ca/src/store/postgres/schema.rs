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

pub(super) const MIGRATIONS: &[&str] = &[
    r#"
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
    r#"
CREATE TABLE smith_jobs (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until BIGINT NOT NULL
);
"#,
];

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
    if from > supported {
        return Err(StoreError::TooNew {
            found: from,
            supported,
        });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        tx.batch_execute(m).map_err(pg_error)?;
        tx.execute(
            "INSERT INTO smith_meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&(i as i64 + 1).to_string()],
        )
        .map_err(pg_error)?;
    }
    if let Some(role) = app_role {
        grant(&mut tx, role)?;
    }
    tx.commit().map_err(pg_error)?;
    Ok(Migrated {
        from,
        to: supported,
    })
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
