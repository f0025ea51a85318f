//! `libnss_smith.so.2`: the glibc NSS module that makes Smith users and groups visible
//! to every program on a host (`passwd: files smith`, `group: files smith`).
//!
//! Owns: answering `getpwnam`/`getpwuid`/`getgrnam`/`getgrgid`/`initgroups` and
//! enumeration from the cache file hostd writes (`/var/lib/smith/nss.cache`,
//! memory-mapped), falling back to hostd's socket when the file is missing or invalid.
//!
//! Must never (it runs inside sshd, sudo, ls, systemd and multithreaded servers): start
//! a thread or a runtime, unwind into C or abort, block for more than ~300 ms, write to
//! the cache, leak a descriptor into exec'd programs, answer "no such user" on a
//! transport or cache failure, or hand out uid/gid 0 or a system id.
//!
//! Layers, from the C boundary in:
//! - [`ffi`]: the exported `_nss_smith_*` symbols (thin: pointers ⇄ slices, statuses);
//! - [`resolve`]: one question → cache, then socket, with the NOTFOUND/UNAVAIL rules;
//! - [`enumerate`]: per-process `*ent` cursors;
//! - [`source`] + [`mapping`]: the shared mapping and its freshness checks;
//! - [`client`]: the bounded socket fallback;
//! - [`lookup`] + [`layout`]: the pure, safe core over `CacheView` and the caller's buffer.

pub mod client;
pub mod enumerate;
pub mod ffi;
pub mod layout;
pub mod localnames;
pub mod lookup;
pub mod mapping;
pub mod resolve;
pub mod source;

/// A fresh, private directory for a unit test.
#[cfg(test)]
pub(crate) fn test_dir(label: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "nss-smith-{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
