//! Accepting an audit event: note SSH sessions in the session table, attribute a sudo
//! to its session's certificate key ID, append the event to the spool (durably, hash
//! chained) and log it with structured fields.
//!
//! Owns: the one path every event takes, whether it came over the socket, from a
//! pending file or from sshd's log. Must never: acknowledge an event that is not in
//! the spool, refuse an event because its session is unknown, or record an event with
//! an id twice (a repeated id is answered with the seq it already has, and changes
//! nothing else).

use super::Shared;
use serde::{Deserialize, Serialize};
use smith_proto::event::{EventId, HostEvent};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{error, info, warn};

/// Events read from sshd's log are refused once the spool holds this much (issue 14,
/// M1: a log a local user can write to, e.g. through syslog, must not fill
/// `/var/lib/smith` or the CA). PAM's own events (from root processes) are always
/// spooled.
pub const SSHD_LOG_QUOTA_BYTES: u64 = 256 << 20;

/// `spool-quota.json`: how many sshd-log events were dropped because the spool was over
/// its quota, for `status` and `doctor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaStatus {
    pub quota_bytes: u64,
    pub dropped: u64,
    pub last_dropped_unix: Option<u64>,
}

pub fn quota_file(paths: &crate::paths::HostPaths) -> std::path::PathBuf {
    paths.state_dir.join("spool-quota.json")
}

pub fn load_quota(paths: &crate::paths::HostPaths) -> QuotaStatus {
    std::fs::read(quota_file(paths))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

static SPOOL_BYTES: AtomicU64 = AtomicU64::new(0);
static SPOOL_CHECKED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Whether the spool is over the sshd-log quota (the directory is summed at most once a
/// second).
fn over_quota(shared: &Shared, quota: u64) -> bool {
    let now = crate::now_unix();
    if SPOOL_CHECKED.swap(now, Ordering::Relaxed) != now {
        SPOOL_BYTES.store(
            crate::spool::disk_bytes(&shared.paths.spool_dir),
            Ordering::Relaxed,
        );
    }
    SPOOL_BYTES.load(Ordering::Relaxed) >= quota
}

/// Why an event was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(
        "the audit spool is over its quota for sshd log events ({quota} bytes); event dropped"
    )]
    OverQuota { quota: u64 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// [`accept`] for an event read from sshd's log: dropped (counted, reported) when the
/// spool is over [`SSHD_LOG_QUOTA_BYTES`].
pub fn accept_from_log(
    shared: &Shared,
    ev: &HostEvent,
    id: Option<EventId>,
    quota: u64,
) -> Result<u64, AcceptError> {
    if over_quota(shared, quota) {
        let n = DROPPED.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            warn!(dropped = n, quota, "the audit spool is over its quota: events from sshd's log are dropped until the CA acknowledges the backlog");
        }
        let st = QuotaStatus {
            quota_bytes: quota,
            dropped: n,
            last_dropped_unix: Some(crate::now_unix()),
        };
        if let Ok(b) = serde_json::to_vec_pretty(&st) {
            let _ = crate::fsutil::atomic_write_with(
                &quota_file(&shared.paths),
                &b,
                0o644,
                crate::fsutil::Durability::AtomicOnly,
            );
        }
        return Err(AcceptError::OverQuota { quota });
    }
    Ok(accept(shared, ev, "sshd-log", None, id)?)
}

/// Spools and logs `ev`; returns its sequence number. `peer_pid` is the sending
/// process (`SO_PEERCRED`) for socket events: for a sudo event, the sudo process whose
/// ancestors lead to the login session. `id` is the sender's event id: a repeat of an
/// id already spooled is not recorded again. Blocking (fsync): call from a blocking
/// context.
pub fn accept(
    shared: &Shared,
    ev: &HostEvent,
    via: &str,
    peer_pid: Option<u32>,
    id: Option<EventId>,
) -> std::io::Result<u64> {
    let mut ev = ev.clone();
    if let HostEvent::Sudo(s) = &mut ev {
        if let Ok(sessions) = shared.sessions.lock() {
            // Socket: the peer is the sudo process. Pending file: try the event's pid
            // (the sudo process may still be running).
            let pid = peer_pid.filter(|p| *p > 1).unwrap_or(s.pid);
            sessions.fill_sudo(s, pid);
        }
    }
    let ev = &ev;
    match shared.spool.append(ev, via, id) {
        Ok(done) if done.repeat => {
            info!(
                seq = done.seq,
                via,
                event_id = %id.map(|i| i.to_string()).unwrap_or_default(),
                "a repeated delivery of an event already spooled; not recorded twice"
            );
            Ok(done.seq)
        }
        Ok(done) => {
            // Before the Ack, so a sudo of this session finds it; never for a repeat
            // (a late copy of an open would bring back a closed session).
            if matches!(ev, HostEvent::Session(_)) {
                if let Ok(mut sessions) = shared.sessions.lock() {
                    sessions.observe(ev);
                }
            }
            log_event(done.seq, via, ev);
            Ok(done.seq)
        }
        Err(e) => {
            error!(error = %e, user = ev.user(), "cannot append an audit event to the spool");
            Err(e)
        }
    }
}

pub fn log_event(seq: u64, via: &str, ev: &HostEvent) {
    match ev {
        HostEvent::Session(s) => info!(
            audit = "session",
            seq,
            via,
            phase = ?s.phase,
            user = %s.user,
            service = %s.service,
            rhost = %s.rhost,
            tty = %s.tty,
            pid = s.pid,
            key_id = %s.key_id,
            serial = ?s.serial,
            duration_secs = ?s.duration_secs,
            "session {:?} for {}", s.phase, s.user
        ),
        HostEvent::Sudo(s) => info!(
            audit = "sudo",
            seq,
            via,
            user = %s.user,
            target = %s.target,
            command = %s.command,
            cwd = %s.cwd,
            tty = %s.tty,
            allowed = s.allowed,
            reason = %s.reason,
            key_id = %s.key_id,
            "sudo by {} as {}: {}", s.user, s.target, if s.allowed { "allowed" } else { "refused" }
        ),
        HostEvent::Denied(s) => info!(
            audit = "denied",
            seq,
            via,
            user = %s.user,
            service = %s.service,
            rhost = %s.rhost,
            reason = %s.reason,
            key_id = %s.key_id,
            "access denied to {}: {}", s.user, s.reason
        ),
        HostEvent::Sshd(s) => info!(
            audit = "sshd",
            seq,
            via,
            user = %s.user,
            accepted = s.accepted,
            rhost = %s.rhost,
            method = %s.method,
            key_type = %s.key_type,
            fingerprint = %s.fingerprint,
            key_id = %s.key_id,
            serial = ?s.serial,
            "sshd {} login for {}", if s.accepted { "accepted" } else { "failed" }, s.user
        ),
        HostEvent::AccessEnded(s) => info!(
            audit = "access_ended",
            seq,
            via,
            user = %s.user,
            uid = ?s.uid,
            scope = %s.scope,
            action = %s.action,
            reason = %s.reason,
            method = %s.method,
            processes = s.processes,
            survivors = s.survivors,
            session_pid = ?s.session_pid,
            key_id = %s.key_id,
            by = %s.by,
            "{} lost access here: {} processes {}", s.user, s.processes, s.action
        ),
    }
}
