//! A small blocking client for hostd's local socket, used by `smith-host status`,
//! `doctor` and the tests.
//!
//! Owns: one request/response exchange with bounded timeouts. Must never: block for
//! more than about the given timeout.

use smith_proto::wire::{self, Request, Response};
use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Sends `req` and reads the response.
pub fn request(socket: &Path, req: &Request, timeout: Duration) -> io::Result<Response> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    wire::write_frame(&mut s, &req.encode())?;
    let frame = wire::read_frame(&mut s)?;
    Ok(Response::decode(&frame)?)
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
