//! Parsing sshd's own log lines into `HostEvent::Sshd` login events, so the CA can see
//! logins that did not go through Smith (authorized_keys, passwords) and certificates
//! it never issued.
//!
//! Accepted formats (all checked against OpenSSH 9.2 on Debian 12):
//! - the bare message, as `sshd -E FILE` writes it (no timestamp, no tag) and as the
//!   journal's `MESSAGE` field holds it;
//! - syslog lines (`/var/log/auth.log`, `/var/log/secure`): `<time> <host> sshd[PID]: <message>`;
//!   lines of other programs are ignored.
//!
//! Messages recognised:
//! - `Accepted <method> for <user> from <ip> port <port> ssh2[: <key type> <fp>[ ID <key id> (serial <n>) CA <ca type> <ca fp>]]`
//! - `Failed <method> for [invalid user ]<user> from <ip> port <port> ssh2[: ...]`
//! - `Invalid user <user> from <ip> port <port>` (one failed attempt per connection;
//!   the `Failed ... for invalid user` line of the same connection is not counted again)
//! - `Connection closed by authenticating user <user> <ip> port <port> [preauth]` and
//!   `Disconnected from authenticating user ...`: a failed attempt (method `none`) when
//!   nothing else was reported for that connection (e.g. refused public keys, which sshd
//!   logs only at VERBOSE).
//!
//! Owns: the grammar. Must never: panic on any input, or report an event twice for one
//! attempt.

use smith_proto::event::SshdLoginEvent;
use std::collections::HashMap;

/// Connections remembered for de-duplication.
const MAX_CONNECTIONS: usize = 4096;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The program field of a syslog line, and the message after it: `None` if `line` does
/// not start with a syslog header (`<time> <host> <prog>[PID]: ` or `<prog>: `, the time
/// either RFC 3339 or `Mon dd hh:mm:ss`).
fn syslog_header(line: &str) -> Option<(&str, &str)> {
    let mut rest = line;
    let next = |s: &mut &str| -> Option<String> {
        let t = s.trim_start_matches(' ');
        let end = t.find(' ')?;
        let word = t[..end].to_string();
        *s = &t[end..];
        Some(word)
    };
    let first = next(&mut rest)?;
    if MONTHS.contains(&first.as_str()) {
        let day = next(&mut rest)?;
        let time = next(&mut rest)?;
        if day.parse::<u8>().is_err() || time.len() < 8 || time.as_bytes()[2] != b':' {
            return None;
        }
    } else if !(first.len() >= 19
        && first.as_bytes()[0].is_ascii_digit()
        && first.as_bytes()[4] == b'-'
        && first.as_bytes()[10] == b'T')
    {
        return None;
    }
    let _host = next(&mut rest)?;
    let rest = rest.trim_start_matches(' ');
    let colon = rest.find(": ")?;
    let tag = &rest[..colon];
    let prog = match tag.find('[') {
        Some(b)
            if tag.ends_with(']')
                && tag[b + 1..tag.len() - 1]
                    .bytes()
                    .all(|c| c.is_ascii_digit()) =>
        {
            &tag[..b]
        }
        Some(_) => return None,
        None => tag,
    };
    if prog.is_empty() || prog.contains(' ') {
        return None;
    }
    Some((prog, &rest[colon + 2..]))
}

/// Whether a program name is OpenSSH's server (`sshd`; `sshd-session` in OpenSSH 9.8+).
pub fn is_sshd_program(prog: &str) -> bool {
    prog == "sshd" || prog == "sshd-session"
}

/// Extracts sshd's message from a log line. A syslog line (`auth.log`, `secure`) counts
/// only when its header's program field is sshd: text that merely contains ` sshd[` (a
/// sudo `COMMAND=` line, a user's message) is another program's line and is ignored
/// (issue 14, M1). A line without a syslog header is taken whole: that is the format of
/// `sshd -E FILE`, a file only sshd writes. `None` for another program's line.
///
/// A syslog *file* cannot tell sshd from a local user who runs `logger -t sshd`: the
/// program field is what the sender claims. The journal can (`_COMM`, `_UID`, set by the
/// kernel and journald): prefer `sshd_log = "journal"` where journald runs.
pub fn sshd_message(line: &str) -> Option<&str> {
    let line = line.trim_end_matches(['\n', '\r']);
    match syslog_header(line) {
        Some((prog, msg)) if is_sshd_program(prog) => Some(msg),
        Some(_) => None,
        None => {
            // Not a syslog line we can parse. If it still looks like one (starts with a
            // time), it is some other program's: ignore it rather than guess.
            let first = line.split(' ').next().unwrap_or("");
            let looks_timed = first.len() >= 3
                && (first.as_bytes()[0].is_ascii_digit() || MONTHS.contains(&first));
            if looks_timed {
                None
            } else {
                Some(line)
            }
        }
    }
}

/// Stateful parser (remembers connections for de-duplication).
#[derive(Debug, Default)]
pub struct Parser {
    /// (ip, port) → an event was already reported for this connection.
    reported: HashMap<(String, String), Reported>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    InvalidUser,
    Other,
}

fn words(s: &str) -> Vec<&str> {
    s.split(' ').filter(|w| !w.is_empty()).collect()
}

/// Parses `<user> from <ip> port <port> ssh2[: details]` (the part after "for ").
fn for_clause(rest: &str) -> Option<(String, String, String, &str)> {
    // The user name may not contain spaces in practice, but sshd logs any string the
    // client sent: search for the last " from " that is followed by "<ip> port <n>".
    let mut idx = None;
    for (i, _) in rest.match_indices(" from ") {
        let tail = &rest[i + 6..];
        let w = words(tail);
        if w.len() >= 3 && w[1] == "port" && w[2].trim_end_matches(':').parse::<u16>().is_ok() {
            idx = Some(i);
        }
    }
    let i = idx?;
    let user = rest[..i].to_string();
    let tail = &rest[i + 6..];
    let w = words(tail);
    let ip = w[0].to_string();
    let port = w[2].trim_end_matches(':').to_string();
    let details = match tail.find(": ") {
        Some(j) => &tail[j + 2..],
        None => "",
    };
    Some((user, ip, port, details))
}

fn key_details(details: &str, ev: &mut SshdLoginEvent) {
    let w = words(details);
    if w.len() >= 2 {
        ev.key_type = w[0].to_string();
        ev.fingerprint = w[1].to_string();
    }
    // "... ID <key id> (serial <n>) CA <type> <fp>": the key ID may hold spaces.
    if let Some(id_at) = details.find(" ID ") {
        let after = &details[id_at + 4..];
        if let Some(ser_at) = after.rfind(" (serial ") {
            ev.key_id = after[..ser_at].to_string();
            let tail = &after[ser_at + 9..];
            if let Some(close) = tail.find(')') {
                ev.serial = tail[..close].parse().ok();
                let ca = words(&tail[close + 1..]);
                if ca.len() >= 3 && ca[0] == "CA" {
                    ev.ca_fingerprint = ca[2].to_string();
                }
            }
        }
    }
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    fn remember(&mut self, ip: &str, port: &str, r: Reported) {
        if self.reported.len() >= MAX_CONNECTIONS {
            self.reported.clear();
        }
        self.reported.insert((ip.to_string(), port.to_string()), r);
    }

    /// Parses one log line (any format above); `at_unix` is the event time.
    pub fn parse_line(&mut self, line: &str, at_unix: u64) -> Option<SshdLoginEvent> {
        let msg = sshd_message(line)?;
        self.parse_message(msg, at_unix)
    }

    /// Parses one sshd message.
    pub fn parse_message(&mut self, msg: &str, at_unix: u64) -> Option<SshdLoginEvent> {
        let msg = msg.trim_end_matches(['\n', '\r']);
        let blank = |accepted: bool, user: String, rhost: String, method: &str| SshdLoginEvent {
            accepted,
            user,
            rhost,
            method: method.to_string(),
            key_type: String::new(),
            fingerprint: String::new(),
            key_id: String::new(),
            serial: None,
            ca_fingerprint: String::new(),
            at_unix,
        };
        for (prefix, accepted) in [("Accepted ", true), ("Failed ", false)] {
            let Some(rest) = msg.strip_prefix(prefix) else {
                continue;
            };
            let (method, rest) = rest.split_once(" for ")?;
            if method.contains(' ') || method.is_empty() {
                return None;
            }
            let (invalid, rest) = match rest.strip_prefix("invalid user ") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let (user, ip, port, details) = for_clause(rest)?;
            let key = (ip.clone(), port.clone());
            if invalid && !accepted && self.reported.get(&key) == Some(&Reported::InvalidUser) {
                // Already counted by the "Invalid user" line of this connection.
                self.remember(&ip, &port, Reported::Other);
                return None;
            }
            self.remember(&ip, &port, Reported::Other);
            let mut ev = blank(accepted, user, ip, method);
            if method == "publickey" || method.starts_with("publickey") {
                key_details(details, &mut ev);
            }
            return Some(ev);
        }
        if let Some(rest) = msg.strip_prefix("Invalid user ") {
            let (user, ip, port, _) = for_clause(rest)?;
            self.remember(&ip, &port, Reported::InvalidUser);
            return Some(blank(false, user, ip, "invalid_user"));
        }
        for prefix in [
            "Connection closed by authenticating user ",
            "Disconnected from authenticating user ",
        ] {
            if let Some(rest) = msg.strip_prefix(prefix) {
                let rest = rest.trim_end_matches(" [preauth]");
                let w = words(rest);
                // "<user> <ip> port <port>"
                if w.len() < 4 || w[w.len() - 2] != "port" {
                    return None;
                }
                let port = w[w.len() - 1];
                let ip = w[w.len() - 3];
                let user = w[..w.len() - 3].join(" ");
                if self
                    .reported
                    .remove(&(ip.to_string(), port.to_string()))
                    .is_some()
                {
                    return None;
                }
                return Some(blank(false, user, ip.to_string(), "none"));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by OpenSSH 9.2p1 (Debian 12) `sshd -D -E FILE`, LogLevel INFO: a
    /// certificate login, an authorized_keys login, a refused key, an invalid user with a
    /// key, then passwords and keyboard-interactive, right and wrong, for root and for
    /// an invalid user.
    const REAL_92: &str = "\
Server listening on 127.0.0.1 port 2299.
Accepted publickey for root from 127.0.0.1 port 40402 ssh2: ED25519-CERT SHA256:32U2G1wIsKvFHP1FrYzZH+RCMEc0p2s5WqG8gsbMvpM ID smith:root:0123abcd (serial 42) CA ED25519 SHA256:/N7wkKvH+KPqg81UgTr+OaRTPQeCuIH+5muLr030Eks
Received disconnect from 127.0.0.1 port 40402:11: disconnected by user
Disconnected from user root 127.0.0.1 port 40402
Accepted publickey for root from 127.0.0.1 port 40418 ssh2: RSA SHA256:P0N5BL9Z+mdOzyL83G1T+4D8wz1FREaOPM3/imep/AM
Received disconnect from 127.0.0.1 port 40418:11: disconnected by user
Disconnected from user root 127.0.0.1 port 40418
Connection closed by authenticating user root 127.0.0.1 port 40428 [preauth]
Invalid user nosuchuser from 127.0.0.1 port 40430
Connection closed by invalid user nosuchuser 127.0.0.1 port 40430 [preauth]
Accepted password for root from 127.0.0.1 port 55888 ssh2
Received disconnect from 127.0.0.1 port 55888:11: disconnected by user
Disconnected from user root 127.0.0.1 port 55888
Invalid user nosuchuser from 127.0.0.1 port 55896
Failed password for invalid user nosuchuser from 127.0.0.1 port 55896 ssh2
Connection closed by invalid user nosuchuser 127.0.0.1 port 55896 [preauth]
Failed password for root from 127.0.0.1 port 36992 ssh2
Connection closed by authenticating user root 127.0.0.1 port 36992 [preauth]
Accepted keyboard-interactive/pam for root from 127.0.0.1 port 37000 ssh2
Received disconnect from 127.0.0.1 port 37000:11: disconnected by user
Disconnected from user root 127.0.0.1 port 37000
Invalid user nosuchuser from 127.0.0.1 port 37002
Postponed keyboard-interactive for invalid user nosuchuser from 127.0.0.1 port 37002 ssh2 [preauth]
PAM: Authentication failure for illegal user nosuchuser from 127.0.0.1
Failed keyboard-interactive/pam for invalid user nosuchuser from 127.0.0.1 port 37002 ssh2
Connection closed by invalid user nosuchuser 127.0.0.1 port 37002 [preauth]
PAM: Authentication failure for root from 127.0.0.1
Connection closed by authenticating user root 127.0.0.1 port 56640 [preauth]
";

    fn parse_all(text: &str) -> Vec<SshdLoginEvent> {
        let mut p = Parser::new();
        text.lines().filter_map(|l| p.parse_line(l, 7)).collect()
    }

    #[test]
    fn real_openssh_92_lines() {
        let evs = parse_all(REAL_92);
        let summary: Vec<(bool, &str, &str)> = evs
            .iter()
            .map(|e| (e.accepted, e.user.as_str(), e.method.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (true, "root", "publickey"),
                (true, "root", "publickey"),
                (false, "root", "none"),
                (false, "nosuchuser", "invalid_user"),
                (true, "root", "password"),
                (false, "nosuchuser", "invalid_user"),
                (false, "root", "password"),
                (true, "root", "keyboard-interactive/pam"),
                (false, "nosuchuser", "invalid_user"),
                (false, "root", "none"),
            ]
        );
        let cert = &evs[0];
        assert_eq!(cert.rhost, "127.0.0.1");
        assert_eq!(cert.key_type, "ED25519-CERT");
        assert_eq!(
            cert.fingerprint,
            "SHA256:32U2G1wIsKvFHP1FrYzZH+RCMEc0p2s5WqG8gsbMvpM"
        );
        assert_eq!(cert.key_id, "smith:root:0123abcd");
        assert_eq!(cert.serial, Some(42));
        assert_eq!(
            cert.ca_fingerprint,
            "SHA256:/N7wkKvH+KPqg81UgTr+OaRTPQeCuIH+5muLr030Eks"
        );
        assert_eq!(cert.at_unix, 7);
        let plain = &evs[1];
        assert_eq!(
            (plain.key_type.as_str(), plain.key_id.as_str(), plain.serial),
            ("RSA", "", None)
        );
        assert_eq!(
            plain.fingerprint,
            "SHA256:P0N5BL9Z+mdOzyL83G1T+4D8wz1FREaOPM3/imep/AM"
        );
        assert!(evs[4].fingerprint.is_empty() && evs[4].key_id.is_empty());
    }

    #[test]
    fn syslog_and_journal_forms() {
        let mut p = Parser::new();
        let l = "2024-05-01T10:00:00.123456+00:00 web-1 sshd[812]: Accepted publickey for oscar from 10.1.2.3 port 5022 ssh2: ED25519-CERT SHA256:abc ID smith:oscar:9f (serial 7) CA ED25519 SHA256:def";
        let e = p.parse_line(l, 1).unwrap();
        assert_eq!((e.user.as_str(), e.serial), ("oscar", Some(7)));
        let l = "May  1 10:00:00 web-1 sshd[812]: Failed password for root from 10.1.2.3 port 5023 ssh2";
        assert!(!p.parse_line(l, 1).unwrap().accepted);
        // Other programs in auth.log are ignored, even with an sshd-like message.
        let l = "May  1 10:00:00 web-1 sudo: Accepted password for root from 1.2.3.4 port 1 ssh2";
        assert!(p.parse_line(l, 1).is_none());
        let l = "2024-05-01T10:00:00+00:00 web-1 CRON[1]: pam_unix(cron:session): session opened";
        assert!(p.parse_line(l, 1).is_none());
        // M1: another program's line that carries an sshd-looking text (a sudo command
        // line, a user's message) is not sshd's. Before issue 14 the text after the
        // first " sshd[" anywhere in the line was taken as sshd's message.
        let forged = "May  1 10:00:00 web-1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/echo x sshd[1]: Accepted publickey for bob from 1.2.3.4 port 1 ssh2: ED25519-CERT SHA256:abc ID smith:bob:1 (serial 7) CA ED25519 SHA256:def";
        assert!(p.parse_line(forged, 1).is_none());
        let forged = "2024-05-01T10:00:00+00:00 web-1 alice: hello sshd: Accepted password for root from 1.2.3.4 port 1 ssh2";
        assert!(p.parse_line(forged, 1).is_none());
        let forged = "May  1 10:00:00 web-1 logger[77]: x sshd[1]: Accepted password for root from 1.2.3.4 port 1 ssh2";
        assert!(p.parse_line(forged, 1).is_none());
        // OpenSSH 9.8+ logs as sshd-session.
        let l = "May  1 10:00:00 web-1 sshd-session[9]: Failed password for root from 10.1.2.3 port 5024 ssh2";
        assert!(p.parse_line(l, 1).is_some());
        // A key ID with spaces and parentheses.
        let e = p
            .parse_message(
                "Accepted publickey for a from ::1 port 2 ssh2: ED25519-CERT SHA256:x ID we (ird) id (serial 18446744073709551615) CA RSA SHA256:y",
                1,
            )
            .unwrap();
        assert_eq!(e.key_id, "we (ird) id");
        assert_eq!(e.serial, Some(u64::MAX));
        assert_eq!(
            (e.rhost.as_str(), e.ca_fingerprint.as_str()),
            ("::1", "SHA256:y")
        );
    }

    #[test]
    fn garbage_never_panics_or_matches() {
        let mut p = Parser::new();
        for l in [
            "",
            "Accepted",
            "Accepted publickey for",
            "Accepted publickey for x from",
            "Accepted publickey for x from 1.2.3.4 port",
            "Accepted publickey for x from 1.2.3.4 port notaport ssh2",
            "Failed  for  from  port  ssh2",
            "Invalid user",
            "Connection closed by authenticating user",
            "Connection closed by authenticating user x 1.2.3.4 port",
            "sshd[: Accepted",
            "x sshd[12]:",
            "\u{0}\u{ffff}",
        ] {
            assert!(p.parse_line(l, 0).is_none(), "{l:?}");
        }
        let e = p
            .parse_line(
                "Accepted publickey for x from 1.2.3.4 port 22 ssh2: ED25519-CERT",
                0,
            )
            .unwrap();
        assert!(e.fingerprint.is_empty());
    }
}
