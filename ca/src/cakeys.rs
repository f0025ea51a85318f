//! CA keys over time: each CA role (user CA, host CA) has a set of keys, each in a
//! rotation phase, kept in the model (`Change::SetCaKeys`) and decided here without I/O.
//!
//! A rotation, for either role: `rotate` adds a `next` key beside the `signing` one (both
//! published: hosts trust both user CA keys, engineers' known_hosts both host CA keys);
//! the **switch** makes the next key the signing one and the old one `retiring` (still
//! published: what it signed is still valid); **retirement** drops the retiring key
//! (unpublished: what it signed is refused from then on).
//!
//! - User CA: the switch happens once every host has acknowledged the next key (it
//!   synced the policy version that published it); hosts not seen for `stale_after` are
//!   listed and do not block. The old key retires after the longest user certificate
//!   lifetime.
//! - Host CA: the parties that must trust the next key first are engineers' known_hosts,
//!   which the CA cannot observe: the switch happens after an admin-set grace period; the
//!   old key retires after the longest host certificate lifetime, or earlier once every
//!   host holds a certificate of the new key (the authority checks that: it reads the
//!   store).
//! - `--force` takes the pending step now (switch, or retire).
//!
//! A role without keys in the model has the one key of its `Keys` (a CA made before
//! rotations, or never rotated): a rotation starts by recording it as `signing`.
//!
//! Must never: leave a role without a signing key, unpublish a key before the switch
//! away from it, or switch to a key no host could have learned.

use std::collections::BTreeMap;

/// Which CA a key serves.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CaRole {
    User,
    Host,
}

impl CaRole {
    pub fn as_str(self) -> &'static str {
        match self {
            CaRole::User => "user",
            CaRole::Host => "host",
        }
    }
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaKeyState {
    /// Published, not signing yet.
    Next,
    /// Signs new certificates (published, listed first).
    Signing,
    /// Replaced: still published until `retire_at`.
    Retiring,
}

/// One CA key of a role.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaKey {
    /// Where the private key is: `file:NAME` (a key file of the data directory) or a
    /// `pkcs11:` URI (which holds no PIN).
    pub source: String,
    /// The OpenSSH public key line.
    pub public: String,
    pub state: CaKeyState,
    pub added_at: u64,
    /// The policy version that first published it (a host that synced it has it).
    pub added_version: u64,
    #[serde(default)]
    pub signing_since: Option<u64>,
    /// Host CA: the switch to this next key happens at this time (the grace period).
    #[serde(default)]
    pub switch_at: Option<u64>,
    /// A retiring key is unpublished at this time.
    #[serde(default)]
    pub retire_at: Option<u64>,
    /// User CA next key: hosts not seen for this long do not hold up the switch
    /// (`None`: [`Lifetimes::stale_after`]).
    #[serde(default)]
    pub stale_after: Option<u64>,
}

/// Every role's keys (a role absent: never rotated).
pub type CaKeySets = BTreeMap<CaRole, Vec<CaKey>>;

/// The OpenSSH lines a role publishes: the signing key first, then the next key, then
/// retiring ones.
pub fn published(keys: &[CaKey]) -> Vec<String> {
    let mut out = Vec::new();
    for state in [CaKeyState::Signing, CaKeyState::Next, CaKeyState::Retiring] {
        out.extend(
            keys.iter()
                .filter(|k| k.state == state)
                .map(|k| k.public.clone()),
        );
    }
    out
}

pub fn signing(keys: &[CaKey]) -> Option<&CaKey> {
    keys.iter().find(|k| k.state == CaKeyState::Signing)
}

/// A host as the user CA switch sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostAck {
    pub name: String,
    pub last_seen: Option<u64>,
    pub synced_version: Option<u64>,
}

/// Where each host stands towards a next user CA key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Acks {
    pub acknowledged: Vec<String>,
    /// Seen within `stale_after` but not synced the next key yet: they block the switch.
    pub lagging: Vec<String>,
    /// Not seen for `stale_after` (or never): listed, not waited for.
    pub stale: Vec<String>,
}

pub fn acks(next: &CaKey, hosts: &[HostAck], stale_after: u64, now: u64) -> Acks {
    let stale_after = next.stale_after.unwrap_or(stale_after);
    let mut a = Acks::default();
    for h in hosts {
        if h.synced_version.is_some_and(|v| v >= next.added_version) {
            a.acknowledged.push(h.name.clone());
        } else if h
            .last_seen
            .is_some_and(|t| now.saturating_sub(t) <= stale_after)
        {
            a.lagging.push(h.name.clone());
        } else {
            a.stale.push(h.name.clone());
        }
    }
    a
}

/// The lifetimes a rotation waits out.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Longest user certificate (the retiring user CA key's wait).
    pub user_cert: u64,
    /// Longest host certificate (the retiring host CA key's wait).
    pub host_cert: u64,
    /// Hosts not seen for this long do not block the user CA switch (unless the next key
    /// says otherwise).
    pub stale_after: u64,
}

/// What the next step of a role's rotation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// One signing key, nothing pending.
    Idle,
    /// A next key waits for the switch.
    Trusting,
    /// The old key waits to retire.
    Retiring,
}

pub fn phase(keys: &[CaKey]) -> Phase {
    if keys.iter().any(|k| k.state == CaKeyState::Next) {
        Phase::Trusting
    } else if keys.iter().any(|k| k.state == CaKeyState::Retiring) {
        Phase::Retiring
    } else {
        Phase::Idle
    }
}

/// The keys after switching to the next key at `now`.
fn switch(role: CaRole, keys: &[CaKey], life: Lifetimes, now: u64) -> Vec<CaKey> {
    let wait = match role {
        CaRole::User => life.user_cert,
        CaRole::Host => life.host_cert,
    };
    keys.iter()
        .cloned()
        .map(|mut k| {
            match k.state {
                CaKeyState::Signing => {
                    k.state = CaKeyState::Retiring;
                    k.retire_at = Some(now + wait);
                }
                CaKeyState::Next => {
                    k.state = CaKeyState::Signing;
                    k.signing_since = Some(now);
                    k.switch_at = None;
                }
                CaKeyState::Retiring => {}
            }
            k
        })
        .collect()
}

/// The keys after retiring every retiring key due at `now` (all of them when `force`).
fn retire(keys: &[CaKey], now: u64, force: bool) -> Vec<CaKey> {
    keys.iter()
        .filter(|k| {
            k.state != CaKeyState::Retiring || (!force && k.retire_at.is_some_and(|t| t > now))
        })
        .cloned()
        .collect()
}

/// The automatic step due at `now`, if any: the new key set.
pub fn due_step(
    role: CaRole,
    keys: &[CaKey],
    hosts: &[HostAck],
    life: Lifetimes,
    now: u64,
) -> Option<Vec<CaKey>> {
    if let Some(next) = keys.iter().find(|k| k.state == CaKeyState::Next) {
        let ready = match role {
            CaRole::User => acks(next, hosts, life.stale_after, now).lagging.is_empty(),
            CaRole::Host => next.switch_at.is_none_or(|t| t <= now),
        };
        // One step at a time: the old key retires only after a switch (never while a
        // next key waits, so at most three keys are ever published).
        return ready.then(|| switch(role, keys, life, now));
    }
    let after = retire(keys, now, false);
    (after.len() != keys.len()).then_some(after)
}

/// The step `--force` takes now: the switch if a next key waits, else retirement.
pub fn forced_step(role: CaRole, keys: &[CaKey], life: Lifetimes, now: u64) -> Option<Vec<CaKey>> {
    match phase(keys) {
        Phase::Trusting => Some(switch(role, keys, life, now)),
        Phase::Retiring => Some(retire(keys, now, true)),
        Phase::Idle => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(public: &str, state: CaKeyState, added_version: u64) -> CaKey {
        CaKey {
            source: format!("file:{public}"),
            public: public.into(),
            state,
            added_at: 0,
            added_version,
            signing_since: None,
            switch_at: None,
            retire_at: None,
            stale_after: None,
        }
    }

    const LIFE: Lifetimes = Lifetimes {
        user_cert: 100,
        host_cert: 1000,
        stale_after: 50,
    };

    fn host(name: &str, last_seen: Option<u64>, synced: Option<u64>) -> HostAck {
        HostAck {
            name: name.into(),
            last_seen,
            synced_version: synced,
        }
    }

    #[test]
    fn the_user_ca_switches_once_every_live_host_has_the_key_then_retires_the_old_one() {
        let keys = vec![
            key("old", CaKeyState::Signing, 1),
            key("new", CaKeyState::Next, 7),
        ];
        assert_eq!(published(&keys), ["old", "new"]);
        let hosts = [
            host("a", Some(990), Some(7)),
            host("b", Some(995), Some(6)),
            host("gone", Some(10), Some(3)),
            host("never", None, None),
        ];
        let a = acks(&keys[1], &hosts, LIFE.stale_after, 1000);
        assert_eq!(a.acknowledged, ["a"]);
        assert_eq!(a.lagging, ["b"]);
        assert_eq!(a.stale, ["gone", "never"]);
        // The next key's own stale_after wins: with a longer one, gone (seen 990 s ago)
        // holds up the switch too.
        let mut patient = keys[1].clone();
        patient.stale_after = Some(2000);
        assert_eq!(
            acks(&patient, &hosts, LIFE.stale_after, 1000).lagging,
            ["b", "gone"]
        );
        // b lags: no switch.
        assert_eq!(due_step(CaRole::User, &keys, &hosts, LIFE, 1000), None);
        // b synced: switch; the old key is still published, the new one signs.
        let hosts = [host("a", Some(990), Some(7)), host("b", Some(999), Some(8))];
        let after = due_step(CaRole::User, &keys, &hosts, LIFE, 1000).unwrap();
        assert_eq!(signing(&after).unwrap().public, "new");
        assert_eq!(published(&after), ["new", "old"]);
        assert_eq!(phase(&after), Phase::Retiring);
        assert_eq!(after[0].retire_at, Some(1100));
        // Retired after the longest user certificate, not before.
        assert_eq!(due_step(CaRole::User, &after, &hosts, LIFE, 1099), None);
        let done = due_step(CaRole::User, &after, &hosts, LIFE, 1100).unwrap();
        assert_eq!(published(&done), ["new"]);
        assert_eq!(phase(&done), Phase::Idle);
        assert_eq!(due_step(CaRole::User, &done, &hosts, LIFE, 5000), None);
    }

    #[test]
    fn the_host_ca_switches_after_its_grace_period_and_force_takes_the_step_now() {
        let mut next = key("new", CaKeyState::Next, 7);
        next.switch_at = Some(2000);
        let keys = vec![key("old", CaKeyState::Signing, 1), next];
        assert_eq!(due_step(CaRole::Host, &keys, &[], LIFE, 1999), None);
        let after = due_step(CaRole::Host, &keys, &[], LIFE, 2000).unwrap();
        assert_eq!(after[0].retire_at, Some(3000));
        // Forced: the switch at once, then the retirement at once.
        let f = forced_step(CaRole::Host, &keys, LIFE, 10).unwrap();
        assert_eq!(signing(&f).unwrap().public, "new");
        let f = forced_step(CaRole::Host, &f, LIFE, 11).unwrap();
        assert_eq!(published(&f), ["new"]);
        assert_eq!(forced_step(CaRole::Host, &f, LIFE, 12), None);
    }
}
