//! The session table: which certificate opened each live SSH session, so that a later
//! sudo inside that session can be attributed to the certificate's key ID.
//!
//! pam_smith reports `HostEvent::Session` open/close with `pid` = the sshd process that
//! ran PAM (the per-connection privileged sshd). A sudo runs in a descendant of that
//! process (sshd → sshd user@pts → shell → sudo), so hostd walks `/proc/<pid>/stat`
//! parents from the sudo process up to a pid in this table. Each entry also keeps the
//! session process's start time (field 22 of `stat`) so that a recycled pid is never
//! mistaken for the session.
//!
//! Persisted as `/var/lib/smith/sessions.json` (0600, replaced atomically, not fsynced:
//! nothing in it outlives a reboot) so a hostd restart keeps it; entries whose process
//! is gone are dropped at load.
//!
//! Owns: the table and the `/proc` walk. Must never: trust anything but `/proc` and
//! root-sent session events, or fail an event because the table cannot be written.

use serde::{Deserialize, Serialize};
use smith_proto::event::{HostEvent, SessionPhase, SudoEvent};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Most parents walked from a sudo process.
const MAX_DEPTH: usize = 32;
/// Most sessions kept (oldest dropped beyond).
const MAX_SESSIONS: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub user: String,
    pub key_id: String,
    pub serial: Option<u64>,
    pub opened_at: u64,
    /// Start time of the session process (clock ticks since boot), 0 if unknown.
    pub start_time: u64,
}

#[derive(Debug)]
pub struct SessionTable {
    path: PathBuf,
    proc_root: PathBuf,
    sessions: BTreeMap<u32, SessionInfo>,
}

pub use smith_proto::sessionfile::proc_stat;

impl SessionTable {
    /// Loads the table (missing or unreadable file: empty), dropping sessions whose
    /// process no longer exists.
    pub fn load(path: &Path, proc_root: &Path) -> SessionTable {
        let sessions: BTreeMap<u32, SessionInfo> = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut t = SessionTable {
            path: path.to_path_buf(),
            proc_root: proc_root.to_path_buf(),
            sessions,
        };
        let before = t.sessions.len();
        let root = t.proc_root.clone();
        t.sessions
            .retain(|pid, s| Self::alive(&root, *pid, s.start_time));
        if t.sessions.len() != before {
            t.save();
        }
        t
    }

    fn alive(proc_root: &Path, pid: u32, start_time: u64) -> bool {
        match proc_stat(proc_root, pid) {
            Some((_, st)) => start_time == 0 || st == start_time,
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<&SessionInfo> {
        self.sessions.get(&pid)
    }

    fn save(&self) {
        let bytes = match serde_json::to_vec(&self.sessions) {
            Ok(b) => b,
            Err(_) => return,
        };
        // Atomic but not fsynced: the table only describes live processes, none of which
        // survives the machine going down, while a hostd restart finds the file in the
        // page cache. (The audit record itself is in the spool, fsynced before the ack.)
        if let Err(e) = crate::fsutil::atomic_write_with(
            &self.path,
            &bytes,
            0o600,
            crate::fsutil::Durability::AtomicOnly,
        ) {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot persist the session table");
        }
    }

    /// Notes an SSH session opening or closing. Returns whether the table changed.
    pub fn observe(&mut self, ev: &HostEvent) -> bool {
        let HostEvent::Session(s) = ev else {
            return false;
        };
        if s.service != "sshd" || s.pid <= 1 {
            return false;
        }
        match s.phase {
            SessionPhase::Open => {
                let start_time = proc_stat(&self.proc_root, s.pid)
                    .map(|(_, st)| st)
                    .unwrap_or(0);
                if self.sessions.len() >= MAX_SESSIONS {
                    if let Some(oldest) = self
                        .sessions
                        .iter()
                        .min_by_key(|(_, v)| v.opened_at)
                        .map(|(k, _)| *k)
                    {
                        self.sessions.remove(&oldest);
                    }
                }
                self.sessions.insert(
                    s.pid,
                    SessionInfo {
                        user: s.user.clone(),
                        key_id: s.key_id.clone(),
                        serial: s.serial,
                        opened_at: s.at_unix,
                        start_time,
                    },
                );
            }
            SessionPhase::Close => {
                if self.sessions.remove(&s.pid).is_none() {
                    return false;
                }
            }
        }
        self.save();
        true
    }

    /// The session `pid` runs in: `pid` itself or its nearest ancestor in the table.
    pub fn session_of(&self, pid: u32) -> Option<(u32, &SessionInfo)> {
        let mut cur = pid;
        for _ in 0..MAX_DEPTH {
            if cur <= 1 {
                return None;
            }
            let stat = proc_stat(&self.proc_root, cur);
            if let Some(s) = self.sessions.get(&cur) {
                let live = stat.map(|(_, st)| st);
                if s.start_time == 0 || live == Some(s.start_time) {
                    return Some((cur, s));
                }
            }
            cur = stat?.0;
        }
        None
    }

    /// Fills a sudo event's `key_id` from the session of `pid` (the sudo process: the
    /// socket peer, or the event's own pid for pending files), when the session belongs
    /// to the same user. Returns whether it was filled.
    pub fn fill_sudo(&self, ev: &mut SudoEvent, pid: u32) -> bool {
        if !ev.key_id.is_empty() {
            return false;
        }
        match self.session_of(pid) {
            Some((_, s)) if s.user == ev.user && !s.key_id.is_empty() => {
                ev.key_id = s.key_id.clone();
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smith_proto::event::SessionEvent;

    fn fake_proc(dir: &Path, pid: u32, ppid: u32, start: u64, comm: &str) {
        let d = dir.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        let mut fields = vec!["S".to_string(), ppid.to_string()];
        fields.extend((0..17).map(|_| "0".to_string()));
        fields.push(start.to_string());
        fields.push("0".into());
        std::fs::write(
            d.join("stat"),
            format!("{pid} ({comm}) {}\n", fields.join(" ")),
        )
        .unwrap();
    }

    fn session(phase: SessionPhase, pid: u32, user: &str, key: &str) -> HostEvent {
        HostEvent::Session(SessionEvent {
            phase,
            user: user.into(),
            service: "sshd".into(),
            rhost: "10.0.0.1".into(),
            tty: "ssh".into(),
            pid,
            key_id: key.into(),
            serial: Some(9),
            at_unix: 1,
            duration_secs: None,
        })
    }

    fn sudo(user: &str, pid: u32) -> SudoEvent {
        SudoEvent {
            user: user.into(),
            target: "root".into(),
            command: "/usr/bin/id -u".into(),
            cwd: "/".into(),
            tty: "pts/0".into(),
            allowed: true,
            reason: String::new(),
            pid,
            key_id: String::new(),
            at_unix: 2,
        }
    }

    #[test]
    fn real_proc_stat_parses() {
        let me = std::process::id();
        let (ppid, start) = proc_stat(Path::new("/proc"), me).unwrap();
        assert!(ppid > 0 && start > 0);
    }

    #[test]
    fn sudo_is_attributed_through_parents_and_survives_reload() {
        let d = tempfile::tempdir().unwrap();
        let proc_root = d.path().join("proc");
        // sshd (100) -> sshd user (101) -> "weird) (shell" (102) -> sudo (103)
        fake_proc(&proc_root, 100, 1, 5000, "sshd");
        fake_proc(&proc_root, 101, 100, 5001, "sshd");
        fake_proc(&proc_root, 102, 101, 5002, "weird) (shell");
        fake_proc(&proc_root, 103, 102, 5003, "sudo");
        fake_proc(&proc_root, 200, 1, 6000, "cron");
        let file = d.path().join("sessions.json");
        let mut t = SessionTable::load(&file, &proc_root);
        assert!(t.observe(&session(SessionPhase::Open, 100, "oscar", "smith:oscar:1")));
        let mut e = sudo("oscar", 103);
        assert!(t.fill_sudo(&mut e, 103));
        assert_eq!(e.key_id, "smith:oscar:1");
        // Another user's sudo in that tree, or a process outside it: not attributed.
        let mut e = sudo("alice", 103);
        assert!(!t.fill_sudo(&mut e, 103));
        let mut e = sudo("oscar", 200);
        assert!(!t.fill_sudo(&mut e, 200));

        // Restart: the table is back.
        let t2 = SessionTable::load(&file, &proc_root);
        assert_eq!(t2.get(100).unwrap().key_id, "smith:oscar:1");
        // pid 100 recycled by another process: no longer the session.
        fake_proc(&proc_root, 100, 1, 9999, "sshd");
        let mut e = sudo("oscar", 103);
        assert!(!t2.fill_sudo(&mut e, 103));
        let t3 = SessionTable::load(&file, &proc_root);
        assert!(t3.is_empty(), "recycled pid kept at load");

        // Close removes it.
        fake_proc(&proc_root, 100, 1, 5000, "sshd");
        let mut t = SessionTable::load(&file, &proc_root);
        t.observe(&session(SessionPhase::Open, 100, "oscar", "k"));
        assert!(t.observe(&session(SessionPhase::Close, 100, "oscar", "k")));
        assert!(SessionTable::load(&file, &proc_root).is_empty());
    }
}
