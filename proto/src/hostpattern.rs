//! Which host names an enrollment token lets a host take: exact names, and domain
//! patterns `*.DOMAIN` that match exactly one label in front of `DOMAIN`
//! (`*.prod.acme.internal` matches `web-1.prod.acme.internal`, not
//! `a.b.prod.acme.internal`, not `prod.acme.internal`), as TLS wildcards do.
//!
//! An IP literal (`10.0.0.5`) is a host name only when a token lists it exactly: patterns
//! never match one. A pattern's domain has at least two labels (`*.com` is refused), so
//! no token can cover a public suffix.
//!
//! Must never: match a name the admin did not write down or cover with a domain, or
//! accept a pattern that is not a valid host name after its `*.`.

use crate::names::{HostName, NameError};
use std::fmt;

/// An exact host name or a one-label wildcard under a domain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    Exact(HostName),
    /// `*.DOMAIN`.
    Domain(HostName),
}

/// Why a text is not a host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPatternError {
    Name(NameError),
    /// `*.com`: the domain of a pattern needs at least two labels.
    TooBroad(String),
    /// A wildcard anywhere but as the whole first label.
    BadWildcard(String),
}

impl fmt::Display for HostPatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPatternError::Name(e) => write!(f, "{e}"),
            HostPatternError::TooBroad(s) => write!(
                f,
                "'{s}' is too broad: a pattern's domain needs at least two labels (e.g. \
                 *.prod.example.com)"
            ),
            HostPatternError::BadWildcard(s) => write!(
                f,
                "'{s}': a wildcard is only allowed as the whole first label (*.example.com)"
            ),
        }
    }
}

impl std::error::Error for HostPatternError {}

/// Whether `name` is an IPv4 or IPv6 literal (host names of that shape are allowed only
/// when a token names them exactly).
pub fn is_ip_literal(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, HostPatternError> {
        let s = s.trim();
        match s.strip_prefix("*.") {
            Some(domain) => {
                if domain.contains('*') {
                    return Err(HostPatternError::BadWildcard(s.to_string()));
                }
                let d = HostName::new(domain).map_err(HostPatternError::Name)?;
                if domain.split('.').count() < 2 || is_ip_literal(domain) {
                    return Err(HostPatternError::TooBroad(s.to_string()));
                }
                Ok(HostPattern::Domain(d))
            }
            None if s.contains('*') => Err(HostPatternError::BadWildcard(s.to_string())),
            None => Ok(HostPattern::Exact(
                HostName::new(s).map_err(HostPatternError::Name)?,
            )),
        }
    }

    /// Whether `name` is covered.
    pub fn matches(&self, name: &HostName) -> bool {
        match self {
            HostPattern::Exact(n) => n == name,
            HostPattern::Domain(d) => {
                if is_ip_literal(name.as_str()) {
                    return false;
                }
                match name.as_str().strip_suffix(d.as_str()) {
                    Some(head) => head
                        .strip_suffix('.')
                        .is_some_and(|label| !label.is_empty() && !label.contains('.')),
                    None => false,
                }
            }
        }
    }

    /// What an ssh client's `Host`/`@cert-authority` pattern for this looks like.
    pub fn ssh_pattern(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(n) => write!(f, "{n}"),
            HostPattern::Domain(d) => write!(f, "*.{d}"),
        }
    }
}

impl std::str::FromStr for HostPattern {
    type Err = HostPatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostPattern::parse(s)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for HostPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for HostPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HostPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> HostName {
        HostName::new(s).unwrap()
    }

    #[test]
    fn exact_names_match_themselves_only() {
        let p = HostPattern::parse("web-1.example.com").unwrap();
        assert!(p.matches(&h("web-1.example.com")));
        assert!(!p.matches(&h("web-2.example.com")));
        assert!(!p.matches(&h("github.com")));
        let ip = HostPattern::parse("10.0.0.5").unwrap();
        assert!(ip.matches(&h("10.0.0.5")));
        assert!(!ip.matches(&h("10.0.0.6")));
    }

    #[test]
    fn a_domain_covers_one_label_and_never_an_ip() {
        let p = HostPattern::parse("*.prod.acme.internal").unwrap();
        assert!(p.matches(&h("web-1.prod.acme.internal")));
        assert!(!p.matches(&h("prod.acme.internal")));
        assert!(!p.matches(&h("a.b.prod.acme.internal")));
        assert!(!p.matches(&h("evilprod.acme.internal")));
        assert!(!p.matches(&h("web-1.prod.acme.internal.evil.com")));
        assert!(!p.matches(&h("github.com")));
        let net = HostPattern::parse("*.0.0.5").unwrap_or(HostPattern::Exact(h("x.y")));
        assert!(!net.matches(&h("10.0.0.5")), "patterns never match IPs");
        assert_eq!(p.to_string(), "*.prod.acme.internal");
    }

    #[test]
    fn broad_or_odd_patterns_are_refused() {
        for bad in [
            "*.com",
            "*",
            "*.*.example.com",
            "web*.example.com",
            "*example.com",
            "",
            "Web.example.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
