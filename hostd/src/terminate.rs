//! `smith-host terminate`: an operator ends removals hostd held (a new CA epoch, a mass
//! removal; see [`crate::removal`]), with the same code hostd runs, and each one is
//! recorded in the host's audit trail (through hostd's socket, or as a pending event
//! file when hostd is down).
//!
//! Must never: end anything that is not a held removal (a user with access here, a
//! local account), or end it without a record.

use crate::config::Resolved;
use crate::removal::{Decision, Loss};
use smith_proto::event::{AccessEndedEvent, EventId, HostEvent};
use smith_proto::sessionfile::SessionRecord;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub ended: Vec<AccessEndedEvent>,
    /// Names asked for that have no held removal.
    pub not_held: Vec<String>,
}

/// Ends the held removals of `users` (every held removal with `all`).
pub fn run(resolved: &Resolved, users: &[String], all: bool) -> Result<Report, String> {
    let paths = &resolved.paths;
    let status = crate::state::load_sync_status(&paths.sync_status_file).unwrap_or_default();
    let held: Vec<_> = status
        .held_removals
        .iter()
        .filter(|h| all || users.contains(&h.user))
        .cloned()
        .collect();
    let not_held: Vec<String> = users
        .iter()
        .filter(|u| !status.held_removals.iter().any(|h| &h.user == *u))
        .cloned()
        .collect();
    let (local, _) = crate::local::LocalAccounts::load(
        &paths.passwd,
        &paths.group,
        &paths.subuid,
        &paths.subgid,
    )
    .map_err(|e| format!("cannot read the local account files: {e}"))?;
    let sessions = crate::removal::sessions(&paths.session_records_dir);
    let mut ended = Vec::new();
    for h in held {
        let loss = match (h.uid, h.session_pid) {
            (Some(uid), _) => Loss::User {
                name: h.user.clone(),
                uid,
            },
            (None, Some(pid)) => match sessions.iter().find(|s| s.pid == pid) {
                Some(rec) => Loss::Session(rec.clone()),
                None => Loss::Session(SessionRecord {
                    pid,
                    start_time: u64::MAX,
                    user: h.user.clone(),
                    key_id: String::new(),
                    serial: 0,
                    principals: Vec::new(),
                }),
            },
            (None, None) => continue,
        };
        let mut ev = crate::daemon::removal::carry_out(
            paths,
            &loss,
            &Decision::End,
            Some(&local.uids),
            "smith-host terminate",
        );
        ev.reason = format!("held removal ended by an operator: {}", h.reason);
        record(resolved, &ev)?;
        ended.push(ev);
    }
    Ok(Report { ended, not_held })
}

/// Through hostd's socket, else as a pending file hostd picks up when it runs.
fn record(resolved: &Resolved, ev: &AccessEndedEvent) -> Result<(), String> {
    let paths = &resolved.paths;
    let id = EventId(rand::random());
    let event = HostEvent::AccessEnded(ev.clone());
    let req = smith_proto::wire::Request::Event {
        id: Some(id),
        event: event.clone(),
    };
    if let Ok(smith_proto::wire::Response::Ack { .. }) =
        crate::localclient::request(&paths.socket, &req, Duration::from_secs(5))
    {
        return Ok(());
    }
    let dir = &paths.pending_dir;
    crate::fsutil::create_dirs(dir, 0o700)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = format!("{ns}-{}-{id}.evt", std::process::id());
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(&smith_proto::wire::encode_event(&event))
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, dir.join(&name)))
        .map_err(|e| format!("cannot record the event in {}: {e}", dir.display()))
}

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    if r.ended.is_empty() && r.not_held.is_empty() {
        s.push_str("No held removals: nothing to end.\n");
    }
    for e in &r.ended {
        s.push_str(&format!(
            "{} ({}): {} processes ended{}\n",
            e.user,
            e.scope,
            e.processes,
            if e.survivors > 0 {
                format!(", {} still running", e.survivors)
            } else {
                String::new()
            }
        ));
    }
    for u in &r.not_held {
        s.push_str(&format!(
            "{u}: no held removal (see `smith-host status`); nothing ended\n"
        ));
    }
    s
}
