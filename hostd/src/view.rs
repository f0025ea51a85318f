//! What this host serves: the applied snapshot ([`HostState`]) turned into the NSS
//! view (the cache file contents), minus everything that would collide with a local
//! account.
//!
//! Owns: the rules "local always wins" (a Smith user whose name or uid, or whose
//! private group's name or gid, exists locally is skipped; so is a Smith group whose
//! name or gid exists locally), "never an id a local user's containers run as" (an id
//! inside a subordinate uid/gid range is skipped: D3), "never a name or id another NSS
//! source has" (found in sss/ldap/systemd/...: skipped; a source that did not answer
//! about an entry not served before: skipped until it does, M5), home directories
//! (`home_base/NAME`), supplementary gids and the synthetic `smith-sudo` group. Every
//! skip carries what to do about it. Must never: produce contents that
//! `cache::build` refuses (everything is filtered here, with a reason), or read files.

use crate::local::LocalAccounts;
use smith_proto::cache::{CacheContents, CacheGroup, CacheUser, CacheView};
use smith_proto::names::{SUDO_GROUP, USERS_GROUP};
use smith_proto::snapshot::HostState;
use smith_proto::Level;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// An entry left out of the view, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Skip {
    /// `user` or `group`.
    pub kind: &'static str,
    pub name: String,
    pub reason: String,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Smith {} '{}' skipped: {}",
            self.kind, self.name, self.reason
        )
    }
}

/// Replaces characters a passwd line cannot hold.
fn clean_gecos(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| if c == ':' || c.is_control() { ' ' } else { c })
        .collect();
    let mut end = cleaned.len().min(256);
    while !cleaned.is_char_boundary(end) {
        end -= 1;
    }
    cleaned[..end].to_string()
}

fn valid_shell(s: &str) -> bool {
    s.starts_with('/')
        && s.len() <= 256
        && !s
            .chars()
            .any(|c| c == ':' || c.is_control() || c.is_whitespace())
}

fn sub_reason(what: &str, id: u32, r: &smith_proto::local::SubRange, file: &str) -> String {
    format!(
        "{what} {id} is inside the subordinate {what} range {}-{} of '{}' ({file}), which that \
         user's rootless containers run as; give the Smith entry an id outside it (the CA's \
         id range) or move the range",
        r.start, r.last, r.owner
    )
}

fn other_reason(what: &str, source: &str) -> String {
    format!(
        "{what} exists in NSS source '{source}' (asked with Smith bypassed); rename or \
         renumber one of them"
    )
}

fn unverified_reason(source: &str) -> String {
    format!(
        "not verified: NSS source '{source}' did not answer; served once it answers (check \
         that '{source}' is running, or remove it from nsswitch.conf)"
    )
}

/// Builds the cache contents for `state` on a host with `local` accounts.
/// `generation` and `written_at` are stored as given.
pub fn build_contents(
    state: &HostState,
    local: &LocalAccounts,
    home_base: &str,
    generation: u64,
    written_at: u64,
) -> (CacheContents, Vec<Skip>) {
    let mut skips = Vec::new();
    let home_base = home_base.trim_end_matches('/');

    // Users first: they own their private group's name and gid.
    let mut users: Vec<&smith_proto::snapshot::SnapshotUser> = Vec::new();
    let mut taken_names: HashSet<&str> = HashSet::new();
    let mut taken_ids: HashSet<u32> = HashSet::new();
    for u in state.users.values() {
        let name = u.name.as_str();
        let uid = u.uid.get();
        let o = &local.other;
        let reason = if local.user_names.contains(name) {
            Some("a local user has this name".to_string())
        } else if local.uids.contains(&uid) {
            Some(format!("uid {uid} belongs to a local user"))
        } else if local.group_names.contains(name) {
            Some("a local group has this name (the user's private group would collide)".into())
        } else if local.gids.contains(&uid) {
            Some(format!(
                "gid {uid} belongs to a local group (the user's private group would collide)"
            ))
        } else if let Some(r) = local.subuid_range(uid) {
            Some(sub_reason("uid", uid, r, "/etc/subuid"))
        } else if let Some(r) = local.subgid_range(uid) {
            Some(sub_reason("gid", uid, r, "/etc/subgid"))
        } else if let Some(src) = o.user_names.get(name) {
            Some(other_reason(&format!("a user named '{name}'"), src))
        } else if let Some(src) = o.uids.get(&uid) {
            Some(other_reason(&format!("uid {uid}"), src))
        } else if let Some(src) = o.group_names.get(name) {
            Some(other_reason(
                &format!("a group named '{name}' (the user's private group would collide)"),
                src,
            ))
        } else if let Some(src) = o.gids.get(&uid) {
            Some(other_reason(
                &format!("gid {uid} (the user's private group would collide)"),
                src,
            ))
        } else if let Some(src) = o.unverified_users.get(name) {
            Some(unverified_reason(src))
        } else if taken_ids.contains(&uid) {
            Some(format!("uid {uid} is used twice in the snapshot"))
        } else if !valid_shell(&u.shell) {
            Some(format!(
                "shell '{}' is not a usable path",
                u.shell.escape_debug()
            ))
        } else {
            None
        };
        match reason {
            Some(reason) => skips.push(Skip {
                kind: "user",
                name: name.to_string(),
                reason,
            }),
            None => {
                taken_names.insert(name);
                taken_ids.insert(uid);
                users.push(u);
            }
        }
    }

    // Explicit groups.
    let mut groups: BTreeMap<&str, u32> = BTreeMap::new();
    let mut check_group = |name: &str, gid: u32, skips: &mut Vec<Skip>| -> bool {
        let o = &local.other;
        let reason = if local.group_names.contains(name) {
            Some("a local group has this name".to_string())
        } else if local.gids.contains(&gid) {
            Some(format!("gid {gid} belongs to a local group"))
        } else if let Some(r) = local.subgid_range(gid) {
            Some(sub_reason("gid", gid, r, "/etc/subgid"))
        } else if let Some(src) = o.group_names.get(name) {
            Some(other_reason(&format!("a group named '{name}'"), src))
        } else if let Some(src) = o.gids.get(&gid) {
            Some(other_reason(&format!("gid {gid}"), src))
        } else if let Some(src) = o.unverified_groups.get(name) {
            Some(unverified_reason(src))
        } else if taken_names.contains(name) {
            Some("a Smith user's private group has this name".to_string())
        } else if taken_ids.contains(&gid) {
            Some(format!(
                "gid {gid} is already used by a Smith user or group"
            ))
        } else {
            None
        };
        match reason {
            Some(reason) => {
                skips.push(Skip {
                    kind: "group",
                    name: name.to_string(),
                    reason,
                });
                false
            }
            None => {
                taken_ids.insert(gid);
                true
            }
        }
    };
    for g in &state.groups {
        if groups.contains_key(g.name.as_str()) {
            skips.push(Skip {
                kind: "group",
                name: g.name.to_string(),
                reason: "listed twice in the snapshot".into(),
            });
            continue;
        }
        if check_group(g.name.as_str(), g.gid.get(), &mut skips) {
            groups.insert(g.name.as_str(), g.gid.get());
        }
    }
    let sudo_gid = state.sudo_gid.get();
    let sudo_ok = check_group(SUDO_GROUP, sudo_gid, &mut skips);
    // Sudo grants with command rules: each its own group (issue 17). Members of a sudo
    // grant without rules are in `smith-sudo` (everything, as anyone).
    let mut rule_groups: Vec<(String, u32, &smith_proto::GroupName)> = Vec::new();
    for g in &state.grants {
        if g.level != Level::Sudo || g.sudo.is_unrestricted() {
            continue;
        }
        let name = smith_proto::sudorules::rule_group(g.id);
        match g.sudo.gid {
            Some(gid) if check_group(&name, gid, &mut skips) => {
                rule_groups.push((name, gid, &g.group));
            }
            Some(_) => {}
            None => skips.push(Skip {
                kind: "group",
                name,
                reason: "a sudo grant with rules but no gid from the CA".into(),
            }),
        }
    }
    let full_sudo: HashSet<&smith_proto::GroupName> = state
        .grants
        .iter()
        .filter(|g| g.level == Level::Sudo && g.sudo.is_unrestricted())
        .map(|g| &g.group)
        .collect();
    // Every Smith user served here (sshd's `Match Group` for certificate-only logins).
    let users_gid = state
        .users_gid
        .map(|g| g.get())
        .filter(|g| check_group(USERS_GROUP, *g, &mut skips));

    let mut members: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut rule_members: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut cache_users = Vec::with_capacity(users.len());
    for u in &users {
        let mut gids: BTreeSet<u32> = BTreeSet::new();
        for g in &u.groups {
            if let Some(gid) = groups.get(g.as_str()) {
                gids.insert(*gid);
                members
                    .entry(g.as_str())
                    .or_default()
                    .push(u.name.to_string());
            }
        }
        if let Some(g) = users_gid {
            gids.insert(g);
            members
                .entry(USERS_GROUP)
                .or_default()
                .push(u.name.to_string());
        }
        // A snapshot without grants (a CA before grant lists): the user's level says.
        let full = if state.grants.is_empty() {
            u.level == Level::Sudo
        } else {
            u.groups.iter().any(|g| full_sudo.contains(g))
        };
        if full && sudo_ok {
            gids.insert(sudo_gid);
            members
                .entry(SUDO_GROUP)
                .or_default()
                .push(u.name.to_string());
        }
        for (name, gid, group) in &rule_groups {
            if u.groups.contains(group) {
                gids.insert(*gid);
                rule_members
                    .entry(name.as_str())
                    .or_default()
                    .push(u.name.to_string());
            }
        }
        cache_users.push(CacheUser {
            name: u.name.to_string(),
            uid: u.uid.get(),
            gid: u.uid.get(),
            gecos: clean_gecos(&u.gecos),
            dir: format!("{home_base}/{}", u.name),
            shell: u.shell.clone(),
            level: u.level,
            gids: gids.into_iter().collect(),
        });
    }
    let mut cache_groups: Vec<CacheGroup> = groups
        .iter()
        .map(|(name, gid)| CacheGroup {
            name: name.to_string(),
            gid: *gid,
            members: members.remove(name).unwrap_or_default(),
        })
        .collect();
    if let Some(gid) = users_gid {
        cache_groups.push(CacheGroup {
            name: USERS_GROUP.to_string(),
            gid,
            members: members.remove(USERS_GROUP).unwrap_or_default(),
        });
    }
    if sudo_ok {
        cache_groups.push(CacheGroup {
            name: SUDO_GROUP.to_string(),
            gid: sudo_gid,
            members: members.remove(SUDO_GROUP).unwrap_or_default(),
        });
    }
    for (name, gid, _) in &rule_groups {
        cache_groups.push(CacheGroup {
            name: name.clone(),
            gid: *gid,
            members: rule_members.remove(name.as_str()).unwrap_or_default(),
        });
    }
    skips.sort();
    let contents = CacheContents {
        host_name: state.host.to_string(),
        host_tags: state.tags.to_string(),
        generation,
        snapshot_version: state.version,
        written_at,
        sudo_gid: if sudo_ok { sudo_gid } else { 0 },
        users: cache_users,
        groups: cache_groups,
    };
    (contents, skips)
}

/// Reads a cache file back into contents (for "is the file on disk what we would
/// write?"). `None` when any record is unreadable.
pub fn contents_from_view(v: &CacheView<'_>) -> Option<CacheContents> {
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    let mut users = Vec::with_capacity(v.n_users() as usize);
    for i in 0..v.n_users() {
        let u = v.user(i).ok()?;
        users.push(CacheUser {
            name: s(u.name)?,
            uid: u.uid,
            gid: u.gid,
            gecos: s(u.gecos)?,
            dir: s(u.dir)?,
            shell: s(u.shell)?,
            level: u.level?,
            gids: u.gids.iter().collect(),
        });
    }
    let mut groups = Vec::with_capacity(v.n_groups() as usize);
    for i in 0..v.n_groups() {
        let g = v.group(i).ok()?;
        let mut members = Vec::with_capacity(g.members.len());
        for m in g.members.iter() {
            members.push(s(m.ok()?)?);
        }
        groups.push(CacheGroup {
            name: s(g.name)?,
            gid: g.gid,
            members,
        });
    }
    Some(CacheContents {
        host_name: s(v.host_name())?,
        host_tags: s(v.host_tags())?,
        generation: v.generation(),
        snapshot_version: v.snapshot_version(),
        written_at: v.written_at(),
        sudo_gid: v.sudo_gid(),
        users,
        groups,
    })
}

/// Whether two contents describe the same data (ignoring generation and write time).
pub fn same_data(a: &CacheContents, b: &CacheContents) -> bool {
    let strip = |c: &CacheContents| CacheContents {
        generation: 0,
        written_at: 0,
        ..c.clone()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use smith_proto::snapshot::{SnapshotGroup, SnapshotUser, SyncResponse};
    use smith_proto::{GroupName, HostName, PosixId, Tags, UserName};

    pub fn user(name: &str, uid: u64, level: Level, groups: &[&str]) -> SnapshotUser {
        SnapshotUser {
            name: UserName::new(name).unwrap(),
            uid: PosixId::new(uid).unwrap(),
            gecos: format!("{name}: the user"),
            shell: "/bin/bash".into(),
            groups: groups.iter().map(|g| GroupName::new(g).unwrap()).collect(),
            level,
        }
    }

    pub fn state() -> HostState {
        HostState::from_full(SyncResponse {
            host: HostName::new("web-1").unwrap(),
            tags: Tags::parse("env=prod,role=web").unwrap(),
            version: 3,
            base_version: None,
            users: vec![
                user("alice", 200001, Level::Ssh, &["dev"]),
                user("oscar", 200002, Level::Sudo, &["ops"]),
                user("bob", 200003, Level::Ssh, &[]),
                user("carol", 1500, Level::Ssh, &[]),
            ],
            removed_users: vec![],
            groups: vec![
                SnapshotGroup {
                    name: GroupName::new("dev").unwrap(),
                    gid: PosixId::new(200010).unwrap(),
                },
                SnapshotGroup {
                    name: GroupName::new("ops").unwrap(),
                    gid: PosixId::new(200011).unwrap(),
                },
                SnapshotGroup {
                    name: GroupName::new("lab").unwrap(),
                    gid: PosixId::new(200012).unwrap(),
                },
            ],
            grants: vec![],
            sudo_gid: PosixId::new(200000).unwrap(),
            users_gid: None,
            user_ca_keys: vec![],
            krl_base64: None,
            epoch: None,
            host_ca_key: None,
        })
    }

    #[test]
    fn local_accounts_win() {
        let local = LocalAccounts::parse(
            "bob:x:1001:1001::/home/bob:/bin/sh\nsvc:x:1500:1500::/:/bin/false\n",
            "bob:x:1001:\nlab:x:3000:\n",
        );
        let (c, skips) = build_contents(&state(), &local, "/home/", 1, 2);
        let names: Vec<_> = c.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, vec!["alice", "oscar"]);
        let skipped: Vec<_> = skips.iter().map(|s| (s.kind, s.name.as_str())).collect();
        assert_eq!(
            skipped,
            vec![("group", "lab"), ("user", "bob"), ("user", "carol")]
        );
        assert!(skips.iter().any(|s| s.reason.contains("uid 1500")));
        let alice = &c.users[0];
        assert_eq!(alice.dir, "/home/alice");
        assert_eq!(alice.gecos, "alice  the user");
        assert_eq!(alice.gids, vec![200010]);
        assert_eq!(c.users[1].gids, vec![200000, 200011]);
        let sudo = c.groups.iter().find(|g| g.name == "smith-sudo").unwrap();
        assert_eq!(sudo.members, vec!["oscar".to_string()]);
        assert_eq!(c.sudo_gid, 200000);
        // The contents are always buildable, and read back identically.
        let bytes = smith_proto::cache::build(&c).unwrap();
        let v = CacheView::parse(&bytes).unwrap();
        assert_eq!(contents_from_view(&v).unwrap(), c);
    }

    /// D3: Smith ids inside a local user's subordinate range (Debian gives the second
    /// local user 165536-231071) are skipped, with what to do.
    #[test]
    fn subordinate_ranges_are_never_served() {
        let mut local = LocalAccounts::default();
        local.subuids = smith_proto::local::sub_ranges(b"ci:165536:65536\n");
        local.subgids = smith_proto::local::sub_ranges(b"ci:200011:1\n");
        let (c, skips) = build_contents(&state(), &local, "/home", 1, 2);
        let names: Vec<_> = c.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, vec!["carol"], "{skips:?}");
        let alice = skips.iter().find(|s| s.name == "alice").unwrap();
        assert!(
            alice.reason.contains("165536-231071 of 'ci' (/etc/subuid)"),
            "{}",
            alice.reason
        );
        assert!(skips
            .iter()
            .any(|s| s.kind == "group" && s.name == "ops" && s.reason.contains("/etc/subgid")));
    }

    /// M5: names and ids other NSS sources have are skipped; entries a source could not
    /// vouch for (and that were not served before) wait.
    #[test]
    fn other_sources_win_and_silence_waits() {
        let mut local = LocalAccounts::default();
        local
            .other
            .user_names
            .insert("alice".into(), "extrausers".into());
        local.other.gids.insert(200011, "sss".into());
        local
            .other
            .unverified_users
            .insert("bob".into(), "sss".into());
        let (c, skips) = build_contents(&state(), &local, "/home", 1, 2);
        let names: Vec<_> = c.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, vec!["carol", "oscar"]);
        let why = |n: &str| skips.iter().find(|s| s.name == n).unwrap().reason.clone();
        assert!(why("alice").contains("NSS source 'extrausers'"));
        assert!(why("ops").contains("gid 200011 exists in NSS source 'sss'"));
        assert!(why("bob").contains("did not answer"));
    }

    #[test]
    fn snapshot_internal_collisions_are_filtered() {
        let mut s = state();
        // A group named like a user, and a group whose gid is a user's uid.
        s.groups.push(SnapshotGroup {
            name: GroupName::new("alice").unwrap(),
            gid: PosixId::new(200020).unwrap(),
        });
        s.groups.push(SnapshotGroup {
            name: GroupName::new("qa").unwrap(),
            gid: PosixId::new(200002).unwrap(),
        });
        s.sudo_gid = PosixId::new(200010).unwrap();
        let (c, skips) = build_contents(&s, &LocalAccounts::default(), "/home", 1, 2);
        assert!(smith_proto::cache::build(&c).is_ok());
        assert_eq!(c.sudo_gid, 0);
        assert!(skips.iter().any(|s| s.name == "smith-sudo"));
        assert!(skips.iter().any(|s| s.name == "qa"));
        assert!(skips.iter().any(|s| s.name == "alice" && s.kind == "group"));
    }
}
