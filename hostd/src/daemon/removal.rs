//! Carries out the losses of access a sync brought (see [`crate::removal`]): decides
//! (end, keep, hold), ends processes, records one `access_ended` audit event per loss,
//! and keeps held removals in `sync-status.json` for `status` and `doctor`.
//!
//! Runs after every applied sync and every housekeeping pass (a cache write that failed
//! at the sync), one run at a time, off the async workers: ending processes waits up to
//! the grace period per user.

use super::Shared;
use crate::removal::{self, Decision, Guard, Loss};
use crate::state::HeldRemoval;
use smith_proto::event::{AccessEndedEvent, HostEvent};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tracing::{error, info, warn};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Checks for losses of access and carries them out (blocking).
pub fn run(shared: &Arc<Shared>) {
    let Ok(_one) = ONE_AT_A_TIME.lock() else {
        return;
    };
    let any_held = shared
        .status
        .lock()
        .is_ok_and(|st| !st.held_removals.is_empty());
    let (removals, now) = match shared.store.lock() {
        Ok(mut s) => (s.take_removals(), any_held.then(|| s.access().clone())),
        Err(_) => return,
    };
    if let Some(now) = now {
        prune_held(shared, &now);
    }
    let Some(r) = removals else {
        return;
    };
    let sessions = removal::sessions(&shared.paths.session_records_dir);
    let losses = removal::losses(&r.before, &r.after, &sessions);
    if losses.is_empty() {
        return;
    }
    let users_lost = losses
        .iter()
        .filter(|l| matches!(l, Loss::User { .. }))
        .count();
    let guard = Guard {
        hold_percent: shared.config.removal_hold_percent,
        hold_min: shared.config.removal_hold_min,
    };
    let decision = removal::decide(
        shared.config.on_removal,
        guard,
        users_lost,
        r.before.user_count(),
        r.new_epoch,
    );
    if let Decision::Hold(why) = &decision {
        error!(
            users = users_lost,
            sessions = losses.len() - users_lost,
            "removals held, nothing ended: {why}. Review them with `smith-host status`; \
             end them with `smith-host terminate USER...` (or wait: they are released if \
             the users come back)"
        );
    }
    // Local uids, read again now: never signalled whatever the snapshot says.
    let local_uids = match crate::local::LocalAccounts::load(
        &shared.paths.passwd,
        &shared.paths.group,
        &shared.paths.subuid,
        &shared.paths.subgid,
    ) {
        Ok((l, _)) => Some(l.uids),
        Err(e) => {
            error!(error = %e, "cannot read the local account files: no process is ended until they are readable");
            None
        }
    };
    let mut held = Vec::new();
    for loss in &losses {
        let ev = carry_out(&shared.paths, loss, &decision, local_uids.as_ref(), "hostd");
        if ev.action == "held" {
            held.push(HeldRemoval {
                user: ev.user.clone(),
                uid: ev.uid,
                session_pid: ev.session_pid,
                reason: ev.reason.clone(),
                at: ev.at_unix,
            });
        }
        let _ = super::events::accept(shared, &HostEvent::AccessEnded(ev), "hostd", None, None);
    }
    if !held.is_empty() {
        if let Ok(mut st) = shared.status.lock() {
            st.held_removals.extend(held);
            shared.save_status(st);
        }
    }
}

/// Ends (or keeps, or holds) one loss and says what happened.
pub fn carry_out(
    paths: &crate::paths::HostPaths,
    loss: &Loss,
    decision: &Decision,
    local_uids: Option<&HashSet<u32>>,
    by: &str,
) -> AccessEndedEvent {
    let proc_root = &paths.proc_root;
    let mut ev = AccessEndedEvent {
        user: String::new(),
        uid: None,
        scope: String::new(),
        action: "ended".into(),
        reason: String::new(),
        method: "none".into(),
        processes: 0,
        survivors: 0,
        session_pid: None,
        key_id: String::new(),
        by: by.into(),
        at_unix: crate::now_unix(),
    };
    match loss {
        Loss::User { name, uid } => {
            ev.user = name.clone();
            ev.uid = Some(*uid);
            ev.scope = "user".into();
            ev.reason = "no grant gives this user access to this host any more".into();
        }
        Loss::Session(rec) => {
            ev.user = rec.user.clone();
            ev.scope = "session".into();
            ev.session_pid = Some(rec.pid);
            ev.key_id = rec.key_id.clone();
            ev.reason = "no grant the session's certificate names admits it any more".into();
        }
    }
    let running = || match loss {
        Loss::User { uid, .. } => removal::count_uid(proc_root, *uid),
        Loss::Session(rec) => u32::from(
            smith_proto::sessionfile::proc_stat(proc_root, rec.pid)
                .is_some_and(|(_, s)| s == rec.start_time),
        ),
    };
    match decision {
        Decision::Keep => {
            ev.action = "kept".into();
            ev.reason.push_str(" (on_removal = \"keep\")");
            ev.processes = running();
            return ev;
        }
        Decision::Hold(why) => {
            ev.action = "held".into();
            ev.reason = why.clone();
            ev.processes = running();
            return ev;
        }
        Decision::End => {}
    }
    let protected = match (loss, local_uids) {
        (_, None) => Some("the local account files are unreadable"),
        (Loss::User { uid, .. }, Some(l)) => removal::protected_uid(*uid, l),
        (Loss::Session(_), Some(_)) => None,
    };
    if let Some(why) = protected {
        ev.action = "kept".into();
        ev.reason = format!("{}; not ended: {why}", ev.reason);
        ev.processes = running();
        warn!(user = %ev.user, "{}", ev.reason);
        return ev;
    }
    if paths.is_relocated() {
        ev.action = "kept".into();
        ev.reason = format!(
            "{}; not ended: paths are relocated under --root (a test root: the machine's \
             processes are not this host's)",
            ev.reason
        );
        ev.processes = running();
        return ev;
    }
    let ended = match loss {
        Loss::User { uid, .. } => removal::end_uid(proc_root, *uid, removal::GRACE),
        Loss::Session(rec) => removal::end_session(proc_root, rec, removal::GRACE),
    };
    ev.method = ended.method;
    ev.processes = ended.processes;
    ev.survivors = ended.survivors;
    if ev.survivors > 0 {
        error!(user = %ev.user, survivors = ev.survivors, "processes survived SIGKILL (uninterruptible?)");
    }
    info!(
        user = %ev.user,
        scope = %ev.scope,
        processes = ev.processes,
        "access ended on this host"
    );
    ev
}

/// Drops held removals that are over: the user has access again, or nothing of theirs
/// runs any more.
pub fn prune_held(shared: &Shared, now: &removal::Access) {
    let Ok(mut st) = shared.status.lock() else {
        return;
    };
    if st.held_removals.is_empty() {
        return;
    }
    let before = st.held_removals.len();
    let proc_root = &shared.paths.proc_root;
    st.held_removals.retain(|h| {
        let back = h.uid.is_some() && now.uid_of(&h.user) == h.uid;
        !back && removal::held_running(proc_root, h) > 0
    });
    if st.held_removals.len() != before {
        info!(
            released = before - st.held_removals.len(),
            left = st.held_removals.len(),
            "held removals released (access back, or nothing left running)"
        );
        shared.save_status(st);
    }
}
