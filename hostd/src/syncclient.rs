//! The host's client of the CA: smith-api's one client with this host's mTLS identity
//! and pinned root ([`smith_api::AsyncClient`] for the daemon, [`smith_api::Client`]
//! for `smith-host` commands). Endpoints, timeouts, response size bounds and the mapping
//! of the CA's answers to [`smith_api::ClientError`] are smith-api's.
//!
//! Must never: build a client that trusts anything but the host's pinned root.

use crate::identity::HostCredentials;
use smith_api::{AsyncClient, Client, ClientError, ClientOptions, SyncQuery};
use smith_proto::HostName;

fn options(ca_url: &str, creds: &HostCredentials) -> Result<ClientOptions, ClientError> {
    crate::config::validate_ca_url(ca_url).map_err(ClientError::Config)?;
    Ok(ClientOptions {
        identity: Some(creds.identity.clone()),
        ..ClientOptions::new(ca_url, creds.trust.clone())
    })
}

/// The daemon's client.
pub fn connect(ca_url: &str, creds: &HostCredentials) -> Result<AsyncClient, ClientError> {
    AsyncClient::new(options(ca_url, creds)?)
}

/// A command's client (`smith-host sync` without a daemon).
pub fn connect_blocking(ca_url: &str, creds: &HostCredentials) -> Result<Client, ClientError> {
    Client::new(options(ca_url, creds)?)
}

/// One sync of `host` from `since`, answered after at most `wait` seconds.
/// `epoch`: of the version `since` (a CA of another epoch answers a full snapshot).
pub fn sync_query(since: u64, wait: u64, host: &HostName, epoch: Option<&str>) -> SyncQuery {
    SyncQuery {
        since,
        wait,
        host: Some(host.clone()),
        epoch: epoch
            .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string),
    }
}
