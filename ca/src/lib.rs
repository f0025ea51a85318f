//! `smith-ca` as a library: the CA and control plane that the `smith-ca` binary runs,
//! and that tests start in-process (see the test kit).
//!
//! The parts, from the centre out: [`model`] (the in-memory policy every hot path reads),
//! [`db`] and [`writer`] (the durable store), [`issue`] and [`sync`] (pure decisions),
//! [`server`] (the HTTPS adapter: authentication, routing, error mapping), [`scim`] and
//! [`oidc`] (the IdP's adapters), [`audit`] (the trail). See ca/README.md.

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod datadir;
pub mod db;
pub mod init;
pub mod issue;
pub mod krl;
pub mod model;
pub mod oidc;
pub mod revoke;
pub mod scim;
pub mod server;
pub mod signer;
pub mod sshca;
pub mod sync;
pub mod timewin;
pub mod tlsca;
pub mod writer;
