//! What a verified OIDC sign-in changes at the CA, planned against the in-memory model.
//!
//! - First sign-in of a login name: the user is provisioned (uid allocated as usual,
//!   GECOS from the `name` claim) and bound to the token's `sub`.
//! - A known user: bound to the `sub` at their first OIDC sign-in; a later token with the
//!   same login name but another `sub` is refused (a renamed or recycled IdP account must
//!   not inherit someone's access).
//! - Memberships: in every group that exists at the CA, the user's membership is set to
//!   what the token's groups claim says (added and removed); groups unknown to the CA are
//!   ignored (the admin decides which IdP groups matter by creating them).
//! - A disabled user changes nothing (issuance then refuses them).
//!
//! Must never: create groups, touch other users, or change anything for a disabled user.

use super::verify::{IdToken, Refusal};
use crate::model::{Change, IdKind, Model, User};
use smith_api::ErrorCode;
use smith_proto::GroupName;
use std::collections::BTreeSet;

fn refuse(code: ErrorCode, reason: String) -> Refusal {
    Refusal {
        code,
        reason,
        claimed_user: None,
    }
}

/// The changes a sign-in with `t` implies (empty when nothing changes).
pub fn plan(m: &Model, t: &IdToken, at: u64) -> Result<Vec<Change>, Refusal> {
    let target: BTreeSet<GroupName> = t
        .groups
        .iter()
        .filter(|g| m.groups.contains_key(*g))
        .cloned()
        .collect();
    let mut changes = Vec::new();
    match m.users.get(&t.username) {
        Some(u) if u.disabled => {}
        Some(u) => {
            match &u.oidc_subject {
                Some(s) if s != &t.subject => {
                    return Err(refuse(
                        ErrorCode::OidcSubjectMismatch,
                        format!(
                            "user '{}' is bound to another identity of the OpenID Provider \
                             (a different 'sub'); ask the admin to check the account",
                            u.name
                        ),
                    ))
                }
                Some(_) => {}
                None => changes.push(Change::SetUserAttrs {
                    name: u.name.clone(),
                    gecos: if u.gecos.is_empty() {
                        t.display_name.clone().unwrap_or_default()
                    } else {
                        u.gecos.clone()
                    },
                    external_id: u.external_id.clone(),
                    oidc_subject: Some(t.subject.clone()),
                }),
            }
            for g in u.groups.difference(&target) {
                changes.push(Change::RemoveMember {
                    group: g.clone(),
                    user: u.name.clone(),
                });
            }
            for g in target.difference(&u.groups) {
                changes.push(Change::AddMember {
                    group: g.clone(),
                    user: u.name.clone(),
                    at,
                });
            }
        }
        None => {
            if let Ok(g) = GroupName::new(t.username.as_str()) {
                if m.groups.contains_key(&g) {
                    return Err(refuse(
                        ErrorCode::NameConflict,
                        format!(
                            "'{}' is the name of a group at this CA, so it cannot become a \
                             user (their private group would collide); ask the admin",
                            t.username
                        ),
                    ));
                }
            }
            let uid = m
                .allocate_id(IdKind::User, t.username.as_str(), None)
                .map_err(|e| refuse(ErrorCode::IdExhausted, e.to_string()))?;
            changes.push(Change::AddUser(User {
                name: t.username.clone(),
                uid,
                disabled: false,
                gecos: t.display_name.clone().unwrap_or_default(),
                shell: "/bin/bash".into(),
                created_at: at,
                groups: target,
                external_id: None,
                oidc_subject: Some(t.subject.clone()),
            }));
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{model, user};
    use crate::model::Group;
    use smith_proto::UserName;

    fn group(m: &Model, name: &str) -> Group {
        Group {
            name: GroupName::new(name).unwrap(),
            gid: m.allocate_id(IdKind::Group, name, None).unwrap(),
            members: Default::default(),
            created_at: 0,
            external_id: None,
        }
    }

    fn token(name: &str, sub: &str, groups: &[&str]) -> IdToken {
        IdToken {
            username: UserName::new(name).unwrap(),
            subject: sub.into(),
            groups: groups.iter().map(|g| GroupName::new(g).unwrap()).collect(),
            ignored_groups: vec![],
            display_name: Some("Alice Example".into()),
            nonce: None,
            expires_at: 0,
        }
    }

    fn names(m: &Model, u: &str) -> Vec<String> {
        m.users[&UserName::new(u).unwrap()]
            .groups
            .iter()
            .map(|g| g.to_string())
            .collect()
    }

    #[test]
    fn first_sign_in_provisions_and_later_ones_follow_the_token() {
        let mut m = model();
        let dev = group(&m, "dev");
        m.apply(&[Change::AddGroup(dev)], Some(2));
        let ops = group(&m, "ops");
        m.apply(&[Change::AddGroup(ops)], Some(3));
        // First sign-in: user created, only groups known to the CA.
        let c = plan(&m, &token("alice", "s-1", &["dev", "unknown"]), 10).unwrap();
        assert_eq!(c.len(), 1);
        m.apply(&c, Some(4));
        let a = &m.users[&UserName::new("alice").unwrap()];
        assert_eq!(
            (a.gecos.as_str(), a.oidc_subject.as_deref()),
            ("Alice Example", Some("s-1"))
        );
        assert_eq!(names(&m, "alice"), vec!["dev"]);
        // Same token again: nothing to do.
        assert!(plan(&m, &token("alice", "s-1", &["dev"]), 11)
            .unwrap()
            .is_empty());
        // The IdP moved her from dev to ops.
        let c = plan(&m, &token("alice", "s-1", &["ops"]), 12).unwrap();
        m.apply(&c, Some(5));
        assert_eq!(names(&m, "alice"), vec!["ops"]);
        assert!(m.groups[&GroupName::new("dev").unwrap()].members.is_empty());
        // Another sub for the same login name is refused.
        let r = plan(&m, &token("alice", "s-2", &["ops"]), 13).unwrap_err();
        assert_eq!(r.code, ErrorCode::OidcSubjectMismatch);
    }

    #[test]
    fn admin_made_users_get_bound_and_disabled_users_are_left_alone() {
        let mut m = model();
        let dev = group(&m, "dev");
        m.apply(&[Change::AddGroup(dev)], Some(2));
        let mut bob = user(&m, "bob");
        bob.gecos = "Bob".into();
        m.apply(&[Change::AddUser(bob)], Some(3));
        let c = plan(&m, &token("bob", "s-b", &["dev"]), 5).unwrap();
        m.apply(&c, Some(4));
        let b = &m.users[&UserName::new("bob").unwrap()];
        assert_eq!(
            (b.gecos.as_str(), b.oidc_subject.as_deref()),
            ("Bob", Some("s-b"))
        );
        assert_eq!(names(&m, "bob"), vec!["dev"]);
        m.apply(
            &[Change::DisableUser {
                name: UserName::new("bob").unwrap(),
                at: 6,
            }],
            Some(5),
        );
        assert!(plan(&m, &token("bob", "s-b", &[]), 7).unwrap().is_empty());
        // A login name that is a group's name cannot be provisioned.
        let r = plan(&m, &token("dev", "s-d", &[]), 8).unwrap_err();
        assert_eq!(r.code, ErrorCode::NameConflict);
    }
}
