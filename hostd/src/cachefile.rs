//! Writing the NSS cache file (`/var/lib/smith/nss.cache`) with the replacement
//! protocol of `smith_proto::cache`: new file beside the old one, fsync, rename over
//! it, then set the `stale` word of the *old* file (opened before the rename) so
//! processes that have it mapped switch without a syscall.
//!
//! Owns: that protocol, and reading the current file back. Must never: modify the
//! current file other than its `stale` word, or leave a half-written file at the path
//! readers map (a full disk leaves the old file in place).

use crate::fsutil;
use smith_proto::cache::{CacheContents, CacheView, STALE_OFFSET};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// The cache file is world-readable: every process resolving users maps it.
pub const CACHE_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum CacheWriteError {
    #[error("cannot build the cache: {0}")]
    Build(#[from] smith_proto::cache::CacheError),
    #[error("cannot write {path}: {source} (the previous cache file is kept)")]
    Io { path: String, source: io::Error },
}

/// Builds `contents` and installs it at `path`. Returns the bytes written.
pub fn write_cache(path: &Path, contents: &CacheContents) -> Result<Vec<u8>, CacheWriteError> {
    let bytes = smith_proto::cache::build(contents)?;
    install(path, &bytes).map_err(|source| CacheWriteError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(bytes)
}

/// Installs already built cache bytes at `path` (see the module doc).
pub fn install(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fsutil::create_dirs(dir, 0o755)?;
    }
    // Open the current file before replacing it, to flag it stale afterwards.
    let old = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()
        .filter(|f| {
            f.metadata()
                .map(|m| m.is_file() && m.len() >= (STALE_OFFSET + 4) as u64)
                .unwrap_or(false)
        });
    fsutil::atomic_write(path, bytes, CACHE_MODE)?;
    if let Some(old) = old {
        // Best effort: readers also notice the new inode within a second.
        let _ = old.write_all_at(&1u32.to_le_bytes(), STALE_OFFSET as u64);
    }
    Ok(())
}

/// The current cache file's bytes if it exists and parses.
pub fn read_valid(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    match CacheView::parse(&bytes) {
        Ok(_) => Ok(Some(bytes)),
        Err(e) => Err(format!("{} is not a valid cache: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacement_flags_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/nss.cache");
        let mut c = CacheContents {
            host_name: "h".into(),
            snapshot_version: 1,
            ..Default::default()
        };
        write_cache(&p, &c).unwrap();
        assert_eq!(crate::fsutil::mode_of(&p), Some(0o644));
        // Keep a handle on the old inode like a reader's mapping would.
        let old = fs::File::open(&p).unwrap();
        c.snapshot_version = 2;
        write_cache(&p, &c).unwrap();
        let mut word = [0u8; 4];
        old.read_exact_at(&mut word, STALE_OFFSET as u64).unwrap();
        assert_eq!(u32::from_le_bytes(word), 1);
        let now = read_valid(&p).unwrap().unwrap();
        let v = CacheView::parse(&now).unwrap();
        assert_eq!(v.snapshot_version(), 2);
        assert_eq!(&now[STALE_OFFSET..STALE_OFFSET + 4], &[0; 4]);
    }
}
