//! The names in `/etc/passwd`, for `initgroups` (issue 14, D4).
//!
//! glibc merges `initgroups` across every module (without an `initgroups:` line it
//! does not stop at the first SUCCESS), so a local user who takes a Smith user's name
//! would get the Smith user's groups (`smith-sudo` included) until hostd rebuilds the
//! cache, and forever while hostd is down. `_nss_smith_initgroups_dyn` therefore never
//! adds groups to a name that is in `/etc/passwd`, checked here.
//!
//! Owns: a per-process set of the file's names (64-bit hashes, sorted), parsed with
//! the shared `smith_proto::local` rules, re-read when the file's identity changes
//! (checked with a `stat` at most every [`CHECK_INTERVAL_MS`]). An unreadable file
//! makes every name local ("on doubt, local").
//!
//! Must never: wait for a lock (a sibling holding it ⇒ "local" for this call: no groups
//! added, the safe side), or be asked for names it does not need (only names the cache
//! knows as Smith users reach it).

use crate::source::coarse_now_ms;
use smith_proto::cache::name_hash;
use smith_proto::cachefile::{stat, FileId};
use smith_proto::pidlock::PidLock;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// How often (at most) the file is stat'ed.
pub const CHECK_INTERVAL_MS: u64 = 250;

struct State {
    id: Option<FileId>,
    /// Could not be read (other than "does not exist").
    unreadable: bool,
    hashes: Vec<u64>,
}

const fn unknown() -> State {
    State {
        id: None,
        unreadable: true,
        hashes: Vec::new(),
    }
}

pub struct LocalNames {
    path: &'static str,
    state: PidLock<State>,
    next_check_ms: AtomicU64,
}

impl LocalNames {
    pub const fn new(path: &'static str) -> LocalNames {
        LocalNames {
            path,
            state: PidLock::new(unknown()),
            next_check_ms: AtomicU64::new(0),
        }
    }

    /// Whether `name` is (or may be) a local account.
    pub fn contains(&self, name: &[u8]) -> bool {
        let Some(mut st) = self.state.lock(10, unknown) else {
            return true;
        };
        let now = coarse_now_ms();
        if now >= self.next_check_ms.load(Ordering::Relaxed) {
            self.next_check_ms
                .store(now + CHECK_INTERVAL_MS, Ordering::Relaxed);
            let path = Path::new(self.path);
            let id = stat(path);
            if id != st.id || st.unreadable {
                *st = match smith_proto::local::read(path) {
                    Ok(text) => {
                        let mut hashes: Vec<u64> = text
                            .as_deref()
                            .map(|t| {
                                smith_proto::local::entries(t)
                                    .map(|e| name_hash(e.name))
                                    .collect()
                            })
                            .unwrap_or_default();
                        hashes.sort_unstable();
                        State {
                            id,
                            unreadable: false,
                            hashes,
                        }
                    }
                    Err(_) => State {
                        id,
                        unreadable: true,
                        hashes: Vec::new(),
                    },
                };
            }
        }
        st.unreadable || st.hashes.binary_search(&name_hash(name)).is_ok()
    }

    /// Forces the next call to stat the file (tests).
    #[cfg(test)]
    pub fn expire(&self) {
        self.next_check_ms.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_file() {
        let d = crate::test_dir("localnames");
        let p = d.join("passwd");
        std::fs::write(&p, "root:x:0:0::/root:/bin/sh\n").unwrap();
        let path: &'static str = Box::leak(p.to_str().unwrap().to_string().into_boxed_str());
        let l = LocalNames::new(path);
        assert!(l.contains(b"root"));
        assert!(!l.contains(b"alice"));
        // useradd alice (a new inode, like shadow-utils' rename).
        let tmp = d.join("passwd+");
        std::fs::write(
            &tmp,
            "root:x:0:0::/root:/bin/sh\nalice:x:1500:1500::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        l.expire();
        assert!(l.contains(b"alice"));
        // Missing: nobody is local; unreadable (a directory): everyone is.
        std::fs::remove_file(&p).unwrap();
        l.expire();
        assert!(!l.contains(b"alice"));
        std::fs::create_dir(&p).unwrap();
        l.expire();
        assert!(l.contains(b"anyone"));
    }
}
