//! The record pam_smith keeps of each open SSH session of a Smith certificate, so that a
//! later `sudo` inside it is decided by the grants *that certificate* was issued under
//! (grant-bound), without asking hostd (which may be down: never lock out).
//!
//! pam_smith writes `<dir>/<pid>` at `open_session` (root, in sshd's session process),
//! and removes it at `close_session`. In sudo's account phase (root: sudo is setuid),
//! [`find`] walks from the sudo process up its ancestors to the first one with a record
//! whose start time matches the live process (a recycled pid is never mistaken for the
//! session). A user cannot move a process under someone else's session, and cannot write
//! the directory (root-owned, 0700; one that is not is not trusted).
//!
//! Must never: follow a symlink when writing, trust a record whose process is gone or
//! was replaced, or walk ancestors without bound.

use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Most ancestors walked from a sudo process to its session.
pub const MAX_DEPTH: usize = 64;
/// Records larger than this are not read.
const MAX_RECORD: u64 = 64 * 1024;

/// `(ppid, starttime)` of a process from `<proc_root>/<pid>/stat`.
pub fn proc_stat(proc_root: &Path, pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // "pid (comm) state ppid ..." — comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] = state (field 3), fields[1] = ppid (4), fields[19] = starttime (22).
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

/// One open session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// sshd's session process (where PAM opened the session).
    pub pid: u32,
    /// Its start time (clock ticks since boot, field 22 of `stat`).
    pub start_time: u64,
    pub user: String,
    pub key_id: String,
    pub serial: u64,
    /// The certificate's grant principals (`smith-grant:...`).
    pub principals: Vec<String>,
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl SessionRecord {
    pub fn render(&self) -> String {
        let mut s = format!(
            "pid {}\nstart {}\nuser {}\nkey_id {}\nserial {}\n",
            self.pid,
            self.start_time,
            clean(&self.user),
            clean(&self.key_id),
            self.serial
        );
        for p in &self.principals {
            s.push_str(&format!("principal {}\n", clean(p)));
        }
        s
    }

    pub fn parse(text: &str) -> Option<SessionRecord> {
        let mut r = SessionRecord {
            pid: 0,
            start_time: 0,
            user: String::new(),
            key_id: String::new(),
            serial: 0,
            principals: Vec::new(),
        };
        for line in text.lines() {
            let (k, v) = line.split_once(' ')?;
            match k {
                "pid" => r.pid = v.parse().ok()?,
                "start" => r.start_time = v.parse().ok()?,
                "user" => r.user = v.to_string(),
                "key_id" => r.key_id = v.to_string(),
                "serial" => r.serial = v.parse().ok()?,
                "principal" => r.principals.push(v.to_string()),
                _ => {}
            }
        }
        (r.pid != 0 && !r.user.is_empty()).then_some(r)
    }
}

/// Whether `dir` may be trusted: a directory (not a link) owned by root, that nobody
/// else can write.
fn trusted_dir(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0)
}

/// Writes `rec` as `<dir>/<pid>` (creating `dir` 0700 if missing), replacing an older
/// record of the same pid.
pub fn write(dir: &Path, rec: &SessionRecord) -> io::Result<()> {
    if !dir.exists() {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if !trusted_dir(dir) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a root-owned directory only root can write",
                dir.display()
            ),
        ));
    }
    let path = dir.join(rec.pid.to_string());
    let tmp = dir.join(format!(".{}.tmp", rec.pid));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let written = f
        .write_all(rec.render().as_bytes())
        .and_then(|()| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Removes the record of `pid`, if any.
pub fn remove(dir: &Path, pid: u32) {
    let _ = std::fs::remove_file(dir.join(pid.to_string()));
}

fn read(dir: &Path, pid: u32) -> Option<SessionRecord> {
    let path = dir.join(pid.to_string());
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.uid() != 0 || meta.len() > MAX_RECORD {
        return None;
    }
    SessionRecord::parse(&std::fs::read_to_string(path).ok()?)
}

/// Every record in `dir` (none when `dir` is not trusted), whether or not its process
/// still runs; at most `max` of them.
pub fn list(dir: &Path, max: usize) -> Vec<SessionRecord> {
    if !trusted_dir(dir) {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .take(max)
        .filter_map(|pid| read(dir, pid).filter(|r| r.pid == pid))
        .collect()
}

/// The session `pid` runs in: the record of `pid` or of its nearest ancestor whose
/// process is the one that opened the session.
pub fn find(dir: &Path, proc_root: &Path, pid: u32) -> Option<SessionRecord> {
    if !trusted_dir(dir) {
        return None;
    }
    let mut cur = pid;
    for _ in 0..MAX_DEPTH {
        let (ppid, start) = proc_stat(proc_root, cur)?;
        if let Some(rec) = read(dir, cur) {
            if rec.pid == cur && rec.start_time == start {
                return Some(rec);
            }
        }
        if ppid == 0 {
            return None;
        }
        cur = ppid;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_are_found_from_descendants_only_while_alive() {
        let d = tempfile_dir("sessionfile");
        let proc_root = d.join("proc");
        let fake = |pid: u32, ppid: u32, start: u64| {
            let p = proc_root.join(pid.to_string());
            std::fs::create_dir_all(&p).unwrap();
            let mut fields = vec!["S".to_string(), ppid.to_string()];
            fields.extend((0..17).map(|_| "0".to_string()));
            fields.push(start.to_string());
            std::fs::write(p.join("stat"), format!("{pid} (a b) {}", fields.join(" "))).unwrap();
        };
        fake(100, 1, 555); // sshd's session process
        fake(200, 100, 600); // the shell
        fake(300, 200, 700); // sudo
        fake(400, 1, 800); // elsewhere
        let dir = d.join("sessions");
        let rec = SessionRecord {
            pid: 100,
            start_time: 555,
            user: "alice".into(),
            key_id: "smith:alice:1\nforged".into(),
            serial: 9,
            principals: vec!["smith-grant:2:sudo:alice".into()],
        };
        write(&dir, &rec).unwrap();
        let found = find(&dir, &proc_root, 300);
        if nix_is_root() {
            let found = found.unwrap();
            assert_eq!(found.principals, rec.principals);
            assert_eq!(found.key_id, "smith:alice:1 forged");
            assert_eq!(find(&dir, &proc_root, 400), None);
            // The session process was replaced (a recycled pid): not the session.
            fake(100, 1, 556);
            assert_eq!(find(&dir, &proc_root, 300), None);
            fake(100, 1, 555);
            // A directory others can write is not trusted.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            assert_eq!(find(&dir, &proc_root, 300), None);
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            remove(&dir, 100);
            assert_eq!(find(&dir, &proc_root, 300), None);
        } else {
            // Not root: the directory is not root's, so nothing is trusted.
            assert_eq!(found, None);
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    fn nix_is_root() -> bool {
        // Our effective uid, read through /proc (no libc call needed).
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(2) == Some("0"))
            })
            .unwrap_or(false)
    }

    fn tempfile_dir(label: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("smith-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
