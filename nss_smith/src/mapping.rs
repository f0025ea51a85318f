//! One validated copy of a cache file, in memory this process owns (issue 14, D1).
//!
//! Owns: loading the file through `smith_proto::cachefile::load` (trust checks: regular
//! file, owned by root, not group/world-writable, size within bounds; a read of exactly
//! `st_size` bytes into a private buffer, a file rewritten meanwhile refused, then
//! `CacheView::parse` and the body checksum) and keeping the view over that buffer.
//!
//! Why a private copy and not `mmap(MAP_SHARED)` of the file (the design before issue
//! 14): a shared mapping's validity belongs to whoever can write the file. Anyone who
//! truncates or rewrites it in place (`cp backup nss.cache`, `> nss.cache`, a restore
//! tool) makes every process that has it mapped die of SIGBUS at its next lookup. A
//! copy is only ours: nothing another process does to the file can fault it or change
//! it. It costs one read of the file per process per version (a 10,000-user cache is
//! 1.7 MB) and that much private memory in each process that resolves users (shared
//! with children after `fork`). A sealed memfd handed out by hostd would share the
//! pages, but then every new process would need a live hostd before its first lookup:
//! a stopped or wedged daemon would cost each `ls` the socket timeout. The hot path is
//! unchanged: no syscall, no allocation.
//!
//! Must never: map the file, keep its descriptor open, or hand out a view that outlives
//! its buffer.

#[cfg(test)]
use smith_proto::cache::CacheError;
use smith_proto::cache::CacheView;
pub use smith_proto::cachefile::{FileId, LoadError as MapError};
use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A validated private copy of a cache file.
pub struct Mapping {
    /// The view borrows `bytes`' heap buffer (declared first: dropped first).
    view: CacheView<'static>,
    bytes: Box<[u8]>,
    id: FileId,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("len", &self.bytes.len())
            .field("id", &self.id)
            .field("generation", &self.view.generation())
            .finish()
    }
}

fn as_path(p: &CStr) -> &Path {
    Path::new(OsStr::from_bytes(p.to_bytes()))
}

/// `stat` of `path`, or `None` if it does not exist / cannot be stat'ed.
pub fn stat_path(path: &CStr) -> Option<FileId> {
    smith_proto::cachefile::stat(as_path(path))
}

impl Mapping {
    /// Loads and validates `path`. `known_bad`: the identity of a file that failed
    /// before; if the file is still that one, fail without reading it again.
    pub fn open(path: &CStr, known_bad: Option<FileId>) -> Result<Mapping, MapError> {
        let (bytes, id) = smith_proto::cachefile::load(as_path(path), known_bad)?;
        // SAFETY: the slice points into the heap buffer owned by `bytes`, which is never
        // mutated, moved out of or freed while the `Mapping` exists (the Box is only
        // moved as a pointer; its buffer stays put), and `view` is dropped before
        // `bytes` (field order). `view` is never handed out with the 'static lifetime:
        // `view()` ties it to `&self`.
        let slice: &'static [u8] =
            unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        let view = CacheView::parse(slice).map_err(|e| MapError::Invalid(id, e))?;
        Ok(Mapping { view, bytes, id })
    }

    /// The validated view; borrowing it ties its lifetime to the copy.
    pub fn view(&self) -> &CacheView<'_> {
        &self.view
    }

    pub fn id(&self) -> FileId {
        self.id
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
        assert!(matches!(
            Mapping::open(&c, None),
            Err(MapError::Io(libc::ENOENT))
        ));
        let bytes = smith_proto::cache::build(&crate::lookup::tests::contents()).unwrap();
        write_file(&path, &bytes);
        if is_root() {
            let m = Mapping::open(&c, None).unwrap();
            assert!(m.view().user_by_name(b"alice").unwrap().is_some());
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
    fn a_file_truncated_or_rewritten_in_place_does_not_touch_the_copy() {
        if !is_root() {
            eprintln!("SKIPPED: needs root (the cache file must be root-owned)");
            return;
        }
        let dir = crate::test_dir("inplace");
        let path = dir.join("nss.cache");
        let bytes = smith_proto::cache::build(&crate::lookup::tests::contents()).unwrap();
        write_file(&path, &bytes);
        let m = Mapping::open(&cpath(&path), None).unwrap();
        // `> nss.cache`, `truncate`, `cp backup nss.cache`: the same inode, in place.
        // With a shared mapping (before issue 14) the next read died of SIGBUS.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(0).unwrap();
        assert!(m.view().user_by_name(b"alice").unwrap().is_some());
        std::os::unix::fs::FileExt::write_at(&f, &vec![0xAA; 8192], 0).unwrap();
        assert!(m.view().user_by_name(b"alice").unwrap().is_some());
    }
}
