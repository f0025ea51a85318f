//! Users, groups and memberships: the directory commands, for every front door (the
//! admin API, SCIM provisioning, OIDC sign-in).
//!
//! Rules that live here once:
//! - a user and a group never share a name (a user's private group on hosts has the
//!   user's name); a new user is built by [`plan_add_user`] only; memberships name
//!   existing users and groups;
//! - ids come from the allocator; a recycled login name gets a new uid (the previous
//!   owner's files on hosts are not the newcomer's) unless an admin asks for the old one;
//!   SCIM may only ask for ids inside the CA's range;
//! - SCIM owns only what SCIM created: it changes and deletes only SCIM-made users and
//!   groups, removes only the memberships it made, cannot enable a user an admin
//!   disabled, and never deletes a grant (deleting a group that holds grants hands the
//!   group to the admin, emptied of SCIM's members, grants kept);
//! - disabling or deleting a user revokes their certificates and their user tokens (in
//!   [`Authority::mutate`]); enabling them again brings neither back.
//!
//! Must never: build a `Change::AddUser` or `Change::AddGroup` anywhere else, or let a
//! front door skip a rule.

use super::{Authority, Error};
use crate::model::{Change, Disabler, Group, IdKind, Model, OidcBinding, Source, User};
use crate::origin::{Actor, Origin};
use smith_proto::{GroupName, PosixId, UserName};
use std::collections::BTreeSet;

/// Most groups one `user add` may name.
pub const MAX_GROUPS_PER_REQUEST: usize = 256;

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: UserName,
    /// `None`: a fresh id from the range (never the id a deleted user of the same name
    /// had, unless `reuse_uid`).
    pub uid: Option<PosixId>,
    /// An admin's explicit "this is the same person": give the name its previous uid.
    pub reuse_uid: bool,
    pub gecos: String,
    /// `None`: `/bin/bash`.
    pub shell: Option<String>,
    pub groups: Vec<GroupName>,
    /// Create the groups that do not exist yet (the admin's `user add --groups`).
    pub create_groups: bool,
    pub disabled: bool,
    pub external_id: Option<String>,
    pub oidc: Option<OidcBinding>,
}

impl NewUser {
    /// An enabled user of that name with nothing else set.
    pub fn named(name: UserName) -> NewUser {
        NewUser {
            name,
            uid: None,
            reuse_uid: false,
            gecos: String::new(),
            shell: None,
            groups: vec![],
            create_groups: false,
            disabled: false,
            external_id: None,
            oidc: None,
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

/// Who creates, as a resource's owner.
pub(super) fn source_of(origin: &Origin) -> Result<Source, Error> {
    match origin.actor {
        Actor::Bootstrap | Actor::Admin { .. } | Actor::Local { .. } => Ok(Source::Admin),
        Actor::Scim => Ok(Source::Scim),
        Actor::OidcSignIn { .. } => Ok(Source::SignIn),
        _ => Err(Error::internal(
            "creating a directory entry",
            format!("{origin} may not create users or groups"),
        )),
    }
}

/// SCIM may change only what SCIM created.
fn check_scim_owns(origin: &Origin, source: Source, what: String) -> Result<(), Error> {
    if origin.is_scim() && source != Source::Scim {
        return Err(Error::NotScimManaged {
            what,
            owner: source,
        });
    }
    Ok(())
}

/// An id SCIM asks for must be in the CA's range.
fn check_scim_id(m: &Model, origin: &Origin, id: Option<PosixId>) -> Result<(), Error> {
    let range = m.settings().id_range;
    match id {
        Some(id) if origin.is_scim() && !range.contains(id.get()) => Err(Error::IdOutOfRange {
            id,
            start: range.start,
            end: range.end,
        }),
        _ => Ok(()),
    }
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

/// No other user is bound to `b`.
pub(super) fn check_binding_free(m: &Model, name: &UserName, b: &OidcBinding) -> Result<(), Error> {
    match super::identity::bound_user(m, &b.issuer, &b.subject) {
        Some(u) if &u.name != name => Err(Error::BindingTaken {
            subject: b.subject.clone(),
            owner: u.name.clone(),
        }),
        _ => Ok(()),
    }
}

/// The uid for a new user: asked for (SCIM: inside the range; the name's previous uid:
/// only an admin), the previous one when an admin says it is the same person, else a
/// fresh one.
fn user_id(m: &Model, origin: &Origin, new: &NewUser, taken: &[u32]) -> Result<PosixId, Error> {
    check_scim_id(m, origin, new.uid)?;
    let previous = m.previous_id(IdKind::User, new.name.as_str());
    let asked = match (new.uid, new.reuse_uid) {
        (Some(id), _) => Some(id),
        (None, true) => previous,
        (None, false) => None,
    };
    if let (Some(id), Some(prev)) = (asked, previous) {
        if id == prev && !origin.is_admin() {
            return Err(Error::RecycledId {
                id,
                name: new.name.clone(),
            });
        }
    }
    Ok(m.allocate_id_with(IdKind::User, new.name.as_str(), asked, taken)?)
}

/// The changes that create `new` (and its missing groups when it asks for that).
pub(super) fn plan_add_user(
    m: &Model,
    origin: &Origin,
    new: &NewUser,
    at: u64,
) -> Result<Vec<Change>, Error> {
    let source = source_of(origin)?;
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
    if let Some(b) = &new.oidc {
        check_binding_free(m, &new.name, b)?;
    }
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
            source,
        }));
    }
    let uid = user_id(m, origin, new, &taken)?;
    let disabled = match (new.disabled, source) {
        (false, _) => None,
        (true, Source::Scim) => Some(Disabler::Scim),
        (true, _) => Some(Disabler::Admin),
    };
    changes.push(Change::AddUser(User {
        name: new.name.clone(),
        uid,
        disabled,
        gecos: new.gecos.clone(),
        shell: new.shell.clone().unwrap_or_else(|| "/bin/bash".into()),
        created_at: at,
        groups: new.groups.iter().cloned().collect(),
        external_id: new.external_id.clone(),
        oidc: new.oidc.clone(),
        source,
    }));
    Ok(changes)
}

fn check_users(m: &Model, users: &BTreeSet<UserName>) -> Result<(), Error> {
    match users.iter().find(|u| m.user(u).is_none()) {
        Some(u) => Err(Error::MemberNotAUser(u.clone())),
        None => Ok(()),
    }
}

/// The changes that make `g`'s members `want`, as `source` sees them: members `source`
/// did not make stay (SCIM removes only SCIM's memberships), new ones are `source`'s.
fn set_members(
    m: &Model,
    g: &Group,
    want: &BTreeSet<UserName>,
    source: Source,
    at: u64,
) -> Vec<Change> {
    let mut c = Vec::new();
    for u in g.members.difference(want) {
        if source == Source::Admin || m.membership_source(&g.name, u) == Some(source) {
            c.push(Change::RemoveMember {
                group: g.name.clone(),
                user: u.clone(),
            });
        }
    }
    for u in want.difference(&g.members) {
        c.push(Change::AddMember {
            group: g.name.clone(),
            user: u.clone(),
            at,
            source,
        });
    }
    c
}

impl Authority {
    /// The user now (after a command).
    pub(super) fn user_now(&self, name: &UserName) -> Result<User, Error> {
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
            Ok((plan_add_user(m, origin, &new, at)?, ()))
        })?;
        self.user_now(&name)
    }

    /// Disables a user (an admin's disable: sticky against SCIM): no certificate any
    /// more, gone from hosts at their next sync, their still-valid certificates and their
    /// user tokens revoked.
    pub fn disable_user(&self, origin: &Origin, name: &UserName) -> Result<User, Error> {
        let by = if origin.is_scim() {
            Disabler::Scim
        } else {
            Disabler::Admin
        };
        self.mutate(origin, format!("user disable {name}"), |m, _, at| {
            match m.user(name) {
                None => Err(Error::NoSuchUser(name.clone())),
                Some(u) if u.disabled == Some(Disabler::Admin) => Ok((vec![], ())),
                Some(u) => {
                    check_scim_owns(origin, u.source, format!("user '{name}'"))?;
                    // An admin's disable of a user SCIM disabled makes it the admin's.
                    Ok((
                        vec![Change::DisableUser {
                            name: name.clone(),
                            at,
                            by,
                        }],
                        (),
                    ))
                }
            }
        })?;
        self.user_now(name)
    }

    /// Enables a disabled user again (an admin: whoever disabled them). Their revoked
    /// certificates and tokens stay revoked.
    pub fn enable_user(&self, origin: &Origin, name: &UserName) -> Result<User, Error> {
        self.mutate(origin, format!("user enable {name}"), |m, _, _| {
            match m.user(name) {
                None => Err(Error::NoSuchUser(name.clone())),
                Some(u) if !u.is_disabled() => Ok((vec![], ())),
                Some(u) => {
                    if origin.is_scim() && u.disabled == Some(Disabler::Admin) {
                        return Err(Error::DisabledByAdmin(name.clone()));
                    }
                    check_scim_owns(origin, u.source, format!("user '{name}'"))?;
                    Ok((vec![Change::EnableUser { name: name.clone() }], ()))
                }
            }
        })?;
        self.user_now(name)
    }

    /// Changes a user's attributes (SCIM `PUT`/`PATCH`, on SCIM's own users).
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
            check_scim_owns(origin, u.source, format!("user '{name}'"))?;
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
                    oidc: u.oidc.clone(),
                });
            }
            match (up.active, u.disabled) {
                (Some(true), Some(Disabler::Admin)) if origin.is_scim() => {
                    return Err(Error::DisabledByAdmin(name.clone()))
                }
                (Some(true), Some(_)) => c.push(Change::EnableUser {
                    name: u.name.clone(),
                }),
                (Some(false), None) => c.push(Change::DisableUser {
                    name: u.name.clone(),
                    at,
                    by: if origin.is_scim() {
                        Disabler::Scim
                    } else {
                        Disabler::Admin
                    },
                }),
                _ => {}
            }
            Ok((c, ()))
        })?;
        self.user_now(name)
    }

    /// Deletes a user: disabled, removed with their memberships and tokens; the uid stays
    /// allocated to them (a later user of the same name gets a new one).
    pub fn delete_user(&self, origin: &Origin, name: &UserName) -> Result<(), Error> {
        self.mutate(origin, format!("user delete {name}"), |m, _, at| {
            let u = m
                .user(name)
                .ok_or_else(|| Error::NoSuchUser(name.clone()))?;
            check_scim_owns(origin, u.source, format!("user '{name}'"))?;
            let mut c = Vec::new();
            if !u.is_disabled() {
                c.push(Change::DisableUser {
                    name: u.name.clone(),
                    at,
                    by: if origin.is_scim() {
                        Disabler::Scim
                    } else {
                        Disabler::Admin
                    },
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

    /// Creates a group (with initial members, which must be users).
    pub fn add_group(&self, origin: &Origin, new: NewGroup) -> Result<Group, Error> {
        let name = new.name.clone();
        let source = source_of(origin)?;
        self.mutate(origin, format!("group add {name}"), |m, _, at| {
            check_group_name_free(m, &new.name)?;
            check_users(m, &new.members)?;
            check_scim_id(m, origin, new.gid)?;
            let g = Group {
                name: new.name.clone(),
                gid: m.allocate_id(IdKind::Group, new.name.as_str(), new.gid)?,
                members: BTreeSet::new(),
                created_at: at,
                external_id: new.external_id.clone(),
                source,
            };
            let mut c = vec![Change::AddGroup(g.clone())];
            c.extend(set_members(m, &g, &new.members, source, at));
            Ok((c, ()))
        })?;
        self.group_now(&name)
    }

    /// Adds a member (an admin; a membership a sign-in or SCIM made becomes the admin's).
    pub fn add_member(
        &self,
        origin: &Origin,
        group: &GroupName,
        user: &UserName,
    ) -> Result<Group, Error> {
        let source = source_of(origin)?;
        self.mutate(
            origin,
            format!("group add-member {group} {user}"),
            |m, _, at| {
                let g = m
                    .group(group)
                    .ok_or_else(|| Error::NoSuchGroup(group.clone()))?;
                check_scim_owns(origin, g.source, format!("group '{group}'"))?;
                if m.user(user).is_none() {
                    return Err(Error::NoSuchUser(user.clone()));
                }
                if m.membership_source(group, user) == Some(source) {
                    return Ok((vec![], ()));
                }
                Ok((
                    vec![Change::AddMember {
                        group: group.clone(),
                        user: user.clone(),
                        at,
                        source,
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
                if let Some(s) = m.membership_source(group, user) {
                    check_scim_owns(origin, s, format!("{user}'s membership in '{group}'"))?;
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
    /// never change). SCIM: its own groups only, and only the memberships it made are
    /// removed (an admin's member stays whatever SCIM sends).
    pub fn update_group(
        &self,
        origin: &Origin,
        name: &GroupName,
        ops: &[MemberOp],
        external_id: Option<Option<String>>,
        gid: Option<PosixId>,
    ) -> Result<Group, Error> {
        let source = source_of(origin)?;
        self.mutate(origin, format!("group update {name}"), |m, _, at| {
            let g = m
                .group(name)
                .ok_or_else(|| Error::NoSuchGroup(name.clone()))?;
            check_scim_owns(origin, g.source, format!("group '{name}'"))?;
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
            if let Some(ext) = external_id.clone().filter(|e| *e != g.external_id) {
                c.push(Change::SetGroupExternalId {
                    name: g.name.clone(),
                    external_id: ext,
                });
            }
            c.extend(set_members(m, g, &want, source, at));
            Ok((c, ()))
        })?;
        self.group_now(name)
    }

    /// Deletes a group and its memberships; the gid stays allocated to the name. SCIM
    /// never deletes a grant: a SCIM group that holds grants is handed to the admin
    /// instead (SCIM's memberships removed, the grants and the admin's members kept).
    pub fn delete_group(&self, origin: &Origin, name: &GroupName) -> Result<(), Error> {
        self.mutate(origin, format!("group delete {name}"), |m, _, at| {
            let g = m
                .group(name)
                .ok_or_else(|| Error::NoSuchGroup(name.clone()))?;
            check_scim_owns(origin, g.source, format!("group '{name}'"))?;
            let grants: Vec<u64> = m
                .grants()
                .values()
                .filter(|gr| gr.group == g.name)
                .map(|gr| gr.id)
                .collect();
            if origin.is_scim() && !grants.is_empty() {
                let mut c: Vec<Change> = g
                    .members
                    .iter()
                    .filter(|u| m.membership_source(name, u) == Some(Source::Scim))
                    .map(|u| Change::RemoveMember {
                        group: name.clone(),
                        user: u.clone(),
                    })
                    .collect();
                c.push(Change::SetGroupSource {
                    name: name.clone(),
                    source: Source::Admin,
                });
                tracing::warn!(group = %name, grants = ?grants, "SCIM deleted a group that holds grants: its SCIM members are removed and the group is now the admin's, grants kept");
                return Ok((c, ()));
            }
            let mut c: Vec<Change> = grants
                .into_iter()
                .map(|id| Change::RemoveGrant { id, at })
                .collect();
            c.push(Change::DeleteGroup {
                name: g.name.clone(),
                at,
            });
            Ok((c, ()))
        })?;
        Ok(())
    }
}
