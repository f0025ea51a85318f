//! Who the PAM user is, as far as Smith is concerned: a local account (never touched),
//! a Smith user (with its level and the host's tags, from the cache file), someone Smith
//! does not know, or "cannot tell" (no valid cache).
//!
//! Owns: the answer "is this user local?" (`/etc/passwd` read directly with the shared
//! `smith_proto::local` parser — never `getpwnam`, which would go through NSS and
//! nss_smith — once per module call; an unreadable file means local, as in hostd: D8)
//! and reading the cache file with the shared loader `smith_proto::cachefile::load`
//! (the same checks as nss_smith: `O_NONBLOCK` open, root-owned, not writable by others,
//! size-bounded, read once, validated once: D15).
//!
//! When the cache cannot be used (missing, damaged, truncated: issue 18's fault matrix
//! found a damaged cache refusing every Smith user until hostd's next rewrite), hostd is
//! asked over its socket within [`LOOKUP_BUDGET_MS`] (`UserByName`, answered from the
//! snapshot it serves; the peer must be root), as nss_smith does.
//!
//! Must never: classify a user as "not Smith" because the cache could not be read and
//! hostd did not answer (that is [`Identity::Unavailable`], and callers deny), treat a
//! user as non-local because the passwd file could not be read, or follow NSS.

use smith_proto::cache::CacheView;
use smith_proto::local::Presence;
use smith_proto::wire::{Request, Response};
use smith_proto::{Level, Tags, UserName};
use std::path::Path;

/// Budget for asking hostd about a user when the cache cannot be used (nss_smith's).
pub const LOOKUP_BUDGET_MS: u64 = 300;

/// A Smith user as the cache describes it on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmithUser {
    pub name: UserName,
    pub uid: u32,
    pub gid: u32,
    pub dir: String,
    pub level: Level,
    /// This host's tags (from the cache header).
    pub host_tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// In `/etc/passwd`: Smith never has a say.
    Local,
    /// Not a valid Smith name, or not in the (valid) cache.
    NotSmith,
    Smith(SmithUser),
    /// No valid cache: the reason, for the log.
    Unavailable(String),
}

/// Whether `user` is a local account per the passwd file at `path`.
pub fn local_presence(path: &Path, user: &[u8]) -> Presence {
    smith_proto::local::find(path, user)
}

/// Reads and validates the cache file (the loader nss_smith uses).
pub fn read_cache(path: &Path) -> Result<Box<[u8]>, String> {
    match smith_proto::cachefile::load(path, None) {
        Ok((bytes, _)) => Ok(bytes),
        Err(smith_proto::cachefile::LoadError::Io(e)) if e == libc::ENOENT => Err(format!(
            "the Smith cache {} does not exist (is smith-hostd running?)",
            path.display()
        )),
        Err(e) => Err(format!("the Smith cache {}: {e}", path.display())),
    }
}

/// Finds `user` in a parsed cache.
pub fn lookup(view: &CacheView<'_>, user: &UserName) -> Identity {
    let u = match view.user_by_name(user.as_str().as_bytes()) {
        Ok(Some(u)) => u,
        Ok(None) => return Identity::NotSmith,
        Err(e) => return Identity::Unavailable(format!("cache entry for {user} is corrupt: {e}")),
    };
    let Some(level) = u.level else {
        return Identity::Unavailable(format!("cache entry for {user} has no valid level"));
    };
    let host_tags = match std::str::from_utf8(view.host_tags()).map(Tags::parse) {
        Ok(Ok(t)) => t,
        _ => return Identity::Unavailable("the cache's host tags are malformed".into()),
    };
    Identity::Smith(SmithUser {
        name: user.clone(),
        uid: u.uid,
        gid: u.gid,
        dir: String::from_utf8_lossy(u.dir).into_owned(),
        level,
        host_tags,
    })
}

/// Classifies the PAM user whose local presence was already read (stage 1 of every
/// entry point): the passwd file is not read again, the cache once; hostd's socket
/// only when the cache cannot be used.
pub fn classify_known(local: Presence, cache: &Path, socket: &Path, user: &[u8]) -> Identity {
    if local.is_local() {
        return Identity::Local;
    }
    let Some(name) = std::str::from_utf8(user)
        .ok()
        .and_then(|s| UserName::new(s).ok())
    else {
        return Identity::NotSmith;
    };
    let from_cache = match read_cache(cache) {
        Ok(bytes) => match CacheView::parse(&bytes) {
            Ok(v) => lookup(&v, &name),
            Err(e) => Identity::Unavailable(format!("the Smith cache {}: {e}", cache.display())),
        },
        Err(e) => Identity::Unavailable(e),
    };
    match from_cache {
        Identity::Unavailable(why) => ask_hostd(socket, &name, why),
        id => id,
    }
}

/// The cache could not be used (`why`): hostd's answer from the snapshot it serves.
fn ask_hostd(socket: &Path, name: &UserName, why: String) -> Identity {
    let req = Request::UserByName(name.as_str().to_string());
    match smith_proto::client::exchange(socket, &req, LOOKUP_BUDGET_MS) {
        Ok(Response::User(None)) => Identity::NotSmith,
        Ok(Response::User(Some(u))) if u.name == name.as_str() => match Level::from_u8(u.level) {
            Some(level) => Identity::Smith(SmithUser {
                name: name.clone(),
                uid: u.uid,
                gid: u.gid,
                dir: u.dir,
                level,
                // Not on the wire; nothing decides by it.
                host_tags: Tags::new(),
            }),
            None => Identity::Unavailable(format!("{why}; hostd gave no valid level for {name}")),
        },
        Ok(other) => Identity::Unavailable(format!("{why}; hostd answered {other:?}")),
        Err(e) => Identity::Unavailable(format!("{why}; hostd did not answer: {e}")),
    }
}

/// Classifies the PAM user (reads the passwd file, then the cache, then asks hostd if
/// the cache cannot be used).
pub fn classify(passwd: &Path, cache: &Path, socket: &Path, user: &[u8]) -> Identity {
    classify_known(local_presence(passwd, user), cache, socket, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_accounts_are_found_by_exact_name() {
        let d = crate::test_dir("passwd");
        let p = d.join("passwd");
        std::fs::write(
            &p,
            "root:x:0:0:root:/root:/bin/bash\ndeploy:x:1000:1000::/home/deploy:/bin/sh\n\nbroken\n",
        )
        .unwrap();
        assert_eq!(local_presence(&p, b"root"), Presence::Present);
        assert_eq!(local_presence(&p, b"deploy"), Presence::Present);
        assert_eq!(local_presence(&p, b"dep"), Presence::Absent);
        // One rule set with hostd: a line without ':' still reserves its name.
        assert_eq!(local_presence(&p, b"broken"), Presence::Present);
        assert_eq!(local_presence(&p, b""), Presence::Absent);
        assert_eq!(
            local_presence(&d.join("missing"), b"root"),
            Presence::Absent
        );
    }

    /// D8 (review experiment E6): the passwd file cannot be read, no cache, a local
    /// name. Before, `classify` answered `Unavailable` and the account phase refused the
    /// local user with PAM_AUTHINFO_UNAVAIL; now "on doubt, local", like hostd.
    #[test]
    fn unreadable_passwd_means_local() {
        let d = crate::test_dir("passwd-unreadable");
        let dir_not_file = d.join("passwd");
        std::fs::create_dir_all(&dir_not_file).unwrap();
        assert_eq!(
            classify(
                &dir_not_file,
                &d.join("no-cache"),
                &d.join("no-socket"),
                b"deploy"
            ),
            Identity::Local
        );
    }

    #[test]
    fn classify_smith_and_unknown_users() {
        let bytes = smith_proto::cache::build(&crate::tests::contents()).unwrap();
        let v = CacheView::parse(&bytes).unwrap();
        match lookup(&v, &UserName::new("oscar").unwrap()) {
            Identity::Smith(u) => {
                assert_eq!((u.uid, u.level), (200_002, Level::Sudo));
                assert_eq!(u.host_tags.to_string(), "env=prod,role=web");
                assert_eq!(u.dir, "/home/oscar");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            lookup(&v, &UserName::new("bob").unwrap()),
            Identity::NotSmith
        );
    }

    #[test]
    fn unreadable_or_untrusted_cache_is_unavailable() {
        let d = crate::test_dir("classify");
        let passwd = d.join("passwd");
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\n").unwrap();
        let cache = d.join("nss.cache");
        let sock = d.join("no-hostd.sock");
        assert_eq!(classify(&passwd, &cache, &sock, b"root"), Identity::Local);
        assert!(matches!(
            classify(&passwd, &cache, &sock, b"alice"),
            Identity::Unavailable(_)
        ));
        assert_eq!(
            classify(&passwd, &cache, &sock, b"Not Valid"),
            Identity::NotSmith
        );
        std::fs::write(&cache, b"garbage").unwrap();
        assert!(matches!(
            classify(&passwd, &cache, &sock, b"alice"),
            Identity::Unavailable(_)
        ));
        let bytes = smith_proto::cache::build(&crate::tests::contents()).unwrap();
        std::fs::write(&cache, &bytes[..bytes.len() - 3]).unwrap();
        assert!(matches!(
            classify(&passwd, &cache, &sock, b"alice"),
            Identity::Unavailable(_)
        ));
        std::fs::write(&cache, &bytes).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o644)).unwrap();
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(matches!(
                classify(&passwd, &cache, &sock, b"alice"),
                Identity::Smith(_)
            ));
            assert_eq!(classify(&passwd, &cache, &sock, b"bob"), Identity::NotSmith);
            std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o666)).unwrap();
            assert!(matches!(
                classify(&passwd, &cache, &sock, b"alice"),
                Identity::Unavailable(_)
            ));
        }
    }

    /// Issue 18 (the fault matrix: the cache damaged while hostd runs): the account phase
    /// refused every Smith user (`PAM_AUTHINFO_UNAVAIL`) until hostd next rewrote the
    /// cache. Now hostd is asked, and its answer (a user or an authoritative miss) is
    /// taken; without an answer it stays "cannot tell".
    #[test]
    fn a_damaged_cache_falls_back_to_hostd() {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // the socket client accepts only a root peer
        }
        use smith_proto::wire::{self, WireUser};
        let d = crate::test_dir("classify-fallback");
        let passwd = d.join("passwd");
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\n").unwrap();
        let cache = d.join("nss.cache");
        let bytes = smith_proto::cache::build(&crate::tests::contents()).unwrap();
        std::fs::write(&cache, &bytes[..bytes.len() * 3 / 4]).unwrap();
        let sock = d.join("hostd.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let hostd = std::thread::spawn(move || {
            let mut asked = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = l.accept().unwrap();
                let req = Request::decode(&wire::read_frame(&mut s).unwrap()).unwrap();
                let answer = match &req {
                    Request::UserByName(n) if n == "alice" => Response::User(Some(WireUser {
                        name: "alice".into(),
                        uid: 200_001,
                        gid: 200_001,
                        gecos: String::new(),
                        dir: "/home/alice".into(),
                        shell: "/bin/bash".into(),
                        level: 1,
                    })),
                    _ => Response::User(None),
                };
                wire::write_frame(&mut s, &answer.encode()).unwrap();
                asked.push(req);
            }
            asked
        });
        match classify(&passwd, &cache, &sock, b"alice") {
            Identity::Smith(u) => {
                assert_eq!(
                    (u.uid, u.level, u.dir.as_str()),
                    (200_001, Level::Ssh, "/home/alice")
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(classify(&passwd, &cache, &sock, b"bob"), Identity::NotSmith);
        assert_eq!(
            hostd.join().unwrap(),
            vec![
                Request::UserByName("alice".into()),
                Request::UserByName("bob".into())
            ]
        );
        // Local users are never asked about; nobody answering means "cannot tell".
        assert_eq!(classify(&passwd, &cache, &sock, b"root"), Identity::Local);
        std::fs::remove_file(&sock).unwrap();
        match classify(&passwd, &cache, &sock, b"alice") {
            Identity::Unavailable(why) => assert!(why.contains("hostd did not answer"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
