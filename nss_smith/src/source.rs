//! The process-wide "current cache": which mapping lookups use, and noticing when hostd
//! replaced the file.
//!
//! Owns: the published mapping (`Mutex<Slot>`, touched only when something changes), a
//! generation counter bumped on every change, each thread's own reference to the
//! mapping it uses (`thread_local!`), and the freshness checks:
//! - on every call, one atomic load of the `stale` word inside the mapping (hostd sets
//!   it in the old file after renaming the new one over it): no syscall;
//! - at most once per second per process (`CLOCK_MONOTONIC_COARSE`, a vDSO read), a
//!   `stat` of the path compared with the mapped file's inode, size and mtime: the
//!   backstop for a file replaced without the flag, or removed.
//!
//! Hot path: a thread whose generation matches the global one uses its own `Arc` with
//! no shared read-modify-write at all, so 16 threads scale. An old mapping is unmapped
//! when the last thread holding it moves on (its `Arc` drops), never under a reader.
//!
//! Must never: block for long (the mutex is only tried for a bounded time; after a
//! `fork()` in the middle of a reload, the child maps privately instead of waiting),
//! start threads, or hand out a view after its mapping could be unmapped.

use crate::mapping::{stat_path, FileId, MapError, Mapping};
use smith_proto::cache::CacheView;
use std::cell::RefCell;
use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

/// How often (at most) the path is stat'ed as a backstop.
pub const STAT_INTERVAL_MS: u64 = 1000;

/// Why no cache view is available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub MapError);

#[derive(Default)]
struct Slot {
    map: Option<Arc<Mapping>>,
    /// Identity of the last file that failed to load (not re-parsed while unchanged).
    bad: Option<FileId>,
    last_error: Option<MapError>,
}

/// One cache file path and its current mapping.
pub struct Source {
    path: &'static CStr,
    slot: Mutex<Slot>,
    generation: AtomicU64,
    next_stat_ms: AtomicU64,
}

struct Local {
    source: usize,
    generation: u64,
    map: Option<Arc<Mapping>>,
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local { source: 0, generation: 0, map: None })
    };
}

/// Milliseconds of `CLOCK_MONOTONIC_COARSE` (vDSO: no syscall).
pub fn coarse_now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1000) + (ts.tv_nsec as u64) / 1_000_000
}

/// Locks `m`, trying for at most ~50 ms. `None` if another thread holds it that long,
/// or forever (a `fork()` while another thread held it: the child must not hang).
/// A poisoned lock is recovered: the slot is always consistent between statements.
fn lock_bounded<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    for i in 0..100u32 {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => {
                if i < 10 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(std::time::Duration::from_micros(500));
                }
            }
        }
    }
    None
}

impl Source {
    pub const fn new(path: &'static CStr) -> Source {
        Source {
            path,
            slot: Mutex::new(Slot {
                map: None,
                bad: None,
                last_error: None,
            }),
            // Starts at 1 so a thread's zero-initialized local never matches.
            generation: AtomicU64::new(1),
            next_stat_ms: AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> &'static CStr {
        self.path
    }

    fn id(&self) -> usize {
        self as *const Source as usize
    }

    /// Runs `f` on the current cache view. `Err` when there is no valid cache.
    pub fn with_view<R>(&self, f: impl FnOnce(&CacheView<'_>) -> R) -> Result<R, Unavailable> {
        self.maybe_stat();
        let mut f = Some(f);
        let fast = LOCAL.try_with(|cell| {
            let Ok(mut local) = cell.try_borrow_mut() else {
                return None;
            };
            let generation = self.generation.load(Ordering::Acquire);
            let fresh = local.source == self.id()
                && local.generation == generation
                && local.map.as_ref().is_some_and(|m| !m.is_stale());
            if !fresh {
                let (g, m) = self.current();
                local.source = self.id();
                local.generation = g;
                local.map = m;
            }
            let f = f.take()?;
            Some(match &local.map {
                Some(m) => Ok(f(m.view())),
                None => Err(self.last_error()),
            })
        });
        match fast {
            Ok(Some(r)) => r,
            // Thread-local storage unavailable (thread exiting) or re-entered: use the
            // shared mapping directly.
            _ => {
                let Some(f) = f.take() else {
                    return Err(Unavailable(MapError::Open(libc::EAGAIN)));
                };
                match self.current().1 {
                    Some(m) => Ok(f(m.view())),
                    None => Err(self.last_error()),
                }
            }
        }
    }

    /// The current mapping (for enumeration, which keeps one for its whole walk).
    pub fn current_mapping(&self) -> Result<Arc<Mapping>, Unavailable> {
        self.maybe_stat();
        self.current().1.ok_or_else(|| self.last_error())
    }

    fn last_error(&self) -> Unavailable {
        let e = lock_bounded(&self.slot)
            .and_then(|s| s.last_error.clone())
            .unwrap_or(MapError::Open(libc::ENOENT));
        Unavailable(e)
    }

    /// The published mapping, (re)loading it if there is none or it went stale.
    fn current(&self) -> (u64, Option<Arc<Mapping>>) {
        let Some(mut slot) = lock_bounded(&self.slot) else {
            // Could not get the lock in time: map privately for this call.
            return (0, Mapping::open(self.path, None).ok().map(Arc::new));
        };
        let reload = match &slot.map {
            None => true,
            Some(m) => m.is_stale(),
        };
        if reload {
            self.reload(&mut slot);
        }
        (self.generation.load(Ordering::Acquire), slot.map.clone())
    }

    fn reload(&self, slot: &mut Slot) {
        match Mapping::open(self.path, slot.bad) {
            Ok(m) => {
                slot.map = Some(Arc::new(m));
                slot.bad = None;
                slot.last_error = None;
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => {
                slot.bad = e.bad_file();
                slot.last_error = Some(e);
                if slot.map.take().is_some() {
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// The once-a-second backstop: if the file at the path is not the one mapped (or
    /// is gone), reload (or drop) it.
    fn maybe_stat(&self) {
        let now = coarse_now_ms();
        let next = self.next_stat_ms.load(Ordering::Relaxed);
        if now < next {
            return;
        }
        if self
            .next_stat_ms
            .compare_exchange(
                next,
                now + STAT_INTERVAL_MS,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return; // another thread does this round's check
        }
        let on_disk = stat_path(self.path);
        let Some(mut slot) = lock_bounded(&self.slot) else {
            return;
        };
        let mapped = slot.map.as_ref().map(|m| m.id());
        if on_disk != mapped && (mapped.is_some() || on_disk != slot.bad) {
            self.reload(&mut slot);
        }
    }

    /// Forces the next call to stat the path (tests).
    #[cfg(test)]
    pub fn expire_stat_timer(&self) {
        self.next_stat_ms.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::tests::{is_root, write_file};
    use smith_proto::cache::{build, STALE_OFFSET};
    use std::ffi::CString;

    fn leak_source(path: &std::path::Path) -> &'static Source {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let c: &'static CStr = Box::leak(c.into_boxed_c_str());
        Box::leak(Box::new(Source::new(c)))
    }

    fn uid_of(s: &Source, name: &[u8]) -> Result<Option<u32>, Unavailable> {
        s.with_view(|v| v.user_by_name(name).ok().flatten().map(|u| u.uid))
    }

    fn contents_with_uid(uid: u32) -> Vec<u8> {
        let mut c = crate::lookup::tests::contents();
        c.users[0].uid = uid;
        c.users[0].gid = uid;
        build(&c).unwrap()
    }

    /// hostd's replacement protocol: write new, rename over, flag the old one stale.
    fn replace(path: &std::path::Path, bytes: &[u8]) {
        let old = std::fs::OpenOptions::new().write(true).open(path).ok();
        write_file(path, bytes);
        if let Some(old) = old {
            std::os::unix::fs::FileExt::write_at(&old, &1u32.to_le_bytes(), STALE_OFFSET as u64)
                .unwrap();
        }
    }

    #[test]
    fn missing_then_present_then_replaced_then_removed() {
        if !is_root() {
            eprintln!("SKIPPED: needs root (the cache file must be root-owned)");
            return;
        }
        let dir = crate::test_dir("source");
        let path = dir.join("nss.cache");
        let s = leak_source(&path);
        assert!(matches!(
            uid_of(s, b"alice"),
            Err(Unavailable(MapError::Open(libc::ENOENT)))
        ));
        write_file(&path, &contents_with_uid(200_001));
        // No mapping yet: the next call tries to load immediately.
        assert_eq!(uid_of(s, b"alice"), Ok(Some(200_001)));
        assert_eq!(uid_of(s, b"nobody-here"), Ok(None));
        // Replaced with the stale flag: seen on the very next call, no stat needed.
        replace(&path, &contents_with_uid(200_005));
        assert_eq!(uid_of(s, b"alice"), Ok(Some(200_005)));
        // Replaced without the flag: the stat backstop catches it.
        write_file(&path, &contents_with_uid(200_006));
        assert_eq!(uid_of(s, b"alice"), Ok(Some(200_005)), "not yet: timer");
        s.expire_stat_timer();
        assert_eq!(uid_of(s, b"alice"), Ok(Some(200_006)));
        // Removed: unavailable after the backstop, never "not found".
        std::fs::remove_file(&path).unwrap();
        s.expire_stat_timer();
        assert!(uid_of(s, b"alice").is_err());
        // Garbage: unavailable.
        write_file(&path, b"not a cache file at all, but long enough? no.");
        assert!(uid_of(s, b"alice").is_err());
        assert!(
            uid_of(s, b"alice").is_err(),
            "known-bad file stays unavailable"
        );
        write_file(&path, &contents_with_uid(200_007));
        assert_eq!(uid_of(s, b"alice"), Ok(Some(200_007)));
    }

    #[test]
    fn threads_see_replacements_and_never_crash() {
        if !is_root() {
            eprintln!("SKIPPED: needs root (the cache file must be root-owned)");
            return;
        }
        let dir = crate::test_dir("source-threads");
        let path = dir.join("nss.cache");
        write_file(&path, &contents_with_uid(200_100));
        let s = leak_source(&path);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut handles = Vec::new();
        for _ in 0..16 {
            let stop = stop.clone();
            handles.push(std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                // Until the writer is done and this thread has seen the last file.
                while !(stop.load(Ordering::Relaxed) && seen.contains(&200_300))
                    && std::time::Instant::now() < deadline
                {
                    if let Ok(Some(uid)) = uid_of(s, b"alice") {
                        seen.insert(uid);
                    }
                }
                seen
            }));
        }
        for i in 1..=200u32 {
            replace(&path, &contents_with_uid(200_100 + i));
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let seen = h.join().unwrap();
            assert!(
                seen.contains(&200_300),
                "every thread switched to the last file: {seen:?}"
            );
        }
    }
}
