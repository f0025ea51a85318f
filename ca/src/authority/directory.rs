//! Users, groups, memberships and people's tokens: the directory commands, for every
//! front door (the admin API, SCIM provisioning, OIDC sign-in).
//!
//! Rules that live here once: a user and a group never share a name (a user's private
//! group on hosts has the user's name); ids come from the allocator (a name keeps its id
//! forever, a taken id is refused); a new user is built by [`plan_add_user`] only;
//! memberships name existing users and groups; a disabled user gets no token.
//!
//! Must never: build a `Change::AddUser` or `Change::AddGroup` anywhere else, or let a
//! front door skip a rule.

use super::{now, Authority, Error};
use crate::auth::{hash_token, new_token};
use crate::model::{Change, Group, IdKind, Model, Token, TokenKind, User};
use crate::oidc::IdToken;
use crate::origin::Origin;
use smith_proto::{GroupName, PosixId, UserName};
use std::collections::BTreeSet;

/// Longest lifetime of a user or SCIM token.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 86400;
/// Default lifetime of a SCIM token.
pub const DEFAULT_SCIM_TOKEN_TTL_SECS: u64 = 365 * 86400;
/// Most groups one `user add` may name.
pub const MAX_GROUPS_PER_REQUEST: usize = 256;

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: UserName,
    /// `None`: allocated from the range (or the id the name had before).
    pub uid: Option<PosixId>,
    pub gecos: String,
    /// `None`: `/bin/bash`.
    pub shell: Option<String>,
    pub groups: Vec<GroupName>,
    /// Create the groups that do not exist yet (the admin's `user add --groups`).
    pub create_groups: bool,
    pub disabled: bool,
    pub external_id: Option<String>,
    pub oidc_subject: Option<String>,
}

impl NewUser {
    /// An enabled user of that name with nothing else set.
    pub fn named(name: UserName) -> NewUser {
        NewUser {
            name,
            uid: None,
            gecos: String::new(),
            shell: None,
            groups: vec![],
            create_groups: false,
            disabled: false,
            external_id: None,
            oidc_subject: None,
        }
    }
}

/// A group to create.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub name: GroupName,
    pub gid: Option<PosixId>,
    pub external_id: Option<String>,
    /// Initial members (existing users).
    pub members: BTreeSet<UserName>,
}

/// Attributes to change on an existing user (`None`: keep).
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub gecos: Option<String>,
    pub active: Option<bool>,
    pub external_id: Option<Option<String>>,
    /// The uid the caller believes the user has: ids never change, so another is refused.
    pub uid: Option<PosixId>,
}

/// One step of a membership update, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberOp {
    Add(Vec<UserName>),
    Remove(Vec<UserName>),
    RemoveAll,
    Replace(Vec<UserName>),
}

/// GECOS text from what an IdP says (a display name): printable, no `:`, at most 256
/// bytes, trimmed.
pub fn gecos_from(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().filter(|c| !c.is_control() && *c != ':') {
        if out.len() + c.len_utf8() > 256 {
            break;
        }
        out.push(c);
    }
    out.trim().to_string()
}

/// GECOS: printable, no `:` (it would break /etc/passwd lines), bounded.
pub fn check_gecos(s: &str) -> Result<(), Error> {
    if s.len() > 256 || s.chars().any(|c| c.is_control() || c == ':') {
        return Err(Error::InvalidGecos);
    }
    Ok(())
}

/// Shell: an absolute path of safe characters.
pub fn check_shell(s: &str) -> Result<(), Error> {
    let ok = s.starts_with('/')
        && s.len() <= 256
        && !s.contains("/../")
        && !s.ends_with("/..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.' | b'+'));
    if !ok {
        return Err(Error::InvalidShell(s.to_string()));
    }
    Ok(())
}

/// A user of this name may be created: none exists, and no group has the name.
fn check_user_name_free(m: &Model, name: &UserName) -> Result<(), Error> {
    if m.user(name).is_some() {
        return Err(Error::UserExists(name.clone()));
    }
    if GroupName::new(name.as_str()).is_ok_and(|g| m.group(&g).is_some()) {
        return Err(Error::NameIsAGroup(name.clone()));
    }
    Ok(())
}

/// A group of this name may be created: none exists, and no user has the name.
fn check_group_name_free(m: &Model, name: &GroupName) -> Result<(), Error> {
    if let Some(g) = m.group(name) {
        return Err(Error::GroupExists {
            name: name.clone(),
            gid: g.gid,
        });
    }
    if UserName::new(name.as_str()).is_ok_and(|u| m.user(&u).is_some()) {
        return Err(Error::NameIsAUser(name.clone()));
    }
    Ok(())
}

/// The changes that create `new` (and its missing groups when it asks for that); ids
/// in `taken` are already planned by the caller.
fn plan_add_user(m: &Model, new: &NewUser, at: u64) -> Result<Vec<Change>, Error> {
    check_gecos(&new.gecos)?;
    if let Some(s) = &new.shell {
        check_shell(s)?;
    }
    if new.groups.len() > MAX_GROUPS_PER_REQUEST {
        return Err(Error::InvalidInput(format!(
            "at most {MAX_GROUPS_PER_REQUEST} groups per user"
        )));
    }
    check_user_name_free(m, &new.name)?;
    let mut changes = Vec::new();
    let mut taken = Vec::new();
    let wanted: BTreeSet<&GroupName> = new.groups.iter().collect();
    for g in wanted {
        if m.group(g).is_some() {
            continue;
        }
        if !new.create_groups {
            return Err(Error::UnknownGroup(g.clone()));
        }
        if g.as_str() == new.name.as_str() {
            return Err(Error::NameIsAUser(g.clone()));
        }
        check_group_name_free(m, g)?;
        let gid = m.allocate_id_with(IdKind::Group, g.as_str(), None, &taken)?;
        taken.push(gid.get());
        changes.push(Change::AddGroup(Group {
            name: g.clone(),
            gid,
            members: BTreeSet::new(),
            created_at: at,
            external_id: None,
        }));
    }
    let uid = m.allocate_id_with(IdKind::User, new.name.as_str(), new.uid, &taken)?;
    changes.push(Change::AddUser(User {
        name: new.name.clone(),
        uid,
        disabled: new.disabled,
        gecos: new.gecos.clone(),
        shell: new.shell.clone().unwrap_or_else(|| "/bin/bash".into()),
        created_at: at,
        groups: new.groups.iter().cloned().collect(),
        external_id: new.external_id.clone(),
        oidc_subject: new.oidc_subject.clone(),
    }));
    Ok(changes)
}

/// Changes that make `g`'s members exactly `want`.
fn set_members(g: &Group, want: &BTreeSet<UserName>, at: u64) -> Vec<Change> {
    let mut c = Vec::new();
    for u in g.members.difference(want) {
        c.push(Change::RemoveMember {
            group: g.name.clone(),
            user: u.clone(),
        });
    }
    for u in want.difference(&g.members) {
        c.push(Change::AddMember {
            group: g.name.clone(),
            user: u.clone(),
            at,
        });
    }
    c
}

fn check_users(m: &Model, users: &BTreeSet<UserName>) -> Result<(), Error> {
    match users.iter().find(|u| m.user(u).is_none()) {
        Some(u) => Err(Error::MemberNotAUser(u.clone())),
        None => Ok(()),
    }
}

fn ttl_in(ttl: u64, min: u64, max: u64, what: &'static str) -> Result<u64, Error> {
    if !(min..=max).contains(&ttl) {
        return Err(Error::InvalidTtl { what, min, max });
    }
    Ok(ttl)
}

/// The changes an OIDC sign-in with `t` implies (empty when nothing changes):
/// - first sign-in of a login name: the user is provisioned (uid allocated as usual,
///   GECOS from the `name` claim) and bound to the token's `sub`;
/// - a known user is bound to the `sub` at their first OIDC sign-in; a later token with
///   the same login name but another `sub` is refused (a renamed or recycled IdP account
///   must not inherit someone's access);
/// - in every group that exists at the CA, the user's membership is set to what the
///   token's groups claim says; groups unknown to the CA are ignored;
/// - a disabled user changes nothing (issuance then refuses them).
pub fn plan_sign_in(m: &Model, t: &IdToken, at: u64) -> Result<Vec<Change>, Error> {
    let target: BTreeSet<GroupName> = t
        .groups
        .iter()
        .filter(|g| m.group(g).is_some())
        .cloned()
        .collect();
    let mut changes = Vec::new();
    match m.user(&t.username) {
        Some(u) if u.disabled => {}
        Some(u) => {
            match &u.oidc_subject {
                Some(s) if s != &t.subject => {
                    return Err(Error::OidcSubjectMismatch(u.name.clone()))
                }
                Some(_) => {}
                None => changes.push(Change::SetUserAttrs {
                    name: u.name.clone(),
                    gecos: if u.gecos.is_empty() {
                        gecos_from(t.display_name.as_deref().unwrap_or(""))
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
            let mut new = NewUser::named(t.username.clone());
            new.gecos = gecos_from(t.display_name.as_deref().unwrap_or(""));
            new.groups = target.into_iter().collect();
            new.oidc_subject = Some(t.subject.clone());
            changes = plan_add_user(m, &new, at)?;
        }
    }
    Ok(changes)
}

impl Authority {
    /// The user now (after a command).
    fn user_now(&self, name: &UserName) -> Result<User, Error> {
        self.model()
            .user(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchUser(name.clone()))
    }

    /// The group now (after a command).
    fn group_now(&self, name: &GroupName) -> Result<Group, Error> {
        self.model()
            .group(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchGroup(name.clone()))
    }

    /// Creates a user (and, when asked, their missing groups).
    pub fn add_user(&self, origin: &Origin, new: NewUser) -> Result<User, Error> {
        let name = new.name.clone();
        self.mutate(origin, format!("user add {name}"), |m, _, at| {
            Ok((plan_add_user(m, &new, at)?, ()))
        })?;
        self.user_now(&name)
    }

    /// Disables a user: no certificate any more, gone from hosts at their next sync, and
    /// their still-valid certificates revoked.
    pub fn disable_user(&self, origin: &Origin, name: &UserName) -> Result<User, Error> {
        self.mutate(origin, format!("user disable {name}"), |m, _, at| {
            match m.user(name) {
                None => Err(Error::NoSuchUser(name.clone())),
                Some(u) if u.disabled => Ok((vec![], ())),
                Some(_) => Ok((
                    vec![Change::DisableUser {
                        name: name.clone(),
                        at,
                    }],
                    (),
                )),
            }
        })?;
        self.user_now(name)
    }

    /// Changes a user's attributes (SCIM `PUT`/`PATCH`).
    pub fn update_user(
        &self,
        origin: &Origin,
        name: &UserName,
        up: UserUpdate,
    ) -> Result<User, Error> {
        if let Some(g) = &up.gecos {
            check_gecos(g)?;
        }
        self.mutate(origin, format!("user update {name}"), |m, _, at| {
            let u = m
                .user(name)
                .ok_or_else(|| Error::NoSuchUser(name.clone()))?;
            if let Some(asked) = up.uid.filter(|id| *id != u.uid) {
                return Err(Error::IdImmutable {
                    attr: "uidNumber",
                    current: u.uid,
                    asked,
                    what: "uids",
                });
            }
            let gecos = up.gecos.clone().unwrap_or_else(|| u.gecos.clone());
            let external_id = up
                .external_id
                .clone()
                .unwrap_or_else(|| u.external_id.clone());
            let mut c = Vec::new();
            if gecos != u.gecos || external_id != u.external_id {
                c.push(Change::SetUserAttrs {
                    name: u.name.clone(),
                    gecos,
                    external_id,
                    oidc_subject: u.oidc_subject.clone(),
                });
            }
            match up.active {
                Some(true) if u.disabled => c.push(Change::EnableUser {
                    name: u.name.clone(),
                }),
                Some(false) if !u.disabled => c.push(Change::DisableUser {
                    name: u.name.clone(),
                    at,
                }),
                _ => {}
            }
            Ok((c, ()))
        })?;
        self.user_now(name)
    }

    /// Deletes a user: disabled, removed with their memberships and tokens; the uid stays
    /// allocated to the name.
    pub fn delete_user(&self, origin: &Origin, name: &UserName) -> Result<(), Error> {
        self.mutate(origin, format!("user delete {name}"), |m, _, at| {
            let u = m
                .user(name)
                .ok_or_else(|| Error::NoSuchUser(name.clone()))?;
            let mut c = Vec::new();
            if !u.disabled {
                c.push(Change::DisableUser {
                    name: u.name.clone(),
                    at,
                });
            }
            c.push(Change::DeleteUser {
                name: u.name.clone(),
                at,
            });
            Ok((c, ()))
        })?;
        Ok(())
    }

    /// Mints a user token (shown once): the token and its expiry.
    pub fn mint_user_token(
        &self,
        origin: &Origin,
        name: &UserName,
        ttl_secs: Option<u64>,
    ) -> Result<(String, u64), Error> {
        let ttl = ttl_in(
            ttl_secs.unwrap_or(self.cfg.default_user_token_ttl.as_secs()),
            60,
            MAX_TOKEN_TTL_SECS,
            "a user token's lifetime",
        )?;
        let token = new_token(TokenKind::User);
        let hash = hash_token(&token);
        let expires_at = now() + ttl;
        self.mutate(origin, format!("user token {name}"), |m, _, at| {
            match m.user(name) {
                None => Err(Error::NoSuchUser(name.clone())),
                Some(u) if u.disabled => Err(Error::UserDisabled(name.clone())),
                Some(_) => Ok((
                    vec![Change::AddToken {
                        hash,
                        token: Token::bearer(TokenKind::User, name.as_str(), at, Some(expires_at)),
                    }],
                    (),
                )),
            }
        })?;
        Ok((token, expires_at))
    }

    /// Mints the SCIM client's bearer token (shown once): the token and its expiry.
    pub fn mint_scim_token(
        &self,
        origin: &Origin,
        ttl_secs: Option<u64>,
    ) -> Result<(String, u64), Error> {
        let ttl = ttl_in(
            ttl_secs.unwrap_or(DEFAULT_SCIM_TOKEN_TTL_SECS),
            60,
            MAX_TOKEN_TTL_SECS,
            "a SCIM token's lifetime",
        )?;
        let token = new_token(TokenKind::Scim);
        let hash = hash_token(&token);
        let expires_at = now() + ttl;
        self.mutate(origin, "scim token".into(), |_, _, at| {
            Ok((
                vec![Change::AddToken {
                    hash,
                    token: Token::bearer(TokenKind::Scim, "scim", at, Some(expires_at)),
                }],
                (),
            ))
        })?;
        Ok((token, expires_at))
    }

    /// Creates a group (with initial members, which must be users).
    pub fn add_group(&self, origin: &Origin, new: NewGroup) -> Result<Group, Error> {
        let name = new.name.clone();
        self.mutate(origin, format!("group add {name}"), |m, _, at| {
            check_group_name_free(m, &new.name)?;
            check_users(m, &new.members)?;
            let g = Group {
                name: new.name.clone(),
                gid: m.allocate_id(IdKind::Group, new.name.as_str(), new.gid)?,
                members: BTreeSet::new(),
                created_at: at,
                external_id: new.external_id.clone(),
            };
            let mut c = vec![Change::AddGroup(g.clone())];
            c.extend(set_members(&g, &new.members, at));
            Ok((c, ()))
        })?;
        self.group_now(&name)
    }

    /// Adds a member (nothing to do if they already are one).
    pub fn add_member(
        &self,
        origin: &Origin,
        group: &GroupName,
        user: &UserName,
    ) -> Result<Group, Error> {
        self.mutate(
            origin,
            format!("group add-member {group} {user}"),
            |m, _, at| {
                let g = m
                    .group(group)
                    .ok_or_else(|| Error::NoSuchGroup(group.clone()))?;
                if m.user(user).is_none() {
                    return Err(Error::NoSuchUser(user.clone()));
                }
                if g.members.contains(user) {
                    return Ok((vec![], ()));
                }
                Ok((
                    vec![Change::AddMember {
                        group: group.clone(),
                        user: user.clone(),
                        at,
                    }],
                    (),
                ))
            },
        )?;
        self.group_now(group)
    }

    /// Removes a member.
    pub fn remove_member(
        &self,
        origin: &Origin,
        group: &GroupName,
        user: &UserName,
    ) -> Result<Group, Error> {
        self.mutate(
            origin,
            format!("group remove-member {group} {user}"),
            |m, _, _| {
                let g = m
                    .group(group)
                    .ok_or_else(|| Error::NoSuchGroup(group.clone()))?;
                if !g.members.contains(user) {
                    return Err(Error::NotAMember {
                        group: group.clone(),
                        user: user.clone(),
                    });
                }
                Ok((
                    vec![Change::RemoveMember {
                        group: group.clone(),
                        user: user.clone(),
                    }],
                    (),
                ))
            },
        )?;
        self.group_now(group)
    }

    /// Changes a group's members (applying `ops` in order to the current members) and
    /// its external id (`Some`: set). `gid`: what the caller believes the gid is (ids
    /// never change).
    pub fn update_group(
        &self,
        origin: &Origin,
        name: &GroupName,
        ops: &[MemberOp],
        external_id: Option<Option<String>>,
        gid: Option<PosixId>,
    ) -> Result<Group, Error> {
        self.mutate(origin, format!("group update {name}"), |m, _, at| {
            let g = m
                .group(name)
                .ok_or_else(|| Error::NoSuchGroup(name.clone()))?;
            if let Some(asked) = gid.filter(|id| *id != g.gid) {
                return Err(Error::IdImmutable {
                    attr: "gidNumber",
                    current: g.gid,
                    asked,
                    what: "gids",
                });
            }
            let mut want = g.members.clone();
            for op in ops {
                match op {
                    MemberOp::Add(l) => want.extend(l.iter().cloned()),
                    MemberOp::Remove(l) => l.iter().for_each(|u| {
                        want.remove(u);
                    }),
                    MemberOp::RemoveAll => want.clear(),
                    MemberOp::Replace(l) => want = l.iter().cloned().collect(),
                }
            }
            check_users(m, &want.difference(&g.members).cloned().collect())?;
            let mut c = Vec::new();
            if let Some(ext) = external_id.filter(|e| *e != g.external_id) {
                c.push(Change::SetGroupExternalId {
                    name: g.name.clone(),
                    external_id: ext,
                });
            }
            c.extend(set_members(g, &want, at));
            Ok((c, ()))
        })?;
        self.group_now(name)
    }

    /// Deletes a group, its memberships and the grants on it; the gid stays allocated to
    /// the name.
    pub fn delete_group(&self, origin: &Origin, name: &GroupName) -> Result<(), Error> {
        self.mutate(origin, format!("group delete {name}"), |m, _, at| {
            let g = m
                .group(name)
                .ok_or_else(|| Error::NoSuchGroup(name.clone()))?;
            let mut c: Vec<Change> = m
                .grants()
                .values()
                .filter(|gr| gr.group == g.name)
                .map(|gr| Change::RemoveGrant { id: gr.id, at })
                .collect();
            c.push(Change::DeleteGroup {
                name: g.name.clone(),
                at,
            });
            Ok((c, ()))
        })?;
        Ok(())
    }

    /// Applies a verified OIDC sign-in (see [`plan_sign_in`]).
    pub fn sign_in(&self, t: &IdToken) -> Result<(), Error> {
        if plan_sign_in(&self.model(), t, now())?.is_empty() {
            return Ok(());
        }
        let origin = Origin::OidcSignIn {
            subject: t.subject.clone(),
        };
        self.mutate(
            &origin,
            format!("oidc sign-in {} (sub {})", t.username, t.subject),
            |m, _, at| Ok((plan_sign_in(m, t, at)?, ())),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{model, user};
    use smith_api::ErrorCode;

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
        m.user(&UserName::new(u).unwrap())
            .unwrap()
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
        let c = plan_sign_in(&m, &token("alice", "s-1", &["dev", "unknown"]), 10).unwrap();
        assert_eq!(c.len(), 1);
        m.apply(&c, Some(4));
        let a = m.user(&UserName::new("alice").unwrap()).unwrap();
        assert_eq!(
            (a.gecos.as_str(), a.oidc_subject.as_deref()),
            ("Alice Example", Some("s-1"))
        );
        assert_eq!(names(&m, "alice"), vec!["dev"]);
        // Same token again: nothing to do.
        assert!(plan_sign_in(&m, &token("alice", "s-1", &["dev"]), 11)
            .unwrap()
            .is_empty());
        // The IdP moved her from dev to ops.
        let c = plan_sign_in(&m, &token("alice", "s-1", &["ops"]), 12).unwrap();
        m.apply(&c, Some(5));
        assert_eq!(names(&m, "alice"), vec!["ops"]);
        assert!(m
            .group(&GroupName::new("dev").unwrap())
            .unwrap()
            .members
            .is_empty());
        // Another sub for the same login name is refused.
        let r = plan_sign_in(&m, &token("alice", "s-2", &["ops"]), 13).unwrap_err();
        assert_eq!(r.code(), ErrorCode::OidcSubjectMismatch);
    }

    #[test]
    fn admin_made_users_get_bound_and_disabled_users_are_left_alone() {
        let mut m = model();
        let dev = group(&m, "dev");
        m.apply(&[Change::AddGroup(dev)], Some(2));
        let mut bob = user(&m, "bob");
        bob.gecos = "Bob".into();
        m.apply(&[Change::AddUser(bob)], Some(3));
        let c = plan_sign_in(&m, &token("bob", "s-b", &["dev"]), 5).unwrap();
        m.apply(&c, Some(4));
        let b = m.user(&UserName::new("bob").unwrap()).unwrap();
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
        assert!(plan_sign_in(&m, &token("bob", "s-b", &[]), 7)
            .unwrap()
            .is_empty());
        // A login name that is a group's name cannot be provisioned.
        let r = plan_sign_in(&m, &token("dev", "s-d", &[]), 8).unwrap_err();
        assert_eq!(r.code(), ErrorCode::NameConflict);
    }

    #[test]
    fn a_user_and_a_group_never_share_a_name() {
        let mut m = model();
        let dev = group(&m, "dev");
        m.apply(&[Change::AddGroup(dev)], Some(2));
        let u = NewUser::named(UserName::new("dev").unwrap());
        assert_eq!(
            plan_add_user(&m, &u, 1).unwrap_err().code(),
            ErrorCode::NameConflict
        );
        let mut alice = NewUser::named(UserName::new("alice").unwrap());
        alice.groups = vec![GroupName::new("alice").unwrap()];
        alice.create_groups = true;
        assert_eq!(
            plan_add_user(&m, &alice, 1).unwrap_err().code(),
            ErrorCode::NameConflict
        );
        let c = plan_add_user(&m, &NewUser::named(UserName::new("bob").unwrap()), 1).unwrap();
        m.apply(&c, Some(3));
        assert_eq!(
            check_group_name_free(&m, &GroupName::new("bob").unwrap())
                .unwrap_err()
                .code(),
            ErrorCode::NameConflict
        );
    }
}
