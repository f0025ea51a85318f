//! The persisted snapshot (`state.json`, a [`HostState`]) and the sync status record
//! (`sync-status.json`: when the last sync attempt and success happened, and the last
//! error).
//!
//! Owns: their on-disk format and durability. Must never: return a partially read
//! state (a corrupt file is an error the daemon answers by starting empty and
//! resyncing, while the cache file keeps serving).

use crate::fsutil::{self, Durability};
use serde::{Deserialize, Serialize};
use smith_proto::snapshot::HostState;
use std::path::Path;

/// state.json holds user names and grants: readable by root only.
pub const STATE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({message}); starting from an empty state and resyncing")]
    Corrupt { path: String, message: String },
}

/// Loads `state.json`: `Ok(None)` when absent.
pub fn load_state(path: &Path) -> Result<Option<HostState>, StateError> {
    let bytes = fsutil::read_optional(path).map_err(|source| StateError::Io {
        path: path.display().to_string(),
        source,
    })?;
    match bytes {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
    }
}

/// Writes `state.json` durably (tmp + fsync + rename + fsync dir).
pub fn save_state(path: &Path, state: &HostState) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        fsutil::create_dirs(dir, 0o755)?;
    }
    fsutil::atomic_write(path, &bytes, STATE_MODE)
}

/// What `smith-host status` shows about syncing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// Last time the CA answered a sync (200 or 204), Unix seconds.
    pub last_sync_unix: Option<u64>,
    pub last_attempt_unix: Option<u64>,
    /// The last failure, cleared on success.
    pub last_error: Option<String>,
    /// Snapshot version after the last success.
    pub version: u64,
    /// Set while the CA refuses this host (removed, client certificate expired);
    /// cleared by the next successful sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_refusal: Option<crate::refusal::CaRefusal>,
    /// The last time the CA's epoch changed under this host (a restored or
    /// re-initialised CA database): kept for `status` until the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_change: Option<EpochChange>,
    /// Losses of access whose processes were not ended (a new CA epoch, a mass
    /// removal): until the user has access again, nothing of theirs runs, or an operator
    /// runs `smith-host terminate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_removals: Vec<HeldRemoval>,
    /// The CA replica (URL) the daemon uses now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_url_in_use: Option<String>,
    /// Times the daemon moved away from a CA replica that died or hung (since it started).
    #[serde(default)]
    pub ca_failovers: u64,
}

/// One held loss of access (see `crate::removal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRemoval {
    pub user: String,
    /// Set for a user's loss; `None` for one session's.
    pub uid: Option<u32>,
    pub session_pid: Option<u32>,
    pub reason: String,
    pub at: u64,
}

/// A full snapshot from a new CA epoch, taken whatever its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochChange {
    pub at: u64,
    pub previous_epoch: Option<String>,
    pub previous_version: u64,
    pub epoch: Option<String>,
    pub version: u64,
}

pub fn load_sync_status(path: &Path) -> Option<SyncStatus> {
    let b = fsutil::read_optional(path).ok()??;
    serde_json::from_slice(&b).ok()
}

/// Informational: atomic but not fsynced (it is rewritten every sync).
pub fn save_sync_status(path: &Path, s: &SyncStatus) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
    fsutil::atomic_write_with(path, &bytes, 0o644, Durability::AtomicOnly)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_missing_and_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        assert!(load_state(&p).unwrap().is_none());
        let s = crate::view::tests::state();
        save_state(&p, &s).unwrap();
        assert_eq!(load_state(&p).unwrap().unwrap(), s);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(load_state(&p), Err(StateError::Corrupt { .. })));
    }
}
