//! The revocation list of SSH host certificates on the engineer's side:
//! `~/.ssh/smith_revoked_host_keys`, an OpenSSH KRL that the block `smith config ssh`
//! writes names as `RevokedHostKeys`, so `ssh` refuses a host presenting a host
//! certificate the CA revoked (a removed host's, or one the admin revoked by serial).
//!
//! `smith config ssh` writes it first; `smith cert --ensure` (which ssh runs before
//! each connection to a Smith host) fetches it again, so a revocation takes effect on
//! the next connection. An empty file means "nothing revoked" to ssh.
//!
//! Must never: leave ssh without a file once configured (ssh refuses every host whose
//! `RevokedHostKeys` file is missing or unreadable, which is safe but locks the user
//! out), write anything that is not a KRL from the pinned CA, or make ssh wait long when
//! the CA is unreachable: one bounded request, and after a failure no new attempt for
//! [`RETRY_AFTER`] (the previous list stays in force).

use crate::config::Effective;
use anyhow::Context;
use base64::Engine;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The file's name in `~/.ssh`.
pub const FILE_NAME: &str = "smith_revoked_host_keys";
/// How long one fetch may take before ssh goes on with the list it has.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed fetch, how long `--ensure` keeps the list it has without asking again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// The first bytes of every OpenSSH KRL.
const KRL_MAGIC: &[u8] = b"SSHKRL\n\0";

/// `~/.ssh/smith_revoked_host_keys` for `home`.
pub fn path_in(home: &Path) -> PathBuf {
    home.join(".ssh").join(FILE_NAME)
}

/// The file when `smith config ssh` set it up (it exists), for the current `$HOME`.
pub fn configured() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    let p = path_in(Path::new(&home));
    p.exists().then_some(p)
}

/// What a fetch brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// Certificates are revoked: the KRL's bytes.
    Krl(Vec<u8>),
    /// Nothing is revoked.
    Empty,
}

/// The CA's current list, checked to be a KRL.
pub fn fetch(cfg: &Effective) -> anyhow::Result<Fetched> {
    let client = cfg.client_with_timeout(None, FETCH_TIMEOUT)?;
    let krl = client
        .host_krl()
        .context("cannot get the CA's revoked host certificates")?;
    match krl.krl_base64 {
        None => Ok(Fetched::Empty),
        Some(b) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .context("the CA's host revocation list is not base64")?;
            if !bytes.starts_with(KRL_MAGIC) {
                anyhow::bail!("the CA's host revocation list is not an OpenSSH KRL");
            }
            Ok(Fetched::Krl(bytes))
        }
    }
}

/// Writes `fetched` to `path` (0644: ssh only reads it) unless it holds that already.
/// Returns whether the file changed.
pub fn store(path: &Path, fetched: &Fetched) -> anyhow::Result<bool> {
    let bytes: &[u8] = match fetched {
        Fetched::Krl(b) => b,
        Fetched::Empty => &[],
    };
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(false);
    }
    crate::cert::write_new(path, bytes, 0o644)?;
    Ok(true)
}

fn retry_marker(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".failed");
    PathBuf::from(s)
}

/// For `smith cert --ensure`: fetch and store the list when `smith config ssh` set it
/// up, unless a fetch failed less than [`RETRY_AFTER`] ago. Never fails: a list that
/// cannot be fetched leaves the previous one in force, said on stderr unless `quiet`.
pub fn refresh_if_configured(cfg: &Effective, quiet: bool) {
    let Some(path) = configured() else {
        return;
    };
    let marker = retry_marker(&path);
    let recent_failure = std::fs::metadata(&marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < RETRY_AFTER);
    if recent_failure {
        return;
    }
    match fetch(cfg).and_then(|f| store(&path, &f)) {
        Ok(_) => {
            let _ = std::fs::remove_file(&marker);
        }
        Err(e) => {
            let _ = std::fs::write(&marker, b"");
            if !quiet {
                eprintln!(
                    "warning: {e:#}\nthe revoked host certificates in {} are kept as they were; \
                     the next try is in {}s",
                    path.display(),
                    RETRY_AFTER.as_secs()
                );
            }
        }
    }
}
