//! Placing a passwd or group entry into the caller's buffer, the way glibc's `*_r`
//! functions require: every string NUL-terminated inside `buffer`, and for groups a
//! NULL-terminated array of `char *` (aligned for pointers) pointing at member strings
//! that are also inside `buffer`.
//!
//! Owns: the byte layout and the "too small" decision (the caller then answers
//! `NSS_STATUS_TRYAGAIN` + `ERANGE` so glibc retries with a bigger buffer).
//!
//! Must never: write outside the slice it is given, allocate, or panic. It is 100% safe
//! Rust: pointer values for `gr_mem` are computed as integers from the slice's address,
//! and the FFI layer turns the returned offsets into pointers.

use smith_proto::cache::CacheError;

/// Why an entry could not be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillError {
    /// The buffer is too small: answer `TRYAGAIN`/`ERANGE`.
    TooSmall,
    /// A field contains a NUL byte or a member reference is broken: the data cannot be
    /// trusted (cache corruption or a bad daemon answer).
    Corrupt,
}

/// The fields of a passwd entry, borrowed from the cache or a socket answer.
#[derive(Debug, Clone, Copy)]
pub struct PasswdFields<'a> {
    pub name: &'a [u8],
    pub uid: u32,
    pub gid: u32,
    pub gecos: &'a [u8],
    pub dir: &'a [u8],
    pub shell: &'a [u8],
}

/// Offsets (from the start of the buffer) of each string of a placed passwd entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswdLayout {
    pub name: usize,
    pub passwd: usize,
    pub uid: u32,
    pub gid: u32,
    pub gecos: usize,
    pub dir: usize,
    pub shell: usize,
}

/// Offsets of a placed group entry; `members` is the offset of the pointer array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLayout {
    pub name: usize,
    pub passwd: usize,
    pub gid: u32,
    pub members: usize,
    pub n_members: usize,
}

/// The password field Smith reports: no password login exists (logins are by
/// certificate), and `*` (unlike `x`) tells pam_unix not to look for a shadow entry.
pub const NO_PASSWORD: &[u8] = b"*";

const PTR: usize = std::mem::size_of::<usize>();

/// Sequential writer over the caller's buffer.
struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    /// Appends `s` and a NUL; returns its offset.
    fn put_str(&mut self, s: &[u8]) -> Result<usize, FillError> {
        if smith_proto::cache::has_nul(s) {
            return Err(FillError::Corrupt);
        }
        let start = self.pos;
        let end = start
            .checked_add(s.len())
            .and_then(|e| e.checked_add(1))
            .ok_or(FillError::TooSmall)?;
        let dst = self.buf.get_mut(start..end).ok_or(FillError::TooSmall)?;
        let (body, nul) = dst.split_at_mut(s.len());
        body.copy_from_slice(s);
        nul[0] = 0;
        self.pos = end;
        Ok(start)
    }
}

/// Places a passwd entry: name, `*`, gecos, dir, shell. A field with a NUL byte is
/// `Corrupt`.
pub fn fill_passwd(f: &PasswdFields<'_>, buf: &mut [u8]) -> Result<PasswdLayout, FillError> {
    use smith_proto::cache::has_nul;
    if has_nul(f.name) || has_nul(f.gecos) || has_nul(f.dir) || has_nul(f.shell) {
        return Err(FillError::Corrupt);
    }
    fill_passwd_nul_free(f, buf)
}

/// [`fill_passwd`] for fields already known to hold no NUL byte: those of a
/// `smith_proto::cache::UserEntry` (the view refuses a record with one, and the copy
/// it reads cannot change). Scanning them again cost every getpwnam/getpwuid hit a
/// second pass over its strings. A NUL that got through would only cut a C string
/// short inside the buffer; nothing is written outside it either way.
pub fn fill_passwd_nul_free(
    f: &PasswdFields<'_>,
    buf: &mut [u8],
) -> Result<PasswdLayout, FillError> {
    // The hot path of every getpwnam/getpwuid: one size test, then copies with no
    // further decisions.
    if buf.len() < passwd_len(f) {
        return Err(FillError::TooSmall);
    }
    let mut pos = 0usize;
    let mut put = |s: &[u8]| {
        let start = pos;
        buf[start..start + s.len()].copy_from_slice(s);
        buf[start + s.len()] = 0;
        pos = start + s.len() + 1;
        start
    };
    Ok(PasswdLayout {
        name: put(f.name),
        passwd: put(NO_PASSWORD),
        uid: f.uid,
        gid: f.gid,
        gecos: put(f.gecos),
        dir: put(f.dir),
        shell: put(f.shell),
    })
}

/// Bytes [`fill_passwd`] needs for `f` (used by tests and diagnostics).
pub fn passwd_len(f: &PasswdFields<'_>) -> usize {
    f.name.len() + NO_PASSWORD.len() + f.gecos.len() + f.dir.len() + f.shell.len() + 5
}

/// Places a group entry. `members` is called twice (once to measure, once to copy) and
/// must yield the same names both times.
///
/// Layout: padding to pointer alignment, `n + 1` pointer slots, then the name, `*`, and
/// the member strings. Slot `i` holds the absolute address of member `i`; the last slot
/// is NULL.
pub fn fill_group<'m, I>(
    name: &[u8],
    gid: u32,
    members: impl Fn() -> I,
    buf: &mut [u8],
) -> Result<GroupLayout, FillError>
where
    I: Iterator<Item = Result<&'m [u8], CacheError>>,
{
    // First pass: count and measure, so a too-small buffer is detected before writing.
    let mut n: usize = 0;
    let mut strings: usize = name.len() + 1 + NO_PASSWORD.len() + 1;
    for m in members() {
        let m = m.map_err(|_| FillError::Corrupt)?;
        n += 1;
        strings = strings
            .checked_add(m.len() + 1)
            .ok_or(FillError::TooSmall)?;
    }
    let base = buf.as_ptr() as usize;
    let pad = (PTR - base % PTR) % PTR;
    let slots = n
        .checked_add(1)
        .and_then(|k| k.checked_mul(PTR))
        .ok_or(FillError::TooSmall)?;
    let needed = pad
        .checked_add(slots)
        .and_then(|k| k.checked_add(strings))
        .ok_or(FillError::TooSmall)?;
    if buf.len() < needed {
        return Err(FillError::TooSmall);
    }
    let members_off = pad;
    let mut w = Writer {
        buf,
        pos: pad + slots,
    };
    let name_off = w.put_str(name)?;
    let passwd_off = w.put_str(NO_PASSWORD)?;
    let mut i = 0usize;
    for m in members() {
        if i == n {
            // The second pass yields more than the first: refuse rather than overflow.
            return Err(FillError::Corrupt);
        }
        let off = w.put_str(m.map_err(|_| FillError::Corrupt)?)?;
        let slot = members_off + i * PTR;
        w.buf[slot..slot + PTR].copy_from_slice(&(base + off).to_ne_bytes());
        i += 1;
    }
    if i != n {
        return Err(FillError::Corrupt);
    }
    let last = members_off + n * PTR;
    w.buf[last..last + PTR].copy_from_slice(&0usize.to_ne_bytes());
    Ok(GroupLayout {
        name: name_off,
        passwd: passwd_off,
        gid,
        members: members_off,
        n_members: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr_at(buf: &[u8], off: usize) -> &[u8] {
        let end = buf[off..].iter().position(|&b| b == 0).unwrap();
        &buf[off..off + end]
    }

    fn alice() -> PasswdFields<'static> {
        PasswdFields {
            name: b"alice",
            uid: 200_001,
            gid: 200_001,
            gecos: b"Alice Liddell",
            dir: b"/home/alice",
            shell: b"/bin/bash",
        }
    }

    #[test]
    fn passwd_erange_at_every_size_then_exact_fit() {
        let f = alice();
        let need = passwd_len(&f);
        for len in 0..need {
            let mut buf = vec![0xAAu8; len];
            assert_eq!(
                fill_passwd(&f, &mut buf),
                Err(FillError::TooSmall),
                "len {len}"
            );
        }
        for len in [need, need + 1, need + 100] {
            let mut buf = vec![0xAAu8; len];
            let l = fill_passwd(&f, &mut buf).unwrap();
            assert_eq!(cstr_at(&buf, l.name), b"alice");
            assert_eq!(cstr_at(&buf, l.passwd), b"*");
            assert_eq!(cstr_at(&buf, l.gecos), b"Alice Liddell");
            assert_eq!(cstr_at(&buf, l.dir), b"/home/alice");
            assert_eq!(cstr_at(&buf, l.shell), b"/bin/bash");
            assert_eq!((l.uid, l.gid), (200_001, 200_001));
            // Nothing written past what was needed.
            assert!(buf[need..].iter().all(|&b| b == 0xAA));
        }
    }

    #[test]
    fn empty_fields_are_fine_and_nul_is_refused() {
        let mut f = alice();
        f.gecos = b"";
        let mut buf = [0u8; 64];
        let l = fill_passwd(&f, &mut buf).unwrap();
        assert_eq!(cstr_at(&buf, l.gecos), b"");
        f.shell = b"/bin/\0sh";
        assert_eq!(fill_passwd(&f, &mut buf), Err(FillError::Corrupt));
    }

    fn read_members(buf: &[u8], l: &GroupLayout) -> Vec<Vec<u8>> {
        let base = buf.as_ptr() as usize;
        let mut out = Vec::new();
        for i in 0.. {
            let s = l.members + i * PTR;
            let mut a = [0u8; PTR];
            a.copy_from_slice(&buf[s..s + PTR]);
            let p = usize::from_ne_bytes(a);
            if p == 0 {
                assert_eq!(i, l.n_members);
                break;
            }
            assert!(
                p >= base && p < base + buf.len(),
                "pointer inside the buffer"
            );
            out.push(cstr_at(buf, p - base).to_vec());
        }
        out
    }

    #[test]
    fn group_erange_at_every_size_and_every_alignment() {
        let members: Vec<&[u8]> = vec![b"alice", b"bob", b"oscar-the-operator"];
        let mk = || members.iter().map(|m| Ok::<&[u8], CacheError>(*m));
        let mut backing = vec![0u8; 512];
        for misalign in 0..PTR {
            let mut exact = None;
            for len in 0..300 {
                let buf = &mut backing[misalign..misalign + len];
                match fill_group(b"dev", 200_010, mk, buf) {
                    Err(FillError::TooSmall) => assert!(exact.is_none(), "monotonic"),
                    Ok(l) => {
                        exact.get_or_insert(len);
                        assert_eq!((buf.as_ptr() as usize + l.members) % PTR, 0, "aligned");
                        assert_eq!(cstr_at(buf, l.name), b"dev");
                        assert_eq!(cstr_at(buf, l.passwd), b"*");
                        assert_eq!(l.gid, 200_010);
                        assert_eq!(
                            read_members(buf, &l),
                            vec![
                                b"alice".to_vec(),
                                b"bob".to_vec(),
                                b"oscar-the-operator".to_vec()
                            ]
                        );
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
            let exact = exact.expect("fits at some size");
            let pad = (PTR - (backing[misalign..].as_ptr() as usize) % PTR) % PTR;
            assert_eq!(exact, pad + 4 * PTR + 4 + 2 + 6 + 4 + 19);
        }
    }

    #[test]
    fn group_without_members_has_just_the_null_slot() {
        let mut buf = [0u8; 64];
        let l = fill_group(b"alice", 200_001, std::iter::empty, &mut buf).unwrap();
        assert_eq!(l.n_members, 0);
        assert!(read_members(&buf, &l).is_empty());
    }

    #[test]
    fn corrupt_member_is_refused() {
        let mut buf = [0u8; 256];
        let mk = || {
            vec![
                Ok(&b"alice"[..]),
                Err(CacheError::Corrupt("group member index out of range")),
            ]
            .into_iter()
        };
        assert_eq!(fill_group(b"dev", 1, mk, &mut buf), Err(FillError::Corrupt));
        let nul = || std::iter::once(Ok::<&[u8], CacheError>(&b"a\0b"[..]));
        assert_eq!(
            fill_group(b"dev", 1, nul, &mut buf),
            Err(FillError::Corrupt)
        );
    }
}
