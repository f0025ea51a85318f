//! Host tags (`env=prod,role=web`), tag selectors, and access levels.
//!
//! The same `k=v,k=v` text is used for three things:
//! - a host's **tags** (what the host is),
//! - a grant's **selector** (which hosts the grant covers: every pair must be among
//!   the host's tags),
//! - a certificate's **scope** (which hosts the engineer asked to reach: every pair must
//!   be among the host's tags; the CA issues it only if a grant's selector is contained
//!   in it, i.e. the scope is at least as narrow as the grant).

use std::collections::BTreeMap;
use std::fmt;

pub const MAX_TAG_KEY_LEN: usize = 63;
pub const MAX_TAG_VALUE_LEN: usize = 63;
pub const MAX_TAGS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagError {
    Syntax(String),
    BadKey(String),
    BadValue(String),
    Duplicate(String),
    TooMany(usize),
}

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagError::Syntax(s) => write!(f, "'{}' is not of the form key=value", s.escape_debug()),
            TagError::BadKey(k) => write!(
                f,
                "tag key '{}' must match [a-z][a-z0-9_.-]{{0,62}}",
                k.escape_debug()
            ),
            TagError::BadValue(v) => write!(
                f,
                "tag value '{}' must match [A-Za-z0-9_.-]{{1,63}}",
                v.escape_debug()
            ),
            TagError::Duplicate(k) => write!(f, "tag key '{k}' appears twice"),
            TagError::TooMany(n) => write!(f, "{n} tags given; at most {MAX_TAGS} are allowed"),
        }
    }
}

impl std::error::Error for TagError {}

fn valid_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_KEY_LEN
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        })
}

fn valid_value(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_VALUE_LEN
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A validated set of `key=value` pairs, at most one value per key, sorted by key.
/// Used for host tags, grant selectors and certificate scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tags(BTreeMap<String, String>);

/// A grant's selector and a certificate's scope are tag sets too.
pub type Selector = Tags;

impl Tags {
    pub fn new() -> Self {
        Tags(BTreeMap::new())
    }

    /// Parses `k=v,k=v`. The empty string is the empty set (matches every host).
    pub fn parse(s: &str) -> Result<Self, TagError> {
        let mut map = BTreeMap::new();
        let s = s.trim();
        if s.is_empty() {
            return Ok(Tags(map));
        }
        for pair in s.split(',') {
            let pair = pair.trim();
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| TagError::Syntax(pair.to_string()))?;
            if !valid_key(k) {
                return Err(TagError::BadKey(k.to_string()));
            }
            if !valid_value(v) {
                return Err(TagError::BadValue(v.to_string()));
            }
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(TagError::Duplicate(k.to_string()));
            }
            if map.len() > MAX_TAGS {
                return Err(TagError::TooMany(map.len()));
            }
        }
        Ok(Tags(map))
    }

    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), TagError> {
        if !valid_key(key) {
            return Err(TagError::BadKey(key.to_string()));
        }
        if !valid_value(value) {
            return Err(TagError::BadValue(value.to_string()));
        }
        if self.0.len() >= MAX_TAGS && !self.0.contains_key(key) {
            return Err(TagError::TooMany(self.0.len() + 1));
        }
        self.0.insert(key.to_string(), value.to_string());
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when every pair of `self` is also in `other` (`self ⊆ other`).
    /// `grant_selector.is_subset_of(host_tags)`: the grant covers the host.
    /// `cert_scope.is_subset_of(host_tags)`: the certificate may be used on the host.
    /// `grant_selector.is_subset_of(requested_scope)`: the grant covers the request.
    pub fn is_subset_of(&self, other: &Tags) -> bool {
        self.0.iter().all(|(k, v)| other.0.get(k) == Some(v))
    }
}

impl fmt::Display for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Tags {
    type Err = TagError;
    fn from_str(s: &str) -> Result<Self, TagError> {
        Tags::parse(s)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Tags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Tags::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a grant allows on the hosts it covers. `Sudo` implies `Ssh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Level {
    Ssh = 1,
    Sudo = 2,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ssh => "ssh",
            Level::Sudo => "sudo",
        }
    }
    pub fn from_u8(v: u8) -> Option<Level> {
        match v {
            1 => Some(Level::Ssh),
            2 => Some(Level::Sudo),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ssh" => Ok(Level::Ssh),
            "sudo" => Ok(Level::Sudo),
            _ => Err(format!(
                "level must be 'ssh' or 'sudo', not '{}'",
                s.escape_debug()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_roundtrip() {
        let t = Tags::parse("role=web, env=prod").unwrap();
        assert_eq!(t.to_string(), "env=prod,role=web");
        assert_eq!(Tags::parse("").unwrap(), Tags::new());
    }

    #[test]
    fn refuses_bad_tags() {
        for s in [
            "env",
            "=x",
            "env=",
            "Env=x",
            "env=a b",
            "env=x,env=y",
            "e\n=x",
            "env=x:y",
            "env=../x",
        ] {
            assert!(Tags::parse(s).is_err(), "{s:?}");
        }
        let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
        assert!(Tags::parse(&many.join(",")).is_err());
    }

    #[test]
    fn subset_semantics() {
        let host = Tags::parse("env=prod,role=web").unwrap();
        assert!(Tags::parse("env=prod").unwrap().is_subset_of(&host));
        assert!(Tags::new().is_subset_of(&host));
        assert!(!Tags::parse("env=dev").unwrap().is_subset_of(&host));
        assert!(!Tags::parse("env=prod,role=db").unwrap().is_subset_of(&host));
    }

    #[test]
    fn levels() {
        assert!(Level::Sudo > Level::Ssh);
        assert_eq!("sudo".parse::<Level>().unwrap(), Level::Sudo);
        assert!("admin".parse::<Level>().is_err());
        assert_eq!(Level::from_u8(2), Some(Level::Sudo));
        assert_eq!(Level::from_u8(0), None);
    }
}
