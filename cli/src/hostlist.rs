//! The hosts the engineer may reach, as the CA last said (`POST /v1/user/hosts`), kept
//! per profile in `<config dir>/hosts-<profile>.json` (0600; no secret: names, tags,
//! grants, the user CA keys) so that the check before each ssh connection decides
//! offline which certificate fits the host ([`crate::target`]).
//!
//! A list younger than [`FRESH_FOR`] is trusted to say "not a host of yours" (ssh goes on
//! untouched, nothing asked); an older one still serves a host it names while the agent
//! holds a fitting certificate, and is fetched again (once, under the profile's lock)
//! for a name it does not know. `smith hosts` always fetches it; each certificate for a
//! host updates that host's entry. After a failed fetch no new one is tried for
//! [`RETRY_AFTER`].
//!
//! Must never: hold a token or a key, or be trusted for another CA URL than its own.

use crate::config::{Credential, Effective};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use smith_api::{HostsRequest, ReachableHost};
use smith_proto::UserName;
use std::path::PathBuf;
use std::time::Duration;

/// How long a fetched list says which names are not the engineer's hosts.
pub const FRESH_FOR: Duration = Duration::from_secs(600);
/// After a failed fetch (or certificate request), how long no new one is tried.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// How long one fetch from the check before a connection may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostList {
    pub ca_url: String,
    /// Who the list is for.
    pub user: UserName,
    /// Unix seconds; 0 for a list that only holds hosts certificates were issued for.
    pub fetched_at: u64,
    /// The user CA keys (OpenSSH lines): this CA's certificates in the agent.
    pub user_ca_keys: Vec<String>,
    pub hosts: Vec<ReachableHost>,
}

fn path(profile: &str) -> Option<PathBuf> {
    crate::state::file(&format!("hosts-{profile}.json"))
}

/// The marker of a failed attempt to reach the CA for `profile`.
pub fn failed_marker(profile: &str) -> Option<PathBuf> {
    crate::state::file(&format!("hosts-{profile}.failed"))
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Whether `e` says the CA could not be reached or could not serve (as opposed to a
/// refusal, or a local problem such as a missing sign-in).
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    use smith_api::ClientError as E;
    match e.downcast_ref::<E>() {
        Some(E::Transport { .. } | E::Unresponsive { .. }) => true,
        Some(E::Status { status, .. }) => *status >= 500,
        _ => false,
    }
}

impl HostList {
    /// The list kept for `profile` and the CA at `ca_url`.
    pub fn load(profile: &str, ca_url: &str) -> Option<HostList> {
        let bytes = std::fs::read(path(profile)?).ok()?;
        let l: HostList = serde_json::from_slice(&bytes).ok()?;
        same_url(&l.ca_url, ca_url).then_some(l)
    }

    /// Keeps the list (best effort: nothing when there is no state directory).
    pub fn save(&self, profile: &str) -> anyhow::Result<()> {
        let Some(p) = path(profile) else {
            return Ok(());
        };
        crate::cert::write_new(&p, &serde_json::to_vec_pretty(self)?, 0o600)
    }

    pub fn is_fresh(&self, now: u64) -> bool {
        self.fetched_at + FRESH_FOR.as_secs() > now && self.fetched_at <= now
    }

    /// Replaces (or adds) the entry of `host`.
    pub fn upsert(&mut self, host: ReachableHost) {
        self.hosts.retain(|h| h.name != host.name);
        self.hosts.push(host);
        self.hosts.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The user CA keys, parsed.
    pub fn ca_keys(&self) -> Vec<ssh_key::public::KeyData> {
        crate::ensure::parse_keys(&self.user_ca_keys)
    }

    /// Asks the CA (one request, at most `timeout`) for the hosts `cred`'s user may reach.
    pub fn fetch(
        cfg: &Effective,
        cred: &Credential,
        timeout: Duration,
    ) -> anyhow::Result<HostList> {
        let client = cfg.client_with_timeout(Some(cred.bearer().to_string()), timeout)?;
        let r = client
            .user_hosts(&HostsRequest {
                oidc_nonce: cred.nonce(),
            })
            .map_err(crate::cert::refusal)
            .context("cannot get the hosts you may reach from the CA")?;
        Ok(HostList {
            ca_url: cfg.ca_url()?,
            user: r.user,
            fetched_at: crate::oidc::now(),
            user_ca_keys: r.user_ca_keys,
            hosts: r.hosts,
        })
    }
}
