//! The ACL snapshot a host receives from the CA, and how a delta is applied.
//!
//! The CA sends each host only what concerns it: the users that hold a grant on the
//! host's tags (with their effective level there), the groups those grants name, the
//! grants themselves, the `smith-sudo` gid, and the trust material (user CA keys, KRL).
//!
//! Sync is versioned: the CA has one global, monotonically increasing version. A
//! response is either **full** (`base_version: None`: replaces everything) or a
//! **delta** from `base_version` (upserts and removals of users; groups, grants and trust
//! material are always sent whole, they are small). A host applies a delta only if its
//! own version equals `base_version`, and never goes backwards, so nothing is applied
//! twice or out of order.
//!
//! Versions count within an **epoch**: a random id the CA's database gets at init and at
//! every restore. A full snapshot from another epoch than the host's replaces its state
//! whatever the versions say (a CA restored from a backup has a lower version than its
//! hosts; refusing it would freeze every host until the CA caught up, disables and
//! revocations included). Such a resync is not a removal of users by the CA: it must
//! never end sessions by itself ([`Applied::NewEpoch`]).

use crate::ids::PosixId;
use crate::names::{GroupName, HostName, UserName};
use crate::tags::{Level, Selector, Tags};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotUser {
    pub name: UserName,
    /// uid; the private group has the same gid.
    pub uid: PosixId,
    #[serde(default)]
    pub gecos: String,
    pub shell: String,
    /// The user's groups that appear in this snapshot's `groups`.
    pub groups: Vec<GroupName>,
    /// The highest level any of the user's grants gives on this host.
    pub level: Level,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotGroup {
    pub name: GroupName,
    pub gid: PosixId,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotGrant {
    pub id: u64,
    pub group: GroupName,
    pub selector: Selector,
    pub level: Level,
    /// Shared local accounts the grant's members may log in as (absent from CAs before
    /// grant-bound certificates; not sent when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logins: Vec<UserName>,
    /// A sudo grant's command rules and NSS group gid (absent: every command).
    #[serde(
        default,
        skip_serializing_if = "crate::sudorules::SudoRules::is_unrestricted"
    )]
    pub sudo: crate::sudorules::SudoRules,
}

/// What `GET /v1/host/sync` returns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncResponse {
    pub host: HostName,
    pub tags: Tags,
    /// The CA version this response brings the host to.
    pub version: u64,
    /// `None`: full snapshot. `Some(v)`: delta from version `v`.
    pub base_version: Option<u64>,
    /// Full: every user. Delta: users added or changed since `base_version`.
    pub users: Vec<SnapshotUser>,
    /// Delta only: users to drop (absent from this host now).
    #[serde(default)]
    pub removed_users: Vec<UserName>,
    pub groups: Vec<SnapshotGroup>,
    pub grants: Vec<SnapshotGrant>,
    pub sudo_gid: PosixId,
    /// gid of `smith-users` (every Smith user the host serves); absent from older CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_gid: Option<PosixId>,
    /// OpenSSH public key lines of the user CA (several during a rotation).
    pub user_ca_keys: Vec<String>,
    /// OpenSSH KRL (binary, base64) of revoked certificates, if any. Shared: the CA
    /// builds it once per version and every response serializes the same text.
    #[serde(default)]
    pub krl_base64: Option<std::sync::Arc<str>>,
    /// The CA database's epoch (absent from CAs before epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The host CA key that signs host certificates now (OpenSSH line; absent from
    /// older CAs). A host whose certificates another key signed renews them: after a
    /// host CA rotation's switch, hosts move to the new key without waiting for their
    /// certificates to age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ca_key: Option<String>,
}

/// What [`HostState::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A delta on our version.
    Delta,
    /// A full snapshot newer than our version, same epoch.
    Full,
    /// A full snapshot from another epoch (the CA was restored or re-initialised),
    /// taken whatever its version: a resync, never a reason to end sessions.
    NewEpoch {
        previous_epoch: Option<String>,
        previous_version: u64,
    },
}

/// A host's materialized view after applying sync responses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostState {
    pub host: HostName,
    pub tags: Tags,
    pub version: u64,
    pub users: BTreeMap<UserName, SnapshotUser>,
    pub groups: Vec<SnapshotGroup>,
    pub grants: Vec<SnapshotGrant>,
    pub sudo_gid: PosixId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_gid: Option<PosixId>,
    pub user_ca_keys: Vec<String>,
    #[serde(default)]
    pub krl_base64: Option<String>,
    /// The epoch of the CA database this state comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// See [`SyncResponse::host_ca_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ca_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// A delta whose base is not our version: ask for a full snapshot.
    BaseMismatch { ours: u64, base: u64 },
    /// The response would move us backwards or not at all.
    NotNewer { ours: u64, theirs: u64 },
    /// The response is for another host.
    WrongHost { ours: String, theirs: String },
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::BaseMismatch { ours, base } => write!(
                f,
                "delta is based on version {base} but this host is at {ours}; a full snapshot is needed"
            ),
            ApplyError::NotNewer { ours, theirs } => write!(
                f,
                "snapshot version {theirs} is not newer than this host's {ours}; ignored"
            ),
            ApplyError::WrongHost { ours, theirs } => {
                write!(f, "snapshot is for host {theirs}, this host is {ours}")
            }
        }
    }
}

impl std::error::Error for ApplyError {}

impl HostState {
    /// The state a full snapshot describes.
    pub fn from_full(r: SyncResponse) -> HostState {
        HostState {
            host: r.host,
            tags: r.tags,
            version: r.version,
            users: r.users.into_iter().map(|u| (u.name.clone(), u)).collect(),
            groups: r.groups,
            grants: r.grants,
            sudo_gid: r.sudo_gid,
            users_gid: r.users_gid,
            user_ca_keys: r.user_ca_keys,
            krl_base64: r.krl_base64.map(|k| k.to_string()),
            epoch: r.epoch,
            host_ca_key: r.host_ca_key,
        }
    }

    /// Whether `r` comes from another epoch than ours (a CA without epochs is never
    /// one).
    pub fn is_new_epoch(&self, r: &SyncResponse) -> bool {
        r.epoch.is_some() && r.epoch != self.epoch
    }

    /// Applies a full or delta response. On error nothing changes.
    pub fn apply(&mut self, r: SyncResponse) -> Result<Applied, ApplyError> {
        if r.host != self.host {
            return Err(ApplyError::WrongHost {
                ours: self.host.to_string(),
                theirs: r.host.to_string(),
            });
        }
        if self.is_new_epoch(&r) {
            // Versions of another epoch are not comparable with ours: only a full
            // snapshot is taken, whatever its version.
            if let Some(base) = r.base_version {
                return Err(ApplyError::BaseMismatch {
                    ours: self.version,
                    base,
                });
            }
            let previous = Applied::NewEpoch {
                previous_epoch: self.epoch.clone(),
                previous_version: self.version,
            };
            *self = HostState::from_full(r);
            return Ok(previous);
        }
        if r.version <= self.version {
            return Err(ApplyError::NotNewer {
                ours: self.version,
                theirs: r.version,
            });
        }
        match r.base_version {
            None => {
                *self = HostState::from_full(r);
                Ok(Applied::Full)
            }
            Some(base) if base != self.version => Err(ApplyError::BaseMismatch {
                ours: self.version,
                base,
            }),
            Some(_) => {
                for name in &r.removed_users {
                    self.users.remove(name);
                }
                for u in r.users {
                    self.users.insert(u.name.clone(), u);
                }
                self.tags = r.tags;
                self.version = r.version;
                self.groups = r.groups;
                self.grants = r.grants;
                self.sudo_gid = r.sudo_gid;
                self.users_gid = r.users_gid;
                self.user_ca_keys = r.user_ca_keys;
                self.krl_base64 = r.krl_base64.map(|k| k.to_string());
                if r.host_ca_key.is_some() {
                    self.host_ca_key = r.host_ca_key;
                }
                Ok(Applied::Delta)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, uid: u64, level: Level) -> SnapshotUser {
        SnapshotUser {
            name: UserName::new(name).unwrap(),
            uid: PosixId::new(uid).unwrap(),
            gecos: String::new(),
            shell: "/bin/bash".into(),
            groups: vec![],
            level,
        }
    }

    fn resp(
        version: u64,
        base: Option<u64>,
        users: Vec<SnapshotUser>,
        removed: &[&str],
    ) -> SyncResponse {
        SyncResponse {
            host: HostName::new("web-1").unwrap(),
            tags: Tags::parse("env=prod").unwrap(),
            version,
            base_version: base,
            users,
            removed_users: removed.iter().map(|n| UserName::new(n).unwrap()).collect(),
            groups: vec![],
            grants: vec![],
            sudo_gid: PosixId::new(200000).unwrap(),
            users_gid: None,
            user_ca_keys: vec!["ssh-ed25519 AAAA".into()],
            krl_base64: None,
            epoch: Some("e1".into()),
            host_ca_key: None,
        }
    }

    #[test]
    fn full_then_deltas_in_order() {
        let mut s =
            HostState::from_full(resp(5, None, vec![user("alice", 200001, Level::Ssh)], &[]));
        s.apply(resp(
            6,
            Some(5),
            vec![user("oscar", 200002, Level::Sudo)],
            &[],
        ))
        .unwrap();
        assert_eq!(s.users.len(), 2);
        s.apply(resp(8, Some(6), vec![], &["alice"])).unwrap();
        assert_eq!(
            s.users.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["oscar"]
        );
        assert_eq!(s.version, 8);
    }

    #[test]
    fn refuses_replays_gaps_and_other_hosts() {
        let mut s = HostState::from_full(resp(5, None, vec![], &[]));
        let before = s.clone();
        assert!(matches!(
            s.apply(resp(5, Some(4), vec![], &[])),
            Err(ApplyError::NotNewer { .. })
        ));
        assert!(matches!(
            s.apply(resp(4, None, vec![], &[])),
            Err(ApplyError::NotNewer { .. })
        ));
        assert!(matches!(
            s.apply(resp(9, Some(7), vec![], &[])),
            Err(ApplyError::BaseMismatch { .. })
        ));
        let mut other = resp(9, None, vec![], &[]);
        other.host = HostName::new("db-1").unwrap();
        assert!(matches!(s.apply(other), Err(ApplyError::WrongHost { .. })));
        assert_eq!(s, before);
    }

    #[test]
    fn a_new_epoch_takes_a_full_snapshot_whatever_its_version() {
        let mut s = HostState::from_full(resp(
            150,
            None,
            vec![user("alice", 200001, Level::Ssh)],
            &[],
        ));
        // The CA was restored to version 100 (another epoch): its full snapshot wins.
        let mut restored = resp(100, None, vec![user("oscar", 200002, Level::Sudo)], &[]);
        restored.epoch = Some("e2".into());
        // A delta of another epoch is not applied (its base means nothing here).
        let mut delta = restored.clone();
        delta.base_version = Some(99);
        assert!(matches!(
            s.apply(delta),
            Err(ApplyError::BaseMismatch { .. })
        ));
        assert_eq!(
            s.apply(restored).unwrap(),
            Applied::NewEpoch {
                previous_epoch: Some("e1".into()),
                previous_version: 150
            }
        );
        assert_eq!((s.version, s.epoch.as_deref()), (100, Some("e2")));
        assert_eq!(
            s.users.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["oscar"]
        );
        // Within the new epoch, versions count again.
        let mut old = resp(99, None, vec![], &[]);
        old.epoch = Some("e2".into());
        assert!(matches!(s.apply(old), Err(ApplyError::NotNewer { .. })));
        let mut next = resp(101, Some(100), vec![], &["oscar"]);
        next.epoch = Some("e2".into());
        assert_eq!(s.apply(next).unwrap(), Applied::Delta);
        // A CA without epochs never looks like a new epoch.
        let mut legacy = resp(50, None, vec![], &[]);
        legacy.epoch = None;
        assert!(matches!(s.apply(legacy), Err(ApplyError::NotNewer { .. })));
    }

    #[test]
    fn json_refuses_hostile_names_and_ids() {
        let ok =
            serde_json::to_string(&resp(1, None, vec![user("alice", 200001, Level::Ssh)], &[]))
                .unwrap();
        assert!(serde_json::from_str::<SyncResponse>(&ok).is_ok());
        let bad_name = ok.replace("\"alice\"", "\"root\"");
        assert!(serde_json::from_str::<SyncResponse>(&bad_name).is_err());
        let bad_uid = ok.replace("200001", "0");
        assert!(serde_json::from_str::<SyncResponse>(&bad_uid).is_err());
    }
}
