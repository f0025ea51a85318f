//! The host's *other* NSS sources (sss, ldap, winbind, systemd, extrausers...), asked
//! with Smith bypassed (issue 14, D4 and M5: a Smith user who shares a name with a
//! directory user would inherit that user's groups through `initgroups`, or log in as
//! them).
//!
//! Owns: reading which sources `nsswitch.conf` lists for `passwd` and `group` besides
//! `files` (read directly by [`crate::local`]) and `smith`; asking each of them about
//! Smith's names and ids by calling the module's own `_nss_<source>_*` functions in a
//! child process (`smith-hostd --nss-probe SOURCE`), so the answer says *which* source
//! has a name and can tell "not there" from "did not answer", and a hung directory
//! cannot wedge the daemon (the child is killed after [`PROBE_TIMEOUT`]).
//!
//! Must never: go through glibc's dispatch (it would reach nss_smith), load a module
//! whose name is not `[a-z0-9_]+`, or take "did not answer" for "not there" (the
//! caller decides what an unverified name gets: see `store`).

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CString};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one source may take to answer a whole batch.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// One question to a source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Query {
    UserName(String),
    Uid(u32),
    GroupName(String),
    Gid(u32),
}

impl Query {
    fn line(&self) -> String {
        match self {
            Query::UserName(n) => format!("pwnam {n}"),
            Query::Uid(u) => format!("pwuid {u}"),
            Query::GroupName(n) => format!("grnam {n}"),
            Query::Gid(g) => format!("grgid {g}"),
        }
    }

    fn parse(line: &str) -> Option<Query> {
        let (kind, arg) = line.trim().split_once(' ')?;
        Some(match kind {
            "pwnam" => Query::UserName(arg.to_string()),
            "pwuid" => Query::Uid(arg.parse().ok()?),
            "grnam" => Query::GroupName(arg.to_string()),
            "grgid" => Query::Gid(arg.parse().ok()?),
            _ => return None,
        })
    }

    /// The database the question belongs to.
    pub fn db(&self) -> &'static str {
        match self {
            Query::UserName(_) | Query::Uid(_) => "passwd",
            Query::GroupName(_) | Query::Gid(_) => "group",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Found,
    Absent,
    /// The source did not answer (down, timed out, or an error).
    Unavailable,
}

/// The sources other than `files` and `smith` that `nsswitch.conf` lists for `db`, in
/// order (`[STATUS=action]` items skipped).
pub fn other_sources(nsswitch: &str, db: &str) -> Vec<String> {
    for line in nsswitch.lines() {
        let line = line.split('#').next().unwrap_or("");
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        if key.trim() != db {
            continue;
        }
        let mut out = Vec::new();
        let mut in_action = false;
        for tok in rest.split_whitespace() {
            if tok.starts_with('[') {
                in_action = !tok.ends_with(']');
                continue;
            }
            if in_action {
                in_action = !tok.ends_with(']');
                continue;
            }
            if tok != "files"
                && tok != "smith"
                && valid_source(tok)
                && !out.iter().any(|s| s == tok)
            {
                out.push(tok.to_string());
            }
        }
        return out;
    }
    Vec::new()
}

fn valid_source(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Asks `source` every query, in a child process (`exe --nss-probe SOURCE`). Every
/// query the child did not answer (it died, hung past `timeout`) is `Unavailable`.
pub fn probe(
    exe: &Path,
    source: &str,
    queries: &[Query],
    timeout: Duration,
) -> HashMap<Query, Verdict> {
    let mut out: HashMap<Query, Verdict> = queries
        .iter()
        .map(|q| (q.clone(), Verdict::Unavailable))
        .collect();
    if queries.is_empty() || !valid_source(source) {
        return out;
    }
    let child = Command::new(exe)
        .arg("--nss-probe")
        .arg(source)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return out;
    };
    let input: String = queries.iter().map(|q| q.line() + "\n").collect();
    let stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(mut s) = stdin {
            let _ = s.write_all(input.as_bytes());
        }
    });
    let stdout = child.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        if let Some(s) = stdout {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut answered = 0;
    while answered < queries.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break; // timed out, or the child closed its output
        };
        let Some((verdict, q)) = line.split_once(' ') else {
            continue;
        };
        let Some(q) = Query::parse(q) else {
            continue;
        };
        let v = match verdict {
            "found" => Verdict::Found,
            "absent" => Verdict::Absent,
            _ => Verdict::Unavailable,
        };
        if let Some(slot) = out.get_mut(&q) {
            *slot = v;
            answered += 1;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = writer.join();
    drop(rx);
    let _ = reader.join();
    out
}

// --- the child side ------------------------------------------------------------------

type ByName =
    unsafe extern "C" fn(*const c_char, *mut c_void, *mut c_char, usize, *mut c_int) -> c_int;
type ById = unsafe extern "C" fn(u32, *mut c_void, *mut c_char, usize, *mut c_int) -> c_int;

const NSS_SUCCESS: c_int = 1;
const NSS_NOTFOUND: c_int = 0;
const NSS_TRYAGAIN: c_int = -2;

/// Big enough for `struct passwd` and `struct group` (a few pointers and ids).
#[repr(C, align(8))]
struct Entry([u8; 128]);

fn sym(lib: *mut c_void, name: &str) -> Option<*mut c_void> {
    let c = CString::new(name).ok()?;
    // SAFETY: `lib` is a handle from dlopen; `c` is NUL-terminated.
    let p = unsafe { libc::dlsym(lib, c.as_ptr()) };
    (!p.is_null()).then_some(p)
}

fn as_by_name(p: *mut c_void) -> ByName {
    // SAFETY: `p` is a `_nss_*_get{pw,gr}nam_r` symbol, which has this signature in the
    // glibc NSS module ABI.
    unsafe { std::mem::transmute::<*mut c_void, ByName>(p) }
}

fn as_by_id(p: *mut c_void) -> ById {
    // SAFETY: `p` is a `_nss_*_get{pwuid,grgid}_r` symbol, which has this signature.
    unsafe { std::mem::transmute::<*mut c_void, ById>(p) }
}

/// Calls one lookup, growing the buffer on ERANGE.
fn ask(call: &dyn Fn(*mut c_void, *mut c_char, usize, *mut c_int) -> c_int) -> Verdict {
    let mut size = 4096usize;
    loop {
        let mut entry = Entry([0; 128]);
        let mut buf = vec![0u8; size];
        let mut errno: c_int = 0;
        let st = call(
            &mut entry as *mut Entry as *mut c_void,
            buf.as_mut_ptr() as *mut c_char,
            buf.len(),
            &mut errno,
        );
        match st {
            NSS_SUCCESS => return Verdict::Found,
            NSS_NOTFOUND => return Verdict::Absent,
            NSS_TRYAGAIN if errno == libc::ERANGE && size < (1 << 22) => size *= 4,
            _ => return Verdict::Unavailable,
        }
    }
}

/// `smith-hostd --nss-probe SOURCE`: answers the queries on stdin ("pwnam NAME",
/// "pwuid ID", "grnam NAME", "grgid ID") with "found|absent|unavail QUERY" lines, by
/// calling `libnss_SOURCE.so.2` directly. Returns the exit code.
pub fn probe_main(source: &str) -> i32 {
    if !valid_source(source) {
        return 2;
    }
    let Ok(lib_name) = CString::new(format!("libnss_{source}.so.2")) else {
        return 2;
    };
    // SAFETY: a NUL-terminated library name; RTLD_NOW|RTLD_LOCAL.
    let lib = unsafe { libc::dlopen(lib_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let get = |f: &str| {
        if lib.is_null() {
            None
        } else {
            sym(lib, &format!("_nss_{source}_{f}"))
        }
    };
    let pwnam = get("getpwnam_r").map(as_by_name);
    let pwuid = get("getpwuid_r").map(as_by_id);
    let grnam = get("getgrnam_r").map(as_by_name);
    let grgid = get("getgrgid_r").map(as_by_id);
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let Some(q) = Query::parse(&line) else {
            continue;
        };
        let by_name = |f: Option<ByName>, n: &str| -> Verdict {
            let (Some(f), Ok(c)) = (f, CString::new(n)) else {
                // No such module or function: glibc skips it, so nothing is there.
                return Verdict::Absent;
            };
            // SAFETY: the module's getXXnam_r with a NUL-terminated name, an entry and
            // buffer of the given sizes and an errno out-pointer.
            ask(&|e, b, l, er| unsafe { f(c.as_ptr(), e, b, l, er) })
        };
        let by_id = |f: Option<ById>, id: u32| -> Verdict {
            let Some(f) = f else {
                return Verdict::Absent;
            };
            // SAFETY: the module's getXXid_r, as above.
            ask(&|e, b, l, er| unsafe { f(id, e, b, l, er) })
        };
        let v = match &q {
            Query::UserName(n) => by_name(pwnam, n),
            Query::Uid(u) => by_id(pwuid, *u),
            Query::GroupName(n) => by_name(grnam, n),
            Query::Gid(g) => by_id(grgid, *g),
        };
        let word = match v {
            Verdict::Found => "found",
            Verdict::Absent => "absent",
            Verdict::Unavailable => "unavail",
        };
        if writeln!(out, "{word} {}", q.line()).is_err() {
            return 1;
        }
    }
    let _ = out.flush();
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_besides_files_and_smith() {
        let conf = "# comment\npasswd:  files smith sss [NOTFOUND=return] ldap systemd\ngroup: files [SUCCESS=merge] extrausers smith\nshadow: files\n";
        assert_eq!(other_sources(conf, "passwd"), ["sss", "ldap", "systemd"]);
        assert_eq!(other_sources(conf, "group"), ["extrausers"]);
        assert!(other_sources(conf, "hosts").is_empty());
        assert!(other_sources("passwd: files ../evil\n", "passwd").is_empty());
    }

    #[test]
    fn queries_round_trip() {
        for q in [
            Query::UserName("alice".into()),
            Query::Uid(7),
            Query::GroupName("ops".into()),
            Query::Gid(9),
        ] {
            assert_eq!(Query::parse(&q.line()), Some(q));
        }
    }
}
