//! What each PAM phase does for a non-local user (the entry points in [`crate::entry`]
//! have already answered `PAM_IGNORE` for local accounts).
//!
//! Owns: the account decision (grant level against the needed level; for sudo, also a
//! `sudo` grant *of the session's certificate* that this host still lists: grant-bound),
//! the session certificate check (defence in depth: `SSH_AUTH_INFO_0` must hold a
//! certificate that `policy::check_certificate` accepts against the user's principals
//! file, as sshd did), the session record sudo is decided by
//! ([`smith_proto::sessionfile`]), home creation, session and sudo records, and what is
//! logged for each refusal.
//!
//! Every phase is written against [`PamHandle`] (PAM items, environment, log, module
//! data) and [`Recorder`] (where audit events go), with the calling process described by
//! an [`Invocation`], so its decision, its records and its return code are unit-tested
//! without libpam (below); pamtester and sshd drive the real stack (tests/).
//!
//! Must never: let a non-local user in when the cache cannot be read ("never let in on
//! doubt"), fail a session because an audit event could not be delivered, or read the
//! certificate from anywhere but PAM's environment.

use crate::args::Config;
use crate::home::{ensure_home, HomeOutcome};
use crate::identity::{classify_known, Identity, SmithUser};
use crate::pam::{Item, PamHandle, Priority};
use crate::pam::{PAM_AUTHINFO_UNAVAIL, PAM_IGNORE, PAM_PERM_DENIED, PAM_SESSION_ERR, PAM_SUCCESS};
use crate::report::{deliver, Delivery};
use crate::sudo;
use smith_proto::event::{DeniedEvent, HostEvent, SessionEvent, SessionPhase, SudoEvent};
use smith_proto::grants::{parse_principals_file, sudo_allowed};
use smith_proto::local::Presence;
use smith_proto::sessionfile::{self, SessionRecord};
use smith_proto::sshcert::{cert_from_auth_info, CertInfo};
use smith_proto::{policy, Level};
use std::ffi::{c_int, CStr};
use std::path::Path;

/// Module data key for the open session.
pub const SESSION_DATA: &CStr = c"pam_smith_session";
/// The PAM environment variable sshd fills with the authentication methods used.
pub const AUTH_INFO: &CStr = c"SSH_AUTH_INFO_0";

/// Kept with `pam_set_data` between open and close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionData {
    pub user: String,
    pub opened_at: u64,
    pub key_id: String,
    pub serial: Option<u64>,
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The account decision, pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountDecision {
    Ignore,
    Allow,
    Deny(String),
    Unavailable(String),
}

pub fn decide_account(id: &Identity, needed: Level) -> AccountDecision {
    match id {
        Identity::Local | Identity::NotSmith => AccountDecision::Ignore,
        Identity::Unavailable(why) => AccountDecision::Unavailable(why.clone()),
        Identity::Smith(u) if u.level >= needed => AccountDecision::Allow,
        Identity::Smith(u) => AccountDecision::Deny(format!(
            "{} has '{}' access on this host, '{}' is needed",
            u.name, u.level, needed
        )),
    }
}

/// The certificate of this login, if sshd reported one. `Err((reason, key_id))` when a
/// certificate is there but unreadable or refused.
pub fn check_session_cert(
    auth_info: Option<&str>,
    listed: &[String],
    now: u64,
) -> Result<Option<CertInfo>, (String, String)> {
    let Some(info) = auth_info else {
        return Ok(None);
    };
    let has_cert_line = info.lines().any(|l| {
        let mut it = l.split_ascii_whitespace();
        it.next() == Some("publickey")
            && it
                .next()
                .is_some_and(|t| t.contains("-cert-v01@openssh.com"))
    });
    let Some(cert) = cert_from_auth_info(info) else {
        if has_cert_line {
            return Err((
                "the certificate in SSH_AUTH_INFO_0 could not be read".into(),
                String::new(),
            ));
        }
        return Ok(None);
    };
    match policy::check_certificate(&cert, listed, now) {
        Ok(_) => Ok(Some(cert)),
        Err(refusal) => Err((refusal.to_string(), cert.key_id.clone())),
    }
}

/// The principal lines of `name`'s principals file (none when it is missing or
/// unreadable: nothing is allowed then).
pub fn listed_principals(cfg: &Config, name: &str) -> Vec<String> {
    std::fs::read_to_string(cfg.principals.join(name))
        .map(|t| parse_principals_file(&t))
        .unwrap_or_default()
}

/// Grant-bound sudo: the session this sudo runs in must come from a certificate issued
/// under a `sudo` grant that this host still lists for the user. Answers what to record.
pub fn sudo_session_check(cfg: &Config, user: &SmithUser, pid: u32) -> Result<String, String> {
    let name = user.name.as_str();
    let rec = session_of(cfg, name, pid)?;
    let listed = listed_principals(cfg, name);
    match sudo_allowed(&rec.principals, name, &listed) {
        Some(id) => Ok(format!("under grant {id} (certificate {})", rec.key_id)),
        None => {
            let ids: Vec<String> = smith_proto::grants::grants_of(&rec.principals, name)
                .map(|g| format!("{} ({})", g.id, g.level))
                .collect();
            Err(format!(
                "the certificate of this session ({}) was issued under grant(s) {} and none \
                 gives sudo on this host now; get a certificate under a sudo grant for this \
                 host (`smith cert --scope <its tags>`, with the reason, network or window it \
                 needs)",
                rec.key_id,
                if ids.is_empty() {
                    "none".to_string()
                } else {
                    ids.join(", ")
                }
            ))
        }
    }
}

/// The SSH session of a Smith certificate that `pid` (a sudo) runs in, which must be
/// `name`'s.
fn session_of(cfg: &Config, name: &str, pid: u32) -> Result<sessionfile::SessionRecord, String> {
    let Some(rec) = sessionfile::find(&cfg.sessions, &cfg.proc_root, pid) else {
        return Err(
            "this sudo does not run inside an SSH session of a Smith certificate; sudo is \
             granted per certificate: log in with one issued under a sudo grant for this host \
             (`smith cert --scope <its tags>`)"
                .to_string(),
        );
    };
    if rec.user != name {
        return Err(format!(
            "this sudo runs inside {}'s session, not {name}'s",
            rec.user.escape_debug()
        ));
    }
    Ok(rec)
}

/// Grant-bound sudo rules (issue 17): the command sudo resolved (`path args`, as
/// `target`) must be allowed by a `sudo` grant that this session's certificate carries
/// and this host still lists: one without rules, or one whose rules (hostd's rules file)
/// name it. Answers the rule that allowed it, or why not.
pub fn sudo_command_check(
    cfg: &Config,
    name: &str,
    pid: u32,
    target: &str,
    path: &str,
    args: &[String],
) -> Result<String, String> {
    let rec = session_of(cfg, name, pid)?;
    let listed = listed_principals(cfg, name);
    let grants: Vec<u64> =
        smith_proto::grants::listed_sudo_grants(&rec.principals, name, &listed).collect();
    if grants.is_empty() {
        return Err(format!(
            "the certificate of this session ({}) carries no sudo grant this host lists",
            rec.key_id
        ));
    }
    let rules = read_sudo_rules(&cfg.sudo_rules);
    let shown = format!(
        "{target}: {}",
        crate::sudo::quote_words(std::iter::once(path).chain(args.iter().map(String::as_str)))
    );
    for id in &grants {
        match rules.get(id) {
            None => {
                return Ok(format!(
                    "grant {id} (every command; certificate {})",
                    rec.key_id
                ))
            }
            Some(r) if r.allows(target, path, args) => {
                return Ok(format!(
                    "grant {id} rule {} (certificate {})",
                    r.sudoers_line(&smith_proto::sudorules::rule_group(*id)),
                    rec.key_id
                ))
            }
            Some(_) => {}
        }
    }
    let ids: Vec<String> = grants.iter().map(u64::to_string).collect();
    Err(format!(
        "{shown} is not allowed by the sudo grant(s) {} of this session's certificate ({})",
        ids.join(", "),
        rec.key_id
    ))
}

/// hostd's rules file, if root's and not writable by others (else no rules: sudoers'
/// own group rules still apply).
fn read_sudo_rules(
    path: &Path,
) -> std::collections::BTreeMap<u64, smith_proto::sudorules::SudoRules> {
    read_root_file(path, 1 << 20)
        .map(|t| smith_proto::sudorules::parse_file(&t))
        .unwrap_or_default()
}

/// The text of a file hostd keeps for the modules, if it is a regular file of root's
/// that nobody else can write, read up to `max` bytes.
fn read_root_file(path: &Path, max: u64) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::File::open(path).ok()?;
    let md = f.metadata().ok()?;
    if !md.is_file() || md.uid() != 0 || md.mode() & 0o022 != 0 {
        return None;
    }
    let mut text = String::new();
    f.take(max).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Where audit events go: hostd (socket, else a pending file) in the module, a list in
/// the tests.
pub trait Recorder {
    fn deliver(&self, ev: &HostEvent) -> Delivery;
}

/// hostd at the configured socket and pending directory.
pub struct Hostd<'a> {
    pub socket: &'a Path,
    pub pending: &'a Path,
}

impl Recorder for Hostd<'_> {
    fn deliver(&self, ev: &HostEvent) -> Delivery {
        deliver(self.socket, self.pending, ev)
    }
}

/// The calling process, as far as a record needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The process's own argv (sudo's command line, exact: D12).
    pub argv: Vec<String>,
    pub cwd: String,
    pub pid: u32,
    pub now: u64,
}

impl Invocation {
    pub fn current() -> Invocation {
        Invocation {
            argv: sudo::own_argv(),
            cwd: std::env::current_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            pid: std::process::id(),
            now: now_unix(),
        }
    }
}

/// The PAM user and whether it is local (read once, in stage 1 of every entry point).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub name: Vec<u8>,
    pub local: Presence,
}

fn log_delivery(pam: &impl PamHandle, cfg: &Config, what: &str, d: &Delivery) {
    match d {
        Delivery::Sent(seq) => {
            if cfg.debug {
                pam.log(
                    Priority::Debug,
                    &format!("{what} recorded by hostd (seq {seq})"),
                );
            }
        }
        Delivery::Queued { file, socket_error } => pam.log(
            Priority::Warning,
            &format!(
                "{what}: hostd unreachable ({socket_error}); queued as {}",
                file.display()
            ),
        ),
        Delivery::Lost(e) => pam.log(Priority::Err, &format!("{what} could not be recorded: {e}")),
    }
}

fn report(pam: &impl PamHandle, rec: &impl Recorder, cfg: &Config, what: &str, ev: HostEvent) {
    let d = rec.deliver(&ev);
    log_delivery(pam, cfg, what, &d);
}

fn denied_event(
    pam: &impl PamHandle,
    user: &str,
    reason: &str,
    key_id: &str,
    now: u64,
) -> HostEvent {
    HostEvent::Denied(DeniedEvent {
        user: user.to_string(),
        service: pam.item(Item::Service),
        rhost: pam.item(Item::Rhost),
        reason: reason.to_string(),
        key_id: key_id.to_string(),
        at_unix: now,
    })
}

/// The sudo audit record for this invocation (hostd fills the key ID of the login
/// session from the process tree).
fn sudo_event(
    pam: &impl PamHandle,
    inv: &Invocation,
    user: &str,
    allowed: bool,
    reason: &str,
) -> HostEvent {
    let cmd = sudo::parse_argv(&inv.argv);
    HostEvent::Sudo(SudoEvent {
        user: user.to_string(),
        target: cmd.target,
        command: cmd.command,
        cwd: inv.cwd.clone(),
        tty: pam.item(Item::Tty),
        allowed,
        reason: reason.to_string(),
        pid: inv.pid,
        key_id: String::new(),
        at_unix: inv.now,
    })
}

/// hostd's last successful sync (Unix seconds) from its status file, if the file is
/// root's and says so.
pub fn last_sync(path: &Path) -> Option<u64> {
    let text = read_root_file(path, 64 * 1024)?;
    let rest = &text[text.find("\"last_sync_unix\"")? + "\"last_sync_unix\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// D11: with `max_age=`, a Smith user is refused once hostd has not synced for that
/// long (its grants may have been revoked since). `None`: fresh enough, or no bound.
fn too_old(cfg: &Config, now: u64) -> Option<String> {
    let max = cfg.max_age_secs?;
    match last_sync(&cfg.sync_status) {
        Some(t) if now.saturating_sub(t) <= max => None,
        Some(t) => Some(format!(
            "smith-hostd last synced with the CA {}s ago, over max_age={max}s",
            now.saturating_sub(t)
        )),
        None => Some(format!(
            "no successful sync recorded in {} and max_age={max}s is set",
            cfg.sync_status.display()
        )),
    }
}

/// `pam_sm_acct_mgmt` for a non-local user.
pub fn account(
    pam: &impl PamHandle,
    rec: &impl Recorder,
    cfg: &Config,
    who: &Who,
    inv: &Invocation,
) -> c_int {
    let name = String::from_utf8_lossy(&who.name).into_owned();
    let id = classify_known(who.local, &cfg.cache, &cfg.socket, &who.name);
    let mut decision = decide_account(&id, cfg.level);
    if decision == AccountDecision::Allow {
        if let Some(why) = too_old(cfg, inv.now) {
            decision = AccountDecision::Unavailable(why);
        }
    }
    let sudo_mode = cfg.level == Level::Sudo;
    let mut rule = String::new();
    if let (AccountDecision::Allow, true, Identity::Smith(u)) = (&decision, sudo_mode, &id) {
        match sudo_session_check(cfg, u, inv.pid) {
            Ok(r) => rule = r,
            Err(why) => decision = AccountDecision::Deny(why),
        }
    }
    let svc = pam.item(Item::Service);
    match decision {
        AccountDecision::Ignore => {
            if cfg.debug {
                pam.log(
                    Priority::Debug,
                    &format!("{name} is not a Smith user here; ignoring"),
                );
            }
            PAM_IGNORE
        }
        AccountDecision::Allow => {
            // With sudo's audit plugin (`smith_audit`) loaded, it sends the one record of
            // this sudo, with this verdict; without it, this is the record.
            if sudo_mode && !crate::sudo_plugin::note_pam_verdict(true, &rule) {
                report(
                    pam,
                    rec,
                    cfg,
                    "sudo record",
                    sudo_event(pam, inv, &name, true, &rule),
                );
            }
            if cfg.debug {
                pam.log(
                    Priority::Debug,
                    &format!("{name} allowed ({} needed)", cfg.level),
                );
            }
            PAM_SUCCESS
        }
        AccountDecision::Deny(reason) => {
            pam.log(
                Priority::Notice,
                &format!("access denied for {name} ({svc}): {reason}"),
            );
            record_refusal(pam, rec, cfg, inv, &name, sudo_mode, &reason);
            PAM_PERM_DENIED
        }
        AccountDecision::Unavailable(why) => {
            let reason = format!("the Smith cache is unavailable, refusing non-local user: {why}");
            pam.log(
                Priority::Err,
                &format!("access denied for {name} ({svc}): {reason}"),
            );
            record_refusal(pam, rec, cfg, inv, &name, sudo_mode, &reason);
            PAM_AUTHINFO_UNAVAIL
        }
    }
}

/// Records an account refusal: a sudo record (left to sudo's audit plugin when it runs)
/// in sudo's stack, a denial record elsewhere.
fn record_refusal(
    pam: &impl PamHandle,
    rec: &impl Recorder,
    cfg: &Config,
    inv: &Invocation,
    name: &str,
    sudo_mode: bool,
    reason: &str,
) {
    if sudo_mode && crate::sudo_plugin::note_pam_verdict(false, reason) {
        return;
    }
    let ev = if sudo_mode {
        sudo_event(pam, inv, name, false, reason)
    } else {
        denied_event(pam, name, reason, &auth_info_key_id(pam), inv.now)
    };
    report(pam, rec, cfg, "denial record", ev);
}

/// Key ID of the certificate in `SSH_AUTH_INFO_0`, if any (empty in the account phase
/// of OpenSSH 9.2; filled by later versions).
fn auth_info_key_id(pam: &impl PamHandle) -> String {
    pam.getenv(AUTH_INFO)
        .and_then(|i| cert_from_auth_info(&i))
        .map(|c| c.key_id)
        .unwrap_or_default()
}

/// `pam_sm_open_session` for a non-local user.
pub fn open_session(
    pam: &impl PamHandle,
    rec: &impl Recorder,
    cfg: &Config,
    who: &Who,
    inv: &Invocation,
) -> c_int {
    let name = String::from_utf8_lossy(&who.name).into_owned();
    let u = match classify_known(who.local, &cfg.cache, &cfg.socket, &who.name) {
        Identity::Local => {
            record_shared_login(pam, cfg, &name, inv);
            return PAM_IGNORE;
        }
        Identity::NotSmith => return PAM_IGNORE,
        Identity::Unavailable(why) => {
            pam.log(
                Priority::Err,
                &format!("session refused for {name}: the Smith cache is unavailable: {why}"),
            );
            return PAM_SESSION_ERR;
        }
        Identity::Smith(u) => u,
    };
    let now = inv.now;
    let info = pam.getenv(AUTH_INFO);
    let listed = listed_principals(cfg, u.name.as_str());
    let checked = match check_session_cert(info.as_deref(), &listed, now) {
        // Certificate only: a Smith user's sshd session comes from a Smith certificate
        // (an authorized_keys key, a password or any other method is refused here too,
        // behind sshd's own `Match Group smith-users`).
        Ok(None) if pam.item(Item::Service) == "sshd" => Err((
            "a Smith user logs in over ssh with a Smith certificate only (no authorized_keys \
             key, password or other method)"
                .to_string(),
            String::new(),
        )),
        other => other,
    };
    let cert = match checked {
        Ok(c) => c,
        Err((reason, key_id)) => {
            pam.log(
                Priority::Notice,
                &format!("session refused for {name}: {reason} (key ID {key_id:?})"),
            );
            report(
                pam,
                rec,
                cfg,
                "denial record",
                denied_event(pam, &name, &reason, &key_id, now),
            );
            return PAM_PERM_DENIED;
        }
    };
    let (key_id, serial) = match &cert {
        Some(c) => (c.key_id.clone(), Some(c.serial)),
        None => (String::new(), None),
    };
    if let Some(c) = &cert {
        let grants = smith_proto::grants::grants_of(&c.principals, &name)
            .map(|g| smith_proto::grants::grant_principal(g.id, g.level, g.person))
            .collect();
        record_session(pam, cfg, &name, c, grants, inv.pid);
    }
    if !cfg.no_home {
        match ensure_home(&cfg.home_base, &cfg.skel, &u.name, &u.dir, u.uid, u.gid) {
            Ok(HomeOutcome::Created { copied }) => pam.log(
                Priority::Info,
                &format!(
                    "created home {} for {name} ({copied} entries from {})",
                    u.dir,
                    cfg.skel.display()
                ),
            ),
            Ok(HomeOutcome::Exists) => {}
            Ok(HomeOutcome::ExistsOwnedBy(owner)) => pam.log(
                Priority::Warning,
                &format!(
                    "home {} of {name} (uid {}) is owned by uid {owner}; left as it is (a recycled name or uid?)",
                    u.dir, u.uid
                ),
            ),
            Err(e) if e.is_security() => {
                let reason = format!("home directory: {e}");
                pam.log(
                    Priority::Err,
                    &format!("session refused for {name}: {reason}"),
                );
                report(
                    pam,
                    rec,
                    cfg,
                    "denial record",
                    denied_event(pam, &name, &reason, &key_id, now),
                );
                return PAM_PERM_DENIED;
            }
            Err(e) => pam.log(
                Priority::Warning,
                &format!("home directory for {name}: {e}"),
            ),
        }
    }
    let ev = HostEvent::Session(SessionEvent {
        phase: SessionPhase::Open,
        user: name.clone(),
        service: pam.item(Item::Service),
        rhost: pam.item(Item::Rhost),
        tty: pam.item(Item::Tty),
        pid: inv.pid,
        key_id: key_id.clone(),
        serial,
        at_unix: now,
        duration_secs: None,
    });
    report(pam, rec, cfg, "session open record", ev);
    pam.set_session(SessionData {
        user: name,
        opened_at: now,
        key_id,
        serial,
    });
    PAM_SUCCESS
}

/// Records the session for sudo's grant-bound check; a failure only means sudo will be
/// refused in this session, and is logged as such.
/// A local account a grant lets Smith certificates into (`--login deploy`): an sshd
/// session that came with such a certificate is recorded like a Smith user's (the grants
/// of the certificate this host lists for the account), so that hostd can end it when
/// the grant goes. Nothing else changes for local accounts: no refusal, no home.
fn record_shared_login(pam: &impl PamHandle, cfg: &Config, name: &str, inv: &Invocation) {
    if pam.item(Item::Service) != "sshd" {
        return;
    }
    let listed = listed_principals(cfg, name);
    if listed.is_empty() {
        return;
    }
    let info = pam.getenv(AUTH_INFO);
    if let Ok(Some(c)) = check_session_cert(info.as_deref(), &listed, inv.now) {
        let grants = c
            .principals
            .iter()
            .filter(|p| listed.contains(p))
            .cloned()
            .collect();
        record_session(pam, cfg, name, &c, grants, inv.pid);
    }
}

fn record_session(
    pam: &impl PamHandle,
    cfg: &Config,
    name: &str,
    cert: &CertInfo,
    grants: Vec<String>,
    pid: u32,
) {
    let start = sessionfile::proc_stat(&cfg.proc_root, pid).map(|(_, s)| s);
    let rec = SessionRecord {
        pid,
        start_time: start.unwrap_or(0),
        user: name.to_string(),
        key_id: cert.key_id.clone(),
        serial: cert.serial,
        principals: grants,
    };
    let written = match start {
        Some(_) => sessionfile::write(&cfg.sessions, &rec),
        None => Err(std::io::Error::other("the session process is not in /proc")),
    };
    if let Err(e) = written {
        pam.log(
            Priority::Warning,
            &format!(
                "cannot record the session of {name} in {}: {e}; sudo will be refused in it",
                cfg.sessions.display()
            ),
        );
    }
}

/// `pam_sm_close_session`: the close record for a session this module opened.
pub fn close_session(
    pam: &impl PamHandle,
    rec: &impl Recorder,
    cfg: &Config,
    inv: &Invocation,
) -> c_int {
    // Also a shared local login's record (no session data: nothing else to do).
    sessionfile::remove(&cfg.sessions, inv.pid);
    let Some(data) = pam.session() else {
        return PAM_IGNORE;
    };
    let now = inv.now;
    let ev = HostEvent::Session(SessionEvent {
        phase: SessionPhase::Close,
        user: data.user.clone(),
        service: pam.item(Item::Service),
        rhost: pam.item(Item::Rhost),
        tty: pam.item(Item::Tty),
        pid: inv.pid,
        key_id: data.key_id.clone(),
        serial: data.serial,
        at_unix: now,
        duration_secs: Some(now.saturating_sub(data.opened_at)),
    });
    report(pam, rec, cfg, "session close record", ev);
    PAM_SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use smith_proto::{Tags, UserName};

    fn smith(level: Level) -> Identity {
        Identity::Smith(SmithUser {
            name: UserName::new("alice").unwrap(),
            uid: 200_001,
            gid: 200_001,
            dir: "/home/alice".into(),
            level,
            host_tags: Tags::parse("env=dev,role=db").unwrap(),
        })
    }

    #[test]
    fn account_decisions() {
        assert_eq!(
            decide_account(&Identity::Local, Level::Sudo),
            AccountDecision::Ignore
        );
        assert_eq!(
            decide_account(&Identity::NotSmith, Level::Ssh),
            AccountDecision::Ignore
        );
        assert!(matches!(
            decide_account(&Identity::Unavailable("x".into()), Level::Ssh),
            AccountDecision::Unavailable(_)
        ));
        assert_eq!(
            decide_account(&smith(Level::Ssh), Level::Ssh),
            AccountDecision::Allow
        );
        assert_eq!(
            decide_account(&smith(Level::Sudo), Level::Ssh),
            AccountDecision::Allow
        );
        assert_eq!(
            decide_account(&smith(Level::Sudo), Level::Sudo),
            AccountDecision::Allow
        );
        assert_eq!(
            decide_account(&smith(Level::Ssh), Level::Sudo),
            AccountDecision::Deny("alice has 'ssh' access on this host, 'sudo' is needed".into())
        );
    }

    fn b64(data: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in data.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                s.push(if i <= c.len() {
                    A[(n >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        s
    }

    fn put(v: &mut Vec<u8>, s: &[u8]) {
        v.extend_from_slice(&(s.len() as u32).to_be_bytes());
        v.extend_from_slice(s);
    }

    /// An unsigned certificate blob (the policy check does not verify signatures: sshd
    /// did).
    fn cert_line(principals: &[&str], scope: Option<&str>, valid: (u64, u64)) -> String {
        let mut v = Vec::new();
        put(&mut v, b"ssh-ed25519-cert-v01@openssh.com");
        put(&mut v, &[1; 32]);
        put(&mut v, &[2; 32]);
        v.extend_from_slice(&7u64.to_be_bytes());
        v.extend_from_slice(&1u32.to_be_bytes());
        put(&mut v, b"smith:alice:req1");
        let mut p = Vec::new();
        for principal in principals {
            put(&mut p, principal.as_bytes());
        }
        put(&mut v, &p);
        v.extend_from_slice(&valid.0.to_be_bytes());
        v.extend_from_slice(&valid.1.to_be_bytes());
        put(&mut v, b"");
        let mut ext = Vec::new();
        if let Some(s) = scope {
            put(&mut ext, b"scope@smith");
            let mut d = Vec::new();
            put(&mut d, s.as_bytes());
            put(&mut ext, &d);
        }
        put(&mut v, &ext);
        put(&mut v, b"");
        put(&mut v, b"k");
        put(&mut v, b"s");
        format!("publickey ssh-ed25519-cert-v01@openssh.com {}\n", b64(&v))
    }

    #[test]
    fn session_certificate_checks() {
        let now = 1000;
        let listed = vec!["smith-grant:1:ssh:alice".to_string()];
        assert_eq!(check_session_cert(None, &listed, now), Ok(None));
        assert_eq!(
            check_session_cert(Some("password\n"), &listed, now),
            Ok(None)
        );
        assert_eq!(
            check_session_cert(Some("publickey ssh-ed25519 AAAAC3Nza\n"), &listed, now),
            Ok(None)
        );
        let ok = cert_line(&["alice", "smith-grant:1:ssh:alice"], None, (10, 2000));
        let c = check_session_cert(Some(&ok), &listed, now)
            .unwrap()
            .unwrap();
        assert_eq!((c.key_id.as_str(), c.serial), ("smith:alice:req1", 7));
        // Issued under another grant (whatever scope it asked for): refused.
        let other_grant = cert_line(
            &["alice", "smith-grant:3:sudo:alice"],
            Some("env=dev"),
            (10, 2000),
        );
        let (reason, key_id) = check_session_cert(Some(&other_grant), &listed, now).unwrap_err();
        assert!(reason.contains("(3)"), "{reason}");
        assert_eq!(key_id, "smith:alice:req1");
        let old = cert_line(&["alice"], None, (10, 2000));
        assert!(check_session_cert(Some(&old), &listed, now).is_err());
        let expired = cert_line(&["alice", "smith-grant:1:ssh:alice"], None, (10, 20));
        assert!(check_session_cert(Some(&expired), &listed, now).is_err());
        let garbled = "publickey ssh-ed25519-cert-v01@openssh.com AAAA!!!!\n";
        assert!(
            check_session_cert(Some(garbled), &listed, now).is_err(),
            "unreadable cert refuses"
        );
    }

    // ---- the phases, driven through a fake PAM handle and a recording hostd -------------

    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    struct FakePam {
        user: Option<Vec<u8>>,
        items: HashMap<Item, String>,
        env: HashMap<String, String>,
        logs: RefCell<Vec<(Priority, String)>>,
        data: RefCell<Option<SessionData>>,
    }

    impl PamHandle for FakePam {
        fn user(&self) -> Option<Vec<u8>> {
            self.user.clone()
        }
        fn item(&self, item: Item) -> String {
            self.items.get(&item).cloned().unwrap_or_default()
        }
        fn getenv(&self, name: &CStr) -> Option<String> {
            self.env.get(name.to_str().unwrap()).cloned()
        }
        fn log(&self, prio: Priority, msg: &str) {
            self.logs.borrow_mut().push((prio, msg.to_string()));
        }
        fn set_session(&self, data: SessionData) -> bool {
            *self.data.borrow_mut() = Some(data);
            true
        }
        fn session(&self) -> Option<SessionData> {
            self.data.borrow().clone()
        }
    }

    #[derive(Default)]
    struct Recorded(RefCell<Vec<HostEvent>>);

    impl Recorder for Recorded {
        fn deliver(&self, ev: &HostEvent) -> Delivery {
            self.0.borrow_mut().push(ev.clone());
            Delivery::Sent(self.0.borrow().len() as u64)
        }
    }

    fn root() -> bool {
        // SAFETY: no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// A config over a fresh directory holding the test cache (root-owned when run as
    /// root, as the loader requires).
    fn setup(label: &str, level: Level) -> Config {
        let d = crate::test_dir(label);
        let cache = d.join("nss.cache");
        std::fs::write(
            &cache,
            smith_proto::cache::build(&crate::tests::contents()).unwrap(),
        )
        .unwrap();
        let mut cfg = Config::parse([]).unwrap();
        cfg.cache = cache;
        cfg.level = level;
        cfg.no_home = true;
        cfg.sync_status = d.join("sync-status.json");
        // What hostd would list here, and the process table sudo's session is found in.
        cfg.principals = d.join("principals");
        std::fs::create_dir_all(&cfg.principals).unwrap();
        for (user, p) in [
            ("oscar", "smith-grant:2:sudo:oscar"),
            ("alice", "smith-grant:1:ssh:alice"),
        ] {
            std::fs::write(cfg.principals.join(user), format!("# hostd\n{p}\n")).unwrap();
        }
        cfg.sessions = d.join("sessions");
        cfg.proc_root = d.join("proc");
        let stat = cfg.proc_root.join(INV_PID.to_string());
        std::fs::create_dir_all(&stat).unwrap();
        let zeros = vec!["0"; 17].join(" ");
        std::fs::write(
            stat.join("stat"),
            format!("{INV_PID} (sshd) S 1 {zeros} {INV_START}"),
        )
        .unwrap();
        cfg
    }

    const INV_PID: u32 = 4242;
    const INV_START: u64 = 77;

    /// The session sudo runs in: opened by `user` with a certificate naming `principals`.
    fn in_session(cfg: &Config, user: &str, principals: &[&str]) {
        sessionfile::write(
            &cfg.sessions,
            &SessionRecord {
                pid: INV_PID,
                start_time: INV_START,
                user: user.into(),
                key_id: format!("smith:{user}:req9"),
                serial: 9,
                principals: principals.iter().map(|p| p.to_string()).collect(),
            },
        )
        .unwrap();
    }

    fn who(name: &str) -> Who {
        Who {
            name: name.as_bytes().to_vec(),
            local: Presence::Absent,
        }
    }

    fn inv(argv: &[&str]) -> Invocation {
        Invocation {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: "/srv".into(),
            pid: INV_PID,
            now: 1_000_000,
        }
    }

    fn pam(service: &str) -> FakePam {
        let mut p = FakePam::default();
        p.items.insert(Item::Service, service.into());
        p.items.insert(Item::Tty, "pts/3".into());
        p.items.insert(Item::Rhost, "10.0.0.9".into());
        p
    }

    #[test]
    fn sudo_account_phase_decisions_and_records() {
        if !root() {
            eprintln!("SKIPPED: the cache must be root-owned");
            return;
        }
        let cfg = setup("phase-sudo", Level::Sudo);
        let argv = inv(&["sudo", "-u", "www-data", "rm", "-rf", "", "/tmp/x"]);
        // oscar's sudo is refused with `why` (and recorded so).
        let refused = |why: &str| {
            let (p, rec) = (pam("sudo"), Recorded::default());
            assert_eq!(
                account(&p, &rec, &cfg, &who("oscar"), &argv),
                PAM_PERM_DENIED
            );
            let evs = rec.0.borrow();
            let [HostEvent::Sudo(e)] = evs.as_slice() else {
                panic!("{evs:?}")
            };
            assert!(!e.allowed && e.reason.contains(why), "{e:?}");
        };
        // Outside any session of a Smith certificate.
        refused("SSH session");
        // In a session whose certificate came from an ssh grant: oscar holds a sudo grant
        // here, but this certificate was not issued under it.
        in_session(&cfg, "oscar", &["smith-grant:5:ssh:oscar"]);
        refused("5 (ssh)");
        // Someone else's session does not lend its grants.
        in_session(&cfg, "alice", &["smith-grant:2:sudo:oscar"]);
        refused("alice's session");
        in_session(&cfg, "oscar", &["smith-grant:2:sudo:oscar"]);
        // oscar has sudo: allowed, one record with the exact command (empty argument kept).
        let (p, rec) = (pam("sudo"), Recorded::default());
        assert_eq!(account(&p, &rec, &cfg, &who("oscar"), &argv), PAM_SUCCESS);
        let evs = rec.0.borrow();
        let [HostEvent::Sudo(e)] = evs.as_slice() else {
            panic!("{evs:?}")
        };
        assert!(e.allowed);
        assert!(e.reason.contains("under grant 2"), "{e:?}");
        assert_eq!(e.command, "rm -rf '' /tmp/x");
        assert_eq!(
            (e.target.as_str(), e.cwd.as_str(), e.tty.as_str(), e.pid),
            ("www-data", "/srv", "pts/3", 4242)
        );
        drop(evs);
        // alice has ssh only: denied, logged at NOTICE, recorded as a refused sudo.
        let (p, rec) = (pam("sudo"), Recorded::default());
        assert_eq!(
            account(&p, &rec, &cfg, &who("alice"), &argv),
            PAM_PERM_DENIED
        );
        let evs = rec.0.borrow();
        let [HostEvent::Sudo(e)] = evs.as_slice() else {
            panic!("{evs:?}")
        };
        assert!(!e.allowed && e.reason.contains("'sudo' is needed"), "{e:?}");
        assert!(
            p.logs
                .borrow()
                .iter()
                .any(|(pr, m)| *pr == Priority::Notice
                    && m.contains("access denied for alice (sudo)"))
        );
        // Someone Smith does not know: ignored, nothing recorded.
        let (p, rec) = (pam("sudo"), Recorded::default());
        assert_eq!(account(&p, &rec, &cfg, &who("mallory"), &argv), PAM_IGNORE);
        assert!(rec.0.borrow().is_empty());
    }

    /// The one record `rec` got, a denial.
    fn only_denied(rec: &Recorded) -> DeniedEvent {
        let evs = rec.0.borrow();
        let [HostEvent::Denied(d)] = evs.as_slice() else {
            panic!("{evs:?}")
        };
        d.clone()
    }

    #[test]
    fn no_cache_refuses_non_local_users_and_says_why() {
        let mut cfg = setup("phase-nocache", Level::Ssh);
        cfg.cache = cfg.cache.with_file_name("missing.cache");
        let (p, rec) = (pam("sshd"), Recorded::default());
        assert_eq!(
            account(&p, &rec, &cfg, &who("alice"), &inv(&["sshd"])),
            PAM_AUTHINFO_UNAVAIL
        );
        let d = only_denied(&rec);
        assert!(d.reason.contains("does not exist"), "{d:?}");
        assert_eq!(d.rhost, "10.0.0.9");
        // A local user never gets here, and with Presence::Unreadable neither.
        let local = Who {
            name: b"alice".to_vec(),
            local: Presence::Unreadable(libc::EACCES),
        };
        let rec = Recorded::default();
        assert_eq!(account(&p, &rec, &cfg, &local, &inv(&["sshd"])), PAM_IGNORE);
        assert!(rec.0.borrow().is_empty());
    }

    /// D11: `max_age=` refuses once hostd has not synced for that long; without it (the
    /// default) a stale grant still works: never lock out.
    #[test]
    fn max_age_bounds_a_stale_grant_only_when_asked() {
        if !root() {
            eprintln!("SKIPPED: the cache and status file must be root-owned");
            return;
        }
        let mut cfg = setup("phase-maxage", Level::Sudo);
        in_session(&cfg, "oscar", &["smith-grant:2:sudo:oscar"]);
        let now = inv(&["sudo", "id"]).now;
        std::fs::write(
            &cfg.sync_status,
            format!(
                "{{\n  \"last_sync_unix\": {},\n  \"version\": 3\n}}",
                now - 7200
            ),
        )
        .unwrap();
        let (p, rec) = (pam("sudo"), Recorded::default());
        assert_eq!(
            account(&p, &rec, &cfg, &who("oscar"), &inv(&["sudo", "id"])),
            PAM_SUCCESS
        );
        cfg.max_age_secs = Some(3600);
        let (p, rec) = (pam("sudo"), Recorded::default());
        assert_eq!(
            account(&p, &rec, &cfg, &who("oscar"), &inv(&["sudo", "id"])),
            PAM_AUTHINFO_UNAVAIL
        );
        let evs = rec.0.borrow();
        let [HostEvent::Sudo(e)] = evs.as_slice() else {
            panic!("{evs:?}")
        };
        assert!(!e.allowed && e.reason.contains("7200s ago"), "{e:?}");
        cfg.max_age_secs = Some(3 * 3600);
        let (p, rec) = (pam("sudo"), Recorded::default());
        assert_eq!(
            account(&p, &rec, &cfg, &who("oscar"), &inv(&["sudo", "id"])),
            PAM_SUCCESS
        );
        std::fs::remove_file(&cfg.sync_status).unwrap();
        assert_eq!(
            account(&p, &rec, &cfg, &who("oscar"), &inv(&["sudo", "id"])),
            PAM_AUTHINFO_UNAVAIL
        );
    }

    #[test]
    fn session_open_and_close_records() {
        if !root() {
            eprintln!("SKIPPED: the cache must be root-owned");
            return;
        }
        let cfg = setup("phase-session", Level::Ssh);
        let mut p = pam("sshd");
        // The certificate sshd reports, issued under the grant hostd lists for alice.
        let line = cert_line(
            &["alice", "smith-grant:1:ssh:alice"],
            Some("env=prod"),
            (10, 2_000_000),
        );
        p.env.insert("SSH_AUTH_INFO_0".into(), line);
        let rec = Recorded::default();
        assert_eq!(
            open_session(&p, &rec, &cfg, &who("alice"), &inv(&["sshd"])),
            PAM_SUCCESS
        );
        let data = p.session().unwrap();
        assert_eq!(
            (data.key_id.as_str(), data.serial),
            ("smith:alice:req1", Some(7))
        );
        // The session is on record for sudo, with the certificate's grants.
        let found = sessionfile::find(&cfg.sessions, &cfg.proc_root, INV_PID).unwrap();
        assert_eq!(found.principals, vec!["smith-grant:1:ssh:alice"]);
        let mut later = inv(&["sshd"]);
        later.now += 95;
        assert_eq!(close_session(&p, &rec, &cfg, &later), PAM_SUCCESS);
        let evs = rec.0.borrow();
        let [HostEvent::Session(o), HostEvent::Session(c)] = evs.as_slice() else {
            panic!("{evs:?}")
        };
        assert_eq!(
            (o.phase, o.key_id.as_str(), o.serial, o.pid),
            (SessionPhase::Open, "smith:alice:req1", Some(7), 4242)
        );
        assert_eq!((c.phase, c.duration_secs), (SessionPhase::Close, Some(95)));
        assert_eq!(
            sessionfile::find(&cfg.sessions, &cfg.proc_root, INV_PID),
            None
        );
        drop(evs);
        // A certificate issued under another grant: refused and recorded with its key ID.
        let mut p = pam("sshd");
        p.env.insert(
            "SSH_AUTH_INFO_0".into(),
            cert_line(&["alice", "smith-grant:9:ssh:alice"], None, (10, 2_000_000)),
        );
        let rec = Recorded::default();
        assert_eq!(
            open_session(&p, &rec, &cfg, &who("alice"), &inv(&["sshd"])),
            PAM_PERM_DENIED
        );
        let evs = rec.0.borrow();
        let [HostEvent::Denied(d)] = evs.as_slice() else {
            panic!("{evs:?}")
        };
        assert_eq!(d.key_id, "smith:alice:req1");
        drop(evs);
        // Certificate only: an sshd session of a Smith user with a plain key (a planted
        // authorized_keys) or no key at all is refused and recorded.
        for info in [
            Some("publickey ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\n"),
            None,
        ] {
            let mut p = pam("sshd");
            if let Some(i) = info {
                p.env.insert("SSH_AUTH_INFO_0".into(), i.into());
            }
            let rec = Recorded::default();
            assert_eq!(
                open_session(&p, &rec, &cfg, &who("alice"), &inv(&["sshd"])),
                PAM_PERM_DENIED
            );
            let d = only_denied(&rec);
            assert!(d.reason.contains("certificate only"), "{d:?}");
        }
        // Close without an open: ignored.
        assert_eq!(
            close_session(&pam("sshd"), &Recorded::default(), &cfg, &inv(&["sshd"])),
            PAM_IGNORE
        );
    }
}
