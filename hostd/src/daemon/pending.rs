//! Ingestion of pending event files: pam_smith drops one `*.evt` file per event
//! (`wire::encode_event`) into `/var/lib/smith/pending/` when hostd is unreachable (into
//! the spare `/run/smith/pending/`, beside the socket, when that file system is full);
//! hostd spools and deletes them, from both, at start and every few seconds.
//!
//! Owns: validating those files (regular file, owned by root, bounded size, decodes)
//! and moving bad ones aside to `pending/bad/`. Must never: crash or stop on a bad
//! file, follow a symlink, delete a file before its event is in the spool, or discard
//! a file that may still be being written (undecodable files younger than
//! [`GRACE`] are retried on the next round).

use super::Shared;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::{info, warn};

/// Largest pending file accepted.
pub const MAX_EVENT_FILE: u64 = 64 * 1024;
/// An undecodable file younger than this may still be being written.
pub const GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub ingested: usize,
    pub bad: usize,
    pub deferred: usize,
}

pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(super::PENDING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let sh = shared.clone();
        let dirs = [
            shared.paths.pending_dir.clone(),
            smith_proto::paths::spare_pending_dir(&shared.paths.socket),
        ];
        let report = tokio::task::spawn_blocking(move || {
            let mut total = Report::default();
            for dir in &dirs {
                let r = ingest(dir, |id, ev| {
                    super::events::accept(&sh, ev, "pending", None, id).map(|_| ())
                });
                total.ingested += r.ingested;
                total.bad += r.bad;
                total.deferred += r.deferred;
            }
            total
        })
        .await
        .unwrap_or_default();
        if report.ingested > 0 || report.bad > 0 {
            info!(
                ingested = report.ingested,
                bad = report.bad,
                deferred = report.deferred,
                "pending event files processed"
            );
        }
    }
}

fn move_aside(dir: &Path, name: &str, why: &str) {
    let bad = dir.join("bad");
    let _ = crate::fsutil::create_dirs(&bad, 0o700);
    match fs::rename(dir.join(name), bad.join(name)) {
        Ok(()) => warn!(
            file = name,
            reason = why,
            "bad pending event file moved to pending/bad/"
        ),
        Err(e) => {
            warn!(file = name, reason = why, error = %e, "bad pending event file could not be moved aside; removing it");
            let _ = fs::remove_file(dir.join(name));
        }
    }
}

/// Processes every `*.evt` file in `dir` in name order (pam_smith names them by time).
/// `accept` gets the event and its id (the end of the file's name, when it is one); it
/// must durably record the event (or know it is recorded already); the file is deleted
/// only after it did.
pub fn ingest(
    dir: &Path,
    mut accept: impl FnMut(
        Option<smith_proto::event::EventId>,
        &smith_proto::event::HostEvent,
    ) -> std::io::Result<()>,
) -> Report {
    let mut report = Report::default();
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(_) => return report,
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".evt") && !n.starts_with('.'))
        .collect();
    names.sort();
    let euid = nix::unistd::geteuid().as_raw();
    for name in names {
        let path = dir.join(&name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if !meta.file_type().is_file() {
            move_aside(dir, &name, "not a regular file");
            report.bad += 1;
            continue;
        }
        if meta.uid() != euid && meta.uid() != 0 {
            move_aside(dir, &name, "not written by root");
            report.bad += 1;
            continue;
        }
        if meta.len() > MAX_EVENT_FILE {
            move_aside(dir, &name, "too large");
            report.bad += 1;
            continue;
        }
        let mut bytes = Vec::new();
        let read = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
            .and_then(|f| f.take(MAX_EVENT_FILE + 1).read_to_end(&mut bytes));
        if read.is_err() {
            continue;
        }
        match smith_proto::wire::decode_event(&bytes) {
            Ok(ev) => match accept(smith_proto::wire::pending_file_id(&name), &ev) {
                Ok(()) => {
                    let _ = fs::remove_file(&path);
                    report.ingested += 1;
                }
                Err(e) => {
                    warn!(error = %e, "cannot spool pending events now; will retry");
                    break;
                }
            },
            Err(e) => {
                let young = meta
                    .modified()
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .is_none_or(|age| age < GRACE);
                if young {
                    report.deferred += 1;
                } else {
                    move_aside(dir, &name, &format!("cannot decode: {e}"));
                    report.bad += 1;
                }
            }
        }
    }
    if report.ingested > 0 {
        let _ = crate::fsutil::fsync_dir(&dir.join("x"));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use smith_proto::event::{DeniedEvent, EventId, HostEvent};

    #[test]
    fn good_bad_and_young_files() {
        let d = tempfile::tempdir().unwrap();
        let ev = HostEvent::Denied(DeniedEvent {
            user: "alice".into(),
            service: "sshd".into(),
            rhost: String::new(),
            reason: "r".into(),
            key_id: String::new(),
            at_unix: 5,
        });
        let named = format!("1-1-{}.evt", EventId(9));
        fs::write(d.path().join(&named), smith_proto::wire::encode_event(&ev)).unwrap();
        fs::write(
            d.path().join("1-2-0123456789abcdef.evt"),
            smith_proto::wire::encode_event(&ev),
        )
        .unwrap();
        fs::write(d.path().join("2-1-b.evt"), b"garbage").unwrap();
        fs::write(d.path().join("ignored.txt"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("3-1-c.evt")).unwrap();
        let mut got = Vec::new();
        let r = ingest(d.path(), |id, e| {
            got.push((id, e.clone()));
            Ok(())
        });
        // The id comes from the name; an earlier version's name has none.
        assert_eq!(got, vec![(Some(EventId(9)), ev.clone()), (None, ev)]);
        // The garbage file is young: deferred, not yet moved. The symlink is bad.
        assert_eq!((r.ingested, r.bad, r.deferred), (2, 1, 1));
        assert!(!d.path().join(&named).exists());
        assert!(d.path().join("bad/3-1-c.evt").symlink_metadata().is_ok());
        // Age the garbage file: now it is moved aside.
        let old = SystemTime::now() - Duration::from_secs(60);
        let f = fs::File::options()
            .write(true)
            .open(d.path().join("2-1-b.evt"))
            .unwrap();
        f.set_modified(old).unwrap();
        let r = ingest(d.path(), |_, _| Ok(()));
        assert_eq!((r.ingested, r.bad, r.deferred), (0, 1, 0));
        assert!(d.path().join("bad/2-1-b.evt").exists());
        assert!(d.path().join("ignored.txt").exists());
    }

    #[test]
    fn spool_failure_keeps_the_file() {
        let d = tempfile::tempdir().unwrap();
        let ev = HostEvent::Denied(DeniedEvent {
            user: "a".into(),
            service: "s".into(),
            rhost: String::new(),
            reason: String::new(),
            key_id: String::new(),
            at_unix: 1,
        });
        fs::write(d.path().join("1.evt"), smith_proto::wire::encode_event(&ev)).unwrap();
        let r = ingest(d.path(), |_, _| Err(std::io::Error::other("disk full")));
        assert_eq!(r.ingested, 0);
        assert!(d.path().join("1.evt").exists());
    }
}
