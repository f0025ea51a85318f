//! The exported PAM service functions (`pam_sm_*`), each wrapped in `catch_unwind`.
//!
//! Owns: turning `argc/argv` into a [`Config`], the two-stage structure every hook
//! shares: (1) find `PAM_USER` (an item: never a prompt) and answer `PAM_IGNORE` for
//! local accounts — including every name when the passwd file cannot be read — with no
//! other work and before anything that could fail; (2) the Smith logic in
//! [`crate::hooks`], which is handed stage 1's answer (the passwd file is read once).
//! A panic in stage 2 denies (`PAM_SYSTEM_ERR`); local users never reach stage 2.
//!
//! Must never: unwind into libpam, abort, or make a local account depend on the cache,
//! the daemon or the module arguments.

use crate::args::Config;
use crate::hooks::{self, Hostd, Invocation, Who};
use crate::identity::local_presence;
use crate::pam::{
    Pam, PamHandle, PamHandleT, Priority, PAM_IGNORE, PAM_SERVICE_ERR, PAM_SYSTEM_ERR,
    PAM_USER_UNKNOWN,
};
use smith_proto::local::Presence;
use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

static QUIET: Once = Once::new();

/// Panics must not print into sshd's or sudo's stderr. This library's own copy of std
/// has its own hook, so the host program's hook is not affected.
pub(crate) fn quiet_panics() {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

/// # Safety
/// `argv` must hold `argc` NUL-terminated strings (libpam's contract).
unsafe fn args(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    if argv.is_null() || argc <= 0 {
        return Vec::new();
    }
    (0..argc as usize)
        .filter_map(|i| {
            // SAFETY: i < argc, per libpam's contract.
            let p = unsafe { *argv.add(i) };
            // SAFETY: each non-NULL entry is a NUL-terminated string.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Phase {
    Account,
    OpenSession,
    CloseSession,
}

/// The shared two-stage wrapper.
///
/// # Safety
/// libpam's contract for the handle and arguments.
unsafe fn run(
    pamh: *mut PamHandleT,
    argc: c_int,
    argv: *const *const c_char,
    phase: Phase,
) -> c_int {
    quiet_panics();
    // SAFETY: libpam's handle.
    let Some(pam) = (unsafe { Pam::from_raw(pamh) }) else {
        return PAM_SYSTEM_ERR;
    };
    // SAFETY: libpam's argv.
    let argv = unsafe { args(argc, argv) };
    let config = Config::parse(argv.iter().map(String::as_str));
    let passwd = config
        .as_ref()
        .map(|c| c.passwd.clone())
        .unwrap_or_else(|_| Config::default().passwd);

    // Stage 1: who, and local accounts out.
    let stage1 = catch_unwind(AssertUnwindSafe(|| {
        let user = pam.user()?;
        let local = local_presence(&passwd, &user);
        Some(Who { name: user, local })
    }));
    let who = match stage1 {
        Ok(Some(v)) => v,
        Ok(None) => {
            return match phase {
                Phase::Account => PAM_USER_UNKNOWN,
                _ => PAM_IGNORE,
            }
        }
        Err(_) => return PAM_SYSTEM_ERR,
    };
    if let Presence::Unreadable(errno) = who.local {
        pam.log(
            Priority::Warning,
            &format!(
                "cannot read {}: {}; treating {} as a local account (Smith does not act on it)",
                passwd.display(),
                std::io::Error::from_raw_os_error(errno),
                String::from_utf8_lossy(&who.name)
            ),
        );
    }
    // A local account: Smith has no say (PAM_IGNORE whatever happens below). Only its
    // sshd sessions are looked at, to record one that came with a Smith certificate a
    // grant lets into the account (`--login deploy`), so that hostd can end it when the
    // grant goes (issue 16).
    let local = who.local.is_local();
    if local && !matches!(phase, Phase::OpenSession | Phase::CloseSession) {
        return PAM_IGNORE;
    }
    // Stage 2: Smith's say.
    let stage2 = catch_unwind(AssertUnwindSafe(|| {
        let cfg = match &config {
            Ok(c) => c,
            Err(_) if local => return PAM_IGNORE,
            Err(e) => {
                pam.log(
                    Priority::Err,
                    &format!("bad module arguments, refusing non-local users until fixed: {e}"),
                );
                return PAM_SERVICE_ERR;
            }
        };
        let rec = Hostd {
            socket: &cfg.socket,
            pending: &cfg.pending,
        };
        let inv = Invocation::current();
        match phase {
            Phase::Account => hooks::account(&pam, &rec, cfg, &who, &inv),
            Phase::OpenSession => hooks::open_session(&pam, &rec, cfg, &who, &inv),
            Phase::CloseSession => hooks::close_session(&pam, &rec, cfg, &inv),
        }
    }));
    if local {
        return PAM_IGNORE;
    }
    stage2.unwrap_or(PAM_SYSTEM_ERR)
}

/// # Safety
/// Called by libpam with a valid handle and `argc`/`argv`.
#[no_mangle]
pub unsafe extern "C" fn pam_sm_acct_mgmt(
    pamh: *mut PamHandleT,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded libpam contract.
    unsafe { run(pamh, argc, argv, Phase::Account) }
}

/// # Safety
/// Called by libpam with a valid handle and `argc`/`argv`.
#[no_mangle]
pub unsafe extern "C" fn pam_sm_open_session(
    pamh: *mut PamHandleT,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded libpam contract.
    unsafe { run(pamh, argc, argv, Phase::OpenSession) }
}

/// # Safety
/// Called by libpam with a valid handle and `argc`/`argv`.
#[no_mangle]
pub unsafe extern "C" fn pam_sm_close_session(
    pamh: *mut PamHandleT,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded libpam contract.
    unsafe { run(pamh, argc, argv, Phase::CloseSession) }
}

/// Smith does not authenticate (sshd verified the certificate): `PAM_IGNORE`.
#[no_mangle]
pub extern "C" fn pam_sm_authenticate(
    _pamh: *mut PamHandleT,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    PAM_IGNORE
}

/// No credentials to set: `PAM_IGNORE`.
#[no_mangle]
pub extern "C" fn pam_sm_setcred(
    _pamh: *mut PamHandleT,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    PAM_IGNORE
}
