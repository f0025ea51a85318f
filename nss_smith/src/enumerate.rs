//! Enumeration (`setpwent`/`getpwent_r`/`endpwent` and the group equivalents).
//!
//! Owns: one cursor per database per process. A walk keeps the mapping it started
//! with, so a cache replaced mid-walk neither repeats nor skips entries; `set*ent`
//! and `end*ent` reset the cursor (and release the mapping). An entry that does not
//! fit the buffer is not consumed, so glibc's retry with a bigger buffer gets it.
//!
//! Must never: wait for a lock held across `fork()` (taken over), wait unboundedly for a
//! sibling (bounded try, then UNAVAIL), or
//! use the socket (hostd has no enumeration request; without a cache: UNAVAIL).

use crate::lookup::CacheAnswer;
use crate::mapping::Mapping;
use crate::resolve::Outcome;
use crate::source::Source;
use smith_proto::cache::CacheView;
use smith_proto::pidlock::PidLock;
use std::sync::Arc;

struct Cursor {
    map: Option<Arc<Mapping>>,
    next: u64,
}

/// A per-process enumeration cursor.
pub struct Enumerator {
    cursor: PidLock<Cursor>,
}

const fn start() -> Cursor {
    Cursor { map: None, next: 0 }
}

impl Default for Enumerator {
    fn default() -> Self {
        Self::new()
    }
}

impl Enumerator {
    pub const fn new() -> Enumerator {
        Enumerator {
            cursor: PidLock::new(start()),
        }
    }

    fn with_cursor<R>(&self, f: impl FnOnce(&mut Cursor) -> R) -> Option<R> {
        // glibc serializes *ent calls; a cursor left locked by a thread of the process
        // we were forked from is taken over (and restarted), never waited for.
        let mut g = self.cursor.lock(10, start)?;
        Some(f(&mut g))
    }

    /// `set*ent` / `end*ent`: back to the start, copy released. `false` if the cursor
    /// could not be reached (another thread kept it busy).
    pub fn reset(&self) -> bool {
        self.with_cursor(|c| *c = start()).is_some()
    }

    /// `get*ent_r`: the next entry, placed by `at`.
    pub fn next<T>(
        &self,
        source: &Source,
        buf: &mut [u8],
        at: impl Fn(&CacheView<'_>, u64, &mut [u8]) -> CacheAnswer<T>,
    ) -> Outcome<T> {
        self.with_cursor(|c| {
            if c.map.is_none() {
                match source.current_mapping() {
                    Ok(m) => c.map = Some(m),
                    Err(_) => return Outcome::Unavailable(libc::ENOENT),
                }
            }
            let Some(map) = c.map.as_ref() else {
                return Outcome::Unavailable(libc::ENOENT);
            };
            // Skip records that fail validation; bounded by the number of records.
            loop {
                match at(map.view(), c.next, buf) {
                    CacheAnswer::Found(t) => {
                        c.next += 1;
                        return Outcome::Found(t);
                    }
                    CacheAnswer::Missing => return Outcome::NotFound,
                    CacheAnswer::TooSmall => return Outcome::TooSmall,
                    CacheAnswer::Corrupt => c.next += 1,
                }
            }
        })
        .unwrap_or(Outcome::Unavailable(libc::EAGAIN))
    }
}
