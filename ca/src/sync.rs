//! What a host receives: the users, groups and grants that match its tags, as a full
//! snapshot or as a delta from a version the host already has.
//!
//! A grant matches a host when its selector is contained in the host's tags. The host's
//! users are the enabled members of the matching grants' groups, each with the highest
//! level of their matching grants; the groups are those of the matching grants.
//!
//! Must never: send a host anything about users, groups or grants that do not match its
//! tags, or read SQLite.

use crate::model::{Grant, Model, User};
use smith_proto::snapshot::{SnapshotGrant, SnapshotGroup, SnapshotUser, SyncResponse};
use smith_proto::{GroupName, HostName, Level, Tags};
use std::collections::{BTreeMap, BTreeSet};

/// The part of the policy that concerns one host.
struct HostView<'a> {
    grants: Vec<&'a Grant>,
    groups: BTreeSet<&'a GroupName>,
}

fn view<'a>(m: &'a Model, tags: &Tags) -> HostView<'a> {
    let grants: Vec<&Grant> = m
        .grants()
        .values()
        .filter(|g| g.selector.is_subset_of(tags))
        .collect();
    let groups = grants.iter().map(|g| &g.group).collect();
    HostView { grants, groups }
}

fn entry(u: &User, v: &HostView<'_>) -> Option<SnapshotUser> {
    if u.is_disabled() {
        return None;
    }
    let level = v
        .grants
        .iter()
        .filter(|g| u.groups.contains(&g.group))
        .map(|g| g.level)
        .max()?;
    Some(SnapshotUser {
        name: u.name.clone(),
        uid: u.uid,
        gecos: u.gecos.clone(),
        shell: u.shell.clone(),
        groups: u
            .groups
            .iter()
            .filter(|g| v.groups.contains(g))
            .cloned()
            .collect(),
        level,
    })
}

/// The response for `host` (with `tags`) that has version `since` (0 = nothing).
pub fn sync_response(
    m: &Model,
    host: &HostName,
    tags: &Tags,
    since: u64,
    user_ca_keys: &[String],
) -> SyncResponse {
    let v = view(m, tags);
    let delta = if since == 0 {
        None
    } else {
        m.changed_since(since)
    };
    let (users, removed, base) = match delta {
        Some(changed) => {
            let mut users = Vec::new();
            let mut removed = Vec::new();
            for name in changed {
                match m.users().get(&name).and_then(|u| entry(u, &v)) {
                    Some(e) => users.push(e),
                    None => removed.push(name),
                }
            }
            (users, removed, Some(since))
        }
        None => {
            let mut users: BTreeMap<&str, SnapshotUser> = BTreeMap::new();
            for g in &v.groups {
                if let Some(group) = m.groups().get(*g) {
                    for member in &group.members {
                        if users.contains_key(member.as_str()) {
                            continue;
                        }
                        if let Some(e) = m.users().get(member).and_then(|u| entry(u, &v)) {
                            users.insert(member.as_str(), e);
                        }
                    }
                }
            }
            (users.into_values().collect(), vec![], None)
        }
    };
    SyncResponse {
        host: host.clone(),
        tags: tags.clone(),
        version: m.version(),
        base_version: base,
        users,
        removed_users: removed,
        groups: v
            .groups
            .iter()
            .filter_map(|g| m.groups().get(*g))
            .map(|g| SnapshotGroup {
                name: g.name.clone(),
                gid: g.gid,
            })
            .collect(),
        grants: v
            .grants
            .iter()
            .map(|g| SnapshotGrant {
                id: g.id,
                group: g.group.clone(),
                selector: g.selector.clone(),
                level: g.level,
                logins: g.cert.logins.clone(),
                sudo: g.cert.sudo.clone(),
            })
            .collect(),
        sudo_gid: m.settings().sudo_gid,
        users_gid: Some(m.settings().users_gid),
        user_ca_keys: user_ca_keys.to_vec(),
        krl_base64: m.krl_base64().cloned(),
        epoch: Some(m.epoch().to_string()).filter(|e| !e.is_empty()),
        host_ca_key: None,
    }
}

/// Highest level of `user` on a host with `tags`, if any (used in tests and listings).
#[allow(dead_code)]
pub fn level_on(m: &Model, user: &User, tags: &Tags) -> Option<Level> {
    entry(user, &view(m, tags)).map(|e| e.level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{model, user};
    use crate::model::{Change, Group, IdKind};
    use smith_proto::snapshot::HostState;
    use smith_proto::UserName;

    fn group(m: &Model, name: &str) -> Group {
        Group {
            name: GroupName::new(name).unwrap(),
            gid: m.allocate_id(IdKind::Group, name, None).unwrap(),
            members: Default::default(),
            created_at: 0,
            external_id: None,
            source: crate::model::Source::Admin,
        }
    }

    fn grant(id: u64, group: &str, sel: &str, level: Level) -> Grant {
        Grant {
            id,
            group: GroupName::new(group).unwrap(),
            selector: Tags::parse(sel).unwrap(),
            level,
            max_ttl_secs: 3600,
            source_cidrs: vec![],
            require_reason: false,
            time_windows: vec![],
            created_at: 0,
            cert: Default::default(),
        }
    }

    #[test]
    fn hosts_get_only_what_matches_and_deltas_apply() {
        let mut m = model();
        let dev = group(&m, "dev");
        m.apply(&[Change::AddGroup(dev)], Some(1));
        let ops = group(&m, "ops");
        m.apply(&[Change::AddGroup(ops)], Some(2));
        let mut alice = user(&m, "alice");
        alice.groups.insert(GroupName::new("dev").unwrap());
        m.apply(&[Change::AddUser(alice)], Some(3));
        let mut oscar = user(&m, "oscar");
        oscar.groups.insert(GroupName::new("ops").unwrap());
        oscar.groups.insert(GroupName::new("dev").unwrap());
        m.apply(&[Change::AddUser(oscar)], Some(4));
        m.apply(
            &[
                Change::AddGrant(grant(1, "dev", "env=dev", Level::Ssh)),
                Change::AddGrant(grant(2, "ops", "env=prod", Level::Sudo)),
            ],
            Some(5),
        );
        let web = HostName::new("web-1").unwrap();
        let web_tags = Tags::parse("env=prod,role=web").unwrap();
        let full = sync_response(&m, &web, &web_tags, 0, &[]);
        assert_eq!(full.base_version, None);
        let names: Vec<&str> = full.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, vec!["oscar"]);
        assert_eq!(full.users[0].level, Level::Sudo);
        assert_eq!(full.users[0].groups, vec![GroupName::new("ops").unwrap()]);
        assert_eq!(full.grants.len(), 1);
        assert_eq!(full.groups.len(), 1);

        let mut state = HostState::from_full(full);
        m.apply(
            &[Change::RemoveMember {
                group: GroupName::new("ops").unwrap(),
                user: UserName::new("oscar").unwrap(),
            }],
            Some(6),
        );
        let delta = sync_response(&m, &web, &web_tags, 5, &[]);
        assert_eq!(delta.base_version, Some(5));
        assert!(delta.users.is_empty());
        assert_eq!(delta.removed_users, vec![UserName::new("oscar").unwrap()]);
        state.apply(delta).unwrap();
        assert!(state.users.is_empty());
        // The delta result equals a fresh full snapshot.
        assert_eq!(
            state,
            HostState::from_full(sync_response(&m, &web, &web_tags, 0, &[]))
        );

        // Unknown or too old `since` gets a full snapshot.
        assert_eq!(
            sync_response(&m, &web, &web_tags, 99, &[]).base_version,
            None
        );
    }
}
