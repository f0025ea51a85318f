//! The PostgreSQL store: one database, several active `smith-ca serve` replicas.
//!
//! The model is an append-only change log (see [`schema`]); each replica keeps a mirror
//! of the model the log describes and the number of the last entry it applied.
//!
//! Invariants (beyond the [`crate::store`] contract):
//! - A commit locks the `smith_head` row, and goes ahead only if this replica has
//!   applied every entry before it; otherwise it answers [`StoreError::Stale`] and the
//!   authority follows and plans again. So log numbers are commit order, the policy
//!   version only grows, and two replicas never allocate one id twice.
//! - Every write to the `@ca` chain locks its head row (`audit_heads`), so the chain
//!   stays single with any number of writers; a host's chain is locked the same way.
//! - Issuance batches read `smith_head` under a share lock: a disable committed before
//!   the batch is seen (the authority follows before answering), one committed after it
//!   finds the batch's certificates when it sweeps.
//! - Serials come in blocks reserved durably before use ([`Store::reserve_serials`]):
//!   unique across replicas, never reused after a crash or a failover.
//! - A commit sends `NOTIFY smith_changes` (a wake-up hint; followers also poll).
//! - Every log entry and snapshot carries its [`LOG_FORMAT`]; a replica never applies
//!   one it cannot read (it stops serving instead, see [`StoreError::NewerRelease`]),
//!   and serves a schema newer than its own only when the steps past it only add
//!   ([`schema::Migration::older_may_serve`]): replicas of this and the previous release
//!   serve one database during a rolling upgrade.
//!
//! Must never: keep a connection error as a permanent state (every call reconnects), or
//! answer a write before its transaction committed.

mod conn;
mod queries;
pub mod schema;
mod writer;

pub use conn::{Connector, PASSWORD_CREDENTIAL};
pub use schema::{migrate, Migrated};

use crate::audit::{AuditOutcome, Entry, Filter, RejectionInfo, VerifyReport, CA_CHAIN};
use crate::model::{Change, Model};
use crate::store::{
    CertQuery, Commit, Followed, HostCertQuery, HostCertSelector, HostPlan, InitMeta, Loaded,
    OobInputs, Pending, Plan, Pruned, Record, Selector, Store, StoreError,
};
use smith_api::chain::{self, AuditRecord, GENESIS};
use smith_api::{Decision, IssuedCert};
use smith_proto::UserName;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A snapshot of the model every this many log entries (loads replay at most that many).
const SNAPSHOT_EVERY: i64 = 500;
/// Log entries read per follow query.
const FOLLOW_BATCH: i64 = 1000;
/// The channel commits notify.
const CHANNEL: &str = "smith_changes";
/// The advisory lock of the turn to change the model ("smith-tu" in ASCII).
const TURN_LOCK: i64 = 0x736d_6974_682d_7475;

/// The format of the change log entries and snapshots this smith-ca writes, and the
/// highest it reads. A release whose changes or model an older one would read
/// differently (a new kind of change, or a field that narrows access and that older
/// code would ignore) raises it: a replica that meets an entry of a higher format stops
/// serving ([`StoreError::NewerRelease`]) until it is upgraded, rather than serve a
/// policy it cannot read; the newer replicas serve meanwhile.
pub const LOG_FORMAT: i32 = 1;

/// What a replica says of a log entry or snapshot it cannot read.
fn unreadable(what: String, format: i32, why: Option<String>) -> StoreError {
    StoreError::NewerRelease(match why {
        None => {
            format!("{what} has format {format}, and this smith-ca reads up to format {LOG_FORMAT}")
        }
        Some(e) => format!("{what} cannot be read by this smith-ca (format {format}): {e}"),
    })
}

/// Maps a driver error: connection-level failures are [`StoreError::Unavailable`],
/// unique violations [`StoreError::Conflict`], the rest [`StoreError::Database`].
pub(crate) fn pg_error(e: ::postgres::Error) -> StoreError {
    use ::postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            return StoreError::Conflict(db.message().to_string());
        }
        // Class 08 (connection), 57P (shutdown, cannot connect now), 53 (resources),
        // 25006 (read-only transaction: a standby, or a primary demoted under us).
        let c = code.code();
        if c.starts_with("08")
            || c.starts_with("57P")
            || c.starts_with("53")
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        {
            return StoreError::Unavailable(db.message().to_string());
        }
        return StoreError::Database(format!("{} ({})", db.message(), c));
    }
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Database(format!("{e}: {:?}", std::error::Error::source(&e)))
    }
}

/// The replica's view: the model the log describes as far as it applied it.
struct Mirror {
    model: Option<Model>,
    /// The last log entry applied.
    applied: i64,
}

pub struct PgStore {
    connector: Arc<Connector>,
    /// Commits and reads (one at a time; reconnected after a failure).
    main: Mutex<Option<::postgres::Client>>,
    /// `LISTEN smith_changes`.
    listen: Mutex<Option<::postgres::Client>>,
    /// The session holding this replica's turn to change the model (an advisory lock;
    /// it dies with the session, so a killed replica never keeps it).
    turn: Mutex<Option<::postgres::Client>>,
    mirror: Mutex<Mirror>,
    /// The highest log entry this replica knows exists (notifications, issuance batches).
    seen_head: Arc<AtomicU64>,
    /// Who this replica is when it claims a job (random per process).
    holder: String,
    writer: writer::Writer,
}

/// Runs `f` where the synchronous driver may block: on this thread, or on a scoped
/// thread of its own when this one belongs to an async runtime (the driver runs a
/// runtime of its own, which cannot start inside another).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PgStore {
    /// Connects to the database, brings the schema up to date (unless `migrate` is false,
    /// then a schema older than this binary's is refused with what to run), and loads the
    /// model when the database is initialized.
    pub fn open(connector: Connector, migrate: bool) -> Result<PgStore, StoreError> {
        off_runtime(move || PgStore::open_here(connector, migrate))
    }

    fn open_here(connector: Connector, migrate: bool) -> Result<PgStore, StoreError> {
        let connector = Arc::new(connector);
        let mut client = connector.connect()?;
        let v = schema::version(&mut client)?;
        let supported = schema::MIGRATIONS.len() as i64;
        schema::servable(v, schema::needs(&mut client, v)?)?;
        if v > supported {
            tracing::info!(
                schema = v,
                supported,
                "the database schema is newer than this smith-ca's, and the steps past it \
                 only add: serving it (a rolling upgrade; upgrade this replica next)"
            );
        }
        if v < supported {
            if migrate {
                schema::migrate(&mut client, None)?;
            } else {
                return Err(StoreError::Database(format!(
                    "the database schema is at version {v}, this smith-ca needs {supported}; \
                     run `smith-ca migrate --database {}` first",
                    connector.shown()
                )));
            }
        }
        let seen_head = Arc::new(AtomicU64::new(0));
        let store = PgStore {
            writer: writer::Writer::start(connector.clone(), seen_head.clone())?,
            connector,
            main: Mutex::new(Some(client)),
            listen: Mutex::new(None),
            turn: Mutex::new(None),
            mirror: Mutex::new(Mirror {
                model: None,
                applied: 0,
            }),
            seen_head,
            holder: crate::store::new_epoch(),
        };
        if store.is_initialized()? {
            store.reload()?;
        }
        Ok(store)
    }

    /// Runs `f` on the main connection, connecting first if needed; a connection that
    /// failed is dropped (the next call reconnects).
    fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut ::postgres::Client) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        off_runtime(|| self.with_here(f))
    }

    fn with_here<T>(
        &self,
        f: impl FnOnce(&mut ::postgres::Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = lock(&self.main);
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = Some(self.connector.connect()?);
        }
        let client = slot
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))?;
        let r = f(client);
        if matches!(r, Err(StoreError::Unavailable(_))) {
            *slot = None;
        }
        r
    }

    /// Rebuilds the mirror from the latest snapshot and the log after it.
    fn reload(&self) -> Result<(), StoreError> {
        let (model, applied) = self.with(|c| {
            let row = c
                .query_opt(
                    "SELECT seq, model, format FROM smith_snapshots ORDER BY seq DESC LIMIT 1",
                    &[],
                )
                .map_err(pg_error)?
                .ok_or_else(|| StoreError::Corrupt("the database holds no snapshot".into()))?;
            let seq: i64 = row.get(0);
            let text: String = row.get(1);
            let format: i32 = row.get(2);
            if format > LOG_FORMAT {
                return Err(unreadable(format!("snapshot {seq}"), format, None));
            }
            let restore: crate::model::Restore = serde_json::from_str(&text)
                .map_err(|e| unreadable(format!("snapshot {seq}"), format, Some(e.to_string())))?;
            let mut model = Model::restore(restore, now()).reloaded();
            let mut applied = seq;
            loop {
                let entries = read_log(c, applied, FOLLOW_BATCH)?;
                if entries.is_empty() {
                    break;
                }
                for (seq, f) in entries {
                    model.apply(&f.changes, f.new_version);
                    applied = seq;
                }
            }
            Ok((model.reloaded(), applied))
        })?;
        let mut m = lock(&self.mirror);
        m.model = Some(model);
        m.applied = applied;
        self.seen_head.fetch_max(applied as u64, Ordering::SeqCst);
        Ok(())
    }

    /// The connection string shown in messages.
    pub fn shown(&self) -> &str {
        self.connector.shown()
    }
}

/// Log entries after `after`, at most `limit`, in order.
fn read_log(
    c: &mut impl ::postgres::GenericClient,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, Followed)>, StoreError> {
    let rows = c
        .query(
            "SELECT seq, version, changes, at, format FROM smith_log
             WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after, &limit],
        )
        .map_err(pg_error)?;
    rows.into_iter()
        .map(|r| {
            let seq: i64 = r.get(0);
            let version: Option<i64> = r.get(1);
            let text: String = r.get(2);
            let at: i64 = r.get(3);
            let format: i32 = r.get(4);
            let what = || format!("change log entry {seq}");
            if format > LOG_FORMAT {
                return Err(unreadable(what(), format, None));
            }
            let changes: Vec<Change> = serde_json::from_str(&text)
                .map_err(|e| unreadable(what(), format, Some(e.to_string())))?;
            Ok((
                seq,
                Followed {
                    changes,
                    new_version: version.map(|v| v as u64),
                    at: at.max(0) as u64,
                },
            ))
        })
        .collect()
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A time or count as PostgreSQL's BIGINT.
pub(crate) fn big(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// A `@ca` event and, when the caller knows them, its derived columns (kind, user, at).
pub(crate) type CaEvent<'a> = (String, Option<(&'a str, &'a str, i64)>);

/// Appends `events` to the `@ca` chain inside `tx` (its head row locked), at `at`.
pub(crate) fn append_ca(
    tx: &mut ::postgres::Transaction<'_>,
    events: Vec<CaEvent<'_>>,
    at: u64,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let (mut seq, mut hash) = lock_head(tx, CA_CHAIN)?;
    let mut rows = Vec::with_capacity(events.len());
    for (event, derived) in events {
        let rec = chain::next_record(CA_CHAIN, seq, &hash, event);
        let cols = match derived {
            Some((k, u, a)) => (k.to_string(), u.to_string(), a),
            None => crate::audit::derived(&rec.event),
        };
        seq = rec.seq;
        hash = chain::parse_hash(&rec.hash).unwrap_or(GENESIS);
        rows.push((rec, cols));
    }
    insert_records(tx, CA_CHAIN, &rows, at)?;
    set_head(tx, CA_CHAIN, seq, &hash)
}

/// Locks `host`'s chain head (creating it at genesis) and reads it.
pub(crate) fn lock_head(
    tx: &mut ::postgres::Transaction<'_>,
    host: &str,
) -> Result<(u64, [u8; 32]), StoreError> {
    tx.execute(
        "INSERT INTO audit_heads (host, seq, hash) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
        &[&host, &hex::encode(GENESIS)],
    )
    .map_err(pg_error)?;
    let row = tx
        .query_one(
            "SELECT seq, hash FROM audit_heads WHERE host = $1 FOR UPDATE",
            &[&host],
        )
        .map_err(pg_error)?;
    let seq: i64 = row.get(0);
    let hash: String = row.get(1);
    Ok((
        seq.max(0) as u64,
        chain::parse_hash(&hash)
            .ok_or_else(|| StoreError::Corrupt(format!("audit head of {host}")))?,
    ))
}

pub(crate) fn set_head(
    tx: &mut ::postgres::Transaction<'_>,
    host: &str,
    seq: u64,
    hash: &[u8; 32],
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE audit_heads SET seq = $2, hash = $3 WHERE host = $1",
        &[&host, &big(seq), &hex::encode(hash)],
    )
    .map_err(pg_error)?;
    Ok(())
}

/// Inserts chain records (already verified or built) with their derived columns, in one
/// statement.
pub(crate) fn insert_records(
    tx: &mut ::postgres::Transaction<'_>,
    host: &str,
    rows: &[(AuditRecord, (String, String, i64))],
    received_at: u64,
) -> Result<(), StoreError> {
    let mut seqs = Vec::with_capacity(rows.len());
    let mut prev = Vec::with_capacity(rows.len());
    let mut hashes = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len());
    let mut kinds = Vec::with_capacity(rows.len());
    let mut users = Vec::with_capacity(rows.len());
    let mut ats = Vec::with_capacity(rows.len());
    for (r, (k, u, a)) in rows {
        seqs.push(big(r.seq));
        prev.push(r.prev_hash.as_str());
        hashes.push(r.hash.as_str());
        events.push(r.event.as_str());
        kinds.push(k.as_str());
        users.push(u.as_str());
        ats.push(*a);
    }
    tx.execute(
        "INSERT INTO audit_records (host, seq, prev_hash, hash, event, received_at, kind,
                                    user_name, at_unix)
         SELECT $1, s, p, h, e, $2, k, u, a
         FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::bigint[]) AS t(s, p, h, e, k, u, a)",
        &[
            &host,
            &big(received_at),
            &seqs,
            &prev,
            &hashes,
            &events,
            &kinds,
            &users,
            &ats,
        ],
    )
    .map_err(pg_error)?;
    Ok(())
}

/// Writes what a commit adds beside the log: revocations, host certificates, when users
/// were disabled.
fn persist_side_tables(
    tx: &mut ::postgres::Transaction<'_>,
    changes: &[Change],
    at: u64,
) -> Result<(), StoreError> {
    for change in changes {
        match change {
            Change::Revoke(list) => {
                for r in list {
                    tx.execute(
                        "INSERT INTO revocations (serial, key_id, user_name, valid_before,
                                                  ca_key, revoked_at, reason, via)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[
                            &big(r.serial),
                            &r.key_id,
                            &r.user,
                            &big(r.valid_before),
                            &r.ca_key,
                            &big(r.revoked_at),
                            &r.reason,
                            &r.via.as_str(),
                        ],
                    )
                    .map_err(pg_error)?;
                }
            }
            Change::HostSshCerts(list) => {
                for c in list {
                    let principals: Vec<&str> = c.principals.iter().map(|p| p.as_str()).collect();
                    tx.execute(
                        "INSERT INTO host_ssh_certs (serial, host_id, host, key_id, principals,
                                                     key_fingerprint, valid_after, valid_before,
                                                     issued_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        &[
                            &big(c.serial),
                            &big(c.host_id),
                            &c.host.as_str(),
                            &c.key_id,
                            &principals.join(","),
                            &c.key_fingerprint,
                            &big(c.valid_after),
                            &big(c.valid_before),
                            &big(c.issued_at),
                        ],
                    )
                    .map_err(pg_error)?;
                }
            }
            Change::RevokeHostCerts(list) => {
                for r in list {
                    tx.execute(
                        "INSERT INTO host_cert_revocations (serial, host, valid_before, ca_key,
                                                            revoked_at, reason, via)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        &[
                            &big(r.serial),
                            &r.host.as_str(),
                            &big(r.valid_before),
                            &r.ca_key,
                            &big(r.revoked_at),
                            &r.reason,
                            &r.via,
                        ],
                    )
                    .map_err(pg_error)?;
                }
            }
            Change::AddUser(u) => {
                tx.execute(
                    "DELETE FROM disabled_users WHERE name = $1",
                    &[&u.name.as_str()],
                )
                .map_err(pg_error)?;
                if u.is_disabled() {
                    tx.execute(
                        "INSERT INTO disabled_users (name, at) VALUES ($1, $2)",
                        &[&u.name.as_str(), &big(at)],
                    )
                    .map_err(pg_error)?;
                }
            }
            Change::DisableUser { name, at, .. } | Change::DeleteUser { name, at } => {
                tx.execute(
                    "INSERT INTO disabled_users (name, at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&name.as_str(), &big(*at)],
                )
                .map_err(pg_error)?;
            }
            Change::EnableUser { name } => {
                tx.execute(
                    "DELETE FROM disabled_users WHERE name = $1",
                    &[&name.as_str()],
                )
                .map_err(pg_error)?;
            }
            _ => {}
        }
    }
    Ok(())
}

impl Store for PgStore {
    fn initialize(&self, meta: &InitMeta<'_>) -> Result<(), StoreError> {
        let model = crate::store::initial_model(meta)?;
        let snapshot = serde_json::to_string(&model.export())
            .map_err(|e| StoreError::Corrupt(format!("snapshot: {e}")))?;
        self.with(|c| {
            let mut tx = c.transaction().map_err(pg_error)?;
            let inserted = tx
                .execute(
                    "INSERT INTO smith_head (id, seq, version) VALUES (1, 0, $1)
                     ON CONFLICT DO NOTHING",
                    &[&big(model.version())],
                )
                .map_err(pg_error)?;
            if inserted == 0 {
                return Err(StoreError::Conflict(
                    "the database already holds a CA (smith-ca init runs once per database; \
                     a replica copies the data directory and serves the same database)"
                        .into(),
                ));
            }
            tx.execute(
                "INSERT INTO smith_snapshots (seq, taken_at, model, format) VALUES (0, $1, $2, $3)",
                &[&big(meta.now), &snapshot, &LOG_FORMAT],
            )
            .map_err(pg_error)?;
            tx.execute("INSERT INTO smith_serials (id, next) VALUES (1, 1)", &[])
                .map_err(pg_error)?;
            for (k, v) in [
                ("epoch", meta.epoch.to_string()),
                ("user_ca_algorithm", meta.user_ca_algorithm.to_string()),
                ("created_at", meta.now.to_string()),
            ] {
                tx.execute(
                    "INSERT INTO smith_meta (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&k, &v],
                )
                .map_err(pg_error)?;
            }
            lock_head(&mut tx, CA_CHAIN)?;
            tx.commit().map_err(pg_error)
        })?;
        let mut m = lock(&self.mirror);
        m.model = Some(model);
        m.applied = 0;
        Ok(())
    }

    fn is_initialized(&self) -> Result<bool, StoreError> {
        self.with(|c| {
            Ok(c.query_opt("SELECT 1 FROM smith_head WHERE id = 1", &[])
                .map_err(pg_error)?
                .is_some())
        })
    }

    fn load(&self, now: u64) -> Result<Loaded, StoreError> {
        if lock(&self.mirror).model.is_none() {
            self.reload()?;
        }
        let mut model = lock(&self.mirror)
            .model
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("the store was never initialized".into()))?
            .reloaded();
        model.rebuild_krl(now);
        model.rebuild_host_krl(now);
        let (last_serial, liveness) = self.with(|c| {
            let last: Option<i64> = c
                .query_one("SELECT MAX(serial) FROM certificates", &[])
                .map_err(pg_error)?
                .get(0);
            let rows = c
                .query(
                    "SELECT host_id, last_seen, synced_version FROM liveness",
                    &[],
                )
                .map_err(pg_error)?;
            let liveness = rows
                .into_iter()
                .map(|r| {
                    let id: i64 = r.get(0);
                    let seen: Option<i64> = r.get(1);
                    let v: Option<i64> = r.get(2);
                    (id as u64, (seen.map(|s| s as u64), v.map(|v| v as u64)))
                })
                .collect();
            Ok((last.unwrap_or(0).max(0) as u64, liveness))
        })?;
        Ok(Loaded {
            model,
            last_serial,
            liveness,
        })
    }

    fn commit(&self, c: Commit) -> Result<(), StoreError> {
        // Records queued before the commit are written first (the store contract).
        self.writer.flush();
        let mut mirror = lock(&self.mirror);
        let applied = mirror.applied;
        let current = mirror
            .model
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("the store was never initialized".into()))?;
        let changes_text = serde_json::to_string(&c.changes)
            .map_err(|e| StoreError::Corrupt(format!("encoding a change: {e}")))?;
        let mut next = current.clone();
        next.apply(&c.changes, c.new_version);
        let seq = applied + 1;
        let snapshot = if seq % SNAPSHOT_EVERY == 0 {
            Some(
                serde_json::to_string(&next.export())
                    .map_err(|e| StoreError::Corrupt(format!("snapshot: {e}")))?,
            )
        } else {
            None
        };
        self.with(|client| {
            let mut tx = client.transaction().map_err(pg_error)?;
            let head: i64 = tx
                .query_one("SELECT seq FROM smith_head WHERE id = 1 FOR UPDATE", &[])
                .map_err(pg_error)?
                .get(0);
            if head != applied {
                self.seen_head
                    .fetch_max(head.max(0) as u64, Ordering::SeqCst);
                return Err(StoreError::Stale);
            }
            // The constraints of the tables beside the log answer for serials.
            crate::store::refusals(current, &c.changes, &|_| false, &|_| false, &|_| false)?;
            tx.execute(
                "INSERT INTO smith_log (seq, at, version, what, origin, changes, format)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &seq,
                    &big(c.now),
                    &c.new_version.map(big),
                    &c.what,
                    &c.origin.to_string(),
                    &changes_text,
                    &LOG_FORMAT,
                ],
            )
            .map_err(pg_error)?;
            tx.execute(
                "UPDATE smith_head SET seq = $1, version = GREATEST(version, $2) WHERE id = 1",
                &[&seq, &big(next.version())],
            )
            .map_err(pg_error)?;
            persist_side_tables(&mut tx, &c.changes, c.now)?;
            let mut events: Vec<CaEvent<'_>> = crate::store::commit_events(&c.changes)
                .into_iter()
                .map(|e| (e, None))
                .collect();
            events.push((crate::audit::change_event(&c), None));
            append_ca(&mut tx, events, c.now)?;
            if let Some(text) = &snapshot {
                tx.execute(
                    "INSERT INTO smith_snapshots (seq, taken_at, model, format)
                     VALUES ($1, $2, $3, $4)",
                    &[&seq, &big(c.now), text, &LOG_FORMAT],
                )
                .map_err(pg_error)?;
            }
            tx.execute(&format!("NOTIFY {CHANNEL}, '{seq}'"), &[])
                .map_err(pg_error)?;
            tx.commit().map_err(pg_error)
        })?;
        mirror.model = Some(next);
        mirror.applied = seq;
        self.seen_head.fetch_max(seq as u64, Ordering::SeqCst);
        Ok(())
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
        self.with(|c| {
            let mut tx = c.transaction().map_err(pg_error)?;
            let mut p = Pruned::default();
            if let Some(before) = decided_before {
                p.decisions = tx
                    .execute(
                        "DELETE FROM decisions WHERE id IN (
                             SELECT id FROM decisions WHERE at < $1 ORDER BY id LIMIT $2)",
                        &[&big(before), &i64::from(limit)],
                    )
                    .map_err(pg_error)?;
            }
            if let Some(before) = expired_before {
                p.certificates = tx
                    .execute(
                        "DELETE FROM certificates WHERE serial IN (
                             SELECT serial FROM certificates WHERE valid_before < $1 LIMIT $2)",
                        &[&big(before), &i64::from(limit)],
                    )
                    .map_err(pg_error)?;
            }
            if p != Pruned::default() {
                let event = crate::store::retention_event(&p, decided_before, expired_before, now);
                append_ca(&mut tx, vec![(event, None)], now)?;
            }
            tx.commit().map_err(pg_error)?;
            Ok(p)
        })
    }

    fn shutdown(&self) {
        self.writer.shutdown();
    }

    fn decisions(&self, limit: u32, user: Option<&UserName>) -> Result<Vec<Decision>, StoreError> {
        self.with(|c| queries::decisions(c, limit, user))
    }

    fn certs(&self, q: &CertQuery) -> Result<Vec<IssuedCert>, StoreError> {
        self.with(|c| queries::certs(c, q))
    }

    fn cert_plan(&self, sel: &Selector, now: u64) -> Result<Option<Plan>, StoreError> {
        self.with(|c| queries::cert_plan(c, sel, now))
    }

    fn valid_certs_of(&self, user: &UserName, now: u64) -> Result<Vec<IssuedCert>, StoreError> {
        self.with(|c| queries::valid_certs_of(c, user, now))
    }

    fn host_certs(&self, q: &HostCertQuery) -> Result<Vec<smith_api::HostCertInfo>, StoreError> {
        self.with(|c| queries::host_certs(c, q))
    }

    fn host_cert_plan(
        &self,
        sel: HostCertSelector,
        now: u64,
    ) -> Result<Option<HostPlan>, StoreError> {
        self.with(|c| queries::host_cert_plan(c, sel, now))
    }

    fn audit_head(&self, host: &str) -> Result<(u64, [u8; 32]), StoreError> {
        self.with(|c| queries::audit_head(c, host))
    }

    fn audit_list(&self, f: &Filter) -> Result<Vec<Entry>, StoreError> {
        self.with(|c| queries::audit_list(c, f))
    }

    fn audit_verify(&self) -> Result<VerifyReport, StoreError> {
        self.with(queries::audit_verify)
    }

    fn audit_rejections(&self, limit: u32) -> Result<Vec<RejectionInfo>, StoreError> {
        self.with(|c| queries::audit_rejections(c, limit))
    }

    fn oob_inputs(&self) -> Result<OobInputs, StoreError> {
        self.with(queries::oob_inputs)
    }

    fn shared(&self) -> bool {
        true
    }

    fn follow(&self) -> Result<Vec<Followed>, StoreError> {
        let mut mirror = lock(&self.mirror);
        let entries = self.with(|c| read_log(c, mirror.applied, FOLLOW_BATCH))?;
        let mut out = Vec::with_capacity(entries.len());
        for (seq, f) in entries {
            if let Some(m) = mirror.model.as_mut() {
                m.apply(&f.changes, f.new_version);
            }
            mirror.applied = seq;
            self.seen_head.fetch_max(seq as u64, Ordering::SeqCst);
            out.push(f);
        }
        Ok(out)
    }

    fn behind(&self) -> bool {
        self.seen_head.load(Ordering::SeqCst) > lock(&self.mirror).applied.max(0) as u64
    }

    fn wait_change(&self, timeout: Duration) -> bool {
        let mut slot = lock(&self.listen);
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            match self.connector.connect().and_then(|mut c| {
                c.batch_execute(&format!("LISTEN {CHANNEL}"))
                    .map_err(pg_error)?;
                Ok(c)
            }) {
                Ok(c) => *slot = Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot listen for changes; polling");
                    drop(slot);
                    std::thread::sleep(timeout);
                    return true;
                }
            }
        }
        let Some(client) = slot.as_mut() else {
            return true;
        };
        use ::postgres::fallible_iterator::FallibleIterator;
        let got = client.notifications().timeout_iter(timeout).next();
        match got {
            Ok(Some(n)) => {
                if let Ok(seq) = n.payload().parse::<u64>() {
                    self.seen_head.fetch_max(seq, Ordering::SeqCst);
                }
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "lost the change notifications; reconnecting");
                *slot = None;
                true
            }
            Ok(None) => false,
        }
    }

    fn reserve_serials(&self, n: u64) -> Result<Option<std::ops::Range<u64>>, StoreError> {
        let n = big(n.max(1));
        let start: i64 = self.with(|c| {
            Ok(c.query_one(
                "UPDATE smith_serials SET next = next + $1 WHERE id = 1 RETURNING next - $1",
                &[&n],
            )
            .map_err(pg_error)?
            .get(0))
        })?;
        Ok(Some(start as u64..(start + n) as u64))
    }

    fn claim_job(&self, job: &str, lease: Duration) -> Result<bool, StoreError> {
        let (job, holder) = (job.to_string(), self.holder.clone());
        let now = now();
        let until = big(now.saturating_add(lease.as_secs()));
        let n = self.with(|c| {
            c.execute(
                "INSERT INTO smith_jobs (name, holder, until) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
                 WHERE smith_jobs.until < $4 OR smith_jobs.holder = EXCLUDED.holder",
                &[&job, &holder, &until, &big(now)],
            )
            .map_err(pg_error)
        })?;
        Ok(n == 1)
    }

    fn health(&self) -> Result<(), StoreError> {
        self.with(|c| {
            c.simple_query("SELECT 1").map_err(pg_error)?;
            Ok(())
        })
    }

    fn take_turn(&self, wait: Duration) -> bool {
        off_runtime(|| {
            let mut slot = lock(&self.turn);
            if slot.is_none() {
                *slot = self.connector.connect().ok();
            }
            let Some(c) = slot.as_mut() else {
                return false;
            };
            // lock_timeout bounds the wait (advisory locks obey it): a replica frozen
            // while it holds the turn delays the others by `wait`, no more.
            let sql = format!(
                "SET lock_timeout = {}; SELECT pg_advisory_lock({TURN_LOCK})",
                wait.as_millis().max(1)
            );
            match c.batch_execute(&sql) {
                Ok(()) => true,
                Err(e) => {
                    if e.is_closed() || e.as_db_error().is_none() {
                        *slot = None;
                    }
                    false
                }
            }
        })
    }

    fn end_turn(&self) {
        off_runtime(|| {
            let mut slot = lock(&self.turn);
            if let Some(c) = slot.as_mut() {
                let sql = format!("SELECT pg_advisory_unlock({TURN_LOCK})");
                if c.batch_execute(&sql).is_err() {
                    // A session that cannot unlock is dropped: the lock goes with it.
                    *slot = None;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of its own on the test server, or `None` (skipped) without PostgreSQL.
    pub(crate) fn fresh_database() -> Option<String> {
        let server = smith_testkit::pg::shared("ca store tests")?;
        Some(server.create_database())
    }

    #[test]
    fn a_background_job_runs_on_one_replica_until_its_lease_ends() {
        let Some(url) = fresh_database() else {
            return;
        };
        let a = PgStore::open(Connector::new(&url, None).unwrap(), true).unwrap();
        let b = PgStore::open(Connector::new(&url, None).unwrap(), true).unwrap();
        let hour = Duration::from_secs(3600);
        assert!(a.claim_job("retention", hour).unwrap());
        assert!(
            !b.claim_job("retention", hour).unwrap(),
            "two replicas ran one job"
        );
        assert!(a.claim_job("retention", hour).unwrap(), "the holder renews");
        assert!(b.claim_job("other", hour).unwrap(), "jobs are separate");
        // A lease that ended (the holder died) goes to whoever asks next.
        assert!(a.claim_job("short", Duration::ZERO).unwrap());
        std::thread::sleep(Duration::from_millis(1100));
        assert!(b.claim_job("short", hour).unwrap());
        a.shutdown();
        b.shutdown();
    }

    #[test]
    fn the_postgres_store_passes_the_conformance_suite() {
        let Some(_) = smith_testkit::pg::shared("postgres conformance") else {
            return;
        };
        crate::store::conformance::run_all(|| {
            let url = fresh_database().expect("server");
            Box::new(PgStore::open(Connector::new(&url, None).unwrap(), true).unwrap())
        });
    }
}
