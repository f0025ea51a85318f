//! The audit uploader: sends the spool's records to the CA in chain order over mTLS
//! (`POST /v1/host/audit`, at most [`MAX_BATCH`] records per batch) and deletes a
//! segment only once the CA acknowledged every record in it.
//!
//! Protocol: at start and after any failed upload, ask the CA's head
//! (`GET /v1/host/audit/head`) and reconcile: the CA's head record must be ours (same
//! hash at that seq); then everything up to it counts as acknowledged (so a crash
//! between the CA's commit and our `acked.json` neither loses nor duplicates). A CA
//! head that is not ours is a fork: logged loudly, recorded in `audit-status.json`, and
//! uploading stops (rechecked every [`FORK_RECHECK`]). A batch the CA rejects (altered
//! record, gap) stays in the spool, never deleted nor "fixed"; the rejection is recorded
//! for `status`/`doctor` and retried every [`REJECT_RETRY`].
//!
//! Owns: `audit-status.json`. Must never: delete an unacknowledged record, send records
//! out of order, or block event intake (it only reads the spool).

use super::Shared;
use crate::identity;
use crate::spool::{self, AckState};
use serde::{Deserialize, Serialize};
use smith_api::chain::Refusal;
use smith_api::chain::{AuditAck, AuditBatch};
use smith_api::{AsyncClient, ClientError, ErrorCode};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

/// Most records per upload.
pub const MAX_BATCH: usize = 500;
/// About the most bytes of records per upload (the CA accepts 4 MiB bodies).
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Wait after the CA rejected a batch.
pub const REJECT_RETRY: Duration = Duration::from_secs(60);
/// Wait between head checks while the chain is forked.
pub const FORK_RECHECK: Duration = Duration::from_secs(600);
/// Wait when the CA has no audit endpoint.
pub const UNSUPPORTED_RETRY: Duration = Duration::from_secs(300);
/// Idle check even without new events.
const IDLE: Duration = Duration::from_secs(30);

/// Longest wait between retries while the CA is unreachable (events keep being
/// spooled; a new event also triggers a retry).
pub const RETRY_MAX: Duration = Duration::from_secs(10);

/// 1 s doubling to [`RETRY_MAX`].
#[derive(Debug, Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let d = self.next.unwrap_or(Duration::from_secs(1));
        self.next = Some((d * 2).min(RETRY_MAX));
        d
    }
    fn reset(&mut self) {
        self.next = None;
    }
}

/// A batch the CA refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub seq: u64,
    pub code: String,
    pub message: String,
    pub at_unix: u64,
}

/// `audit-status.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStatus {
    pub head_seq: u64,
    pub acked_through: u64,
    pub last_upload_unix: Option<u64>,
    pub last_attempt_unix: Option<u64>,
    /// The last failure to reach or use the CA (cleared by a successful upload).
    pub last_error: Option<String>,
    /// The last batch the CA rejected (cleared when a later upload succeeds).
    pub rejection: Option<Rejection>,
    /// Set while the CA's chain and ours disagree: uploading is stopped.
    pub fork: Option<String>,
}

pub fn load_status(path: &Path) -> Option<UploadStatus> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn save_status(path: &Path, st: &UploadStatus) {
    if let Ok(b) = serde_json::to_vec_pretty(st) {
        if let Err(e) = crate::fsutil::atomic_write(path, &b, 0o644) {
            debug!(error = %e, "cannot write audit-status.json");
        }
    }
}

/// How the CA's head relates to our spool.
#[derive(Debug, PartialEq, Eq)]
pub enum Reconciled {
    /// Same chain; `acked_through` advanced to the CA's head if it was behind.
    Ok { advanced: bool },
    /// The chains differ.
    Fork(String),
}

/// Compares the CA's head with our spool and, when it is ours, records it as
/// acknowledged. Blocking (file I/O).
pub fn reconcile(dir: &Path, ca: &AuditAck, local_head: u64) -> std::io::Result<Reconciled> {
    let local = spool::load_acked(dir)?;
    if ca.acked_through > local_head {
        return Ok(Reconciled::Fork(format!(
            "the CA holds records up to seq {} but this host's chain ends at {local_head} \
             (the spool was lost or another host uses this name)",
            ca.acked_through
        )));
    }
    if ca.acked_through < local.acked_through {
        return Ok(Reconciled::Fork(format!(
            "the CA's chain ends at seq {} but it acknowledged up to {} before \
             (the CA lost records, e.g. restored from a backup)",
            ca.acked_through, local.acked_through
        )));
    }
    if ca.acked_through == 0 {
        return Ok(Reconciled::Ok { advanced: false });
    }
    let ours = if ca.acked_through == local.acked_through {
        Some(local.head_hash.clone())
    } else {
        spool::record_at(dir, ca.acked_through)
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .map(|r| r.hash)
    };
    match ours {
        Some(h) if h == ca.head_hash => {
            if ca.acked_through > local.acked_through {
                spool::mark_acked(dir, ca)?;
                Ok(Reconciled::Ok { advanced: true })
            } else {
                spool::prune(dir, local.acked_through)?;
                Ok(Reconciled::Ok { advanced: false })
            }
        }
        Some(h) => Ok(Reconciled::Fork(format!(
            "the CA's record {} has hash {} but ours is {h}",
            ca.acked_through, ca.head_hash
        ))),
        None => Ok(Reconciled::Fork(format!(
            "the CA's head seq {} is not in this host's spool",
            ca.acked_through
        ))),
    }
}

fn client(shared: &Shared) -> Result<AsyncClient, String> {
    let p = &shared.paths;
    let creds = identity::load_credentials(&p.ca_bundle, &p.host_cert, &p.host_key)?;
    crate::syncclient::connect(&shared.replicas, &creds).map_err(|e| e.to_string())
}

enum Step {
    /// Go on at once.
    Again,
    /// Wait for new events (or the idle tick).
    Idle,
    Wait(Duration),
}

struct Uploader {
    shared: Arc<Shared>,
    client: Option<AsyncClient>,
    need_head: bool,
    status: UploadStatus,
    backoff: Backoff,
    /// After a rejection at this seq: upload only the records before it (so the CA gets
    /// everything up to the bad record), then retry from it after [`REJECT_RETRY`].
    stop_before: Option<u64>,
}

impl Uploader {
    fn save(&mut self) {
        let (head, _) = self.shared.spool.head();
        self.status.head_seq = head;
        if let Ok(a) = spool::load_acked(&self.shared.paths.spool_dir) {
            self.status.acked_through = a.acked_through;
        }
        save_status(&self.shared.paths.audit_status_file, &self.status);
    }

    fn failed(&mut self, msg: String) -> Step {
        self.status.last_error = Some(msg.clone());
        self.need_head = true;
        self.client = None;
        self.save();
        let d = self.backoff.next_delay();
        warn!(error = %msg, retry_in_ms = d.as_millis() as u64, "audit upload failed; events stay in the spool");
        Step::Wait(d)
    }

    async fn step(&mut self) -> Step {
        let dir = self.shared.paths.spool_dir.clone();
        if self.client.is_none() {
            match client(&self.shared) {
                Ok(c) => self.client = Some(c),
                Err(e) => return self.failed(format!("cannot build the CA client: {e}")),
            }
        }
        let Some(client) = self.client.as_ref() else {
            return Step::Wait(REJECT_RETRY);
        };
        self.status.last_attempt_unix = Some(crate::now_unix());
        if self.need_head {
            let ack = match client.audit_head().await {
                Ok(a) => a,
                Err(e) if matches!(e.status(), Some(404) | Some(405)) => {
                    self.status.last_error =
                        Some("the CA does not accept audit uploads (no /v1/host/audit)".into());
                    self.save();
                    return Step::Wait(UNSUPPORTED_RETRY);
                }
                Err(e) => return self.failed(e.to_string()),
            };
            let (head, _) = self.shared.spool.head();
            let d = dir.clone();
            let r = tokio::task::spawn_blocking(move || reconcile(&d, &ack, head)).await;
            match r {
                Ok(Ok(Reconciled::Ok { advanced })) => {
                    if advanced {
                        info!("the CA already had records this host had not seen acknowledged; spool advanced");
                    }
                    if self.status.fork.take().is_some() {
                        info!("the CA's audit chain matches this host's again");
                    }
                    self.need_head = false;
                }
                Ok(Ok(Reconciled::Fork(msg))) => {
                    error!(fork = %msg, "AUDIT CHAIN FORK: this host's audit chain and the CA's disagree; uploading is stopped and the spool is kept. Investigate before removing anything");
                    self.status.fork = Some(msg);
                    self.save();
                    return Step::Wait(FORK_RECHECK);
                }
                Ok(Err(e)) => return self.failed(format!("cannot read the spool: {e}")),
                Err(e) => return self.failed(e.to_string()),
            }
        }
        let acked = match spool::load_acked(&dir) {
            Ok(a) => a,
            Err(e) => return self.failed(e.to_string()),
        };
        let d = dir.clone();
        let after = acked.acked_through;
        let batch = tokio::task::spawn_blocking(move || {
            spool::read_after(&d, after, MAX_BATCH, MAX_BATCH_BYTES)
        })
        .await;
        let mut records = match batch {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.status.last_error = Some(e.to_string());
                self.save();
                error!(error = %e, "cannot read the audit spool");
                return Step::Wait(REJECT_RETRY);
            }
            Err(e) => return self.failed(e.to_string()),
        };
        if let Some(stop) = self.stop_before {
            let full = !records.is_empty();
            records.retain(|r| r.seq < stop);
            if records.is_empty() && full {
                // Only the rejected record and what follows are left: retry them later.
                self.stop_before = None;
                self.save();
                return Step::Wait(REJECT_RETRY);
            }
        }
        if records.is_empty() {
            self.save();
            return Step::Idle;
        }
        let first = records[0].seq;
        let last = records[records.len() - 1].seq;
        let n = records.len();
        let batch = AuditBatch { records };
        match client.audit_upload(&batch).await {
            Ok(ack) => {
                // The CA must acknowledge a record of this batch, with its hash.
                let ours = batch
                    .records
                    .iter()
                    .find(|r| r.seq == ack.acked_through)
                    .map(|r| r.hash.clone());
                if ours.as_deref() != Some(ack.head_hash.as_str()) {
                    return self.failed(format!(
                        "the CA acknowledged seq {} with hash {}, which is not a record of the batch {first}..{last}",
                        ack.acked_through, ack.head_hash
                    ));
                }
                let d = dir.clone();
                let a = ack.clone();
                match tokio::task::spawn_blocking(move || spool::mark_acked(&d, &a)).await {
                    Ok(Ok(deleted)) => {
                        debug!(first, last, deleted, "audit batch acknowledged");
                    }
                    Ok(Err(e)) => {
                        return self.failed(format!("cannot record the acknowledgement: {e}"))
                    }
                    Err(e) => return self.failed(e.to_string()),
                }
                info!(
                    records = n,
                    first,
                    acked_through = ack.acked_through,
                    "audit records uploaded"
                );
                self.status.last_upload_unix = Some(crate::now_unix());
                self.status.last_error = None;
                if self.stop_before.is_none() {
                    self.status.rejection = None;
                }
                self.backoff.reset();
                self.save();
                Step::Again
            }
            Err(ClientError::Status {
                status: 409,
                code: ErrorCode::AuditReplay,
                message,
                ..
            }) => {
                info!(first, last, message = %message, "the CA already has these records; asking its head");
                self.need_head = true;
                Step::Again
            }
            Err(ClientError::Status {
                status,
                wire_code: code,
                message,
                ..
            }) if status == 409 || status == 400 => {
                let seq = Refusal::seq_in(&message).unwrap_or(first);
                error!(
                    seq,
                    code = %code,
                    reason = %message,
                    "the CA REJECTED audit records: they stay in the spool (never altered); check the spool and the CA's `smith-ca admin audit rejections`"
                );
                self.status.rejection = Some(Rejection {
                    seq,
                    code,
                    message,
                    at_unix: crate::now_unix(),
                });
                self.need_head = true;
                self.save();
                if seq > first && seq <= last && self.stop_before.is_none() {
                    // Send the good records before it now.
                    self.stop_before = Some(seq);
                    return Step::Again;
                }
                self.stop_before = None;
                Step::Wait(REJECT_RETRY)
            }
            Err(e) if matches!(e.status(), Some(404) | Some(405)) => {
                self.status.last_error =
                    Some("the CA does not accept audit uploads (no /v1/host/audit)".into());
                self.save();
                Step::Wait(UNSUPPORTED_RETRY)
            }
            Err(e) => self.failed(e.to_string()),
        }
    }
}

pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let written = shared.spool.written.clone();
    let mut up = Uploader {
        status: load_status(&shared.paths.audit_status_file).unwrap_or_default(),
        shared,
        client: None,
        need_head: true,
        backoff: Backoff::default(),
        stop_before: None,
    };
    // A fork or rejection from a previous run is re-established by this run's checks.
    up.status.fork = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let step = tokio::select! {
            s = up.step() => s,
            _ = shutdown.changed() => return,
        };
        match step {
            Step::Again => continue,
            // New events wake an idle uploader at once.
            Step::Idle => tokio::select! {
                _ = written.notified() => {}
                _ = tokio::time::sleep(IDLE) => {}
                _ = shutdown.changed() => return,
            },
            // After a failure, wait the full delay whatever arrives meanwhile.
            Step::Wait(d) => tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = shutdown.changed() => return,
            },
        }
    }
}

/// The spool's unacknowledged count and state, for `status` (reads files only).
pub fn summarize(paths: &crate::paths::HostPaths) -> (u64, AckState, Option<UploadStatus>) {
    let head = spool::head_seq(&paths.spool_dir).unwrap_or(0);
    let acked = spool::load_acked(&paths.spool_dir).unwrap_or_default();
    (
        head.saturating_sub(acked.acked_through),
        acked,
        load_status(&paths.audit_status_file),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Spool;
    use smith_proto::event::{DeniedEvent, HostEvent};

    fn ev(i: u64) -> HostEvent {
        HostEvent::Denied(DeniedEvent {
            user: format!("u{i}"),
            service: "sshd".into(),
            rhost: String::new(),
            reason: String::new(),
            key_id: String::new(),
            at_unix: i,
        })
    }

    #[test]
    fn reconcile_advances_on_our_head_and_detects_forks() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(d.path(), "h").unwrap();
        for i in 0..5 {
            s.append(&ev(i), "socket").unwrap();
        }
        let r3 = spool::record_at(d.path(), 3).unwrap().unwrap();
        let ack = AuditAck {
            acked_through: 3,
            head_hash: r3.hash.clone(),
        };
        assert_eq!(
            reconcile(d.path(), &ack, 5).unwrap(),
            Reconciled::Ok { advanced: true }
        );
        assert_eq!(spool::load_acked(d.path()).unwrap().acked_through, 3);
        // Same head again: nothing to do.
        assert_eq!(
            reconcile(d.path(), &ack, 5).unwrap(),
            Reconciled::Ok { advanced: false }
        );
        // Another hash at 4, a head beyond ours, a head behind what was acked: forks.
        let bad = AuditAck {
            acked_through: 4,
            head_hash: "00".repeat(32),
        };
        assert!(matches!(
            reconcile(d.path(), &bad, 5).unwrap(),
            Reconciled::Fork(_)
        ));
        let beyond = AuditAck {
            acked_through: 9,
            head_hash: r3.hash.clone(),
        };
        assert!(matches!(
            reconcile(d.path(), &beyond, 5).unwrap(),
            Reconciled::Fork(_)
        ));
        let behind = AuditAck {
            acked_through: 1,
            head_hash: r3.hash,
        };
        assert!(matches!(
            reconcile(d.path(), &behind, 5).unwrap(),
            Reconciled::Fork(_)
        ));
    }
}
