//! Creating a Smith user's home directory from the skeleton, without ever following a
//! symlink an attacker could have planted.
//!
//! Owns: the rule that a home is created only as `<home_base>/<user>` (the cache's `dir`
//! must be exactly that, and the name a valid `UserName`), and the creation itself, all
//! relative to directory descriptors: `mkdirat` then `openat(O_DIRECTORY|O_NOFOLLOW)`;
//! the skeleton copied entry by entry with `fstatat(AT_SYMLINK_NOFOLLOW)` and
//! `openat(O_NOFOLLOW)` (regular files and directories only; symlinks, devices, fifos
//! and sockets are skipped; setuid/setgid/sticky bits dropped); everything chowned
//! through its own descriptor (`fchown`, the race-free form of
//! `fchownat(AT_SYMLINK_NOFOLLOW)`).
//!
//! Atomic (issue 14, D5): the home is built aside, under a hidden temporary name in
//! `home_base` (root-owned 0700 while it is filled), handed to the user (0700), then
//! renamed into place with `renameat2(RENAME_NOREPLACE)`. The home path therefore never
//! shows a half-built or root-owned tree: a failed copy (too large a skeleton, a full
//! disk) removes the temporary tree and leaves no home, so the next login tries again;
//! two first logins at once each build their own, one rename wins, the other removes
//! its copy and uses the winner's.
//!
//! Must never: touch an existing home (no chown, no chmod, no copy: an existing home
//! owned by someone else is only reported), follow a symlink at or below the home path,
//! create anything outside `home_base`, leave a temporary tree behind, or copy an
//! unbounded skeleton (at most [`MAX_ENTRIES`] entries, [`MAX_BYTES`] bytes,
//! [`MAX_DEPTH`] levels).
//!
//! `home_base` and `skel` themselves are trusted (root's configuration) and may be
//! symlinks (e.g. `/home -> /var/home`).

use smith_proto::UserName;
use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub const MAX_ENTRIES: usize = 10_000;
pub const MAX_BYTES: u64 = 64 << 20;
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HomeOutcome {
    /// A directory was already there: left untouched.
    Exists,
    /// A directory was already there, owned by another uid (a recycled name or uid):
    /// left untouched, reported.
    ExistsOwnedBy(u32),
    /// Created, with this many entries copied from the skeleton.
    Created { copied: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HomeError {
    /// The cache's home is not `<home_base>/<user>`.
    Outside { dir: String, expected: String },
    /// Something other than a directory (a symlink, a file...) is at the home path:
    /// possibly an attack; the session is refused.
    NotADirectory { path: String, what: &'static str },
    /// An I/O error (the session goes on without a home).
    Io(String),
}

impl HomeError {
    /// Whether the session must be refused (the home path was tampered with).
    pub fn is_security(&self) -> bool {
        matches!(self, HomeError::NotADirectory { .. })
    }
}

impl std::fmt::Display for HomeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HomeError::Outside { dir, expected } => write!(
                f,
                "home {dir:?} is not {expected:?}; not creating it (set home_base= to match hostd's home_base)"
            ),
            HomeError::NotADirectory { path, what } => {
                write!(f, "{path} is a {what}, not a directory; refusing to use or replace it")
            }
            HomeError::Io(e) => write!(f, "{e}"),
        }
    }
}

fn io(what: &str) -> HomeError {
    HomeError::Io(format!("{what}: {}", std::io::Error::last_os_error()))
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn open_dir_path(p: &Path) -> Result<OwnedFd, HomeError> {
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| HomeError::Io("path contains NUL".into()))?;
    // SAFETY: NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io(&format!("open {}", p.display())));
    }
    // SAFETY: freshly opened and owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; `Ok(None)` if it does not exist.
fn lstat_at(dir: &OwnedFd, name: &CStr) -> Result<Option<libc::stat>, HomeError> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid dirfd, NUL-terminated name, valid out-pointer.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return if errno() == libc::ENOENT {
            Ok(None)
        } else {
            Err(io("fstatat"))
        };
    }
    // SAFETY: fstatat succeeded.
    Ok(Some(unsafe { st.assume_init() }))
}

fn kind(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFLNK => "symlink",
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        _ => "device",
    }
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)`.
fn open_at(dir: &OwnedFd, name: &CStr, flags: i32, mode: libc::mode_t) -> Result<OwnedFd, i32> {
    // SAFETY: valid dirfd and NUL-terminated relative name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: freshly opened and owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn chown_chmod(fd: &OwnedFd, uid: u32, gid: u32, mode: libc::mode_t) -> Result<(), HomeError> {
    // SAFETY: valid fd.
    if unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) } != 0 {
        return Err(io("fchown"));
    }
    // SAFETY: valid fd. After chown: chown may clear setgid bits; we never set them.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode & 0o777) } != 0 {
        return Err(io("fchmod"));
    }
    Ok(())
}

/// Names in directory `dir` (not `.`/`..`).
fn list(dir: &OwnedFd) -> Result<Vec<CString>, HomeError> {
    // SAFETY: dup of a valid fd; fdopendir takes ownership of the duplicate.
    let dup = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io("dup"));
    }
    // SAFETY: `dup` is a directory fd we own; on success the DIR owns it.
    let d = unsafe { libc::fdopendir(dup) };
    if d.is_null() {
        // SAFETY: fdopendir failed, so we still own `dup`.
        unsafe { libc::close(dup) };
        return Err(io("fdopendir"));
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: `d` is a valid DIR*.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
        if names.len() > MAX_ENTRIES {
            break;
        }
    }
    // SAFETY: `d` is valid and closed once (closes `dup`).
    unsafe { libc::closedir(d) };
    names.sort();
    Ok(names)
}

struct Budget {
    entries: usize,
    bytes: u64,
}

fn copy_file(
    src: &OwnedFd,
    dst: &OwnedFd,
    name: &CStr,
    uid: u32,
    gid: u32,
    b: &mut Budget,
) -> Result<bool, HomeError> {
    let Ok(input) = open_at(src, name, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return Ok(false); // vanished or became a symlink: skip
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid fd and out-pointer.
    if unsafe { libc::fstat(input.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io("fstat skeleton file"));
    }
    // SAFETY: fstat succeeded.
    let st = unsafe { st.assume_init() };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(false);
    }
    let out = open_at(
        dst,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        0o600,
    )
    .map_err(|e| {
        HomeError::Io(format!(
            "create {:?}: {}",
            name,
            std::io::Error::from_raw_os_error(e)
        ))
    })?;
    let mut input = std::fs::File::from(input);
    let mut out = std::fs::File::from(out);
    let left = MAX_BYTES.saturating_sub(b.bytes);
    let mut buf = [0u8; 16 * 1024];
    let mut copied = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| HomeError::Io(format!("read skeleton: {e}")))?;
        if n == 0 {
            break;
        }
        copied += n as u64;
        if copied > left {
            return Err(HomeError::Io(format!(
                "skeleton is larger than {MAX_BYTES} bytes"
            )));
        }
        out.write_all(&buf[..n])
            .map_err(|e| HomeError::Io(format!("write home file: {e}")))?;
    }
    b.bytes += copied;
    chown_chmod(&OwnedFd::from(out), uid, gid, st.st_mode)?;
    Ok(true)
}

fn copy_tree(
    src: &OwnedFd,
    dst: &OwnedFd,
    uid: u32,
    gid: u32,
    depth: usize,
    b: &mut Budget,
) -> Result<(), HomeError> {
    for name in list(src)? {
        b.entries += 1;
        if b.entries > MAX_ENTRIES {
            return Err(HomeError::Io(format!(
                "skeleton has more than {MAX_ENTRIES} entries"
            )));
        }
        let Some(st) = lstat_at(src, &name)? else {
            continue;
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                copy_file(src, dst, &name, uid, gid, b)?;
            }
            libc::S_IFDIR if depth < MAX_DEPTH => {
                let Ok(sub_src) = open_at(src, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
                    continue;
                };
                // SAFETY: valid dirfd and NUL-terminated name.
                if unsafe { libc::mkdirat(dst.as_raw_fd(), name.as_ptr(), 0o700) } != 0 {
                    return Err(io(&format!("mkdir {:?}", name)));
                }
                let sub_dst =
                    open_at(dst, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|e| {
                        HomeError::Io(format!(
                            "open {:?}: {}",
                            name,
                            std::io::Error::from_raw_os_error(e)
                        ))
                    })?;
                copy_tree(&sub_src, &sub_dst, uid, gid, depth + 1, b)?;
                chown_chmod(&sub_dst, uid, gid, st.st_mode)?;
            }
            // Symlinks, devices, fifos, sockets, too-deep directories: not copied.
            _ => {}
        }
    }
    Ok(())
}

/// Removes `name` in `dir` and everything below it, never following a symlink.
fn remove_tree(dir: &OwnedFd, name: &CStr, depth: usize) {
    if depth <= MAX_DEPTH + 1 {
        if let Ok(sub) = open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
            if let Ok(names) = list(&sub) {
                for n in names {
                    match lstat_at(&sub, &n) {
                        Ok(Some(st)) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                            remove_tree(&sub, &n, depth + 1)
                        }
                        _ => {
                            // SAFETY: valid dirfd and NUL-terminated name.
                            unsafe { libc::unlinkat(sub.as_raw_fd(), n.as_ptr(), 0) };
                        }
                    }
                }
            }
        }
    }
    // SAFETY: valid dirfd and NUL-terminated name.
    unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) };
}

fn existing(st: &libc::stat, uid: u32, show: String) -> Result<HomeOutcome, HomeError> {
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(HomeError::NotADirectory {
            path: show,
            what: kind(st.st_mode),
        });
    }
    if st.st_uid != uid {
        return Ok(HomeOutcome::ExistsOwnedBy(st.st_uid));
    }
    Ok(HomeOutcome::Exists)
}

/// A hidden name for the tree being built, unique on this host.
fn temp_name(user: &str) -> Result<CString, HomeError> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    CString::new(format!(
        ".smith-home-{user}.{}.{ns}.{n}",
        std::process::id()
    ))
    .map_err(|_| HomeError::Io("name contains NUL".into()))
}

/// `renameat2(RENAME_NOREPLACE)`; `Err(errno)`.
fn rename_noreplace(dir: &OwnedFd, from: &CStr, to: &CStr) -> Result<(), i32> {
    // SAFETY: valid dirfd and NUL-terminated names.
    let rc = unsafe {
        libc::renameat2(
            dir.as_raw_fd(),
            from.as_ptr(),
            dir.as_raw_fd(),
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    match errno() {
        // A file system without RENAME_NOREPLACE: a plain rename, which still never
        // replaces a non-empty directory (ENOTEMPTY) and fails on a non-directory.
        libc::EINVAL | libc::ENOSYS => {
            // SAFETY: valid dirfd and NUL-terminated names.
            let rc = unsafe {
                libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr())
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(errno())
            }
        }
        e => Err(e),
    }
}

/// Makes sure `user`'s home exists. `dir` is the home from the cache.
pub fn ensure_home(
    base: &Path,
    skel: &Path,
    user: &UserName,
    dir: &str,
    uid: u32,
    gid: u32,
) -> Result<HomeOutcome, HomeError> {
    let expected = base.join(user.as_str());
    if Path::new(dir) != expected {
        return Err(HomeError::Outside {
            dir: dir.to_string(),
            expected: expected.display().to_string(),
        });
    }
    let name =
        CString::new(user.as_str()).map_err(|_| HomeError::Io("name contains NUL".into()))?;
    let base_fd = open_dir_path(base)?;
    let show = expected.display().to_string();
    if let Some(st) = lstat_at(&base_fd, &name)? {
        return existing(&st, uid, show);
    }
    // Built aside, root-owned 0700 while it is filled.
    let tmp = temp_name(user.as_str())?;
    // SAFETY: valid dirfd, NUL-terminated name.
    if unsafe { libc::mkdirat(base_fd.as_raw_fd(), tmp.as_ptr(), 0o700) } != 0 {
        return Err(io(&format!("mkdir a temporary home in {}", base.display())));
    }
    let built = build(&base_fd, &tmp, skel, uid, gid);
    let copied = match built {
        Ok(n) => n,
        Err(e) => {
            remove_tree(&base_fd, &tmp, 0);
            return Err(e);
        }
    };
    match rename_noreplace(&base_fd, &tmp, &name) {
        Ok(()) => Ok(HomeOutcome::Created { copied }),
        // Someone created it meanwhile (another first login): theirs is complete.
        Err(libc::EEXIST) | Err(libc::ENOTEMPTY) => {
            remove_tree(&base_fd, &tmp, 0);
            match lstat_at(&base_fd, &name)? {
                Some(st) => existing(&st, uid, show),
                None => Err(HomeError::Io(format!("{show} vanished during creation"))),
            }
        }
        Err(e) => {
            remove_tree(&base_fd, &tmp, 0);
            Err(HomeError::Io(format!(
                "rename into {show}: {}",
                std::io::Error::from_raw_os_error(e)
            )))
        }
    }
}

/// Fills the temporary home `tmp` from the skeleton and hands it to the user.
fn build(
    base_fd: &OwnedFd,
    tmp: &CStr,
    skel: &Path,
    uid: u32,
    gid: u32,
) -> Result<usize, HomeError> {
    let home = open_at(base_fd, tmp, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|e| {
        HomeError::Io(format!(
            "open the temporary home: {}",
            std::io::Error::from_raw_os_error(e)
        ))
    })?;
    let mut budget = Budget {
        entries: 0,
        bytes: 0,
    };
    let copied = match open_dir_path(skel) {
        Ok(skel_fd) => {
            copy_tree(&skel_fd, &home, uid, gid, 0, &mut budget)?;
            budget.entries
        }
        Err(_) => 0, // no skeleton: an empty home
    };
    chown_chmod(&home, uid, gid, 0o700)?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn is_root() -> bool {
        // SAFETY: no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn setup(label: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let d = crate::test_dir(label);
        let base = d.join("home");
        let skel = d.join("skel");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(skel.join(".config/app")).unwrap();
        std::fs::write(skel.join(".bashrc"), "# bashrc\n").unwrap();
        std::fs::write(skel.join(".config/app/settings"), "x=1\n").unwrap();
        std::fs::set_permissions(
            skel.join(".bashrc"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/shadow", skel.join("evil-link")).unwrap();
        (d, base, skel)
    }

    #[test]
    fn creates_home_from_skel_owned_by_the_user() {
        let (_d, base, skel) = setup("home-create");
        let alice = UserName::new("alice").unwrap();
        let dir = base.join("alice");
        let (uid, gid) = if is_root() {
            (200_001, 200_001)
        } else {
            // SAFETY: no preconditions.
            unsafe { (libc::geteuid(), libc::getegid()) }
        };
        let r = ensure_home(&base, &skel, &alice, dir.to_str().unwrap(), uid, gid).unwrap();
        assert_eq!(r, HomeOutcome::Created { copied: 5 });
        let md = std::fs::symlink_metadata(&dir).unwrap();
        assert!(md.is_dir());
        assert_eq!(md.mode() & 0o7777, 0o700);
        assert_eq!((md.uid(), md.gid()), (uid, gid));
        let rc = std::fs::symlink_metadata(dir.join(".bashrc")).unwrap();
        assert_eq!(rc.mode() & 0o7777, 0o755, "setuid bit dropped");
        assert_eq!((rc.uid(), rc.gid()), (uid, gid));
        assert_eq!(
            std::fs::read_to_string(dir.join(".config/app/settings")).unwrap(),
            "x=1\n"
        );
        assert_eq!(
            std::fs::symlink_metadata(dir.join(".config/app"))
                .unwrap()
                .uid(),
            uid
        );
        assert!(
            std::fs::symlink_metadata(dir.join("evil-link")).is_err(),
            "symlinks not copied"
        );
        // Second call: untouched.
        std::fs::write(dir.join("mine"), "data").unwrap();
        let r = ensure_home(&base, &skel, &alice, dir.to_str().unwrap(), uid, gid).unwrap();
        assert_eq!(r, HomeOutcome::Exists);
        assert!(dir.join("mine").exists());
    }

    #[test]
    fn refuses_symlink_file_and_outside_paths() {
        let (d, base, skel) = setup("home-attack");
        let target = d.join("target");
        std::fs::create_dir_all(&target).unwrap();
        std::os::unix::fs::symlink(&target, base.join("mallory")).unwrap();
        let mallory = UserName::new("mallory").unwrap();
        let e = ensure_home(
            &base,
            &skel,
            &mallory,
            base.join("mallory").to_str().unwrap(),
            1,
            1,
        )
        .unwrap_err();
        assert!(e.is_security(), "{e}");
        assert!(e.to_string().contains("symlink"), "{e}");
        assert_eq!(
            std::fs::read_dir(&target).unwrap().count(),
            0,
            "nothing written through the link"
        );
        std::fs::write(base.join("eve"), "").unwrap();
        let eve = UserName::new("eve").unwrap();
        let e =
            ensure_home(&base, &skel, &eve, base.join("eve").to_str().unwrap(), 1, 1).unwrap_err();
        assert!(e.is_security(), "{e}");
        let bob = UserName::new("bob").unwrap();
        for dir in [
            "/etc",
            "/home/../etc/bob",
            "/tmp/bob",
            &format!("{}/other", base.display()),
        ] {
            let e = ensure_home(&base, &skel, &bob, dir, 1, 1).unwrap_err();
            assert!(matches!(e, HomeError::Outside { .. }), "{dir}: {e}");
            assert!(!e.is_security());
        }
        assert!(!base.join("bob").exists());
    }

    #[test]
    fn missing_skel_gives_an_empty_home() {
        let (d, base, _skel) = setup("home-noskel");
        let carol = UserName::new("carol").unwrap();
        // SAFETY: no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let r = ensure_home(
            &base,
            &d.join("no-skel"),
            &carol,
            base.join("carol").to_str().unwrap(),
            uid,
            gid,
        )
        .unwrap();
        assert_eq!(r, HomeOutcome::Created { copied: 0 });
        assert_eq!(std::fs::read_dir(base.join("carol")).unwrap().count(), 0);
    }

    /// D5 (review experiment E5): a failed first creation (a skeleton over the size
    /// bound) used to leave `root:root 0700` at the home path, and every later login took
    /// it as existing: the user could never enter their home. Now nothing is left, and
    /// the next login (with a fixed skeleton) creates a complete home.
    #[test]
    fn a_failed_creation_leaves_no_home_and_the_next_login_builds_one() {
        if !is_root() {
            eprintln!("SKIPPED: needs root (chown)");
            return;
        }
        let (_d, base, skel) = setup("home-failed");
        let big = std::fs::File::create(skel.join("big")).unwrap();
        big.set_len(MAX_BYTES + 1).unwrap();
        let dave = UserName::new("dave").unwrap();
        let dir = base.join("dave");
        let e =
            ensure_home(&base, &skel, &dave, dir.to_str().unwrap(), 200_004, 200_004).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        assert!(!dir.exists(), "no half-built home at the path");
        assert_eq!(
            std::fs::read_dir(&base).unwrap().count(),
            0,
            "no temporary tree left behind"
        );
        std::fs::remove_file(skel.join("big")).unwrap();
        let r = ensure_home(&base, &skel, &dave, dir.to_str().unwrap(), 200_004, 200_004).unwrap();
        assert!(matches!(r, HomeOutcome::Created { .. }), "{r:?}");
        let md = std::fs::metadata(&dir).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o7777), (200_004, 0o700));
        assert!(dir.join(".bashrc").exists());
    }

    /// D5: first logins at once (Ansible opens several sessions): every caller sees a
    /// complete home owned by the user, never a half-built root-owned one.
    #[test]
    fn concurrent_first_logins_see_a_complete_home() {
        if !is_root() {
            eprintln!("SKIPPED: needs root (chown)");
            return;
        }
        let (_d, base, skel) = setup("home-race");
        for i in 0..200 {
            std::fs::write(skel.join(format!("f{i}")), vec![b'x'; 4096]).unwrap();
        }
        let erin = UserName::new("erin").unwrap();
        let dir = base.join("erin");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (base, skel, erin, dir) =
                    (base.clone(), skel.clone(), erin.clone(), dir.clone());
                std::thread::spawn(move || {
                    let r =
                        ensure_home(&base, &skel, &erin, dir.to_str().unwrap(), 200_005, 200_005)
                            .unwrap();
                    let md = std::fs::metadata(&dir).unwrap();
                    let n = std::fs::read_dir(&dir).unwrap().count();
                    (r, md.uid(), n)
                })
            })
            .collect();
        let mut created = 0;
        for t in threads {
            let (r, owner, entries) = t.join().unwrap();
            created += matches!(r, HomeOutcome::Created { .. }) as u32;
            assert_eq!(owner, 200_005, "never root-owned");
            assert_eq!(
                entries, 202,
                "never half-built (.bashrc, .config, 200 files)"
            );
        }
        assert_eq!(created, 1);
        assert_eq!(
            std::fs::read_dir(&base).unwrap().count(),
            1,
            "no temporary trees left"
        );
    }

    /// D18: an existing home owned by another uid is left alone and reported.
    #[test]
    fn an_existing_home_of_another_owner_is_reported() {
        let (_d, base, skel) = setup("home-owner");
        let frank = UserName::new("frank").unwrap();
        let dir = base.join("frank");
        std::fs::create_dir(&dir).unwrap();
        let me = std::fs::metadata(&dir).unwrap().uid();
        let r = ensure_home(&base, &skel, &frank, dir.to_str().unwrap(), me + 1, me + 1).unwrap();
        assert_eq!(r, HomeOutcome::ExistsOwnedBy(me));
    }
}
