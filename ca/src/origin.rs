//! Who a change comes from. Every command of the authority takes an [`Origin`]; rules that
//! depend on it (how a disabled user's certificates are marked revoked, later which
//! changes SCIM may make) match on it, never on text.

use smith_proto::{HostName, UserName};
use std::fmt;

/// The origin of a change or request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// An admin through the admin API (`name`: who; `admin` for the bootstrap token).
    Admin { name: String },
    /// The IdP's SCIM provisioning.
    Scim,
    /// An engineer's OIDC sign-in, by the token's `sub`.
    OidcSignIn { subject: String },
    /// An engineer asking for a certificate.
    Engineer { user: UserName },
    /// A host: its own enrollment or renewal.
    Host { name: HostName },
}

impl Origin {
    /// The bootstrap admin (the one admin identity until named admins exist).
    pub fn admin() -> Origin {
        Origin::Admin {
            name: "admin".into(),
        }
    }

    /// The kind, as stored (`admin`, `scim`, `oidc`, `engineer`, `host`).
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Admin { .. } => "admin",
            Origin::Scim => "scim",
            Origin::OidcSignIn { .. } => "oidc",
            Origin::Engineer { .. } => "engineer",
            Origin::Host { .. } => "host",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Admin { name } => write!(f, "admin {name}"),
            Origin::Scim => f.write_str("scim"),
            Origin::OidcSignIn { subject } => write!(f, "oidc sub {subject}"),
            Origin::Engineer { user } => write!(f, "engineer {user}"),
            Origin::Host { name } => write!(f, "host {name}"),
        }
    }
}
