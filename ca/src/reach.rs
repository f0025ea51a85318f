//! Host-aware issuance, pure over the model: the hosts a user's grants cover (`smith
//! hosts`), and which enrolled host a typed name means with the grants that fit it as a
//! login (`smith cert --host`, the `Match exec` block of `smith config ssh`). The rules
//! (name matching, which grants fit, the certificate's scope) are
//! [`smith_api::reach`]'s, shared with `smith` so that its offline decisions agree with
//! the CA's.
//!
//! Must never: consider a removed host, a grant of another user, or a grant that does not
//! cover the host; or leak more about a host the user has no grant on than that it exists
//! (its enrolled names are public anyway: `GET /v1/ca/host-keys`).

use crate::issue::{live_user, Denied};
use crate::model::{Grant, Host, Model};
use smith_api::reach::{resolve, Matched, NamedHost, Resolution};
use smith_api::{ErrorCode, HostGrant, ReachableHost};
use smith_proto::{HostName, UserName};
use std::collections::BTreeSet;

impl NamedHost for Host {
    fn host_name(&self) -> &HostName {
        &self.name
    }
    fn ssh_names(&self) -> &[HostName] {
        &self.ssh_names
    }
}

/// A grant as the engineer sees it.
pub fn host_grant(g: &Grant) -> HostGrant {
    HostGrant {
        id: g.id,
        group: g.group.clone(),
        selector: g.selector.clone(),
        level: g.level,
        logins: g.cert.logins.clone(),
        require_reason: g.require_reason,
        source_cidrs: g.source_cidrs.iter().map(|c| c.to_string()).collect(),
        time_windows: g.time_windows.iter().map(|w| w.to_string()).collect(),
        max_ttl_secs: g.max_ttl_secs,
    }
}

/// `host` as `person` reaches it through `grants` (all of `person`'s); `None` when none
/// of them covers it.
fn reachable_host(host: &Host, person: &UserName, grants: &[&Grant]) -> Option<ReachableHost> {
    let covering: Vec<&Grant> = grants
        .iter()
        .copied()
        .filter(|g| g.selector.is_subset_of(&host.tags))
        .collect();
    let level = covering.iter().map(|g| g.level).max()?;
    let mut logins = vec![person.clone()];
    for l in covering.iter().flat_map(|g| &g.cert.logins) {
        if !logins.contains(l) {
            logins.push(l.clone());
        }
    }
    Some(ReachableHost {
        name: host.name.clone(),
        ssh_names: host
            .ssh_names
            .iter()
            .filter(|n| *n != &host.name)
            .cloned()
            .collect(),
        tags: host.tags.clone(),
        level,
        logins,
        scope: smith_api::reach::union_of(covering.iter().map(|g| &g.selector)),
        grants: covering.iter().map(|g| host_grant(g)).collect(),
    })
}

fn active_hosts(m: &Model) -> impl Iterator<Item = &Host> + Clone {
    m.hosts().values().filter(|h| !h.removed)
}

/// Every enrolled host one of `user`'s grants covers, by name.
pub fn reachable(m: &Model, user: &UserName) -> Result<Vec<ReachableHost>, Denied> {
    let u = live_user(m, user)?;
    let grants: Vec<&Grant> = m.grants_of(u).collect();
    let mut out: Vec<ReachableHost> = active_hosts(m)
        .filter_map(|h| reachable_host(h, user, &grants))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What `POST /v1/certs/host` issues under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: ReachableHost,
    pub matched: Matched,
    pub login: UserName,
    /// The certificate's scope: the union of the fitting grants' selectors.
    pub scope: smith_proto::Tags,
    /// The fitting grants.
    pub grant_ids: BTreeSet<u64>,
}

/// A typed name for messages: escaped, at most 100 characters.
fn shown(typed: &str) -> String {
    let mut s: String = typed.chars().take(100).collect();
    if s.len() < typed.len() {
        s.push('…');
    }
    s.escape_debug().to_string()
}

/// The host `typed` means and the grants of `user` that fit it as `login` (their own
/// when `None`); refused when the name matches no enrolled host, several, or one none
/// of their grants fits.
pub fn target(
    m: &Model,
    user: &UserName,
    typed: &str,
    login: Option<&UserName>,
) -> Result<Target, Denied> {
    let u = live_user(m, user)?;
    let login = login.unwrap_or(user).clone();
    let (host, matched) = match resolve(typed, active_hosts(m)) {
        Resolution::Found(h, how) => (h, how),
        Resolution::Unknown => {
            return Err(Denied::new(
                ErrorCode::NoSuchHost,
                format!(
                    "no enrolled host is named '{}' (by its name, an SSH name or a unique short \
                     name): Smith does not manage it; `smith hosts` lists the hosts you may reach",
                    shown(typed)
                ),
            ))
        }
        Resolution::Ambiguous(names) => {
            let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
            return Err(Denied::new(
                ErrorCode::AmbiguousHost,
                format!(
                    "'{}' matches several enrolled hosts ({}): use the full name",
                    shown(typed),
                    names.join(", ")
                ),
            ));
        }
    };
    let grants: Vec<&Grant> = m.grants_of(u).collect();
    let Some(reach) = reachable_host(host, user, &grants) else {
        return Err(Denied::new(
            ErrorCode::NoMatchingGrant,
            format!(
                "none of your grants covers host '{}' (tags: {}); ask for access (a grant to a \
                 group of yours whose tags the host has)",
                host.name,
                if host.tags.is_empty() {
                    "none".to_string()
                } else {
                    host.tags.to_string()
                }
            ),
        ));
    };
    let Some(scope) = reach.scope_for(user, &login) else {
        let allowed: Vec<&str> = reach.logins.iter().map(|l| l.as_str()).collect();
        return Err(Denied::new(
            ErrorCode::NoMatchingGrant,
            format!(
                "none of your grants on host '{}' lets you log in as '{login}'; they allow: {}",
                host.name,
                allowed.join(", ")
            ),
        ));
    };
    let grant_ids = reach.grants_for(user, &login).map(|g| g.id).collect();
    Ok(Target {
        host: reach,
        matched,
        login,
        scope,
        grant_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::{decide, IssueRequest};
    use crate::model::tests::{model, user};
    use crate::model::{Change, Group, IdKind, Source};
    use smith_proto::{GroupName, Level, Tags};

    fn host(id: u64, name: &str, tags: &str, ssh: &[&str]) -> Host {
        Host {
            id,
            name: HostName::new(name).unwrap(),
            tags: Tags::parse(tags).unwrap(),
            enrolled_at: 0,
            removed: false,
            cert_serial: format!("{id:x}"),
            cert_not_after: u64::MAX,
            ssh_names: ssh.iter().map(|n| HostName::new(n).unwrap()).collect(),
        }
    }

    fn enroll(m: &mut Model, h: Host) {
        let cert = crate::model::HostCert {
            serial: h.cert_serial.clone(),
            not_after: u64::MAX,
            issued_at: 0,
        };
        let (id, removed) = (h.id, h.removed);
        m.apply(
            &[Change::Enroll {
                token_hash: format!("t{id}"),
                at: 0,
                host: Host {
                    removed: false,
                    ..h
                },
                cert,
            }],
            None,
        );
        if removed {
            m.apply(&[Change::RemoveHost { host_id: id, at: 1 }], None);
        }
    }

    fn setup() -> Model {
        let mut m = model();
        let mut changes = Vec::new();
        for g in ["dev", "prodsudo", "other"] {
            changes.push(Change::AddGroup(Group {
                name: GroupName::new(g).unwrap(),
                gid: m.allocate_id(IdKind::Group, g, None).unwrap(),
                members: Default::default(),
                created_at: 0,
                external_id: None,
                source: Source::Admin,
            }));
        }
        m.apply(&changes, Some(1));
        let mut a = user(&m, "alice");
        a.groups.insert(GroupName::new("dev").unwrap());
        a.groups.insert(GroupName::new("prodsudo").unwrap());
        m.apply(&[Change::AddUser(a)], Some(2));
        let g = |id, group: &str, sel: &str, level, reason, logins: &[&str]| {
            let mut g = Grant {
                id,
                group: GroupName::new(group).unwrap(),
                selector: Tags::parse(sel).unwrap(),
                level,
                max_ttl_secs: 8 * 3600,
                source_cidrs: vec![],
                require_reason: reason,
                time_windows: vec![],
                created_at: 0,
                cert: Default::default(),
            };
            g.cert.logins = logins.iter().map(|l| UserName::new(l).unwrap()).collect();
            g
        };
        m.apply(
            &[
                Change::AddGrant(g(1, "dev", "env=dev", Level::Ssh, false, &["deploy"])),
                Change::AddGrant(g(2, "prodsudo", "env=prod", Level::Sudo, true, &[])),
                Change::AddGrant(g(3, "other", "env=ci", Level::Ssh, false, &[])),
            ],
            Some(3),
        );
        let mut removed = host(4, "db-9", "env=dev", &[]);
        removed.removed = true;
        for h in [
            host(1, "db-1", "env=dev,role=db", &["db-1.dev.example.com"]),
            host(2, "web-1", "env=prod,role=web", &[]),
            host(3, "ci-1", "env=ci", &[]),
            removed,
        ] {
            enroll(&mut m, h);
        }
        m
    }

    #[test]
    fn the_list_holds_exactly_the_active_hosts_her_grants_cover() {
        let m = setup();
        let alice = UserName::new("alice").unwrap();
        let hosts = reachable(&m, &alice).unwrap();
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["db-1", "web-1"]);
        assert_eq!(hosts[0].level, Level::Ssh);
        assert_eq!(hosts[0].scope.to_string(), "env=dev");
        assert_eq!(hosts[0].logins.len(), 2, "alice and deploy");
        assert_eq!(hosts[0].ssh_names[0].as_str(), "db-1.dev.example.com");
        assert_eq!(hosts[1].level, Level::Sudo);
        assert!(hosts[1].grants[0].require_reason);
        let nobody = UserName::new("carol").unwrap();
        assert_eq!(
            reachable(&m, &nobody).unwrap_err().code,
            ErrorCode::UnknownUser
        );
    }

    #[test]
    fn a_target_is_one_host_and_exactly_the_grants_that_fit_it() {
        let m = setup();
        let alice = UserName::new("alice").unwrap();
        let t = target(&m, &alice, "DB-1.dev.example.com.", None).unwrap();
        assert_eq!(
            (t.host.name.as_str(), t.matched),
            ("db-1", Matched::SshName)
        );
        assert_eq!(t.grant_ids, BTreeSet::from([1]));
        assert_eq!(t.scope.to_string(), "env=dev");
        let t = target(&m, &alice, "web-1", None).unwrap();
        assert_eq!(t.grant_ids, BTreeSet::from([2]));
        // The decision under exactly those grants: a dev certificate for db-1 never
        // carries the prod grant, even with a reason that would satisfy it.
        let t = target(&m, &alice, "db-1", None).unwrap();
        let a = decide(
            &m,
            &IssueRequest {
                user: &alice,
                scope: &t.scope,
                only: Some(&t.grant_ids),
                ttl_secs: 600,
                reason: Some("INC-1"),
                source: "127.0.0.1".parse().unwrap(),
                ca_max_ttl_secs: 86400,
                now: 0,
            },
        )
        .unwrap();
        assert_eq!(a.grant_ids, vec![1]);
        // A shared login only through the grant that allows it.
        let deploy = UserName::new("deploy").unwrap();
        assert_eq!(
            target(&m, &alice, "db-1", Some(&deploy)).unwrap().login,
            deploy
        );
        let d = target(&m, &alice, "web-1", Some(&deploy)).unwrap_err();
        assert_eq!(d.code, ErrorCode::NoMatchingGrant);
        assert!(
            d.reason.contains("as 'deploy'") && d.reason.contains("alice"),
            "{}",
            d.reason
        );
        // Refusals: no grant, removed, unknown, hostile.
        let d = target(&m, &alice, "ci-1", None).unwrap_err();
        assert_eq!(d.code, ErrorCode::NoMatchingGrant);
        assert!(d.reason.contains("env=ci"), "{}", d.reason);
        for name in ["db-9", "nosuch", "x';touch /tmp/p;'", &"a".repeat(5000)] {
            let d = target(&m, &alice, name, None).unwrap_err();
            assert_eq!(d.code, ErrorCode::NoSuchHost, "{name}");
            assert!(d.reason.len() < 400, "{}", d.reason);
        }
    }

    #[test]
    fn an_ambiguous_short_name_is_refused() {
        let mut m = setup();
        for (id, name) in [
            (5, "db-1.b.example.com"),
            (6, "db-2.a.example.com"),
            (7, "db-2.b.example.com"),
        ] {
            enroll(&mut m, host(id, name, "env=dev", &[]));
        }
        let alice = UserName::new("alice").unwrap();
        let d = target(&m, &alice, "db-2", None).unwrap_err();
        assert_eq!(d.code, ErrorCode::AmbiguousHost);
        assert!(
            d.reason.contains("db-2.a.example.com, db-2.b.example.com"),
            "{}",
            d.reason
        );
    }
}
