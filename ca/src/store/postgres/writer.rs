//! The PostgreSQL store's writer: one thread with its own connection that writes
//! issuance records, host uploads and hosts' last contact with group commit.
//!
//! Requests queue a job and await a oneshot answer; the thread takes every pending job
//! and writes the records of a batch in one transaction (bulk statements, one commit),
//! so throughput grows with concurrency. A failed batch is retried record by record, so
//! one bad record cannot sink the others. When the database is unreachable every job of
//! the batch is answered [`WriteError::Unavailable`] at once (503), and the next batch
//! reconnects.
//!
//! Must never: answer before the commit, or block an async task (senders only
//! `try_send`).

use super::{append_ca, big, insert_records, lock_head, pg_error, set_head, Connector};
use crate::audit::{check_batch, AuditOutcome};
use crate::store::queue::Queue;
use crate::store::{Pending, Record, StoreError, WriteError};
use smith_api::chain::AuditRecord;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use tokio::sync::oneshot;

const MAX_BATCH: usize = 4096;
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
    /// Answered once every job queued before it is written.
    Flush { done: oneshot::Sender<()> },
}

type PendingRecord = (Box<Record>, oneshot::Sender<Result<u64, WriteError>>);
type Upload = (
    String,
    Vec<AuditRecord>,
    oneshot::Sender<Result<AuditOutcome, WriteError>>,
);

pub(super) struct Writer {
    queue: Queue<Job>,
}

impl Writer {
    pub fn start(
        connector: Arc<Connector>,
        seen_head: Arc<AtomicU64>,
    ) -> Result<Writer, StoreError> {
        Ok(Writer {
            queue: Queue::start("smith-ca-pg-writer", QUEUE_CAPACITY, move |rx| {
                run(&connector, &seen_head, rx)
            })?,
        })
    }

    pub fn record(&self, rec: Record) -> Pending<u64> {
        self.queue.ask(|done| Job::Record {
            rec: Box::new(rec),
            done,
        })
    }

    pub fn audit(&self, host: String, records: Vec<AuditRecord>) -> Pending<AuditOutcome> {
        self.queue.ask(|done| Job::Audit {
            host,
            records,
            done,
        })
    }

    pub fn host_seen(&self, host_id: u64, at: u64, synced_version: Option<u64>) {
        if let Err(e) = self.queue.send(Job::HostSeen {
            host_id,
            at,
            synced_version,
        }) {
            tracing::warn!(host_id, error = %e, "could not queue the host's last-seen update");
        }
    }

    /// Waits until every job queued before this call is written (blocking): a commit
    /// that follows then sees them.
    pub fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Job::Flush { done }).is_ok() {
            let _ = wait.blocking_recv();
        }
    }

    pub fn shutdown(&self) {
        self.queue.shutdown()
    }
}

fn write_error(e: StoreError) -> WriteError {
    match e {
        StoreError::Unavailable(_) => WriteError::Unavailable,
        e => WriteError::Failed(e.to_string()),
    }
}

fn run(connector: &Connector, seen_head: &AtomicU64, rx: Receiver<Job>) {
    let mut conn: Option<::postgres::Client> = None;
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
        let mut seen: HashMap<u64, (u64, Option<u64>)> = HashMap::new();
        let mut flushes = Vec::new();
        for job in batch {
            match job {
                Job::Flush { done } => flushes.push(done),
                Job::Record { rec, done } => records.push((rec, done)),
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
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            match connector.connect() {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "the CA database is unreachable; refusing writes");
                    for (_, done) in records {
                        let _ = done.send(Err(WriteError::Unavailable));
                    }
                    for (_, _, done) in uploads {
                        let _ = done.send(Err(WriteError::Unavailable));
                    }
                    for done in flushes {
                        let _ = done.send(());
                    }
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        if !uploads.is_empty() {
            write_uploads(c, uploads);
        }
        if !(records.is_empty() && seen.is_empty()) {
            write_records(c, records, &seen, seen_head);
        }
        if conn.as_ref().is_some_and(|c| c.is_closed()) {
            conn = None;
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

fn write_records(
    c: &mut ::postgres::Client,
    records: Vec<PendingRecord>,
    seen: &HashMap<u64, (u64, Option<u64>)>,
    seen_head: &AtomicU64,
) {
    let recs: Vec<&Record> = records.iter().map(|(r, _)| r.as_ref()).collect();
    match write_batch(c, &recs, seen, seen_head) {
        Ok(ids) => {
            for ((_, done), id) in records.into_iter().zip(ids) {
                let _ = done.send(Ok(id));
            }
        }
        Err(StoreError::Unavailable(e)) => {
            tracing::warn!(error = %e, records = recs.len(), "the CA database is unreachable; refusing issuance");
            for (_, done) in records {
                let _ = done.send(Err(WriteError::Unavailable));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, records = recs.len(), "batch commit failed; retrying records one by one");
            for (rec, done) in records {
                let r = write_batch(c, &[&rec], &HashMap::new(), seen_head)
                    .map(|ids| ids.first().copied().unwrap_or(0))
                    .map_err(write_error);
                if let Err(e) = &r {
                    tracing::error!(error = %e, user = %rec.decision.user, "could not record an issuance decision");
                }
                let _ = done.send(r);
            }
        }
    }
}

/// One transaction: decisions, certificates, their `@ca` records, hosts' last contact.
fn write_batch(
    c: &mut ::postgres::Client,
    records: &[&Record],
    seen: &HashMap<u64, (u64, Option<u64>)>,
    seen_head: &AtomicU64,
) -> Result<Vec<u64>, StoreError> {
    let at_now = super::now();
    let mut tx = c.transaction().map_err(pg_error)?;
    let mut ids: Vec<u64> = Vec::with_capacity(records.len());
    if !records.is_empty() {
        // A share lock: a commit of another replica is either before this batch (and
        // seen here) or after it (and its revocation sweep sees these certificates).
        let head: i64 = tx
            .query_one("SELECT seq FROM smith_head WHERE id = 1 FOR SHARE", &[])
            .map_err(pg_error)?
            .get(0);
        seen_head.fetch_max(head.max(0) as u64, Ordering::SeqCst);
        ids = tx
            .query(
                "SELECT nextval('decisions_id_seq') FROM generate_series(1, $1::bigint)",
                &[&(records.len() as i64)],
            )
            .map_err(pg_error)?
            .iter()
            .map(|r| r.get::<_, i64>(0).max(0) as u64)
            .collect();
        let n = records.len();
        let mut d_id = Vec::with_capacity(n);
        let mut d_at = Vec::with_capacity(n);
        let mut d_user = Vec::with_capacity(n);
        let mut d_allowed = Vec::with_capacity(n);
        let mut d_reason = Vec::with_capacity(n);
        let mut d_scope = Vec::with_capacity(n);
        let mut d_ttl = Vec::with_capacity(n);
        let mut d_serial: Vec<Option<i64>> = Vec::with_capacity(n);
        let mut d_key: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut d_src = Vec::with_capacity(n);
        let mut d_grants = Vec::with_capacity(n);
        let mut c_serial = Vec::new();
        let mut c_key = Vec::new();
        let mut c_user = Vec::new();
        let mut c_principals = Vec::new();
        let mut c_scope = Vec::new();
        let mut c_after = Vec::new();
        let mut c_before = Vec::new();
        let mut c_rid = Vec::new();
        let mut c_fp = Vec::new();
        let mut c_issued = Vec::new();
        let mut c_src = Vec::new();
        let mut c_decision = Vec::new();
        let mut events = Vec::with_capacity(n);
        for (r, id) in records.iter().zip(&ids) {
            let d = &r.decision;
            d_id.push(big(*id));
            d_at.push(big(d.at));
            d_user.push(d.user.as_str());
            d_allowed.push(d.allowed);
            d_reason.push(d.reason.as_str());
            d_scope.push(d.scope.as_str());
            d_ttl.push(big(d.requested_ttl_secs));
            d_serial.push(r.cert.as_ref().map(|c| big(c.serial)));
            d_key.push(r.cert.as_ref().map(|c| c.key_id.as_str()));
            d_src.push(d.source_ip.as_str());
            d_grants.push(
                d.grant_ids
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            if let Some(cert) = &r.cert {
                c_serial.push(big(cert.serial));
                c_key.push(cert.key_id.as_str());
                c_user.push(d.user.as_str());
                c_principals.push(cert.principals.join(","));
                c_scope.push(cert.scope.as_str());
                c_after.push(big(cert.valid_after));
                c_before.push(big(cert.valid_before));
                c_rid.push(cert.request_id.as_str());
                c_fp.push(cert.public_key_fp.as_str());
                c_issued.push(big(d.at));
                c_src.push(d.source_ip.as_str());
                c_decision.push(big(*id));
            }
            let event = crate::audit::decision_event(
                *id,
                d,
                r.cert.as_ref().map(|c| c.serial),
                r.cert.as_ref().map(|c| c.key_id.as_str()),
            );
            events.push((
                event,
                Some((crate::audit::DECISION_KIND, d.user.as_str(), big(d.at))),
            ));
        }
        tx.execute(
            "INSERT INTO decisions (id, at, user_name, allowed, reason, scope, requested_ttl_secs,
                                    serial, key_id, source_ip, grant_ids)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bool[], $5::text[],
                                  $6::text[], $7::bigint[], $8::bigint[], $9::text[],
                                  $10::text[], $11::text[])",
            &[
                &d_id, &d_at, &d_user, &d_allowed, &d_reason, &d_scope, &d_ttl, &d_serial, &d_key,
                &d_src, &d_grants,
            ],
        )
        .map_err(pg_error)?;
        if !c_serial.is_empty() {
            tx.execute(
                "INSERT INTO certificates (serial, key_id, user_name, principals, scope,
                                           valid_after, valid_before, request_id, public_key_fp,
                                           issued_at, source_ip, decision_id)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[],
                                      $5::text[], $6::bigint[], $7::bigint[], $8::text[],
                                      $9::text[], $10::bigint[], $11::text[], $12::bigint[])",
                &[
                    &c_serial,
                    &c_key,
                    &c_user,
                    &c_principals,
                    &c_scope,
                    &c_after,
                    &c_before,
                    &c_rid,
                    &c_fp,
                    &c_issued,
                    &c_src,
                    &c_decision,
                ],
            )
            .map_err(pg_error)?;
        }
        append_ca(&mut tx, events, at_now)?;
    }
    if !seen.is_empty() {
        let mut ids_v = Vec::with_capacity(seen.len());
        let mut at_v = Vec::with_capacity(seen.len());
        let mut ver_v: Vec<Option<i64>> = Vec::with_capacity(seen.len());
        let mut sorted: Vec<_> = seen.iter().collect();
        sorted.sort_by_key(|(id, _)| **id);
        for (id, (at, v)) in sorted {
            ids_v.push(big(*id));
            at_v.push(big(*at));
            ver_v.push(v.map(big));
        }
        tx.execute(
            "INSERT INTO liveness (host_id, last_seen, synced_version)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[])
             ON CONFLICT (host_id) DO UPDATE SET
                 last_seen = GREATEST(liveness.last_seen, EXCLUDED.last_seen),
                 synced_version = COALESCE(EXCLUDED.synced_version, liveness.synced_version)",
            &[&ids_v, &at_v, &ver_v],
        )
        .map_err(pg_error)?;
    }
    tx.commit().map_err(pg_error)?;
    Ok(ids)
}

/// Host uploads: each checked against its host's chain head (locked) and stored, or its
/// rejection recorded; one transaction, hosts locked in name order.
fn write_uploads(c: &mut ::postgres::Client, mut uploads: Vec<Upload>) {
    uploads.sort_by(|a, b| a.0.cmp(&b.0));
    let now = super::now();
    let result = (|| -> Result<Vec<AuditOutcome>, StoreError> {
        let mut tx = c.transaction().map_err(pg_error)?;
        let mut outcomes = Vec::with_capacity(uploads.len());
        for (host, records, _) in &uploads {
            let head = lock_head(&mut tx, host)?;
            match check_batch(head, host, records) {
                Ok(new_head) => {
                    let rows: Vec<_> = records
                        .iter()
                        .map(|r| (r.clone(), crate::audit::derived(&r.event)))
                        .collect();
                    insert_records(&mut tx, host, &rows, now)?;
                    set_head(&mut tx, host, new_head.0, &new_head.1)?;
                    outcomes.push(Ok(crate::audit::ack_of(new_head)));
                }
                Err(rej) => {
                    tx.execute(
                        "INSERT INTO audit_rejections (host, seq, code, reason, at, first_seq,
                                                       last_seq, records)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[
                            host,
                            &big(rej.seq),
                            &rej.code.as_str(),
                            &rej.reason,
                            &big(now),
                            &records.first().map(|r| big(r.seq)).unwrap_or(0),
                            &records.last().map(|r| big(r.seq)).unwrap_or(0),
                            &(records.len() as i64),
                        ],
                    )
                    .map_err(pg_error)?;
                    outcomes.push(Err(rej));
                }
            }
        }
        tx.commit().map_err(pg_error)?;
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
            let we = write_error(e);
            for (_, _, done) in uploads {
                let _ = done.send(Err(we.clone()));
            }
        }
    }
}
