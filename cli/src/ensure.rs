//! `smith cert --ensure`: make sure the agent holds a certificate from this CA that is
//! valid for a while longer, getting one only when needed. Run by ssh itself through
//! the `Match host ... exec "smith cert --ensure --quiet"` block `smith config ssh`
//! writes, so it must be fast and silent when there is nothing to do.
//!
//! Also owns the record of the last certificate request per profile
//! (`<config dir>/last-cert-<profile>.json`, 0600: CA URL, scope, TTL, reason and the
//! user CA keys that signed it — no token, no key), which `--ensure` repeats and uses
//! to recognise "this CA" offline.
//!
//! With `--host %h --login %r ...` (what the block of `smith config ssh` passes), the
//! certificate must fit the host ssh connects to, not the last request:
//! [`crate::target`] decides that offline and gets one for the host when needed.
//!
//! Also refreshes the list of revoked SSH host certificates when `smith config ssh` set
//! it up (see [`crate::hostkrl`]: one bounded request), and the host CA keys of the
//! `@cert-authority` lines it wrote (every current host CA key, so a host CA rotation
//! needs no flag day), at most once per [`TRUST_FRESH_FOR`]: a revocation takes effect
//! on the first connection after that, and many connections at once ask once.
//!
//! Must never: store a token or a private key, or touch the network for a certificate
//! when the agent already holds a fitting one (and the CA's user keys are known).

use crate::agent::Agent;
use crate::cert::{self, CertArgs};
use crate::config::Effective;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use smith_proto::Tags;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// The last `smith cert` request of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastCert {
    pub ca_url: String,
    /// `k=v,...`; empty = wherever a grant allows.
    pub scope: String,
    pub ttl_secs: u64,
    #[serde(default)]
    pub reason: Option<String>,
    /// OpenSSH lines of the user CA key(s) that signed it.
    pub user_ca_keys: Vec<String>,
    pub updated_at: u64,
}

fn last_path(profile: &str) -> Option<(PathBuf, bool)> {
    let (dir, create) = crate::config::state_dir()?;
    Some((dir.join(format!("last-cert-{profile}.json")), create))
}

/// The last request of `profile`, if recorded and readable.
pub fn load_last(profile: &str) -> Option<LastCert> {
    let (p, _) = last_path(profile)?;
    let b = std::fs::read(p).ok()?;
    serde_json::from_slice(&b).ok()
}

/// Records the last request (best effort: `Ok(None)` when there is nowhere to keep it).
pub fn save_last(profile: &str, last: &LastCert) -> anyhow::Result<Option<PathBuf>> {
    let Some((path, create)) = last_path(profile) else {
        return Ok(None);
    };
    let Some(dir) = path.parent() else {
        return Ok(None);
    };
    if !dir.is_dir() {
        if !create {
            return Ok(None);
        }
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let bytes = serde_json::to_vec_pretty(last)?;
    cert::write_new(&path, &bytes, 0o600)?;
    Ok(Some(path))
}

pub struct EnsureArgs {
    pub min_valid: Duration,
    pub quiet: bool,
    /// The connection ssh is about to make (`--host %h --login %r ...`): a certificate
    /// that fits that host ([`crate::target`]) instead of the last request's scope.
    pub target: Option<crate::target::SshTarget>,
    /// Explicit flags; else the last request's.
    pub scope: Option<Tags>,
    pub ttl: Option<Duration>,
    pub reason: Option<String>,
}

/// A certificate in the agent.
#[derive(Debug)]
pub struct Held {
    pub valid_before: u64,
    pub key_id: String,
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The certificate in the agent signed by one of `ca_keys`, for `scope` (and naming
/// `login` among its principals, when given), valid now and for at least `min_valid`
/// more, that lasts longest.
pub fn fitting(
    identities: &[(Vec<u8>, String)],
    ca_keys: &[ssh_key::public::KeyData],
    scope: &Tags,
    login: Option<&str>,
    now: u64,
    min_valid: Duration,
) -> Option<Held> {
    crate::agent::user_certs(identities, ca_keys)
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| c.valid_after() <= now && c.valid_before() >= now + min_valid.as_secs())
        .filter(|c| crate::agent::scope_of(c).as_ref() == Some(scope))
        .filter(|c| login.is_none_or(|l| c.valid_principals().iter().any(|p| p == l)))
        .map(|c| Held {
            valid_before: c.valid_before(),
            key_id: c.key_id().to_string(),
        })
        .max_by_key(|h| h.valid_before)
}

pub fn parse_keys(lines: &[String]) -> Vec<ssh_key::public::KeyData> {
    lines
        .iter()
        .filter_map(|l| ssh_key::PublicKey::from_openssh(l.trim()).ok())
        .map(|k| k.key_data().clone())
        .collect()
}

/// How long the host revocation list and host CA keys one run fetched serve the runs
/// after it, by default: a host certificate's revocation reaches ssh within this, and 50
/// connections at once (Ansible's forks) ask the CA once, not 50 times.
pub const TRUST_FRESH_FOR: Duration = Duration::from_secs(60);

/// `SMITH_TRUST_REFRESH` (a duration; `0`: before every connection, at the cost of two
/// requests to the CA each), else [`TRUST_FRESH_FOR`].
fn trust_fresh_for(quiet: bool) -> Duration {
    match std::env::var("SMITH_TRUST_REFRESH") {
        Ok(v) if v.trim() == "0" => Duration::ZERO,
        Ok(v) => humantime::parse_duration(v.trim()).unwrap_or_else(|e| {
            if !quiet {
                eprintln!(
                    "warning: SMITH_TRUST_REFRESH='{}' is not a duration like 30s ({e}); using {}s",
                    v.escape_debug(),
                    TRUST_FRESH_FOR.as_secs()
                );
            }
            TRUST_FRESH_FOR
        }),
        Err(_) => TRUST_FRESH_FOR,
    }
}

/// The stamp of the last refresh of the host revocation list and host CA keys.
pub fn trust_stamp() -> Option<PathBuf> {
    crate::state::file("trust-checked")
}

/// Refreshes the revoked host certificates and the host CA keys `smith config ssh` set
/// up, unless a run did less than [`trust_fresh_for`] ago (one run at a time: the
/// others wait on the profile's lock and find it done).
fn refresh_trust(cfg: &Effective, quiet: bool) {
    let stamp = trust_stamp();
    let fresh_for = trust_fresh_for(quiet);
    let fresh = |s: &Option<PathBuf>| {
        s.as_deref()
            .is_some_and(|p| crate::state::recent(p, fresh_for))
    };
    if fresh(&stamp) {
        return;
    }
    let _lock = crate::state::lock(cfg.profile());
    if fresh(&stamp) {
        return;
    }
    crate::hostkrl::refresh_if_configured(cfg, quiet);
    // And the host CA keys (a host CA rotation adds one before hosts use it).
    if let Err(e) = crate::sshconfig::refresh_host_ca_keys(cfg) {
        if !quiet {
            eprintln!(
                "warning: the host CA keys in ~/.ssh/known_hosts were kept as they were: {e:#}"
            );
        }
    }
    if let Some(s) = &stamp {
        crate::state::touch(s);
    }
}

pub fn run(cfg: &Effective, args: EnsureArgs) -> anyhow::Result<()> {
    // Before anything else (also without an agent): ssh checks the host against this
    // list right after.
    refresh_trust(cfg, args.quiet);
    if let Some(t) = args.target {
        return crate::target::ensure(
            cfg,
            crate::target::EnsureHost {
                target: t,
                min_valid: args.min_valid,
                quiet: args.quiet,
                ttl: args.ttl,
                reason: args.reason,
            },
        );
    }
    let sock = cfg.ssh_auth_sock.clone().ok_or_else(|| {
        anyhow::anyhow!("no ssh-agent (SSH_AUTH_SOCK is not set): nothing to ensure")
    })?;
    let url = cfg.ca_url()?;
    let profile = cfg.profile().to_string();
    let last = load_last(&profile).filter(|l| same_url(&l.ca_url, &url));
    let scope = match (&args.scope, &last) {
        (Some(s), _) => s.clone(),
        (None, Some(l)) => Tags::parse(&l.scope).unwrap_or_default(),
        (None, None) => Tags::default(),
    };
    // The user CA keys: remembered (no network), else asked of the CA.
    let mut ca_keys = last
        .as_ref()
        .map(|l| parse_keys(&l.user_ca_keys))
        .unwrap_or_default();
    if ca_keys.is_empty() {
        let keys = cfg
            .client_with(None)?
            .user_ca_keys()
            .context("cannot get the CA's user keys")?;
        ca_keys = parse_keys(&keys.keys);
    }
    let identities = Agent::connect(Path::new(&sock))
        .and_then(|mut a| a.identities())
        .context("cannot list the ssh-agent's keys")?;
    let now = crate::oidc::now();
    if let Some(h) = fitting(&identities, &ca_keys, &scope, None, now, args.min_valid) {
        if !args.quiet {
            println!(
                "The agent holds {} from this CA, valid until {} (in {}): nothing to do.",
                h.key_id,
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(h.valid_before)),
                humantime::format_duration(Duration::from_secs(h.valid_before - now))
            );
        }
        return Ok(());
    }
    let cred = cfg.credential()?;
    let ttl = args
        .ttl
        .or_else(|| last.as_ref().map(|l| Duration::from_secs(l.ttl_secs)))
        .unwrap_or(Duration::from_secs(3600));
    let reason = args
        .reason
        .or_else(|| last.as_ref().and_then(|l| l.reason.clone()));
    cert::run(
        cfg,
        CertArgs {
            scope,
            host: None,
            ttl,
            reason,
            out: None,
            json: false,
            quiet: args.quiet,
        },
        &cred,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;
    use smith_proto::sshcert::SCOPE_EXTENSION;
    use ssh_key::certificate::{Builder, CertType};
    use ssh_key::{Algorithm, PrivateKey};

    fn cert(ca: &PrivateKey, ty: CertType, scope: Option<&str>, from: u64, to: u64) -> Vec<u8> {
        let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let mut b = Builder::new_with_random_nonce(
            &mut OsRng,
            key.public_key().key_data().clone(),
            from,
            to,
        )
        .unwrap();
        b.cert_type(ty).unwrap().valid_principal("alice").unwrap();
        b.key_id("smith:alice:1").unwrap();
        if let Some(s) = scope {
            b.extension(SCOPE_EXTENSION, s).unwrap();
        }
        b.sign(ca).unwrap().to_bytes().unwrap()
    }

    #[test]
    fn only_a_certificate_of_this_ca_and_scope_valid_long_enough_fits() {
        let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let other = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let keys = vec![ca.public_key().key_data().clone()];
        let now = 1_700_000_000;
        let dev = Tags::parse("env=dev").unwrap();
        let five = Duration::from_secs(300);
        let plain_key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
            .unwrap()
            .public_key()
            .to_bytes()
            .unwrap();
        let id = |b: Vec<u8>| (b, "c".to_string());
        // Nothing, or a plain key: no fit.
        assert!(fitting(&[], &keys, &dev, None, now, five).is_none());
        assert!(fitting(&[id(plain_key.clone())], &keys, &dev, None, now, five).is_none());
        let good = cert(&ca, CertType::User, Some("env=dev"), now - 60, now + 3600);
        for (bad, why) in [
            (
                cert(
                    &other,
                    CertType::User,
                    Some("env=dev"),
                    now - 60,
                    now + 3600,
                ),
                "other CA",
            ),
            (
                cert(&ca, CertType::Host, Some("env=dev"), now - 60, now + 3600),
                "host cert",
            ),
            (
                cert(&ca, CertType::User, Some("env=prod"), now - 60, now + 3600),
                "scope",
            ),
            (
                cert(&ca, CertType::User, Some("env=dev"), now - 600, now + 200),
                "too short",
            ),
            (
                cert(&ca, CertType::User, Some("env=dev"), now - 600, now - 1),
                "expired",
            ),
            (
                cert(&ca, CertType::User, None, now - 60, now + 3600),
                "no scope",
            ),
        ] {
            assert!(
                fitting(
                    &[id(plain_key.clone()), id(bad)],
                    &keys,
                    &dev,
                    None,
                    now,
                    five
                )
                .is_none(),
                "{why}"
            );
        }
        let h = fitting(&[id(plain_key), id(good)], &keys, &dev, None, now, five).unwrap();
        assert_eq!(h.valid_before, now + 3600);
        assert_eq!(h.key_id, "smith:alice:1");
        // Empty scope = a certificate without the extension.
        let any = cert(&ca, CertType::User, None, now - 60, now + 3600);
        assert!(fitting(&[id(any)], &keys, &Tags::default(), None, now, five).is_some());
    }
}
