//! The glibc NSS ABI: the `_nss_smith_*` symbols glibc looks up in
//! `libnss_smith.so.2`, written by hand against `<nss.h>`, `<pwd.h>` and `<grp.h>`.
//!
//! Owns: converting C arguments into slices and numbers, catching every panic
//! (`catch_unwind` at each entry; a panic becomes `NSS_STATUS_UNAVAIL` + `EAGAIN`),
//! turning an [`Outcome`] into an `nss_status` and `*errnop`, filling `struct passwd` /
//! `struct group` from the offsets the layout core returns, and growing glibc's gid
//! array for `initgroups_dyn` with `realloc` as glibc requires.
//!
//! Must never: unwind into C, abort, write `*errnop` on success, write outside
//! `buffer[..buflen]`, or trust a NULL pointer.
//!
//! Status/errno contract (glibc manual, "NSS Modules Interface"):
//! - found: `NSS_STATUS_SUCCESS`, errno untouched;
//! - authoritative miss: `NSS_STATUS_NOTFOUND`, `ENOENT`;
//! - buffer too small: `NSS_STATUS_TRYAGAIN`, `ERANGE` (glibc retries bigger);
//! - no cache and no daemon: `NSS_STATUS_UNAVAIL`, `ENOENT` (nothing there) or `EAGAIN`
//!   (a daemon exists but did not answer in time).

use crate::client::Daemon;
use crate::enumerate::Enumerator;
use crate::layout::{GroupLayout, PasswdLayout};
use crate::localnames::LocalNames;
use crate::lookup::{self, GidSink};
use crate::resolve::{Outcome, Resolver};
use crate::source::Source;
use libc::{c_char, c_int, c_long, gid_t, group, passwd, size_t, uid_t};
use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

/// `enum nss_status` from `<nss.h>`.
pub const NSS_STATUS_TRYAGAIN: c_int = -2;
pub const NSS_STATUS_UNAVAIL: c_int = -1;
pub const NSS_STATUS_NOTFOUND: c_int = 0;
pub const NSS_STATUS_SUCCESS: c_int = 1;

/// The cache file (same text as `smith_proto::paths::CACHE_FILE`; a test checks).
pub static CACHE: Source = Source::new(c"/var/lib/smith/nss.cache");
/// hostd's socket (same text as `smith_proto::paths::SOCKET`).
pub static DAEMON: Daemon = Daemon::new("/run/smith/hostd.sock");
/// Local account names (never given Smith's groups by `initgroups`).
pub static LOCAL: LocalNames = LocalNames::new("/etc/passwd");
pub static RESOLVER: Resolver = Resolver {
    cache: &CACHE,
    daemon: &DAEMON,
    local: &LOCAL,
};
static PW_ENUM: Enumerator = Enumerator::new();
static GR_ENUM: Enumerator = Enumerator::new();

static QUIET: Once = Once::new();

/// Panics must not print into the host program's stderr (it may be a socket or a
/// terminal of someone else's program). The hook belongs to this library's own copy of
/// std, so the host program's own hook (if it is a Rust program) is not affected.
fn quiet_panics() {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

fn set_errno(errnop: *mut c_int, e: c_int) {
    if !errnop.is_null() {
        // SAFETY: glibc passes a valid pointer to the thread's errno; checked non-NULL.
        unsafe { *errnop = e };
    }
}

/// Runs `f` with panics caught; maps the outcome to a status, writing errno as needed.
fn guard<T>(errnop: *mut c_int, f: impl FnOnce() -> Outcome<T>, on_found: impl FnOnce(T)) -> c_int {
    quiet_panics();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Outcome::Found(t)) => match catch_unwind(AssertUnwindSafe(|| on_found(t))) {
            Ok(()) => NSS_STATUS_SUCCESS,
            Err(_) => {
                set_errno(errnop, libc::EAGAIN);
                NSS_STATUS_UNAVAIL
            }
        },
        Ok(Outcome::NotFound) => {
            set_errno(errnop, libc::ENOENT);
            NSS_STATUS_NOTFOUND
        }
        Ok(Outcome::TooSmall) => {
            set_errno(errnop, libc::ERANGE);
            NSS_STATUS_TRYAGAIN
        }
        Ok(Outcome::Unavailable(e)) => {
            set_errno(errnop, e);
            NSS_STATUS_UNAVAIL
        }
        Err(_) => {
            set_errno(errnop, libc::EAGAIN);
            NSS_STATUS_UNAVAIL
        }
    }
}

/// The caller's buffer as a slice (empty if NULL).
///
/// # Safety
/// `buffer` must be NULL or valid for writes of `buflen` bytes for the whole call, and
/// not otherwise accessed during it (glibc's contract for `*_r` functions).
unsafe fn buffer_slice<'a>(buffer: *mut c_char, buflen: size_t) -> &'a mut [u8] {
    if buffer.is_null() {
        return &mut [];
    }
    // SAFETY: guaranteed by the caller (see above).
    unsafe { std::slice::from_raw_parts_mut(buffer as *mut u8, buflen) }
}

/// The name argument as bytes, `None` if NULL.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string valid for the call.
unsafe fn name_bytes<'a>(name: *const c_char) -> Option<&'a [u8]> {
    if name.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    Some(unsafe { CStr::from_ptr(name) }.to_bytes())
}

/// # Safety
/// `result` must be valid for writes; `buffer` must be the buffer the layout was placed
/// in (offsets are inside it).
unsafe fn write_passwd(result: *mut passwd, buffer: *mut c_char, l: PasswdLayout) {
    // SAFETY: offsets returned by the layout core are < buflen of `buffer`; `result` is
    // valid (checked non-NULL by the caller).
    unsafe {
        (*result).pw_name = buffer.add(l.name);
        (*result).pw_passwd = buffer.add(l.passwd);
        (*result).pw_uid = l.uid as uid_t;
        (*result).pw_gid = l.gid as gid_t;
        (*result).pw_gecos = buffer.add(l.gecos);
        (*result).pw_dir = buffer.add(l.dir);
        (*result).pw_shell = buffer.add(l.shell);
    }
}

/// # Safety
/// As [`write_passwd`].
unsafe fn write_group(result: *mut group, buffer: *mut c_char, l: GroupLayout) {
    // SAFETY: offsets are inside `buffer` and `members` is pointer-aligned (the layout
    // core aligned it against the buffer's real address).
    unsafe {
        (*result).gr_name = buffer.add(l.name);
        (*result).gr_passwd = buffer.add(l.passwd);
        (*result).gr_gid = l.gid as gid_t;
        (*result).gr_mem = buffer.add(l.members) as *mut *mut c_char;
    }
}

fn bad_args(errnop: *mut c_int) -> c_int {
    set_errno(errnop, libc::EINVAL);
    NSS_STATUS_UNAVAIL
}

/// # Safety
/// glibc's `getpwnam_r` module contract.
#[no_mangle]
pub unsafe extern "C" fn _nss_smith_getpwnam_r(
    name: *const c_char,
    result: *mut passwd,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    if result.is_null() {
        return bad_args(errnop);
    }
    // SAFETY: glibc's contract for the arguments.
    let (name, buf) = unsafe { (name_bytes(name), buffer_slice(buffer, buflen)) };
    guard(
        errnop,
        || match name {
            Some(n) => RESOLVER.passwd_by_name(n, buf),
            None => Outcome::NotFound,
        },
        // SAFETY: `result` non-NULL; layout offsets are inside `buffer`.
        |l| unsafe { write_passwd(result, buffer, l) },
    )
}

/// # Safety
/// glibc's `getpwuid_r` module contract.
#[no_mangle]
pub unsafe extern "C" fn _nss_smith_getpwuid_r(
    uid: uid_t,
    result: *mut passwd,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    if result.is_null() {
        return bad_args(errnop);
    }
    // SAFETY: glibc's contract for the buffer.
    let buf = unsafe { buffer_slice(buffer, buflen) };
    guard(
        errnop,
        || RESOLVER.passwd_by_uid(uid, buf),
        // SAFETY: as in getpwnam_r.
        |l| unsafe { write_passwd(result, buffer, l) },
    )
}

/// # Safety
/// glibc's `getgrnam_r` module contract.
#[no_mangle]
pub unsafe extern "C" fn _nss_smith_getgrnam_r(
    name: *const c_char,
    result: *mut group,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    if result.is_null() {
        return bad_args(errnop);
    }
    // SAFETY: glibc's contract for the arguments.
    let (name, buf) = unsafe { (name_bytes(name), buffer_slice(buffer, buflen)) };
    guard(
        errnop,
        || match name {
            Some(n) => RESOLVER.group_by_name(n, buf),
            None => Outcome::NotFound,
        },
        // SAFETY: `result` non-NULL; layout offsets are inside `buffer`.
        |l| unsafe { write_group(result, buffer, l) },
    )
}

/// # Safety
/// glibc's `getgrgid_r` module contract.
#[no_mangle]
pub unsafe extern "C" fn _nss_smith_getgrgid_r(
    gid: gid_t,
    result: *mut group,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    if result.is_null() {
        return bad_args(errnop);
    }
    // SAFETY: glibc's contract for the buffer.
    let buf = unsafe { buffer_slice(buffer, buflen) };
    guard(
        errnop,
        || RESOLVER.group_by_gid(gid, buf),
        // SAFETY: as in getgrnam_r.
        |l| unsafe { write_group(result, buffer, l) },
    )
}

/// `set*ent`/`end*ent`: SUCCESS only if the cursor was really reset (D18: it used to
/// report SUCCESS when the cursor's lock could not be taken).
fn reset(e: &Enumerator) -> c_int {
    quiet_panics();
    match catch_unwind(AssertUnwindSafe(|| e.reset())) {
        Ok(true) => NSS_STATUS_SUCCESS,
        Ok(false) | Err(_) => NSS_STATUS_UNAVAIL,
    }
}

#[no_mangle]
pub extern "C" fn _nss_smith_setpwent(_stayopen: c_int) -> c_int {
    reset(&PW_ENUM)
}

#[no_mangle]
pub extern "C" fn _nss_smith_endpwent() -> c_int {
    reset(&PW_ENUM)
}

#[no_mangle]
pub extern "C" fn _nss_smith_setgrent(_stayopen: c_int) -> c_int {
    reset(&GR_ENUM)
}

#[no_mangle]
pub extern "C" fn _nss_smith_endgrent() -> c_int {
    reset(&GR_ENUM)
}

/// # Safety
/// glibc's `getpwent_r` module contract.
#[no_mangle]
pub unsafe extern "C" fn _nss_smith_getpwent_r(
    result: *mut passwd,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    if result.is_null() {
        return bad_args(errnop);
    }
    // SAFETY: glibc's contract for the buffer.
    let buf = unsafe { buffer_slice(buffer, buflen) };
    guard(
        errnop,
        || PW_ENUM.next(&CACHE, buf, lookup::user_at),
        // SAFETY: as in getpwnam_r.
        |l| unsafe { write_passwd(result, buffer, l) },
    )
}

/// # Safety
/// glibc's `getgrent_r` module contract.
#[no_mangle]
pub unsafe extern "C" fn _nss_smith_getgrent_r(
    result: *mut group,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    if result.is_null() {
        return bad_args(errnop);
    }
    // SAFETY: glibc's contract for the buffer.
    let buf = unsafe { buffer_slice(buffer, buflen) };
    guard(
        errnop,
        || GR_ENUM.next(&CACHE, buf, lookup::group_at),
        // SAFETY: as in getgrnam_r.
        |l| unsafe { write_group(result, buffer, l) },
    )
}

/// glibc's growable gid array for `initgroups_dyn`: `*groupsp` holds `*size` slots of
/// which `*start` are used; grow with `realloc` (glibc frees it), never past `limit`
/// when `limit > 0`.
struct GlibcGids {
    start: *mut c_long,
    size: *mut c_long,
    groupsp: *mut *mut gid_t,
    limit: c_long,
    /// realloc failed: report TRYAGAIN/ENOMEM.
    out_of_memory: bool,
}

impl GidSink for GlibcGids {
    fn add(&mut self, gid: u32) -> bool {
        // SAFETY: the pointers were checked non-NULL at entry and follow glibc's
        // contract: `*groupsp` is a malloc'ed array of `*size` gids; `*start <= *size`
        // was checked at entry and is checked again here (we only ever raise both).
        unsafe {
            let start = *self.start;
            let groups = *self.groupsp;
            if start < 0 || groups.is_null() || start > *self.size {
                return false;
            }
            let used = std::slice::from_raw_parts(groups, start as usize);
            if used.contains(&(gid as gid_t)) {
                return true;
            }
            if start >= *self.size {
                if self.limit > 0 && *self.size >= self.limit {
                    return false; // the caller's limit: stop, not an error
                }
                let mut newsize = (*self.size).max(1).saturating_mul(2);
                if self.limit > 0 {
                    newsize = newsize.min(self.limit);
                }
                let bytes = (newsize as usize).saturating_mul(std::mem::size_of::<gid_t>());
                let grown = libc::realloc(groups as *mut libc::c_void, bytes) as *mut gid_t;
                if grown.is_null() {
                    self.out_of_memory = true;
                    return false;
                }
                *self.groupsp = grown;
                *self.size = newsize;
            }
            *(*self.groupsp).add(start as usize) = gid as gid_t;
            *self.start = start + 1;
            true
        }
    }
}

/// # Safety
/// glibc's `initgroups_dyn` module contract.
#[no_mangle]
pub unsafe extern "C" fn _nss_smith_initgroups_dyn(
    user: *const c_char,
    skipgroup: gid_t,
    start: *mut c_long,
    size: *mut c_long,
    groupsp: *mut *mut gid_t,
    limit: c_long,
    errnop: *mut c_int,
) -> c_int {
    if start.is_null() || size.is_null() || groupsp.is_null() {
        return bad_args(errnop);
    }
    // D14: glibc never passes `*start > *size` (or negative counts), but the array
    // growth below relies on `*start <= *size`; one comparison instead of trust.
    // SAFETY: the three pointers are non-NULL (checked above) and glibc's to read.
    let (used, capacity, array_null) = unsafe { (*start, *size, (*groupsp).is_null()) };
    if used < 0 || capacity < 0 || used > capacity || (array_null && used > 0) {
        return bad_args(errnop);
    }
    // SAFETY: glibc's contract for `user`.
    let user = unsafe { name_bytes(user) };
    let mut sink = GlibcGids {
        start,
        size,
        groupsp,
        limit,
        out_of_memory: false,
    };
    let status = guard(
        errnop,
        || match user {
            Some(u) => RESOLVER.groups_of_user(u, skipgroup, &mut sink),
            None => Outcome::NotFound,
        },
        |()| {},
    );
    if sink.out_of_memory {
        set_errno(errnop, libc::ENOMEM);
        return NSS_STATUS_TRYAGAIN;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_paths_match_the_contract() {
        assert_eq!(
            CACHE.path().to_str().unwrap(),
            smith_proto::paths::CACHE_FILE
        );
        assert_eq!(
            crate::client::BYPASS_ENV.to_str().unwrap(),
            smith_proto::paths::NSS_BYPASS_ENV
        );
        assert_eq!(DAEMON.path(), smith_proto::paths::SOCKET);
    }

    /// D14: `*start > *size` is refused before anything is written (before, the grown
    /// array could still be smaller than `start` and the gid went out of bounds).
    #[test]
    fn initgroups_refuses_start_beyond_size() {
        // SAFETY: a malloc'ed array as glibc would pass it.
        let mut groups = unsafe { libc::malloc(std::mem::size_of::<gid_t>()) } as *mut gid_t;
        let (mut start, mut size, mut errno) = (5 as c_long, 1 as c_long, 0);
        // SAFETY: valid pointers; the name is NUL-terminated.
        let st = unsafe {
            _nss_smith_initgroups_dyn(
                c"alice".as_ptr(),
                0,
                &mut start,
                &mut size,
                &mut groups,
                0,
                &mut errno,
            )
        };
        assert_eq!(
            (st, errno, start, size),
            (NSS_STATUS_UNAVAIL, libc::EINVAL, 5, 1)
        );
        // SAFETY: glibc frees it with free().
        unsafe { libc::free(groups as *mut libc::c_void) };
    }

    #[test]
    fn glibc_gid_array_grows_and_respects_limit() {
        // SAFETY: a malloc'ed array as glibc would pass it.
        let mut groups = unsafe { libc::malloc(std::mem::size_of::<gid_t>()) } as *mut gid_t;
        // SAFETY: one slot allocated.
        unsafe { *groups = 100 };
        let (mut start, mut size) = (1 as c_long, 1 as c_long);
        let mut sink = GlibcGids {
            start: &mut start,
            size: &mut size,
            groupsp: &mut groups,
            limit: 3,
            out_of_memory: false,
        };
        assert!(sink.add(200_010));
        assert!(sink.add(200_010), "duplicate is a no-op");
        assert!(sink.add(200_011));
        assert!(!sink.add(200_012), "limit reached");
        assert_eq!((start, size), (3, 3));
        // SAFETY: three slots are initialized.
        let got = unsafe { std::slice::from_raw_parts(groups, 3) }.to_vec();
        assert_eq!(got, vec![100, 200_010, 200_011]);
        // SAFETY: glibc frees it with free().
        unsafe { libc::free(groups as *mut libc::c_void) };
    }
}
