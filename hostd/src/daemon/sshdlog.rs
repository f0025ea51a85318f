//! Following sshd's own log (`sshd_log` in host.toml) and spooling each accepted or
//! failed login as a `HostEvent::Sshd` (see [`crate::sshdlog`] for the grammar).
//!
//! Sources: a log file (followed by polling every [`POLL`]: rotation is noticed by a new
//! inode, the rest of the old file is read through the descriptor still open, then the
//! new file from its start; truncation by a size below our offset), or the journal
//! (`journalctl -f -o json _COMM=sshd _UID=0 + _COMM=sshd-session _UID=0`, resumed with
//! `--after-cursor`; each entry's trusted fields are checked again: issue 14, M1 — the
//! client-chosen `SYSLOG_IDENTIFIER` is never trusted, so `logger -t sshd` is not sshd). `auto` = the journal when journald runs (never for a relocated
//! `--root` host), else `/var/log/auth.log`, else `/var/log/secure`.
//!
//! Position: `/var/lib/smith/sshd-log.json` holds `{"path","inode","offset"}` or
//! `{"cursor"}`, written atomically after the events before it are in the spool, so a
//! restart neither skips nor records twice: a crash between the two re-reads the last
//! lines, but each event's id is derived from where it was read ([`line_id`]: inode,
//! offset and text of the line; [`cursor_id`]: the journal cursor), and the spool drops
//! an id it already has. A file seen for the first time is read from its start when
//! smaller than [`FIRST_READ_MAX`], else from its end.
//!
//! Owns: the position file. Must never: stop the daemon because the log is missing or
//! unreadable (it retries), or read a line before it is complete.

use super::Shared;
use crate::sshdlog::Parser;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use smith_proto::event::{EventId, HostEvent};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How often a log file is polled.
pub const POLL: Duration = Duration::from_millis(500);
/// A log file met for the first time is read from its start only below this size.
pub const FIRST_READ_MAX: u64 = 16 << 20;
/// Largest line considered (longer ones are skipped).
const MAX_LINE: usize = 64 * 1024;

/// Where the reader stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub inode: u64,
    #[serde(default)]
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

pub fn load_position(path: &Path) -> Option<Position> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn save_position(path: &Path, p: &Position) {
    if let Ok(b) = serde_json::to_vec(p) {
        if let Err(e) = crate::fsutil::atomic_write(path, &b, 0o600) {
            warn!(error = %e, "cannot persist the sshd log position");
        }
    }
}

/// What to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Journal,
    File(PathBuf),
    Off,
}

/// Resolves `sshd_log` for this host.
pub fn resolve_source(setting: &str, paths: &crate::paths::HostPaths) -> Source {
    let journald = Path::new("/run/systemd/journal/socket").exists() && !paths.is_relocated();
    match setting {
        "off" => Source::Off,
        "journal" => Source::Journal,
        "auto" => {
            if journald {
                return Source::Journal;
            }
            for p in ["/var/log/auth.log", "/var/log/secure"] {
                let eff = crate::paths::relocate(&paths.root, p);
                if eff.exists() {
                    return Source::File(eff);
                }
            }
            // Neither exists yet: auth.log is what Debian and the test fleet write.
            Source::File(crate::paths::relocate(&paths.root, "/var/log/auth.log"))
        }
        p => Source::File(crate::paths::relocate(&paths.root, p)),
    }
}

fn id_of(parts: &[&[u8]]) -> EventId {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut a = [0u8; 16];
    a.copy_from_slice(&d[..16]);
    EventId(u128::from_be_bytes(a))
}

/// The event id of the log line at `offset` of the file with `inode` (the text is part
/// of it: a file truncated and written again reuses offsets).
pub fn line_id(inode: u64, offset: u64, line: &str) -> EventId {
    id_of(&[
        b"sshd-log file",
        &inode.to_be_bytes(),
        &offset.to_be_bytes(),
        line.as_bytes(),
    ])
}

/// The event id of the journal entry at `cursor`.
pub fn cursor_id(cursor: &str) -> EventId {
    id_of(&[b"sshd-log journal", cursor.as_bytes()])
}

/// A complete line read from a log file, with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub id: EventId,
    pub text: String,
}

/// Follows one log file. Holds the open descriptor across rotations.
pub struct FileFollower {
    path: PathBuf,
    file: Option<(File, u64)>,
    offset: u64,
    partial: Vec<u8>,
}

impl FileFollower {
    /// Starts from a saved position when it is for this path and still valid.
    pub fn new(path: &Path, saved: Option<&Position>) -> FileFollower {
        let mut f = FileFollower {
            path: path.to_path_buf(),
            file: None,
            offset: 0,
            partial: Vec::new(),
        };
        if let Ok(file) = File::open(path) {
            if let Ok(meta) = file.metadata() {
                let saved = saved.filter(|p| p.path.as_deref() == Some(path));
                f.offset = match saved {
                    Some(p) if p.inode == meta.ino() && p.offset <= meta.len() => p.offset,
                    // Rotated while we were down: the new file from its start.
                    Some(_) => 0,
                    None if meta.len() <= FIRST_READ_MAX => 0,
                    None => meta.len(),
                };
                f.file = Some((file, meta.ino()));
            }
        }
        f
    }

    pub fn position(&self) -> Position {
        Position {
            path: Some(self.path.clone()),
            inode: self.file.as_ref().map(|(_, i)| *i).unwrap_or(0),
            offset: self.offset,
            cursor: None,
        }
    }

    /// Reads the complete lines that appeared since the last call (following rotation
    /// and truncation). The position advances past them.
    pub fn poll(&mut self) -> Vec<Line> {
        let mut lines = Vec::new();
        // Drain the descriptor we hold (which may be a rotated file by now).
        self.drain(&mut lines);
        if let Ok(meta) = std::fs::metadata(&self.path) {
            let same = self.file.as_ref().map(|(_, i)| *i) == Some(meta.ino());
            if !same {
                if let Ok(file) = File::open(&self.path) {
                    if self.file.is_some() {
                        info!(path = %self.path.display(), "sshd log rotated; following the new file");
                    }
                    let ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
                    self.file = Some((file, ino));
                    self.offset = 0;
                    self.partial.clear();
                    self.drain(&mut lines);
                }
            } else if meta.len() < self.offset {
                info!(path = %self.path.display(), "sshd log truncated; reading it from its start");
                self.offset = 0;
                self.partial.clear();
                self.drain(&mut lines);
            }
        }
        lines
    }

    fn drain(&mut self, lines: &mut Vec<Line>) {
        let Some((file, inode)) = self.file.as_mut() else {
            return;
        };
        let inode = *inode;
        if file
            .seek(SeekFrom::Start(self.offset + self.partial.len() as u64))
            .is_err()
        {
            return;
        }
        let mut buf = Vec::new();
        if file.take(8 << 20).read_to_end(&mut buf).is_err() {
            return;
        }
        self.partial.extend_from_slice(&buf);
        let mut start = 0;
        while let Some(i) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let line = &self.partial[start..start + i];
            if line.len() <= MAX_LINE {
                let text = String::from_utf8_lossy(line).into_owned();
                let id = line_id(inode, self.offset + start as u64, &text);
                lines.push(Line { id, text });
            }
            start += i + 1;
        }
        self.offset += start as u64;
        self.partial.drain(..start);
        if self.partial.len() > MAX_LINE {
            // A runaway line: skip it.
            self.offset += self.partial.len() as u64;
            self.partial.clear();
        }
    }
}

fn spool(shared: &Arc<Shared>, events: Vec<(EventId, HostEvent)>) -> bool {
    use super::events::{accept_from_log, AcceptError, SSHD_LOG_QUOTA_BYTES};
    for (id, ev) in events {
        match accept_from_log(shared, &ev, Some(id), SSHD_LOG_QUOTA_BYTES) {
            Ok(_) => {}
            // Dropped and counted: move on (waiting would stall the log for good).
            Err(AcceptError::OverQuota { .. }) => {}
            Err(e) => {
                warn!(error = %e, "cannot spool an sshd login event; will retry");
                return false;
            }
        }
    }
    true
}

pub async fn run(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let source = resolve_source(&shared.config.sshd_log, &shared.paths);
    info!(source = ?source, "reading sshd's log for logins");
    match source {
        Source::Off => {}
        Source::File(p) => follow_file(shared, p, shutdown).await,
        Source::Journal => follow_journal(shared, shutdown).await,
    }
}

async fn follow_file(shared: Arc<Shared>, path: PathBuf, mut shutdown: watch::Receiver<bool>) {
    let pos_file = shared.paths.sshd_log_position.clone();
    let saved = load_position(&pos_file);
    let mut follower = {
        let p = path.clone();
        match tokio::task::spawn_blocking(move || FileFollower::new(&p, saved.as_ref())).await {
            Ok(f) => f,
            Err(_) => return,
        }
    };
    let mut parser = Parser::new();
    let mut warned_missing = false;
    loop {
        let sh = shared.clone();
        let (f, p, ok) = match tokio::task::spawn_blocking(move || {
            let before = follower.position();
            let lines = follower.poll();
            let now = crate::now_unix();
            let events: Vec<(EventId, HostEvent)> = lines
                .iter()
                .filter_map(|l| Some((l.id, HostEvent::Sshd(parser.parse_line(&l.text, now)?))))
                .collect();
            let n = events.len();
            let ok = spool(&sh, events);
            if ok && follower.position() != before {
                save_position(&sh.paths.sshd_log_position, &follower.position());
            }
            if n > 0 {
                debug!(events = n, "sshd log events spooled");
            }
            (follower, parser, ok)
        })
        .await
        {
            Ok(r) => r,
            Err(_) => return,
        };
        follower = f;
        parser = p;
        if !ok {
            // Not spooled: do not move past these lines.
            let saved = load_position(&pos_file);
            follower = FileFollower::new(&path, saved.as_ref());
        }
        if !path.exists() && !warned_missing {
            warned_missing = true;
            info!(path = %path.display(), "sshd's log file does not exist (yet); waiting for it");
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One journal entry's message, time (Unix seconds) and cursor, if the entry is
/// sshd's: its trusted fields (`_COMM`, set from the kernel's view of the sender, and
/// `_UID`) must say an sshd process running as root. A user's `logger -t sshd` has
/// `SYSLOG_IDENTIFIER=sshd` but `_COMM=logger` and its own `_UID`; a copy of logger named
/// sshd still has the user's `_UID`.
pub fn journal_entry(line: &str) -> Option<(String, u64, String)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let comm = v.get("_COMM")?.as_str()?;
    let uid = v.get("_UID")?.as_str()?;
    if !crate::sshdlog::is_sshd_program(comm) || uid != "0" {
        return None;
    }
    let cursor = v.get("__CURSOR")?.as_str()?.to_string();
    let at = v
        .get("__REALTIME_TIMESTAMP")
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse::<u64>().ok())
        .map(|us| us / 1_000_000)
        .unwrap_or_else(crate::now_unix);
    let msg = match v.get("MESSAGE")? {
        serde_json::Value::String(s) => s.clone(),
        // Non-UTF-8 messages come as byte arrays.
        serde_json::Value::Array(a) => {
            let bytes: Vec<u8> = a
                .iter()
                .filter_map(|b| b.as_u64().map(|b| b as u8))
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => return None,
    };
    Some((msg, at, cursor))
}

async fn follow_journal(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    use tokio::io::AsyncBufReadExt;
    let pos_file = shared.paths.sshd_log_position.clone();
    let mut parser = Parser::new();
    loop {
        let cursor = load_position(&pos_file).and_then(|p| p.cursor);
        let mut cmd = tokio::process::Command::new("journalctl");
        cmd.args(["-f", "-o", "json", "--no-pager"]);
        match &cursor {
            Some(c) => {
                cmd.arg(format!("--after-cursor={c}"));
            }
            None => {
                cmd.args(["-n", "0"]);
            }
        }
        cmd.args(["_COMM=sshd", "_UID=0", "+", "_COMM=sshd-session", "_UID=0"]);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot run journalctl to read sshd's log; retrying in 30 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(30)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        let Some(stdout) = child.stdout.take() else {
            return;
        };
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        loop {
            let line = tokio::select! {
                l = lines.next_line() => l,
                _ = shutdown.changed() => return,
            };
            let Ok(Some(line)) = line else { break };
            let Some((msg, at, cur)) = journal_entry(&line) else {
                continue;
            };
            let id = cursor_id(&cur);
            let events: Vec<(EventId, HostEvent)> = parser
                .parse_message(&msg, at)
                .map(|e| (id, HostEvent::Sshd(e)))
                .into_iter()
                .collect();
            let sh = shared.clone();
            let pos = pos_file.clone();
            let ok = tokio::task::spawn_blocking(move || {
                let ok = spool(&sh, events);
                if ok {
                    save_position(
                        &pos,
                        &Position {
                            cursor: Some(cur),
                            ..Default::default()
                        },
                    );
                }
                ok
            })
            .await
            .unwrap_or(false);
            if !ok {
                break;
            }
        }
        let _ = child.kill().await;
        warn!("journalctl stopped; restarting it in 5 s");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(p: &Path, s: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
            .write_all(s.as_bytes())
            .unwrap();
    }

    fn texts(lines: Vec<Line>) -> Vec<String> {
        lines.into_iter().map(|l| l.text).collect()
    }

    #[test]
    fn follows_partial_lines_rotation_truncation_and_resumes() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("auth.log");
        append(&log, "one\ntw");
        let mut f = FileFollower::new(&log, None);
        assert_eq!(texts(f.poll()), vec!["one"]);
        assert_eq!(texts(f.poll()), Vec::<String>::new());
        append(&log, "o\nthree\n");
        let pos_two = f.position();
        let two_three = f.poll();
        assert_eq!(texts(two_three.clone()), vec!["two", "three"]);
        // A crash before the position was saved: the same lines again, with the same
        // ids (so the spool drops them).
        let mut again = FileFollower::new(&log, Some(&pos_two));
        assert_eq!(again.poll(), two_three);
        assert_ne!(two_three[0].id, two_three[1].id);
        // Restart from the saved position: nothing repeated, nothing skipped.
        let pos = f.position();
        append(&log, "four\n");
        let mut f = FileFollower::new(&log, Some(&pos));
        assert_eq!(texts(f.poll()), vec!["four"]);
        // Rotation: a last line lands in the old file after the rename.
        std::fs::rename(&log, d.path().join("auth.log.1")).unwrap();
        append(&d.path().join("auth.log.1"), "five\n");
        append(&log, "six\n");
        assert_eq!(texts(f.poll()), vec!["five", "six"]);
        // Truncation in place: offset 0 again, another line, another id.
        std::fs::write(&log, "").unwrap();
        append(&log, "7\n");
        let seven = f.poll();
        assert_eq!(texts(seven.clone()), vec!["7"]);
        let inode = std::fs::metadata(&log).unwrap().ino();
        assert_eq!(seven[0].id, line_id(inode, 0, "7"));
        assert_ne!(seven[0].id, line_id(inode, 0, "six"));
        // A saved position for a rotated-away inode: the new file from its start.
        let stale = Position {
            inode: 1,
            ..f.position()
        };
        let mut g = FileFollower::new(&log, Some(&stale));
        assert_eq!(g.poll(), seven);
        // Journal entries: one id per cursor.
        assert_eq!(cursor_id("s=1;i=2"), cursor_id("s=1;i=2"));
        assert_ne!(cursor_id("s=1;i=2"), cursor_id("s=1;i=3"));
    }

    #[test]
    fn journal_json_entries() {
        let l = r#"{"__CURSOR":"s=abc;i=1","__REALTIME_TIMESTAMP":"1700000000123456","_COMM":"sshd","_UID":"0","MESSAGE":"Accepted password for root from 10.0.0.1 port 2 ssh2"}"#;
        let (m, at, c) = journal_entry(l).unwrap();
        assert_eq!((at, c.as_str()), (1_700_000_000, "s=abc;i=1"));
        assert!(m.starts_with("Accepted password"));
        let l = r#"{"__CURSOR":"x","_COMM":"sshd-session","_UID":"0","MESSAGE":[65,66]}"#;
        assert_eq!(journal_entry(l).unwrap().0, "AB");
        assert!(journal_entry("not json").is_none());
    }

    /// M1: `logger -t sshd 'Accepted publickey for bob ...'` as a local user lands in
    /// the journal with SYSLOG_IDENTIFIER=sshd (chosen by the client), which the old
    /// filter (`_COMM=sshd + SYSLOG_IDENTIFIER=sshd`) let through and the reader took as
    /// sshd's. Only the trusted fields count now.
    #[test]
    fn forged_journal_entries_are_not_sshd() {
        let msg = "Accepted publickey for bob from 1.2.3.4 port 1 ssh2: ED25519-CERT SHA256:abc ID smith:bob:1 (serial 7) CA ED25519 SHA256:def";
        for (comm, uid) in [
            ("logger", "1000"),
            ("sshd", "1000"),
            ("logger", "0"),
            ("bash", "0"),
        ] {
            let l = serde_json::json!({"__CURSOR": "c", "_COMM": comm, "_UID": uid, "SYSLOG_IDENTIFIER": "sshd", "MESSAGE": msg}).to_string();
            assert!(journal_entry(&l).is_none(), "{comm} as uid {uid}");
        }
        let l = serde_json::json!({"__CURSOR": "c", "SYSLOG_IDENTIFIER": "sshd", "MESSAGE": msg})
            .to_string();
        assert!(journal_entry(&l).is_none(), "no trusted fields at all");
    }
}
