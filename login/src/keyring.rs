//! Where `smith login` keeps the ID token, and `smith-ca admin login` the named admin's
//! session token: the Linux kernel keyring, never a file.
//!
//! One `user`-type key per (profile, CA URL) in the caller's user keyring (`@u`), with the
//! description `smith:<profile>:<ca url>` (an admin session:
//! `smith-ca-admin:<ca url>`), permissions possessor+user only (view, read,
//! write, search, setattr; nothing for group or others) and a kernel timeout equal to the
//! token's remaining lifetime, so the kernel itself forgets it at expiry. The payload is a
//! small JSON document: the ID token, the nonce of its sign-in, and what `smith` shows.
//!
//! Why the kernel keyring through `linux-keyutils` (and not the `keyring` crate): it is a
//! thin safe wrapper over the `keyctl` syscalls, so the permissions and timeout above are
//! set explicitly, it needs no D-Bus secret service (servers and CI have none), and it
//! pulls in no other backend. Several identities coexist through profiles
//! (`--profile`/`SMITH_PROFILE`).
//!
//! Must never: write the token to disk, make the key readable by other users, or keep a
//! key past the token's expiry.

use anyhow::{anyhow, Context};
use linux_keyutils::{KeyError, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};
use serde::{Deserialize, Serialize};

/// What is stored for one sign-in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stored {
    pub id_token: String,
    pub nonce: Option<String>,
    pub issuer: String,
    /// Unix seconds (the token's `exp`).
    pub expires_at: u64,
    pub user: Option<String>,
    pub groups: Vec<String>,
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

fn user_ring() -> anyhow::Result<KeyRing> {
    KeyRing::from_special_id(KeyRingIdentifier::User, true).map_err(|e| {
        anyhow!(
            "cannot open your kernel keyring ({e:?}); use `smith login --cert` to keep the \
             token in memory only"
        )
    })
}

/// Stores a sign-in, replacing an earlier one of the same profile and CA.
pub fn store(profile: &str, ca_url: &str, s: &Stored, now: u64) -> anyhow::Result<()> {
    let lifetime = s.expires_at.saturating_sub(now);
    if lifetime == 0 {
        anyhow::bail!("the provider's ID token is already expired; check this machine's clock");
    }
    store_entry(
        &description(profile, ca_url),
        &serde_json::to_vec(s)?,
        lifetime,
    )
}

/// Stores `payload` under `desc` for `lifetime` seconds (owner-only, replaced if there).
pub fn store_entry(desc: &str, payload: &[u8], lifetime: u64) -> anyhow::Result<()> {
    if lifetime == 0 {
        anyhow::bail!("nothing to keep: it is already expired; check this machine's clock");
    }
    let ring = user_ring()?;
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

/// The stored sign-in, if any (an expired one is gone: the kernel dropped it).
pub fn load(profile: &str, ca_url: &str) -> anyhow::Result<Option<Stored>> {
    let Some(data) = load_entry(&description(profile, ca_url))? else {
        return Ok(None);
    };
    let s: Stored = serde_json::from_slice(&data)
        .context("the kernel keyring entry is not a smith sign-in; run `smith logout`")?;
    Ok(Some(s))
}

/// The payload stored under `desc`, if any.
pub fn load_entry(desc: &str) -> anyhow::Result<Option<Vec<u8>>> {
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
    let data = match key.read_to_vec() {
        Ok(d) => d,
        Err(KeyError::KeyExpired | KeyError::KeyRevoked | KeyError::KeyDoesNotExist) => {
            return Ok(None)
        }
        Err(e) => return Err(anyhow!("cannot read the kernel keyring entry: {e:?}")),
    };
    Ok(Some(data))
}

/// Removes the sign-in; whether there was one.
pub fn remove(profile: &str, ca_url: &str) -> anyhow::Result<bool> {
    remove_entry(&description(profile, ca_url))
}

/// Removes the entry `desc`; whether there was one.
pub fn remove_entry(desc: &str) -> anyhow::Result<bool> {
    let ring = user_ring()?;
    match ring.search(desc) {
        Ok(k) => {
            k.invalidate()
                .map_err(|e| anyhow!("cannot remove the keyring entry: {e:?}"))?;
            Ok(true)
        }
        Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => Ok(false),
        Err(e) => Err(anyhow!("cannot search the kernel keyring: {e:?}")),
    }
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

    fn load_dummy() -> Stored {
        Stored {
            id_token: String::new(),
            nonce: None,
            issuer: String::new(),
            expires_at: 0,
            user: None,
            groups: vec![],
        }
    }
}
