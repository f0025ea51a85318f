//! The SQLite schema: migrations (`PRAGMA user_version`) and the connection pragmas.
//!
//! Durability: WAL journal with `synchronous=FULL`, so every commit is fsynced before it
//! returns and the CA never answers for a change or a certificate that a power cut could
//! lose. `NORMAL` would be faster but may drop the last commits on power loss, which
//! would let a serial be issued twice or an issued certificate go unrecorded. Group
//! commit in the writer keeps the fsync count per certificate low.
//!
//! Must never: change a migration that has shipped (add a new one).

use crate::store::StoreError;
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// Schema migrations; index i brings the schema from version i to i+1.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE allocated_ids (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'group')),
    name TEXT NOT NULL,
    allocated_at INTEGER NOT NULL,
    UNIQUE (kind, name)
);
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    uid INTEGER NOT NULL UNIQUE,
    disabled INTEGER NOT NULL DEFAULT 0,
    gecos TEXT NOT NULL DEFAULT '',
    shell TEXT NOT NULL DEFAULT '/bin/bash',
    created_at INTEGER NOT NULL,
    disabled_at INTEGER
);
CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    gid INTEGER NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE memberships (
    group_name TEXT NOT NULL REFERENCES groups(name),
    user_name TEXT NOT NULL REFERENCES users(name),
    added_at INTEGER NOT NULL,
    PRIMARY KEY (group_name, user_name)
);
CREATE TABLE grants (
    id INTEGER PRIMARY KEY,
    group_name TEXT NOT NULL REFERENCES groups(name),
    selector TEXT NOT NULL,
    level TEXT NOT NULL CHECK (level IN ('ssh', 'sudo')),
    max_ttl_secs INTEGER NOT NULL,
    source_cidrs TEXT NOT NULL DEFAULT '',
    require_reason INTEGER NOT NULL DEFAULT 0,
    time_windows TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    removed_at INTEGER
);
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('admin', 'user', 'enroll')),
    subject TEXT NOT NULL,
    tags TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    used_at INTEGER
);
CREATE TABLE hosts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    tags TEXT NOT NULL,
    enrolled_at INTEGER NOT NULL,
    last_seen INTEGER,
    synced_version INTEGER,
    removed INTEGER NOT NULL DEFAULT 0,
    removed_at INTEGER,
    cert_serial TEXT NOT NULL,
    cert_not_after INTEGER NOT NULL
);
CREATE UNIQUE INDEX hosts_active_name ON hosts(name) WHERE removed = 0;
CREATE TABLE host_certs (
    serial TEXT PRIMARY KEY,
    host_id INTEGER NOT NULL REFERENCES hosts(id),
    not_after INTEGER NOT NULL,
    issued_at INTEGER NOT NULL
);
CREATE TABLE certificates (
    serial INTEGER PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    user_name TEXT NOT NULL,
    principals TEXT NOT NULL,
    scope TEXT NOT NULL,
    valid_after INTEGER NOT NULL,
    valid_before INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    public_key_fp TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    source_ip TEXT NOT NULL,
    decision_id INTEGER NOT NULL
);
CREATE INDEX certificates_user ON certificates(user_name);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    user_name TEXT NOT NULL,
    allowed INTEGER NOT NULL,
    reason TEXT NOT NULL,
    scope TEXT NOT NULL,
    requested_ttl_secs INTEGER NOT NULL,
    serial INTEGER,
    key_id TEXT,
    source_ip TEXT NOT NULL,
    grant_ids TEXT NOT NULL DEFAULT ''
);
CREATE TABLE changes (
    version INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    what TEXT NOT NULL
);
"#,
    // 2: identity. SCIM/OIDC attributes, deleted users and groups (rows kept, marked),
    // and the `scim` token kind (SQLite cannot alter a CHECK: the table is rebuilt).
    r#"
ALTER TABLE users ADD COLUMN external_id TEXT;
ALTER TABLE users ADD COLUMN oidc_subject TEXT;
ALTER TABLE users ADD COLUMN deleted_at INTEGER;
ALTER TABLE groups ADD COLUMN external_id TEXT;
ALTER TABLE groups ADD COLUMN deleted_at INTEGER;
CREATE TABLE tokens_v2 (
    hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('admin', 'user', 'enroll', 'scim')),
    subject TEXT NOT NULL,
    tags TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    used_at INTEGER
);
INSERT INTO tokens_v2 (hash, kind, subject, tags, created_at, expires_at, used_at)
    SELECT hash, kind, subject, tags, created_at, expires_at, used_at FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_v2 RENAME TO tokens;
"#,
    // 3: the audit trail (see crate::audit::store): per-host hash chains and rejected
    // uploads, append-only (triggers abort any UPDATE or DELETE).
    r#"
CREATE TABLE audit_records (
    host TEXT NOT NULL,
    seq INTEGER NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    event TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    user_name TEXT NOT NULL,
    at_unix INTEGER NOT NULL,
    PRIMARY KEY (host, seq)
) WITHOUT ROWID;
CREATE INDEX audit_records_user ON audit_records(user_name, at_unix);
CREATE INDEX audit_records_kind ON audit_records(kind, host, seq);
CREATE TABLE audit_rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL,
    seq INTEGER NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    records INTEGER NOT NULL
);
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END;
CREATE TRIGGER audit_rejections_no_update BEFORE UPDATE ON audit_rejections
BEGIN SELECT RAISE(ABORT, 'audit_rejections is append-only'); END;
CREATE TRIGGER audit_rejections_no_delete BEFORE DELETE ON audit_rejections
BEGIN SELECT RAISE(ABORT, 'audit_rejections is append-only'); END;
"#,
    // 4: certificate revocations (see crate::revoke): append-only like the audit tables;
    // one row per revoked serial, written with its `@ca` audit record.
    r#"
CREATE TABLE revocations (
    serial INTEGER PRIMARY KEY,
    key_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    valid_before INTEGER NOT NULL,
    ca_key TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    via TEXT NOT NULL
);
CREATE INDEX revocations_valid ON revocations(valid_before);
CREATE INDEX certificates_valid ON certificates(valid_before);
CREATE TRIGGER revocations_no_update BEFORE UPDATE ON revocations
BEGIN SELECT RAISE(ABORT, 'revocations is append-only'); END;
CREATE TRIGGER revocations_no_delete BEFORE DELETE ON revocations
BEGIN SELECT RAISE(ABORT, 'revocations is append-only'); END;
"#,
    // 5: SSH host certificate names: extra principals an enrollment token allows, and
    // those a host got at enrollment (comma-separated host names; '' = none).
    r#"
ALTER TABLE tokens ADD COLUMN ssh_names TEXT NOT NULL DEFAULT '';
ALTER TABLE hosts ADD COLUMN ssh_names TEXT NOT NULL DEFAULT '';
"#,
    // 6: issuance writes only to the ends of indexes. An index keyed by user (or by key
    // ID, which starts with the user) takes one dirty page per distinct user in each
    // group commit, written whole to the WAL: with many engineers signing in at once that
    // was most of the bytes per certificate. Key IDs end in a time-ordered request id
    // (crate::auth::request_id), so the unique index moves to `request_id` and a key ID
    // is found through it; by-user lookups go through `valid_before` (still valid
    // certificates) or scan (admin listings).
    r#"
CREATE TABLE certificates_v6 (
    serial INTEGER PRIMARY KEY,
    key_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    principals TEXT NOT NULL,
    scope TEXT NOT NULL,
    valid_after INTEGER NOT NULL,
    valid_before INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    public_key_fp TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    source_ip TEXT NOT NULL,
    decision_id INTEGER NOT NULL
);
INSERT INTO certificates_v6 (serial, key_id, user_name, principals, scope, valid_after,
                             valid_before, request_id, public_key_fp, issued_at, source_ip,
                             decision_id)
    SELECT serial, key_id, user_name, principals, scope, valid_after, valid_before,
           request_id, public_key_fp, issued_at, source_ip, decision_id FROM certificates;
DROP TABLE certificates;
ALTER TABLE certificates_v6 RENAME TO certificates;
CREATE UNIQUE INDEX certificates_request ON certificates(request_id);
CREATE INDEX certificates_valid ON certificates(valid_before);
DROP INDEX audit_records_user;
"#,
    // 7: who asked for each change (`Origin::kind` and the actor, e.g. `admin admin`,
    // `scim`, `oidc sub ...`).
    r#"
ALTER TABLE changes ADD COLUMN origin TEXT NOT NULL DEFAULT '';
"#,
    // 8: host identity. Enrollment tokens name the hosts they allow (`names`: exact names
    // and `*.domain` patterns, comma-separated) and may be used `max_uses` times; a
    // renewal marks the client certificate it replaces (`superseded_at`); every SSH host
    // certificate is recorded and can be revoked (both tables append-only).
    r#"
ALTER TABLE tokens ADD COLUMN names TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN max_uses INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
UPDATE tokens SET uses = 1 WHERE used_at IS NOT NULL;
ALTER TABLE host_certs ADD COLUMN superseded_at INTEGER;
CREATE TABLE host_ssh_certs (
    serial INTEGER PRIMARY KEY,
    host_id INTEGER NOT NULL,
    host TEXT NOT NULL,
    key_id TEXT NOT NULL,
    principals TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    valid_after INTEGER NOT NULL,
    valid_before INTEGER NOT NULL,
    issued_at INTEGER NOT NULL
);
CREATE INDEX host_ssh_certs_host ON host_ssh_certs(host_id, valid_before);
CREATE TABLE host_cert_revocations (
    serial INTEGER PRIMARY KEY,
    host TEXT NOT NULL,
    valid_before INTEGER NOT NULL,
    ca_key TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    via TEXT NOT NULL
);
CREATE TRIGGER host_ssh_certs_no_update BEFORE UPDATE ON host_ssh_certs
BEGIN SELECT RAISE(ABORT, 'host_ssh_certs is append-only'); END;
CREATE TRIGGER host_ssh_certs_no_delete BEFORE DELETE ON host_ssh_certs
BEGIN SELECT RAISE(ABORT, 'host_ssh_certs is append-only'); END;
CREATE TRIGGER host_cert_revocations_no_update BEFORE UPDATE ON host_cert_revocations
BEGIN SELECT RAISE(ABORT, 'host_cert_revocations is append-only'); END;
CREATE TRIGGER host_cert_revocations_no_delete BEFORE DELETE ON host_cert_revocations
BEGIN SELECT RAISE(ABORT, 'host_cert_revocations is append-only'); END;
"#,
    // 9: people and credentials (issue 13).
    // - Who created users, groups and memberships (SCIM changes only its own), who
    //   disabled a user (an admin's disable is sticky), the IdP issuer of a user's binding.
    //   Existing rows: SCIM's are those with an externalId; a disabled user was disabled
    //   by the admin.
    // - IdP group mappings (IdP group id → CA group).
    // - A name may hold several ids over time (a recycled login name gets a new uid):
    //   allocated_ids loses UNIQUE(kind, name).
    // - Tokens: a `bootstrap` kind, every token expires (the bootstrap token a day after
    //   this migration at the latest), who minted it, revocation time.
    // - The CA's epoch: random, new at every init and restore.
    r#"
ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE users ADD COLUMN disabled_by TEXT;
ALTER TABLE users ADD COLUMN oidc_issuer TEXT NOT NULL DEFAULT '';
UPDATE users SET source = 'scim' WHERE external_id IS NOT NULL;
UPDATE users SET disabled_by = 'admin' WHERE disabled = 1;
ALTER TABLE groups ADD COLUMN source TEXT NOT NULL DEFAULT 'admin';
UPDATE groups SET source = 'scim' WHERE external_id IS NOT NULL;
ALTER TABLE memberships ADD COLUMN source TEXT NOT NULL DEFAULT 'admin';
CREATE TABLE idp_groups (
    idp_group TEXT NOT NULL,
    group_name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (idp_group, group_name)
);
CREATE TABLE allocated_ids_v9 (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'group')),
    name TEXT NOT NULL,
    allocated_at INTEGER NOT NULL
);
INSERT INTO allocated_ids_v9 (id, kind, name, allocated_at)
    SELECT id, kind, name, allocated_at FROM allocated_ids;
DROP TABLE allocated_ids;
ALTER TABLE allocated_ids_v9 RENAME TO allocated_ids;
CREATE INDEX allocated_ids_name ON allocated_ids(kind, name);
CREATE TABLE tokens_v9 (
    hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('bootstrap', 'admin', 'user', 'enroll', 'scim')),
    subject TEXT NOT NULL,
    tags TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    ssh_names TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL DEFAULT '',
    revoked_at INTEGER,
    names TEXT NOT NULL DEFAULT '',
    max_uses INTEGER NOT NULL DEFAULT 1,
    uses INTEGER NOT NULL DEFAULT 0
);
INSERT INTO tokens_v9 (hash, kind, subject, tags, created_at, expires_at, used_at, ssh_names,
                       created_by, names, max_uses, uses)
    SELECT hash,
           CASE WHEN kind = 'admin' THEN 'bootstrap' ELSE kind END,
           CASE WHEN kind = 'admin' THEN 'bootstrap' ELSE subject END,
           tags, created_at,
           CASE WHEN kind = 'admin' OR expires_at IS NULL
                THEN MIN(COALESCE(expires_at, 9223372036854775807),
                         CAST(strftime('%s', 'now') AS INTEGER) + 86400)
                ELSE expires_at END,
           used_at, ssh_names, 'before migration 9', names, max_uses, uses
    FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_v9 RENAME TO tokens;
INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', lower(hex(randomblob(16))));
"#,
    // 10: what certificates issued under a grant carry (shared logins, permits,
    // force-command), as JSON; existing grants keep the defaults.
    r#"
ALTER TABLE grants ADD COLUMN cert_rules TEXT NOT NULL DEFAULT '{}';
"#,
    // 11: a gid for `smith-users` (every Smith user of a host, sshd's `Match Group` for
    // certificate-only logins): the last id of the range (sequential allocation reaches
    // it last and skips it), or past every allocated id if that one is taken. A fresh
    // database (no meta yet) gets it at init instead.
    r#"
INSERT INTO meta (key, value)
    SELECT 'users_gid', CAST(CASE
        WHEN NOT EXISTS (SELECT 1 FROM allocated_ids WHERE id = CAST(e.value AS INTEGER))
            THEN CAST(e.value AS INTEGER)
        ELSE COALESCE((SELECT MAX(id) + 1 FROM allocated_ids), 0) END AS TEXT)
    FROM meta e WHERE e.key = 'id_range_end';
INSERT INTO allocated_ids (id, kind, name, allocated_at)
    SELECT CAST(value AS INTEGER), 'group', 'smith-users', CAST(strftime('%s', 'now') AS INTEGER)
    FROM meta WHERE key = 'users_gid';
"#,
    // 12: CA keys of rotated roles (issue 23): each role's keys and their phases
    // (`crate::cakeys`). A role without rows uses its key file or ca.toml's token key.
    r#"
CREATE TABLE ca_keys (
    role TEXT NOT NULL CHECK (role IN ('user', 'host')),
    public_key TEXT NOT NULL,
    source TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('next', 'signing', 'retiring')),
    added_at INTEGER NOT NULL,
    added_version INTEGER NOT NULL,
    signing_since INTEGER,
    switch_at INTEGER,
    retire_at INTEGER,
    stale_after INTEGER,
    PRIMARY KEY (role, public_key)
);
"#,
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens a connection with the CA's pragmas (WAL, FULL sync, foreign keys, busy wait).
pub fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Applies pending migrations.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
