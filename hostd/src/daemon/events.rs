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
use smith_proto::event::{EventId, HostEvent};
use tracing::{error, info};

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
    }
}
