//! People's identity at the IdP: how a verified OIDC sign-in finds its user, how users
//! are bound to an IdP identity, and how IdP groups reach CA groups.
//!
//! Rules that live here once:
//! - a user is bound to an immutable IdP identity, issuer + `sub`; a sign-in is matched
//!   on that binding first, whatever login name the token states (a renamed IdP account
//!   keeps its Smith account);
//! - a first sign-in never takes over an existing account: an unbound user is bound only
//!   when the token's external-id claim equals the user's SCIM `externalId`, or when an
//!   admin bound it (`user bind`); otherwise the sign-in is refused (`oidc_not_bound`);
//! - a login name nobody holds is provisioned at its first sign-in, bound to the token;
//! - IdP groups reach CA groups only through a mapping an admin made, keyed by the IdP's
//!   group id as the groups claim carries it (Entra: object id GUIDs); at each sign-in a
//!   user's memberships that sign-ins made are set to what the mapped token groups say,
//!   and memberships an admin or SCIM made are left alone;
//! - a disabled user changes nothing (issuance then refuses them).
//!
//! Must never: bind or provision from an unverified token, or let a group's name in a
//! token stand for a CA group.

use super::directory::{check_binding_free, gecos_from, plan_add_user, NewUser};
use super::{now, Authority, Error};
use crate::model::{Change, Model, OidcBinding, Source, User};
use crate::oidc::IdToken;
use crate::origin::{Actor, Origin};
use smith_proto::{GroupName, UserName};
use std::collections::BTreeSet;

/// Longest IdP group id accepted in a mapping.
pub const MAX_IDP_GROUP_LEN: usize = 256;

/// The user bound to `issuer` + `subject` (a binding recorded without an issuer matches
/// any issuer).
pub fn bound_user<'a>(m: &'a Model, issuer: &str, subject: &str) -> Option<&'a User> {
    m.users().values().find(|u| {
        u.oidc
            .as_ref()
            .is_some_and(|b| b.subject == subject && (b.issuer == issuer || b.issuer.is_empty()))
    })
}

fn binding_of(t: &IdToken) -> OidcBinding {
    OidcBinding {
        issuer: t.issuer.clone(),
        subject: t.subject.clone(),
    }
}

/// Memberships of `u` a sign-in with `t` changes: in the CA groups the token's mapped IdP
/// groups name, added (as the sign-in's); memberships sign-ins made in other groups,
/// removed. An admin's or SCIM's memberships are never touched.
fn membership_changes(m: &Model, u: &User, t: &IdToken, at: u64) -> Vec<Change> {
    let target = m.mapped_groups(t.groups.iter().map(String::as_str));
    let mut c = Vec::new();
    for g in &u.groups {
        if !target.contains(g) && m.membership_source(g, &u.name) == Some(Source::SignIn) {
            c.push(Change::RemoveMember {
                group: g.clone(),
                user: u.name.clone(),
            });
        }
    }
    for g in target.difference(&u.groups) {
        c.push(Change::AddMember {
            group: g.clone(),
            user: u.name.clone(),
            at,
            source: Source::SignIn,
        });
    }
    c
}

/// What a verified sign-in with `t` means: the user it signs in as, and the changes it
/// implies (empty when nothing changes). See the module doc for the rules.
pub fn plan_sign_in(m: &Model, t: &IdToken, at: u64) -> Result<(UserName, Vec<Change>), Error> {
    let origin = Origin::new(Actor::OidcSignIn {
        subject: t.subject.clone(),
    });
    if let Some(u) = bound_user(m, &t.issuer, &t.subject) {
        if u.is_disabled() {
            return Ok((u.name.clone(), vec![]));
        }
        if u.name != t.username {
            tracing::info!(user = %u.name, token_name = %t.username, "sign-in by a bound identity whose IdP login name changed; it keeps its Smith name");
        }
        let mut c = Vec::new();
        if u.oidc.as_ref().is_some_and(|b| b.issuer.is_empty()) {
            // A binding recorded before issuers were: complete it.
            c.push(Change::SetUserAttrs {
                name: u.name.clone(),
                gecos: u.gecos.clone(),
                external_id: u.external_id.clone(),
                oidc: Some(binding_of(t)),
            });
        }
        c.extend(membership_changes(m, u, t, at));
        return Ok((u.name.clone(), c));
    }
    match m.user(&t.username) {
        Some(u) if u.oidc.is_some() => Err(Error::OidcSubjectMismatch(u.name.clone())),
        Some(u) => {
            let by_external_id = matches!(
                (&u.external_id, &t.external_id),
                (Some(e), Some(claim)) if e == claim
            );
            if !by_external_id {
                return Err(Error::OidcNotBound(u.name.clone()));
            }
            if u.is_disabled() {
                return Ok((u.name.clone(), vec![]));
            }
            let mut c = vec![Change::SetUserAttrs {
                name: u.name.clone(),
                gecos: if u.gecos.is_empty() {
                    gecos_from(t.display_name.as_deref().unwrap_or(""))
                } else {
                    u.gecos.clone()
                },
                external_id: u.external_id.clone(),
                oidc: Some(binding_of(t)),
            }];
            c.extend(membership_changes(m, u, t, at));
            Ok((u.name.clone(), c))
        }
        None => {
            let mut new = NewUser::named(t.username.clone());
            new.gecos = gecos_from(t.display_name.as_deref().unwrap_or(""));
            new.groups = m
                .mapped_groups(t.groups.iter().map(String::as_str))
                .into_iter()
                .collect();
            new.oidc = Some(binding_of(t));
            Ok((t.username.clone(), plan_add_user(m, &origin, &new, at)?))
        }
    }
}

/// An IdP group id as an admin gives it: 1 to 256 printable characters.
fn check_idp_group(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > MAX_IDP_GROUP_LEN || id.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidInput(format!(
            "an IdP group id is 1 to {MAX_IDP_GROUP_LEN} printable characters (Entra ID: the \
             group's Object ID)"
        )));
    }
    Ok(())
}

impl Authority {
    /// Applies a verified OIDC sign-in (see [`plan_sign_in`]); answers the user it signs
    /// in as.
    pub fn sign_in(&self, t: &IdToken, source: std::net::IpAddr) -> Result<UserName, Error> {
        let (name, changes) = plan_sign_in(&self.model(), t, now())?;
        if changes.is_empty() {
            return Ok(name);
        }
        let origin = Origin::new(Actor::OidcSignIn {
            subject: t.subject.clone(),
        })
        .from_addr(source);
        let (_, name) = self.mutate(
            &origin,
            format!("oidc sign-in {} (sub {})", t.username, t.subject),
            |m, _, at| {
                let (name, c) = plan_sign_in(m, t, at)?;
                Ok((c, name))
            },
        )?;
        Ok(name)
    }

    /// Binds a user to an IdP identity (`Some`), or removes the binding (`None`): the
    /// admin's way to let an existing account's owner sign in.
    pub fn bind_user(
        &self,
        origin: &Origin,
        name: &UserName,
        binding: Option<OidcBinding>,
    ) -> Result<User, Error> {
        if let Some(b) = &binding {
            if b.subject.is_empty()
                || b.subject.len() > 255
                || b.subject.chars().any(|c| c.is_control())
            {
                return Err(Error::InvalidInput(
                    "an OIDC subject is 1 to 255 printable characters".into(),
                ));
            }
        }
        let what = match &binding {
            Some(b) => format!("user bind {name} {} sub {}", b.issuer, b.subject),
            None => format!("user unbind {name}"),
        };
        self.mutate(origin, what, |m, _, _| {
            let u = m
                .user(name)
                .ok_or_else(|| Error::NoSuchUser(name.clone()))?;
            if let Some(b) = &binding {
                check_binding_free(m, name, b)?;
            }
            if u.oidc == binding {
                return Ok((vec![], ()));
            }
            Ok((
                vec![Change::SetUserAttrs {
                    name: name.clone(),
                    gecos: u.gecos.clone(),
                    external_id: u.external_id.clone(),
                    oidc: binding.clone(),
                }],
                (),
            ))
        })?;
        self.user_now(name)
    }

    /// Lets members of the IdP group `idp_group` into `group` at their sign-ins.
    pub fn map_group(
        &self,
        origin: &Origin,
        group: &GroupName,
        idp_group: &str,
    ) -> Result<(), Error> {
        check_idp_group(idp_group)?;
        self.mutate(
            origin,
            format!("group map {group} idp group {idp_group}"),
            |m, _, at| {
                if m.group(group).is_none() {
                    return Err(Error::NoSuchGroup(group.clone()));
                }
                if m.idp_groups()
                    .get(idp_group)
                    .is_some_and(|s| s.contains(group))
                {
                    return Ok((vec![], ()));
                }
                Ok((
                    vec![Change::MapGroup {
                        idp_group: idp_group.to_string(),
                        group: group.clone(),
                        at,
                    }],
                    (),
                ))
            },
        )?;
        Ok(())
    }

    /// Ends a mapping; the memberships sign-ins made in `group` go with it (members who
    /// still hold another mapping to it get it back at their next sign-in).
    pub fn unmap_group(
        &self,
        origin: &Origin,
        group: &GroupName,
        idp_group: &str,
    ) -> Result<(), Error> {
        self.mutate(
            origin,
            format!("group unmap {group} idp group {idp_group}"),
            |m, _, _| {
                let g = m
                    .group(group)
                    .ok_or_else(|| Error::NoSuchGroup(group.clone()))?;
                if !m
                    .idp_groups()
                    .get(idp_group)
                    .is_some_and(|s| s.contains(group))
                {
                    return Err(Error::NoSuchMapping {
                        group: group.clone(),
                        idp_group: idp_group.to_string(),
                    });
                }
                let mut c = vec![Change::UnmapGroup {
                    idp_group: idp_group.to_string(),
                    group: group.clone(),
                }];
                let signed_in: BTreeSet<&UserName> = g
                    .members
                    .iter()
                    .filter(|u| m.membership_source(group, u) == Some(Source::SignIn))
                    .collect();
                c.extend(signed_in.into_iter().map(|u| Change::RemoveMember {
                    group: group.clone(),
                    user: u.clone(),
                }));
                Ok((c, ()))
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{model, user};
    use crate::model::{Group, IdKind};
    use smith_api::ErrorCode;

    const ISS: &str = "https://idp.example";

    fn group(m: &Model, name: &str) -> Group {
        Group {
            name: GroupName::new(name).unwrap(),
            gid: m.allocate_id(IdKind::Group, name, None).unwrap(),
            members: Default::default(),
            created_at: 0,
            external_id: None,
            source: Source::Admin,
        }
    }

    fn token(name: &str, sub: &str, groups: &[&str]) -> IdToken {
        IdToken {
            issuer: ISS.into(),
            username: UserName::new(name).unwrap(),
            subject: sub.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            external_id: Some(sub.into()),
            display_name: Some("Alice Example".into()),
            nonce: None,
            expires_at: 0,
            issued_at: 0,
            auth_time: None,
        }
    }

    fn names(m: &Model, u: &str) -> Vec<String> {
        m.user(&UserName::new(u).unwrap())
            .unwrap()
            .groups
            .iter()
            .map(|g| g.to_string())
            .collect()
    }

    fn apply(m: &mut Model, c: Vec<Change>) {
        let v = m.version() + 1;
        m.apply(&c, Some(v));
    }

    #[test]
    fn first_sign_in_provisions_and_mapped_groups_follow_the_token() {
        let mut m = model();
        for g in ["dev", "ops"] {
            let g = group(&m, g);
            apply(&mut m, vec![Change::AddGroup(g)]);
        }
        for (idp, g) in [("0f1e-dev-guid", "dev"), ("9a8b-ops-guid", "ops")] {
            apply(
                &mut m,
                vec![Change::MapGroup {
                    idp_group: idp.into(),
                    group: GroupName::new(g).unwrap(),
                    at: 1,
                }],
            );
        }
        // A group named like a CA group grants nothing: only mapped ids count.
        let (who, c) =
            plan_sign_in(&m, &token("alice", "s-1", &["0f1e-dev-guid", "ops"]), 10).unwrap();
        assert_eq!(who.as_str(), "alice");
        apply(&mut m, c);
        let a = m.user(&UserName::new("alice").unwrap()).unwrap();
        assert_eq!(
            (
                a.gecos.as_str(),
                a.oidc.as_ref().map(|b| b.subject.as_str())
            ),
            ("Alice Example", Some("s-1"))
        );
        assert_eq!(a.source, Source::SignIn);
        assert_eq!(names(&m, "alice"), vec!["dev"]);
        // Same token again: nothing to do.
        assert!(
            plan_sign_in(&m, &token("alice", "s-1", &["0f1e-dev-guid"]), 11)
                .unwrap()
                .1
                .is_empty()
        );
        // The IdP moved her from dev to ops; an admin's membership stays.
        apply(
            &mut m,
            vec![Change::AddMember {
                group: GroupName::new("ops").unwrap(),
                user: UserName::new("alice").unwrap(),
                at: 1,
                source: Source::Admin,
            }],
        );
        let (_, c) = plan_sign_in(&m, &token("alice", "s-1", &[]), 12).unwrap();
        apply(&mut m, c);
        assert_eq!(names(&m, "alice"), vec!["ops"]);
        // Another sub for the same login name is refused.
        let r = plan_sign_in(&m, &token("alice", "s-2", &[]), 13).unwrap_err();
        assert_eq!(r.code(), ErrorCode::OidcSubjectMismatch);
        // The bound identity under a new login name is still alice.
        let (who, _) = plan_sign_in(&m, &token("alice2", "s-1", &[]), 14).unwrap();
        assert_eq!(who.as_str(), "alice");
    }

    #[test]
    fn an_unbound_account_is_never_taken_over_at_first_sign_in() {
        let mut m = model();
        let bob = user(&m, "bob");
        apply(&mut m, vec![Change::AddUser(bob)]);
        let r = plan_sign_in(&m, &token("bob", "s-mallory", &[]), 5).unwrap_err();
        assert_eq!(r.code(), ErrorCode::OidcNotBound);
        // SCIM's externalId binds it when the token's claim carries the same id.
        let mut carol = user(&m, "carol");
        carol.external_id = Some("00u-carol".into());
        apply(&mut m, vec![Change::AddUser(carol)]);
        assert_eq!(
            plan_sign_in(&m, &token("carol", "00u-mallory", &[]), 6)
                .unwrap_err()
                .code(),
            ErrorCode::OidcNotBound
        );
        let (_, c) = plan_sign_in(&m, &token("carol", "00u-carol", &[]), 6).unwrap();
        apply(&mut m, c);
        let b = m.user(&UserName::new("carol").unwrap()).unwrap();
        assert_eq!(
            b.oidc,
            Some(OidcBinding {
                issuer: ISS.into(),
                subject: "00u-carol".into()
            })
        );
        // A login name that is a group's name cannot be provisioned.
        let dev = group(&m, "dev");
        apply(&mut m, vec![Change::AddGroup(dev)]);
        let r = plan_sign_in(&m, &token("dev", "s-d", &[]), 8).unwrap_err();
        assert_eq!(r.code(), ErrorCode::NameConflict);
    }
}
