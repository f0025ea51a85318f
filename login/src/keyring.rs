//! Where `smith login` keeps a sign-in (the ID token and, when the provider issued one,
//! the refresh token that renews it), and `smith-ca admin login` the named admin's
//! session token: a [`SecretStore`], on Linux the kernel keyring ([`KernelKeyring`]),
//! never a file.
//!
//! One `user`-type key per (profile, CA URL) in the caller's user keyring (`@u`), with the
//! description `smith:<profile>:<ca url>` (an admin session:
//! `smith-ca-admin:<ca url>`), permissions possessor+user only (view, read,
//! write, search, setattr; nothing for group or others) and a kernel timeout equal to the
//! time the entry is useful, so the kernel itself forgets it: the ID token's expiry, or
//! with a refresh token the end of the sign-in (`auth_time` plus the CA's maximum
//! sign-in age). The payload is a small JSON document ([`Stored`]): the tokens, the nonce
//! of the sign-in, and what `smith` shows.
//!
//! Why the kernel keyring through `linux-keyutils` (and not the `keyring` crate): it is a
//! thin safe wrapper over the `keyctl` syscalls, so the permissions and timeout above are
//! set explicitly, it needs no D-Bus secret service (servers and CI have none), and it
//! pulls in no other backend. Several identities coexist through profiles
//! (`--profile`/`SMITH_PROFILE`).
//!
//! Portability: everything above the store goes through the [`SecretStore`] trait (put
//! with a lifetime, get, remove, and whether it can be used here), so a macOS Keychain or
//! a Windows Credential Manager store is one more implementation and [`platform`] picks
//! it. Where the kernel keyring is unusable (a container whose seccomp profile blocks
//! `keyctl`, as Docker's default does), [`SecretStore::check`] says so before anyone
//! signs in, and nothing is kept anywhere else: `smith login --cert` then gets a
//! certificate with the token in its own memory only.
//!
//! Must never: write a token to disk, make the key readable by other users, keep a key
//! past its usefulness, or show a token in `Debug` output.

use anyhow::{anyhow, Context};
use linux_keyutils::{KeyError, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};
use serde::{Deserialize, Serialize};

/// A store for a signed-in person's secrets, one payload per description, each forgotten
/// by the store itself after its lifetime.
pub trait SecretStore: Sync {
    /// How messages name it ("your kernel keyring").
    fn name(&self) -> &'static str;
    /// Whether it can be used here; the error says why not and what to do instead.
    fn check(&self) -> Result<(), Unavailable>;
    /// Keeps `payload` under `desc` for `lifetime_secs` (more than 0), replacing what was
    /// there, readable by this user only.
    fn put(&self, desc: &str, payload: &[u8], lifetime_secs: u64) -> anyhow::Result<()>;
    /// The payload under `desc`, if any and not expired. An unusable store holds nothing.
    fn get(&self, desc: &str) -> anyhow::Result<Option<Vec<u8>>>;
    /// Forgets `desc`; whether there was something.
    fn remove(&self, desc: &str) -> anyhow::Result<bool>;
}

/// The secret store cannot be used on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub store: &'static str,
    pub reason: String,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cannot be used here ({}; containers often block it), so a sign-in cannot be \
             kept; `smith login --cert --scope k=v` gets a certificate with the token kept in \
             that process only, or use a token from your admin (SMITH_TOKEN)",
            self.store, self.reason
        )
    }
}

impl std::error::Error for Unavailable {}

/// The store of this platform: the kernel keyring on Linux.
pub fn platform() -> &'static dyn SecretStore {
    &KernelKeyring
}

/// The Linux kernel keyring: `user` keys in the caller's user keyring (`@u`).
pub struct KernelKeyring;

fn user_ring() -> Result<KeyRing, KeyError> {
    KeyRing::from_special_id(KeyRingIdentifier::User, true)
}

impl SecretStore for KernelKeyring {
    fn name(&self) -> &'static str {
        "your kernel keyring"
    }

    fn check(&self) -> Result<(), Unavailable> {
        // Opening the ring is not enough (a filter may allow only some keyctl calls):
        // look a description up, as `get` does.
        user_ring()
            .and_then(|r| match r.search("smith:probe") {
                Ok(_) | Err(KeyError::KeyDoesNotExist) => Ok(()),
                Err(e) => Err(e),
            })
            .map_err(|e| Unavailable {
                store: "the kernel keyring",
                reason: format!("{e:?}"),
            })
    }

    fn put(&self, desc: &str, payload: &[u8], lifetime: u64) -> anyhow::Result<()> {
        if lifetime == 0 {
            anyhow::bail!("nothing to keep: it is already expired; check this machine's clock");
        }
        let ring = user_ring().map_err(|e| {
            anyhow!(
                "cannot open your kernel keyring ({e:?}); use `smith login --cert` to keep the \
                 token in memory only"
            )
        })?;
        let key = ring
            .add_key(desc, payload)
            .map_err(|e| anyhow!("cannot store the sign-in in the kernel keyring: {e:?}"))?;
        let perms = KeyPermissionsBuilder::builder()
            .posessor(Permission::ALL)
            .user(
                Permission::VIEW
                    | Permission::READ
                    | Permission::WRITE
                    | Permission::SEARCH
                    | Permission::SETATTR,
            )
            .build();
        let secured = key
            .set_perms(perms)
            .and_then(|_| key.set_timeout(lifetime.min(u32::MAX as u64) as usize));
        if let Err(e) = secured {
            let _ = key.invalidate();
            return Err(anyhow!(
                "cannot restrict the keyring entry ({e:?}); nothing was kept"
            ));
        }
        Ok(())
    }

    fn get(&self, desc: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let ring = match user_ring() {
            Ok(r) => r,
            Err(_) => return Ok(None),
        };
        let key = match ring.search(desc) {
            Ok(k) => k,
            Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => {
                return Ok(None)
            }
            Err(e) => return Err(anyhow!("cannot search the kernel keyring: {e:?}")),
        };
        match key.read_to_vec() {
            Ok(d) => Ok(Some(d)),
            Err(KeyError::KeyExpired | KeyError::KeyRevoked | KeyError::KeyDoesNotExist) => {
                Ok(None)
            }
            Err(e) => Err(anyhow!("cannot read the kernel keyring entry: {e:?}")),
        }
    }

    fn remove(&self, desc: &str) -> anyhow::Result<bool> {
        let ring = user_ring().map_err(|e| anyhow!("cannot open your kernel keyring: {e:?}"))?;
        match ring.search(desc) {
            Ok(k) => {
                k.invalidate()
                    .map_err(|e| anyhow!("cannot remove the keyring entry: {e:?}"))?;
                Ok(true)
            }
            Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => {
                Ok(false)
            }
            Err(e) => Err(anyhow!("cannot search the kernel keyring: {e:?}")),
        }
    }
}

/// What is stored for one sign-in.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stored {
    pub id_token: String,
    pub nonce: Option<String>,
    pub issuer: String,
    /// Unix seconds (the ID token's `exp`).
    pub expires_at: u64,
    /// As at the sign-in (for display).
    pub user: Option<String>,
    pub groups: Vec<String>,
    /// What renews the ID token without the browser, when the provider issued a refresh
    /// token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Refresh>,
}

/// A refresh token and what its renewals need and check.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refresh {
    pub token: String,
    /// The provider's token endpoint (from its discovery document at sign-in).
    pub token_endpoint: String,
    /// Where `smith logout` revokes the refresh token, if the provider has one.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    pub client_id: String,
    /// The `sub` of the sign-in: a renewed ID token must name the same person.
    pub subject: String,
    /// When the person signed in at the provider (`auth_time`, else the first `iat`).
    pub signed_in_at: u64,
    /// When renewals end (and the kernel forgets the entry): the sign-in plus the CA's
    /// maximum sign-in age, earlier if the provider said its refresh token ends sooner.
    pub until: u64,
    /// ID tokens obtained with it so far.
    #[serde(default)]
    pub renewals: u64,
}

impl Stored {
    /// Until when the entry is useful: the ID token's expiry, or the end of renewals.
    pub fn keep_until(&self) -> u64 {
        match &self.refresh {
            Some(r) => r.until.max(self.expires_at),
            None => self.expires_at,
        }
    }
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("id_token", &"(hidden)")
            .field("issuer", &self.issuer)
            .field("expires_at", &self.expires_at)
            .field("user", &self.user)
            .field("groups", &self.groups)
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Refresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresh")
            .field("token", &"(hidden)")
            .field("token_endpoint", &self.token_endpoint)
            .field("subject", &self.subject)
            .field("signed_in_at", &self.signed_in_at)
            .field("until", &self.until)
            .field("renewals", &self.renewals)
            .finish_non_exhaustive()
    }
}

/// Validates a profile name: `[A-Za-z0-9._-]{1,64}`.
pub fn check_profile(p: &str) -> Result<(), String> {
    if p.is_empty()
        || p.len() > 64
        || !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "profile '{}' must be 1 to 64 characters of A-Z a-z 0-9 . _ -",
            p.escape_debug()
        ));
    }
    Ok(())
}

pub fn description(profile: &str, ca_url: &str) -> String {
    format!("smith:{profile}:{}", ca_url.trim_end_matches('/'))
}

/// The description of a named admin's session for the CA at `ca_url`.
pub fn admin_description(ca_url: &str) -> String {
    format!("smith-ca-admin:{}", ca_url.trim_end_matches('/'))
}

/// Stores a sign-in in `store` until [`Stored::keep_until`], replacing an earlier one of
/// the same profile and CA.
pub fn store_in(
    store: &dyn SecretStore,
    profile: &str,
    ca_url: &str,
    s: &Stored,
    now: u64,
) -> anyhow::Result<()> {
    let lifetime = s.keep_until().saturating_sub(now);
    if lifetime == 0 {
        anyhow::bail!("the provider's ID token is already expired; check this machine's clock");
    }
    store.put(
        &description(profile, ca_url),
        &serde_json::to_vec(s)?,
        lifetime,
    )
}

/// The sign-in kept in `store`, if any (an expired one is gone: the store dropped it).
pub fn load_in(
    store: &dyn SecretStore,
    profile: &str,
    ca_url: &str,
) -> anyhow::Result<Option<Stored>> {
    let Some(data) = store.get(&description(profile, ca_url))? else {
        return Ok(None);
    };
    let s: Stored = serde_json::from_slice(&data)
        .context("the kernel keyring entry is not a smith sign-in; run `smith logout`")?;
    Ok(Some(s))
}

/// [`store_in`] the platform's store.
pub fn store(profile: &str, ca_url: &str, s: &Stored, now: u64) -> anyhow::Result<()> {
    store_in(platform(), profile, ca_url, s, now)
}

/// [`load_in`] the platform's store.
pub fn load(profile: &str, ca_url: &str) -> anyhow::Result<Option<Stored>> {
    load_in(platform(), profile, ca_url)
}

/// Stores `payload` under `desc` for `lifetime` seconds in the platform's store.
pub fn store_entry(desc: &str, payload: &[u8], lifetime: u64) -> anyhow::Result<()> {
    platform().put(desc, payload, lifetime)
}

/// The payload stored under `desc` in the platform's store, if any.
pub fn load_entry(desc: &str) -> anyhow::Result<Option<Vec<u8>>> {
    platform().get(desc)
}

/// Removes the sign-in; whether there was one.
pub fn remove(profile: &str, ca_url: &str) -> anyhow::Result<bool> {
    remove_entry(&description(profile, ca_url))
}

/// Removes the entry `desc` from the platform's store; whether there was one.
pub fn remove_entry(desc: &str) -> anyhow::Result<bool> {
    platform().remove(desc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles() {
        assert!(check_profile("alice").is_ok());
        assert!(check_profile("ops.on-call_2").is_ok());
        for bad in ["", "a b", "a:b", &"x".repeat(65)] {
            assert!(check_profile(bad).is_err(), "{bad}");
        }
        assert_eq!(
            description("p", "https://ca:8443/"),
            "smith:p:https://ca:8443"
        );
    }

    /// Store, read back, check the kernel's view (owner-only permissions, a timeout),
    /// remove. Uses the real user keyring with a unique description.
    #[test]
    fn kernel_keyring_round_trip() {
        let profile = format!("unit-{}", std::process::id());
        let ca = "https://keyring-test.invalid:1";
        let now = crate::oidc::now();
        let s = Stored {
            id_token: "h.p.s".into(),
            nonce: Some("n".into()),
            issuer: "https://idp".into(),
            expires_at: now + 120,
            user: Some("alice".into()),
            groups: vec!["dev".into()],
            refresh: None,
        };
        if let Err(e) = store(&profile, ca, &s, now) {
            eprintln!("SKIP: no kernel keyring here: {e}");
            return;
        }
        assert_eq!(load(&profile, ca).unwrap(), Some(s));
        // /proc/keys: "<id> <flags> <usage> <timeout> <perm> <uid> <gid> <type> <desc>: ..."
        let keys = std::fs::read_to_string("/proc/keys").unwrap_or_default();
        if let Some(line) = keys
            .lines()
            .find(|l| l.contains(&description(&profile, ca)))
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_ne!(f[3], "perm", "a timeout is set: {line}");
            let perm = u32::from_str_radix(f[4], 16).unwrap();
            assert_eq!(perm & 0xffff, 0, "no group/other permissions: {line}");
        }
        assert!(remove(&profile, ca).unwrap());
        assert_eq!(load(&profile, ca).unwrap(), None);
        assert!(!remove(&profile, ca).unwrap());
        assert!(store(
            &profile,
            ca,
            &Stored {
                expires_at: now,
                ..load_dummy()
            },
            now
        )
        .is_err());
    }

    /// With a refresh token the entry lives until renewals end, not the ID token's
    /// expiry; `Debug` never shows a token.
    #[test]
    fn a_refresh_token_keeps_the_entry_until_the_sign_in_ends_and_debug_hides_tokens() {
        let mut s = load_dummy();
        s.id_token = "ID-TOKEN-SECRET".into();
        s.expires_at = 1_000;
        assert_eq!(s.keep_until(), 1_000);
        s.refresh = Some(Refresh {
            token: "REFRESH-SECRET".into(),
            token_endpoint: "https://idp/token".into(),
            revocation_endpoint: None,
            client_id: "smith".into(),
            subject: "alice-0001".into(),
            signed_in_at: 500,
            until: 500 + 12 * 3600,
            renewals: 0,
        });
        assert_eq!(s.keep_until(), 500 + 12 * 3600);
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("SECRET") && shown.contains("alice-0001"),
            "{shown}"
        );
        // Older entries (no `refresh`) still read.
        let old = br#"{"id_token":"a.b.c","nonce":null,"issuer":"i","expires_at":5,"user":null,"groups":[]}"#;
        let o: Stored = serde_json::from_slice(old).unwrap();
        assert!(o.refresh.is_none());
    }

    fn load_dummy() -> Stored {
        Stored {
            id_token: String::new(),
            nonce: None,
            issuer: String::new(),
            expires_at: 0,
            user: None,
            groups: vec![],
            refresh: None,
        }
    }
}
