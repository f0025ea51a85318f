//! `smith`'s non-secret state in the config directory (`~/.config/smith` by default,
//! the directory of `$SMITH_CONFIG` when set): where the files go, a lock per profile, and
//! time stamps that say when something was last done.
//!
//! The lock makes concurrent runs (ssh's `Match exec` for 50 Ansible forks at once) ask
//! the CA once where once is needed: the first takes the lock and asks; the others wait,
//! then find what it got (a certificate in the agent, a fresh host list) and ask nothing.
//!
//! Must never: hold a secret, wait for the lock unboundedly (after [`LOCK_WAIT`] a run
//! goes on without it), or create a directory named by `$SMITH_CONFIG` (only the default
//! one, 0700).

use anyhow::Context;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long a run waits for another run of the same profile (which may be asking the
/// engineer for a reason, or waiting for the CA) before going on without the lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(120);

/// The state directory, created (0700) when it is the default one and missing; `None`
/// when there is none to use.
pub fn dir() -> Option<PathBuf> {
    let (dir, create) = crate::config::state_dir()?;
    if dir.is_dir() {
        return Some(dir);
    }
    if !create {
        return None;
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .ok()?;
    Some(dir)
}

/// `name` in the state directory (created if it may be).
pub fn file(name: &str) -> Option<PathBuf> {
    dir().map(|d| d.join(name))
}

/// An exclusive lock on a profile's lock file, released when dropped (or when the
/// process ends).
pub struct Lock {
    _file: nix::fcntl::Flock<File>,
}

/// Takes the lock of `profile`, waiting at most [`LOCK_WAIT`]; `None` when there is no
/// state directory or the wait ran out (the caller goes on without it).
pub fn lock(profile: &str) -> Option<Lock> {
    let path = file(&format!("lock-{profile}"))?;
    let deadline = Instant::now() + LOCK_WAIT;
    let mut f = open_lock_file(&path).ok()?;
    loop {
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Some(Lock { _file: l }),
            Err((back, _)) => f = back,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn open_lock_file(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// How long ago `path` was last touched ([`touch`]); `None` when it does not exist.
pub fn age(path: &Path) -> Option<Duration> {
    let t = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    Some(SystemTime::now().duration_since(t).unwrap_or_default())
}

/// Whether `path` was touched less than `within` ago.
pub fn recent(path: &Path, within: Duration) -> bool {
    age(path).is_some_and(|a| a < within)
}

/// Marks `path` as done now (an empty file, 0600).
pub fn touch(path: &Path) {
    let _ = crate::cert::write_new(path, b"", 0o600);
}
