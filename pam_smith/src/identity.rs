//! Who the PAM user is, as far as Smith is concerned: a local account (never touched),
//! a Smith user (with its level and the host's tags, from the cache file), someone Smith
//! does not know, or "cannot tell" (no valid cache).
//!
//! Owns: reading `/etc/passwd` directly (never `getpwnam`: that would go through NSS and
//! nss_smith, and a local name must win even if NSS is misconfigured), and reading the
//! cache file (whole file, size-bounded, root-owned and not writable by others, then
//! `CacheView::parse`).
//!
//! Must never: classify a user as "not Smith" because the cache could not be read (that
//! is [`Identity::Unavailable`], and callers deny), or follow NSS.

use smith_proto::cache::{CacheView, MAX_FILE_LEN};
use smith_proto::{Level, Tags, UserName};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
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

/// Whether `user` has a line in the passwd file at `path`. `None` if the file cannot be
/// read.
pub fn is_local(path: &Path, user: &[u8]) -> Option<bool> {
    let data = std::fs::read(path).ok()?;
    Some(data.split(|&b| b == b'\n').any(|line| {
        let name = line.split(|&b| b == b':').next().unwrap_or(b"");
        !name.is_empty() && name == user && line.contains(&b':')
    }))
}

/// Reads and validates the cache file.
pub fn read_cache(path: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| {
        format!(
            "cannot open the Smith cache {}: {e} (is smith-hostd running?)",
            path.display()
        )
    })?;
    let md = f
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    if !md.is_file() || md.uid() != 0 || md.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is not a regular root-owned file writable only by root; refusing to trust it",
            path.display()
        ));
    }
    let mut bytes = Vec::with_capacity(md.len().min(MAX_FILE_LEN as u64) as usize);
    f.take(MAX_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    CacheView::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(bytes)
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

/// Classifies the PAM user.
pub fn classify(passwd: &Path, cache: &Path, user: &[u8]) -> Identity {
    if is_local(passwd, user) == Some(true) {
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
        assert_eq!(is_local(&p, b"root"), Some(true));
        assert_eq!(is_local(&p, b"deploy"), Some(true));
        assert_eq!(is_local(&p, b"dep"), Some(false));
        assert_eq!(is_local(&p, b"broken"), Some(false));
        assert_eq!(is_local(&p, b""), Some(false));
        assert_eq!(is_local(&d.join("missing"), b"root"), None);
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
