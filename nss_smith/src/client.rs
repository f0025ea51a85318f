//! The fallback path: ask hostd over its local socket when the cache file is missing or
//! invalid.
//!
//! Owns: one cached connection per process (reused across calls, re-opened after
//! `fork()`, checked with `fstat` before reuse so a descriptor number the program
//! closed and reused is never written to), connection with
//! `SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK`, a bounded connect (100 ms), every send and
//! receive under `poll` with the time left (sends with `MSG_NOSIGNAL`), at most one
//! reconnect, and a hard deadline of [`TOTAL_BUDGET_MS`] per call. The peer must be root
//! (`SO_PEERCRED`).
//!
//! Must never: block past the deadline, raise SIGPIPE, leak the descriptor into exec'd
//! programs, or be used from a process that has [`smith_proto::paths::NSS_BYPASS_ENV`]
//! set (hostd itself: it would ask itself while answering).

use smith_proto::wire::{read_frame, write_frame, Request, Response, MAX_FRAME};
use std::ffi::CStr;
use std::io::{self, Read, Write};
use std::sync::Mutex;

/// Whole-call budget for the socket path.
pub const TOTAL_BUDGET_MS: u64 = 300;
/// Budget for establishing a connection.
pub const CONNECT_BUDGET_MS: u64 = 100;
/// Longest single wait for the daemon to read or answer.
pub const IO_WAIT_MS: u64 = 150;

/// The environment marker (same text as `smith_proto::paths::NSS_BYPASS_ENV`).
pub const BYPASS_ENV: &CStr = c"SMITH_NSS_BYPASS";

/// Why the daemon could not answer. Every variant reads as "unavailable".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// This process must not use the socket (hostd itself).
    Bypassed,
    /// No daemon listening (ENOENT/ECONNREFUSED), or another OS error with its errno.
    Os(i32),
    TimedOut,
    /// The peer is not root.
    UntrustedPeer,
    /// The daemon's answer was malformed or did not match the question.
    Protocol,
}

impl TransportError {
    /// The errno to report with `NSS_STATUS_UNAVAIL`: ENOENT when there is simply no
    /// daemon, EAGAIN when it exists but did not answer in time.
    pub fn errno(&self) -> i32 {
        match self {
            TransportError::Bypassed | TransportError::UntrustedPeer => libc::ENOENT,
            TransportError::Os(e) if *e == libc::ENOENT || *e == libc::ECONNREFUSED => libc::ENOENT,
            TransportError::Os(_) | TransportError::TimedOut | TransportError::Protocol => {
                libc::EAGAIN
            }
        }
    }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer, constant clock id.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// Whether this process asked never to use the socket.
pub fn bypassed() -> bool {
    // SAFETY: getenv with a NUL-terminated name; we only test the result for NULL.
    !unsafe { libc::getenv(BYPASS_ENV.as_ptr()) }.is_null()
}

/// A connected socket owned by this process.
struct Conn {
    fd: i32,
    pid: i32,
    dev: u64,
    ino: u64,
    deadline_ms: u64,
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

fn getpid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() }
}

impl Conn {
    /// Whether the cached descriptor is still ours: same process, and the number still
    /// names the same socket (a program may have closed it and reused the number).
    fn still_ours(&self) -> bool {
        self.pid == getpid() && fstat_id(self.fd) == Some((self.dev, self.ino))
    }

    fn wait(&self, events: i16, max_ms: u64) -> Result<(), TransportError> {
        loop {
            let now = monotonic_ms();
            if now >= self.deadline_ms {
                return Err(TransportError::TimedOut);
            }
            let ms = (self.deadline_ms - now).min(max_ms) as i32;
            let mut p = libc::pollfd {
                fd: self.fd,
                events,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut p, 1, ms) };
            if rc > 0 {
                return Ok(());
            }
            if rc == 0 {
                if max_ms < self.deadline_ms - now {
                    return Err(TransportError::TimedOut);
                }
                continue;
            }
            let e = errno();
            if e != libc::EINTR {
                return Err(TransportError::Os(e));
            }
        }
    }

    fn connect(path: &CStr, deadline_ms: u64) -> Result<Conn, TransportError> {
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
        let mut c = Conn {
            fd,
            pid: getpid(),
            dev: 0,
            ino: 0,
            deadline_ms,
        };
        // From here `c` owns fd and closes it on every error path (Drop).
        // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.to_bytes();
        if bytes.len() >= addr.sun_path.len() {
            return Err(TransportError::Os(libc::ENAMETOOLONG));
        }
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let connect_deadline = monotonic_ms() + CONNECT_BUDGET_MS;
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
                libc::EINPROGRESS => {
                    c.wait(libc::POLLOUT, CONNECT_BUDGET_MS)?;
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
                libc::EAGAIN if monotonic_ms() < connect_deadline.min(deadline_ms) => {
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
        Ok(c)
    }

    fn roundtrip(&mut self, payload: &[u8]) -> Result<Response, TransportError> {
        write_frame(self, payload).map_err(io_to_transport)?;
        let frame = read_frame(self).map_err(io_to_transport)?;
        Response::decode(&frame).map_err(|_| TransportError::Protocol)
    }

    /// Gives up ownership without closing (the number is not ours any more).
    fn forget(self) {
        std::mem::forget(self);
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

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes; MSG_NOSIGNAL: EPIPE instead
            // of SIGPIPE.
            let n = unsafe {
                libc::send(
                    self.fd,
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
                libc::EAGAIN => self
                    .wait(libc::POLLOUT, IO_WAIT_MS)
                    .map_err(|_| io::Error::from_raw_os_error(libc::ETIMEDOUT))?,
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
            let n =
                unsafe { libc::recv(self.fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => self
                    .wait(libc::POLLIN, IO_WAIT_MS)
                    .map_err(|_| io::Error::from_raw_os_error(libc::ETIMEDOUT))?,
                e => return Err(io::Error::from_raw_os_error(e)),
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor (checked by `still_ours` before reuse, or
        // freshly created) and close it once.
        unsafe { libc::close(self.fd) };
    }
}

/// A daemon endpoint with its cached connection.
pub struct Client {
    path: &'static CStr,
    cached: Mutex<Option<Conn>>,
}

impl Client {
    pub const fn new(path: &'static CStr) -> Client {
        Client {
            path,
            cached: Mutex::new(None),
        }
    }

    /// Sends `req`, returns hostd's answer, within [`TOTAL_BUDGET_MS`].
    pub fn ask(&self, req: &Request) -> Result<Response, TransportError> {
        if bypassed() {
            return Err(TransportError::Bypassed);
        }
        let payload = req.encode();
        if payload.len() > MAX_FRAME {
            return Err(TransportError::Protocol);
        }
        let deadline = monotonic_ms() + TOTAL_BUDGET_MS;
        // The cached connection is used by one thread at a time; others (rare: the
        // cache is missing and many threads resolve at once) use a one-shot connection
        // instead of waiting.
        let mut guard = match self.cached.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
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
                c.deadline_ms = deadline;
                match c.roundtrip(&payload) {
                    Ok(r) => (Ok(r), Some(c)),
                    // hostd restarted (or closed an idle connection): one reconnect.
                    Err(_) => {
                        drop(c);
                        self.fresh(&payload, deadline)
                    }
                }
            }
            None => self.fresh(&payload, deadline),
        };
        if let (Some(g), Some(c)) = (guard.as_mut(), conn) {
            **g = Some(c);
        }
        result
    }

    fn fresh(
        &self,
        payload: &[u8],
        deadline: u64,
    ) -> (Result<Response, TransportError>, Option<Conn>) {
        match Conn::connect(self.path, deadline) {
            Ok(mut c) => match c.roundtrip(payload) {
                Ok(r) => (Ok(r), Some(c)),
                Err(e) => (Err(e), None),
            },
            Err(e) => (Err(e), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smith_proto::wire::WireUser;
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    fn leak_path(p: &std::path::Path) -> &'static CStr {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        Box::leak(c.into_boxed_c_str())
    }

    #[test]
    fn bypass_name_matches_proto() {
        assert_eq!(
            BYPASS_ENV.to_str().unwrap(),
            smith_proto::paths::NSS_BYPASS_ENV
        );
    }

    #[test]
    fn no_daemon_is_enoent_at_connect() {
        let dir = crate::test_dir("client-none");
        let c = Client::new(leak_path(&dir.join("hostd.sock")));
        let e = c.ask(&Request::Ping).unwrap_err();
        // ENOENT comes from connect itself: nothing was waited for.
        assert_eq!(e.errno(), libc::ENOENT, "{e:?}");
    }

    #[test]
    fn silent_daemon_times_out_within_budget() {
        let dir = crate::test_dir("client-silent");
        let sock = dir.join("hostd.sock");
        let _l = UnixListener::bind(&sock).unwrap(); // accepts (backlog) but never answers
        let c = Client::new(leak_path(&sock));
        let t = Instant::now();
        let e = c.ask(&Request::UserByName("alice".into())).unwrap_err();
        let ms = t.elapsed().as_millis();
        if crate::mapping::tests::is_root() {
            assert_eq!(e, TransportError::TimedOut);
            assert_eq!(e.errno(), libc::EAGAIN);
            // Waited (not an instant failure) and gave up: bounded by the 300 ms budget,
            // with room for a loaded machine's scheduling.
            assert!((100..2000).contains(&ms), "{ms} ms");
        } else {
            assert_eq!(e, TransportError::UntrustedPeer);
        }
    }

    #[test]
    fn answers_reuse_the_connection_and_survive_a_restart() {
        if !crate::mapping::tests::is_root() {
            eprintln!("SKIPPED: the peer must be root");
            return;
        }
        let dir = crate::test_dir("client-ok");
        let sock = dir.join("hostd.sock");
        // A daemon that serves `frames` requests on one connection, then goes away.
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
        let ask = |c: &Client| c.ask(&Request::UserByName("alice".into()));
        let h = serve(UnixListener::bind(&sock).unwrap(), 3);
        let c = Client::new(leak_path(&sock));
        for _ in 0..3 {
            match ask(&c).unwrap() {
                Response::User(Some(u)) => assert_eq!(u.uid, 200_001),
                other => panic!("{other:?}"),
            }
        }
        // Three answers came over one connection (the server accepted only once).
        h.join().unwrap();
        // "Restart" hostd: the cached connection is dead; one reconnect fixes it.
        std::fs::remove_file(&sock).unwrap();
        let h = serve(UnixListener::bind(&sock).unwrap(), 1);
        assert!(matches!(ask(&c), Ok(Response::User(Some(_)))));
        h.join().unwrap();
        // Daemon gone for good: unavailable, quickly.
        std::fs::remove_file(&sock).unwrap();
        assert_eq!(ask(&c).unwrap_err().errno(), libc::ENOENT);
    }
}
