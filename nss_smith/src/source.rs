//! The process-wide "current cache": which copy lookups use, and noticing when hostd
//! replaced the file.
//!
//! Owns: the published copy (a `PidLock`ed slot, touched only when something
//! changes), a generation counter bumped on every change, each thread's own reference
//! to the copy it uses (`thread_local!`), and the freshness check: at most every
//! [`STAT_INTERVAL_MS`] per process (`CLOCK_MONOTONIC_COARSE`, a vDSO read, decides), a
//! `stat` of the path compared with the loaded file's device, inode, size and mtime.
//! hostd replaces the file by rename, so a new version is a new inode.
//!
//! Hot path: a thread whose generation matches the global one uses its own `Arc` with
//! no shared read-modify-write and no syscall, so 16 threads scale. An old copy is freed
//! when the last thread holding it moves on (its `Arc` drops), never under a reader.
//!
//! Worst case memory (D10): a thread keeps the copy it last used until it resolves
//! again or exits, so a process holds at most one copy per distinct version its threads
//! last used, and never more copies than it has threads (each copy is the file's size:
//! 1.7 MB at 10,000 users). Replaced files are not kept alive on disk: a copy holds no
//! descriptor and no mapping of the file.
//!
//! Must never: block for long (the slot lock is tried for a bounded time; a thread that
//! cannot get it keeps the copy it has, or loads one privately; a child forked while a
//! thread of its parent held the lock takes it over, see `smith_proto::pidlock`), start
//! threads, or hand out a view after its copy could be freed.

use crate::mapping::{stat_path, FileId, MapError, Mapping};
use smith_proto::cache::CacheView;
use smith_proto::pidlock::{PidGuard, PidLock};
use std::cell::RefCell;
use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How often (at most) the path is stat'ed to notice a replaced file.
pub const STAT_INTERVAL_MS: u64 = 250;
/// Tries for the slot lock (~50 ms) before giving up.
const LOCK_SPINS: u32 = 100;

/// Why no cache view is available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub MapError);

#[derive(Default)]
struct Slot {
    map: Option<Arc<Mapping>>,
    /// Identity of the last file that failed to load (not re-read while unchanged).
    bad: Option<FileId>,
    last_error: Option<MapError>,
}

const fn empty_slot() -> Slot {
    Slot {
        map: None,
        bad: None,
        last_error: None,
    }
}

/// One cache file path and its current copy.
pub struct Source {
    path: &'static CStr,
    slot: PidLock<Slot>,
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

impl Source {
    pub const fn new(path: &'static CStr) -> Source {
        Source {
            path,
            slot: PidLock::new(empty_slot()),
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

    fn lock(&self) -> Option<PidGuard<'_, Slot>> {
        self.slot.lock(LOCK_SPINS, empty_slot)
    }

    /// Runs `f` on the current cache view. `Err` when there is no valid cache.
    pub fn with_view<R>(&self, f: impl FnOnce(&CacheView<'_>) -> R) -> Result<R, Unavailable> {
        self.with_view_at(coarse_now_ms(), f)
    }

    /// [`with_view`](Self::with_view) at `now` (`coarse_now_ms`), for a caller that
    /// reads the clock once for several checks.
    #[inline]
    pub fn with_view_at<R>(
        &self,
        now: u64,
        f: impl FnOnce(&CacheView<'_>) -> R,
    ) -> Result<R, Unavailable> {
        self.maybe_stat(now);
        let mut f = Some(f);
        let fast = LOCAL.try_with(|cell| {
            let Ok(mut local) = cell.try_borrow_mut() else {
                return None;
            };
            let generation = self.generation.load(Ordering::Acquire);
            let fresh =
                local.source == self.id() && local.generation == generation && local.map.is_some();
            if !fresh {
                match self.current() {
                    Some((g, m)) => {
                        local.source = self.id();
                        local.generation = g;
                        local.map = m;
                    }
                    // The slot is busy (another thread is loading a new version): keep
                    // using the copy this thread has, if it has one for this source.
                    None if local.source == self.id() && local.map.is_some() => {}
                    None => return None,
                }
            }
            let f = f.take()?;
            Some(match &local.map {
                Some(m) => Ok(f(m.view())),
                None => Err(self.last_error()),
            })
        });
        match fast {
            Ok(Some(r)) => r,
            // Thread-local storage unavailable (thread exiting) or re-entered, or the
            // slot busy and nothing in hand: use the shared copy, or a private one.
            _ => {
                let Some(f) = f.take() else {
                    return Err(Unavailable(MapError::Io(libc::EAGAIN)));
                };
                match self.current() {
                    Some((_, Some(m))) => Ok(f(m.view())),
                    Some((_, None)) => Err(self.last_error()),
                    None => match Mapping::open(self.path, None) {
                        Ok(m) => Ok(f(m.view())),
                        Err(e) => Err(Unavailable(e)),
                    },
                }
            }
        }
    }

    /// The current copy (for enumeration, which keeps one for its whole walk).
    pub fn current_mapping(&self) -> Result<Arc<Mapping>, Unavailable> {
        self.maybe_stat(coarse_now_ms());
        match self.current() {
            Some((_, Some(m))) => Ok(m),
            Some((_, None)) => Err(self.last_error()),
            None => Mapping::open(self.path, None)
                .map(Arc::new)
                .map_err(Unavailable),
        }
    }

    fn last_error(&self) -> Unavailable {
        let e = self
            .lock()
            .and_then(|s| s.last_error.clone())
            .unwrap_or(MapError::Io(libc::ENOENT));
        Unavailable(e)
    }

    /// The published copy, loading it if there is none. `None`: the slot stayed busy.
    fn current(&self) -> Option<(u64, Option<Arc<Mapping>>)> {
        let mut slot = self.lock()?;
        if slot.map.is_none() {
            self.reload(&mut slot);
        }
        Some((self.generation.load(Ordering::Acquire), slot.map.clone()))
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

    /// The periodic check: if the file at the path is not the one loaded (or is gone),
    /// reload (or drop) it.
    #[inline]
    fn maybe_stat(&self, now: u64) {
        let next = self.next_stat_ms.load(Ordering::Relaxed);
        if now >= next {
            self.stat_round(now, next);
        }
    }

    #[cold]
    #[inline(never)]
    fn stat_round(&self, now: u64, next: u64) {
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
        let Some(mut slot) = self.lock() else {
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

    /// Leaves the slot lock held by another process, as a child forked mid-reload sees it.
    #[cfg(test)]
    pub fn leave_locked_by(&self, pid: u32) {
        self.slot.leave_held_by(pid);
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
            Err(Unavailable(MapError::Io(libc::ENOENT)))
        ));
        write_file(&path, &contents_with_uid(200_001));
        // Nothing loaded yet: the next call tries to load immediately.
        assert_eq!(uid_of(s, b"alice"), Ok(Some(200_001)));
        assert_eq!(uid_of(s, b"nobody-here"), Ok(None));
        // Replaced (hostd's protocol): seen at the next periodic stat.
        replace(&path, &contents_with_uid(200_005));
        assert_eq!(uid_of(s, b"alice"), Ok(Some(200_001)), "not yet: timer");
        s.expire_stat_timer();
        assert_eq!(uid_of(s, b"alice"), Ok(Some(200_005)));
        // Replaced without the stale flag: the same.
        write_file(&path, &contents_with_uid(200_006));
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

    /// Issue 14, D1: `> nss.cache` (or `cp backup nss.cache`, `truncate`) under a
    /// process that is resolving. Before issue 14 the file was mapped `MAP_SHARED` and
    /// the next lookup died of SIGBUS (the whole test binary with it).
    #[test]
    fn truncated_in_place_under_a_running_resolver_it_keeps_answering() {
        if !is_root() {
            eprintln!("SKIPPED: needs root (the cache file must be root-owned)");
            return;
        }
        let dir = crate::test_dir("source-truncate");
        let path = dir.join("nss.cache");
        write_file(&path, &contents_with_uid(200_001));
        let s = leak_source(&path);
        assert_eq!(uid_of(s, b"alice"), Ok(Some(200_001)));
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(0).unwrap();
        for _ in 0..1000 {
            assert_eq!(uid_of(s, b"alice"), Ok(Some(200_001)));
        }
        // Rewritten in place with garbage of the old size, then noticed by the stat:
        // the garbage is refused and the lookup is unavailable (never "not found").
        std::os::unix::fs::FileExt::write_at(&f, &vec![0x5A; 4096], 0).unwrap();
        s.expire_stat_timer();
        assert!(uid_of(s, b"alice").is_err());
        // A good file in place again (same inode): served again.
        f.set_len(0).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, &contents_with_uid(200_007), 0).unwrap();
        s.expire_stat_timer();
        assert_eq!(uid_of(s, b"alice"), Ok(Some(200_007)));
    }

    /// Issue 14, D9: a child forked while another thread of its parent held the slot
    /// lock. Before, every stat tick cost the child ~50 ms of spinning and, after the
    /// next change, every lookup did (and loaded privately), forever.
    #[test]
    fn a_child_forked_mid_reload_takes_the_lock_over() {
        if !is_root() {
            eprintln!("SKIPPED: needs root (the cache file must be root-owned)");
            return;
        }
        let dir = crate::test_dir("source-fork");
        let path = dir.join("nss.cache");
        write_file(&path, &contents_with_uid(200_001));
        let s = leak_source(&path);
        assert_eq!(uid_of(s, b"alice"), Ok(Some(200_001)));
        // SAFETY: test code; getpid has no preconditions.
        let parent = unsafe { libc::getpid() } as u32;
        s.leave_locked_by(parent.wrapping_add(1));
        replace(&path, &contents_with_uid(200_003));
        s.expire_stat_timer();
        let t = std::time::Instant::now();
        for _ in 0..100 {
            assert_eq!(uid_of(s, b"alice"), Ok(Some(200_003)));
        }
        assert!(
            t.elapsed() < std::time::Duration::from_millis(500),
            "{:?} for 100 lookups",
            t.elapsed()
        );
    }
}
