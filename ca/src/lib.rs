//! `smith-ca` as a library: the CA and control plane that the `smith-ca` binary runs,
//! and that tests start in-process (see the test kit).
//!
//! The parts, from the centre out: [`model`] (the in-memory policy every hot path reads),
//! [`store`] (the durable store behind a trait: SQLite, in-memory), [`issue`] and
//! [`sync`] and [`reach`] (pure decisions), [`authority`] (the commands: every rule of the CA, once),
//! and the adapters over it: [`server`] (HTTPS: authentication, routing, error mapping),
//! [`scim`] (the IdP's provisioning), [`oidc`] (ID token verification). [`audit`] holds
//! the trail's shared logic. See ca/README.md.

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod authority;
pub mod backup;
pub mod cakeys;
pub mod database;
pub mod datadir;
pub mod hsm;
pub mod init;
pub mod issue;
pub mod krl;
pub mod metrics;
pub mod model;
pub mod oidc;
pub mod origin;
pub mod reach;
pub mod scim;
pub mod server;
pub mod signer;
pub mod sshca;
pub mod store;
pub mod sync;
pub mod timewin;
pub mod tlsca;
pub mod trustonly;
