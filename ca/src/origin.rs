//! Who a change comes from, and from where. Every command of the authority takes an
//! [`Origin`]; rules that depend on it (how a disabled user's certificates are marked
//! revoked, which changes SCIM may make, whose disable is sticky) match on its
//! [`Actor`], never on text. Every committed change carries its origin into the CA's
//! `@ca` audit chain ([`crate::audit::change_event`]).
//!
//! Must never: hold a secret (a token is named by its public id, never by its text), or
//! describe an actor from an unverified claim.

use smith_proto::{HostName, UserName};
use std::fmt;
use std::net::IpAddr;

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Actor {
    /// The bootstrap admin token printed by `smith-ca init` (until a named admin exists).
    Bootstrap,
    /// A named admin: signed in through the IdP (`smith-ca admin login`) or holding a
    /// named admin token minted for automation.
    Admin { name: String },
    /// The IdP's SCIM provisioning.
    Scim,
    /// An engineer's OIDC sign-in, by the token's verified `sub`.
    OidcSignIn { subject: String },
    /// An engineer asking for a certificate.
    Engineer { user: UserName },
    /// A host: its own enrollment or renewal.
    Host { name: HostName },
    /// A command run on the CA's machine against its data directory (`restore`, the
    /// retention sweep, `recover-admin`).
    Local { command: String },
}

/// The origin of a change or request: the actor, the source address of the request,
/// and the id of the token that authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub actor: Actor,
    /// The peer address of the request (`None`: not over the network).
    pub source: Option<IpAddr>,
    /// The public id of the token that authenticated the request (see
    /// [`crate::auth::token_id`]), if a token did.
    pub token_id: Option<String>,
}

impl Origin {
    /// `actor`, from nowhere in particular (tests, local commands).
    pub fn new(actor: Actor) -> Origin {
        Origin {
            actor,
            source: None,
            token_id: None,
        }
    }

    /// The bootstrap admin (tests, and the one admin identity until named admins exist).
    pub fn admin() -> Origin {
        Origin::new(Actor::Bootstrap)
    }

    /// A named admin.
    pub fn named_admin(name: &str) -> Origin {
        Origin::new(Actor::Admin { name: name.into() })
    }

    /// SCIM provisioning.
    pub fn scim() -> Origin {
        Origin::new(Actor::Scim)
    }

    /// A host.
    pub fn host(name: HostName) -> Origin {
        Origin::new(Actor::Host { name })
    }

    /// A local command on the CA's machine.
    pub fn local(command: &str) -> Origin {
        Origin::new(Actor::Local {
            command: command.into(),
        })
    }

    /// The same origin, from `source`.
    pub fn from_addr(mut self, source: IpAddr) -> Origin {
        self.source = Some(source.to_canonical());
        self
    }

    /// The same origin, authenticated by the token with public id `id`.
    pub fn with_token(mut self, id: impl Into<String>) -> Origin {
        self.token_id = Some(id.into());
        self
    }

    /// The kind, as recorded (`admin`, `scim`, `oidc`, `engineer`, `host`, `local`).
    pub fn kind(&self) -> &'static str {
        match self.actor {
            Actor::Bootstrap | Actor::Admin { .. } => "admin",
            Actor::Scim => "scim",
            Actor::OidcSignIn { .. } => "oidc",
            Actor::Engineer { .. } => "engineer",
            Actor::Host { .. } => "host",
            Actor::Local { .. } => "local",
        }
    }

    /// Who, as recorded: the admin's name (`bootstrap` for the bootstrap token), `scim`,
    /// the OIDC subject, the user, the host, the local command.
    pub fn actor_name(&self) -> String {
        match &self.actor {
            Actor::Bootstrap => "bootstrap".into(),
            Actor::Admin { name } => name.clone(),
            Actor::Scim => "scim".into(),
            Actor::OidcSignIn { subject } => subject.clone(),
            Actor::Engineer { user } => user.to_string(),
            Actor::Host { name } => name.to_string(),
            Actor::Local { command } => command.clone(),
        }
    }

    pub fn is_scim(&self) -> bool {
        matches!(self.actor, Actor::Scim)
    }

    /// An admin (bootstrap or named).
    pub fn is_admin(&self) -> bool {
        matches!(self.actor, Actor::Bootstrap | Actor::Admin { .. })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.actor {
            Actor::Bootstrap => f.write_str("admin bootstrap")?,
            Actor::Admin { name } => write!(f, "admin {name}")?,
            Actor::Scim => f.write_str("scim")?,
            Actor::OidcSignIn { subject } => write!(f, "oidc sub {subject}")?,
            Actor::Engineer { user } => write!(f, "engineer {user}")?,
            Actor::Host { name } => write!(f, "host {name}")?,
            Actor::Local { command } => write!(f, "local {command}")?,
        }
        if let Some(s) = self.source {
            write!(f, " from {s}")?;
        }
        Ok(())
    }
}
