//! Answering one NSS question: quick refusal, then the cache, then hostd's socket.
//!
//! Owns: the decision between NOTFOUND (authoritative miss: a valid cache or hostd said
//! so), TRYAGAIN/ERANGE (buffer too small) and UNAVAIL (no valid cache and no daemon
//! answer), and the validation of socket answers before they reach the caller.
//!
//! Must never: report NOTFOUND because of a transport or cache failure, use the socket
//! for a name or id that Smith can never serve, trust a socket answer that does not
//! match the question, or add Smith's groups to a name that is in `/etc/passwd` (D4).

use crate::client::Daemon;
use crate::layout::{fill_group, fill_passwd, FillError, GroupLayout, PasswdFields, PasswdLayout};
use crate::localnames::LocalNames;
use crate::lookup::{
    self, add_gids, plausible_group_name, plausible_id, plausible_user_name, CacheAnswer, GidSink,
};
use crate::source::{coarse_now_ms, Source};
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
    pub daemon: &'static Daemon,
    /// `/etc/passwd`'s names: never given Smith's groups.
    pub local: &'static LocalNames,
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
    plausible_user_name(u.name.as_bytes())
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
    if !plausible_group_name(g.name.as_bytes()) || !plausible_id(g.gid) {
        return Outcome::Unavailable(libc::EAGAIN);
    }
    let members = || g.members.iter().map(|m| Ok(m.as_bytes()));
    from_fill(fill_group(g.name.as_bytes(), g.gid, members, buf))
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

/// `name` as a `&str` (the caller checked the name rule, which is ASCII).
fn askable(name: &[u8]) -> Option<&str> {
    std::str::from_utf8(name).ok()
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
        if !plausible_user_name(name) {
            return Outcome::NotFound;
        }
        if let Some(o) = settle(self.cache.with_view(|v| lookup::user_by_name(v, name, buf))) {
            return o;
        }
        match askable(name) {
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
        if !plausible_group_name(name) {
            return Outcome::NotFound;
        }
        if let Some(o) = settle(
            self.cache
                .with_view(|v| lookup::group_by_name(v, name, buf)),
        ) {
            return o;
        }
        match askable(name) {
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

    /// `initgroups_dyn`: adds `user`'s supplementary gids (except `skip`) to `sink`,
    /// unless `user` is a local account's name (D4: the groups are Smith's user's, and
    /// the caller is setting up the local one). Nothing reaches `sink` before that is
    /// settled (glibc's array cannot be taken back): from the cache, the check comes
    /// between finding the user and adding the gids; from the socket, the answer waits
    /// in a [`GidBuffer`].
    pub fn groups_of_user(&self, user: &[u8], skip: u32, sink: &mut impl GidSink) -> Outcome<()> {
        if !plausible_user_name(user) {
            return Outcome::NotFound;
        }
        // One clock reading for both periodic checks (the cache file's and
        // /etc/passwd's), and the index lookup's hash reused for the local-name check.
        let now = coarse_now_ms();
        let r = self.cache.with_view_at(now, |v| {
            lookup::groups_of_user(v, user, skip, &mut *sink, |hash| {
                self.local.contains_hash(now, hash)
            })
        });
        if let Some(o) = settle(r) {
            return o;
        }
        let Some(n) = askable(user) else {
            return Outcome::NotFound;
        };
        let mut gids = GidBuffer::default();
        let outcome = match self.daemon.ask(&Request::GidsOf(n.into())) {
            // Bound to the question: an answer about someone else is refused.
            Ok(Response::GidsOf { user: u, gids: g }) if u == n => match g {
                Some(g) => {
                    gids.extend(g, skip);
                    Outcome::Found(())
                }
                None => Outcome::NotFound,
            },
            Ok(Response::Error { code, .. }) => Outcome::Unavailable(error_errno(code)),
            Ok(_) => Outcome::Unavailable(libc::EAGAIN),
            Err(e) => Outcome::Unavailable(e.errno()),
        };
        match outcome {
            Outcome::Found(()) if self.local.contains(user) => Outcome::NotFound,
            Outcome::Found(()) => {
                gids.drain_into(sink);
                Outcome::Found(())
            }
            other => other,
        }
    }
}

/// The gids of one `initgroups` answer from the socket before they reach glibc's array
/// (which cannot be taken back): up to 64 on the stack.
struct GidBuffer {
    inline: [u32; 64],
    n: usize,
    more: Vec<u32>,
}

impl Default for GidBuffer {
    fn default() -> Self {
        GidBuffer {
            inline: [0; 64],
            n: 0,
            more: Vec::new(),
        }
    }
}

impl GidBuffer {
    fn extend(&mut self, gids: Vec<u32>, skip: u32) {
        add_gids(gids.into_iter(), skip, self);
    }

    fn drain_into(&self, sink: &mut impl GidSink) {
        for &g in self.inline[..self.n].iter().chain(self.more.iter()) {
            if !sink.add(g) {
                break;
            }
        }
    }
}

impl GidSink for GidBuffer {
    fn add(&mut self, gid: u32) -> bool {
        if self.inline[..self.n].contains(&gid) || self.more.contains(&gid) {
            return true;
        }
        if self.n < self.inline.len() {
            self.inline[self.n] = gid;
            self.n += 1;
        } else {
            self.more.push(gid);
        }
        true
    }
}
