//! `smith_audit`: a sudo 1.9 audit plugin in `pam_smith.so`, so that every sudo decision
//! about a Smith user is recorded, allowed and refused, whoever decided: sudoers itself
//! (a user with no sudo rule, `sudo -n` needing a password, a command the rules do not
//! allow: refusals PAM never sees) or pam_smith in sudo's account phase (issue 17).
//!
//! `activate` adds to `/etc/sudo.conf` (after sudoers' own plugins, which sudo.conf must
//! then list explicitly):
//!
//! ```text
//! Plugin smith_audit /usr/lib/<multiarch>/security/pam_smith.so with_approval
//! Plugin smith_approval /usr/lib/<multiarch>/security/pam_smith.so
//! ```
//!
//! `smith_approval` re-checks a Smith user's command against the rules of the grants
//! the login's certificate carries (issue 17). sudo audits the policy plugin's accept
//! *before* it opens approval plugins, so with `with_approval` the allowed record waits
//! for the approval's verdict: sent when it passes (with the rule that allowed it), a
//! refusal record when it refuses (sudo's `reject` callback), or at close if it never
//! ran.
//!
//! It trusts only sudo's own data: the `user_info` and `submit_argv` sudo hands to
//! `open`, and the `command_info` (resolved command path, run-as user) of the decision
//! (never text a user can write into a log). sudo loads it from the same file as libpam
//! loads pam_smith, so both share this module's statics: when the plugin runs, pam_smith's
//! sudo account phase leaves its verdict here ([`note_pam_verdict`]) instead of sending
//! its own record, and the plugin sends exactly one record per sudo invocation, with
//! PAM's reason (the grant, or why it was refused) when PAM decided.
//!
//! Must never: refuse or fail a sudo (every callback answers 1, a panic included; a
//! record that cannot be delivered waits in the pending directory), record anything for
//! a local user, block for long (the bounded socket exchange of [`crate::report`]), or
//! start a thread.

use crate::args::Config;
use crate::hooks::{Hostd, Recorder};
use crate::identity::{classify, Identity};
use smith_proto::event::{HostEvent, SudoEvent};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// `SUDO_AUDIT_PLUGIN` in `sudo_plugin.h`.
const SUDO_AUDIT_PLUGIN: c_uint = 3;
/// `SUDO_POLICY_PLUGIN`.
const SUDO_POLICY_PLUGIN: c_uint = 1;
/// `SUDO_API_MKVERSION(1, 17)`: the audit plugin API (sudo 1.9.0).
const SUDO_API_VERSION: c_uint = (1 << 16) | 17;

type OpenFn = unsafe extern "C" fn(
    version: c_uint,
    conversation: *const c_void,
    sudo_printf: *const c_void,
    settings: *const *const c_char,
    user_info: *const *const c_char,
    submit_optind: c_int,
    submit_argv: *const *const c_char,
    submit_envp: *const *const c_char,
    plugin_options: *const *const c_char,
    errstr: *mut *const c_char,
) -> c_int;
type CloseFn = unsafe extern "C" fn(status_type: c_int, status: c_int);
type AcceptFn = unsafe extern "C" fn(
    plugin_name: *const c_char,
    plugin_type: c_uint,
    command_info: *const *const c_char,
    run_argv: *const *const c_char,
    run_envp: *const *const c_char,
    errstr: *mut *const c_char,
) -> c_int;
type RejectFn = unsafe extern "C" fn(
    plugin_name: *const c_char,
    plugin_type: c_uint,
    audit_msg: *const c_char,
    command_info: *const *const c_char,
    errstr: *mut *const c_char,
) -> c_int;
type ShowVersionFn = unsafe extern "C" fn(verbose: c_int) -> c_int;

/// `struct audit_plugin` of `sudo_plugin.h` (API 1.17+), field for field.
#[repr(C)]
pub struct AuditPlugin {
    plugin_type: c_uint,
    version: c_uint,
    open: Option<OpenFn>,
    close: Option<CloseFn>,
    accept: Option<AcceptFn>,
    reject: Option<RejectFn>,
    error: Option<RejectFn>,
    show_version: Option<ShowVersionFn>,
    register_hooks: Option<unsafe extern "C" fn()>,
    deregister_hooks: Option<unsafe extern "C" fn()>,
    event_alloc: Option<unsafe extern "C" fn() -> *mut c_void>,
}

/// The plugin struct in writable memory: sudo writes into it after loading (its
/// `event_alloc` field, sudo 1.9), so it must not sit in a read-only (RELRO) section as
/// a plain `static` would.
#[repr(transparent)]
pub struct Writable(std::cell::UnsafeCell<AuditPlugin>);

// SAFETY: only sudo's single thread touches the struct (reads it, sets `event_alloc`
// once after dlopen); Rust code never reads or writes it.
unsafe impl Sync for Writable {}

/// The symbol sudo.conf names (`Plugin smith_audit .../pam_smith.so`).
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static smith_audit: Writable = Writable(std::cell::UnsafeCell::new(AuditPlugin {
    plugin_type: SUDO_AUDIT_PLUGIN,
    version: SUDO_API_VERSION,
    open: Some(audit_open),
    close: Some(audit_close),
    accept: Some(audit_accept),
    reject: Some(audit_reject),
    error: Some(audit_error),
    show_version: Some(show_version),
    register_hooks: None,
    deregister_hooks: None,
    event_alloc: None,
}));

/// `SUDO_APPROVAL_PLUGIN`.
const SUDO_APPROVAL_PLUGIN: c_uint = 4;

type CheckFn = unsafe extern "C" fn(
    command_info: *const *const c_char,
    run_argv: *const *const c_char,
    run_envp: *const *const c_char,
    errstr: *mut *const c_char,
) -> c_int;

/// `struct approval_plugin` of `sudo_plugin.h` (API 1.17+), field for field.
#[repr(C)]
pub struct ApprovalPlugin {
    plugin_type: c_uint,
    version: c_uint,
    open: Option<OpenFn>,
    close: Option<unsafe extern "C" fn()>,
    check: Option<CheckFn>,
    show_version: Option<ShowVersionFn>,
}

/// [`ApprovalPlugin`] in writable memory, as [`Writable`].
#[repr(transparent)]
pub struct WritableApproval(std::cell::UnsafeCell<ApprovalPlugin>);

// SAFETY: as for `Writable`: only sudo's single thread touches it.
unsafe impl Sync for WritableApproval {}

/// `smith_approval` (`Plugin smith_approval .../pam_smith.so`): after sudoers accepted a
/// Smith user's command, the command sudo resolved must be allowed by a sudo grant the
/// login's certificate carries (issue 17, [`crate::hooks::sudo_command_check`]): sudoers
/// decides by groups, which hold every grant of the person, not only this certificate's.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static smith_approval: WritableApproval =
    WritableApproval(std::cell::UnsafeCell::new(ApprovalPlugin {
        plugin_type: SUDO_APPROVAL_PLUGIN,
        version: SUDO_API_VERSION,
        open: Some(audit_open),
        close: Some(approval_close),
        check: Some(approval_check),
        show_version: Some(show_version),
    }));

/// The refusal text handed to sudo (`errstr` must outlive the call).
static REFUSAL: Mutex<Option<std::ffi::CString>> = Mutex::new(None);

unsafe extern "C" fn approval_close() {}

unsafe extern "C" fn approval_check(
    command_info: *const *const c_char,
    run_argv: *const *const c_char,
    _run_envp: *const *const c_char,
    errstr: *mut *const c_char,
) -> c_int {
    // SAFETY: sudo's arrays.
    let (info, run) = unsafe { (strings(command_info), strings(run_argv)) };
    let verdict = catch_unwind(AssertUnwindSafe(|| approve(&info, &run))).unwrap_or(Ok(()));
    match verdict {
        Ok(()) => {
            // The one allowed record, now that the approval passed too.
            let _ = catch_unwind(AssertUnwindSafe(|| record_accept(&info, &run)));
            1
        }
        Err(why) => {
            let text = std::ffi::CString::new(why.replace('\0', " ")).unwrap_or_default();
            if let Ok(mut slot) = REFUSAL.try_lock() {
                let ptr = text.as_ptr();
                *slot = Some(text);
                if !errstr.is_null() {
                    // SAFETY: sudo passes a valid out-pointer; the string lives in REFUSAL
                    // until the next refusal (sudo reads it before any).
                    unsafe { *errstr = ptr };
                }
            }
            0
        }
    }
}

/// `Err(why)`: refuse. Local and non-Smith users, and any doubt about who runs sudo,
/// are sudoers' business alone.
fn approve(info: &[String], run: &[String]) -> Result<(), String> {
    let Ok(mut st) = STATE.try_lock() else {
        return Ok(());
    };
    let Some(i) = st.as_mut() else {
        return Ok(());
    };
    if !i.is_smith() {
        return Ok(());
    }
    let (cfg, user, pid) = (i.config.clone().unwrap_or_default(), i.user.clone(), i.pid);
    drop(st);
    let target = value(info, "runas_user").unwrap_or("root");
    let path = value(info, "command")
        .or(run.first().map(String::as_str))
        .unwrap_or_default();
    let args = run.get(1..).unwrap_or_default();
    match crate::hooks::sudo_command_check(&cfg, &user, pid, target, path, args) {
        Ok(rule) => {
            if let Ok(mut st) = STATE.try_lock() {
                if let Some(inv) = st.as_mut() {
                    inv.rule = Some(rule);
                }
            }
            Ok(())
        }
        Err(why) => Err(why),
    }
}

/// One sudo invocation, as sudo described it to `open`.
#[derive(Debug, Default)]
struct Invocation {
    config: Option<Config>,
    user: String,
    pid: u32,
    cwd: String,
    tty: String,
    /// The command line after sudo's options (`submit_argv[submit_optind..]`).
    argv: Vec<String>,
    /// What pam_smith's sudo account phase decided: (allowed, rule or reason).
    pam: Option<(bool, String)>,
    /// The grant rule the approval matched.
    rule: Option<String>,
    /// `with_approval` in sudo.conf's options: smith_approval runs after the policy.
    with_approval: bool,
    /// The policy's accept, waiting for the approval.
    stashed: Option<(String, String)>,
    /// Whether the user is a Smith user here (read from passwd and the cache once).
    smith: Option<bool>,
    recorded: bool,
}

impl Invocation {
    /// Local and unknown users are sudoers' business alone: nothing approved or recorded.
    fn is_smith(&mut self) -> bool {
        let config = &self.config;
        let user = &self.user;
        *self.smith.get_or_insert_with(|| {
            let cfg = config.clone().unwrap_or_default();
            matches!(
                classify(&cfg.passwd, &cfg.cache, &cfg.socket, user.as_bytes()),
                Identity::Smith(_)
            )
        })
    }
}

/// `Some` between `open` and the end of the process: the plugin runs.
static STATE: Mutex<Option<Invocation>> = Mutex::new(None);

/// Called by pam_smith's sudo account phase. `true`: the plugin runs in this sudo and
/// will send the record (with this verdict); `false`: no plugin, PAM records itself.
pub fn note_pam_verdict(allowed: bool, why: &str) -> bool {
    let Ok(mut st) = STATE.try_lock() else {
        return false;
    };
    match st.as_mut() {
        Some(inv) => {
            inv.pam = Some((allowed, why.to_string()));
            true
        }
        None => false,
    }
}

/// # Safety
/// `list` is NULL or a NULL-terminated array of NUL-terminated strings (sudo's
/// `char * const []`).
unsafe fn strings(list: *const *const c_char) -> Vec<String> {
    let mut out = Vec::new();
    if list.is_null() {
        return out;
    }
    for i in 0..100_000 {
        // SAFETY: the array is NULL-terminated (caller's contract); we stop at the NULL.
        let p = unsafe { *list.add(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: a non-NULL entry is a NUL-terminated string (caller's contract).
        out.push(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
    }
    out
}

/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn value<'a>(list: &'a [String], key: &str) -> Option<&'a str> {
    list.iter()
        .find_map(|e| e.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

fn quote_all(args: &[String]) -> String {
    crate::sudo::quote_words(args.iter().map(String::as_str))
}

/// Runs `f` with panics caught; sudo always gets 1 ("go on").
fn guarded(f: impl FnOnce()) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(f));
    1
}

unsafe extern "C" fn audit_open(
    _version: c_uint,
    _conversation: *const c_void,
    _sudo_printf: *const c_void,
    _settings: *const *const c_char,
    user_info: *const *const c_char,
    submit_optind: c_int,
    submit_argv: *const *const c_char,
    _submit_envp: *const *const c_char,
    plugin_options: *const *const c_char,
    _errstr: *mut *const c_char,
) -> c_int {
    // SAFETY: sudo's arrays (sudo_plugin(5): NULL-terminated string vectors).
    let (info, argv, options) = unsafe {
        (
            strings(user_info),
            strings(submit_argv),
            strings(plugin_options),
        )
    };
    guarded(|| {
        crate::entry::quiet_panics();
        let with_approval = options.iter().any(|o| o == "with_approval");
        let inv = Invocation {
            config: Config::parse(
                options
                    .iter()
                    .map(String::as_str)
                    .filter(|o| *o != "with_approval"),
            )
            .ok(),
            with_approval,
            stashed: None,
            smith: None,
            user: value(&info, "user").unwrap_or_default().to_string(),
            pid: value(&info, "pid")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(std::process::id),
            cwd: value(&info, "cwd").unwrap_or_default().to_string(),
            tty: value(&info, "tty").unwrap_or_default().to_string(),
            argv: argv
                .get(usize::try_from(submit_optind).unwrap_or(0)..)
                .unwrap_or_default()
                .to_vec(),
            pam: None,
            rule: None,
            recorded: false,
        };
        if let Ok(mut st) = STATE.try_lock() {
            // The audit and the approval plugin are both opened: the first one's stays.
            if st.is_none() {
                *st = Some(inv);
            }
        }
    })
}

unsafe extern "C" fn audit_close(_status_type: c_int, _status: c_int) {
    // An accept that waited for an approval that never came (smith_approval not run).
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let stashed = STATE
            .try_lock()
            .ok()
            .and_then(|mut st| st.as_mut().and_then(|i| i.stashed.take()));
        if let Some((target, command)) = stashed {
            record(true, target, command, None);
        }
    }));
}

unsafe extern "C" fn audit_accept(
    _plugin_name: *const c_char,
    plugin_type: c_uint,
    command_info: *const *const c_char,
    run_argv: *const *const c_char,
    _run_envp: *const *const c_char,
    _errstr: *mut *const c_char,
) -> c_int {
    if plugin_type != SUDO_POLICY_PLUGIN {
        return 1;
    }
    // SAFETY: sudo's arrays.
    let (info, run) = unsafe { (strings(command_info), strings(run_argv)) };
    guarded(|| {
        // sudo audits the policy's accept before it opens approval plugins: with
        // smith_approval configured (`with_approval`), the allowed record waits for its
        // verdict (sent by the approval, or at close if it never ran).
        let (target, command) = accepted(&info, &run);
        if let Ok(mut st) = STATE.try_lock() {
            if let Some(inv) = st.as_mut() {
                if inv.with_approval {
                    inv.stashed = Some((target, command));
                    return;
                }
            }
        }
        record(true, target, command, None);
    })
}

/// What sudo accepted: the run-as user, and the resolved path it will run with the
/// arguments it passes.
fn accepted(info: &[String], run: &[String]) -> (String, String) {
    let target = value(info, "runas_user").unwrap_or("root").to_string();
    let mut cmd = vec![value(info, "command")
        .or(run.first().map(String::as_str))
        .unwrap_or_default()
        .to_string()];
    cmd.extend(run.iter().skip(1).cloned());
    (target, quote_all(&cmd))
}

/// Records an allowed sudo.
fn record_accept(info: &[String], run: &[String]) {
    let (target, command) = accepted(info, run);
    record(true, target, command, None);
}

unsafe extern "C" fn audit_reject(
    plugin_name: *const c_char,
    _plugin_type: c_uint,
    audit_msg: *const c_char,
    command_info: *const *const c_char,
    _errstr: *mut *const c_char,
) -> c_int {
    // SAFETY: sudo's strings and array.
    let (name, msg, info) = unsafe { refusal(plugin_name, audit_msg, command_info) };
    guarded(|| refused(&name, &msg, &info))
}

/// # Safety
/// As [`string`] and [`strings`]: sudo's NUL-terminated strings and NULL-terminated array.
unsafe fn refusal(
    plugin_name: *const c_char,
    audit_msg: *const c_char,
    command_info: *const *const c_char,
) -> (String, String, Vec<String>) {
    // SAFETY: the caller's contract.
    unsafe {
        (
            string(plugin_name),
            string(audit_msg),
            strings(command_info),
        )
    }
}

unsafe extern "C" fn audit_error(
    plugin_name: *const c_char,
    _plugin_type: c_uint,
    audit_msg: *const c_char,
    command_info: *const *const c_char,
    _errstr: *mut *const c_char,
) -> c_int {
    // SAFETY: as in audit_reject.
    let (name, msg, info) = unsafe { refusal(plugin_name, audit_msg, command_info) };
    guarded(|| refused(&name, &format!("error: {msg}"), &info))
}

unsafe extern "C" fn show_version(_verbose: c_int) -> c_int {
    1
}

fn refused(plugin: &str, msg: &str, info: &[String]) {
    let argv = STATE
        .try_lock()
        .ok()
        .and_then(|st| st.as_ref().map(|i| i.argv.clone()))
        .unwrap_or_default();
    let target = value(info, "runas_user").map(str::to_string);
    // The resolved path when sudo had resolved it (an approval's refusal), then the
    // arguments as given; else the command line as given.
    let command = match (value(info, "command"), argv.is_empty()) {
        (Some(path), false) => {
            let mut c = vec![path.to_string()];
            c.extend(argv.iter().skip(1).cloned());
            quote_all(&c)
        }
        (_, true) => "<shell>".to_string(),
        (None, false) => quote_all(&argv),
    };
    let reason = format!("refused by {plugin}: {msg}");
    record(false, target.unwrap_or_default(), command, Some(reason));
}

/// Sends the one record of this invocation (the first decision wins).
fn record(allowed: bool, target: String, command: String, sudo_reason: Option<String>) {
    let Ok(mut st) = STATE.try_lock() else {
        return;
    };
    let Some(inv) = st.as_mut() else {
        return;
    };
    if inv.recorded {
        return;
    }
    inv.recorded = true;
    if !inv.is_smith() {
        return;
    }
    let cfg = inv.config.clone().unwrap_or_default();
    // PAM's verdict names the grant (allowed) or says why it refused; when PAM did not
    // run, sudoers decided alone.
    let reason = match (&inv.pam, sudo_reason) {
        (Some((true, _)), None) if inv.rule.is_some() => inv.rule.clone().unwrap_or_default(),
        (Some((true, rule)), None) => rule.clone(),
        (Some((false, why)), _) => why.clone(),
        (_, Some(r)) => r,
        (None, None) => "allowed by sudoers".to_string(),
    };
    let target = if target.is_empty() {
        crate::sudo::parse_argv(&own_argv_or(&inv.argv)).target
    } else {
        target
    };
    // The login session's certificate, from pam_smith's own record (root's, checked
    // against the live process): known even when hostd is down and its session table
    // has never seen this session.
    let key_id = smith_proto::sessionfile::find(&cfg.sessions, &cfg.proc_root, inv.pid)
        .filter(|r| r.user == inv.user)
        .map(|r| r.key_id)
        .unwrap_or_default();
    let ev = HostEvent::Sudo(SudoEvent {
        user: inv.user.clone(),
        target,
        command,
        cwd: inv.cwd.clone(),
        tty: inv.tty.clone(),
        allowed,
        reason,
        pid: inv.pid,
        key_id,
        at_unix: crate::hooks::now_unix(),
    });
    let rec = Hostd {
        socket: &cfg.socket,
        pending: &cfg.pending,
    };
    let _ = rec.deliver(&ev);
}

/// sudo's own argv when readable (for the `-u` target on a refusal), else the command.
fn own_argv_or(cmd: &[String]) -> Vec<String> {
    let own = crate::sudo::own_argv();
    if own.is_empty() {
        let mut v = vec!["sudo".to_string()];
        v.extend(cmd.iter().cloned());
        v
    } else {
        own
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_struct_is_laid_out_as_sudo_plugin_h() {
        // type, version, then 9 pointers.
        assert_eq!(
            std::mem::size_of::<AuditPlugin>(),
            8 + 9 * std::mem::size_of::<usize>()
        );
        assert_eq!(std::mem::offset_of!(AuditPlugin, open), 8);
        assert_eq!(
            std::mem::size_of::<Writable>(),
            std::mem::size_of::<AuditPlugin>()
        );
        // SAFETY: no other thread of this test touches the struct.
        let p = unsafe { &*smith_audit.0.get() };
        assert_eq!(p.plugin_type, 3);
        assert_eq!(p.version >> 16, 1);
        assert_eq!(
            std::mem::size_of::<ApprovalPlugin>(),
            8 + 4 * std::mem::size_of::<usize>()
        );
        // SAFETY: as above.
        let a = unsafe { &*smith_approval.0.get() };
        assert_eq!(a.plugin_type, 4);
    }

    #[test]
    fn values_are_read_by_exact_key() {
        let l = vec![
            "user=alice".to_string(),
            "username=x".into(),
            "pid=7".into(),
        ];
        assert_eq!(value(&l, "user"), Some("alice"));
        assert_eq!(value(&l, "pid"), Some("7"));
        assert_eq!(value(&l, "cwd"), None);
    }
}
