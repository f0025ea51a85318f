//! Validated names: login names, group names, host names.
//!
//! A value of these types has passed validation, so code that holds one never has to
//! ask again whether it may reach `/etc/passwd`, a path, a log line or sshd.

use std::fmt;

/// Longest login or group name accepted (glibc/shadow's practical limit).
pub const MAX_NAME_LEN: usize = 32;

/// Names no Smith user or group may take: the superuser, well-known system accounts
/// and groups found on Debian/RHEL-family systems, and Smith's own synthetic groups.
pub const RESERVED_NAMES: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "nogroup",
    "sshd",
    "adm",
    "wheel",
    "sudo",
    "admin",
    "shadow",
    "utmp",
    "tty",
    "disk",
    "kmem",
    "operator",
    "halt",
    "shutdown",
    "ftp",
    "messagebus",
    "polkitd",
    "staff",
    "users",
    "docker",
    "systemd-journal",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "systemd-coredump",
    "_apt",
];

/// Prefix reserved for groups Smith synthesizes on hosts (e.g. [`SUDO_GROUP`]).
pub const RESERVED_PREFIX: &str = "smith-";

/// The NSS group whose members are exactly the users with a `sudo` grant on a host.
pub const SUDO_GROUP: &str = "smith-sudo";

/// The NSS group whose members are every Smith user a host serves: sshd's
/// `Match Group` for "certificate only" (no authorized_keys, password or other method).
pub const USERS_GROUP: &str = "smith-users";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong { len: usize, max: usize },
    BadFirstChar(char),
    BadChar(char),
    Reserved(String),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "name is empty"),
            NameError::TooLong { len, max } => {
                write!(f, "name is {len} bytes long; at most {max} are allowed")
            }
            NameError::BadFirstChar(c) => write!(
                f,
                "name must start with a lowercase letter or '_', not {}",
                printable(*c)
            ),
            NameError::BadChar(c) => write!(
                f,
                "name may contain only a-z, 0-9, '_' and '-', not {}",
                printable(*c)
            ),
            NameError::Reserved(n) => write!(f, "name '{n}' is reserved for the system or Smith"),
        }
    }
}

impl std::error::Error for NameError {}

fn printable(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", c as u32)
    } else {
        format!("'{c}'")
    }
}

/// The shared POSIX-portable rule for login and group names:
/// `[a-z_][a-z0-9_-]{0,31}`, not reserved.
fn validate_posix_name(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            len: s.len(),
            max: MAX_NAME_LEN,
        });
    }
    let mut chars = s.chars();
    let first = chars.next().unwrap_or('\0');
    if !(first.is_ascii_lowercase() || first == '_') {
        return Err(NameError::BadFirstChar(first));
    }
    if let Some(c) =
        chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(NameError::BadChar(c));
    }
    if RESERVED_NAMES.contains(&s) || s.starts_with(RESERVED_PREFIX) {
        return Err(NameError::Reserved(s.to_string()));
    }
    Ok(())
}

/// Whether `b` is a valid [`UserName`], without allocating (the NSS module checks every
/// name it hands out with this).
pub fn is_user_name(b: &[u8]) -> bool {
    posix_syntax(b) && !is_reserved_bytes(b)
}

/// Whether `b` may name a group in a host's cache: a valid [`GroupName`], or one of the
/// groups hostd synthesizes (`smith-sudo` and the per-command-rule groups), which carry
/// the reserved prefix and follow the same syntax.
pub fn is_cache_group_name(b: &[u8]) -> bool {
    posix_syntax(b) && (b.starts_with(RESERVED_PREFIX.as_bytes()) || !is_reserved_bytes(b))
}

/// [`NAME_CLASS`] bit: the byte may start a name (`[a-z_]`).
const STARTS: u8 = 1;
/// [`NAME_CLASS`] bit: the byte may follow the first one (`[a-z0-9_-]`).
const FOLLOWS: u8 = 2;

/// The class of every byte for [`posix_syntax`]: one table load per byte instead of
/// four range tests.
const NAME_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_lowercase() || b == b'_' {
            t[c] |= STARTS | FOLLOWS;
        }
        if b.is_ascii_digit() || b == b'-' {
            t[c] |= FOLLOWS;
        }
        c += 1;
    }
    t
};

/// `[a-z_][a-z0-9_-]{0,31}`. The NSS module asks this on every lookup by name and for
/// every record it hands out by id (D17), so it is branch-free over the bytes: the
/// classes are AND-ed and tested once.
#[inline]
fn posix_syntax(b: &[u8]) -> bool {
    let Some((&first, rest)) = b.split_first() else {
        return false;
    };
    if rest.len() >= MAX_NAME_LEN {
        return false;
    }
    let mut all = NAME_CLASS[first as usize] & STARTS;
    all |= all << 1; // STARTS ⇒ FOLLOWS, so the rest can be AND-ed into one value
    for &c in rest {
        all &= NAME_CLASS[c as usize];
    }
    all & FOLLOWS != 0
}

#[inline]
fn is_reserved_bytes(b: &[u8]) -> bool {
    b.starts_with(RESERVED_PREFIX.as_bytes()) || is_reserved_name(b)
}

/// Bit of a name's first or last byte in [`RESERVED_ENDS`] (`a`–`z`, then `_`; every
/// other byte: bit 27).
const fn end_bit(c: u8) -> u32 {
    match c {
        b'a'..=b'z' => 1 << (c - b'a'),
        b'_' => 1 << 26,
        _ => 1 << 27,
    }
}

/// [`end_bit`] of every byte (a load instead of a branch).
const END_BITS: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = end_bit(c as u8);
        c += 1;
    }
    t
};

/// For each length, the first bytes and the last bytes of the [`RESERVED_NAMES`] of
/// that length: a name whose first or last byte's bit is clear is none of them (two
/// loads instead of a scan of the list).
const RESERVED_ENDS: [(u32, u32); MAX_NAME_LEN + 1] = {
    let mut t = [(0u32, 0u32); MAX_NAME_LEN + 1];
    let mut i = 0;
    while i < RESERVED_NAMES.len() {
        let b = RESERVED_NAMES[i].as_bytes();
        assert!(!b.is_empty() && b.len() <= MAX_NAME_LEN);
        t[b.len()].0 |= end_bit(b[0]);
        t[b.len()].1 |= end_bit(b[b.len() - 1]);
        i += 1;
    }
    t
};

/// Whether `b` is one of [`RESERVED_NAMES`] (the NSS module asks this on every lookup
/// by name: the filter settles almost every other name without the scan).
#[inline]
fn is_reserved_name(b: &[u8]) -> bool {
    match (RESERVED_ENDS.get(b.len()), b.first(), b.last()) {
        (Some(&(first, last)), Some(&f), Some(&l))
            if first & END_BITS[f as usize] != 0 && last & END_BITS[l as usize] != 0 =>
        {
            reserved_scan(b)
        }
        _ => false,
    }
}

/// The list itself, for the few names the filter lets through (kept out of line).
#[inline(never)]
#[cold]
fn reserved_scan(b: &[u8]) -> bool {
    RESERVED_NAMES
        .iter()
        .any(|r| r.len() == b.len() && r.as_bytes() == b)
}

macro_rules! validated_name {
    ($(#[$meta:meta])* $name:ident, $validate:path) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize))]
        #[cfg_attr(feature = "serde", serde(transparent))]
        pub struct $name(String);

        impl $name {
            /// Validates `s`.
            pub fn new(s: &str) -> Result<Self, NameError> {
                $validate(s)?;
                Ok(Self(s.to_string()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

validated_name!(
    /// A Smith user's login name: `[a-z_][a-z0-9_-]{0,31}`, never `root` or another
    /// reserved name, never containing `:`, `/`, whitespace or control characters.
    UserName,
    validate_posix_name
);

validated_name!(
    /// A Smith group name; same rule as [`UserName`].
    GroupName,
    validate_posix_name
);

/// Host names: lowercase DNS names, labels `[a-z0-9]([a-z0-9-]*[a-z0-9])?`, at most 253
/// bytes.
fn validate_host_name(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > 253 {
        return Err(NameError::TooLong {
            len: s.len(),
            max: 253,
        });
    }
    for label in s.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(NameError::BadChar('.'));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar(c));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::BadChar('-'));
        }
    }
    Ok(())
}

validated_name!(
    /// A host's name as enrolled (a lowercase DNS name).
    HostName,
    validate_host_name
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserved_filter_lets_every_reserved_name_through() {
        for r in RESERVED_NAMES {
            assert!(is_reserved_name(r.as_bytes()), "{r}");
            assert!(!is_user_name(r.as_bytes()), "{r}");
            assert!(!is_cache_group_name(r.as_bytes()), "{r}");
        }
        for n in [
            "alice", "u00001", "nx00001", "roo", "roots", "rooT", "_ap", "_apt_", "x", "",
        ] {
            assert!(!is_reserved_name(n.as_bytes()), "{n}");
        }
        assert!(!is_reserved_name(&[b'r'; 40]));
        assert!(!is_reserved_name("é".as_bytes()));
    }

    /// The table-driven syntax test against the rule written out byte by byte: every
    /// byte alone and in each position of a 2- and 3-byte name, and the length bounds.
    #[test]
    fn the_syntax_table_is_the_rule() {
        fn rule(b: &[u8]) -> bool {
            !b.is_empty()
                && b.len() <= MAX_NAME_LEN
                && (b[0].is_ascii_lowercase() || b[0] == b'_')
                && b[1..].iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-')
                })
        }
        assert!(!posix_syntax(b""));
        for x in 0..=255u8 {
            for name in [vec![x], vec![b'a', x], vec![x, b'a'], vec![b'a', x, b'b']] {
                assert_eq!(posix_syntax(&name), rule(&name), "{name:?}");
            }
            for y in 0..=255u8 {
                assert_eq!(posix_syntax(&[x, y]), rule(&[x, y]), "{x} {y}");
            }
        }
        for len in 1..=40 {
            let mut name = vec![b'a'; len];
            assert_eq!(posix_syntax(&name), len <= MAX_NAME_LEN, "{len}");
            name[len - 1] = b'/';
            assert!(!posix_syntax(&name), "{len}");
        }
    }

    #[test]
    fn byte_rules_agree_with_the_typed_names() {
        for n in [
            "alice",
            "root",
            "sudo",
            "smith-sudo",
            "smith-cmd-x",
            "Bad",
            "",
            "a b",
            "_x",
            "nobody",
            "lp",
            "1a",
            "a:b",
            "docker",
            "ops",
        ] {
            assert_eq!(is_user_name(n.as_bytes()), UserName::new(n).is_ok(), "{n}");
            let synthesized = n.starts_with(RESERVED_PREFIX) && is_cache_group_name(n.as_bytes());
            assert_eq!(
                is_cache_group_name(n.as_bytes()),
                GroupName::new(n).is_ok() || synthesized,
                "{n}"
            );
        }
        assert!(is_cache_group_name(SUDO_GROUP.as_bytes()));
        assert!(!is_user_name(SUDO_GROUP.as_bytes()));
        assert!(!is_cache_group_name(b"root"));
        assert!(!is_user_name(&[b'a'; 33]));
    }

    #[test]
    fn accepts_ordinary_names() {
        for n in [
            "alice",
            "oscar",
            "_svc",
            "a",
            "bob-smith",
            "u00001",
            "a_b-c9",
        ] {
            assert!(UserName::new(n).is_ok(), "{n}");
        }
        assert!(UserName::new(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn refuses_hostile_names() {
        let long = "a".repeat(33);
        let huge = "x".repeat(1 << 20);
        for n in [
            "",
            "root",
            "Root",
            "../x",
            "a/b",
            "a:b",
            "a b",
            "a\nb",
            "a\0b",
            "-x",
            "1abc",
            "é",
            "nobody",
            "smith-sudo",
            "smith-anything",
            long.as_str(),
            huge.as_str(),
            "a\tb",
            "x$",
        ] {
            assert!(UserName::new(n).is_err(), "{n:?} should be refused");
            assert!(GroupName::new(n).is_err(), "{n:?} should be refused");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            UserName::new("a:b").unwrap_err().to_string(),
            "name may contain only a-z, 0-9, '_' and '-', not ':'"
        );
        assert_eq!(
            UserName::new("a\nb").unwrap_err().to_string(),
            "name may contain only a-z, 0-9, '_' and '-', not U+000A"
        );
        assert!(UserName::new("root")
            .unwrap_err()
            .to_string()
            .contains("reserved"));
    }

    #[test]
    fn host_names() {
        for n in ["web-1", "db-1.prod.example.com", "a"] {
            assert!(HostName::new(n).is_ok(), "{n}");
        }
        for n in ["", "-a", "a-", "a..b", "A", "a_b", "a/b", "a b"] {
            assert!(HostName::new(n).is_err(), "{n:?}");
        }
    }
}
