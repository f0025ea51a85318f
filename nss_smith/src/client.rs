//! The socket fallback: ask hostd when the cache file is missing or invalid, through
//! the shared bounded client (`smith_proto::client`: 300 ms per call, root peer only,
//! cached connection, per-process backoff after a silent daemon, a one-second memo for
//! glibc's ERANGE retries).
//!
//! Owns: the bypass rule. Must never: be used from a process that has
//! [`smith_proto::paths::NSS_BYPASS_ENV`] set (hostd itself: it would ask itself while
//! answering), read through `secure_getenv` so a setuid program's caller cannot turn
//! the fallback off or on.

use smith_proto::client::{Client, TransportError};
use smith_proto::wire::{Request, Response};
use std::ffi::CStr;

/// Whole-call budget for the socket path.
pub const TOTAL_BUDGET_MS: u64 = 300;

/// The environment marker (same text as `smith_proto::paths::NSS_BYPASS_ENV`).
pub const BYPASS_ENV: &CStr = c"SMITH_NSS_BYPASS";

/// Why the daemon was not asked or could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AskError {
    /// This process must not use the socket (hostd itself).
    Bypassed,
    Transport(TransportError),
}

impl AskError {
    /// The errno to report with `NSS_STATUS_UNAVAIL`.
    pub fn errno(&self) -> i32 {
        match self {
            AskError::Bypassed => libc::ENOENT,
            AskError::Transport(t) => t.errno(),
        }
    }
}

extern "C" {
    /// glibc's `getenv` that answers NULL in setuid/setgid programs (AT_SECURE).
    fn secure_getenv(name: *const libc::c_char) -> *mut libc::c_char;
}

/// Whether this process asked never to use the socket.
pub fn bypassed() -> bool {
    // SAFETY: secure_getenv with a NUL-terminated name; only tested for NULL.
    !unsafe { secure_getenv(BYPASS_ENV.as_ptr()) }.is_null()
}

/// hostd's endpoint (same path as `smith_proto::paths::SOCKET`).
pub struct Daemon {
    client: Client,
}

impl Daemon {
    pub const fn new(path: &'static str) -> Daemon {
        Daemon {
            client: Client::new(path, TOTAL_BUDGET_MS),
        }
    }

    pub fn path(&self) -> &'static str {
        self.client.path()
    }

    pub fn ask(&self, req: &Request) -> Result<Response, AskError> {
        if bypassed() {
            return Err(AskError::Bypassed);
        }
        self.client.ask(req).map_err(AskError::Transport)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bypass_name_matches_proto() {
        assert_eq!(
            BYPASS_ENV.to_str().unwrap(),
            smith_proto::paths::NSS_BYPASS_ENV
        );
    }
}
