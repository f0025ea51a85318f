//! Getting an audit event to hostd: over the socket (`wire::Request::Event`, answered by
//! `Response::Ack` once the event is durably spooled), or, when hostd does not answer,
//! as a pending file hostd ingests later.
//!
//! Owns: the exchange with hostd through the shared bounded client (`smith_proto::client`:
//! non-blocking connect with a 100 ms bound, the peer must be root, sends with
//! `MSG_NOSIGNAL`, the whole exchange within [`SOCKET_BUDGET_MS`]) and the pending
//! file protocol: `PENDING_DIR/<unix_ns>-<pid>-<random>.evt` containing
//! `wire::encode_event`, mode 0600, written under a hidden temporary name
//! (`.<name>.tmp`, `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`), fsynced, then published with
//! `linkat` (never replaces an existing file) and the directory fsynced, so hostd,
//! which reads only `*.evt`, never sees a partial file.
//!
//! When the pending directory cannot take the file (its file system full, issue 18), the
//! event goes to the spare queue `smith_proto::paths::spare_pending_dir` (`pending` beside
//! the socket: `/run/smith/pending`, in memory), which hostd reads too.
//!
//! Must never: fail or stall the session because of logging (every error ends in
//! [`Delivery::Lost`] with a reason the caller logs), follow a symlink for the pending
//! directory, or raise SIGPIPE.
//!
//! Every event gets one random [`EventId`] before the first attempt, and both paths
//! carry it (the socket request, and the pending file's name): if hostd spooled the event
//! but its Ack did not arrive in time, the pending copy has the same id and hostd drops
//! it, as long as it still remembers the id (the last 8,192 events; see hostd's spool).
//! A hostd of an earlier version refuses the request with an id as `BadRequest`; the
//! event is then sent without one (and may be duplicated as before).

use smith_proto::client;
use smith_proto::event::{EventId, HostEvent};
use smith_proto::wire::{self, Request, Response};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Budget for one socket exchange (connect + send + Ack). A healthy hostd answers in
/// about a millisecond (one group-committed fsync); an Ack that comes later is harmless
/// (the pending copy has the same id). It was 1 s until issue 18's fault matrix measured
/// a login at 1.3 s and a login with a sudo at 2.3 s with hostd frozen.
pub const SOCKET_BUDGET_MS: u64 = 300;

/// After an exchange timed out, pam_smith processes queue without asking hostd for this
/// long (the quiet file beside the socket, see [`hostd_quiet`]).
pub const QUIET_SECS: i64 = 5;

/// The quiet file's name, in the socket's directory (`/run/smith`, root's).
pub const QUIET_FILE: &str = "hostd-quiet";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// hostd spooled it under this sequence number.
    Sent(u64),
    /// Written for hostd to pick up; the socket error is kept for the log.
    Queued { file: PathBuf, socket_error: String },
    /// Neither worked (the event is in the syslog line the caller writes).
    Lost(String),
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn cpath(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{p:?} contains NUL"))
}

/// Sends `ev` to hostd; `Ok(seq)` once hostd acknowledged it. A hostd of an earlier
/// version answers the request with an id `BadRequest` (it does not know the kind and
/// recorded nothing): the event is sent again without the id, within the same budget.
pub fn send(socket: &Path, id: EventId, ev: &HostEvent) -> Result<u64, String> {
    send_event(socket, id, ev).map_err(|r| match r {
        Refusal::BadRequest(m) | Refusal::TimedOut(m) | Refusal::Other(m) => m,
    })
}

fn send_event(socket: &Path, id: EventId, ev: &HostEvent) -> Result<u64, Refusal> {
    let deadline = client::monotonic_ms() + SOCKET_BUDGET_MS;
    match exchange(socket, deadline, Some(id), ev) {
        Err(Refusal::BadRequest(_)) => exchange(socket, deadline, None, ev),
        other => other,
    }
}

enum Refusal {
    /// hostd answered `ErrorCode::BadRequest`.
    BadRequest(String),
    /// hostd (or whoever holds the socket) did not answer within the budget.
    TimedOut(String),
    Other(String),
}

fn quiet_path(socket: &Path) -> Option<PathBuf> {
    socket.parent().map(|d| d.join(QUIET_FILE))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether a pam_smith process found hostd not answering less than [`QUIET_SECS`] ago:
/// the quiet file beside the socket is a regular file of root's, touched that recently.
/// (Only root can write in the socket's directory; a file of anyone else is ignored.)
pub fn hostd_quiet(socket: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(p) = quiet_path(socket) else {
        return false;
    };
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.file_type().is_file() && m.uid() == 0 => {
            let age = now_secs() - m.mtime();
            (0..QUIET_SECS).contains(&age)
        }
        _ => false,
    }
}

/// Touches the quiet file (created 0644 if missing, never through a symlink).
fn mark_quiet(socket: &Path) {
    let Some(Ok(c)) = quiet_path(socket).map(|p| cpath(&p)) else {
        return;
    };
    // SAFETY: NUL-terminated path; O_NOFOLLOW refuses a symlink.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd >= 0 {
        // SAFETY: freshly opened, owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a valid descriptor; a null `times` sets both times to now.
        unsafe { libc::futimens(fd.as_raw_fd(), std::ptr::null()) };
    }
}

/// Removes the quiet file: hostd answered.
fn clear_quiet(socket: &Path) {
    if let Some(p) = quiet_path(socket) {
        if std::fs::symlink_metadata(&p).is_ok() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn exchange(
    socket: &Path,
    deadline_ms: u64,
    id: Option<EventId>,
    ev: &HostEvent,
) -> Result<u64, Refusal> {
    let req = Request::Event {
        id,
        event: ev.clone(),
    };
    // The shared client: bounded connect, the peer must be root (D16: whoever else
    // listens at the path neither reads sudo command lines nor acknowledges them away).
    let answer = client::Conn::connect(socket, deadline_ms)
        .and_then(|mut c| c.roundtrip(&req.encode()))
        .map_err(|e| {
            let m = format!("hostd at {}: {e}", socket.display());
            match e {
                client::TransportError::TimedOut => Refusal::TimedOut(m),
                _ => Refusal::Other(m),
            }
        });
    match answer {
        Ok(Response::Ack(seq)) => Ok(seq),
        Ok(Response::Error { code, message }) => {
            let m = format!("hostd refused the event ({code:?}): {message}");
            Err(match code {
                wire::ErrorCode::BadRequest => Refusal::BadRequest(m),
                _ => Refusal::Other(m),
            })
        }
        Ok(other) => Err(Refusal::Other(format!(
            "unexpected answer from hostd: {other:?}"
        ))),
        Err(e) => Err(e),
    }
}

/// A fresh random event id (the kernel's CSPRNG; if it cannot answer at once, the
/// time in ns, the pid and a per-process counter, which still never repeat on a host).
pub fn new_event_id() -> EventId {
    let mut b = [0u8; 16];
    // SAFETY: `b` is valid for 16 bytes of writes.
    let n = unsafe {
        libc::getrandom(
            b.as_mut_ptr() as *mut libc::c_void,
            b.len(),
            libc::GRND_NONBLOCK,
        )
    };
    if n == b.len() as isize {
        return EventId(u128::from_ne_bytes(b));
    }
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    EventId(((ns as u128) << 64) | ((std::process::id() as u128) << 32) | count as u128)
}

/// Creates `dir` (0700) if missing; its parent is created 0755 if missing (it is
/// `/var/lib/smith`, which every process reads the cache from).
fn ensure_dir(dir: &Path) -> Result<(), String> {
    // The mode is set explicitly after creation: the caller's umask (sudo's, sshd's)
    // must not decide it (D18).
    let make = |d: &Path, mode: libc::mode_t| -> Result<(), String> {
        let c = cpath(d)?;
        // SAFETY: NUL-terminated path.
        if unsafe { libc::mkdir(c.as_ptr(), mode) } == 0 {
            // SAFETY: NUL-terminated path of the directory we just created.
            unsafe { libc::chmod(c.as_ptr(), mode) };
        } else if errno() != libc::EEXIST {
            return Err(os_err(&format!("mkdir {}", d.display())));
        }
        Ok(())
    };
    if let Some(parent) = dir.parent() {
        make(parent, 0o755)?;
    }
    make(dir, 0o700)
}

/// Writes `ev` as a new pending file in `dir`; returns its path. The id is the end of the
/// file's name (`<ns>-<pid>-<id>.evt`); the content is the format every hostd version
/// reads.
pub fn queue(dir: &Path, id: EventId, ev: &HostEvent) -> Result<PathBuf, String> {
    ensure_dir(dir)?;
    let cdir = cpath(dir)?;
    // SAFETY: NUL-terminated path; O_NOFOLLOW refuses a symlinked directory.
    let dfd = unsafe {
        libc::open(
            cdir.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if dfd < 0 {
        return Err(os_err(&format!("open {}", dir.display())));
    }
    // SAFETY: freshly opened, owned here.
    let dfd = unsafe { OwnedFd::from_raw_fd(dfd) };
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = format!("{ns}-{}-{id}.evt", std::process::id());
    let tmp = CString::new(format!(".{name}.tmp")).map_err(|e| e.to_string())?;
    let fin = CString::new(name.clone()).map_err(|e| e.to_string())?;
    // SAFETY: valid dirfd and NUL-terminated relative name.
    let fd = unsafe {
        libc::openat(
            dfd.as_raw_fd(),
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(os_err("create pending event file"));
    }
    // SAFETY: freshly opened, owned here.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let unlink_tmp = || {
        // SAFETY: valid dirfd and name.
        unsafe { libc::unlinkat(dfd.as_raw_fd(), tmp.as_ptr(), 0) };
    };
    if let Err(e) = f
        .write_all(&wire::encode_event(ev))
        .and_then(|_| f.sync_all())
    {
        unlink_tmp();
        return Err(format!("write pending event: {e}"));
    }
    drop(f);
    // SAFETY: valid dirfd and names; linkat never replaces an existing file.
    let rc = unsafe {
        libc::linkat(
            dfd.as_raw_fd(),
            tmp.as_ptr(),
            dfd.as_raw_fd(),
            fin.as_ptr(),
            0,
        )
    };
    let link_err = (rc != 0).then(|| os_err("publish pending event file"));
    unlink_tmp();
    if let Some(e) = link_err {
        return Err(e);
    }
    // SAFETY: valid fd.
    unsafe { libc::fsync(dfd.as_raw_fd()) };
    Ok(dir.join(name))
}

/// Sends, else queues, both under one new event id.
pub fn deliver(socket: &Path, pending: &Path, ev: &HostEvent) -> Delivery {
    let id = new_event_id();
    let sent = if hostd_quiet(socket) {
        Err(format!(
            "smith-hostd did not answer another pam_smith less than {QUIET_SECS} s ago; queued without asking"
        ))
    } else {
        match send_event(socket, id, ev) {
            Ok(seq) => {
                clear_quiet(socket);
                Ok(seq)
            }
            Err(Refusal::TimedOut(m)) => {
                mark_quiet(socket);
                Err(m)
            }
            Err(Refusal::BadRequest(m) | Refusal::Other(m)) => Err(m),
        }
    };
    match sent {
        Ok(seq) => Delivery::Sent(seq),
        Err(socket_error) => match queue(pending, id, ev) {
            Ok(file) => Delivery::Queued { file, socket_error },
            // Its file system full (issue 18: every event was lost while /var/lib/smith
            // was): the spare queue beside the socket, in memory.
            Err(e) => {
                let spare = smith_proto::paths::spare_pending_dir(socket);
                match queue(&spare, id, ev) {
                    Ok(file) => Delivery::Queued {
                        file,
                        socket_error: format!("{socket_error}; {e}"),
                    },
                    Err(e2) => Delivery::Lost(format!("{socket_error}; and {e}; and {e2}")),
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smith_proto::event::DeniedEvent;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    /// A fake hostd on `sock` for `conns` connections: reads one frame on each, waits
    /// `delay`, writes `reply(frame)` (the client may be gone). Returns the frames read.
    fn fake_hostd(
        sock: &Path,
        conns: usize,
        delay: Duration,
        reply: impl Fn(&[u8]) -> Response + Send + 'static,
    ) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
        let l = std::os::unix::net::UnixListener::bind(sock).unwrap();
        std::thread::spawn(move || {
            (0..conns)
                .map(|_| {
                    let (mut s, _) = l.accept().unwrap();
                    let frame = wire::read_frame(&mut s).unwrap();
                    std::thread::sleep(delay);
                    let _ = wire::write_frame(&mut s, &reply(&frame).encode());
                    frame
                })
                .collect()
        })
    }

    fn ev() -> HostEvent {
        HostEvent::Denied(DeniedEvent {
            user: "alice".into(),
            service: "sshd".into(),
            rhost: "10.0.0.1".into(),
            reason: "no grant".into(),
            key_id: String::new(),
            at_unix: 1,
        })
    }

    #[test]
    fn queued_file_decodes_and_is_private() {
        let d = crate::test_dir("queue");
        let pending = d.join("state/pending");
        std::fs::create_dir_all(d.join("state")).unwrap();
        let id = new_event_id();
        let f = queue(&pending, id, &ev()).unwrap();
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        let parts: Vec<&str> = name.trim_end_matches(".evt").split('-').collect();
        assert!(name.ends_with(".evt") && parts.len() == 3, "{name}");
        assert_eq!(parts[1], std::process::id().to_string());
        assert_eq!(parts[2], id.to_string());
        assert_eq!(
            wire::decode_event(&std::fs::read(&f).unwrap()).unwrap(),
            ev()
        );
        assert_eq!(wire::pending_file_id(&name), Some(id));
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(&pending).unwrap().permissions().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        // Only the published file remains (no temporary).
        let names: Vec<_> = std::fs::read_dir(&pending)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // Two events, two files.
        queue(&pending, new_event_id(), &ev()).unwrap();
        assert_eq!(std::fs::read_dir(&pending).unwrap().count(), 2);
    }

    #[test]
    fn symlinked_pending_dir_is_refused() {
        let d = crate::test_dir("queue-link");
        std::fs::create_dir_all(d.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(d.join("elsewhere"), d.join("pending")).unwrap();
        assert!(queue(&d.join("pending"), new_event_id(), &ev()).is_err());
        assert_eq!(std::fs::read_dir(d.join("elsewhere")).unwrap().count(), 0);
    }

    #[test]
    fn no_daemon_queues_without_waiting_for_a_reply() {
        // No socket at all: the failure is at connect (ENOENT), never a reply timeout.
        let d = crate::test_dir("deliver");
        match deliver(&d.join("hostd.sock"), &d.join("pending"), &ev()) {
            Delivery::Queued { file, socket_error } => {
                assert!(file.exists());
                assert!(socket_error.contains("No such file"), "{socket_error}");
                assert!(!socket_error.contains("in time"), "{socket_error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn silent_daemon_is_bounded_then_queued() {
        let d = crate::test_dir("deliver-silent");
        let sock = d.join("hostd.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let t = Instant::now();
        let r = deliver(&sock, &d.join("pending"), &ev());
        let el = t.elapsed();
        match &r {
            Delivery::Queued { socket_error, .. } => {
                assert!(
                    socket_error.contains("did not answer in time"),
                    "{socket_error}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(
            // The reply timeout was waited for, and bounded: queueing the event (two
            // fsyncs) may be slow on a loaded disk, so the upper bound is generous.
            el >= Duration::from_millis(SOCKET_BUDGET_MS - 50) && el < Duration::from_secs(10),
            "{el:?}"
        );
    }

    /// Issue 18 (fault matrix, hostd frozen): each pam_smith process waited the whole
    /// budget again, so a login with a sudo took 2.3 s. After one timeout, the next
    /// processes queue at once for QUIET_SECS; an answer from hostd ends that.
    #[test]
    fn after_a_timeout_the_next_events_are_queued_without_waiting() {
        let d = crate::test_dir("deliver-quiet");
        let sock = d.join("hostd.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(!hostd_quiet(&sock));
        assert!(matches!(
            deliver(&sock, &d.join("pending"), &ev()),
            Delivery::Queued { .. }
        ));
        // SAFETY: no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert_eq!(
            hostd_quiet(&sock),
            root,
            "the quiet file counts only if root's"
        );
        if !root {
            return;
        }
        let t = Instant::now();
        match deliver(&sock, &d.join("pending"), &ev()) {
            Delivery::Queued { socket_error, .. } => {
                assert!(
                    socket_error.contains("queued without asking"),
                    "{socket_error}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(
            t.elapsed() < Duration::from_millis(SOCKET_BUDGET_MS / 2),
            "{:?}",
            t.elapsed()
        );
        // An old quiet file is ignored; an answer removes it.
        let quiet = d.join(QUIET_FILE);
        let old = std::fs::File::options().write(true).open(&quiet).unwrap();
        old.set_modified(SystemTime::now() - std::time::Duration::from_secs(QUIET_SECS as u64 + 1))
            .unwrap();
        assert!(!hostd_quiet(&sock));
        drop(l);
        std::fs::remove_file(&sock).unwrap();
        let h = fake_hostd(&sock, 1, Duration::ZERO, |_| Response::Ack(3));
        assert_eq!(deliver(&sock, &d.join("pending"), &ev()), Delivery::Sent(3));
        h.join().unwrap();
        assert!(!quiet.exists(), "cleared by an answer");
    }

    /// Issue 18 (fault matrix, /var/lib/smith full): hostd could not spool and the
    /// pending file could not be written either, so every event was lost. Now it goes to
    /// the spare queue beside the socket.
    #[test]
    fn a_full_pending_directory_uses_the_spare_queue_beside_the_socket() {
        let d = crate::test_dir("deliver-spare");
        let sock = d.join("run/hostd.sock");
        // The pending path cannot be a directory (as when its file system is full).
        std::fs::write(d.join("pending"), b"").unwrap();
        match deliver(&sock, &d.join("pending"), &ev()) {
            Delivery::Queued { file, socket_error } => {
                assert_eq!(
                    file.parent().unwrap(),
                    d.join("run/pending"),
                    "{socket_error}"
                );
                assert_eq!(
                    wire::decode_event(&std::fs::read(&file).unwrap()).unwrap(),
                    ev()
                );
            }
            other => panic!("{other:?}"),
        }
        // Neither: lost, with every reason.
        std::fs::write(d.join("run/x"), b"").unwrap();
        match deliver(&d.join("run/x/hostd.sock"), &d.join("pending"), &ev()) {
            Delivery::Lost(why) => assert_eq!(why.matches("; and ").count(), 2, "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn acked_event_is_sent() {
        let d = crate::test_dir("deliver-ok");
        let sock = d.join("hostd.sock");
        let h = fake_hostd(&sock, 1, Duration::ZERO, |_| Response::Ack(77));
        assert_eq!(
            deliver(&sock, &d.join("pending"), &ev()),
            Delivery::Sent(77)
        );
        match Request::decode(&h.join().unwrap()[0]).unwrap() {
            Request::Event { id: Some(_), event } => assert_eq!(event, ev()),
            other => panic!("{other:?}"),
        }
        assert!(!d.join("pending").exists(), "nothing queued");
    }

    #[test]
    fn an_ack_too_late_and_the_pending_copy_share_one_id() {
        // hostd reads the event (and may spool it) but answers after the budget: the
        // pending copy must carry the id hostd saw, so hostd can drop the repeat.
        let d = crate::test_dir("deliver-late");
        let sock = d.join("hostd.sock");
        let late = Duration::from_millis(SOCKET_BUDGET_MS + 300);
        let h = fake_hostd(&sock, 1, late, |_| Response::Ack(5));
        let file = match deliver(&sock, &d.join("pending"), &ev()) {
            Delivery::Queued { file, .. } => file,
            other => panic!("{other:?}"),
        };
        let Request::Event { id: Some(sent), .. } = Request::decode(&h.join().unwrap()[0]).unwrap()
        else {
            panic!("the event was sent without an id");
        };
        let name = file.file_name().unwrap().to_str().unwrap();
        assert_eq!(wire::pending_file_id(name), Some(sent));
        let event = wire::decode_event(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(event, ev());
        // A second event gets another id.
        assert_ne!(new_event_id(), sent);
    }

    #[test]
    fn a_hostd_of_an_earlier_version_gets_the_event_without_the_id() {
        // It does not know the request kind with an id: BadRequest, nothing recorded.
        let d = crate::test_dir("deliver-old-hostd");
        let sock = d.join("hostd.sock");
        let h = fake_hostd(&sock, 2, Duration::ZERO, |frame| {
            if frame[1] == wire::RQ_EVENT_ID {
                Response::Error {
                    code: wire::ErrorCode::BadRequest,
                    message: "unknown message kind 8".into(),
                }
            } else {
                Response::Ack(12)
            }
        });
        assert_eq!(
            deliver(&sock, &d.join("pending"), &ev()),
            Delivery::Sent(12)
        );
        let kinds: Vec<u8> = h.join().unwrap().iter().map(|f| f[1]).collect();
        assert_eq!(kinds, vec![wire::RQ_EVENT_ID, wire::RQ_EVENT]);
        assert!(!d.join("pending").exists(), "nothing queued");
    }
}
