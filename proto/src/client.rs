//! The one bounded client of hostd's local socket, shared by nss_smith, pam_smith and
//! `smith-host` (issue 14: there were two that had already diverged).
//!
//! Owns: connecting with `SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK` and a bounded connect
//! ([`CONNECT_BUDGET_MS`]; a full backlog is retried within it), the peer check (the
//! daemon must be root, `SO_PEERCRED`: whoever else listens at the path gets neither
//! questions nor audit records, and cannot answer them), every send and receive under
//! `poll` with the time left to a deadline (sends with `MSG_NOSIGNAL`), and, in
//! [`Client`] (for the NSS module): one cached connection per process (re-opened after
//! `fork()`, `fstat`-checked before reuse so a descriptor number the program closed and
//! reused is never written to), a per-process backoff after the daemon failed to answer
//! in time, and a one-second memo of the last answer (glibc repeats a question with a
//! bigger buffer after ERANGE).
//!
//! Must never: block past its deadline, raise SIGPIPE, leak a descriptor into exec'd
//! programs, wait for a lock a sibling thread holds (a one-shot connection is used
//! instead), or talk to a peer that is not root.

use crate::pidlock::PidLock;
use crate::wire::{read_frame, write_frame, Request, Response, MAX_FRAME};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Budget for establishing a connection.
pub const CONNECT_BUDGET_MS: u64 = 100;
/// After the daemon failed to answer in time, a [`Client`] does not ask it again for
/// this long in this process (answers "unavailable" at once).
pub const BACKOFF_MS: u64 = 5000;
/// How long a [`Client`] reuses its last answer for the same question.
pub const MEMO_MS: u64 = 1000;

/// Why the daemon could not answer. Every variant reads as "unavailable".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// No daemon listening (ENOENT/ECONNREFUSED), or another OS error with its errno.
    Os(i32),
    /// The daemon did not answer within the budget.
    TimedOut,
    /// The daemon did not answer in time recently; not asked again yet.
    BackingOff,
    /// The peer is not root.
    UntrustedPeer,
    /// The daemon's answer was malformed, too large, or did not match the question.
    Protocol,
}

impl TransportError {
    /// The errno that goes with `NSS_STATUS_UNAVAIL`: ENOENT when there is simply no
    /// daemon (or one we must not trust), EAGAIN when it exists but did not answer.
    pub fn errno(&self) -> i32 {
        match self {
            TransportError::UntrustedPeer => libc::ENOENT,
            TransportError::Os(e) if *e == libc::ENOENT || *e == libc::ECONNREFUSED => libc::ENOENT,
            TransportError::Os(_)
            | TransportError::TimedOut
            | TransportError::BackingOff
            | TransportError::Protocol => libc::EAGAIN,
        }
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Os(e) => write!(f, "{}", io::Error::from_raw_os_error(*e)),
            TransportError::TimedOut => write!(f, "smith-hostd did not answer in time"),
            TransportError::BackingOff => write!(
                f,
                "smith-hostd did not answer recently; not asked again for a few seconds"
            ),
            TransportError::UntrustedPeer => {
                write!(
                    f,
                    "the process listening on the socket is not root; not trusted"
                )
            }
            TransportError::Protocol => write!(f, "malformed answer from smith-hostd"),
        }
    }
}

impl std::error::Error for TransportError {}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Milliseconds of `CLOCK_MONOTONIC` (a vDSO read).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer, constant clock id.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

fn getpid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() }
}

fn fstat_id(fd: i32) -> Option<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer; an invalid fd just fails with EBADF.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded.
    let st = unsafe { st.assume_init() };
    (st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some((st.st_dev, st.st_ino))
}

/// A connected socket to a root peer, with a deadline for every wait.
pub struct Conn {
    fd: Option<OwnedFd>,
    pid: i32,
    dev: u64,
    ino: u64,
    deadline_ms: u64,
}

impl Conn {
    fn raw(&self) -> i32 {
        self.fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1)
    }

    /// Whether the cached descriptor is still ours: same process, and the number still
    /// names the same socket (a program may have closed it and reused the number).
    fn still_ours(&self) -> bool {
        self.pid == getpid() && fstat_id(self.raw()) == Some((self.dev, self.ino))
    }

    /// Gives up the descriptor without closing it (its number is not ours any more).
    fn forget(mut self) {
        if let Some(fd) = self.fd.take() {
            std::mem::forget(fd);
        }
    }

    pub fn set_deadline_ms(&mut self, deadline_ms: u64) {
        self.deadline_ms = deadline_ms;
    }

    fn wait(&self, events: i16) -> Result<(), TransportError> {
        loop {
            let now = monotonic_ms();
            if now >= self.deadline_ms {
                return Err(TransportError::TimedOut);
            }
            let mut p = libc::pollfd {
                fd: self.raw(),
                events,
                revents: 0,
            };
            let ms = (self.deadline_ms - now).min(i32::MAX as u64) as i32;
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut p, 1, ms) };
            if rc > 0 {
                return Ok(());
            }
            if rc < 0 {
                let e = errno();
                if e != libc::EINTR {
                    return Err(TransportError::Os(e));
                }
            }
        }
    }

    /// Connects to `path`; the whole connection must be made by `deadline_ms` and
    /// within [`CONNECT_BUDGET_MS`]. The peer must be root.
    pub fn connect(path: &Path, deadline_ms: u64) -> Result<Conn, TransportError> {
        // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
            return Err(TransportError::Os(libc::ENAMETOOLONG));
        }
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        // SAFETY: plain socket(2) call.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            return Err(TransportError::Os(errno()));
        }
        let connect_deadline = deadline_ms.min(monotonic_ms() + CONNECT_BUDGET_MS);
        let mut c = Conn {
            // SAFETY: `fd` was just created and is owned by nobody else.
            fd: Some(unsafe { OwnedFd::from_raw_fd(fd) }),
            pid: getpid(),
            dev: 0,
            ino: 0,
            deadline_ms: connect_deadline,
        };
        loop {
            // SAFETY: `addr` is a valid sockaddr_un of the given size.
            let rc = unsafe {
                libc::connect(
                    fd,
                    &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
            match errno() {
                libc::EINTR => continue,
                libc::EISCONN => break,
                libc::EINPROGRESS => {
                    c.wait(libc::POLLOUT)?;
                    let mut err: libc::c_int = 0;
                    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                    // SAFETY: valid out-pointers for one int.
                    unsafe {
                        libc::getsockopt(
                            fd,
                            libc::SOL_SOCKET,
                            libc::SO_ERROR,
                            &mut err as *mut libc::c_int as *mut libc::c_void,
                            &mut len,
                        )
                    };
                    if err != 0 {
                        return Err(TransportError::Os(err));
                    }
                    break;
                }
                // A full listen backlog: retry briefly within the connect budget.
                libc::EAGAIN if monotonic_ms() < connect_deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                libc::EAGAIN => return Err(TransportError::TimedOut),
                e => return Err(TransportError::Os(e)),
            }
        }
        let mut cred = libc::ucred {
            pid: 0,
            uid: u32::MAX,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: valid out-pointers for one ucred.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                &mut cred as *mut libc::ucred as *mut libc::c_void,
                &mut len,
            )
        };
        if rc != 0 || cred.uid != 0 {
            return Err(TransportError::UntrustedPeer);
        }
        let (dev, ino) = fstat_id(fd).ok_or(TransportError::Os(libc::EBADF))?;
        c.dev = dev;
        c.ino = ino;
        c.deadline_ms = deadline_ms;
        Ok(c)
    }

    /// Sends one request frame and reads one response frame.
    pub fn roundtrip(&mut self, payload: &[u8]) -> Result<Response, TransportError> {
        if payload.len() > MAX_FRAME {
            return Err(TransportError::Protocol);
        }
        write_frame(self, payload).map_err(io_to_transport)?;
        let frame = read_frame(self).map_err(io_to_transport)?;
        Response::decode(&frame).map_err(|_| TransportError::Protocol)
    }
}

fn io_to_transport(e: io::Error) -> TransportError {
    match e.raw_os_error() {
        Some(libc::ETIMEDOUT) => TransportError::TimedOut,
        Some(n) => TransportError::Os(n),
        None => match e.kind() {
            io::ErrorKind::TimedOut => TransportError::TimedOut,
            io::ErrorKind::UnexpectedEof => TransportError::Os(libc::ECONNRESET),
            _ => TransportError::Protocol,
        },
    }
}

fn transport_to_io(e: TransportError) -> io::Error {
    match e {
        TransportError::Os(n) => io::Error::from_raw_os_error(n),
        _ => io::Error::from_raw_os_error(libc::ETIMEDOUT),
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes; MSG_NOSIGNAL: EPIPE instead
            // of SIGPIPE.
            let n = unsafe {
                libc::send(
                    self.raw(),
                    buf.as_ptr() as *const libc::c_void,
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => self.wait(libc::POLLOUT).map_err(transport_to_io)?,
                e => return Err(io::Error::from_raw_os_error(e)),
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let n = unsafe {
                libc::recv(
                    self.raw(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => self.wait(libc::POLLIN).map_err(transport_to_io)?,
                e => return Err(io::Error::from_raw_os_error(e)),
            }
        }
    }
}

/// One request on a fresh connection, all of it within `budget_ms`.
pub fn exchange(path: &Path, req: &Request, budget_ms: u64) -> Result<Response, TransportError> {
    let deadline = monotonic_ms() + budget_ms;
    Conn::connect(path, deadline)?.roundtrip(&req.encode())
}

struct Memo {
    question: Vec<u8>,
    answer: Response,
    until_ms: u64,
}

/// A daemon endpoint with its cached connection, backoff and memo (one per process).
pub struct Client {
    path: &'static str,
    budget_ms: u64,
    cached: PidLock<Option<Conn>>,
    memo: PidLock<Option<Memo>>,
    quiet_until_ms: AtomicU64,
}

impl Client {
    /// `budget_ms`: the most one [`Client::ask`] may take.
    pub const fn new(path: &'static str, budget_ms: u64) -> Client {
        Client {
            path,
            budget_ms,
            cached: PidLock::new(None),
            memo: PidLock::new(None),
            quiet_until_ms: AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> &'static str {
        self.path
    }

    /// Sends `req`, returns the daemon's answer, within the budget; at once during a
    /// backoff, or from the memo for a question asked less than [`MEMO_MS`] ago.
    pub fn ask(&self, req: &Request) -> Result<Response, TransportError> {
        let now = monotonic_ms();
        if now < self.quiet_until_ms.load(Ordering::Relaxed) {
            return Err(TransportError::BackingOff);
        }
        let payload = req.encode();
        if payload.len() > MAX_FRAME {
            return Err(TransportError::Protocol);
        }
        if let Some(m) = self.memo.try_lock(|| None) {
            if let Some(m) = m
                .as_ref()
                .filter(|m| m.question == payload && now < m.until_ms)
            {
                return Ok(m.answer.clone());
            }
        }
        let result = self.ask_daemon(&payload, now + self.budget_ms);
        match &result {
            Ok(answer) => {
                if let Some(mut m) = self.memo.try_lock(|| None) {
                    *m = Some(Memo {
                        question: payload,
                        answer: answer.clone(),
                        until_ms: monotonic_ms() + MEMO_MS,
                    });
                }
            }
            Err(TransportError::TimedOut) => {
                self.quiet_until_ms
                    .store(monotonic_ms() + BACKOFF_MS, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        result
    }

    fn ask_daemon(&self, payload: &[u8], deadline: u64) -> Result<Response, TransportError> {
        let path = Path::new(self.path);
        // The cached connection is used by one thread at a time; others use a one-shot
        // connection instead of waiting. A child forked while a thread of its parent
        // used it takes the lock over (the inherited descriptor is left alone).
        let mut guard = self.cached.try_lock(|| None);
        let reused = guard.as_mut().and_then(|g| g.take()).and_then(|c| {
            if c.still_ours() {
                Some(c)
            } else {
                c.forget();
                None
            }
        });
        let (result, conn) = match reused {
            Some(mut c) => {
                c.set_deadline_ms(deadline);
                match c.roundtrip(payload) {
                    Ok(r) => (Ok(r), Some(c)),
                    // The daemon restarted or closed an idle connection: one reconnect.
                    Err(_) => {
                        drop(c);
                        fresh(path, payload, deadline)
                    }
                }
            }
            None => fresh(path, payload, deadline),
        };
        if let (Some(g), Some(c)) = (guard.as_mut(), conn) {
            **g = Some(c);
        }
        result
    }
}

fn fresh(
    path: &Path,
    payload: &[u8],
    deadline: u64,
) -> (Result<Response, TransportError>, Option<Conn>) {
    match Conn::connect(path, deadline) {
        Ok(mut c) => match c.roundtrip(payload) {
            Ok(r) => (Ok(r), Some(c)),
            Err(e) => (Err(e), None),
        },
        Err(e) => (Err(e), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WireUser;
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    fn root() -> bool {
        // SAFETY: no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn dir(label: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("proto-client-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn leak(p: &Path) -> &'static str {
        Box::leak(p.to_str().unwrap().to_string().into_boxed_str())
    }

    #[test]
    fn no_daemon_is_enoent_at_connect() {
        let d = dir("none");
        let c = Client::new(leak(&d.join("hostd.sock")), 300);
        let e = c.ask(&Request::Ping).unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT, "{e:?}");
    }

    /// Issue 14, D7: a daemon that accepts and never answers costs one budget, then the
    /// process backs off. Before, every lookup paid 100-150 ms (20 names = 2.26 s).
    #[test]
    fn silent_daemon_costs_one_budget_then_backs_off() {
        let d = dir("silent");
        let sock = d.join("hostd.sock");
        let _l = UnixListener::bind(&sock).unwrap(); // backlog accepts, nobody answers
        let c = Client::new(leak(&sock), 300);
        let t = Instant::now();
        let e = c.ask(&Request::UserByName("alice".into())).unwrap_err();
        let first = t.elapsed();
        if !root() {
            assert_eq!(e, TransportError::UntrustedPeer);
            return;
        }
        assert_eq!(e, TransportError::TimedOut);
        assert!(first.as_millis() >= 250, "{first:?}: waited for the budget");
        let t = Instant::now();
        for i in 0..20 {
            let e = c.ask(&Request::UserByName(format!("u{i}"))).unwrap_err();
            assert_eq!(e, TransportError::BackingOff);
            assert_eq!(e.errno(), libc::EAGAIN);
        }
        assert!(
            t.elapsed().as_millis() < 50,
            "{:?} for 20 lookups",
            t.elapsed()
        );
    }

    #[test]
    fn a_peer_that_is_not_root_is_not_asked() {
        if !root() {
            return;
        }
        let d = dir("notroot");
        let sock = d.join("hostd.sock");
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        // A listener owned by nobody (65534), in a child process.
        let s2 = sock.clone();
        // SAFETY: test code; the child binds, waits and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: dropping privileges in the child.
            unsafe {
                libc::setgid(65534);
                libc::setuid(65534);
            }
            let l = UnixListener::bind(&s2);
            std::thread::sleep(std::time::Duration::from_millis(500));
            drop(l);
            // SAFETY: leave the child without the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        let t = Instant::now();
        while !sock.exists() && t.elapsed().as_secs() < 2 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let e = exchange(&sock, &Request::Ping, 300).unwrap_err();
        assert_eq!(e, TransportError::UntrustedPeer);
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }

    #[test]
    fn answers_reuse_the_connection_memo_and_survive_a_restart() {
        if !root() {
            eprintln!("SKIPPED: the peer must be root");
            return;
        }
        let d = dir("ok");
        let sock = d.join("hostd.sock");
        let serve = |l: UnixListener, frames: usize| {
            std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                for _ in 0..frames {
                    let req = Request::decode(&read_frame(&mut s).unwrap()).unwrap();
                    let resp = match req {
                        Request::UserByName(n) => Response::User(Some(WireUser {
                            name: n,
                            uid: 200_001,
                            gid: 200_001,
                            gecos: String::new(),
                            dir: "/home/alice".into(),
                            shell: "/bin/sh".into(),
                            level: 1,
                        })),
                        _ => Response::User(None),
                    };
                    write_frame(&mut s, &resp.encode()).unwrap();
                }
            })
        };
        let ask = |c: &Client, n: &str| c.ask(&Request::UserByName(n.into()));
        let h = serve(UnixListener::bind(&sock).unwrap(), 3);
        let c = Client::new(leak(&sock), 300);
        for n in ["alice", "bob", "carol"] {
            assert!(matches!(ask(&c, n).unwrap(), Response::User(Some(u)) if u.name == n));
        }
        h.join().unwrap();
        // The same question again within a second: the memo answers (the server is gone).
        assert!(matches!(ask(&c, "carol").unwrap(), Response::User(Some(_))));
        // Restarted: the cached connection is dead; one reconnect.
        std::fs::remove_file(&sock).unwrap();
        let h = serve(UnixListener::bind(&sock).unwrap(), 1);
        assert!(matches!(ask(&c, "dave"), Ok(Response::User(Some(_)))));
        h.join().unwrap();
        std::fs::remove_file(&sock).unwrap();
        assert_eq!(ask(&c, "erin").unwrap_err().errno(), libc::ENOENT);
    }
}
