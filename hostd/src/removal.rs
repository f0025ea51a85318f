//! Removal ends what runs: when a sync takes access away, hostd ends the processes it
//! admitted (issue 16).
//!
//! Two kinds of loss, found by comparing what this host admitted before a sync with what
//! it admits after ([`Access`], derived with the cache from the snapshot, so it already
//! excludes names and ids that collide with local ones):
//! - **a user**: a Smith user served before is served no more (removed from every group
//!   with a grant here, disabled, deleted, every grant covering the host gone). Every
//!   process of their uid ends (`loginctl terminate-user` where logind runs, then
//!   signals for whatever is left: SIGTERM + SIGCONT, a grace period, SIGKILL), SSH
//!   sessions, `tmux`, `nohup` jobs and user services alike; their files stay.
//! - **a session**: the login still has access through another grant, but no grant
//!   the session's certificate was issued under admits it any more (pam_smith's record in
//!   `/run/smith/sessions/<pid>`). That session's sshd process and everything below it
//!   end; the user's other sessions and processes do not.
//!
//! Decided by [`decide`]: `on_removal = "keep"` records and ends nothing; a full
//! snapshot from a new CA epoch (a CA restored from a backup, re-initialised) or a change
//! that would end more than `removal_hold_percent` of the served users (and more than
//! `removal_hold_min`) at once is **held**: recorded, shown by `status` and `doctor`,
//! raised as an error in the log, and ended only by an operator (`smith-host terminate`).
//!
//! Must never: signal uid 0 or a uid of `/etc/passwd` (local accounts are never
//! affected), a uid this host did not serve as a Smith user, or a process whose identity
//! changed since it was looked at (signals go through a pidfd opened before the second
//! look); act on paths relocated under `--root` (a test root shares the machine's
//! processes: what would end is recorded with method `none`); wait without bound.

use crate::logins::Wanted;
use smith_proto::sessionfile::{self, SessionRecord};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// Most session records read at once.
pub const MAX_SESSIONS: usize = 100_000;
/// SIGTERM to SIGKILL.
pub const GRACE: Duration = Duration::from_secs(2);
/// SIGKILL sweeps (a process forking as fast as it can is caught within a few).
const KILL_ROUNDS: usize = 20;
/// `loginctl terminate-user` is given this long.
const LOGINCTL_TIMEOUT: Duration = Duration::from_secs(10);

/// What this host admits: the Smith users it serves (name → uid) and who may log in
/// as which name (the principals files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    users: BTreeMap<String, u32>,
    logins: Wanted,
}

impl Access {
    pub fn new(users: BTreeMap<String, u32>, logins: Wanted) -> Access {
        Access { users, logins }
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn uid_of(&self, name: &str) -> Option<u32> {
        self.users.get(name).copied()
    }

    /// Whether one of the grants `rec`'s certificate names still admits its login.
    pub fn admits(&self, rec: &SessionRecord) -> bool {
        self.logins
            .get(&rec.user)
            .is_some_and(|lines| rec.principals.iter().any(|p| lines.contains(p)))
    }
}

/// One loss of access found by [`losses`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    User { name: String, uid: u32 },
    Session(SessionRecord),
}

/// What was admitted `before` and is not `after`: users first, then sessions of logins
/// that keep access but whose certificate's grants no longer admit them.
pub fn losses(before: &Access, after: &Access, sessions: &[SessionRecord]) -> Vec<Loss> {
    let mut out = Vec::new();
    let mut gone = BTreeSet::new();
    for (name, &uid) in &before.users {
        if after.users.get(name) != Some(&uid) {
            gone.insert(name.as_str());
            out.push(Loss::User {
                name: name.clone(),
                uid,
            });
        }
    }
    for rec in sessions {
        if gone.contains(rec.user.as_str()) {
            continue;
        }
        if before.admits(rec) && !after.admits(rec) {
            out.push(Loss::Session(rec.clone()));
        }
    }
    out
}

/// `on_removal` in `host.toml`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRemoval {
    /// End the processes (the default).
    #[default]
    Terminate,
    /// Record the loss, end nothing.
    Keep,
}

/// The mass-removal guard's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guard {
    /// Hold when more than this percentage of the served users would end at once...
    pub hold_percent: u8,
    /// ...and more than this many.
    pub hold_min: usize,
}

/// What to do with the losses of one sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    End,
    Keep,
    /// Why it is held.
    Hold(String),
}

pub fn decide(
    on: OnRemoval,
    guard: Guard,
    users_lost: usize,
    users_before: usize,
    new_epoch: bool,
) -> Decision {
    if on == OnRemoval::Keep {
        return Decision::Keep;
    }
    if new_epoch {
        return Decision::Hold(
            "the CA's database is from a new epoch (restored from a backup or re-initialised): \
             users missing from it were not removed by anyone"
                .into(),
        );
    }
    if users_lost > guard.hold_min && users_lost * 100 > guard.hold_percent as usize * users_before
    {
        return Decision::Hold(format!(
            "{users_lost} of {users_before} users would lose access at once (more than \
             removal_hold_percent = {} % and removal_hold_min = {})",
            guard.hold_percent, guard.hold_min
        ));
    }
    Decision::End
}

// --- processes -------------------------------------------------------------------------

/// What `/proc/PID/status` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcInfo {
    ppid: u32,
    /// real, effective, saved, filesystem.
    uids: [u32; 4],
    zombie: bool,
}

fn proc_info(proc_root: &Path, pid: u32) -> Option<ProcInfo> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status")).ok()?;
    let mut ppid = None;
    let mut uids = None;
    let mut zombie = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("PPid:") {
            ppid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("Uid:") {
            let n: Vec<u32> = v
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            uids = <[u32; 4]>::try_from(n).ok();
        } else if let Some(v) = line.strip_prefix("State:") {
            zombie = matches!(v.trim().chars().next(), Some('Z' | 'X'));
        }
    }
    Some(ProcInfo {
        ppid: ppid?,
        uids: uids?,
        zombie,
    })
}

fn pids(proc_root: &Path) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn runs_as(info: &ProcInfo, uid: u32) -> bool {
    !info.zombie && info.uids.contains(&uid)
}

/// Live (not zombie) processes running as `uid` (real, effective, saved or fs uid).
pub fn count_uid(proc_root: &Path, uid: u32) -> u32 {
    pids(proc_root)
        .into_iter()
        .filter(|&p| proc_info(proc_root, p).is_some_and(|i| runs_as(&i, uid)))
        .count() as u32
}

/// Sends `sig` to `pid` if, once a pidfd holds it, it still passes `still`: a pid
/// recycled between the look and the signal is never signalled.
fn signal_if(pid: u32, sig: i32, still: impl Fn(u32) -> bool) -> bool {
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new descriptor or -1;
    // no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            // Kernels before 5.3: a plain kill after the second look.
            // SAFETY: kill(2) with a pid and a signal number; no memory is passed.
            return still(pid) && unsafe { libc::kill(pid as libc::pid_t, sig) } == 0;
        }
        return false;
    }
    // SAFETY: fd is a descriptor pidfd_open just returned, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if !still(pid) {
        return false;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, a null siginfo
    // (the kernel fills it as kill(2) would) and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    r == 0
}

/// What ending processes did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub method: String,
    /// Distinct processes signalled.
    pub processes: u32,
    /// Still running at the end.
    pub survivors: u32,
}

fn logind_runs() -> bool {
    Path::new("/run/systemd/seats").is_dir()
}

/// `loginctl terminate-user UID`, bounded; whether it succeeded.
fn loginctl_terminate(uid: u32) -> bool {
    let Ok(mut child) = std::process::Command::new("loginctl")
        .args(["terminate-user", &uid.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + LOGINCTL_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Ends every process running as `uid`. The caller checked that `uid` is a Smith uid
/// and not a local one.
pub fn end_uid(proc_root: &Path, uid: u32, grace: Duration) -> Ended {
    let mut method = "signals".to_string();
    if logind_runs() && loginctl_terminate(uid) {
        method = "logind".into();
    }
    let still = |p: u32| proc_info(proc_root, p).is_some_and(|i| runs_as(&i, uid));
    let mut signalled: HashSet<u32> = HashSet::new();
    for p in pids(proc_root) {
        if signal_if(p, libc::SIGTERM, still) {
            signalled.insert(p);
            signal_if(p, libc::SIGCONT, still);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && count_uid(proc_root, uid) > 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..KILL_ROUNDS {
        let left: Vec<u32> = pids(proc_root).into_iter().filter(|&p| still(p)).collect();
        if left.is_empty() {
            break;
        }
        for p in left {
            // Frozen first, so that nothing forks between the look and the kill.
            signal_if(p, libc::SIGSTOP, still);
            if signal_if(p, libc::SIGKILL, still) {
                signalled.insert(p);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if signalled.is_empty() && method == "signals" {
        method = "none (nothing ran)".into();
    }
    Ended {
        method,
        processes: signalled.len() as u32,
        survivors: count_uid(proc_root, uid),
    }
}

/// Ends one SSH session: sshd's process for it (if it is still the one that opened
/// the session) and every process below it, as they were when this started.
pub fn end_session(proc_root: &Path, rec: &SessionRecord, grace: Duration) -> Ended {
    let alive =
        sessionfile::proc_stat(proc_root, rec.pid).is_some_and(|(_, s)| s == rec.start_time);
    if !alive {
        return Ended {
            method: "none (session gone)".into(),
            processes: 0,
            survivors: 0,
        };
    }
    // The tree, each member with its start time (they are reparented once sshd goes).
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in pids(proc_root) {
        if let Some(i) = proc_info(proc_root, p) {
            if !i.zombie {
                children.entry(i.ppid).or_default().push(p);
            }
        }
    }
    let mut tree = Vec::new();
    let mut todo = vec![rec.pid];
    while let Some(p) = todo.pop() {
        if tree.len() >= 100_000 {
            break;
        }
        if let Some((_, start)) = sessionfile::proc_stat(proc_root, p) {
            tree.push((p, start));
        }
        if let Some(c) = children.get(&p) {
            todo.extend(c.iter().copied());
        }
    }
    let same = |pid: u32, start: u64| {
        move |p: u32| {
            p == pid
                && sessionfile::proc_stat(proc_root, p).is_some_and(|(_, s)| s == start)
                && proc_info(proc_root, p).is_some_and(|i| !i.zombie)
        }
    };
    let mut signalled = 0u32;
    for &(p, start) in &tree {
        if signal_if(p, libc::SIGTERM, same(p, start)) {
            signalled += 1;
            signal_if(p, libc::SIGCONT, same(p, start));
        }
    }
    let left = |tree: &[(u32, u64)]| tree.iter().filter(|&&(p, s)| same(p, s)(p)).count();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && left(&tree) > 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &(p, start) in &tree {
        signal_if(p, libc::SIGKILL, same(p, start));
    }
    std::thread::sleep(Duration::from_millis(20));
    Ended {
        method: "signals".into(),
        processes: signalled,
        survivors: left(&tree) as u32,
    }
}

/// How many processes of a held removal still run.
pub fn held_running(proc_root: &Path, h: &crate::state::HeldRemoval) -> u32 {
    match (h.uid, h.session_pid) {
        (Some(uid), _) => count_uid(proc_root, uid),
        (None, Some(pid)) => u32::from(proc_root.join(pid.to_string()).exists()),
        (None, None) => 0,
    }
}

/// Session records of this host's pam_smith (`/run/smith/sessions`).
pub fn sessions(dir: &Path) -> Vec<SessionRecord> {
    sessionfile::list(dir, MAX_SESSIONS)
}

/// Why a uid must not be signalled, if it must not.
pub fn protected_uid(uid: u32, local_uids: &HashSet<u32>) -> Option<&'static str> {
    if uid == 0 {
        Some("uid 0")
    } else if local_uids.contains(&uid) {
        Some("a local account's uid")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(users: &[(&str, u32)], logins: &[(&str, &[&str])]) -> Access {
        Access::new(
            users.iter().map(|(n, u)| (n.to_string(), *u)).collect(),
            logins
                .iter()
                .map(|(l, ps)| (l.to_string(), ps.iter().map(|p| p.to_string()).collect()))
                .collect(),
        )
    }

    fn session(pid: u32, user: &str, principals: &[&str]) -> SessionRecord {
        SessionRecord {
            pid,
            start_time: 1,
            user: user.into(),
            key_id: format!("smith:{user}"),
            serial: 1,
            principals: principals.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_user_served_no_more_is_lost_with_every_session_and_nobody_else() {
        let g1 = "smith-grant:1:login:alice";
        let g2 = "smith-grant:2:login:alice";
        let b = "smith-grant:1:login:bob";
        let before = access(
            &[("alice", 200001), ("bob", 200002)],
            &[("alice", &[g1, g2]), ("bob", &[b])],
        );
        // Alice loses grant 1 but keeps grant 2: only her session under grant 1 ends.
        let after = access(
            &[("alice", 200001), ("bob", 200002)],
            &[("alice", &[g2]), ("bob", &[b])],
        );
        let s = [
            session(10, "alice", &[g1]),
            session(11, "alice", &[g2]),
            session(12, "alice", &[g1, g2]),
            session(13, "bob", &[b]),
            session(14, "alice", &[]),
        ];
        assert_eq!(
            losses(&before, &after, &s),
            vec![Loss::Session(s[0].clone())]
        );
        // Bob removed: bob as a user, none of his sessions separately.
        let after = access(&[("alice", 200001)], &[("alice", &[g1, g2])]);
        assert_eq!(
            losses(&before, &after, &s),
            vec![Loss::User {
                name: "bob".into(),
                uid: 200002
            }]
        );
        // A uid that changes is a loss of the old uid.
        let after = access(
            &[("alice", 200009), ("bob", 200002)],
            &[("alice", &[g1, g2]), ("bob", &[b])],
        );
        assert_eq!(losses(&before, &after, &s).len(), 1);
        assert!(losses(&before, &before, &s).is_empty());
    }

    #[test]
    fn a_shared_login_session_ends_when_its_grant_no_longer_admits_the_person() {
        let d = "smith-grant:3:login:alice";
        let before = access(&[("alice", 200001)], &[("deploy", &[d])]);
        let after = access(&[("alice", 200001)], &[]);
        let s = [session(20, "deploy", &[d])];
        assert_eq!(
            losses(&before, &after, &s),
            vec![Loss::Session(s[0].clone())]
        );
    }

    #[test]
    fn the_guard_holds_new_epochs_and_mass_removals_only() {
        let g = Guard {
            hold_percent: 50,
            hold_min: 10,
        };
        assert_eq!(decide(OnRemoval::Terminate, g, 1, 1, false), Decision::End);
        assert_eq!(
            decide(OnRemoval::Terminate, g, 10, 12, false),
            Decision::End
        );
        assert!(matches!(
            decide(OnRemoval::Terminate, g, 11, 12, false),
            Decision::Hold(_)
        ));
        assert_eq!(
            decide(OnRemoval::Terminate, g, 11, 40, false),
            Decision::End
        );
        assert!(matches!(
            decide(OnRemoval::Terminate, g, 1, 100, true),
            Decision::Hold(_)
        ));
        assert_eq!(decide(OnRemoval::Keep, g, 11, 12, true), Decision::Keep);
    }

    #[test]
    fn local_and_root_uids_are_never_signalled() {
        let local: HashSet<u32> = [1000].into();
        assert!(protected_uid(0, &local).is_some());
        assert!(protected_uid(1000, &local).is_some());
        assert!(protected_uid(200001, &local).is_none());
    }

    #[test]
    fn status_lines_are_read_for_ids_and_zombies() {
        let me = std::process::id();
        let i = proc_info(Path::new("/proc"), me).unwrap();
        assert!(!i.zombie);
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert_eq!(i.uids[0], uid);
        assert!(count_uid(Path::new("/proc"), uid) >= 1);
    }
}
