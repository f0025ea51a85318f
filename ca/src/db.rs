//! The embedded SQLite store: schema and migrations, loading the model at start, and
//! persisting admin changes (one transaction per mutation).
//!
//! Durability: WAL journal with `synchronous=FULL`, so every commit is fsynced before it
//! returns and the CA never answers for a change or a certificate that a power cut could
//! lose. `NORMAL` would be faster but may drop the last commits on power loss, which
//! would let a serial be issued twice or an issued certificate go unrecorded. Group
//! commit in [`crate::writer`] keeps the fsync count per certificate low.
//!
//! Owns: the schema (`PRAGMA user_version` migrations) and every SQL statement of the
//! admin path. Must never: be read on the issuance or sync hot path (the model in
//! [`crate::model`] serves those), or hold secrets other than token hashes.

use crate::model::{Change, Grant, Group, Host, IdKind, Model, Settings, Token, TokenKind, User};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use smith_proto::{GroupName, HostName, IdRange, Level, PosixId, Tags, UserName};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the database is corrupt or from another program: {0}")]
    Corrupt(String),
    #[error(
        "the database schema version {found} is newer than this smith-ca supports ({supported}); \
         upgrade smith-ca"
    )]
    TooNew { found: i64, supported: i64 },
}

/// Schema migrations; index i brings the schema from version i to i+1.
const MIGRATIONS: &[&str] = &[
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

/// What `smith-ca init` writes into a fresh database.
pub struct InitMeta<'a> {
    pub id_range: IdRange,
    pub user_ca_algorithm: &'a str,
    pub admin_token_hash: &'a str,
    pub now: u64,
}

pub struct Store {
    conn: Connection,
}

/// The model's allocation cursors, which a commit persists (copied out so that no model
/// lock is held while SQLite fsyncs).
#[derive(Debug, Clone, Copy)]
pub struct Counters {
    pub next_grant_id: u64,
    pub next_host_id: u64,
    pub next_id: u32,
    pub id_range: IdRange,
}

impl Counters {
    pub fn of(m: &Model) -> Counters {
        Counters {
            next_grant_id: m.next_grant_id,
            next_host_id: m.next_host_id,
            next_id: m.next_id,
            id_range: m.settings.id_range,
        }
    }
}

fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

fn meta_u64(conn: &Connection, key: &str) -> Result<u64, StoreError> {
    let v = meta_get(conn, key)?
        .ok_or_else(|| StoreError::Corrupt(format!("meta key '{key}' is missing")))?;
    v.parse()
        .map_err(|_| StoreError::Corrupt(format!("meta key '{key}' is not a number: {v}")))
}

fn meta_set(tx: &Transaction<'_>, key: &str, value: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn corrupt<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

impl Store {
    /// The connection, for read-only queries of other modules (e.g. the audit store).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        Ok(Store { conn })
    }

    /// Fills a fresh database: settings, the reserved sudo gid, the bootstrap admin token.
    pub fn initialize(&mut self, m: &InitMeta<'_>) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let sudo_gid = m.id_range.start;
        for (k, v) in [
            // Version 1 from the start: `since=0` means "nothing yet", so a host that
            // synced an empty policy long-polls at 1 instead of spinning at 0.
            ("version", "1".to_string()),
            ("serial", "0".to_string()),
            ("next_id", (sudo_gid + 1).to_string()),
            ("next_grant_id", "1".to_string()),
            ("next_host_id", "1".to_string()),
            ("sudo_gid", sudo_gid.to_string()),
            ("id_range_start", m.id_range.start.to_string()),
            ("id_range_end", m.id_range.end.to_string()),
            ("user_ca_algorithm", m.user_ca_algorithm.to_string()),
            ("created_at", m.now.to_string()),
        ] {
            meta_set(&tx, k, &v)?;
        }
        tx.execute(
            "INSERT INTO allocated_ids (id, kind, name, allocated_at) VALUES (?1, 'group', ?2, ?3)",
            params![sudo_gid, smith_proto::names::SUDO_GROUP, m.now],
        )?;
        tx.execute(
            "INSERT INTO tokens (hash, kind, subject, created_at) VALUES (?1, 'admin', 'admin', ?2)",
            params![m.admin_token_hash, m.now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Whether [`Store::initialize`] ran on this database.
    pub fn is_initialized(&self) -> Result<bool, StoreError> {
        Ok(meta_get(&self.conn, "sudo_gid")?.is_some())
    }

    /// Highest certificate serial ever issued (meta high-water mark and table).
    pub fn last_serial(&self) -> Result<u64, StoreError> {
        let meta = meta_u64(&self.conn, "serial")?;
        let table: Option<i64> =
            self.conn
                .query_row("SELECT MAX(serial) FROM certificates", [], |r| r.get(0))?;
        Ok(meta.max(table.unwrap_or(0).max(0) as u64))
    }

    /// Loads everything the model holds.
    pub fn load(&self) -> Result<Model, StoreError> {
        let c = &self.conn;
        let start = meta_u64(c, "id_range_start")?;
        let end = meta_u64(c, "id_range_end")?;
        let id_range = IdRange::new(start as u32, end as u32).map_err(StoreError::Corrupt)?;
        let sudo_gid = PosixId::new(meta_u64(c, "sudo_gid")?).map_err(corrupt("sudo_gid"))?;
        let mut m = Model::empty(Settings { id_range, sudo_gid });
        m.version = meta_u64(c, "version")?;
        m.log_base = m.version;
        m.next_grant_id = meta_u64(c, "next_grant_id")?;
        m.next_host_id = meta_u64(c, "next_host_id")?;

        let mut st = c.prepare("SELECT id, kind, name FROM allocated_ids")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (id, kind, name) = row?;
            let kind = match kind.as_str() {
                "user" => IdKind::User,
                _ => IdKind::Group,
            };
            m.note_id(id as u32, kind, &name);
        }
        m.next_id = m.next_id.max(meta_u64(c, "next_id")? as u32);

        let mut st = c.prepare(
            "SELECT name, gid, created_at, external_id FROM groups
             WHERE deleted_at IS NULL ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        for row in rows {
            let (name, gid, created_at, external_id) = row?;
            let name = GroupName::new(&name).map_err(corrupt("group name"))?;
            m.groups.insert(
                name.clone(),
                Group {
                    name,
                    gid: PosixId::new(gid as u64).map_err(corrupt("gid"))?,
                    members: Default::default(),
                    created_at: created_at as u64,
                    external_id,
                },
            );
        }

        let mut st = c.prepare(
            "SELECT name, uid, disabled, gecos, shell, created_at, external_id, oidc_subject
             FROM users WHERE deleted_at IS NULL ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                (
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ),
                (
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ),
            ))
        })?;
        for row in rows {
            let ((name, uid, disabled, gecos, shell, created_at), (external_id, oidc_subject)) =
                row?;
            let name = UserName::new(&name).map_err(corrupt("user name"))?;
            m.users.insert(
                name.clone(),
                User {
                    name,
                    uid: PosixId::new(uid as u64).map_err(corrupt("uid"))?,
                    disabled,
                    gecos,
                    shell,
                    created_at: created_at as u64,
                    groups: Default::default(),
                    external_id,
                    oidc_subject,
                },
            );
        }

        let mut st = c.prepare("SELECT group_name, user_name FROM memberships")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (g, u) = row?;
            let g = GroupName::new(&g).map_err(corrupt("group name"))?;
            let u = UserName::new(&u).map_err(corrupt("user name"))?;
            if let Some(group) = m.groups.get_mut(&g) {
                group.members.insert(u.clone());
            }
            if let Some(user) = m.users.get_mut(&u) {
                user.groups.insert(g);
            }
        }

        let mut st = c.prepare(
            "SELECT id, group_name, selector, level, max_ttl_secs, source_cidrs, require_reason,
                    time_windows, created_at
             FROM grants WHERE removed_at IS NULL ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, bool>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, i64>(8)?,
            ))
        })?;
        for row in rows {
            let (id, group, selector, level, max_ttl, cidrs, require_reason, windows, created) =
                row?;
            let source_cidrs = cidrs
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse())
                .collect::<Result<Vec<_>, _>>()
                .map_err(corrupt("grant source CIDR"))?;
            m.grants.insert(
                id as u64,
                Grant {
                    id: id as u64,
                    group: GroupName::new(&group).map_err(corrupt("grant group"))?,
                    selector: Tags::parse(&selector).map_err(corrupt("grant selector"))?,
                    level: level.parse::<Level>().map_err(corrupt("grant level"))?,
                    max_ttl_secs: max_ttl as u64,
                    source_cidrs,
                    require_reason,
                    time_windows: serde_json::from_str(&windows)
                        .map_err(corrupt("grant time windows"))?,
                    created_at: created as u64,
                },
            );
        }

        let mut st = c.prepare(
            "SELECT hash, kind, subject, tags, created_at, expires_at, used_at, ssh_names
             FROM tokens",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                (
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ),
                (
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, String>(7)?,
                ),
            ))
        })?;
        for row in rows {
            let ((hash, kind, subject, tags), (created, expires, used, ssh_names)) = row?;
            let kind = TokenKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("token kind '{kind}'")))?;
            let tags = match tags {
                Some(t) => Some(Tags::parse(&t).map_err(corrupt("token tags"))?),
                None => None,
            };
            m.tokens.insert(
                hash,
                Token {
                    kind,
                    subject,
                    tags,
                    created_at: created as u64,
                    expires_at: expires.map(|v| v as u64),
                    used_at: used.map(|v| v as u64),
                    ssh_names: parse_names(&ssh_names)?,
                },
            );
        }

        let mut st = c.prepare(
            "SELECT id, name, tags, enrolled_at, last_seen, synced_version, removed, cert_serial,
                    cert_not_after, ssh_names FROM hosts ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ),
                (
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, bool>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, String>(9)?,
                ),
            ))
        })?;
        for row in rows {
            let ((id, name, tags, enrolled, seen), (synced, removed, serial, not_after, names)) =
                row?;
            let host = Host {
                id: id as u64,
                name: HostName::new(&name).map_err(corrupt("host name"))?,
                tags: Tags::parse(&tags).map_err(corrupt("host tags"))?,
                enrolled_at: enrolled as u64,
                last_seen: seen.map(|v| v as u64),
                synced_version: synced.map(|v| v as u64),
                removed,
                cert_serial: serial,
                cert_not_after: not_after as u64,
                ssh_names: parse_names(&names)?,
            };
            if !removed {
                m.active_hosts.insert(host.name.clone(), host.id);
            }
            m.hosts.insert(host.id, host);
        }
        let mut st = c.prepare("SELECT serial, host_id FROM host_certs")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (serial, host) = row?;
            m.host_certs.insert(serial, host as u64);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for r in crate::revoke::load_unexpired(c, now)? {
            m.revoked.insert(r.serial, r);
        }
        m.rebuild_krl(now);
        Ok(m)
    }

    /// Persists `changes` in one transaction; with `new_version`, also the bumped global
    /// version and a line in the `changes` table describing `what`.
    /// Revocations are refused here: they need their audit records in the same
    /// transaction, which only the writer appends ([`crate::writer::Writer::commit`]).
    pub fn commit(
        &mut self,
        model: &Counters,
        changes: &[Change],
        new_version: Option<u64>,
        what: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        if changes.iter().any(|c| matches!(c, Change::Revoke(_))) {
            return Err(StoreError::Corrupt(
                "revocations are committed through the writer (with their audit records)".into(),
            ));
        }
        let tx = self.conn.transaction()?;
        write_changes(&tx, model, changes, new_version, what, now)?;
        tx.commit()?;
        Ok(())
    }

    pub fn decisions(
        &self,
        limit: u32,
        user: Option<&str>,
    ) -> Result<Vec<smith_api::Decision>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, at, user_name, allowed, reason, scope, requested_ttl_secs, serial, key_id,
                    source_ip
             FROM decisions WHERE (?1 IS NULL OR user_name = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![user, limit], |r| {
            Ok(smith_api::Decision {
                id: r.get::<_, i64>(0)? as u64,
                at: r.get::<_, i64>(1)? as u64,
                user: r.get(2)?,
                allowed: r.get(3)?,
                reason: r.get(4)?,
                scope: r.get(5)?,
                requested_ttl_secs: r.get::<_, i64>(6)? as u64,
                serial: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                key_id: r.get(8)?,
                source: r.get(9)?,
            })
        })?;
        let mut out = rows.collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }
}

/// Writes `changes` (and the counters, the bumped version and its `changes` line) in
/// `tx`, which the caller commits.
pub fn write_changes(
    tx: &Transaction<'_>,
    model: &Counters,
    changes: &[Change],
    new_version: Option<u64>,
    what: &str,
    now: u64,
) -> Result<(), StoreError> {
    for c in changes {
        persist(tx, c, now)?;
    }
    meta_set(
        tx,
        "next_grant_id",
        &next_grant_id(model, changes).to_string(),
    )?;
    meta_set(
        tx,
        "next_host_id",
        &next_host_id(model, changes).to_string(),
    )?;
    meta_set(tx, "next_id", &next_id(model, changes).to_string())?;
    if let Some(v) = new_version {
        meta_set(tx, "version", &v.to_string())?;
        tx.execute(
            "INSERT INTO changes (version, at, what) VALUES (?1, ?2, ?3)",
            params![v as i64, now as i64, what],
        )?;
    }
    Ok(())
}

/// Host names stored comma-separated.
fn parse_names(s: &str) -> Result<Vec<HostName>, StoreError> {
    s.split(',')
        .filter(|n| !n.is_empty())
        .map(|n| HostName::new(n).map_err(corrupt("SSH host name")))
        .collect()
}

fn join_names(v: &[HostName]) -> String {
    v.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(",")
}

fn next_grant_id(m: &Counters, changes: &[Change]) -> u64 {
    changes.iter().fold(m.next_grant_id, |acc, c| match c {
        Change::AddGrant(g) => acc.max(g.id + 1),
        _ => acc,
    })
}

fn next_host_id(m: &Counters, changes: &[Change]) -> u64 {
    changes.iter().fold(m.next_host_id, |acc, c| match c {
        Change::Enroll { host, .. } => acc.max(host.id + 1),
        _ => acc,
    })
}

fn next_id(m: &Counters, changes: &[Change]) -> u32 {
    let range = m.id_range;
    changes.iter().fold(m.next_id, |acc, c| {
        let id = match c {
            Change::AddUser(u) => u.uid.get(),
            Change::AddGroup(g) => g.gid.get(),
            _ => return acc,
        };
        if range.contains(id) {
            acc.max(id.saturating_add(1))
        } else {
            acc
        }
    })
}

fn allocate(
    tx: &Transaction<'_>,
    id: u32,
    kind: IdKind,
    name: &str,
    now: u64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO allocated_ids (id, kind, name, allocated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO NOTHING",
        params![id, kind.as_str(), name, now as i64],
    )?;
    // The id must now belong to exactly this name: anything else is a collision the
    // model should have caught, and the transaction is abandoned.
    let owner: (String, String) = tx.query_row(
        "SELECT kind, name FROM allocated_ids WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if owner != (kind.as_str().to_string(), name.to_string()) {
        return Err(StoreError::Corrupt(format!(
            "id {id} is already allocated to {} '{}'",
            owner.0, owner.1
        )));
    }
    Ok(())
}

fn persist(tx: &Transaction<'_>, c: &Change, now: u64) -> Result<(), StoreError> {
    match c {
        Change::AddUser(u) => {
            allocate(tx, u.uid.get(), IdKind::User, u.name.as_str(), now)?;
            // A deleted user's row is reused when the name comes back (same uid).
            let n = tx.execute(
                "INSERT INTO users (name, uid, disabled, gecos, shell, created_at, external_id,
                                    oidc_subject)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(name) DO UPDATE SET uid = excluded.uid,
                     disabled = excluded.disabled, gecos = excluded.gecos,
                     shell = excluded.shell, created_at = excluded.created_at,
                     external_id = excluded.external_id, oidc_subject = excluded.oidc_subject,
                     disabled_at = NULL, deleted_at = NULL
                 WHERE users.deleted_at IS NOT NULL",
                params![
                    u.name.as_str(),
                    u.uid.get(),
                    u.disabled,
                    u.gecos,
                    u.shell,
                    u.created_at as i64,
                    u.external_id,
                    u.oidc_subject
                ],
            )?;
            if n != 1 {
                return Err(StoreError::Corrupt(format!(
                    "user '{}' already exists in the database",
                    u.name
                )));
            }
            for g in &u.groups {
                tx.execute(
                    "INSERT INTO memberships (group_name, user_name, added_at) VALUES (?1, ?2, ?3)",
                    params![g.as_str(), u.name.as_str(), now as i64],
                )?;
            }
        }
        Change::DisableUser { name, at } => {
            tx.execute(
                "UPDATE users SET disabled = 1, disabled_at = ?2 WHERE name = ?1",
                params![name.as_str(), *at as i64],
            )?;
        }
        Change::EnableUser { name } => {
            tx.execute(
                "UPDATE users SET disabled = 0, disabled_at = NULL WHERE name = ?1",
                params![name.as_str()],
            )?;
        }
        Change::SetUserAttrs {
            name,
            gecos,
            external_id,
            oidc_subject,
        } => {
            tx.execute(
                "UPDATE users SET gecos = ?2, external_id = ?3, oidc_subject = ?4 WHERE name = ?1",
                params![name.as_str(), gecos, external_id, oidc_subject],
            )?;
        }
        Change::DeleteUser { name, at } => {
            tx.execute(
                "DELETE FROM memberships WHERE user_name = ?1",
                params![name.as_str()],
            )?;
            tx.execute(
                "DELETE FROM tokens WHERE kind = 'user' AND subject = ?1",
                params![name.as_str()],
            )?;
            tx.execute(
                "UPDATE users SET deleted_at = ?2, disabled = 1,
                     disabled_at = COALESCE(disabled_at, ?2) WHERE name = ?1",
                params![name.as_str(), *at as i64],
            )?;
        }
        Change::SetGroupExternalId { name, external_id } => {
            tx.execute(
                "UPDATE groups SET external_id = ?2 WHERE name = ?1",
                params![name.as_str(), external_id],
            )?;
        }
        Change::DeleteGroup { name, at } => {
            tx.execute(
                "DELETE FROM memberships WHERE group_name = ?1",
                params![name.as_str()],
            )?;
            tx.execute(
                "UPDATE groups SET deleted_at = ?2 WHERE name = ?1",
                params![name.as_str(), *at as i64],
            )?;
        }
        Change::AddGroup(g) => {
            allocate(tx, g.gid.get(), IdKind::Group, g.name.as_str(), now)?;
            let n = tx.execute(
                "INSERT INTO groups (name, gid, created_at, external_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET gid = excluded.gid,
                     created_at = excluded.created_at, external_id = excluded.external_id,
                     deleted_at = NULL
                 WHERE groups.deleted_at IS NOT NULL",
                params![
                    g.name.as_str(),
                    g.gid.get(),
                    g.created_at as i64,
                    g.external_id
                ],
            )?;
            if n != 1 {
                return Err(StoreError::Corrupt(format!(
                    "group '{}' already exists in the database",
                    g.name
                )));
            }
        }
        Change::AddMember { group, user, at } => {
            tx.execute(
                "INSERT INTO memberships (group_name, user_name, added_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                params![group.as_str(), user.as_str(), *at as i64],
            )?;
        }
        Change::RemoveMember { group, user } => {
            tx.execute(
                "DELETE FROM memberships WHERE group_name = ?1 AND user_name = ?2",
                params![group.as_str(), user.as_str()],
            )?;
        }
        Change::AddGrant(g) => {
            let cidrs: Vec<String> = g.source_cidrs.iter().map(|c| c.to_string()).collect();
            tx.execute(
                "INSERT INTO grants (id, group_name, selector, level, max_ttl_secs, source_cidrs,
                                     require_reason, time_windows, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    g.id as i64,
                    g.group.as_str(),
                    g.selector.to_string(),
                    g.level.as_str(),
                    g.max_ttl_secs as i64,
                    cidrs.join(","),
                    g.require_reason,
                    serde_json::to_string(&g.time_windows).unwrap_or_else(|_| "[]".into()),
                    g.created_at as i64
                ],
            )?;
        }
        Change::RemoveGrant { id, at } => {
            tx.execute(
                "UPDATE grants SET removed_at = ?2 WHERE id = ?1 AND removed_at IS NULL",
                params![*id as i64, *at as i64],
            )?;
        }
        Change::AddToken { hash, token } => {
            insert_token(tx, hash, token)?;
        }
        Change::Enroll {
            token_hash,
            at,
            host,
            cert,
        } => {
            let n = tx.execute(
                "UPDATE tokens SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL",
                params![token_hash, *at as i64],
            )?;
            if n != 1 {
                return Err(StoreError::Corrupt(
                    "enrollment token was used concurrently".into(),
                ));
            }
            insert_host(tx, host)?;
            tx.execute(
                "INSERT INTO host_certs (serial, host_id, not_after, issued_at) VALUES (?1, ?2, ?3, ?4)",
                params![cert.serial, host.id as i64, cert.not_after as i64, cert.issued_at as i64],
            )?;
        }
        Change::HostCert { host_id, cert } => {
            tx.execute(
                "INSERT INTO host_certs (serial, host_id, not_after, issued_at) VALUES (?1, ?2, ?3, ?4)",
                params![cert.serial, *host_id as i64, cert.not_after as i64, cert.issued_at as i64],
            )?;
            tx.execute(
                "UPDATE hosts SET cert_serial = ?2, cert_not_after = ?3 WHERE id = ?1",
                params![*host_id as i64, cert.serial, cert.not_after as i64],
            )?;
        }
        Change::RemoveHost { host_id, at } => {
            tx.execute(
                "UPDATE hosts SET removed = 1, removed_at = ?2 WHERE id = ?1",
                params![*host_id as i64, *at as i64],
            )?;
        }
        Change::Revoke(list) => {
            for r in list {
                crate::revoke::insert(tx, r)?;
            }
        }
    }
    Ok(())
}

fn insert_token(tx: &Transaction<'_>, hash: &str, t: &Token) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO tokens (hash, kind, subject, tags, created_at, expires_at, used_at,
                             ssh_names)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            hash,
            t.kind.as_str(),
            t.subject,
            t.tags.as_ref().map(|t| t.to_string()),
            t.created_at as i64,
            t.expires_at.map(|v| v as i64),
            t.used_at.map(|v| v as i64),
            join_names(&t.ssh_names)
        ],
    )?;
    Ok(())
}

fn insert_host(tx: &Transaction<'_>, h: &Host) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO hosts (id, name, tags, enrolled_at, removed, cert_serial, cert_not_after,
                            ssh_names)
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7)",
        params![
            h.id as i64,
            h.name.as_str(),
            h.tags.to_string(),
            h.enrolled_at as i64,
            h.cert_serial,
            h.cert_not_after as i64,
            join_names(&h.ssh_names)
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A store initialized in `dir` (ids 200000–299999), and its path.
    fn initialized_store(dir: &tempfile::TempDir) -> (std::path::PathBuf, Store) {
        let path = dir.path().join("ca.db");
        let mut store = Store::open(&path).unwrap();
        store
            .initialize(&InitMeta {
                id_range: IdRange::new(200000, 299999).unwrap(),
                user_ca_algorithm: "ed25519",
                admin_token_hash: "abc",
                now: 1,
            })
            .unwrap();
        (path, store)
    }

    #[test]
    fn migration_6_keeps_certificates_and_moves_the_unique_index_to_request_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("ca.db")).unwrap();
        // A CA at schema 5 with one certificate (random request id, as issued then).
        for (i, sql) in MIGRATIONS[..5].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", (i + 1) as i64)
                .unwrap();
        }
        conn.execute(
            "INSERT INTO certificates (serial, key_id, user_name, principals, scope, valid_after,
                 valid_before, request_id, public_key_fp, issued_at, source_ip, decision_id)
             VALUES (7, 'smith:alice:0123456789abcdef', 'alice', 'alice', 'env=dev', 1, 2,
                     '0123456789abcdef', 'SHA256:x', 1, '10.0.0.1', 3)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let row: (i64, String, String, i64) = conn
            .query_row(
                "SELECT serial, key_id, request_id, decision_id FROM certificates",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            row,
            (
                7,
                "smith:alice:0123456789abcdef".into(),
                "0123456789abcdef".into(),
                3
            )
        );
        let indexes: BTreeSet<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(indexes.contains("certificates_request") && indexes.contains("certificates_valid"));
        assert!(!indexes.contains("certificates_user") && !indexes.contains("audit_records_user"));
        // A repeated request id is still refused.
        let dup = conn.execute(
            "INSERT INTO certificates (serial, key_id, user_name, principals, scope, valid_after,
                 valid_before, request_id, public_key_fp, issued_at, source_ip, decision_id)
             VALUES (8, 'smith:bob:0123456789abcdef', 'bob', 'bob', '', 1, 2,
                     '0123456789abcdef', 'SHA256:y', 1, '10.0.0.1', 4)",
            [],
        );
        assert!(dup.is_err());
    }

    #[test]
    fn commit_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut store) = initialized_store(&dir);
        let mut m = store.load().unwrap();
        assert_eq!(m.settings.sudo_gid.get(), 200000);
        let gid = m.allocate_id(IdKind::Group, "dev", None).unwrap();
        assert_eq!(gid.get(), 200001);
        let g = Group {
            name: GroupName::new("dev").unwrap(),
            gid,
            members: BTreeSet::new(),
            created_at: 5,
            external_id: None,
        };
        let changes = vec![Change::AddGroup(g)];
        store
            .commit(&Counters::of(&m), &changes, Some(1), "group add dev", 5)
            .unwrap();
        m.apply(&changes, Some(1));
        let uid = m.allocate_id(IdKind::User, "alice", None).unwrap();
        let mut groups = BTreeSet::new();
        groups.insert(GroupName::new("dev").unwrap());
        let u = User {
            name: UserName::new("alice").unwrap(),
            uid,
            disabled: false,
            gecos: "Alice".into(),
            shell: "/bin/bash".into(),
            created_at: 6,
            groups,
            external_id: Some("00u-alice".into()),
            oidc_subject: None,
        };
        let changes = vec![Change::AddUser(u)];
        store
            .commit(&Counters::of(&m), &changes, Some(2), "user add alice", 6)
            .unwrap();
        m.apply(&changes, Some(2));
        drop(store);
        let loaded = Store::open(&path).unwrap().load().unwrap();
        assert_eq!(loaded.users, m.users);
        assert_eq!(loaded.groups, m.groups);
        assert_eq!(loaded.version, 2);
        assert_eq!(loaded.next_id, 200003);
        assert_eq!(loaded.tokens.len(), 1);
    }

    #[test]
    fn deleted_users_and_groups_stay_deleted_and_names_come_back_with_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut store) = initialized_store(&dir);
        let mut m = store.load().unwrap();
        let dev = GroupName::new("dev").unwrap();
        let alice = UserName::new("alice").unwrap();
        let g = Group {
            name: dev.clone(),
            gid: m.allocate_id(IdKind::Group, "dev", None).unwrap(),
            members: BTreeSet::new(),
            created_at: 1,
            external_id: Some("okta-grp-1".into()),
        };
        let mut u = User {
            name: alice.clone(),
            uid: m
                .allocate_id_with(IdKind::User, "alice", None, &[g.gid.get()])
                .unwrap(),
            disabled: false,
            gecos: String::new(),
            shell: "/bin/bash".into(),
            created_at: 1,
            groups: BTreeSet::new(),
            external_id: None,
            oidc_subject: None,
        };
        u.groups.insert(dev.clone());
        let mut step = |m: &mut Model, changes: Vec<Change>, v: u64| {
            store
                .commit(&Counters::of(m), &changes, Some(v), "t", v)
                .unwrap();
            m.apply(&changes, Some(v));
        };
        step(
            &mut m,
            vec![Change::AddGroup(g.clone()), Change::AddUser(u.clone())],
            2,
        );
        step(
            &mut m,
            vec![Change::SetUserAttrs {
                name: alice.clone(),
                gecos: "Alice".into(),
                external_id: Some("00u1".into()),
                oidc_subject: Some("sub-1".into()),
            }],
            3,
        );
        step(
            &mut m,
            vec![
                Change::DeleteUser {
                    name: alice.clone(),
                    at: 4,
                },
                Change::DeleteGroup {
                    name: dev.clone(),
                    at: 4,
                },
            ],
            4,
        );
        assert!(m.users.is_empty() && m.groups.is_empty());
        let loaded = store.load().unwrap();
        assert!(loaded.users.is_empty() && loaded.groups.is_empty());
        // The names come back with the same ids, without their old memberships.
        assert_eq!(
            loaded.allocate_id(IdKind::User, "alice", None).unwrap(),
            u.uid
        );
        let mut again = u.clone();
        again.groups.clear();
        let changes = vec![Change::AddGroup(g.clone()), Change::AddUser(again)];
        store
            .commit(&Counters::of(&loaded), &changes, Some(5), "t", 5)
            .unwrap();
        let back = store.load().unwrap();
        let a = back.users.get(&alice).unwrap();
        assert_eq!((a.uid, a.disabled, a.groups.len()), (u.uid, false, 0));
        assert_eq!(
            back.groups.get(&dev).unwrap().external_id.as_deref(),
            Some("okta-grp-1")
        );
        assert!(back.groups.get(&dev).unwrap().members.is_empty());
        // A live row is never overwritten by an add.
        let err = store
            .commit(&Counters::of(&back), &[Change::AddUser(u)], Some(6), "t", 6)
            .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    #[test]
    fn a_failed_change_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut store) = initialized_store(&dir);
        let m = store.load().unwrap();
        // A user whose uid collides with the reserved sudo gid and a group that is fine:
        // the whole transaction must be refused.
        let g = Group {
            name: GroupName::new("dev").unwrap(),
            gid: PosixId::new(200005).unwrap(),
            members: BTreeSet::new(),
            created_at: 1,
            external_id: None,
        };
        let u = User {
            name: UserName::new("alice").unwrap(),
            uid: PosixId::new(200000).unwrap(),
            disabled: false,
            gecos: String::new(),
            shell: "/bin/bash".into(),
            created_at: 1,
            groups: BTreeSet::new(),
            external_id: None,
            oidc_subject: None,
        };
        let err = store
            .commit(
                &Counters::of(&m),
                &[Change::AddGroup(g), Change::AddUser(u)],
                Some(1),
                "x",
                1,
            )
            .unwrap_err();
        assert!(err.to_string().contains("already allocated"), "{err}");
        let loaded = store.load().unwrap();
        assert!(loaded.groups.is_empty() && loaded.users.is_empty());
        assert_eq!(loaded.version, 1);
    }
}
