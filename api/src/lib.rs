//! `smith-api`: the CA's HTTPS API as both ends see it.
//!
//! Owns: the JSON request/response types ([`types`]), every endpoint path
//! ([`endpoints`]), the stable error codes ([`ErrorCode`]), the audit hash chain
//! ([`chain`]), how a typed host name maps to an enrolled host and which grants fit it
//! ([`reach`]), the TLS root fingerprint format and the pinning verifier ([`tls`]), and
//! the one client of the API ([`client`]: a blocking face for CLIs, an async face for
//! hostd, one typed method per endpoint).
//!
//! Must never: trust a server whose TLS chain does not lead to the pinned root, or print
//! a bearer token.

#![forbid(unsafe_code)]

pub mod chain;
pub mod client;
pub mod endpoints;
pub mod error;
pub mod people;
pub mod reach;
pub mod replicas;
pub mod tls;
pub mod types;

pub use client::{AsyncClient, Client, ClientError, ClientOptions, Identity, Trust};
pub use error::ErrorCode;
pub use people::*;
pub use replicas::{ReplicaStatus, Replicas};
pub use types::*;
