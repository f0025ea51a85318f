//! hostd's local socket as `smith-host status`, `doctor` and the tests use it: the
//! shared bounded client (`smith_proto::client`, also used by nss_smith and pam_smith).
//!
//! Owns: nothing of its own. Must never: block for more than the given timeout, or
//! believe a peer that is not root.

use smith_proto::client::{exchange, TransportError};
use smith_proto::wire::{Request, Response};
use std::path::Path;
use std::time::Duration;

/// Sends `req` and reads the response, within `timeout`.
pub fn request(
    socket: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Response, TransportError> {
    exchange(socket, req, timeout.as_millis() as u64)
}

/// `Ping`: `(snapshot_version, users, last_sync_unix)`.
pub fn ping(socket: &Path) -> Result<(u64, u32, u64), String> {
    match request(socket, &Request::Ping, Duration::from_secs(2)) {
        Ok(Response::Pong {
            snapshot_version,
            users,
            last_sync_unix,
        }) => Ok((snapshot_version, users, last_sync_unix)),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(format!(
            "cannot talk to smith-hostd at {}: {e}",
            socket.display()
        )),
    }
}
