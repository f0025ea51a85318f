//! The host audit spool: every accepted [`HostEvent`] is appended, durably, to
//! `spool/events.jsonl` (one JSON record per line) with a per-host sequence number.
//!
//! Owns: the spool file format and the sequence counter. Must never: acknowledge an
//! event before it is on disk (fsync), or rewrite a record once written.
//!
//! Seam for the audit issue: records will gain the SHA-256 of the previous record
//! (hash chain) and an uploader will send them to the CA in order and delete only what
//! the CA acknowledged; keep both here.

use serde::{Deserialize, Serialize};
use smith_proto::event::HostEvent;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const SPOOL_FILE: &str = "events.jsonl";

/// One line of the spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolRecord {
    pub seq: u64,
    /// When hostd accepted the event (Unix seconds).
    pub received_at: u64,
    /// `socket` or `pending` (an `.evt` file pam_smith left while hostd was down).
    pub via: String,
    pub event: HostEvent,
}

pub struct Spool {
    path: PathBuf,
    file: File,
    next_seq: u64,
}

impl Spool {
    /// Opens (creating `dir` 0700 and the file 0600) and finds the next sequence number.
    /// A torn last line (crash during a write, never acknowledged) is cut off.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        crate::fsutil::create_dirs(dir, 0o700)?;
        let path = dir.join(SPOOL_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        let mut text = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut text)?;
        let complete = match text.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        if complete < text.len() {
            file.set_len(complete as u64)?;
            file.sync_all()?;
        }
        let last_seq = text[..complete]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice::<SpoolRecord>(l).ok())
            .map(|r| r.seq)
            .max()
            .unwrap_or(0);
        Ok(Spool {
            path,
            file,
            next_seq: last_seq + 1,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` and fsyncs; returns its sequence number.
    pub fn append(&mut self, event: &HostEvent, via: &str) -> io::Result<u64> {
        let rec = SpoolRecord {
            seq: self.next_seq,
            received_at: crate::now_unix(),
            via: via.to_string(),
            event: event.clone(),
        };
        let mut line = serde_json::to_vec(&rec).map_err(io::Error::other)?;
        line.push(b'\n');
        let before = self.file.metadata()?.len();
        if let Err(e) = self
            .file
            .write_all(&line)
            .and_then(|_| self.file.sync_data())
        {
            // Do not leave a torn line behind for the next append.
            let _ = self.file.set_len(before);
            return Err(e);
        }
        self.next_seq += 1;
        Ok(rec.seq)
    }
}

/// Reads every record (for tests and `status`).
pub fn read_all(dir: &Path) -> io::Result<Vec<SpoolRecord>> {
    let text = match fs::read(dir.join(SPOOL_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use smith_proto::event::DeniedEvent;

    fn ev(user: &str) -> HostEvent {
        HostEvent::Denied(DeniedEvent {
            user: user.into(),
            service: "sshd".into(),
            rhost: "10.0.0.1".into(),
            reason: "no grant".into(),
            key_id: String::new(),
            at_unix: 1,
        })
    }

    #[test]
    fn sequence_survives_reopen_and_torn_lines() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path()).unwrap();
        assert_eq!(s.append(&ev("a"), "socket").unwrap(), 1);
        assert_eq!(s.append(&ev("b"), "pending").unwrap(), 2);
        drop(s);
        // Simulate a crash in the middle of a write.
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.path().join(SPOOL_FILE))
            .unwrap();
        f.write_all(b"{\"seq\":3,\"rece").unwrap();
        drop(f);
        let mut s = Spool::open(d.path()).unwrap();
        assert_eq!(s.append(&ev("c"), "socket").unwrap(), 3);
        let all = read_all(d.path()).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(all[2].event.user(), "c");
        assert_eq!(
            crate::fsutil::mode_of(&d.path().join(SPOOL_FILE)),
            Some(0o600)
        );
    }
}
