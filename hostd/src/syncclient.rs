//! The host's client of the CA: smith-api's one client with this host's mTLS identity
//! and pinned root ([`smith_api::AsyncClient`] for the daemon, [`smith_api::Client`]
//! for `smith-host` commands), over the CA's replicas from `host.toml` (`ca_urls`).
//! Endpoints, timeouts, response size bounds, failover between replicas and the
//! mapping of the CA's answers to [`smith_api::ClientError`] are smith-api's.
//!
//! The daemon builds one [`Replicas`] and gives it to every client it makes (sync,
//! audit upload, renewal), so they move to another replica together and the URL in use
//! and the failover count are one (`sync-status.json`).
//!
//! Must never: build a client that trusts anything but the host's pinned root.

use crate::identity::HostCredentials;
use smith_api::{AsyncClient, Client, ClientError, ClientOptions, Replicas, SyncQuery};
use smith_proto::HostName;
use std::sync::Arc;

fn options(replicas: &Arc<Replicas>, creds: &HostCredentials) -> ClientOptions {
    ClientOptions {
        identity: Some(creds.identity.clone()),
        replicas: Some(replicas.clone()),
        ..ClientOptions::new(replicas.url(0), creds.trust.clone())
    }
}

/// The daemon's client.
pub fn connect(
    replicas: &Arc<Replicas>,
    creds: &HostCredentials,
) -> Result<AsyncClient, ClientError> {
    AsyncClient::new(options(replicas, creds))
}

/// A command's client (`smith-host sync` without a daemon).
pub fn connect_blocking(
    replicas: &Arc<Replicas>,
    creds: &HostCredentials,
) -> Result<Client, ClientError> {
    Client::new(options(replicas, creds))
}

/// One sync of `host` from `since`, answered after at most `wait` seconds (a long poll
/// asks for the CA's heartbeat, so that a hung replica is told from a long poll).
/// `epoch`: of the version `since` (a CA of another epoch answers a full snapshot).
pub fn sync_query(since: u64, wait: u64, host: &HostName, epoch: Option<&str>) -> SyncQuery {
    SyncQuery {
        since,
        wait,
        host: Some(host.clone()),
        epoch: epoch
            .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string),
        beat: (wait > 0).then_some(smith_api::client::SYNC_BEAT_SECS),
    }
}
