//! What each PAM phase does for a non-local user (the entry points in [`crate::entry`]
//! have already answered `PAM_IGNORE` for local accounts).
//!
//! Owns: the account decision (grant level against the needed level), the session
//! certificate check (defence in depth: `SSH_AUTH_INFO_0` must hold a certificate that
//! `policy::check_certificate` accepts for this user and host), home creation, session
//! and sudo records, and what is logged for each refusal.
//!
//! Must never: let a non-local user in when the cache cannot be read ("never let in on
//! doubt"), fail a session because an audit event could not be delivered, or read the
//! certificate from anywhere but PAM's environment.

use crate::args::Config;
use crate::home::{ensure_home, HomeOutcome};
use crate::identity::{classify, Identity, SmithUser};
use crate::pam::{Pam, Priority, PAM_RHOST, PAM_SERVICE, PAM_TTY};
use crate::pam::{PAM_AUTHINFO_UNAVAIL, PAM_IGNORE, PAM_PERM_DENIED, PAM_SESSION_ERR, PAM_SUCCESS};
use crate::report::{deliver, Delivery};
use crate::sudo;
use smith_proto::event::{DeniedEvent, HostEvent, SessionEvent, SessionPhase, SudoEvent};
use smith_proto::sshcert::{cert_from_auth_info, CertInfo};
use smith_proto::{policy, Level};
use std::ffi::{c_int, CStr};

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
    user: &SmithUser,
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
    match policy::check_certificate(
        &cert,
        user.name.as_str(),
        Some(user.level),
        &user.host_tags,
        now,
    ) {
        Ok(()) => Ok(Some(cert)),
        Err(refusal) => Err((refusal.to_string(), cert.key_id.clone())),
    }
}

fn log_delivery(pam: &Pam, cfg: &Config, what: &str, d: &Delivery) {
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

fn report(pam: &Pam, cfg: &Config, what: &str, ev: HostEvent) {
    let d = deliver(&cfg.socket, &cfg.pending, &ev);
    log_delivery(pam, cfg, what, &d);
}

fn denied_event(pam: &Pam, user: &str, reason: &str, key_id: &str) -> HostEvent {
    HostEvent::Denied(DeniedEvent {
        user: user.to_string(),
        service: pam.item(PAM_SERVICE),
        rhost: pam.item(PAM_RHOST),
        reason: reason.to_string(),
        key_id: key_id.to_string(),
        at_unix: now_unix(),
    })
}

fn pid() -> u32 {
    std::process::id()
}

/// The sudo audit record for this invocation (issue 4's seam: hostd fills the key ID
/// of the login session from the process tree).
fn sudo_event(pam: &Pam, user: &str, allowed: bool, reason: &str) -> HostEvent {
    let cmd = sudo::parse_argv(&sudo::own_argv());
    HostEvent::Sudo(SudoEvent {
        user: user.to_string(),
        target: cmd.target,
        command: cmd.command,
        cwd: std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        tty: pam.item(PAM_TTY),
        allowed,
        reason: reason.to_string(),
        pid: pid(),
        key_id: String::new(),
        at_unix: now_unix(),
    })
}

/// `pam_sm_acct_mgmt` for a non-local user.
pub fn account(pam: &Pam, cfg: &Config, user: &[u8]) -> c_int {
    let name = String::from_utf8_lossy(user).into_owned();
    let id = classify(&cfg.passwd, &cfg.cache, user);
    let decision = decide_account(&id, cfg.level);
    let sudo_mode = cfg.level == Level::Sudo;
    let svc = pam.item(PAM_SERVICE);
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
            if sudo_mode {
                report(pam, cfg, "sudo record", sudo_event(pam, &name, true, ""));
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
            let ev = if sudo_mode {
                sudo_event(pam, &name, false, &reason)
            } else {
                denied_event(pam, &name, &reason, &auth_info_key_id(pam))
            };
            report(pam, cfg, "denial record", ev);
            PAM_PERM_DENIED
        }
        AccountDecision::Unavailable(why) => {
            let reason = format!("the Smith cache is unavailable, refusing non-local user: {why}");
            pam.log(
                Priority::Err,
                &format!("access denied for {name} ({svc}): {reason}"),
            );
            let ev = if sudo_mode {
                sudo_event(pam, &name, false, &reason)
            } else {
                denied_event(pam, &name, &reason, &auth_info_key_id(pam))
            };
            report(pam, cfg, "denial record", ev);
            PAM_AUTHINFO_UNAVAIL
        }
    }
}

/// Key ID of the certificate in `SSH_AUTH_INFO_0`, if any (empty in the account phase
/// of OpenSSH 9.2; filled by later versions).
fn auth_info_key_id(pam: &Pam) -> String {
    pam.getenv(AUTH_INFO)
        .and_then(|i| cert_from_auth_info(&i))
        .map(|c| c.key_id)
        .unwrap_or_default()
}

/// `pam_sm_open_session` for a non-local user.
pub fn open_session(pam: &Pam, cfg: &Config, user: &[u8]) -> c_int {
    let name = String::from_utf8_lossy(user).into_owned();
    let u = match classify(&cfg.passwd, &cfg.cache, user) {
        Identity::Local | Identity::NotSmith => return PAM_IGNORE,
        Identity::Unavailable(why) => {
            pam.log(
                Priority::Err,
                &format!("session refused for {name}: the Smith cache is unavailable: {why}"),
            );
            return PAM_SESSION_ERR;
        }
        Identity::Smith(u) => u,
    };
    let now = now_unix();
    let info = pam.getenv(AUTH_INFO);
    let cert = match check_session_cert(info.as_deref(), &u, now) {
        Ok(c) => c,
        Err((reason, key_id)) => {
            pam.log(
                Priority::Notice,
                &format!("session refused for {name}: {reason} (key ID {key_id:?})"),
            );
            report(
                pam,
                cfg,
                "denial record",
                denied_event(pam, &name, &reason, &key_id),
            );
            return PAM_PERM_DENIED;
        }
    };
    let (key_id, serial) = match &cert {
        Some(c) => (c.key_id.clone(), Some(c.serial)),
        None => (String::new(), None),
    };
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
            Err(e) if e.is_security() => {
                let reason = format!("home directory: {e}");
                pam.log(
                    Priority::Err,
                    &format!("session refused for {name}: {reason}"),
                );
                report(
                    pam,
                    cfg,
                    "denial record",
                    denied_event(pam, &name, &reason, &key_id),
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
        service: pam.item(PAM_SERVICE),
        rhost: pam.item(PAM_RHOST),
        tty: pam.item(PAM_TTY),
        pid: pid(),
        key_id: key_id.clone(),
        serial,
        at_unix: now,
        duration_secs: None,
    });
    report(pam, cfg, "session open record", ev);
    pam.set_data(
        SESSION_DATA,
        SessionData {
            user: name,
            opened_at: now,
            key_id,
            serial,
        },
    );
    PAM_SUCCESS
}

/// `pam_sm_close_session`: the close record for a session this module opened.
pub fn close_session(pam: &Pam, cfg: &Config) -> c_int {
    let Some(data) = pam.get_data::<SessionData>(SESSION_DATA) else {
        return PAM_IGNORE;
    };
    let now = now_unix();
    let ev = HostEvent::Session(SessionEvent {
        phase: SessionPhase::Close,
        user: data.user.clone(),
        service: pam.item(PAM_SERVICE),
        rhost: pam.item(PAM_RHOST),
        tty: pam.item(PAM_TTY),
        pid: pid(),
        key_id: data.key_id.clone(),
        serial: data.serial,
        at_unix: now,
        duration_secs: Some(now.saturating_sub(data.opened_at)),
    });
    report(pam, cfg, "session close record", ev);
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
    fn cert_line(principal: &str, scope: Option<&str>, valid: (u64, u64)) -> String {
        let mut v = Vec::new();
        put(&mut v, b"ssh-ed25519-cert-v01@openssh.com");
        put(&mut v, &[1; 32]);
        put(&mut v, &[2; 32]);
        v.extend_from_slice(&7u64.to_be_bytes());
        v.extend_from_slice(&1u32.to_be_bytes());
        put(&mut v, b"smith:alice:req1");
        let mut p = Vec::new();
        put(&mut p, principal.as_bytes());
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
        let Identity::Smith(u) = smith(Level::Ssh) else {
            unreachable!()
        };
        let now = 1000;
        assert_eq!(check_session_cert(None, &u, now), Ok(None));
        assert_eq!(check_session_cert(Some("password\n"), &u, now), Ok(None));
        assert_eq!(
            check_session_cert(Some("publickey ssh-ed25519 AAAAC3Nza\n"), &u, now),
            Ok(None)
        );
        let ok = cert_line("alice", Some("env=dev"), (10, 2000));
        let c = check_session_cert(Some(&ok), &u, now).unwrap().unwrap();
        assert_eq!((c.key_id.as_str(), c.serial), ("smith:alice:req1", 7));
        let wrong_scope = cert_line("alice", Some("env=prod"), (10, 2000));
        let (reason, key_id) = check_session_cert(Some(&wrong_scope), &u, now).unwrap_err();
        assert!(
            reason.contains("does not match this host's tags"),
            "{reason}"
        );
        assert_eq!(key_id, "smith:alice:req1");
        let other = cert_line("bob", None, (10, 2000));
        assert!(check_session_cert(Some(&other), &u, now).is_err());
        let expired = cert_line("alice", None, (10, 20));
        assert!(check_session_cert(Some(&expired), &u, now).is_err());
        let garbled = "publickey ssh-ed25519-cert-v01@openssh.com AAAA!!!!\n";
        assert!(
            check_session_cert(Some(garbled), &u, now).is_err(),
            "unreadable cert refuses"
        );
    }
}
