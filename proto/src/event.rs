//! Host audit events, as pam_smith reports them to hostd (over the socket, or as a
//! pending file when hostd is down) and as hostd records them in its spool.

use std::fmt;
use std::str::FromStr;

/// The sender's identity for one event, the same on every attempt to deliver it.
///
/// Delivery to hostd is retried (an Ack that arrives after pam_smith's socket budget is
/// followed by a pending file; sshd's log is re-read after a crash from the last saved
/// position), so hostd spools an event once per id and answers a repeat with the
/// sequence number it already has. pam_smith draws ids at random; hostd derives the id
/// of a log line from where it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u128);

impl fmt::Display for EventId {
    /// 32 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for EventId {
    type Err = String;
    fn from_str(s: &str) -> Result<EventId, String> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("an event id is 32 hex digits, not {s:?}"));
        }
        u128::from_str_radix(s, 16)
            .map(EventId)
            .map_err(|e| e.to_string())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A session opening or closing (sshd, or any PAM service that runs pam_smith's
/// session hooks).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SessionEvent {
    pub phase: SessionPhase,
    pub user: String,
    /// PAM service (`sshd`, `sudo`, ...).
    pub service: String,
    pub rhost: String,
    pub tty: String,
    /// pid of the process that ran the PAM session (sshd's per-connection process):
    /// hostd uses it to find the session of a later sudo.
    pub pid: u32,
    /// Certificate key ID from `SSH_AUTH_INFO_0`, empty when the login used no
    /// certificate.
    pub key_id: String,
    pub serial: Option<u64>,
    pub at_unix: u64,
    /// Set on close.
    pub duration_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum SessionPhase {
    Open,
    Close,
}

/// One sudo invocation by a Smith user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SudoEvent {
    pub user: String,
    pub target: String,
    pub command: String,
    pub cwd: String,
    pub tty: String,
    pub allowed: bool,
    pub reason: String,
    /// pid of the sudo process.
    pub pid: u32,
    /// Key ID of the certificate of the login session sudo runs in (filled by hostd).
    pub key_id: String,
    pub at_unix: u64,
}

/// An access refused by pam_smith (no grant, scope mismatch, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DeniedEvent {
    pub user: String,
    pub service: String,
    pub rhost: String,
    pub reason: String,
    pub key_id: String,
    pub at_unix: u64,
}

/// A login attempt as sshd itself logged it (accepted or failed), whatever the method:
/// lets the CA spot access that did not go through Smith.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SshdLoginEvent {
    pub accepted: bool,
    pub user: String,
    pub rhost: String,
    /// `publickey`, `password`, `keyboard-interactive/pam`, `none`, ...
    pub method: String,
    /// e.g. `ED25519`, `ED25519-CERT`, `RSA`.
    pub key_type: String,
    /// `SHA256:...` of the key (or of the certificate's key).
    pub fingerprint: String,
    /// Certificate key ID, empty when no certificate was used.
    pub key_id: String,
    pub serial: Option<u64>,
    /// `SHA256:...` of the signing CA key, empty when no certificate was used.
    pub ca_fingerprint: String,
    pub at_unix: u64,
}

/// What hostd did when a user lost access to this host (removed from the group,
/// disabled, grant deleted or narrowed): their processes, or one session's, ended, kept
/// (`on_removal = "keep"`) or held for an operator (a new CA epoch, a mass removal).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AccessEndedEvent {
    /// The Smith user (or, for one session, the login it ran as).
    pub user: String,
    pub uid: Option<u32>,
    /// `user`: every process of the uid; `session`: one SSH session's process tree.
    pub scope: String,
    /// `ended`, `kept`, `held`.
    pub action: String,
    /// Why: `access removed`, `grant no longer covers the session`, why it was held...
    pub reason: String,
    /// `logind`, `signals`, `none`.
    pub method: String,
    /// Processes signalled (`ended`), or found running (`kept`, `held`).
    pub processes: u32,
    /// Processes still running afterwards (0 unless something resisted SIGKILL).
    pub survivors: u32,
    /// The session's sshd process and certificate, for `scope = session`.
    pub session_pid: Option<u32>,
    pub key_id: String,
    /// Who asked: `hostd` (a sync) or `smith-host terminate` (an operator).
    pub by: String,
    pub at_unix: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "type", rename_all = "snake_case"))]
pub enum HostEvent {
    Session(SessionEvent),
    Sudo(SudoEvent),
    Denied(DeniedEvent),
    Sshd(SshdLoginEvent),
    AccessEnded(AccessEndedEvent),
}

impl HostEvent {
    pub fn user(&self) -> &str {
        match self {
            HostEvent::Session(e) => &e.user,
            HostEvent::Sudo(e) => &e.user,
            HostEvent::Denied(e) => &e.user,
            HostEvent::Sshd(e) => &e.user,
            HostEvent::AccessEnded(e) => &e.user,
        }
    }
    pub fn at_unix(&self) -> u64 {
        match self {
            HostEvent::Session(e) => e.at_unix,
            HostEvent::Sudo(e) => e.at_unix,
            HostEvent::Denied(e) => e.at_unix,
            HostEvent::Sshd(e) => e.at_unix,
            HostEvent::AccessEnded(e) => e.at_unix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EventId;

    #[test]
    fn event_ids_are_32_hex_digits_both_ways() {
        let id = EventId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(id.to_string(), "0123456789abcdef0011223344556677");
        assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
        assert_eq!(EventId(1).to_string().len(), 32);
        for bad in [
            "",
            "12",
            "0123456789abcdef0011223344556677aa",
            "g123456789abcdef0011223344556677",
            "+123456789abcdef0011223344556677",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad}");
        }
    }
}
