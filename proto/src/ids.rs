//! Numeric user and group ids Smith may hand out.
//!
//! Never 0, never the system range 0–999, never 60000–65535 (Debian's reserved block,
//! systemd's dynamic users and `nobody`), never above `i32::MAX` (tools that treat ids
//! as signed misbehave). The CA refuses such ids when the admin sets them; the NSS
//! module refuses to serve them even if a cache file contains one.

use std::fmt;

/// First id outside the system range.
pub const FIRST_NORMAL_ID: u32 = 1000;
/// The reserved block 60000–65535 (systemd dynamic users, `nobody` = 65534).
pub const RESERVED_BLOCK: std::ops::RangeInclusive<u32> = 60000..=65535;
/// Highest id accepted.
pub const MAX_ID: u32 = i32::MAX as u32;

/// Default allocation range for ids the CA assigns (`smith-ca init --id-range`; a CA
/// keeps the range it was initialized with). Chosen clear of what else hands out ids on
/// Linux hosts (issue 14, D3): shadow-utils' subordinate ranges (`SUB_UID_MIN` 100000 to
/// `SUB_UID_MAX` 600100000, 65536 per user: the second and third local users of a Debian
/// or Ubuntu host get 165536-296607, which the earlier default 200000-299999 overlapped),
/// systemd's container ranges (524288-1879048191), SSSD's automatic id mapping (200000 to
/// 2000200000 by default) and systemd's foreign range (from 2147352576); and below
/// 2^31, which tools that treat ids as signed need.
pub const DEFAULT_ID_RANGE: IdRange = IdRange {
    start: 2_001_000_000,
    end: 2_001_999_999,
};

/// Whether `id` may be used for a Smith user or group.
pub const fn is_allowed_id(id: u32) -> bool {
    id >= FIRST_NORMAL_ID && !(id >= 60000 && id <= 65535) && id <= MAX_ID
}

/// A uid or gid that passed [`is_allowed_id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct PosixId(u32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError(pub u64);

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "id {} is not allowed: Smith ids must be in 1000-59999 or 65536-{} (0, the system range 0-999 and 60000-65535 are refused)",
            self.0, MAX_ID
        )
    }
}

impl std::error::Error for IdError {}

impl PosixId {
    pub fn new(id: u64) -> Result<Self, IdError> {
        match u32::try_from(id) {
            Ok(v) if is_allowed_id(v) => Ok(PosixId(v)),
            _ => Err(IdError(id)),
        }
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PosixId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for PosixId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        PosixId::new(v).map_err(serde::de::Error::custom)
    }
}

/// An inclusive range of ids the CA allocates from; every id in it is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IdRange {
    pub start: u32,
    pub end: u32,
}

impl IdRange {
    /// A range is valid when it is non-empty and holds only allowed ids.
    pub fn new(start: u32, end: u32) -> Result<Self, String> {
        if start > end {
            return Err(format!("id range {start}-{end} is empty"));
        }
        if !is_allowed_id(start) || !is_allowed_id(end) || (start < 60000 && end > 65535) {
            return Err(format!(
                "id range {start}-{end} overlaps ids Smith never uses (0-999, 60000-65535, above {MAX_ID})"
            ));
        }
        Ok(IdRange { start, end })
    }
    pub fn contains(&self, id: u32) -> bool {
        (self.start..=self.end).contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_root_and_system_ranges() {
        for id in [0u64, 1, 999, 60000, 65534, 65535, u32::MAX as u64, 1 << 40] {
            assert!(PosixId::new(id).is_err(), "{id}");
        }
        for id in [1000u64, 59999, 65536, 200000, MAX_ID as u64] {
            assert!(PosixId::new(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn ranges() {
        assert!(IdRange::new(200000, 299999).is_ok());
        assert!(IdRange::new(500, 2000).is_err());
        assert!(IdRange::new(50000, 70000).is_err());
        assert!(IdRange::new(3, 2).is_err());
        assert!(DEFAULT_ID_RANGE.contains(2_001_000_000));
        assert!(!DEFAULT_ID_RANGE.contains(200_000));
        const { assert!(DEFAULT_ID_RANGE.end <= MAX_ID && DEFAULT_ID_RANGE.start > 600_165_535) };
    }
}
