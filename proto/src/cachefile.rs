//! Reading the NSS cache file into memory the reader owns: the one loader nss_smith,
//! pam_smith and hostd share (issue 14, D1 and D15).
//!
//! Owns: the checks made before trusting the file (a regular file, owned by root, not
//! group/world-writable, size within bounds), opening it without blocking
//! (`O_NONBLOCK|O_NOCTTY|O_CLOEXEC`: a FIFO planted at the path cannot hang the
//! caller), reading exactly `st_size` bytes into a private buffer, noticing a file
//! rewritten while it was read (identity before and after, the file still at its size,
//! then the body checksum), and validating it (`CacheView::parse` + `verify_body`).
//!
//! Must never: map the file (a file truncated or rewritten in place by another process
//! would then fault the reader with SIGBUS: issue 14's D1), read more than
//! [`MAX_FILE_LEN`] bytes, keep the descriptor open, or hand out bytes that failed
//! validation.

use crate::cache::{CacheError, CacheView, HEADER_LEN, MAX_FILE_LEN};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// What identifies one version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

impl FileId {
    pub fn of(md: &std::fs::Metadata) -> FileId {
        FileId {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec(),
        }
    }
}

/// Why a cache file could not be loaded. Every variant means "unavailable", never
/// "not found".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// `open`/`fstat`/`read` failed with this errno (ENOENT: no cache yet).
    Io(i32),
    /// Not a regular file owned by root and writable only by root.
    Untrusted(FileId),
    /// Too small or too large.
    BadSize(FileId),
    /// The file changed while it was read (rewritten in place): try again later.
    Changed(FileId),
    /// The contents failed validation.
    Invalid(FileId, CacheError),
    /// The same file that already failed (not read again).
    KnownBad(FileId),
}

impl LoadError {
    /// The identity of a bad file, to avoid re-reading it until it changes. `None` for
    /// errors that may go away by themselves (I/O, a file being rewritten).
    pub fn bad_file(&self) -> Option<FileId> {
        match self {
            LoadError::Io(_) | LoadError::Changed(_) => None,
            LoadError::Untrusted(id)
            | LoadError::BadSize(id)
            | LoadError::Invalid(id, _)
            | LoadError::KnownBad(id) => Some(*id),
        }
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io(e) => write!(f, "{}", std::io::Error::from_raw_os_error(*e)),
            LoadError::Untrusted(_) => write!(
                f,
                "not a regular root-owned file writable only by root; refusing to trust it"
            ),
            LoadError::BadSize(id) => write!(f, "size {} is not plausible", id.size),
            LoadError::Changed(_) => write!(f, "the file changed while it was read"),
            LoadError::Invalid(_, e) => write!(f, "{e}"),
            LoadError::KnownBad(_) => write!(f, "the same invalid file as before"),
        }
    }
}

impl std::error::Error for LoadError {}

fn io_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// `stat` of `path` (follows symlinks, like `open`), `None` if it cannot be stat'ed.
pub fn stat(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| FileId::of(&m))
}

/// Loads and validates the cache file at `path` into a private buffer. `known_bad`: the
/// identity of a file that failed before; if the path still names it, fail at once.
pub fn load(path: &Path, known_bad: Option<FileId>) -> Result<(Box<[u8]>, FileId), LoadError> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| LoadError::Io(io_errno(&e)))?;
    let md = f.metadata().map_err(|e| LoadError::Io(io_errno(&e)))?;
    let id = FileId::of(&md);
    if known_bad == Some(id) {
        return Err(LoadError::KnownBad(id));
    }
    if !md.file_type().is_file() || md.uid() != 0 || md.mode() & 0o022 != 0 {
        return Err(LoadError::Untrusted(id));
    }
    let len = match usize::try_from(md.size()) {
        Ok(n) if (HEADER_LEN..=MAX_FILE_LEN).contains(&n) => n,
        _ => return Err(LoadError::BadSize(id)),
    };
    let mut buf = vec![0u8; len].into_boxed_slice();
    let mut got = 0;
    while got < len {
        match f.read(&mut buf[got..]) {
            Ok(0) => return Err(LoadError::Changed(id)), // shrank under us
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(LoadError::Io(io_errno(&e))),
        }
    }
    // Grew under us, or was rewritten (new size, new mtime) while we read.
    let mut probe = [0u8; 1];
    let grew = matches!(f.read(&mut probe), Ok(n) if n > 0);
    let after = f.metadata().map(|m| FileId::of(&m)).ok();
    if grew || after != Some(id) {
        return Err(LoadError::Changed(id));
    }
    let view = CacheView::parse(&buf).map_err(|e| LoadError::Invalid(id, e))?;
    match view.verify_body() {
        Ok(()) => {}
        // Same identity, but the records disagree with the header: most likely a
        // rewrite within one timestamp tick. Not remembered as bad.
        Err(CacheError::BadBodyChecksum) => return Err(LoadError::Changed(id)),
        Err(e) => return Err(LoadError::Invalid(id, e)),
    }
    Ok((buf, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(label: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("proto-cachefile-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn root() -> bool {
        std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }

    #[test]
    fn loads_valid_files_and_refuses_the_rest() {
        let d = dir("load");
        let p = d.join("nss.cache");
        assert_eq!(load(&p, None).err(), Some(LoadError::Io(libc::ENOENT)));
        let bytes = crate::cache::build(&crate::cache::tests::sample()).unwrap();
        std::fs::write(&p, &bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        if !root() {
            assert!(matches!(load(&p, None), Err(LoadError::Untrusted(_))));
            return;
        }
        let (b, id) = load(&p, None).unwrap();
        assert_eq!(&b[..], &bytes[..]);
        assert_eq!(stat(&p), Some(id));
        // A body byte flipped in place: the header is fine, the body checksum is not.
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        std::fs::write(&p, &flipped).unwrap();
        assert!(matches!(load(&p, None), Err(LoadError::Changed(_))));
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let e = load(&p, None).unwrap_err();
        assert!(
            matches!(e, LoadError::Invalid(_, CacheError::LengthMismatch { .. })),
            "{e:?}"
        );
        assert!(matches!(
            load(&p, e.bad_file()),
            Err(LoadError::KnownBad(_))
        ));
        std::fs::write(&p, b"tiny").unwrap();
        assert!(matches!(load(&p, None), Err(LoadError::BadSize(_))));
        std::fs::write(&p, &bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert!(matches!(load(&p, None), Err(LoadError::Untrusted(_))));
        // A FIFO at the path neither hangs nor is trusted.
        std::fs::remove_file(&p).unwrap();
        assert!(std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap()
            .success());
        assert!(matches!(load(&p, None), Err(LoadError::Untrusted(_))));
    }
}
