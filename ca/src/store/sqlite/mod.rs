//! The embedded SQLite store: one file `ca.db` in the data directory (WAL,
//! `synchronous=FULL`), a writer thread that commits everything with group commit
//! ([`writer`]), and one read connection for the admin path's queries.
//!
//! Owns: every SQL statement of the CA. Must never: be read on the issuance or sync hot
//! path (the model serves those), or hold secrets other than token hashes.

mod audit;
pub mod backup;
mod certs;
mod load;
mod persist;
pub mod schema;
mod writer;

use crate::audit::{AuditOutcome, Entry, Filter, RejectionInfo, VerifyReport};
use crate::store::{
    CertQuery, Commit, HostCertQuery, HostCertSelector, HostPlan, InitMeta, Loaded, OobInputs,
    Pending, Plan, Pruned, Record, Selector, Store, StoreError,
};
use rusqlite::{params, Connection};
use smith_api::chain::AuditRecord;
use smith_api::{Decision, IssuedCert};
use smith_proto::UserName;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub struct SqliteStore {
    path: PathBuf,
    read: Mutex<Connection>,
    writer: writer::Writer,
}

impl SqliteStore {
    /// Opens (and migrates) the database at `path`, creating it if missing, and starts
    /// the writer thread.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let mut conn = schema::open_connection(path)?;
        schema::migrate(&mut conn)?;
        let writer = writer::Writer::start(path)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            read: Mutex::new(conn),
            writer,
        })
    }

    /// Verifies every audit chain of the database at `path`, read-only (`smith-ca audit
    /// verify --data-dir`, with or without a running CA).
    pub fn verify_file(path: &Path) -> Result<VerifyReport, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(audit::verify_all(&conn)?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.read.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for SqliteStore {
    fn initialize(&self, m: &InitMeta<'_>) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
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
            ("users_gid", m.id_range.end.to_string()),
            ("id_range_start", m.id_range.start.to_string()),
            ("id_range_end", m.id_range.end.to_string()),
            ("user_ca_algorithm", m.user_ca_algorithm.to_string()),
            ("created_at", m.now.to_string()),
            ("epoch", m.epoch.to_string()),
        ] {
            persist::meta_set(&tx, k, &v)?;
        }
        for (gid, name) in [
            (sudo_gid, smith_proto::names::SUDO_GROUP),
            (m.id_range.end, smith_proto::names::USERS_GROUP),
        ] {
            tx.execute(
                "INSERT INTO allocated_ids (id, kind, name, allocated_at) VALUES (?1, 'group', ?2, ?3)",
                params![gid, name, m.now],
            )?;
        }
        tx.execute(
            "INSERT INTO tokens (hash, kind, subject, created_at, expires_at, created_by)
             VALUES (?1, 'bootstrap', 'bootstrap', ?2, ?3, 'smith-ca init')",
            params![
                m.admin_token_hash,
                m.now as i64,
                m.now
                    .saturating_add(m.bootstrap_ttl.min(crate::store::BOOTSTRAP_TTL_SECS))
                    as i64
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn is_initialized(&self) -> Result<bool, StoreError> {
        Ok(load::meta_get(&self.conn(), "sudo_gid")?.is_some())
    }

    fn load(&self, now: u64) -> Result<Loaded, StoreError> {
        load::load(&self.conn(), now)
    }

    fn commit(&self, c: Commit) -> Result<(), StoreError> {
        self.writer.commit(c)
    }

    fn record(&self, r: Record) -> Pending<u64> {
        self.writer.record(r)
    }

    fn audit_upload(&self, host: String, records: Vec<AuditRecord>) -> Pending<AuditOutcome> {
        self.writer.audit(host, records)
    }

    fn host_seen(&self, host_id: u64, at: u64, synced_version: Option<u64>) {
        self.writer.host_seen(host_id, at, synced_version)
    }

    fn prune(
        &self,
        decided_before: Option<u64>,
        expired_before: Option<u64>,
        limit: u32,
        now: u64,
    ) -> Result<Pruned, StoreError> {
        self.writer
            .prune(decided_before, expired_before, limit, now)
    }

    fn shutdown(&self) {
        self.writer.shutdown()
    }

    fn decisions(&self, limit: u32, user: Option<&UserName>) -> Result<Vec<Decision>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT id, at, user_name, allowed, reason, scope, requested_ttl_secs, serial, key_id,
                    source_ip
             FROM decisions WHERE (?1 IS NULL OR user_name = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![user.map(|u| u.as_str()), limit], |r| {
            Ok(Decision {
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

    fn certs(&self, q: &CertQuery) -> Result<Vec<IssuedCert>, StoreError> {
        certs::list(&self.conn(), q)
    }

    fn cert_plan(&self, sel: &Selector, now: u64) -> Result<Option<Plan>, StoreError> {
        certs::plan(&self.conn(), sel, now)
    }

    fn valid_certs_of(&self, user: &UserName, now: u64) -> Result<Vec<IssuedCert>, StoreError> {
        certs::valid_of_user(&self.conn(), user, now)
    }

    fn host_certs(&self, q: &HostCertQuery) -> Result<Vec<smith_api::HostCertInfo>, StoreError> {
        certs::host_certs(&self.conn(), q)
    }

    fn host_cert_plan(
        &self,
        sel: HostCertSelector,
        now: u64,
    ) -> Result<Option<HostPlan>, StoreError> {
        certs::host_cert_plan(&self.conn(), sel, now)
    }

    fn audit_head(&self, host: &str) -> Result<(u64, [u8; 32]), StoreError> {
        Ok(audit::head(&self.conn(), host)?)
    }

    fn audit_list(&self, f: &Filter) -> Result<Vec<Entry>, StoreError> {
        Ok(audit::list(&self.conn(), f)?)
    }

    fn audit_verify(&self) -> Result<VerifyReport, StoreError> {
        Ok(audit::verify_all(&self.conn())?)
    }

    fn audit_rejections(&self, limit: u32) -> Result<Vec<RejectionInfo>, StoreError> {
        Ok(audit::rejections(&self.conn(), limit)?)
    }

    fn oob_inputs(&self) -> Result<OobInputs, StoreError> {
        audit::oob_inputs(&self.conn())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CertRow, Counters, DecisionRow};
    use std::sync::Mutex as StdMutex;

    #[test]
    fn the_sqlite_store_passes_the_conformance_suite() {
        let dirs = StdMutex::new(Vec::new());
        crate::store::conformance::run_all(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&dir.path().join("ca.db")).unwrap();
            dirs.lock().unwrap().push(dir);
            Box::new(store)
        });
    }

    #[test]
    fn what_was_committed_survives_a_restart_and_serials_continue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.db");
        let s = SqliteStore::open(&path).unwrap();
        s.initialize(&InitMeta {
            id_range: smith_proto::IdRange::new(200000, 299999).unwrap(),
            user_ca_algorithm: "ed25519",
            admin_token_hash: "h",
            now: 1,
            epoch: "e",
            bootstrap_ttl: crate::store::BOOTSTRAP_TTL_SECS,
        })
        .unwrap();
        let p = s.record(Record {
            decision: DecisionRow {
                at: 1,
                user: "alice".into(),
                allowed: true,
                reason: "issued".into(),
                scope: String::new(),
                requested_ttl_secs: 60,
                source_ip: "127.0.0.1".into(),
                grant_ids: vec![],
            },
            cert: Some(CertRow {
                serial: 41,
                key_id: "smith:alice:1".into(),
                principals: vec!["alice".into()],
                scope: String::new(),
                valid_after: 0,
                valid_before: 2,
                request_id: "1".into(),
                public_key_fp: "SHA256:x".into(),
            }),
        });
        p.blocking_recv().unwrap().unwrap();
        let m = s.load(1).unwrap().model;
        s.commit(Commit {
            counters: Counters::of(&m),
            changes: vec![],
            new_version: Some(2),
            origin: crate::origin::Origin::admin(),
            what: "bump".into(),
            now: 1,
        })
        .unwrap();
        s.shutdown();
        drop(s);
        let again = SqliteStore::open(&path).unwrap();
        let l = again.load(1).unwrap();
        assert_eq!((l.last_serial, l.model.version()), (41, 2));
        // The change line records who asked.
        let origin: String = again
            .conn()
            .query_row("SELECT origin FROM changes WHERE version = 2", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(origin, "admin bootstrap");
        // The audit and revocation tables refuse UPDATE and DELETE to everyone.
        let c = again.conn();
        assert!(c.execute("DELETE FROM audit_records", []).is_err());
        assert!(c
            .execute("UPDATE audit_records SET event = 'x'", [])
            .is_err());
    }

    #[test]
    fn migration_6_keeps_certificates_and_moves_the_unique_index_to_request_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = schema::open_connection(&dir.path().join("ca.db")).unwrap();
        // A CA at schema 5 with one certificate (random request id, as issued then).
        for (i, sql) in schema::MIGRATIONS[..5].iter().enumerate() {
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
        schema::migrate(&mut conn).unwrap();
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
        let indexes: std::collections::BTreeSet<String> = conn
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
    fn migration_11_allocates_smith_users_past_every_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = schema::open_connection(&dir.path().join("ca.db")).unwrap();
        // A CA at schema 10 whose range ends at 200999; then one whose end is taken.
        for (i, sql) in schema::MIGRATIONS[..10].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", (i + 1) as i64)
                .unwrap();
        }
        for (k, v) in [
            ("next_id", "200005"),
            ("sudo_gid", "200000"),
            ("id_range_end", "200999"),
        ] {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![k, v],
            )
            .unwrap();
        }
        for (id, name) in [(200000, "smith-sudo"), (200007, "bob")] {
            conn.execute(
                "INSERT INTO allocated_ids (id, kind, name, allocated_at) VALUES (?1, 'group', ?2, 1)",
                params![id, name],
            )
            .unwrap();
        }
        schema::migrate(&mut conn).unwrap();
        let meta = |k: &str| load::meta_get(&conn, k).unwrap();
        // The end of the range, where sequential allocation reaches last.
        assert_eq!(meta("users_gid").as_deref(), Some("200999"));
        assert_eq!(meta("next_id").as_deref(), Some("200005"));
        let owner: String = conn
            .query_row(
                "SELECT name FROM allocated_ids WHERE id = 200999",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(owner, "smith-users");
    }
}
