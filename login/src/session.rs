//! A kept sign-in in use: the ID token when it is still fresh, else a renewal with the
//! refresh token kept beside it, with no browser. What `smith cert` (and the check ssh
//! runs before each connection) calls for its credential.
//!
//! - A renewal is one request to the provider's token endpoint, bounded by
//!   [`RENEW_TIMEOUT`]; the renewed ID token must be the same person's (`sub`), from the
//!   same issuer, for the same client ([`crate::oidc::check_renewed`]); its signature,
//!   `auth_time` and the rest are the CA's to verify, as for the first one.
//! - The new tokens replace the old ones in the store (the provider may rotate the
//!   refresh token: the old one is then spent). Concurrent runs of one profile (50
//!   Ansible forks, each behind ssh's `Match exec`) renew once: the first takes a lock
//!   file in the caller's state directory, the others wait for it and then read what it
//!   stored (with a rotating refresh token, a second renewal with the spent token would
//!   be refused and could make the provider revoke the whole grant).
//! - A refusal by the provider (revoked, expired, the person disabled there) or an answer
//!   for another person ends the sign-in: the entry is forgotten and the error says to
//!   sign in again. A provider that does not answer in time leaves the entry as it was.
//!
//! Must never: renew for longer than the entry lives ([`crate::keyring::Refresh::until`]),
//! keep a renewed token of another person, wait unboundedly (for the provider or the
//! lock), or write a token anywhere but the secret store.

use crate::keyring::{self, SecretStore, Stored};
use crate::oidc::{self, Expect, RefreshError};
use std::path::Path;
use std::time::{Duration, Instant};

/// The longest a renewal may take (connecting: at most 3 s of it).
pub const RENEW_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a run waits for another run of the same profile that is renewing.
pub const LOCK_WAIT: Duration = Duration::from_secs(15);
/// Renew when less than this is left of the ID token (or a quarter of its life, if that
/// is shorter): the CA must still find it valid when the request arrives.
pub const RENEW_MARGIN_SECS: u64 = 30;

/// Why no usable sign-in could be had.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The ID token expired and there is no refresh token to renew it.
    #[error("your sign-in expired at {at} and cannot be renewed without the browser (the identity provider gave no refresh token{hint}); run `smith login`")]
    Expired { at: String, hint: &'static str },
    /// The renewal failed; `ended`: the sign-in is over (the entry was forgotten).
    #[error("{source}; {}", if *.ended { "run `smith login` again" } else { "try again in a moment, or run `smith login`" })]
    Renewal { source: RefreshError, ended: bool },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// A usable sign-in, and whether it was just renewed.
#[derive(Debug)]
pub struct Fresh {
    pub stored: Stored,
    pub renewed: bool,
    /// Set when a renewal worked but could not be kept (it is used for this run only).
    pub not_kept: Option<String>,
}

/// Whether `s`'s ID token should be renewed before use at `now`.
pub fn needs_renewal(s: &Stored, now: u64) -> bool {
    let claims_life = s.expires_at.saturating_sub(issued_at(s));
    let margin = RENEW_MARGIN_SECS.min(claims_life / 4);
    now + margin >= s.expires_at
}

fn issued_at(s: &Stored) -> u64 {
    oidc::peek(&s.id_token).map(|c| c.iat).unwrap_or(0)
}

/// An exclusive lock on `dir/renew-<profile>.lock`, released on drop; `None` when it
/// cannot be had within [`LOCK_WAIT`] (the caller goes on without it).
struct RenewLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

fn lock(dir: &Path, profile: &str) -> Option<RenewLock> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!("renew-{profile}.lock"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .ok()?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Some(RenewLock { _file: l }),
            Err((back, _)) => f = back,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `s` as it is kept, not renewed.
fn as_kept(s: Stored) -> Result<Option<Fresh>, SessionError> {
    Ok(Some(Fresh {
        stored: s,
        renewed: false,
        not_kept: None,
    }))
}

/// The sign-in of `profile` at `ca_url` kept in `store`, renewed first if its ID token is
/// (nearly) expired. `Ok(None)`: nothing kept. `lock_dir`: where concurrent runs
/// coordinate (none: no coordination).
pub fn fresh(
    store: &dyn SecretStore,
    profile: &str,
    ca_url: &str,
    lock_dir: Option<&Path>,
) -> Result<Option<Fresh>, SessionError> {
    let now = oidc::now();
    let Some(s) = keyring::load_in(store, profile, ca_url)? else {
        return Ok(None);
    };
    if !needs_renewal(&s, now) {
        return as_kept(s);
    }
    if s.refresh.is_none() {
        if s.expires_at > now {
            // Nearly expired, nothing to renew it with: it may still do.
            return as_kept(s);
        }
        return Err(SessionError::Expired {
            at: humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs(s.expires_at),
            )
            .to_string(),
            hint: "; an admin can add `offline_access` to the CA's [oidc] scopes",
        });
    }
    let _lock = lock_dir.and_then(|d| lock(d, profile));
    // Another run may have renewed while this one waited.
    let now = oidc::now();
    let Some(s) = keyring::load_in(store, profile, ca_url)? else {
        return Ok(None);
    };
    if !needs_renewal(&s, now) {
        return as_kept(s);
    }
    let Some(r) = s.refresh.clone() else {
        return fresh(store, profile, ca_url, None);
    };
    let http = oidc::http_client_with(RENEW_TIMEOUT)?;
    let renewed = oidc::refresh(
        &http,
        &r.token_endpoint,
        &r.token,
        &Expect {
            issuer: &s.issuer,
            client_id: &r.client_id,
            subject: &r.subject,
            now,
        },
    );
    let got = match renewed {
        Ok(g) => g,
        // Not expired yet: use it while the provider does not answer.
        Err(RefreshError::Unreachable { .. }) if s.expires_at > now => return as_kept(s),
        Err(e) => {
            let ended = !matches!(e, RefreshError::Unreachable { .. });
            if ended {
                let _ = store.remove(&keyring::description(profile, ca_url));
            }
            return Err(SessionError::Renewal { source: e, ended });
        }
    };
    let mut refresh = r;
    if let Some(t) = got.refresh_token {
        refresh.token = t;
    }
    refresh.renewals += 1;
    let next = Stored {
        id_token: got.id_token,
        // Whatever nonce the renewed token carries (OIDC Core 12.2: the original one, or
        // none): the CA's rule is that token and request agree.
        nonce: got.claims.nonce.clone(),
        issuer: s.issuer.clone(),
        expires_at: got.claims.exp,
        user: s.user.clone(),
        groups: s.groups.clone(),
        refresh: Some(refresh),
    };
    let not_kept = keyring::store_in(store, profile, ca_url, &next, now)
        .err()
        .map(|e| format!("{e:#}"));
    Ok(Some(Fresh {
        stored: next,
        renewed: true,
        not_kept,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(iat: u64, exp: u64) -> Stored {
        let payload = oidc::b64(format!(r#"{{"iat":{iat},"exp":{exp}}}"#).as_bytes());
        Stored {
            id_token: format!("e30.{payload}.sig"),
            nonce: None,
            issuer: "https://idp".into(),
            expires_at: exp,
            user: None,
            groups: vec![],
            refresh: None,
        }
    }

    #[test]
    fn renews_in_the_last_quarter_of_a_short_token_and_the_last_30_s_of_a_long_one() {
        let hour = stored(1_000, 4_600);
        assert!(!needs_renewal(&hour, 4_569));
        assert!(needs_renewal(&hour, 4_570));
        let short = stored(1_000, 1_004);
        assert!(!needs_renewal(&short, 1_002));
        assert!(needs_renewal(&short, 1_003));
        assert!(needs_renewal(&short, 1_010));
    }
}
