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
//! Must never: classify a user as "not Smith" because the cache could not be read (that
//! is [`Identity::Unavailable`], and callers deny), treat a user as non-local because
//! the passwd file could not be read, or follow NSS.

use smith_proto::cache::CacheView;
use smith_proto::local::Presence;
use smith_proto::{Level, Tags, UserName};
use std::path::Path;

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
/// entry point): the passwd file is not read again, the cache once.
pub fn classify_known(local: Presence, cache: &Path, user: &[u8]) -> Identity {
    if local.is_local() {
        return Identity::Local;
    }
    let Some(name) = std::str::from_utf8(user)
        .ok()
        .and_then(|s| UserName::new(s).ok())
    else {
        return Identity::NotSmith;
    };
    match read_cache(cache) {
        Ok(bytes) => match CacheView::parse(&bytes) {
            Ok(v) => lookup(&v, &name),
            Err(e) => Identity::Unavailable(e.to_string()),
        },
        Err(e) => Identity::Unavailable(e),
    }
}

/// Classifies the PAM user (reads the passwd file, then the cache).
pub fn classify(passwd: &Path, cache: &Path, user: &[u8]) -> Identity {
    classify_known(local_presence(passwd, user), cache, user)
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
            classify(&dir_not_file, &d.join("no-cache"), b"deploy"),
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
        assert_eq!(classify(&passwd, &cache, b"root"), Identity::Local);
        assert!(matches!(
            classify(&passwd, &cache, b"alice"),
            Identity::Unavailable(_)
        ));
        assert_eq!(classify(&passwd, &cache, b"Not Valid"), Identity::NotSmith);
        std::fs::write(&cache, b"garbage").unwrap();
        assert!(matches!(
            classify(&passwd, &cache, b"alice"),
            Identity::Unavailable(_)
        ));
        let bytes = smith_proto::cache::build(&crate::tests::contents()).unwrap();
        std::fs::write(&cache, &bytes[..bytes.len() - 3]).unwrap();
        assert!(matches!(
            classify(&passwd, &cache, b"alice"),
            Identity::Unavailable(_)
        ));
        std::fs::write(&cache, &bytes).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o644)).unwrap();
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(matches!(
                classify(&passwd, &cache, b"alice"),
                Identity::Smith(_)
            ));
            assert_eq!(classify(&passwd, &cache, b"bob"), Identity::NotSmith);
            std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o666)).unwrap();
            assert!(matches!(
                classify(&passwd, &cache, b"alice"),
                Identity::Unavailable(_)
            ));
        }
    }
}
