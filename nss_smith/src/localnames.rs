//! The names in `/etc/passwd`, for `initgroups` (issue 14, D4).
//!
//! glibc merges `initgroups` across every module (without an `initgroups:` line it
//! does not stop at the first SUCCESS), so a local user who takes a Smith user's name
//! would get the Smith user's groups (`smith-sudo` included) until hostd rebuilds the
//! cache, and forever while hostd is down. `_nss_smith_initgroups_dyn` therefore never
//! adds groups to a name that is in `/etc/passwd`, checked here.
//!
//! Owns: a per-process set of the file's names (64-bit hashes, sorted, with a 4096-bit
//! filter in front; immutable once built, shared as an `Arc`), parsed with the shared `smith_proto::local` rules,
//! rebuilt when the file's identity changes (checked with a `stat` at most every
//! [`CHECK_INTERVAL_MS`], by one thread per round); a generation counter bumped on
//! every rebuild; and each thread's own reference to the set it last used
//! (`thread_local!`). An unreadable file makes every name local ("on doubt, local").
//!
//! Hot path (the same scheme as `source`): a thread whose set's generation is the
//! current one answers from it with no lock, no shared read-modify-write, no syscall
//! and no allocation. The slot lock (a `PidLock`: a child forked while a thread of its
//! parent held it takes it over) is taken only to rebuild the set, and by a thread
//! that has none or an older one. A thread answers from the set it holds while another
//! thread rebuilds, which is what it would have answered a moment earlier: a change to
//! the file is seen within [`CHECK_INTERVAL_MS`] (plus the rebuild), as before. A set
//! is freed when the last thread holding it moves on, never under a reader.
//!
//! Must never: wait for a lock (a sibling holding it while this thread has no current
//! set ⇒ "local" for this call: no groups added, the safe side), or be asked for names
//! it does not need (only names the cache knows as Smith users reach it).

use crate::source::coarse_now_ms;
use smith_proto::cache::name_hash;
use smith_proto::cachefile::{stat, FileId};
use smith_proto::pidlock::PidLock;
use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How often (at most) the file is stat'ed.
pub const CHECK_INTERVAL_MS: u64 = 250;
/// Tries for the slot lock before answering "local".
const LOCK_SPINS: u32 = 10;

/// Bits in [`Names::filter`].
const FILTER_BITS: usize = 4096;

/// One reading of the file.
struct Names {
    id: Option<FileId>,
    /// Could not be read (other than "does not exist"): every name is local.
    unreadable: bool,
    hashes: Vec<u64>,
    /// One bit per hash's top 12 bits: a clear bit settles "not local" with one load
    /// (the Smith users asked about are, but for a conflict, never in the file).
    filter: [u64; FILTER_BITS / 64],
}

fn filter_bit(hash: u64) -> (usize, u64) {
    let bit = (hash >> 52) as usize; // < FILTER_BITS
    (bit / 64, 1 << (bit % 64))
}

impl Names {
    /// `hash` is `name_hash` of the name asked about.
    #[inline]
    fn contains(&self, hash: u64) -> bool {
        if self.unreadable {
            return true;
        }
        let (word, mask) = filter_bit(hash);
        self.filter[word] & mask != 0 && self.hashes.binary_search(&hash).is_ok()
    }

    fn new(id: Option<FileId>, unreadable: bool, mut hashes: Vec<u64>) -> Names {
        hashes.sort_unstable();
        let mut filter = [0u64; FILTER_BITS / 64];
        for &h in &hashes {
            let (word, mask) = filter_bit(h);
            filter[word] |= mask;
        }
        Names {
            id,
            unreadable,
            hashes,
            filter,
        }
    }

    fn read(path: &Path, id: Option<FileId>) -> Names {
        match smith_proto::local::read(path) {
            Ok(text) => {
                let hashes = text
                    .as_deref()
                    .map(|t| {
                        smith_proto::local::entries(t)
                            .map(|e| name_hash(e.name))
                            .collect()
                    })
                    .unwrap_or_default();
                Names::new(id, false, hashes)
            }
            Err(_) => Names::new(id, true, Vec::new()),
        }
    }
}

/// The published set (`None`: not read yet, or dropped by a child's take-over).
struct Slot {
    names: Option<Arc<Names>>,
}

const fn empty_slot() -> Slot {
    Slot { names: None }
}

pub struct LocalNames {
    path: &'static str,
    slot: PidLock<Slot>,
    /// Bumped each time the slot gets a new set; starts at 1 so that a thread's
    /// zero-initialized reference never matches.
    generation: AtomicU64,
    next_check_ms: AtomicU64,
}

/// A thread's reference to the set it last used.
struct Held {
    owner: usize,
    generation: u64,
    names: Option<Arc<Names>>,
}

thread_local! {
    static HELD: RefCell<Held> = const {
        RefCell::new(Held { owner: 0, generation: 0, names: None })
    };
}

impl LocalNames {
    pub const fn new(path: &'static str) -> LocalNames {
        LocalNames {
            path,
            slot: PidLock::new(empty_slot()),
            generation: AtomicU64::new(1),
            next_check_ms: AtomicU64::new(0),
        }
    }

    fn id(&self) -> usize {
        self as *const LocalNames as usize
    }

    /// Whether `name` is (or may be) a local account.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.contains_hash(coarse_now_ms(), name_hash(name))
    }

    /// [`contains`](Self::contains) for the name whose `smith_proto::cache::name_hash`
    /// is `hash` (the cache lookup computed it already), at `now` (`coarse_now_ms`,
    /// read once per call by the caller).
    pub fn contains_hash(&self, now: u64, hash: u64) -> bool {
        self.maybe_check(now);
        let answer = HELD.try_with(|cell| {
            let Ok(mut held) = cell.try_borrow_mut() else {
                return None;
            };
            let current = self.generation.load(Ordering::Acquire);
            if held.owner != self.id() || held.generation != current || held.names.is_none() {
                let (generation, names) = self.current()?;
                held.owner = self.id();
                held.generation = generation;
                held.names = Some(names);
            }
            held.names.as_ref().map(|n| n.contains(hash))
        });
        match answer {
            Ok(Some(local)) => local,
            // Thread-local storage gone (thread exiting) or re-entered: the shared set.
            Ok(None) | Err(_) => match self.current() {
                Some((_, names)) => names.contains(hash),
                // A sibling keeps the slot busy and this thread has no current set.
                None => true,
            },
        }
    }

    /// The published set, read if there is none. `None`: the slot stayed busy.
    fn current(&self) -> Option<(u64, Arc<Names>)> {
        let mut slot = self.slot.lock(LOCK_SPINS, empty_slot)?;
        let names = match &slot.names {
            Some(n) => n.clone(),
            None => {
                // Identity first, then contents: a file replaced in between is read
                // again at the next check (never the other way round).
                let path = Path::new(self.path);
                let id = stat(path);
                self.publish(&mut slot, Names::read(path, id))
            }
        };
        // Read under the lock: `generation` only moves under it, so it names `names`.
        Some((self.generation.load(Ordering::Acquire), names))
    }

    fn publish(&self, slot: &mut Slot, names: Names) -> Arc<Names> {
        let names = Arc::new(names);
        slot.names = Some(names.clone());
        self.generation.fetch_add(1, Ordering::AcqRel);
        names
    }

    /// The periodic check (one thread per round): if the file is not the one read (or
    /// the last reading failed), read it again.
    #[inline]
    fn maybe_check(&self, now: u64) {
        let next = self.next_check_ms.load(Ordering::Relaxed);
        if now >= next {
            self.check_round(now, next);
        }
    }

    #[cold]
    #[inline(never)]
    fn check_round(&self, now: u64, next: u64) {
        if self
            .next_check_ms
            .compare_exchange(
                next,
                now + CHECK_INTERVAL_MS,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return; // another thread does this round's check
        }
        let path = Path::new(self.path);
        let id = stat(path);
        let Some(mut slot) = self.slot.lock(LOCK_SPINS, empty_slot) else {
            // Busy: the next call checks again, so a change is not missed for a round.
            self.next_check_ms.store(0, Ordering::Relaxed);
            return;
        };
        let stale = match &slot.names {
            // Not read yet, or emptied by a child's take-over of the lock: read it now,
            // and move the generation so that threads holding an older set (in a child,
            // the one its forking thread held) take the new one.
            None => true,
            Some(n) => n.id != id || n.unreadable,
        };
        if stale {
            self.publish(&mut slot, Names::read(path, id));
        }
    }

    /// Forces the next call to stat the file (tests).
    #[cfg(test)]
    pub fn expire(&self) {
        self.next_check_ms.store(0, Ordering::Relaxed);
    }

    /// Leaves the slot lock held by another process, as a child forked mid-rebuild
    /// sees it (tests).
    #[cfg(test)]
    pub fn leave_locked_by(&self, pid: u32) {
        self.slot.leave_held_by(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leak(p: &Path) -> &'static str {
        Box::leak(p.to_str().unwrap().to_string().into_boxed_str())
    }

    #[test]
    fn names_follow_the_file() {
        let d = crate::test_dir("localnames");
        let p = d.join("passwd");
        std::fs::write(&p, "root:x:0:0::/root:/bin/sh\n").unwrap();
        let l = LocalNames::new(leak(&p));
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
        assert!(!l.contains(b"alice"), "not yet: timer");
        l.expire();
        assert!(l.contains(b"alice"));
        // Missing: nobody is local; unreadable (a directory): everyone is.
        std::fs::remove_file(&p).unwrap();
        l.expire();
        assert!(!l.contains(b"alice"));
        std::fs::create_dir(&p).unwrap();
        l.expire();
        assert!(l.contains(b"anyone"));
        // Readable again: re-read at the next check even though nothing else changed.
        std::fs::remove_dir(&p).unwrap();
        std::fs::write(&p, "bob:x:1501:1501::/home/bob:/bin/sh\n").unwrap();
        l.expire();
        assert!(l.contains(b"bob"));
        assert!(!l.contains(b"anyone"));
    }

    #[test]
    fn many_names_pass_the_filter_and_others_do_not() {
        let d = crate::test_dir("localnames-many");
        let p = d.join("passwd");
        let text: String = (0..5000)
            .map(|i| format!("l{i:05}:x:{}:{}::/:/bin/sh\n", 10_000 + i, 10_000 + i))
            .collect();
        std::fs::write(&p, text).unwrap();
        let l = LocalNames::new(leak(&p));
        for i in 0..5000 {
            assert!(l.contains(format!("l{i:05}").as_bytes()), "{i}");
        }
        let false_hits = (0..5000)
            .filter(|i| l.contains(format!("u{i:05}").as_bytes()))
            .count();
        assert_eq!(false_hits, 0, "64-bit hashes: no collision expected");
    }

    /// A sibling holds the slot (another thread rebuilding): a thread with no current
    /// set answers "local" (the safe side) at once; one with the current set keeps
    /// answering from it.
    #[test]
    fn a_busy_slot_never_blocks_and_never_says_not_local_without_a_set() {
        let d = crate::test_dir("localnames-busy");
        let p = d.join("passwd");
        std::fs::write(&p, "root:x:0:0::/root:/bin/sh\n").unwrap();
        let l: &'static LocalNames = Box::leak(Box::new(LocalNames::new(leak(&p))));
        assert!(
            !l.contains(b"alice"),
            "this thread now holds the current set"
        );
        l.leave_locked_by(smith_proto::pidlock::my_pid());
        let t = std::time::Instant::now();
        assert!(
            !l.contains(b"alice"),
            "answered from the set this thread holds"
        );
        let other = std::thread::spawn(move || l.contains(b"alice"))
            .join()
            .unwrap();
        assert!(other, "a thread without a set: local");
        assert!(t.elapsed() < std::time::Duration::from_millis(500));
    }

    /// D9: a child forked while a thread of its parent held the slot lock (mid-rebuild)
    /// takes it over: it rebuilds the set at once and answers from the file, instead of
    /// answering "local" for every name forever.
    #[test]
    fn a_child_forked_mid_rebuild_takes_the_slot_over() {
        let d = crate::test_dir("localnames-fork");
        let p = d.join("passwd");
        std::fs::write(&p, "root:x:0:0::/root:/bin/sh\n").unwrap();
        let l: &'static LocalNames = Box::leak(Box::new(LocalNames::new(leak(&p))));
        // This thread (the one that forks) holds the current set.
        assert!(!l.contains(b"alice"));
        let parent = smith_proto::pidlock::my_pid();
        l.leave_locked_by(parent.wrapping_add(1));
        // A thread that never used the set: it must take the lock to get one.
        let answer = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            let a = (l.contains(b"root"), l.contains(b"alice"));
            (a, t.elapsed())
        })
        .join()
        .unwrap();
        assert_eq!(answer.0, (true, false));
        assert!(
            answer.1 < std::time::Duration::from_millis(100),
            "{:?}",
            answer.1
        );
        // The forking thread, still holding the set of before the take-over, sees the
        // next change of the file (the take-over emptied the slot; the check refills it
        // and moves the generation).
        assert!(
            !l.contains(b"alice"),
            "this thread holds the current set again"
        );
        l.leave_locked_by(parent.wrapping_add(1));
        let tmp = d.join("passwd+");
        std::fs::write(&tmp, "alice:x:1500:1500::/:/bin/sh\n").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        l.expire();
        assert!(l.contains(b"alice"));
    }

    /// Threads that hold a set see a rebuilt one (the generation moves) and never read
    /// one that is being freed.
    #[test]
    fn threads_follow_changes() {
        let d = crate::test_dir("localnames-threads");
        let p = d.join("passwd");
        std::fs::write(&p, "root:x:0:0::/root:/bin/sh\n").unwrap();
        let l: &'static LocalNames = Box::leak(Box::new(LocalNames::new(leak(&p))));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                    let mut saw_alice = false;
                    while !(stop.load(Ordering::Relaxed) && saw_alice)
                        && std::time::Instant::now() < deadline
                    {
                        assert!(l.contains(b"root"));
                        saw_alice |= l.contains(b"alice");
                    }
                    saw_alice
                })
            })
            .collect();
        for i in 0..50 {
            let tmp = d.join("passwd+");
            std::fs::write(
                &tmp,
                format!("root:x:0:0::/root:/bin/sh\nu{i}:x:1500:1500::/:/bin/sh\n"),
            )
            .unwrap();
            std::fs::rename(&tmp, &p).unwrap();
            l.expire();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let tmp = d.join("passwd+");
        std::fs::write(
            &tmp,
            "root:x:0:0::/root:/bin/sh\nalice:x:1500:1500::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        l.expire();
        stop.store(true, Ordering::Relaxed);
        // Threads notice at their next expired check; keep expiring until they are done.
        let mut results = Vec::new();
        for h in handles {
            while !h.is_finished() {
                l.expire();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            results.push(h.join().unwrap());
        }
        assert!(results.iter().all(|&s| s), "{results:?}");
    }
}
