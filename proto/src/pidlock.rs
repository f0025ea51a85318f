//! A small lock a `fork()`ed child can take over (issue 14, D9).
//!
//! The lock word holds the pid of the process whose thread holds it (0 = free). All
//! threads of one process share a pid, so a holder with *our* pid is a sibling thread
//! (we wait a bounded time, or give up); a holder with another pid was a thread of the
//! process we were forked from, which does not exist in this child and will never
//! unlock: the child takes the lock over and puts a fresh value in place *without
//! reading or dropping* the one the parent's thread may have been writing (it is
//! leaked: at worst one mapping or one socket descriptor per such fork).
//!
//! Our pid without a syscall ([`my_pid`]): `getpid()` is a real system call (glibc has
//! not cached it since 2.25), and asking it on every lock made each lookup that locks
//! pay one. The pid is kept instead in a page of its own that is marked
//! `MADV_WIPEONFORK`: the kernel gives every process made by copying this one
//! (`fork`, `_Fork`, `clone` without `CLONE_VM`, whoever calls it and whether or not
//! glibc's `atfork` handlers run) that page zero-filled, so a child reads 0, asks
//! `getpid()` once and keeps the answer. A process sharing our memory (`vfork`,
//! `CLONE_VM`) reads our pid, as a sibling thread would: right, since it shares the
//! locks' data too. No `pthread_atfork` handler is registered, so there is nothing to
//! unregister when the module is `dlclose`d (libpam unloads modules at `pam_end`); the
//! page itself is left mapped (one page per process and load of the library). Where
//! the page cannot be had (a kernel before 4.14, a sandbox refusing the `mmap` or
//! `madvise` with an error), every lock asks `getpid()`, as before. (The `mmap` and
//! `madvise` happen once, at a process's first lock; `MADV_WIPEONFORK` is the advice
//! fork-safe RNGs use, and OpenSSH's seccomp sandbox, for one, allows it and answers
//! advice it does not know with EINVAL.)
//!
//! Owns: that protocol. Must never: wait unboundedly, or let a child read data a
//! vanished thread left half-written, or tell a child it has its parent's pid.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

pub struct PidLock<T> {
    owner: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through a guard, and at most one guard exists at a
// time (the owner word is taken with compare-exchange); T itself moves between threads.
unsafe impl<T: Send> Sync for PidLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for PidLock<T> {}

pub struct PidGuard<'a, T> {
    lock: &'a PidLock<T>,
}

fn getpid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() as u32 }
}

/// The page holding our pid (see the module doc); null until the first lock.
static PID_PAGE: AtomicPtr<AtomicU32> = AtomicPtr::new(std::ptr::null_mut());
/// The page could not be made: every lock asks `getpid()`.
static NO_PID_PAGE: AtomicBool = AtomicBool::new(false);
const PID_PAGE_LEN: usize = 4096;

/// This process's pid: one load from the wipe-on-fork page, `getpid()` only in the
/// first call of a process (or of a child), or on every call where the page could not
/// be made.
#[inline]
pub fn my_pid() -> u32 {
    let page = PID_PAGE.load(Ordering::Acquire);
    if page.is_null() {
        return first_pid();
    }
    // SAFETY: a published page is a live, writable, 4-aligned mapping that is never
    // unmapped (see `first_pid`), and is only ever accessed through this atomic.
    let cached = unsafe { &*page };
    match cached.load(Ordering::Relaxed) {
        0 => {
            // A child whose copy of the page the kernel wiped (or a race with the
            // publishing thread, which stores the same pid).
            let pid = getpid();
            cached.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

#[cold]
fn first_pid() -> u32 {
    let pid = getpid();
    if NO_PID_PAGE.load(Ordering::Relaxed) {
        return pid;
    }
    // SAFETY: a fresh private anonymous mapping; the kernel picks the address; the
    // result is checked for MAP_FAILED before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PID_PAGE_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        NO_PID_PAGE.store(true, Ordering::Relaxed);
        return pid;
    }
    // SAFETY: `p` is the page-aligned mapping of PID_PAGE_LEN bytes made above, used by
    // nothing else: wiping it in a child touches no other data.
    if unsafe { libc::madvise(p, PID_PAGE_LEN, libc::MADV_WIPEONFORK) } != 0 {
        // SAFETY: unmapping the mapping made above, never published.
        unsafe { libc::munmap(p, PID_PAGE_LEN) };
        NO_PID_PAGE.store(true, Ordering::Relaxed);
        return pid;
    }
    let word = p as *mut AtomicU32;
    // SAFETY: the page is ours, writable, zero-filled and page-aligned (so aligned for
    // an AtomicU32); a zero-filled AtomicU32 is a valid one.
    unsafe { (*word).store(pid, Ordering::Relaxed) };
    if PID_PAGE
        .compare_exchange(
            std::ptr::null_mut(),
            word,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // Another thread published its page first; ours was never seen by anyone.
        // SAFETY: unmapping the mapping made above, never published.
        unsafe { libc::munmap(p, PID_PAGE_LEN) };
    }
    pid
}

impl<T> PidLock<T> {
    pub const fn new(value: T) -> PidLock<T> {
        PidLock {
            owner: AtomicU32::new(0),
            data: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, trying `spins` times (yielding, then sleeping 500 µs between
    /// tries once past 10). `fresh` makes the value a child installs when it takes over
    /// a lock its parent's thread held. `None`: a sibling thread held it all that time.
    pub fn lock(&self, spins: u32, fresh: impl Fn() -> T) -> Option<PidGuard<'_, T>> {
        let me = my_pid();
        for i in 0..spins.max(1) {
            match self
                .owner
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Some(PidGuard { lock: self }),
                Err(holder) if holder == me => {
                    if i + 1 == spins {
                        break;
                    }
                    if i < 10 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(std::time::Duration::from_micros(500));
                    }
                }
                Err(holder) => {
                    if self
                        .owner
                        .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        // SAFETY: we own the lock now; the old value is overwritten
                        // without being read or dropped (it may be half-written by a
                        // thread that no longer exists in this process).
                        unsafe { std::ptr::write(self.data.get(), fresh()) };
                        return Some(PidGuard { lock: self });
                    }
                }
            }
        }
        None
    }

    /// Tries once (a sibling holding it ⇒ `None` at once).
    pub fn try_lock(&self, fresh: impl Fn() -> T) -> Option<PidGuard<'_, T>> {
        self.lock(1, fresh)
    }

    /// Marks the lock held by process `pid`, as a child forked while a thread of its
    /// parent held it sees it. Only for tests of the fork case (here and in the modules).
    #[doc(hidden)]
    pub fn leave_held_by(&self, pid: u32) {
        self.owner.store(pid, Ordering::Release);
    }
}

impl<T> std::ops::Deref for PidGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard is the lock's only holder.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> std::ops::DerefMut for PidGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard is the lock's only holder, and `&mut self` is unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for PidGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.owner.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_wait_and_a_forked_child_takes_over() {
        let l = PidLock::new(5u32);
        {
            let mut g = l.lock(10, || 0).unwrap();
            *g += 1;
            // A sibling (same pid) cannot take it while held.
            assert!(l.try_lock(|| 0).is_none());
        }
        assert_eq!(*l.try_lock(|| 0).unwrap(), 6);
        // Held by "the parent" (another pid) at fork time: taken over, value replaced.
        l.leave_held_by(my_pid().wrapping_add(1));
        let g = l.try_lock(|| 42).unwrap();
        assert_eq!(*g, 42);
    }

    /// A copy of this process made by `fork()` (glibc's, atfork handlers run) or by a
    /// raw `clone` system call (no handler runs: only the kernel's wipe of the pid page
    /// tells the child it is one). Returns the child's exit status.
    fn in_child(raw_clone: bool, child: impl FnOnce() -> bool) -> i32 {
        let pid = if raw_clone {
            // SAFETY: test code; clone with only SIGCHLD is fork without glibc's
            // bookkeeping; the child only reads atomics, makes system calls and exits.
            let pid = unsafe {
                libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0)
            };
            pid as libc::pid_t
        } else {
            // SAFETY: test code; the child only does async-signal-safe-enough work and
            // exits.
            unsafe { libc::fork() }
        };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = child();
            // SAFETY: exiting the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    }

    fn exited_0(status: i32) -> bool {
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }

    #[test]
    fn the_cached_pid_is_ours_and_every_kind_of_child_gets_its_own() {
        let parent = my_pid();
        assert_eq!(parent, getpid());
        assert!(
            !PID_PAGE.load(Ordering::Acquire).is_null(),
            "no MADV_WIPEONFORK page on this kernel: every lock pays a getpid()"
        );
        assert_eq!(my_pid(), parent, "cached");
        for raw_clone in [false, true] {
            let status = in_child(raw_clone, || {
                let me = getpid();
                me != parent && my_pid() == me && my_pid() == me
            });
            assert!(exited_0(status), "raw clone: {raw_clone}");
        }
        assert_eq!(my_pid(), parent, "the parent's page is untouched");
    }

    /// The property the lock exists for, through the real mechanism: a thread holds the
    /// lock while the process is copied; the child (whose only thread is the copier)
    /// takes it over at once. Fails if the child saw its parent's pid (it would wait
    /// for a "sibling" that does not exist, then give up).
    fn fork_while_a_thread_holds(l: &'static PidLock<u32>, raw_clone: bool) {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _g = l.lock(10, || 0).unwrap();
            tx.send(()).unwrap();
            done_rx.recv().unwrap();
        });
        rx.recv().unwrap();
        // The parent's pid is cached (the holder's lock call made the page).
        assert_eq!(my_pid(), getpid());
        let status = in_child(raw_clone, || {
            let t0 = std::time::Instant::now();
            let ok = l.lock(100, || 7).map(|g| *g) == Some(7);
            ok && t0.elapsed() < std::time::Duration::from_millis(5)
        });
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(
            exited_0(status),
            "child (raw clone: {raw_clone}) took over the lock at once"
        );
    }

    #[test]
    fn a_real_fork_while_a_thread_holds_the_lock() {
        static L: PidLock<u32> = PidLock::new(1);
        fork_while_a_thread_holds(&L, false);
    }

    #[test]
    fn a_raw_clone_while_a_thread_holds_the_lock() {
        static L: PidLock<u32> = PidLock::new(1);
        fork_while_a_thread_holds(&L, true);
    }
}
