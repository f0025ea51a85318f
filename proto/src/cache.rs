//! The NSS cache file: hostd writes it, `libnss_smith`, `pam_smith` and
//! `smith-host principals` read it (memory-mapped), so lookups never need the daemon.
//!
//! # Layout, format 2 (all integers little-endian)
//!
//! ```text
//! [0, HEADER_LEN)     header (see `Header`); bytes [0,128) and [144,256) are covered by
//!                     a checksum at 128; the `stale` word at STALE_OFFSET is not (it is
//!                     flipped in place by the writer after a replacement)
//! users               a blob of variable-length user records (below), each 8-aligned
//! user offsets        n_users u32: byte offset of user i's record in the blob
//! user name index     user_index_cap u64 slots: 0 = empty, else
//!                     (name_hash >> 32) << 32 | (record offset + 1)
//! user id index       user_index_cap u64 slots: 0 = empty, else uid << 32 | (offset + 1)
//! groups              n_groups records of GROUP_RECORD_LEN bytes
//! group name index    group_index_cap u32 slots (0 = empty, else record index + 1)
//! group id index      group_index_cap u32 slots
//! u32 pool            member indexes (user numbers) of groups
//! strings             group names, host name and tags, no NUL inside
//! ```
//!
//! A user record is everything one lookup needs, in one or two cache lines:
//!
//! ```text
//! 0  u32 index (enumeration number)   4  u32 uid        8  u32 gid
//! 12 u8 level   13 u8 name_len   14 u16 gecos_len   16 u16 dir_len   18 u16 shell_len
//! 20 u32 n_gids
//! 24 name, gecos, dir, shell (no NUL), zero padding to 4, n_gids u32 (supplementary)
//! ```
//!
//! Indexes are open-addressing tables with linear probing; capacities are powers of two
//! at least twice the number of records, so a miss ends at the first empty slot. The
//! user index slots carry the record's byte offset (no indirection) and a tag (the
//! high half of the name hash, or the uid itself), so a probe touches a record only
//! when the tag matches: a hit reads one slot and one record.
//!
//! Every user also has a private group with the same name and id; it is not stored but
//! synthesized by the reader ([`CacheView::group_by_name`] falls back to users).
//!
//! # Replacement protocol
//!
//! hostd writes a new file beside the old one, fsyncs it, renames it over the old path,
//! then sets the `stale` word of the *old* file to 1. Readers that mapped the old file
//! see the flag with a plain memory load (no syscall) and map the new one.
//!
//! # Safety of reading
//!
//! [`CacheView::parse`] checks the header, the checksum, the file length and that every
//! section lies inside the buffer (O(1): a reader maps the file once per process and
//! must not walk 10,000 records to answer its first question). Every slot, record,
//! string and list reference is checked again on access, against the section it must
//! lie in. A truncated, corrupted or hostile file yields [`CacheError`] (or a wrong but
//! bounded answer for a file whose checksummed header is intact but whose body was
//! altered), never a panic or an out-of-bounds read.

use crate::ids::is_allowed_id;
use crate::tags::Level;
use std::fmt;

pub const MAGIC: [u8; 8] = *b"SMITHNSS";
/// Format 2: inline user records and tagged u64 user index slots (format 1 had fixed
/// user records with strings in the shared table and u32 slots).
pub const FORMAT_VERSION: u32 = 2;
pub const HEADER_LEN: usize = 256;
/// Bytes of the header covered by the checksum: [0, CHECKED_LEN) and
/// [CHECKED_TAIL, HEADER_LEN).
const CHECKED_LEN: usize = 128;
const CHECKED_TAIL: usize = 144;
const CHECKSUM_OFFSET: usize = 128;
/// Offset of the `stale` u32 in the header (0 = current, 1 = replaced by a newer file).
/// Written for readers that map the file (nss_smith before issue 14); current readers
/// copy the file and do not look at it.
pub const STALE_OFFSET: usize = 136;
/// Offset of the u64 body checksum ([`body_checksum`] of `[HEADER_LEN, file_len)`),
/// inside the checksummed header. 0 = not computed (files of earlier writers).
pub const BODY_SUM_OFFSET: usize = 152;
/// Fixed part of a user record (the strings and gids follow it).
pub const USER_RECORD_HEAD: usize = 24;
pub const GROUP_RECORD_LEN: usize = 24;
/// Largest cache file accepted (64 MiB: ~500,000 users).
pub const MAX_FILE_LEN: usize = 64 << 20;
/// Longest string accepted in a record (gecos, home, shell).
pub const MAX_FIELD_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    TooShort(usize),
    BadMagic,
    UnsupportedFormat(u32),
    BadChecksum,
    /// The records do not match the header's body checksum (a torn read or a bit flip).
    BadBodyChecksum,
    LengthMismatch {
        header: u64,
        actual: usize,
    },
    BadLayout(&'static str),
    Corrupt(&'static str),
    /// Writer-side: the contents are not acceptable.
    Invalid(String),
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::TooShort(n) => write!(f, "cache file is truncated ({n} bytes)"),
            CacheError::BadMagic => write!(f, "not a Smith cache file (bad magic)"),
            CacheError::UnsupportedFormat(v) => write!(
                f,
                "unsupported cache format {v} (this reader knows {FORMAT_VERSION}; \
                 restart smith-hostd so it rewrites the file)"
            ),
            CacheError::BadChecksum => write!(f, "cache header checksum mismatch"),
            CacheError::BadBodyChecksum => write!(
                f,
                "cache records do not match their checksum (rewritten while read, or corrupt)"
            ),
            CacheError::LengthMismatch { header, actual } => write!(
                f,
                "cache file is {actual} bytes but its header says {header} (truncated?)"
            ),
            CacheError::BadLayout(what) => write!(f, "cache layout is invalid: {what}"),
            CacheError::Corrupt(what) => write!(f, "cache record is corrupt: {what}"),
            CacheError::Invalid(what) => write!(f, "cannot build cache: {what}"),
        }
    }
}

impl std::error::Error for CacheError {}

/// FNV-1a, 64 bit: the header checksum.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(0xcbf2_9ce4_8422_2325, bytes)
}

fn fnv1a_from(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The body checksum: four independent lanes of a multiply-xorshift over 8-byte words
/// (so it runs near memory speed on a private copy of the file), the length and a final
/// avalanche. Never 0 (0 in the header means "not computed").
pub fn body_checksum(body: &[u8]) -> u64 {
    const M: u64 = 0xbf58_476d_1ce4_e5b9;
    #[inline]
    fn word(c: &[u8], o: usize) -> u64 {
        u64::from_le_bytes([
            c[o],
            c[o + 1],
            c[o + 2],
            c[o + 3],
            c[o + 4],
            c[o + 5],
            c[o + 6],
            c[o + 7],
        ])
    }
    let mut lanes: [u64; 4] = [
        0x9e37_79b9_7f4a_7c15,
        0x6a09_e667_f3bc_c908,
        0xbb67_ae85_84ca_a73b,
        0x3c6e_f372_fe94_f82b,
    ];
    let mix = |lanes: &mut [u64; 4], c: &[u8]| {
        for (i, lane) in lanes.iter_mut().enumerate() {
            *lane = (*lane ^ word(c, i * 8)).wrapping_mul(M);
            *lane ^= *lane >> 29;
        }
    };
    let mut chunks = body.chunks_exact(32);
    for c in &mut chunks {
        mix(&mut lanes, c);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 32];
        last[..rest.len()].copy_from_slice(rest);
        mix(&mut lanes, &last);
    }
    let mut h = body.len() as u64;
    for lane in lanes {
        h = (h ^ lane).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
    }
    h.max(1)
}

fn header_checksum(b: &[u8]) -> u64 {
    fnv1a_from(fnv1a(&b[..CHECKED_LEN]), &b[CHECKED_TAIL..HEADER_LEN])
}

/// The name hash of the indexes: 8 bytes at a time (names are at most 32 bytes), a
/// multiply-xorshift per word and a final avalanche. Stable: it is part of the format.
#[inline]
pub fn name_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 31;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        h = (h ^ le_tail(rest)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 31;
    }
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 29)
}

/// The 1–7 bytes of `rest` as a little-endian word padded with zeros, from two
/// overlapping loads (the overlap holds the same bytes, so OR-ing them is exact).
/// Copying them into a zeroed `[u8; 8]` first cost a `memcpy` call and a stalled
/// load on every lookup by name.
#[inline]
fn le_tail(rest: &[u8]) -> u64 {
    let n = rest.len();
    if n >= 4 {
        let lo = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        let hi = u32::from_le_bytes([rest[n - 4], rest[n - 3], rest[n - 2], rest[n - 1]]) as u64;
        lo | hi << (8 * (n - 4))
    } else if n >= 2 {
        let lo = u16::from_le_bytes([rest[0], rest[1]]) as u64;
        let hi = u16::from_le_bytes([rest[n - 2], rest[n - 1]]) as u64;
        lo | hi << (8 * (n - 2))
    } else {
        rest.first().map_or(0, |&b| b as u64)
    }
}

#[inline]
fn id_hash(id: u32) -> u64 {
    (id as u64 ^ 0x5bd1_e995).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17
}

/// Whether `s` contains a NUL byte (a word at a time: fields are short and this runs on
/// every lookup).
#[inline]
pub fn has_nul(s: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        if w.wrapping_sub(LO) & !w & HI != 0 {
            return true;
        }
    }
    chunks.remainder().contains(&0)
}

#[inline]
fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

#[inline]
fn rd_u64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

#[inline]
fn rd_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Parsed header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    generation: u64,
    snapshot_version: u64,
    written_at: u64,
    file_len: u64,
    n_users: u32,
    n_groups: u32,
    user_index_cap: u32,
    group_index_cap: u32,
    users_off: u32,
    user_name_idx_off: u32,
    user_id_idx_off: u32,
    groups_off: u32,
    group_name_idx_off: u32,
    group_id_idx_off: u32,
    u32s_off: u32,
    u32s_count: u32,
    strings_off: u32,
    strings_len: u32,
    host_name: (u32, u32),
    host_tags: (u32, u32),
    sudo_gid: u32,
    user_offsets_off: u32,
    users_len: u32,
    body_sum: u64,
}

impl Header {
    fn read(b: &[u8]) -> Option<Header> {
        let u = |o| rd_u32(b, o);
        Some(Header {
            generation: rd_u64(b, 16)?,
            snapshot_version: rd_u64(b, 24)?,
            written_at: rd_u64(b, 32)?,
            file_len: rd_u64(b, 40)?,
            n_users: u(48)?,
            n_groups: u(52)?,
            user_index_cap: u(56)?,
            group_index_cap: u(60)?,
            users_off: u(64)?,
            user_name_idx_off: u(68)?,
            user_id_idx_off: u(72)?,
            groups_off: u(76)?,
            group_name_idx_off: u(80)?,
            group_id_idx_off: u(84)?,
            u32s_off: u(88)?,
            u32s_count: u(92)?,
            strings_off: u(96)?,
            strings_len: u(100)?,
            host_name: (u(104)?, u(108)?),
            host_tags: (u(112)?, u(116)?),
            sudo_gid: u(120)?,
            user_offsets_off: u(144)?,
            users_len: u(148)?,
            body_sum: rd_u64(b, BODY_SUM_OFFSET)?,
        })
    }

    fn write(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&MAGIC);
        let mut put32 = |o: usize, v: u32| out[o..o + 4].copy_from_slice(&v.to_le_bytes());
        put32(8, FORMAT_VERSION);
        put32(12, HEADER_LEN as u32);
        put32(48, self.n_users);
        put32(52, self.n_groups);
        put32(56, self.user_index_cap);
        put32(60, self.group_index_cap);
        put32(64, self.users_off);
        put32(68, self.user_name_idx_off);
        put32(72, self.user_id_idx_off);
        put32(76, self.groups_off);
        put32(80, self.group_name_idx_off);
        put32(84, self.group_id_idx_off);
        put32(88, self.u32s_off);
        put32(92, self.u32s_count);
        put32(96, self.strings_off);
        put32(100, self.strings_len);
        put32(104, self.host_name.0);
        put32(108, self.host_name.1);
        put32(112, self.host_tags.0);
        put32(116, self.host_tags.1);
        put32(120, self.sudo_gid);
        put32(144, self.user_offsets_off);
        put32(148, self.users_len);
        out[16..24].copy_from_slice(&self.generation.to_le_bytes());
        out[24..32].copy_from_slice(&self.snapshot_version.to_le_bytes());
        out[32..40].copy_from_slice(&self.written_at.to_le_bytes());
        out[40..48].copy_from_slice(&self.file_len.to_le_bytes());
        out[BODY_SUM_OFFSET..BODY_SUM_OFFSET + 8].copy_from_slice(&self.body_sum.to_le_bytes());
        out[STALE_OFFSET..STALE_OFFSET + 4].copy_from_slice(&0u32.to_le_bytes());
        let sum = header_checksum(out);
        out[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 8].copy_from_slice(&sum.to_le_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

/// A validated view of a cache file's bytes.
#[derive(Clone, Copy)]
pub struct CacheView<'a> {
    buf: &'a [u8],
    /// The user record blob (`buf[users_off..users_off + users_len]`).
    users: &'a [u8],
    h: Header,
}

/// A user as stored: passwd fields plus the user's access level on this host and its
/// supplementary group ids.
///
/// One read from a [`CacheView`] guarantees: `name`, `gecos`, `dir` and `shell` hold no
/// NUL byte, and `uid` and `gid` pass [`is_allowed_id`] (a record that fails either is
/// [`CacheError::Corrupt`]). The name rule and `level` are the caller's to check.
#[derive(Debug, Clone, Copy)]
pub struct UserEntry<'a> {
    pub index: u32,
    pub name: &'a [u8],
    pub uid: u32,
    pub gid: u32,
    pub gecos: &'a [u8],
    pub dir: &'a [u8],
    pub shell: &'a [u8],
    /// `None` only in a corrupt file (such users are refused by every reader).
    pub level: Option<Level>,
    pub gids: U32List<'a>,
}

/// A group: an explicit one (with members) or a user's private group (no members).
#[derive(Debug, Clone, Copy)]
pub struct GroupEntry<'a> {
    pub name: &'a [u8],
    pub gid: u32,
    pub members: Members<'a>,
}

/// A list of u32 (little-endian) inside the file.
#[derive(Debug, Clone, Copy)]
pub struct U32List<'a> {
    bytes: &'a [u8],
}

impl<'a> U32List<'a> {
    pub fn len(&self) -> usize {
        self.bytes.len() / 4
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    pub fn get(&self, i: usize) -> Option<u32> {
        rd_u32(self.bytes, i.checked_mul(4)?)
    }
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// Group members: user numbers resolved to names on access.
#[derive(Clone, Copy)]
pub struct Members<'a> {
    view: Option<CacheView<'a>>,
    list: U32List<'a>,
}

impl fmt::Debug for Members<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Members")
            .field("len", &self.list.len())
            .finish()
    }
}

impl<'a> Members<'a> {
    pub fn len(&self) -> usize {
        self.list.len()
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    /// Member names. A member index that points nowhere yields an error.
    pub fn iter(&self) -> impl Iterator<Item = Result<&'a [u8], CacheError>> + 'a {
        let m = *self;
        m.list.iter().map(move |idx| match m.view {
            Some(v) => v.user(idx).map(|u| u.name),
            None => Err(CacheError::Corrupt("group member index out of range")),
        })
    }
}

fn str_at(
    buf: &[u8],
    strings_off: u32,
    strings_len: u32,
    off: u32,
    len: u32,
) -> Result<&[u8], CacheError> {
    let end = off
        .checked_add(len)
        .ok_or(CacheError::Corrupt("string reference overflows"))?;
    if end > strings_len || len as usize > MAX_FIELD_LEN {
        return Err(CacheError::Corrupt("string reference out of range"));
    }
    let start = strings_off as usize + off as usize;
    let s = buf
        .get(start..start + len as usize)
        .ok_or(CacheError::Corrupt("string reference out of range"))?;
    if has_nul(s) {
        return Err(CacheError::Corrupt("string contains NUL"));
    }
    Ok(s)
}

fn section_fits(buf_len: usize, off: u32, count: u64, item: u64) -> bool {
    let end = (off as u64).saturating_add(count.saturating_mul(item));
    off as usize >= HEADER_LEN && end <= buf_len as u64
}

impl<'a> CacheView<'a> {
    /// Validates the header and layout of `buf` (a whole cache file).
    pub fn parse(buf: &'a [u8]) -> Result<Self, CacheError> {
        if buf.len() < HEADER_LEN {
            return Err(CacheError::TooShort(buf.len()));
        }
        if buf[0..8] != MAGIC {
            return Err(CacheError::BadMagic);
        }
        let format = rd_u32(buf, 8).unwrap_or(0);
        if format != FORMAT_VERSION {
            return Err(CacheError::UnsupportedFormat(format));
        }
        let sum = rd_u64(buf, CHECKSUM_OFFSET).unwrap_or(0);
        if sum != header_checksum(buf) {
            return Err(CacheError::BadChecksum);
        }
        let h = Header::read(buf).ok_or(CacheError::TooShort(buf.len()))?;
        if h.file_len != buf.len() as u64 {
            return Err(CacheError::LengthMismatch {
                header: h.file_len,
                actual: buf.len(),
            });
        }
        if buf.len() > MAX_FILE_LEN {
            return Err(CacheError::BadLayout("file too large"));
        }
        let pow2 = |c: u32| c.is_power_of_two();
        if !pow2(h.user_index_cap) || !pow2(h.group_index_cap) {
            return Err(CacheError::BadLayout(
                "index capacity is not a power of two",
            ));
        }
        if (h.user_index_cap as u64) < 2 * h.n_users as u64
            || (h.group_index_cap as u64) < 2 * h.n_groups as u64
        {
            return Err(CacheError::BadLayout("index too small"));
        }
        let n = buf.len();
        let ok = section_fits(n, h.users_off, h.users_len as u64, 1)
            && section_fits(n, h.user_offsets_off, h.n_users as u64, 4)
            && section_fits(n, h.user_name_idx_off, h.user_index_cap as u64, 8)
            && section_fits(n, h.user_id_idx_off, h.user_index_cap as u64, 8)
            && section_fits(n, h.groups_off, h.n_groups as u64, GROUP_RECORD_LEN as u64)
            && section_fits(n, h.group_name_idx_off, h.group_index_cap as u64, 4)
            && section_fits(n, h.group_id_idx_off, h.group_index_cap as u64, 4)
            && section_fits(n, h.u32s_off, h.u32s_count as u64, 4)
            && section_fits(n, h.strings_off, h.strings_len as u64, 1);
        if !ok {
            return Err(CacheError::BadLayout("a section lies outside the file"));
        }
        if (h.users_len as u64) < h.n_users as u64 * USER_RECORD_HEAD as u64 {
            return Err(CacheError::BadLayout("user records too short"));
        }
        let users = &buf[h.users_off as usize..h.users_off as usize + h.users_len as usize];
        let view = CacheView { buf, users, h };
        view.str(h.host_name.0, h.host_name.1)?;
        view.str(h.host_tags.0, h.host_tags.1)?;
        Ok(view)
    }

    pub fn generation(&self) -> u64 {
        self.h.generation
    }
    pub fn snapshot_version(&self) -> u64 {
        self.h.snapshot_version
    }
    /// Unix time (seconds) at which hostd wrote the file.
    pub fn written_at(&self) -> u64 {
        self.h.written_at
    }
    pub fn n_users(&self) -> u32 {
        self.h.n_users
    }
    pub fn n_groups(&self) -> u32 {
        self.h.n_groups
    }
    /// gid of the `smith-sudo` group (0 when the snapshot has none).
    pub fn sudo_gid(&self) -> u32 {
        self.h.sudo_gid
    }
    pub fn host_name(&self) -> &'a [u8] {
        self.str(self.h.host_name.0, self.h.host_name.1)
            .unwrap_or(b"")
    }
    /// The host's tags as `k=v,k=v`.
    pub fn host_tags(&self) -> &'a [u8] {
        self.str(self.h.host_tags.0, self.h.host_tags.1)
            .unwrap_or(b"")
    }
    /// Checks the records against the header's body checksum (O(size): readers that
    /// copy the file call it once per copy). A file without one (0, an earlier writer)
    /// passes.
    pub fn verify_body(&self) -> Result<(), CacheError> {
        if self.h.body_sum == 0 {
            return Ok(());
        }
        let body = self.buf.get(HEADER_LEN..).unwrap_or(&[]);
        if body_checksum(body) != self.h.body_sum {
            return Err(CacheError::BadBodyChecksum);
        }
        Ok(())
    }

    fn str(&self, off: u32, len: u32) -> Result<&'a [u8], CacheError> {
        str_at(self.buf, self.h.strings_off, self.h.strings_len, off, len)
    }

    fn slot(&self, idx_off: u32, i: u32) -> u32 {
        rd_u32(self.buf, idx_off as usize + i as usize * 4).unwrap_or(0)
    }

    fn list(&self, off: u32, count: u32) -> Result<U32List<'a>, CacheError> {
        let end = off
            .checked_add(count)
            .ok_or(CacheError::Corrupt("list reference overflows"))?;
        if end > self.h.u32s_count {
            return Err(CacheError::Corrupt("list reference out of range"));
        }
        let start = self.h.u32s_off as usize + off as usize * 4;
        let bytes = self
            .buf
            .get(start..start + count as usize * 4)
            .ok_or(CacheError::Corrupt("list reference out of range"))?;
        Ok(U32List { bytes })
    }

    /// The user record at byte offset `off` of the blob, every part bounds-checked
    /// against the blob.
    #[inline]
    fn user_record(&self, off: u32) -> Result<UserEntry<'a>, CacheError> {
        const BAD: CacheError = CacheError::Corrupt("user record out of range");
        let off = off as usize;
        let head = self.users.get(off..off + USER_RECORD_HEAD).ok_or(BAD)?;
        let index = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let uid = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let gid = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        let level = Level::from_u8(head[12]);
        let nl = head[13] as usize;
        let gl = rd_u16(head, 14) as usize;
        let dl = rd_u16(head, 16) as usize;
        let sl = rd_u16(head, 18) as usize;
        let n_gids = u32::from_le_bytes([head[20], head[21], head[22], head[23]]) as usize;
        if gl > MAX_FIELD_LEN || dl > MAX_FIELD_LEN || sl > MAX_FIELD_LEN {
            return Err(CacheError::Corrupt("user field too long"));
        }
        let s0 = off + USER_RECORD_HEAD;
        let s_end = s0 + nl + gl + dl + sl;
        let strings = self.users.get(s0..s_end).ok_or(BAD)?;
        if has_nul(strings) {
            return Err(CacheError::Corrupt("string contains NUL"));
        }
        let g0 = (s_end + 3) & !3;
        let g_len = n_gids.checked_mul(4).ok_or(BAD)?;
        let gids = self
            .users
            .get(g0..g0.checked_add(g_len).ok_or(BAD)?)
            .ok_or(BAD)?;
        if !is_allowed_id(uid) || !is_allowed_id(gid) {
            return Err(CacheError::Corrupt("user id outside the allowed ranges"));
        }
        let (name, rest) = strings.split_at(nl);
        let (gecos, rest) = rest.split_at(gl);
        let (dir, shell) = rest.split_at(dl);
        Ok(UserEntry {
            index,
            name,
            uid,
            gid,
            gecos,
            dir,
            shell,
            level,
            gids: U32List { bytes: gids },
        })
    }

    /// The `i`-th user (enumeration order).
    pub fn user(&self, i: u32) -> Result<UserEntry<'a>, CacheError> {
        if i >= self.h.n_users {
            return Err(CacheError::Corrupt("user index out of range"));
        }
        let off = rd_u32(self.buf, self.h.user_offsets_off as usize + i as usize * 4)
            .ok_or(CacheError::Corrupt("user offset out of range"))?;
        self.user_record(off)
    }

    /// The `i`-th explicit group (enumeration order; private groups not included).
    pub fn group(&self, i: u32) -> Result<GroupEntry<'a>, CacheError> {
        if i >= self.h.n_groups {
            return Err(CacheError::Corrupt("group index out of range"));
        }
        let r = self.h.groups_off as usize + i as usize * GROUP_RECORD_LEN;
        let u = |o: usize| rd_u32(self.buf, r + o).ok_or(CacheError::Corrupt("group record"));
        let name = self.str(u(0)?, u(4)?)?;
        let gid = u(8)?;
        let list = self.list(u(12)?, u(16)?)?;
        if !is_allowed_id(gid) {
            return Err(CacheError::Corrupt("group id outside the allowed ranges"));
        }
        Ok(GroupEntry {
            name,
            gid,
            members: Members {
                view: Some(*self),
                list,
            },
        })
    }

    fn private_group_of(u: &UserEntry<'a>) -> GroupEntry<'a> {
        GroupEntry {
            name: u.name,
            gid: u.gid,
            members: Members {
                view: None,
                list: U32List { bytes: &[] },
            },
        }
    }

    /// The private group of user `i`: same name and id, no members.
    pub fn private_group(&self, i: u32) -> Result<GroupEntry<'a>, CacheError> {
        Ok(Self::private_group_of(&self.user(i)?))
    }

    /// Total groups in enumeration: explicit groups, then one private group per user.
    pub fn n_groups_with_private(&self) -> u64 {
        self.h.n_groups as u64 + self.h.n_users as u64
    }

    /// Group `i` in enumeration order (explicit, then private).
    pub fn group_enum(&self, i: u64) -> Result<GroupEntry<'a>, CacheError> {
        if i < self.h.n_groups as u64 {
            self.group(i as u32)
        } else {
            let u = i - self.h.n_groups as u64;
            if u >= self.h.n_users as u64 {
                return Err(CacheError::Corrupt("group enumeration index out of range"));
            }
            self.private_group(u as u32)
        }
    }

    /// Probes a user index (u64 slots) for `tag`; `check(record offset)` says whether
    /// the record matches.
    #[inline]
    fn probe_users(
        &self,
        idx_off: u32,
        hash: u64,
        tag: u32,
        mut check: impl FnMut(u32) -> Result<Option<UserEntry<'a>>, CacheError>,
    ) -> Result<Option<UserEntry<'a>>, CacheError> {
        let cap = self.h.user_index_cap;
        let mask = cap - 1;
        let base = idx_off as usize;
        let mut i = (hash as u32) & mask;
        for _ in 0..cap {
            let slot = rd_u64(self.buf, base + i as usize * 8)
                .ok_or(CacheError::Corrupt("index slot out of range"))?;
            let rec = slot as u32;
            if rec == 0 {
                return Ok(None);
            }
            if (slot >> 32) as u32 == tag {
                if let Some(found) = check(rec - 1)? {
                    return Ok(Some(found));
                }
            }
            i = (i + 1) & mask;
        }
        Ok(None)
    }

    /// Probes a group index (u32 slots holding record index + 1).
    fn probe_groups(
        &self,
        idx_off: u32,
        hash: u64,
        mut check: impl FnMut(u32) -> Result<Option<GroupEntry<'a>>, CacheError>,
    ) -> Result<Option<GroupEntry<'a>>, CacheError> {
        let cap = self.h.group_index_cap;
        let mask = cap - 1;
        let mut i = (hash as u32) & mask;
        for _ in 0..cap {
            let slot = self.slot(idx_off, i);
            if slot == 0 {
                return Ok(None);
            }
            let rec = slot - 1;
            if rec >= self.h.n_groups {
                return Err(CacheError::Corrupt("index slot out of range"));
            }
            if let Some(found) = check(rec)? {
                return Ok(Some(found));
            }
            i = (i + 1) & mask;
        }
        Ok(None)
    }

    pub fn user_by_name(&self, name: &[u8]) -> Result<Option<UserEntry<'a>>, CacheError> {
        self.user_by_name_hashed(name, name_hash(name))
    }

    /// [`user_by_name`](Self::user_by_name) with `hash` = [`name_hash`]`(name)` computed
    /// by the caller, who needs it again (nss_smith's local-name check). The record must
    /// still carry `name` itself: a wrong hash can only make a miss.
    #[inline]
    pub fn user_by_name_hashed(
        &self,
        name: &[u8],
        hash: u64,
    ) -> Result<Option<UserEntry<'a>>, CacheError> {
        self.probe_users(self.h.user_name_idx_off, hash, (hash >> 32) as u32, |off| {
            let u = self.user_record(off)?;
            Ok((u.name == name).then_some(u))
        })
    }

    pub fn user_by_uid(&self, uid: u32) -> Result<Option<UserEntry<'a>>, CacheError> {
        self.probe_users(self.h.user_id_idx_off, id_hash(uid), uid, |off| {
            let u = self.user_record(off)?;
            Ok((u.uid == uid).then_some(u))
        })
    }

    fn explicit_group_by_name(&self, name: &[u8]) -> Result<Option<GroupEntry<'a>>, CacheError> {
        self.probe_groups(self.h.group_name_idx_off, name_hash(name), |rec| {
            let g = self.group(rec)?;
            Ok((g.name == name).then_some(g))
        })
    }

    fn explicit_group_by_gid(&self, gid: u32) -> Result<Option<GroupEntry<'a>>, CacheError> {
        let h = self.h;
        self.probe_groups(h.group_id_idx_off, id_hash(gid), |rec| {
            let r = h.groups_off as usize + rec as usize * GROUP_RECORD_LEN;
            if rd_u32(self.buf, r + 8) == Some(gid) {
                Ok(Some(self.group(rec)?))
            } else {
                Ok(None)
            }
        })
    }

    /// An explicit group, else a user's private group.
    pub fn group_by_name(&self, name: &[u8]) -> Result<Option<GroupEntry<'a>>, CacheError> {
        if let Some(g) = self.explicit_group_by_name(name)? {
            return Ok(Some(g));
        }
        Ok(self.user_by_name(name)?.map(|u| Self::private_group_of(&u)))
    }

    /// An explicit group, else a user's private group (gid == uid).
    pub fn group_by_gid(&self, gid: u32) -> Result<Option<GroupEntry<'a>>, CacheError> {
        if let Some(g) = self.explicit_group_by_gid(gid)? {
            return Ok(Some(g));
        }
        match self.user_by_uid(gid)? {
            Some(u) if u.gid == gid => Ok(Some(Self::private_group_of(&u))),
            _ => Ok(None),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------

/// A user to write. Names and ids must already be validated by the caller's types;
/// [`build`] checks them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub dir: String,
    pub shell: String,
    pub level: Level,
    /// Supplementary gids (explicit groups, and `smith-sudo` for sudo users).
    pub gids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheGroup {
    pub name: String,
    pub gid: u32,
    /// Member login names; each must be one of the users.
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheContents {
    pub host_name: String,
    /// `k=v,k=v`
    pub host_tags: String,
    pub generation: u64,
    pub snapshot_version: u64,
    pub written_at: u64,
    /// gid of `smith-sudo`, 0 if none.
    pub sudo_gid: u32,
    pub users: Vec<CacheUser>,
    pub groups: Vec<CacheGroup>,
}

fn check_field(what: &str, s: &str) -> Result<(), CacheError> {
    if s.len() > MAX_FIELD_LEN || s.bytes().any(|b| b == 0 || b == b':' || b == b'\n') {
        return Err(CacheError::Invalid(format!(
            "{what} {:?} contains NUL, ':' or newline, or is too long",
            s.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

fn index_cap(n: usize) -> u32 {
    (n * 2).max(8).next_power_of_two() as u32
}

struct StringTable {
    bytes: Vec<u8>,
}

impl StringTable {
    fn add(&mut self, s: &str) -> (u32, u32) {
        let off = self.bytes.len() as u32;
        self.bytes.extend_from_slice(s.as_bytes());
        (off, s.len() as u32)
    }
}

fn insert_slot(index: &mut [u32], hash: u64, rec: u32) {
    let mask = index.len() as u32 - 1;
    let mut i = (hash as u32) & mask;
    while index[i as usize] != 0 {
        i = (i + 1) & mask;
    }
    index[i as usize] = rec + 1;
}

/// Inserts a tagged user slot: `tag << 32 | (offset + 1)`.
fn insert_slot64(index: &mut [u64], hash: u64, tag: u32, off: u32) {
    let mask = index.len() as u32 - 1;
    let mut i = (hash as u32) & mask;
    while index[i as usize] != 0 {
        i = (i + 1) & mask;
    }
    index[i as usize] = (tag as u64) << 32 | (off as u64 + 1);
}

/// Serializes `c` into a cache file. Refuses duplicate names or ids, ids outside the
/// allowed ranges, fields that would corrupt a passwd line, and unknown members.
pub fn build(c: &CacheContents) -> Result<Vec<u8>, CacheError> {
    use std::collections::HashMap;
    let mut by_name: HashMap<&str, u32> = HashMap::with_capacity(c.users.len());
    let mut ids = std::collections::HashSet::with_capacity(c.users.len() + c.groups.len());
    for (i, u) in c.users.iter().enumerate() {
        check_field("user name", &u.name)?;
        check_field("gecos", &u.gecos)?;
        check_field("home", &u.dir)?;
        check_field("shell", &u.shell)?;
        if !crate::names::is_user_name(u.name.as_bytes()) {
            return Err(CacheError::Invalid(format!(
                "bad user name {:?} (not a valid Smith user name, or reserved)",
                u.name
            )));
        }
        if !is_allowed_id(u.uid) || !is_allowed_id(u.gid) {
            return Err(CacheError::Invalid(format!(
                "user {} has a forbidden id",
                u.name
            )));
        }
        if u.uid != u.gid {
            return Err(CacheError::Invalid(format!(
                "user {}: primary gid must equal uid (private group)",
                u.name
            )));
        }
        if by_name.insert(&u.name, i as u32).is_some() {
            return Err(CacheError::Invalid(format!("duplicate user {}", u.name)));
        }
        if !ids.insert(u.uid) {
            return Err(CacheError::Invalid(format!("duplicate id {}", u.uid)));
        }
    }
    let mut group_names = std::collections::HashSet::new();
    for g in &c.groups {
        check_field("group name", &g.name)?;
        if !crate::names::is_cache_group_name(g.name.as_bytes()) {
            return Err(CacheError::Invalid(format!(
                "bad group name {:?} (not a valid Smith group name, or reserved)",
                g.name
            )));
        }
        if !is_allowed_id(g.gid) {
            return Err(CacheError::Invalid(format!(
                "group {} has a forbidden id",
                g.name
            )));
        }
        if by_name.contains_key(g.name.as_str()) || !group_names.insert(g.name.as_str()) {
            return Err(CacheError::Invalid(format!(
                "group name {} is used twice (groups and user private groups share names)",
                g.name
            )));
        }
        if !ids.insert(g.gid) {
            return Err(CacheError::Invalid(format!("duplicate id {}", g.gid)));
        }
        for m in &g.members {
            if !by_name.contains_key(m.as_str()) {
                return Err(CacheError::Invalid(format!(
                    "group {} lists unknown member {m}",
                    g.name
                )));
            }
        }
    }
    check_field("host name", &c.host_name)?;
    check_field("host tags", &c.host_tags)?;

    let nu = c.users.len();
    let ng = c.groups.len();
    let ucap = index_cap(nu);
    let gcap = index_cap(ng);
    let mut strings = StringTable { bytes: Vec::new() };
    let mut pool: Vec<u32> = Vec::new();

    let host_name = strings.add(&c.host_name);
    let host_tags = strings.add(&c.host_tags);

    let mut users: Vec<u8> = Vec::new();
    let mut user_offsets: Vec<u32> = Vec::with_capacity(nu);
    let mut uname_idx = vec![0u64; ucap as usize];
    let mut uid_idx = vec![0u64; ucap as usize];
    for (i, u) in c.users.iter().enumerate() {
        let off = u32::try_from(users.len())
            .map_err(|_| CacheError::Invalid("user records exceed 4 GiB".into()))?;
        user_offsets.push(off);
        let mut head = [0u8; USER_RECORD_HEAD];
        head[0..4].copy_from_slice(&(i as u32).to_le_bytes());
        head[4..8].copy_from_slice(&u.uid.to_le_bytes());
        head[8..12].copy_from_slice(&u.gid.to_le_bytes());
        head[12] = u.level as u8;
        head[13] = u.name.len() as u8;
        head[14..16].copy_from_slice(&(u.gecos.len() as u16).to_le_bytes());
        head[16..18].copy_from_slice(&(u.dir.len() as u16).to_le_bytes());
        head[18..20].copy_from_slice(&(u.shell.len() as u16).to_le_bytes());
        head[20..24].copy_from_slice(&(u.gids.len() as u32).to_le_bytes());
        users.extend_from_slice(&head);
        for s in [&u.name, &u.gecos, &u.dir, &u.shell] {
            users.extend_from_slice(s.as_bytes());
        }
        users.resize((users.len() + 3) & !3, 0);
        for g in &u.gids {
            users.extend_from_slice(&g.to_le_bytes());
        }
        users.resize((users.len() + 7) & !7, 0);
        let h = name_hash(u.name.as_bytes());
        insert_slot64(&mut uname_idx, h, (h >> 32) as u32, off);
        insert_slot64(&mut uid_idx, id_hash(u.uid), u.uid, off);
    }

    let mut groups = vec![0u8; ng * GROUP_RECORD_LEN];
    let mut gname_idx = vec![0u32; gcap as usize];
    let mut gid_idx = vec![0u32; gcap as usize];
    for (i, g) in c.groups.iter().enumerate() {
        let r = &mut groups[i * GROUP_RECORD_LEN..(i + 1) * GROUP_RECORD_LEN];
        let (off, len) = strings.add(&g.name);
        r[0..4].copy_from_slice(&off.to_le_bytes());
        r[4..8].copy_from_slice(&len.to_le_bytes());
        r[8..12].copy_from_slice(&g.gid.to_le_bytes());
        let moff = pool.len() as u32;
        pool.extend(g.members.iter().map(|m| by_name[m.as_str()]));
        r[12..16].copy_from_slice(&moff.to_le_bytes());
        r[16..20].copy_from_slice(&(g.members.len() as u32).to_le_bytes());
        insert_slot(&mut gname_idx, name_hash(g.name.as_bytes()), i as u32);
        insert_slot(&mut gid_idx, id_hash(g.gid), i as u32);
    }

    let align8 = |n: usize| (n + 7) & !7;
    let users_off = HEADER_LEN;
    let user_offsets_off = align8(users_off + users.len());
    let user_name_idx_off = align8(user_offsets_off + nu * 4);
    let user_id_idx_off = user_name_idx_off + ucap as usize * 8;
    let groups_off = align8(user_id_idx_off + ucap as usize * 8);
    let group_name_idx_off = align8(groups_off + groups.len());
    let group_id_idx_off = group_name_idx_off + gcap as usize * 4;
    let u32s_off = align8(group_id_idx_off + gcap as usize * 4);
    let strings_off = align8(u32s_off + pool.len() * 4);
    let file_len = strings_off + strings.bytes.len();
    if file_len > MAX_FILE_LEN {
        return Err(CacheError::Invalid(format!(
            "cache would be {file_len} bytes, over the {MAX_FILE_LEN} limit"
        )));
    }

    let mut out = vec![0u8; file_len];
    let mut h = Header {
        generation: c.generation,
        snapshot_version: c.snapshot_version,
        written_at: c.written_at,
        file_len: file_len as u64,
        n_users: nu as u32,
        n_groups: ng as u32,
        user_index_cap: ucap,
        group_index_cap: gcap,
        users_off: users_off as u32,
        user_name_idx_off: user_name_idx_off as u32,
        user_id_idx_off: user_id_idx_off as u32,
        groups_off: groups_off as u32,
        group_name_idx_off: group_name_idx_off as u32,
        group_id_idx_off: group_id_idx_off as u32,
        u32s_off: u32s_off as u32,
        u32s_count: pool.len() as u32,
        strings_off: strings_off as u32,
        strings_len: strings.bytes.len() as u32,
        host_name,
        host_tags,
        sudo_gid: c.sudo_gid,
        user_offsets_off: user_offsets_off as u32,
        users_len: users.len() as u32,
        body_sum: 0,
    };
    out[users_off..users_off + users.len()].copy_from_slice(&users);
    let put_u32s = |out: &mut [u8], off: usize, v: &[u32]| {
        for (i, x) in v.iter().enumerate() {
            out[off + i * 4..off + i * 4 + 4].copy_from_slice(&x.to_le_bytes());
        }
    };
    put_u32s(&mut out, user_offsets_off, &user_offsets);
    let put_u64s = |out: &mut [u8], off: usize, v: &[u64]| {
        for (i, x) in v.iter().enumerate() {
            out[off + i * 8..off + i * 8 + 8].copy_from_slice(&x.to_le_bytes());
        }
    };
    put_u64s(&mut out, user_name_idx_off, &uname_idx);
    put_u64s(&mut out, user_id_idx_off, &uid_idx);
    out[groups_off..groups_off + groups.len()].copy_from_slice(&groups);
    put_u32s(&mut out, group_name_idx_off, &gname_idx);
    put_u32s(&mut out, group_id_idx_off, &gid_idx);
    put_u32s(&mut out, u32s_off, &pool);
    out[strings_off..].copy_from_slice(&strings.bytes);
    h.body_sum = body_checksum(&out[HEADER_LEN..]);
    h.write(&mut out[..HEADER_LEN]);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> CacheContents {
        CacheContents {
            host_name: "web-1".into(),
            host_tags: "env=prod,role=web".into(),
            generation: 7,
            snapshot_version: 42,
            written_at: 1_700_000_000,
            sudo_gid: 200_000,
            users: vec![
                CacheUser {
                    name: "alice".into(),
                    uid: 200_001,
                    gid: 200_001,
                    gecos: "Alice".into(),
                    dir: "/home/alice".into(),
                    shell: "/bin/bash".into(),
                    level: Level::Ssh,
                    gids: vec![200_010],
                },
                CacheUser {
                    name: "oscar".into(),
                    uid: 200_002,
                    gid: 200_002,
                    gecos: "".into(),
                    dir: "/home/oscar".into(),
                    shell: "/bin/sh".into(),
                    level: Level::Sudo,
                    gids: vec![200_011, 200_000],
                },
            ],
            groups: vec![
                CacheGroup {
                    name: "dev".into(),
                    gid: 200_010,
                    members: vec!["alice".into()],
                },
                CacheGroup {
                    name: "ops".into(),
                    gid: 200_011,
                    members: vec!["oscar".into()],
                },
                CacheGroup {
                    name: "smith-sudo".into(),
                    gid: 200_000,
                    members: vec!["oscar".into()],
                },
            ],
        }
    }

    #[test]
    fn roundtrip_lookups() {
        let bytes = build(&sample()).unwrap();
        let v = CacheView::parse(&bytes).unwrap();
        assert_eq!(v.generation(), 7);
        assert_eq!(v.snapshot_version(), 42);
        assert_eq!(v.host_name(), b"web-1");
        assert_eq!(v.host_tags(), b"env=prod,role=web");
        assert_eq!(&bytes[STALE_OFFSET..STALE_OFFSET + 4], &[0; 4]);
        let a = v.user_by_name(b"alice").unwrap().unwrap();
        assert_eq!(
            (a.uid, a.gid, a.dir, a.shell),
            (200_001, 200_001, &b"/home/alice"[..], &b"/bin/bash"[..])
        );
        assert_eq!(a.level, Some(Level::Ssh));
        assert_eq!(a.gids.iter().collect::<Vec<_>>(), vec![200_010]);
        assert_eq!(v.user_by_uid(200_002).unwrap().unwrap().name, b"oscar");
        assert!(v.user_by_name(b"bob").unwrap().is_none());
        assert!(v.user_by_uid(0).unwrap().is_none());
        let g = v.group_by_name(b"smith-sudo").unwrap().unwrap();
        let m: Vec<_> = g.members.iter().map(|r| r.unwrap().to_vec()).collect();
        assert_eq!(m, vec![b"oscar".to_vec()]);
        assert_eq!(v.group_by_gid(200_010).unwrap().unwrap().name, b"dev");
        let pg = v.group_by_name(b"alice").unwrap().unwrap();
        assert_eq!((pg.gid, pg.members.len()), (200_001, 0));
        assert_eq!(v.group_by_gid(200_002).unwrap().unwrap().name, b"oscar");
        assert!(v.group_by_gid(200_003).unwrap().is_none());
        assert_eq!(v.n_groups_with_private(), 5);
        assert_eq!(v.group_enum(4).unwrap().name, b"oscar");
    }

    #[test]
    fn many_users_all_found() {
        let mut c = sample();
        c.users.clear();
        c.groups.clear();
        for i in 0..5000u32 {
            c.users.push(CacheUser {
                name: format!("u{i:05}"),
                uid: 200_000 + i,
                gid: 200_000 + i,
                gecos: String::new(),
                dir: format!("/home/u{i:05}"),
                shell: "/bin/bash".into(),
                level: Level::Ssh,
                gids: vec![],
            });
        }
        let bytes = build(&c).unwrap();
        let v = CacheView::parse(&bytes).unwrap();
        for i in 0..5000u32 {
            let name = format!("u{i:05}");
            assert_eq!(
                v.user_by_name(name.as_bytes()).unwrap().unwrap().uid,
                200_000 + i
            );
            assert_eq!(
                v.user_by_uid(200_000 + i).unwrap().unwrap().name,
                name.as_bytes()
            );
        }
        assert!(v.user_by_name(b"u99999").unwrap().is_none());
    }

    #[test]
    fn writer_refuses_bad_contents() {
        let mut c = sample();
        c.users[0].uid = 0;
        c.users[0].gid = 0;
        assert!(build(&c).is_err());
        let mut c = sample();
        c.users[0].gecos = "a:b".into();
        assert!(build(&c).is_err());
        let mut c = sample();
        c.users[1].name = "alice".into();
        assert!(build(&c).is_err());
        let mut c = sample();
        c.groups[0].members.push("nobody-here".into());
        assert!(build(&c).is_err());
        let mut c = sample();
        c.groups[0].name = "alice".into();
        assert!(build(&c).is_err());
        let mut c = sample();
        c.groups[0].gid = 200_001;
        assert!(build(&c).is_err());
    }

    #[test]
    fn truncated_and_corrupted_files_are_errors_not_panics() {
        let bytes = build(&sample()).unwrap();
        for len in [0, 10, HEADER_LEN - 1, HEADER_LEN, bytes.len() - 1] {
            assert!(CacheView::parse(&bytes[..len]).is_err(), "len {len}");
        }
        // Flip every byte in turn: parsing and every lookup must never panic.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            if let Ok(v) = CacheView::parse(&b) {
                let _ = v.user_by_name(b"alice");
                let _ = v.user_by_uid(200_002);
                let _ = v
                    .group_by_name(b"smith-sudo")
                    .map(|g| g.map(|g| g.members.iter().count()));
                let _ = v.group_by_gid(200_010);
                for k in 0..v.n_users() {
                    let _ = v.user(k);
                }
                for k in 0..v.n_groups_with_private() {
                    let _ = v.group_enum(k);
                }
            }
        }
        let mut b = bytes.clone();
        b[20] ^= 1; // inside the checked header
        assert_eq!(CacheView::parse(&b).err(), Some(CacheError::BadChecksum));
    }

    #[test]
    fn stale_flag_is_outside_checksum() {
        let mut bytes = build(&sample()).unwrap();
        bytes[STALE_OFFSET] = 1;
        CacheView::parse(&bytes).unwrap().verify_body().unwrap();
    }

    #[test]
    fn every_body_byte_is_covered_by_the_body_checksum() {
        let bytes = build(&sample()).unwrap();
        CacheView::parse(&bytes).unwrap().verify_body().unwrap();
        for i in HEADER_LEN..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            let v = CacheView::parse(&b).unwrap();
            assert_eq!(
                v.verify_body(),
                Err(CacheError::BadBodyChecksum),
                "byte {i}"
            );
        }
        // A file of an earlier writer (no body checksum) still reads.
        let mut old = bytes.clone();
        old[BODY_SUM_OFFSET..BODY_SUM_OFFSET + 8].fill(0);
        let sum = header_checksum(&old);
        old[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 8].copy_from_slice(&sum.to_le_bytes());
        CacheView::parse(&old).unwrap().verify_body().unwrap();
    }

    #[test]
    fn the_writer_refuses_names_smith_may_not_serve() {
        for bad in ["root", "nobody", "smith-sudo", "Alice", "a b"] {
            let mut c = sample();
            c.users[0].name = bad.into();
            assert!(build(&c).is_err(), "user {bad:?}");
        }
        for bad in ["root", "sudo", "docker", "Ops"] {
            let mut c = sample();
            c.groups[0].name = bad.into();
            assert!(build(&c).is_err(), "group {bad:?}");
        }
        let mut c = sample();
        c.groups[0].name = "smith-cmd-restart".into();
        build(&c).unwrap();
    }

    #[test]
    fn other_format_versions_are_refused() {
        let mut bytes = build(&sample()).unwrap();
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            CacheView::parse(&bytes).err(),
            Some(CacheError::UnsupportedFormat(1))
        );
    }

    #[test]
    fn header_tail_fields_are_checksummed() {
        let bytes = build(&sample()).unwrap();
        // user_offsets_off, users_len and the reserved bytes after them.
        for i in [144, 147, 148, 151, 200, 255] {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert_eq!(
                CacheView::parse(&b).err(),
                Some(CacheError::BadChecksum),
                "{i}"
            );
        }
        // The stale word and the bytes around it that are not fields: outside.
        for i in STALE_OFFSET..STALE_OFFSET + 4 {
            let mut b = bytes.clone();
            b[i] = 1;
            assert!(CacheView::parse(&b).is_ok(), "{i}");
        }
    }

    /// Rewrites a header field and fixes the checksum, as a hostile writer would.
    fn set_field(bytes: &mut [u8], off: usize, v: u32) {
        bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
        let sum = header_checksum(bytes);
        bytes[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 8].copy_from_slice(&sum.to_le_bytes());
    }

    #[test]
    fn hostile_index_slots_and_offsets_are_errors() {
        let good = build(&sample()).unwrap();
        let v = CacheView::parse(&good).unwrap();
        let h = v.h;
        // Every user slot pointed at every possible offset (in, mid-record, past the
        // blob, u32::MAX): lookups answer or fail, never panic or read outside.
        let slots = h.user_index_cap as usize;
        for which in [h.user_name_idx_off, h.user_id_idx_off] {
            for target in [
                0u32,
                1,
                7,
                23,
                24,
                h.users_len - 1,
                h.users_len,
                u32::MAX - 1,
            ] {
                let mut b = good.clone();
                for s in 0..slots {
                    let at = which as usize + s * 8;
                    let tag = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) >> 32;
                    let slot = tag << 32 | (target as u64 + 1);
                    b[at..at + 8].copy_from_slice(&slot.to_le_bytes());
                }
                let v = CacheView::parse(&b).unwrap();
                let _ = v.user_by_name(b"alice");
                let _ = v.user_by_uid(200_002);
                let _ = v.group_by_name(b"oscar");
                let _ = v.group_by_gid(200_001);
            }
        }
        // Offsets table pointing outside the blob: enumeration and members fail.
        let mut b = good.clone();
        let at = h.user_offsets_off as usize;
        b[at..at + 4].copy_from_slice(&(h.users_len - 2).to_le_bytes());
        let v = CacheView::parse(&b).unwrap();
        assert!(v.user(0).is_err());
        let dev = v.group_by_name(b"dev").unwrap().unwrap();
        assert!(dev.members.iter().any(|m| m.is_err()));
        // A blob length beyond the file, or too short for its users: refused at parse.
        let mut b = good.clone();
        set_field(&mut b, 148, good.len() as u32);
        assert!(matches!(
            CacheView::parse(&b),
            Err(CacheError::BadLayout(_))
        ));
        let mut b = good.clone();
        set_field(&mut b, 148, 10);
        assert!(matches!(
            CacheView::parse(&b),
            Err(CacheError::BadLayout(_))
        ));
        let mut b = good.clone();
        set_field(&mut b, 144, good.len() as u32 - 2);
        assert!(matches!(
            CacheView::parse(&b),
            Err(CacheError::BadLayout(_))
        ));
    }

    #[test]
    fn user_record_with_nul_or_forbidden_id_is_corrupt() {
        let good = build(&sample()).unwrap();
        let v = CacheView::parse(&good).unwrap();
        let rec = v.h.users_off as usize; // alice, the first record
        let mut b = good.clone();
        b[rec + USER_RECORD_HEAD + 2] = 0; // inside "alice"
        let v = CacheView::parse(&b).unwrap();
        assert!(v.user(0).is_err());
        let mut b = good.clone();
        b[rec + 4..rec + 8].copy_from_slice(&0u32.to_le_bytes()); // uid 0
        let v = CacheView::parse(&b).unwrap();
        assert!(v.user(0).is_err());
        assert!(v.user_by_uid(0).unwrap().is_none());
    }

    #[test]
    fn long_fields_and_many_gids_roundtrip() {
        let mut c = sample();
        c.users[0].gecos = "g".repeat(MAX_FIELD_LEN);
        c.users[0].dir = format!("/home/{}", "d".repeat(300));
        c.users[0].name = "a".repeat(crate::names::MAX_NAME_LEN);
        c.groups[0].members = vec![c.users[0].name.clone()];
        c.users[1].gids = (0..500).map(|i| 300_000 + i).collect();
        let bytes = build(&c).unwrap();
        let v = CacheView::parse(&bytes).unwrap();
        let a = v.user_by_name(c.users[0].name.as_bytes()).unwrap().unwrap();
        assert_eq!(a.gecos.len(), MAX_FIELD_LEN);
        assert_eq!(a.dir, c.users[0].dir.as_bytes());
        assert_eq!(a.shell, b"/bin/bash");
        let o = v.user_by_uid(200_002).unwrap().unwrap();
        assert_eq!(o.gids.len(), 500);
        assert_eq!(o.gids.get(499), Some(300_499));
        assert_eq!(o.shell, b"/bin/sh");
        let m: Vec<_> = v
            .group_by_name(b"dev")
            .unwrap()
            .unwrap()
            .members
            .iter()
            .collect();
        assert_eq!(m, vec![Ok(c.users[0].name.as_bytes())]);
    }

    #[test]
    fn name_hash_tail_is_the_zero_padded_word() {
        // The format's definition of the last partial word, byte by byte.
        fn reference(rest: &[u8]) -> u64 {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(w)
        }
        let bytes: Vec<u8> = (0..8u8)
            .map(|i| 0x81u8.wrapping_mul(i + 1) | 0x40)
            .collect();
        for n in 0..8 {
            assert_eq!(le_tail(&bytes[..n]), reference(&bytes[..n]), "{n} bytes");
            assert_eq!(le_tail(&[0xff; 8][..n]), reference(&[0xff; 8][..n]));
        }
    }

    #[test]
    fn name_hash_is_stable_and_nul_check_is_exact() {
        // The hash is part of the format: a change needs a new FORMAT_VERSION.
        assert_ne!(name_hash(b"u00001"), name_hash(b"u00002"));
        assert_ne!(name_hash(b"abcdefgh"), name_hash(b"abcdefgh\0"));
        assert_eq!(
            name_hash(b"alice"),
            0x1ea5_8e8e_164a_1245,
            "the index hash is pinned by the format"
        );
        for len in 0..40 {
            let s = vec![b'x'; len];
            assert!(!has_nul(&s));
            for i in 0..len {
                let mut t = s.clone();
                t[i] = 0;
                assert!(has_nul(&t), "len {len} at {i}");
                t[i] = 0x80;
                assert!(!has_nul(&t));
                t[i] = 0x01;
                assert!(!has_nul(&t));
            }
        }
    }
}
