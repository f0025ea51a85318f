//! Accepting an audit event: append it to the spool (durably) and log it with
//! structured fields.
//!
//! Owns: the one path every event takes, whether it came over the socket or from a
//! pending file. Must never: acknowledge an event that is not in the spool.

use super::Shared;
use smith_proto::event::HostEvent;
use tracing::{error, info};

/// Spools and logs `ev`; returns its sequence number. Blocking (fsync): call from a
/// blocking context.
pub fn accept(shared: &Shared, ev: &HostEvent, via: &str) -> std::io::Result<u64> {
    let seq = {
        let mut spool = shared
            .spool
            .lock()
            .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
        spool.append(ev, via)
    };
    match &seq {
        Ok(seq) => log_event(*seq, via, ev),
        Err(e) => error!(error = %e, user = ev.user(), "cannot append an audit event to the spool"),
    }
    seq
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
    }
}
