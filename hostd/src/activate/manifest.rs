//! The activation manifest (`/var/lib/smith/activation.json`) and the backups
//! (`/var/lib/smith/backup/`): what `activate` changed, so that `deactivate` can put
//! every file back byte for byte.
//!
//! Owns: recording, for each touched file, whether it existed, its original mode and
//! bytes (a backup copy, checked by SHA-256), the SHA-256 and mode of what we wrote, and
//! the directories we created; and undoing all of it. Must never: lose an original
//! (a file is first recorded only once, at its first change), or delete a file we did
//! not create.

use crate::fsutil;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub const MANIFEST_VERSION: u32 = 1;

/// Whether a file is wholly ours or an existing file we edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Written whole by Smith (key, certs, config, drop-in, trust files).
    Owned,
    /// An existing file where Smith added lines or a `smith` service.
    Edited,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Effective path.
    pub path: PathBuf,
    pub kind: Kind,
    pub existed: bool,
    pub original_mode: Option<u32>,
    pub original_sha256: Option<String>,
    /// File name of the original's copy in the backup directory.
    pub backup: Option<String>,
    pub written_sha256: String,
    pub written_mode: u32,
    /// The daemon rewrites it (user CA keys, KRL, renewed key/cert): a change since
    /// activation is expected, not a sign of an admin edit.
    #[serde(default)]
    pub daemon_managed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub activated_at: u64,
    pub host_name: String,
    pub files: Vec<FileEntry>,
    /// Directories `activate` created (outermost first).
    pub dirs_created: Vec<PathBuf>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A backup file name for `path`: its path with `/` replaced, plus a hash prefix so two
/// paths never share a name.
pub fn backup_name(path: &Path) -> String {
    let s = path.to_string_lossy();
    let flat: String = s
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}-{flat}", &sha256_hex(s.as_bytes())[..8])
}

impl Manifest {
    pub fn new(host_name: &str) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            activated_at: crate::now_unix(),
            host_name: host_name.to_string(),
            files: Vec::new(),
            dirs_created: Vec::new(),
        }
    }

    pub fn load(path: &Path) -> Result<Option<Manifest>, String> {
        match fsutil::read_optional(path) {
            Ok(None) => Ok(None),
            Ok(Some(b)) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{} is corrupt: {e}", path.display())),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent() {
            fsutil::create_dirs(dir, 0o755)?;
        }
        fsutil::atomic_write(path, &bytes, 0o600)
    }

    pub fn entry(&self, path: &Path) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    pub fn entry_mut(&mut self, path: &Path) -> Option<&mut FileEntry> {
        self.files.iter_mut().find(|f| f.path == path)
    }
}

/// What `deactivate` did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Undo {
    /// Files put back exactly as they were.
    pub restored: Vec<String>,
    /// Files Smith created, removed.
    pub removed: Vec<String>,
    /// Edited files the admin changed since: only Smith's lines were removed.
    pub cleaned: Vec<String>,
    pub warnings: Vec<String>,
}
