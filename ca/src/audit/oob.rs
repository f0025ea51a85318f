//! Out-of-band access: sshd's own login records (`HostEvent::Sshd`, read by hostd from
//! sshd's log) matched against the certificates this CA issued.
//!
//! Flags (each a [`Finding`] with its `kind`):
//! - `no_certificate`: an accepted login without a certificate (authorized_keys,
//!   password, keyboard-interactive): access that did not go through Smith;
//! - `unknown_ca`: a certificate signed by a CA key that is not this CA's;
//! - `unknown_certificate`: a certificate whose serial this CA never issued, or whose
//!   key ID differs from the one issued with that serial;
//! - `principal_mismatch`: a certificate issued to another user than the login name;
//! - `used_after_disable`: a certificate used after its owner was disabled;
//! - `failed_attempts`: a hot spot of failed attempts: at least `threshold` failures for
//!   one host and source, or one host and user, within `window_secs`.
//!
//! A login with a certificate this CA issued to that user, before any disable, is not
//! flagged.
//!
//! Owns: the classification (pure functions over the inputs). Must never: read or write
//! the database itself (the caller hands it the rows).

use smith_proto::event::{HostEvent, SshdLoginEvent};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the CA issued with a serial.
#[derive(Debug, Clone)]
pub struct Issued {
    pub user: String,
    pub key_id: String,
    pub principals: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub window_secs: u64,
    pub threshold: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            window_secs: 600,
            threshold: 5,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Finding {
    pub kind: String,
    pub host: String,
    /// The record (for `failed_attempts`, the last one of the hot spot).
    pub seq: u64,
    pub at_unix: u64,
    pub user: String,
    pub rhost: String,
    pub method: String,
    pub key_id: String,
    pub serial: Option<u64>,
    pub fingerprint: String,
    /// A sentence for a person.
    pub detail: String,
}

/// SHA256 fingerprints (`SHA256:...`) of OpenSSH public key lines (the CA keys).
pub fn fingerprints(lines: &[String]) -> HashSet<String> {
    lines
        .iter()
        .filter_map(|l| ssh_key::PublicKey::from_openssh(l.trim()).ok())
        .map(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
        .collect()
}

/// Inputs: sshd events as (host, seq, event JSON), issued certificates by serial, users'
/// disable times, this CA's user CA key fingerprints (`SHA256:...`).
pub fn classify(
    events: &[(String, u64, String)],
    issued: &HashMap<u64, Issued>,
    disabled_at: &HashMap<String, u64>,
    ca_fingerprints: &HashSet<String>,
    cfg: Config,
) -> Vec<Finding> {
    let mut out = Vec::new();
    // (host, "source"|"user", value) → (at, seq) of each failure.
    let mut failures: BTreeMap<(String, String, String), Vec<(u64, u64)>> = BTreeMap::new();
    let parsed: Vec<(&str, u64, SshdLoginEvent)> = events
        .iter()
        .filter_map(|(h, s, e)| match serde_json::from_str::<HostEvent>(e) {
            Ok(HostEvent::Sshd(ev)) => Some((h.as_str(), *s, ev)),
            _ => None,
        })
        .collect();
    for (host, seq, e) in &parsed {
        let finding = |kind: &str, detail: String| Finding {
            kind: kind.into(),
            host: host.to_string(),
            seq: *seq,
            at_unix: e.at_unix,
            user: e.user.clone(),
            rhost: e.rhost.clone(),
            method: e.method.clone(),
            key_id: e.key_id.clone(),
            serial: e.serial,
            fingerprint: e.fingerprint.clone(),
            detail,
        };
        if !e.accepted {
            for (k, v) in [("source", &e.rhost), ("user", &e.user)] {
                failures
                    .entry((host.to_string(), k.to_string(), v.clone()))
                    .or_default()
                    .push((e.at_unix, *seq));
            }
            continue;
        }
        let is_cert = e.serial.is_some() || !e.ca_fingerprint.is_empty() || !e.key_id.is_empty();
        if !is_cert {
            let how = if e.method == "publickey" {
                format!(
                    "a plain {} key {} (authorized_keys)",
                    e.key_type, e.fingerprint
                )
            } else {
                format!("method {}", e.method)
            };
            out.push(finding(
                "no_certificate",
                format!(
                    "{} logged in to {host} from {} with {how}, not a Smith certificate: out-of-band access",
                    e.user, e.rhost
                ),
            ));
            continue;
        }
        if !ca_fingerprints.contains(&e.ca_fingerprint) {
            out.push(finding(
                "unknown_ca",
                format!(
                    "{} logged in to {host} with a certificate signed by CA {}, which is not this CA",
                    e.user,
                    if e.ca_fingerprint.is_empty() { "?" } else { &e.ca_fingerprint }
                ),
            ));
            continue;
        }
        let Some(cert) = e.serial.and_then(|s| issued.get(&s)) else {
            out.push(finding(
                "unknown_certificate",
                format!(
                    "{} logged in to {host} with certificate serial {} (key ID {}), which this CA never issued",
                    e.user,
                    e.serial.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                    e.key_id
                ),
            ));
            continue;
        };
        if cert.key_id != e.key_id {
            out.push(finding(
                "unknown_certificate",
                format!(
                    "certificate serial {} was issued with key ID {} but sshd logged {}",
                    e.serial.unwrap_or(0),
                    cert.key_id,
                    e.key_id
                ),
            ));
            continue;
        }
        if cert.user != e.user || !cert.principals.contains(&e.user) {
            out.push(finding(
                "principal_mismatch",
                format!(
                    "{}'s certificate (serial {}) was used to log in as {} on {host}",
                    cert.user,
                    e.serial.unwrap_or(0),
                    e.user
                ),
            ));
            continue;
        }
        if let Some(d) = disabled_at.get(&cert.user) {
            if e.at_unix >= *d {
                out.push(finding(
                    "used_after_disable",
                    format!(
                        "{}'s certificate (serial {}) was used on {host} after {} was disabled",
                        cert.user,
                        e.serial.unwrap_or(0),
                        cert.user
                    ),
                ));
            }
        }
    }
    // Hot spots: sliding window over each (host, source) and (host, user).
    let by_key: HashMap<(&str, u64), &SshdLoginEvent> =
        parsed.iter().map(|(h, s, e)| ((*h, *s), e)).collect();
    for ((host, what, value), mut hits) in failures {
        if value.is_empty() {
            continue;
        }
        hits.sort();
        let mut start = 0;
        let mut i = 0;
        while i < hits.len() {
            while hits[i].0.saturating_sub(hits[start].0) > cfg.window_secs {
                start += 1;
            }
            if i + 1 - start >= cfg.threshold {
                // Extend to the end of this burst, then report it once.
                let mut end = i;
                while end + 1 < hits.len()
                    && hits[end + 1].0.saturating_sub(hits[start].0) <= cfg.window_secs
                {
                    end += 1;
                }
                let (last_at, last_seq) = hits[end];
                let e = by_key.get(&(host.as_str(), last_seq));
                out.push(Finding {
                    kind: "failed_attempts".into(),
                    host: host.clone(),
                    seq: last_seq,
                    at_unix: last_at,
                    user: if what == "user" {
                        value.clone()
                    } else {
                        e.map(|e| e.user.clone()).unwrap_or_default()
                    },
                    rhost: if what == "source" {
                        value.clone()
                    } else {
                        e.map(|e| e.rhost.clone()).unwrap_or_default()
                    },
                    method: e.map(|e| e.method.clone()).unwrap_or_default(),
                    key_id: String::new(),
                    serial: None,
                    fingerprint: String::new(),
                    detail: format!(
                        "{} failed login attempts on {host} for {what} {value} within {} s",
                        end + 1 - start,
                        hits[end].0 - hits[start].0
                    ),
                });
                start = end + 1;
                i = end + 1;
                continue;
            }
            i += 1;
        }
    }
    out.sort_by(|a, b| {
        (a.at_unix, &a.host, a.seq, &a.kind).cmp(&(b.at_unix, &b.host, b.seq, &b.kind))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUR_CA: &str = "SHA256:ourca";

    fn sshd(accepted: bool, user: &str, rhost: &str, method: &str, at: u64) -> SshdLoginEvent {
        SshdLoginEvent {
            accepted,
            user: user.into(),
            rhost: rhost.into(),
            method: method.into(),
            key_type: "ED25519".into(),
            fingerprint: "SHA256:key".into(),
            key_id: String::new(),
            serial: None,
            ca_fingerprint: String::new(),
            at_unix: at,
        }
    }

    fn cert(user: &str, serial: u64, key_id: &str, ca: &str, at: u64) -> SshdLoginEvent {
        SshdLoginEvent {
            key_type: "ED25519-CERT".into(),
            key_id: key_id.into(),
            serial: Some(serial),
            ca_fingerprint: ca.into(),
            ..sshd(true, user, "10.0.0.5", "publickey", at)
        }
    }

    fn rows(evs: &[(&str, SshdLoginEvent)]) -> Vec<(String, u64, String)> {
        evs.iter()
            .enumerate()
            .map(|(i, (h, e))| {
                (
                    h.to_string(),
                    i as u64 + 1,
                    serde_json::to_string(&HostEvent::Sshd(e.clone())).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn classifies_each_case_and_leaves_good_logins_alone() {
        let mut issued = HashMap::new();
        for (serial, user) in [(1, "oscar"), (2, "alice"), (3, "bob")] {
            issued.insert(
                serial,
                Issued {
                    user: user.into(),
                    key_id: format!("smith:{user}:{serial}"),
                    principals: vec![user.into()],
                },
            );
        }
        let mut disabled = HashMap::new();
        disabled.insert("bob".to_string(), 1000);
        let cas: HashSet<String> = [OUR_CA.to_string()].into();
        let mut evs = vec![
            ("web-1", cert("oscar", 1, "smith:oscar:1", OUR_CA, 100)), // fine
            ("web-1", sshd(true, "root", "10.0.0.9", "publickey", 101)), // authorized_keys
            ("web-1", sshd(true, "root", "10.0.0.9", "password", 102)),
            ("web-1", cert("alice", 9, "smith:alice:9", OUR_CA, 103)), // never issued
            (
                "web-1",
                cert("alice", 2, "smith:alice:2", "SHA256:other", 104),
            ), // other CA
            ("web-1", cert("oscar", 2, "smith:alice:2", OUR_CA, 105)), // alice's cert as oscar
            ("web-1", cert("bob", 3, "smith:bob:3", OUR_CA, 999)),     // before disable: fine
            ("web-1", cert("bob", 3, "smith:bob:3", OUR_CA, 1001)),    // after disable
            ("web-1", cert("alice", 2, "smith:forged", OUR_CA, 106)),  // wrong key id
        ];
        // 5 failures from one source within 10 minutes; 4 for a user elsewhere.
        for i in 0..5 {
            evs.push((
                "db-1",
                sshd(
                    false,
                    &format!("u{i}"),
                    "203.0.113.7",
                    "password",
                    2000 + i * 60,
                ),
            ));
        }
        for i in 0..4 {
            evs.push((
                "db-1",
                sshd(
                    false,
                    "carol",
                    &format!("198.51.100.{i}"),
                    "password",
                    3000 + i,
                ),
            ));
        }
        // 5 failures spread over more than 10 minutes: no hot spot.
        for i in 0..5 {
            evs.push((
                "web-2",
                sshd(
                    false,
                    "dave",
                    &format!("192.0.2.{i}"),
                    "password",
                    5000 + i * 200,
                ),
            ));
        }
        let f = classify(&rows(&evs), &issued, &disabled, &cas, Config::default());
        let kinds: Vec<(&str, u64)> = f.iter().map(|f| (f.kind.as_str(), f.at_unix)).collect();
        assert_eq!(
            kinds,
            vec![
                ("no_certificate", 101),
                ("no_certificate", 102),
                ("unknown_certificate", 103),
                ("unknown_ca", 104),
                ("principal_mismatch", 105),
                ("unknown_certificate", 106),
                ("used_after_disable", 1001),
                ("failed_attempts", 2240),
            ]
        );
        let hot = f.last().unwrap();
        assert_eq!(
            (hot.host.as_str(), hot.rhost.as_str()),
            ("db-1", "203.0.113.7")
        );
        assert!(hot.detail.contains("5 failed"), "{}", hot.detail);
        // A lower threshold catches carol (4 failures for one user).
        let f = classify(
            &rows(&evs),
            &issued,
            &disabled,
            &cas,
            Config {
                window_secs: 600,
                threshold: 4,
            },
        );
        assert!(f
            .iter()
            .any(|f| f.kind == "failed_attempts" && f.user == "carol"));
    }
}
