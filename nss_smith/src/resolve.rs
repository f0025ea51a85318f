//! Answering one NSS question: quick refusal, then the cache, then hostd's socket.
//!
//! Owns: the decision between NOTFOUND (authoritative miss: a valid cache or hostd said
//! so), TRYAGAIN/ERANGE (buffer too small) and UNAVAIL (no valid cache and no daemon
//! answer), and the validation of socket answers before they reach the caller.
//!
//! Must never: report NOTFOUND because of a transport or cache failure, use the socket
//! for a name or id that Smith can never serve, or trust a socket answer that does not
//! match the question.

use crate::client::Client;
use crate::layout::{fill_group, fill_passwd, FillError, GroupLayout, PasswdFields, PasswdLayout};
use crate::lookup::{self, add_gids, plausible_id, plausible_name, CacheAnswer, GidSink};
use crate::source::Source;
use smith_proto::names::{GroupName, UserName, SUDO_GROUP};
use smith_proto::wire::{ErrorCode, Request, Response, WireGroup, WireUser};
use smith_proto::Level;

/// The result of one question, before it becomes an `nss_status` and an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<T> {
    Found(T),
    /// Authoritative miss (errno ENOENT).
    NotFound,
    /// Buffer too small (TRYAGAIN + ERANGE).
    TooSmall,
    /// No answer possible (UNAVAIL + this errno).
    Unavailable(i32),
}

/// Where answers come from: a cache file and a daemon socket.
pub struct Resolver {
    pub cache: &'static Source,
    pub daemon: &'static Client,
}

fn from_fill<T>(r: Result<T, FillError>) -> Outcome<T> {
    match r {
        Ok(l) => Outcome::Found(l),
        Err(FillError::TooSmall) => Outcome::TooSmall,
        // The daemon sent something that cannot be a passwd/group entry.
        Err(FillError::Corrupt) => Outcome::Unavailable(libc::EAGAIN),
    }
}

fn error_errno(code: ErrorCode) -> i32 {
    match code {
        // hostd has no snapshot yet.
        ErrorCode::Unavailable => libc::ENOENT,
        _ => libc::EAGAIN,
    }
}

fn valid_wire_user(u: &WireUser) -> bool {
    plausible_name(u.name.as_bytes())
        && plausible_id(u.uid)
        && u.uid == u.gid
        && Level::from_u8(u.level).is_some()
}

fn place_wire_user(u: &WireUser, buf: &mut [u8]) -> Outcome<PasswdLayout> {
    let f = PasswdFields {
        name: u.name.as_bytes(),
        uid: u.uid,
        gid: u.gid,
        gecos: u.gecos.as_bytes(),
        dir: u.dir.as_bytes(),
        shell: u.shell.as_bytes(),
    };
    from_fill(fill_passwd(&f, buf))
}

fn place_wire_group(g: &WireGroup, buf: &mut [u8]) -> Outcome<GroupLayout> {
    if !plausible_name(g.name.as_bytes()) || !plausible_id(g.gid) {
        return Outcome::Unavailable(libc::EAGAIN);
    }
    let members = || g.members.iter().map(|m| Ok(m.as_bytes()));
    from_fill(fill_group(g.name.as_bytes(), g.gid, members, buf))
}

/// Whether a group name may be asked of the daemon: a valid group name, or Smith's own
/// `smith-sudo`.
fn askable_group(name: &str) -> bool {
    GroupName::new(name).is_ok() || name == SUDO_GROUP
}

/// What the cache said: a final outcome, or `None` to ask the daemon.
fn settle<T>(r: Result<CacheAnswer<T>, crate::source::Unavailable>) -> Option<Outcome<T>> {
    match r {
        Ok(CacheAnswer::Found(t)) => Some(Outcome::Found(t)),
        Ok(CacheAnswer::Missing) => Some(Outcome::NotFound),
        Ok(CacheAnswer::TooSmall) => Some(Outcome::TooSmall),
        Ok(CacheAnswer::Corrupt) | Err(_) => None,
    }
}

/// `name` as a `&str` if it passes `rule` (checked before bothering the daemon).
fn askable(name: &[u8], rule: impl Fn(&str) -> bool) -> Option<&str> {
    std::str::from_utf8(name).ok().filter(|n| rule(n))
}

fn user_rule(n: &str) -> bool {
    UserName::new(n).is_ok()
}

impl Resolver {
    fn ask_user(
        &self,
        req: Request,
        matches: impl Fn(&WireUser) -> bool,
        buf: &mut [u8],
    ) -> Outcome<PasswdLayout> {
        match self.daemon.ask(&req) {
            Ok(Response::User(Some(u))) if valid_wire_user(&u) && matches(&u) => {
                place_wire_user(&u, buf)
            }
            Ok(Response::User(None)) => Outcome::NotFound,
            Ok(Response::Error { code, .. }) => Outcome::Unavailable(error_errno(code)),
            Ok(_) => Outcome::Unavailable(libc::EAGAIN),
            Err(e) => Outcome::Unavailable(e.errno()),
        }
    }

    fn ask_group(
        &self,
        req: Request,
        matches: impl Fn(&WireGroup) -> bool,
        buf: &mut [u8],
    ) -> Outcome<GroupLayout> {
        match self.daemon.ask(&req) {
            Ok(Response::Group(Some(g))) if matches(&g) => place_wire_group(&g, buf),
            Ok(Response::Group(None)) => Outcome::NotFound,
            Ok(Response::Error { code, .. }) => Outcome::Unavailable(error_errno(code)),
            Ok(_) => Outcome::Unavailable(libc::EAGAIN),
            Err(e) => Outcome::Unavailable(e.errno()),
        }
    }

    pub fn passwd_by_name(&self, name: &[u8], buf: &mut [u8]) -> Outcome<PasswdLayout> {
        if !plausible_name(name) {
            return Outcome::NotFound;
        }
        if let Some(o) = settle(self.cache.with_view(|v| lookup::user_by_name(v, name, buf))) {
            return o;
        }
        match askable(name, user_rule) {
            Some(n) => self.ask_user(Request::UserByName(n.into()), |u| u.name == n, buf),
            None => Outcome::NotFound,
        }
    }

    pub fn passwd_by_uid(&self, uid: u32, buf: &mut [u8]) -> Outcome<PasswdLayout> {
        if !plausible_id(uid) {
            return Outcome::NotFound;
        }
        if let Some(o) = settle(self.cache.with_view(|v| lookup::user_by_uid(v, uid, buf))) {
            return o;
        }
        self.ask_user(Request::UserByUid(uid), |u| u.uid == uid, buf)
    }

    pub fn group_by_name(&self, name: &[u8], buf: &mut [u8]) -> Outcome<GroupLayout> {
        if !plausible_name(name) {
            return Outcome::NotFound;
        }
        if let Some(o) = settle(
            self.cache
                .with_view(|v| lookup::group_by_name(v, name, buf)),
        ) {
            return o;
        }
        match askable(name, askable_group) {
            Some(n) => self.ask_group(Request::GroupByName(n.into()), |g| g.name == n, buf),
            None => Outcome::NotFound,
        }
    }

    pub fn group_by_gid(&self, gid: u32, buf: &mut [u8]) -> Outcome<GroupLayout> {
        if !plausible_id(gid) {
            return Outcome::NotFound;
        }
        if let Some(o) = settle(self.cache.with_view(|v| lookup::group_by_gid(v, gid, buf))) {
            return o;
        }
        self.ask_group(Request::GroupByGid(gid), |g| g.gid == gid, buf)
    }

    /// `initgroups_dyn`: adds `user`'s supplementary gids (except `skip`) to `sink`.
    pub fn groups_of_user(&self, user: &[u8], skip: u32, sink: &mut impl GidSink) -> Outcome<()> {
        if !plausible_name(user) {
            return Outcome::NotFound;
        }
        let r = self
            .cache
            .with_view(|v| lookup::groups_of_user(v, user, skip, sink));
        if let Some(o) = settle(r) {
            return o;
        }
        let Some(n) = askable(user, user_rule) else {
            return Outcome::NotFound;
        };
        match self.daemon.ask(&Request::GroupsOfUser(n.into())) {
            Ok(Response::Gids(Some(gids))) => {
                add_gids(gids.into_iter(), skip, sink);
                Outcome::Found(())
            }
            Ok(Response::Gids(None)) => Outcome::NotFound,
            Ok(Response::Error { code, .. }) => Outcome::Unavailable(error_errno(code)),
            Ok(_) => Outcome::Unavailable(libc::EAGAIN),
            Err(e) => Outcome::Unavailable(e.errno()),
        }
    }
}
