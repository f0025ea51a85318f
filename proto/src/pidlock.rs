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
//! Owns: that protocol. Must never: wait unboundedly, or let a child read data a
//! vanished thread left half-written.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};

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

fn my_pid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() as u32 }
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

    #[test]
    fn a_real_fork_while_a_thread_holds_the_lock() {
        static L: PidLock<u32> = PidLock::new(1);
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _g = L.lock(10, || 0).unwrap();
            tx.send(()).unwrap();
            done_rx.recv().unwrap();
        });
        rx.recv().unwrap();
        // SAFETY: test code; the child only does async-signal-safe-enough work and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let t0 = std::time::Instant::now();
            let ok = L.lock(100, || 7).map(|g| *g) == Some(7);
            let fast = t0.elapsed() < std::time::Duration::from_millis(5);
            // SAFETY: exiting the child without running the parent's destructors.
            unsafe { libc::_exit(if ok && fast { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child took over the lock at once"
        );
    }
}
