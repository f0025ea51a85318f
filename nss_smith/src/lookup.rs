//! The lookup core: answers one NSS question from a validated [`CacheView`] and places
//! the entry into the caller's buffer. Pure and safe; unit-tested without glibc.
//!
//! Owns: what counts as a hit, an authoritative miss, a too-small buffer or corruption
//! for each question; the quick refusal of names and ids Smith never serves; which
//! supplementary gids a user gets.
//!
//! Must never: touch files, sockets or global state, or report a corrupt record as a
//! miss (a hiccup must never read as "no such user").

use crate::layout::{
    fill_group, fill_passwd_nul_free, FillError, GroupLayout, PasswdFields, PasswdLayout,
};
use smith_proto::cache::{name_hash, CacheView, GroupEntry, UserEntry};
use smith_proto::ids::is_allowed_id;
use smith_proto::names::{is_cache_group_name, is_user_name};

/// The answer of the cache to one question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheAnswer<T> {
    Found(T),
    /// Authoritative: the cache is valid and does not hold the entry.
    Missing,
    /// The caller's buffer is too small.
    TooSmall,
    /// The record is corrupt: treat the cache as unavailable for this question.
    Corrupt,
}

/// Whether `name` could be a Smith user: the full `smith_proto::UserName` rule,
/// reserved names included (`root` is never looked up), without allocating. Anything
/// else is answered "not found" without a lookup. A record found by this name has this
/// name, so by-name answers need no second check (D17).
pub fn plausible_user_name(name: &[u8]) -> bool {
    is_user_name(name)
}

/// Whether `name` could be a Smith group: a valid group name or one of the groups hostd
/// synthesizes (`smith-sudo`, `smith-cmd-*`).
pub fn plausible_group_name(name: &[u8]) -> bool {
    is_cache_group_name(name)
}

/// Whether `id` could be a Smith uid/gid (never 0 or a system/reserved id).
pub fn plausible_id(id: u32) -> bool {
    is_allowed_id(id)
}

fn place_user(u: &UserEntry<'_>, buf: &mut [u8]) -> CacheAnswer<PasswdLayout> {
    // A record without a valid level is corrupt; every Smith reader refuses it. The
    // view refused one with a forbidden id or a NUL in a string (`UserEntry`'s
    // guarantees), so neither is tested again here.
    if u.level.is_none() || u.uid != u.gid {
        return CacheAnswer::Corrupt;
    }
    let f = PasswdFields {
        name: u.name,
        uid: u.uid,
        gid: u.gid,
        gecos: u.gecos,
        dir: u.dir,
        shell: u.shell,
    };
    match fill_passwd_nul_free(&f, buf) {
        Ok(l) => CacheAnswer::Found(l),
        Err(FillError::TooSmall) => CacheAnswer::TooSmall,
        Err(FillError::Corrupt) => CacheAnswer::Corrupt,
    }
}

fn place_group(g: &GroupEntry<'_>, buf: &mut [u8]) -> CacheAnswer<GroupLayout> {
    let members = g.members;
    match fill_group(g.name, g.gid, || members.iter(), buf) {
        Ok(l) => CacheAnswer::Found(l),
        Err(FillError::TooSmall) => CacheAnswer::TooSmall,
        Err(FillError::Corrupt) => CacheAnswer::Corrupt,
    }
}

fn user_answer(
    r: Result<Option<UserEntry<'_>>, smith_proto::cache::CacheError>,
    buf: &mut [u8],
) -> CacheAnswer<PasswdLayout> {
    match r {
        Ok(Some(u)) => place_user(&u, buf),
        Ok(None) => CacheAnswer::Missing,
        Err(_) => CacheAnswer::Corrupt,
    }
}

fn group_answer(
    r: Result<Option<GroupEntry<'_>>, smith_proto::cache::CacheError>,
    buf: &mut [u8],
) -> CacheAnswer<GroupLayout> {
    match r {
        Ok(Some(g)) if plausible_id(g.gid) => place_group(&g, buf),
        Ok(Some(_)) => CacheAnswer::Corrupt,
        Ok(None) => CacheAnswer::Missing,
        Err(_) => CacheAnswer::Corrupt,
    }
}

/// `getpwnam`: the caller has checked [`plausible_user_name`].
pub fn user_by_name(v: &CacheView<'_>, name: &[u8], buf: &mut [u8]) -> CacheAnswer<PasswdLayout> {
    user_answer(v.user_by_name(name), buf)
}

/// A record reached by id or by position carries a name nobody asked for: it must pass
/// the name rule before it is handed out (D17: a file not written by `cache::build`
/// could hold `root`). Checked where the record lies, without moving it (a moved
/// `UserEntry` cost a copy per lookup).
fn named_user_answer(
    r: Result<Option<UserEntry<'_>>, smith_proto::cache::CacheError>,
    buf: &mut [u8],
) -> CacheAnswer<PasswdLayout> {
    match &r {
        Ok(Some(u)) if is_user_name(u.name) => place_user(u, buf),
        Ok(Some(_)) | Err(_) => CacheAnswer::Corrupt,
        Ok(None) => CacheAnswer::Missing,
    }
}

fn named_group_answer(
    r: Result<Option<GroupEntry<'_>>, smith_proto::cache::CacheError>,
    buf: &mut [u8],
) -> CacheAnswer<GroupLayout> {
    match &r {
        Ok(Some(g)) if is_cache_group_name(g.name) && plausible_id(g.gid) => place_group(g, buf),
        Ok(Some(_)) | Err(_) => CacheAnswer::Corrupt,
        Ok(None) => CacheAnswer::Missing,
    }
}

/// `getpwuid`: the caller has checked [`plausible_id`].
pub fn user_by_uid(v: &CacheView<'_>, uid: u32, buf: &mut [u8]) -> CacheAnswer<PasswdLayout> {
    named_user_answer(v.user_by_uid(uid), buf)
}

/// `getgrnam`: explicit groups, then users' private groups.
pub fn group_by_name(v: &CacheView<'_>, name: &[u8], buf: &mut [u8]) -> CacheAnswer<GroupLayout> {
    group_answer(v.group_by_name(name), buf)
}

/// `getgrgid`: explicit groups, then users' private groups (gid == uid).
pub fn group_by_gid(v: &CacheView<'_>, gid: u32, buf: &mut [u8]) -> CacheAnswer<GroupLayout> {
    named_group_answer(v.group_by_gid(gid), buf)
}

/// Enumeration: user number `i`; `Missing` past the end.
pub fn user_at(v: &CacheView<'_>, i: u64, buf: &mut [u8]) -> CacheAnswer<PasswdLayout> {
    if i >= v.n_users() as u64 {
        return CacheAnswer::Missing;
    }
    named_user_answer(v.user(i as u32).map(Some), buf)
}

/// Enumeration: group number `i` (explicit groups, then private groups); `Missing`
/// past the end.
pub fn group_at(v: &CacheView<'_>, i: u64, buf: &mut [u8]) -> CacheAnswer<GroupLayout> {
    if i >= v.n_groups_with_private() {
        return CacheAnswer::Missing;
    }
    named_group_answer(v.group_enum(i).map(Some), buf)
}

/// Where `initgroups_dyn` puts gids (glibc's growable array, or a Vec in tests).
pub trait GidSink {
    /// Adds `gid` unless already present. `false`: the caller's limit is reached or
    /// memory ran out; stop adding.
    fn add(&mut self, gid: u32) -> bool;
}

impl GidSink for Vec<u32> {
    fn add(&mut self, gid: u32) -> bool {
        if !self.contains(&gid) {
            self.push(gid);
        }
        true
    }
}

/// Supplementary groups of `name`, except `skip` (the primary gid glibc adds itself).
/// Gids Smith may never hand out (0, system and reserved ranges) are dropped even if a
/// cache contains them: a corrupt file must not put anyone in `root` or `sudo`.
///
/// `is_local` is asked, with `name`'s [`name_hash`] (the index lookup's own, not
/// computed twice), once the cache holds `name` as a valid user, before any gid
/// reaches `sink`: `true` (a local account has that name, D4) answers `Missing` and
/// adds nothing.
pub fn groups_of_user(
    v: &CacheView<'_>,
    name: &[u8],
    skip: u32,
    sink: &mut impl GidSink,
    is_local: impl FnOnce(u64) -> bool,
) -> CacheAnswer<()> {
    let hash = name_hash(name);
    let u = match v.user_by_name_hashed(name, hash) {
        Ok(Some(u)) => u,
        Ok(None) => return CacheAnswer::Missing,
        Err(_) => return CacheAnswer::Corrupt,
    };
    if u.level.is_none() {
        return CacheAnswer::Corrupt;
    }
    if is_local(hash) {
        return CacheAnswer::Missing;
    }
    add_gids(u.gids.iter(), skip, sink);
    CacheAnswer::Found(())
}

/// Shared by the cache and the socket path.
pub fn add_gids(gids: impl Iterator<Item = u32>, skip: u32, sink: &mut impl GidSink) {
    for g in gids {
        if g == skip || !plausible_id(g) {
            continue;
        }
        if !sink.add(g) {
            break;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use smith_proto::cache::{build, CacheContents, CacheGroup, CacheUser};
    use smith_proto::Level;

    pub(crate) fn contents() -> CacheContents {
        let user = |name: &str, uid: u32, level, gids: Vec<u32>| CacheUser {
            name: name.into(),
            uid,
            gid: uid,
            gecos: format!("{name} gecos"),
            dir: format!("/home/{name}"),
            shell: "/bin/bash".into(),
            level,
            gids,
        };
        CacheContents {
            host_name: "web-1".into(),
            host_tags: "env=prod,role=web".into(),
            generation: 1,
            snapshot_version: 1,
            written_at: 1_700_000_000,
            sudo_gid: 200_000,
            users: vec![
                user("alice", 200_001, Level::Ssh, vec![200_010]),
                user(
                    "oscar",
                    200_002,
                    Level::Sudo,
                    vec![200_011, 200_000, 200_010],
                ),
            ],
            groups: vec![
                CacheGroup {
                    name: "dev".into(),
                    gid: 200_010,
                    members: vec!["alice".into(), "oscar".into()],
                },
                CacheGroup {
                    name: "ops".into(),
                    gid: 200_011,
                    members: vec!["oscar".into()],
                },
                CacheGroup {
                    name: "smith-sudo".into(),
                    gid: 200_000,
                    members: vec!["oscar".into()],
                },
            ],
        }
    }

    fn cstr(buf: &[u8], off: usize) -> &[u8] {
        let end = buf[off..].iter().position(|&b| b == 0).unwrap();
        &buf[off..off + end]
    }

    #[test]
    fn plausible_names_match_the_username_rule() {
        for n in ["alice", "_x", "a-b_c9", &"a".repeat(32)] {
            assert!(plausible_user_name(n.as_bytes()), "{n}");
            assert!(plausible_group_name(n.as_bytes()), "{n}");
        }
        // Smith's synthesized groups are groups, never users; reserved names are neither.
        assert!(plausible_group_name(b"smith-sudo"));
        assert!(!plausible_user_name(b"smith-sudo"));
        for n in ["root", "nobody", "sudo", "docker"] {
            assert!(!plausible_user_name(n.as_bytes()), "{n}");
            assert!(!plausible_group_name(n.as_bytes()), "{n}");
        }
        for n in [
            "",
            "Alice",
            "1a",
            "-a",
            "a b",
            "a:b",
            "a/b",
            "é",
            &"a".repeat(33),
        ] {
            assert!(!plausible_user_name(n.as_bytes()), "{n:?}");
        }
        for n in ["alice", "bob-1", "_svc", "u00001"] {
            assert!(smith_proto::UserName::new(n).is_ok());
            assert!(plausible_user_name(n.as_bytes()));
        }
        for id in [0, 1, 999, 60000, 65534, 65535, u32::MAX] {
            assert!(!plausible_id(id), "{id}");
        }
        assert!(plausible_id(200_001));
    }

    #[test]
    fn users_groups_and_private_groups() {
        let bytes = build(&contents()).unwrap();
        let v = CacheView::parse(&bytes).unwrap();
        let mut buf = vec![0u8; 1024];
        let CacheAnswer::Found(l) = user_by_name(&v, b"alice", &mut buf) else {
            panic!()
        };
        assert_eq!(cstr(&buf, l.dir), b"/home/alice");
        assert_eq!(l.uid, 200_001);
        assert_eq!(user_by_name(&v, b"bob", &mut buf), CacheAnswer::Missing);
        assert!(
            matches!(user_by_uid(&v, 200_002, &mut buf), CacheAnswer::Found(l) if l.uid == 200_002)
        );
        assert_eq!(user_by_uid(&v, 200_003, &mut buf), CacheAnswer::Missing);

        let CacheAnswer::Found(g) = group_by_name(&v, b"dev", &mut buf) else {
            panic!()
        };
        assert_eq!((g.gid, g.n_members), (200_010, 2));
        let CacheAnswer::Found(g) = group_by_name(&v, b"alice", &mut buf) else {
            panic!()
        };
        assert_eq!((g.gid, g.n_members), (200_001, 0), "private group");
        assert!(
            matches!(group_by_gid(&v, 200_002, &mut buf), CacheAnswer::Found(g) if cstr(&buf, g.name) == b"oscar")
        );
        assert!(
            matches!(group_by_name(&v, b"smith-sudo", &mut buf), CacheAnswer::Found(g) if g.n_members == 1)
        );
        assert_eq!(group_by_gid(&v, 200_099, &mut buf), CacheAnswer::Missing);
        assert_eq!(
            user_by_name(&v, b"alice", &mut buf[..5]),
            CacheAnswer::TooSmall
        );
        assert_eq!(
            group_by_name(&v, b"dev", &mut buf[..5]),
            CacheAnswer::TooSmall
        );
    }

    /// The cache path places a record's strings without scanning them for NUL again
    /// (`fill_passwd_nul_free`): the view must refuse a record with a NUL in any of
    /// them, by name, by uid and by position, or the C string would end early.
    #[test]
    fn a_nul_in_any_string_of_a_record_is_corrupt_on_every_path() {
        let good = build(&contents()).unwrap();
        let find = |b: &[u8], s: &[u8]| b.windows(s.len()).position(|w| w == s).unwrap();
        let gecos = find(&good, b"alice gecos");
        let dir = find(&good, b"/home/alice");
        let shell = dir + find(&good[dir..], b"/bin/bash");
        let mut buf = vec![0u8; 1024];
        for (field, at) in [("gecos", gecos + 2), ("dir", dir + 3), ("shell", shell + 4)] {
            let mut b = good.clone();
            b[at] = 0;
            let v = CacheView::parse(&b).unwrap();
            assert_eq!(
                user_by_name(&v, b"alice", &mut buf),
                CacheAnswer::Corrupt,
                "{field}"
            );
            assert_eq!(
                user_by_uid(&v, 200_001, &mut buf),
                CacheAnswer::Corrupt,
                "{field}"
            );
            assert_eq!(user_at(&v, 0, &mut buf), CacheAnswer::Corrupt, "{field}");
        }
        // In the name: refused on every path (by name, the index still leads to it).
        let mut b = good.clone();
        b[gecos - 2] = 0; // the name "alice" ends just before its gecos
        let v = CacheView::parse(&b).unwrap();
        assert_eq!(user_by_uid(&v, 200_001, &mut buf), CacheAnswer::Corrupt);
        assert_eq!(user_at(&v, 0, &mut buf), CacheAnswer::Corrupt);
        assert_eq!(user_by_name(&v, b"alice", &mut buf), CacheAnswer::Corrupt);
    }

    #[test]
    fn enumeration_covers_everything_once() {
        let bytes = build(&contents()).unwrap();
        let v = CacheView::parse(&bytes).unwrap();
        let mut buf = vec![0u8; 1024];
        let mut names = Vec::new();
        for i in 0.. {
            match user_at(&v, i, &mut buf) {
                CacheAnswer::Found(l) => names.push(cstr(&buf, l.name).to_vec()),
                CacheAnswer::Missing => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(names, vec![b"alice".to_vec(), b"oscar".to_vec()]);
        let mut groups = Vec::new();
        for i in 0.. {
            match group_at(&v, i, &mut buf) {
                CacheAnswer::Found(l) => {
                    groups.push(String::from_utf8(cstr(&buf, l.name).to_vec()).unwrap())
                }
                CacheAnswer::Missing => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(groups, ["dev", "ops", "smith-sudo", "alice", "oscar"]);
    }

    #[test]
    fn supplementary_groups_skip_primary_and_forbidden_ids() {
        let mut c = contents();
        c.users[1].gids = vec![200_011, 200_000, 0, 27, 200_002, 200_011];
        let bytes = build(&c).unwrap();
        let v = CacheView::parse(&bytes).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            groups_of_user(&v, b"oscar", 200_002, &mut out, |_| false),
            CacheAnswer::Found(())
        );
        assert_eq!(
            out,
            vec![200_011, 200_000],
            "no 0, no 27 (sudo), no primary, no dup"
        );
        let mut out = Vec::new();
        assert_eq!(
            groups_of_user(&v, b"nobody-here", 1, &mut out, |_| panic!(
                "asked for a miss"
            )),
            CacheAnswer::Missing
        );
        assert!(out.is_empty());
    }

    /// D4: a local account with a Smith user's name gets nothing, and the sink (glibc's
    /// array, which cannot be taken back) is never touched.
    #[test]
    fn a_local_name_gets_no_groups_and_the_sink_is_untouched() {
        let bytes = build(&contents()).unwrap();
        let v = CacheView::parse(&bytes).unwrap();
        let mut out = vec![1234];
        assert_eq!(
            groups_of_user(&v, b"oscar", 200_002, &mut out, |h| {
                assert_eq!(h, name_hash(b"oscar"), "the name's own hash");
                true
            }),
            CacheAnswer::Missing
        );
        assert_eq!(out, vec![1234]);
    }

    struct Limited(Vec<u32>, usize);
    impl GidSink for Limited {
        fn add(&mut self, gid: u32) -> bool {
            if self.0.len() == self.1 {
                return false;
            }
            self.0.push(gid);
            true
        }
    }

    #[test]
    fn sink_limit_stops_adding() {
        let mut s = Limited(Vec::new(), 1);
        add_gids([200_010, 200_011].into_iter(), 0, &mut s);
        assert_eq!(s.0, vec![200_010]);
    }

    #[test]
    fn hostile_cache_never_panics_in_lookups() {
        let bytes = build(&contents()).unwrap();
        let mut buf = vec![0u8; 4096];
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                if let Ok(v) = CacheView::parse(&b) {
                    let _ = user_by_name(&v, b"alice", &mut buf);
                    let _ = user_by_uid(&v, 200_002, &mut buf);
                    let _ = group_by_name(&v, b"dev", &mut buf);
                    let _ = group_by_gid(&v, 200_010, &mut buf);
                    let _ = groups_of_user(&v, b"oscar", 0, &mut Vec::new(), |_| false);
                    for k in 0..8 {
                        let _ = user_at(&v, k, &mut buf);
                        let _ = group_at(&v, k, &mut buf);
                    }
                }
            }
        }
    }
}
