//! One read-only memory mapping of a cache file, validated once.
//!
//! Owns: `open` + `fstat` + `mmap(PROT_READ, MAP_SHARED)` of the cache file, the checks
//! made before mapping (regular file, owned by root, not group/world-writable, size
//! within bounds), the parse (`CacheView::parse` checks the header, checksum, length and
//! layout), the atomic read of the `stale` word, and `munmap` on drop.
//!
//! Must never: map a file whose size differs from what its header says (that is how a
//! truncated file would SIGBUS), keep the file descriptor open, or write to the mapping.

use smith_proto::cache::{CacheError, CacheView, HEADER_LEN, MAX_FILE_LEN, STALE_OFFSET};
use std::ffi::CStr;
use std::sync::atomic::{AtomicU32, Ordering};

/// What identifies one version of the file on disk (the stat backstop compares these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: i64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

impl FileId {
    fn of(st: &libc::stat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
        }
    }
}

/// Why a file could not be mapped. Every variant means "unavailable", never "not found".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapError {
    /// `open` failed with this errno (ENOENT: no cache yet).
    Open(i32),
    /// The file is not a regular file owned by root and writable only by root.
    Untrusted(FileId),
    /// Too small, too large, or changed size.
    BadSize(FileId),
    /// `mmap` failed.
    Map(FileId),
    /// The contents failed validation.
    Invalid(FileId, CacheError),
    /// The file is the same one that already failed (not mapped again).
    KnownBad(FileId),
}

impl MapError {
    /// The identity of the bad file, to avoid re-parsing it on every call.
    pub fn bad_file(&self) -> Option<FileId> {
        match self {
            MapError::Open(_) => None,
            MapError::Untrusted(id)
            | MapError::BadSize(id)
            | MapError::Map(id)
            | MapError::Invalid(id, _)
            | MapError::KnownBad(id) => Some(*id),
        }
    }
}

/// A mapped, validated cache file.
pub struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
    view: CacheView<'static>,
    id: FileId,
    /// The file was already marked stale when mapped (a writer bug, or a race with a
    /// replacement): ignore the flag for this mapping, so we do not reload in a loop;
    /// the stat backstop still notices the real replacement.
    stale_at_open: bool,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("len", &self.len)
            .field("id", &self.id)
            .field("generation", &self.view.generation())
            .finish()
    }
}

// SAFETY: the mapping is read-only and never unmapped while a `&Mapping` exists (drop
// needs ownership); the raw pointer is only an address. Sharing it between threads is
// sharing immutable bytes.
unsafe impl Send for Mapping {}
// SAFETY: as above; all access is through shared reads (the stale word atomically).
unsafe impl Sync for Mapping {}

/// `stat` of `path`, or `None` if it does not exist / cannot be stat'ed.
pub fn stat_path(path: &CStr) -> Option<FileId> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is NUL-terminated; `st` is a valid out-pointer for one `stat`.
    let rc = unsafe { libc::stat(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: stat returned 0, so it initialized `st`.
    Some(FileId::of(unsafe { &st.assume_init() }))
}

struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor (opened below) and close it exactly once.
        unsafe { libc::close(self.0) };
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl Mapping {
    /// Opens, checks, maps and validates `path`. `known_bad`: the identity of a file that
    /// failed before; if the file is still that one, fail without mapping it again.
    pub fn open(path: &CStr, known_bad: Option<FileId>) -> Result<Mapping, MapError> {
        // SAFETY: `path` is NUL-terminated; flags are plain constants.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(MapError::Open(errno()));
        }
        let fd = Fd(fd);
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `fd` is open; `st` is a valid out-pointer.
        if unsafe { libc::fstat(fd.0, st.as_mut_ptr()) } != 0 {
            return Err(MapError::Open(errno()));
        }
        // SAFETY: fstat returned 0, so `st` is initialized.
        let st = unsafe { st.assume_init() };
        let id = FileId::of(&st);
        if known_bad == Some(id) {
            return Err(MapError::KnownBad(id));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_uid != 0 || st.st_mode & 0o022 != 0 {
            return Err(MapError::Untrusted(id));
        }
        let len = match usize::try_from(st.st_size) {
            Ok(n) if (HEADER_LEN..=MAX_FILE_LEN).contains(&n) => n,
            _ => return Err(MapError::BadSize(id)),
        };
        // SAFETY: a fresh read-only shared mapping of `len` bytes of an open regular
        // file; the kernel picks the address. Checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.0,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MapError::Map(id));
        }
        drop(fd);
        // SAFETY: `ptr` maps `len` readable bytes that stay mapped until `Drop` (which
        // needs ownership of the `Mapping`, so no borrow of `view` can outlive it). The
        // file is at least `len` bytes (fstat above) and hostd only ever replaces it by
        // rename, never truncates in place, so reading it cannot fault. The bytes are
        // immutable except the `stale` word, which the view never reads (we read it
        // atomically through `is_stale`).
        let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
        let view = match CacheView::parse(bytes) {
            Ok(v) => v,
            Err(e) => {
                // SAFETY: unmapping the region mapped above; `bytes` is not used again.
                unsafe { libc::munmap(ptr, len) };
                return Err(MapError::Invalid(id, e));
            }
        };
        let mut m = Mapping {
            ptr,
            len,
            view,
            id,
            stale_at_open: false,
        };
        m.stale_at_open = m.stale_word() != 0;
        Ok(m)
    }

    /// The validated view; borrowing it ties its lifetime to the mapping.
    pub fn view(&self) -> &CacheView<'_> {
        &self.view
    }

    pub fn id(&self) -> FileId {
        self.id
    }

    fn stale_word(&self) -> u32 {
        // SAFETY: STALE_OFFSET + 4 <= HEADER_LEN <= len, the mapping is page-aligned so
        // the address is 4-aligned, and the memory lives as long as `self`. Another
        // process writes this word through the page cache, hence the atomic load.
        let word = unsafe { &*((self.ptr as *const u8).add(STALE_OFFSET) as *const AtomicU32) };
        word.load(Ordering::Acquire)
    }

    /// Whether hostd has replaced this file (one memory load, no syscall).
    pub fn is_stale(&self) -> bool {
        !self.stale_at_open && self.stale_word() != 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the region mapped in `open`; `self` is being
        // dropped so no view or reference into it remains.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::ffi::CString;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn write_file(path: &std::path::Path, bytes: &[u8]) {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_all().unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    pub(crate) fn is_root() -> bool {
        // SAFETY: no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn cpath(p: &std::path::Path) -> CString {
        CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
    }

    #[test]
    fn maps_valid_and_refuses_bad_files() {
        let dir = crate::test_dir("mapping");
        let path = dir.join("nss.cache");
        let c = cpath(&path);
        assert_eq!(
            Mapping::open(&c, None).err(),
            Some(MapError::Open(libc::ENOENT))
        );
        let bytes = smith_proto::cache::build(&crate::lookup::tests::contents()).unwrap();
        write_file(&path, &bytes);
        if is_root() {
            let m = Mapping::open(&c, None).unwrap();
            assert!(m.view().user_by_name(b"alice").unwrap().is_some());
            assert!(!m.is_stale());
            // Truncated: the header's length no longer matches.
            write_file(&path, &bytes[..bytes.len() - 1]);
            let e = Mapping::open(&c, None).unwrap_err();
            assert!(
                matches!(e, MapError::Invalid(_, CacheError::LengthMismatch { .. })),
                "{e:?}"
            );
            let id = e.bad_file();
            assert!(matches!(Mapping::open(&c, id), Err(MapError::KnownBad(_))));
            write_file(&path, b"garbage");
            assert!(matches!(Mapping::open(&c, None), Err(MapError::BadSize(_))));
            write_file(&path, &vec![0u8; 4096]);
            assert!(matches!(
                Mapping::open(&c, None),
                Err(MapError::Invalid(_, CacheError::BadMagic))
            ));
            // Group-writable files are not trusted.
            write_file(&path, &bytes);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
            assert!(matches!(
                Mapping::open(&c, None),
                Err(MapError::Untrusted(_))
            ));
        } else {
            // Not root: the file is not root-owned, so it is refused.
            assert!(matches!(
                Mapping::open(&c, None),
                Err(MapError::Untrusted(_))
            ));
        }
    }

    #[test]
    fn stale_flag_is_seen_through_the_mapping() {
        if !is_root() {
            eprintln!("SKIPPED: needs root (the cache file must be root-owned)");
            return;
        }
        let dir = crate::test_dir("stale");
        let path = dir.join("nss.cache");
        let bytes = smith_proto::cache::build(&crate::lookup::tests::contents()).unwrap();
        write_file(&path, &bytes);
        let m = Mapping::open(&cpath(&path), None).unwrap();
        assert!(!m.is_stale());
        // What hostd does to the old file after the rename: pwrite 1 at STALE_OFFSET.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, &1u32.to_le_bytes(), STALE_OFFSET as u64).unwrap();
        assert!(m.is_stale());
        // A file mapped while already stale does not report stale (no reload loop).
        let m2 = Mapping::open(&cpath(&path), None).unwrap();
        assert!(!m2.is_stale());
    }
}
