//! The libpam ABI, by hand: the few functions and constants pam_smith needs from
//! `<security/pam_modules.h>`, `<security/pam_ext.h>` and `<security/_pam_types.h>`,
//! and a small safe wrapper around the handle.
//!
//! Linked with `-lpam` (`#[link(name = "pam")]`): every Linux-PAM module does so, it
//! records the dependency in the ELF (`DT_NEEDED libpam.so.0`) so the module loads in
//! any process with `RTLD_NOW`, and libpam is already mapped in every process that loads
//! a PAM module, so it costs nothing at run time.
//!
//! Owns: the [`PamHandle`] trait the phases are written against (so each phase's
//! decision, records and return code are unit-tested with a fake handle, without
//! libpam; pamtester and sshd drive the real one), and its libpam implementation
//! [`Pam`]: PAM items (user, service, rhost, tty) read with `pam_get_item`, PAM
//! environment variables, module data (`pam_set_data`/`pam_get_data`) for the open
//! session, and logging through `pam_syslog` (facility `LOG_AUTHPRIV`, the module name
//! prefixed by libpam; control characters replaced).
//!
//! Must never: hand out a pointer libpam owns beyond the call, read the process
//! environment instead of PAM's (a user controls the former under sudo), or prompt
//! (`pam_get_user` converses "login:" in any phase when `PAM_USER` is unset: D6; the
//! user is read with `pam_get_item(PAM_USER)` only).

use std::ffi::{c_char, c_int, c_void, CStr, CString};

/// Opaque `pam_handle_t`.
#[repr(C)]
pub struct PamHandleT {
    _private: [u8; 0],
}

pub const PAM_SUCCESS: c_int = 0;
pub const PAM_SERVICE_ERR: c_int = 3;
pub const PAM_SYSTEM_ERR: c_int = 4;
pub const PAM_PERM_DENIED: c_int = 6;
pub const PAM_AUTHINFO_UNAVAIL: c_int = 9;
pub const PAM_USER_UNKNOWN: c_int = 10;
pub const PAM_SESSION_ERR: c_int = 14;
pub const PAM_IGNORE: c_int = 25;

pub const PAM_SERVICE: c_int = 1;
pub const PAM_USER: c_int = 2;
pub const PAM_TTY: c_int = 3;
pub const PAM_RHOST: c_int = 4;

type Cleanup = unsafe extern "C" fn(*mut PamHandleT, *mut c_void, c_int);

#[link(name = "pam")]
extern "C" {
    fn pam_get_item(pamh: *const PamHandleT, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_getenv(pamh: *mut PamHandleT, name: *const c_char) -> *const c_char;
    fn pam_set_data(
        pamh: *mut PamHandleT,
        module_data_name: *const c_char,
        data: *mut c_void,
        cleanup: Option<Cleanup>,
    ) -> c_int;
    fn pam_get_data(
        pamh: *const PamHandleT,
        module_data_name: *const c_char,
        data: *mut *const c_void,
    ) -> c_int;
    fn pam_syslog(pamh: *const PamHandleT, priority: c_int, fmt: *const c_char, ...);
}

/// The PAM items pam_smith reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    Service,
    Rhost,
    Tty,
}

impl Item {
    fn raw(self) -> c_int {
        match self {
            Item::Service => PAM_SERVICE,
            Item::Rhost => PAM_RHOST,
            Item::Tty => PAM_TTY,
        }
    }
}

/// What a phase needs from PAM (Kanidm's `PamHandler` is the model): implemented by
/// [`Pam`] over libpam, and by a fake in the unit tests.
pub trait PamHandle {
    /// `PAM_USER` as raw bytes; `None` if unset (never prompts).
    fn user(&self) -> Option<Vec<u8>>;
    /// A string item, "" if unset.
    fn item(&self, item: Item) -> String;
    /// A variable of the PAM environment (what sshd sets with `pam_putenv`).
    fn getenv(&self, name: &CStr) -> Option<String>;
    /// Logs to syslog (LOG_AUTHPRIV).
    fn log(&self, prio: Priority, msg: &str);
    /// Keeps the open session's data until close.
    fn set_session(&self, data: crate::hooks::SessionData) -> bool;
    /// The data [`PamHandle::set_session`] kept, if any.
    fn session(&self) -> Option<crate::hooks::SessionData>;
}

/// A PAM handle for the duration of one module call.
pub struct Pam {
    h: *mut PamHandleT,
}

/// Syslog priorities used by the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Priority {
    fn raw(self) -> c_int {
        match self {
            Priority::Err => libc::LOG_ERR,
            Priority::Warning => libc::LOG_WARNING,
            Priority::Notice => libc::LOG_NOTICE,
            Priority::Info => libc::LOG_INFO,
            Priority::Debug => libc::LOG_DEBUG,
        }
    }
}

fn owned(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: libpam returns NUL-terminated strings that stay valid during the call; we
    // copy immediately.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

impl Pam {
    /// # Safety
    /// `h` must be the handle libpam passed to the module entry point.
    pub unsafe fn from_raw(h: *mut PamHandleT) -> Option<Pam> {
        (!h.is_null()).then_some(Pam { h })
    }

    fn raw_item(&self, item: c_int) -> *const c_void {
        let mut p: *const c_void = std::ptr::null();
        // SAFETY: valid handle and out-pointer; the items read are C strings.
        let rc = unsafe { pam_get_item(self.h, item, &mut p) };
        if rc != PAM_SUCCESS {
            return std::ptr::null();
        }
        p
    }

    /// Stores `value` as module data `name`; libpam drops it at `pam_end` (or when
    /// replaced) through `cleanup_box::<T>`.
    fn set_data<T: 'static>(&self, name: &CStr, value: T) -> bool {
        let raw = Box::into_raw(Box::new(value)) as *mut c_void;
        // SAFETY: valid handle; `raw` is a leaked Box<T> that `cleanup_box::<T>` frees.
        let rc = unsafe { pam_set_data(self.h, name.as_ptr(), raw, Some(cleanup_box::<T>)) };
        if rc != PAM_SUCCESS {
            // SAFETY: libpam did not take it; reclaim the Box we leaked above.
            drop(unsafe { Box::from_raw(raw as *mut T) });
            return false;
        }
        true
    }

    /// Module data `name`, as stored by [`Pam::set_data`] with the same `T`.
    fn get_data<T: Clone + 'static>(&self, name: &CStr) -> Option<T> {
        let mut p: *const c_void = std::ptr::null();
        // SAFETY: valid handle and out-pointer.
        let rc = unsafe { pam_get_data(self.h, name.as_ptr(), &mut p) };
        if rc != PAM_SUCCESS || p.is_null() {
            return None;
        }
        // SAFETY: only `set_data::<T>` stores under our names, so `p` is a live Box<T>
        // owned by libpam until pam_end; we clone it out.
        Some(unsafe { &*(p as *const T) }.clone())
    }
}

/// A log line with control characters (a hostile `PAM_USER` could carry newlines or
/// escapes into syslog, D18) shown as `?`.
pub fn clean_log_line(msg: &str) -> CString {
    let clean: Vec<u8> = msg
        .bytes()
        .map(|b| if b < 0x20 || b == 0x7f { b'?' } else { b })
        .collect();
    CString::new(clean).unwrap_or_default()
}

impl PamHandle for Pam {
    fn user(&self) -> Option<Vec<u8>> {
        let p = self.raw_item(PAM_USER) as *const c_char;
        if p.is_null() {
            return None;
        }
        // SAFETY: libpam returned a NUL-terminated string valid for the call.
        Some(unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
    }

    fn item(&self, item: Item) -> String {
        owned(self.raw_item(item.raw()) as *const c_char).unwrap_or_default()
    }

    fn getenv(&self, name: &CStr) -> Option<String> {
        // SAFETY: valid handle; NUL-terminated name.
        owned(unsafe { pam_getenv(self.h, name.as_ptr()) })
    }

    fn log(&self, prio: Priority, msg: &str) {
        let c = clean_log_line(msg);
        // SAFETY: valid handle; a constant "%s" format with one C string argument.
        unsafe { pam_syslog(self.h, prio.raw(), c"%s".as_ptr(), c.as_ptr()) };
    }

    fn set_session(&self, data: crate::hooks::SessionData) -> bool {
        self.set_data(crate::hooks::SESSION_DATA, data)
    }

    fn session(&self) -> Option<crate::hooks::SessionData> {
        self.get_data(crate::hooks::SESSION_DATA)
    }
}

/// libpam's cleanup callback for data stored by [`Pam::set_data`].
unsafe extern "C" fn cleanup_box<T>(_h: *mut PamHandleT, data: *mut c_void, _status: c_int) {
    if data.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `data` is the Box<T> leaked in `set_data::<T>`; libpam calls the
        // cleanup exactly once per stored value.
        drop(unsafe { Box::from_raw(data as *mut T) });
    });
}
