//! `smith-api`: the CA's HTTPS API as both ends see it.
//!
//! Owns: the JSON request/response types ([`types`]), the audit hash chain ([`chain`]),
//! the TLS root fingerprint format and the pinning verifier ([`tls`]), and a blocking
//! client for CLIs ([`client`]). Async callers (hostd) build their own `reqwest::Client`
//! from [`tls::client_config`].
//!
//! Must never: trust a server whose TLS chain does not lead to the pinned root, or print
//! a bearer token.

#![forbid(unsafe_code)]

pub mod chain;
pub mod client;
pub mod error;
pub mod people;
pub mod tls;
pub mod types;

pub use client::{ApiError, Client, ClientOptions, Identity, Trust};
pub use error::ErrorCode;
pub use people::*;
pub use types::*;
