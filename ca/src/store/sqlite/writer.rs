//! The SQLite store's writer: one dedicated thread that owns the write connection and
//! commits everything the store writes, with group commit.
//!
//! Requests hand it a job and wait on a oneshot channel; the thread takes every job that
//! is pending, writes issuance records and host uploads in as few transactions as it can
//! (one fsync each, see [`super::schema`] for why `synchronous=FULL`) and only then
//! answers each request. Under load, batches grow while the previous fsync runs, so
//! throughput scales with concurrency instead of paying one fsync per certificate. If a
//! batch of records fails, they are retried one by one so that one bad record cannot
//! sink the others. Host "last seen" updates ride along without anyone waiting for them.
//!
//! Also keeps the persisted serial high-water mark, so serials never repeat across
//! restarts, and the CA's own audit chain (`@ca`): each decision, each revocation and
//! each committed change (who, from where, what) gets its chain record in the same
//! transaction (hashing only, no extra fsync). Model
//! commits are written here too, after the records queued with them, so that one thread
//! orders every write.
//!
//! Must never: answer a request before its write is committed, or block an async task
//! (callers only do a non-blocking send and await the reply).

use super::audit;
use super::schema::open_connection;
use crate::audit::{check_batch, AuditOutcome, CA_CHAIN};
use crate::store::queue::Queue;
use crate::store::{Commit, Pending, Pruned, Record, StoreError, WriteError};
use rusqlite::{params, Connection};
use smith_api::chain::{self, AuditRecord};
use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::Receiver;
use tokio::sync::oneshot;

/// Largest number of jobs written in one transaction.
const MAX_BATCH: usize = 4096;
/// Pending jobs beyond which new requests are refused (503) instead of queued.
const QUEUE_CAPACITY: usize = 65_536;

enum Job {
    Record {
        rec: Box<Record>,
        done: oneshot::Sender<Result<u64, WriteError>>,
    },
    HostSeen {
        host_id: u64,
        at: u64,
        synced_version: Option<u64>,
    },
    Audit {
        host: String,
        records: Vec<AuditRecord>,
        done: oneshot::Sender<Result<AuditOutcome, WriteError>>,
    },
    Commit {
        commit: Box<Commit>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Prune {
        decided_before: Option<u64>,
        expired_before: Option<u64>,
        limit: u32,
        now: u64,
        done: oneshot::Sender<Result<Pruned, StoreError>>,
    },
}

/// A host upload waiting for the writer: host, records, where to answer.
type Upload = (
    String,
    Vec<AuditRecord>,
    oneshot::Sender<Result<AuditOutcome, WriteError>>,
);

pub(super) struct Writer {
    queue: Queue<Job>,
}

impl Writer {
    pub fn start(db_path: &Path) -> Result<Writer, StoreError> {
        let conn = open_connection(db_path)?;
        Ok(Writer {
            queue: Queue::start("smith-ca-writer", QUEUE_CAPACITY, move |rx| run(conn, rx))?,
        })
    }

    /// Queues a decision (and its certificate); answers the decision id once committed.
    pub fn record(&self, rec: Record) -> Pending<u64> {
        self.queue.ask(|done| Job::Record {
            rec: Box::new(rec),
            done,
        })
    }

    /// Queues a host's audit upload (verified and stored in one transaction).
    pub fn audit(&self, host: String, records: Vec<AuditRecord>) -> Pending<AuditOutcome> {
        self.queue.ask(|done| Job::Audit {
            host,
            records,
            done,
        })
    }

    /// Commits model changes in one transaction with a `@ca` audit record for each
    /// revocation among them. Blocking: call it from a blocking thread. Every job queued
    /// before it is committed first.
    pub fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.queue.ask_blocking(|done| Job::Commit {
            commit: Box::new(commit),
            done,
        })
    }

    /// Deletes one batch of old decisions and expired certificates (blocking).
    pub fn prune(
        &self,
        decided_before: Option<u64>,
        expired_before: Option<u64>,
        limit: u32,
        now: u64,
    ) -> Result<Pruned, StoreError> {
        self.queue.ask_blocking(|done| Job::Prune {
            decided_before,
            expired_before,
            limit,
            now,
            done,
        })
    }

    /// Notes that a host synced; written with the next batch, nobody waits.
    pub fn host_seen(&self, host_id: u64, at: u64, synced_version: Option<u64>) {
        if let Err(e) = self.queue.send(Job::HostSeen {
            host_id,
            at,
            synced_version,
        }) {
            tracing::warn!(host_id, error = %e, "could not queue the host's last-seen update");
        }
    }

    /// Drains pending jobs and stops the thread.
    pub fn shutdown(&self) {
        self.queue.shutdown()
    }
}

fn run(mut conn: Connection, rx: Receiver<Job>) {
    let mut ca_head = match audit::head(&conn, CA_CHAIN) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the head of the CA's audit chain; decisions will fail");
            (u64::MAX, chain::GENESIS)
        }
    };
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut records = Vec::new();
        let mut uploads = Vec::new();
        let mut commits = Vec::new();
        let mut prunes = Vec::new();
        let mut seen: HashMap<u64, (u64, Option<u64>)> = HashMap::new();
        for job in batch {
            match job {
                Job::Record { rec, done } => records.push((rec, done)),
                Job::Commit { commit, done } => commits.push((commit, done)),
                Job::Prune {
                    decided_before,
                    expired_before,
                    limit,
                    now,
                    done,
                } => prunes.push(((decided_before, expired_before, limit, now), done)),
                Job::Audit {
                    host,
                    records,
                    done,
                } => uploads.push((host, records, done)),
                Job::HostSeen {
                    host_id,
                    at,
                    synced_version,
                } => {
                    let e = seen.entry(host_id).or_insert((at, synced_version));
                    e.0 = e.0.max(at);
                    e.1 = synced_version.or(e.1);
                }
            }
        }
        let commit_seconds = &crate::metrics::METRICS.store_commit_seconds;
        if !uploads.is_empty() {
            let t = std::time::Instant::now();
            write_uploads(&mut conn, uploads);
            commit_seconds.observe(t.elapsed());
        }
        if !(records.is_empty() && seen.is_empty()) {
            let t = std::time::Instant::now();
            write_records(&mut conn, records, &seen, &mut ca_head);
            commit_seconds.observe(t.elapsed());
        }
        // After the records queued with them: a revocation sweep then sees every
        // certificate issued before it was asked for.
        for (commit, done) in commits {
            let t = std::time::Instant::now();
            let r = write_commit(&mut conn, &commit, &mut ca_head);
            commit_seconds.observe(t.elapsed());
            if let Err(e) = &r {
                tracing::error!(error = %e, change = %commit.what, "could not commit a change");
            }
            let _ = done.send(r);
        }
        for ((decided, expired, limit, now), done) in prunes {
            let r = write_prune(&mut conn, decided, expired, limit, now, &mut ca_head);
            if let Err(e) = &r {
                tracing::error!(error = %e, "could not prune old decisions and certificates");
            }
            let _ = done.send(r);
        }
    }
}

/// One retention batch and its `@ca` record, in one transaction.
fn write_prune(
    conn: &mut Connection,
    decided_before: Option<u64>,
    expired_before: Option<u64>,
    limit: u32,
    now: u64,
    ca_head: &mut (u64, [u8; 32]),
) -> Result<Pruned, StoreError> {
    if ca_head.0 == u64::MAX {
        *ca_head = audit::head(conn, CA_CHAIN)?;
    }
    let tx = conn.transaction()?;
    let clamp = |t: u64| t.min(i64::MAX as u64) as i64;
    let mut p = Pruned::default();
    if let Some(before) = decided_before {
        p.decisions = tx.execute(
            "DELETE FROM decisions WHERE id IN (
                 SELECT id FROM decisions WHERE at < ?1 ORDER BY id LIMIT ?2)",
            params![clamp(before), limit],
        )? as u64;
    }
    if let Some(before) = expired_before {
        p.certificates = tx.execute(
            "DELETE FROM certificates WHERE serial IN (
                 SELECT serial FROM certificates WHERE valid_before < ?1 LIMIT ?2)",
            params![clamp(before), limit],
        )? as u64;
    }
    let mut head = *ca_head;
    if p != Pruned::default() {
        let event = crate::store::retention_event(&p, decided_before, expired_before, now);
        let rec = chain::next_record(CA_CHAIN, head.0, &head.1, event);
        audit::insert(&tx, CA_CHAIN, &rec, now)?;
        head = (
            rec.seq,
            chain::parse_hash(&rec.hash).unwrap_or(chain::GENESIS),
        );
    }
    tx.commit()?;
    *ca_head = head;
    Ok(p)
}

/// Model changes, the `@ca` records of their revocations and the change's own `@ca`
/// record, in one transaction.
fn write_commit(
    conn: &mut Connection,
    c: &Commit,
    ca_head: &mut (u64, [u8; 32]),
) -> Result<(), StoreError> {
    if ca_head.0 == u64::MAX {
        *ca_head = audit::head(conn, CA_CHAIN)?;
    }
    let mut head = *ca_head;
    let tx = conn.transaction()?;
    super::persist::write_commit(&tx, c)?;
    for event in crate::store::commit_events(&c.changes) {
        let rec = chain::next_record(CA_CHAIN, head.0, &head.1, event);
        audit::insert(&tx, CA_CHAIN, &rec, c.now)?;
        head = (
            rec.seq,
            chain::parse_hash(&rec.hash).unwrap_or(chain::GENESIS),
        );
    }
    // Who changed what, from where: in the chain with the change itself.
    let rec = chain::next_record(CA_CHAIN, head.0, &head.1, crate::audit::change_event(c));
    audit::insert(&tx, CA_CHAIN, &rec, c.now)?;
    head = (
        rec.seq,
        chain::parse_hash(&rec.hash).unwrap_or(chain::GENESIS),
    );
    tx.commit()?;
    *ca_head = head;
    Ok(())
}

type PendingRecord = (Box<Record>, oneshot::Sender<Result<u64, WriteError>>);

/// Issuance records (and host last-seen updates) in one transaction; on failure, each
/// record alone.
fn write_records(
    conn: &mut Connection,
    records: Vec<PendingRecord>,
    seen: &HashMap<u64, (u64, Option<u64>)>,
    ca_head: &mut (u64, [u8; 32]),
) {
    {
        let recs: Vec<&Record> = records.iter().map(|(r, _)| r.as_ref()).collect();
        match write_batch(conn, &recs, seen, ca_head) {
            Ok(ids) => {
                for ((_, done), id) in records.into_iter().zip(ids) {
                    let _ = done.send(Ok(id));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = recs.len(), "batch commit failed; retrying records one by one");
                for (rec, done) in records {
                    let r = write_batch(conn, &[&rec], &HashMap::new(), ca_head)
                        .map(|ids| ids.first().copied().unwrap_or(0))
                        .map_err(|e| WriteError::Failed(e.to_string()));
                    if let Err(e) = &r {
                        tracing::error!(error = %e, user = %rec.decision.user, "could not record an issuance decision");
                    }
                    let _ = done.send(r);
                }
            }
        }
    }
}

/// Host uploads: each verified against its host's stored chain and stored, or its
/// rejection recorded; one transaction for all of them.
fn write_uploads(conn: &mut Connection, uploads: Vec<Upload>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let result = (|| -> Result<Vec<AuditOutcome>, rusqlite::Error> {
        let tx = conn.transaction()?;
        let mut outcomes = Vec::with_capacity(uploads.len());
        for (host, records, _) in &uploads {
            match check_batch(audit::head(&tx, host)?, host, records) {
                Ok(head) => {
                    for r in records {
                        audit::insert(&tx, host, r, now)?;
                    }
                    outcomes.push(Ok(crate::audit::ack_of(head)));
                }
                Err(rej) => {
                    audit::record_rejection(&tx, host, &rej, records, now)?;
                    outcomes.push(Err(rej));
                }
            }
        }
        tx.commit()?;
        Ok(outcomes)
    })();
    match result {
        Ok(outcomes) => {
            for ((_, _, done), o) in uploads.into_iter().zip(outcomes) {
                let _ = done.send(Ok(o));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not store audit uploads");
            for (_, _, done) in uploads {
                let _ = done.send(Err(WriteError::Failed(e.to_string())));
            }
        }
    }
}

fn write_batch(
    conn: &mut Connection,
    records: &[&Record],
    seen: &HashMap<u64, (u64, Option<u64>)>,
    ca_head: &mut (u64, [u8; 32]),
) -> Result<Vec<u64>, rusqlite::Error> {
    if ca_head.0 == u64::MAX && !records.is_empty() {
        // The head could not be read at start: try again rather than fork the chain.
        *ca_head = audit::head(conn, CA_CHAIN)?;
    }
    let mut head = *ca_head;
    let at_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let tx = conn.transaction()?;
    let mut ids = Vec::with_capacity(records.len());
    let mut max_serial = 0u64;
    {
        let mut ins_decision = tx.prepare_cached(
            "INSERT INTO decisions (at, user_name, allowed, reason, scope, requested_ttl_secs,
                                    serial, key_id, source_ip, grant_ids)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        let mut ins_cert = tx.prepare_cached(
            "INSERT INTO certificates (serial, key_id, user_name, principals, scope, valid_after,
                                       valid_before, request_id, public_key_fp, issued_at,
                                       source_ip, decision_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for r in records {
            let d = &r.decision;
            let grant_ids: Vec<String> = d.grant_ids.iter().map(|g| g.to_string()).collect();
            ins_decision.execute(params![
                d.at as i64,
                d.user,
                d.allowed,
                d.reason,
                d.scope,
                d.requested_ttl_secs as i64,
                r.cert.as_ref().map(|c| c.serial as i64),
                r.cert.as_ref().map(|c| c.key_id.as_str()),
                d.source_ip,
                grant_ids.join(","),
            ])?;
            let id = tx.last_insert_rowid();
            ids.push(id as u64);
            let event = crate::audit::decision_event(
                id as u64,
                d,
                r.cert.as_ref().map(|c| c.serial),
                r.cert.as_ref().map(|c| c.key_id.as_str()),
            );
            let rec = chain::next_record(CA_CHAIN, head.0, &head.1, event);
            audit::insert_derived(
                &tx,
                CA_CHAIN,
                &rec,
                at_now,
                (crate::audit::DECISION_KIND, &d.user, d.at as i64),
            )?;
            head = (
                rec.seq,
                chain::parse_hash(&rec.hash).unwrap_or(chain::GENESIS),
            );
            if let Some(c) = &r.cert {
                max_serial = max_serial.max(c.serial);
                ins_cert.execute(params![
                    c.serial as i64,
                    c.key_id,
                    d.user,
                    c.principals.join(","),
                    c.scope,
                    c.valid_after as i64,
                    c.valid_before as i64,
                    c.request_id,
                    c.public_key_fp,
                    d.at as i64,
                    d.source_ip,
                    id,
                ])?;
            }
        }
        if max_serial > 0 {
            tx.prepare_cached(
                "UPDATE meta SET value = ?1 WHERE key = 'serial' AND CAST(value AS INTEGER) < ?1",
            )?
            .execute([max_serial as i64])?;
        }
        let mut upd_host = tx.prepare_cached(
            "UPDATE hosts SET last_seen = ?2, synced_version = COALESCE(?3, synced_version)
             WHERE id = ?1",
        )?;
        for (host, (at, v)) in seen {
            upd_host.execute(params![*host as i64, *at as i64, v.map(|v| v as i64)])?;
        }
    }
    tx.commit()?;
    *ca_head = head;
    Ok(ids)
}
