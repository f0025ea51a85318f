//! `smith-proto`: the std-only vocabulary every Smith part shares.
//!
//! Owns: validated names ([`names`]), allowed uid/gid ranges ([`ids`]), host tags,
//! selectors and levels ([`tags`]), the NSS cache file format ([`cache`]) and its
//! trusted loader ([`cachefile`]), the local
//! socket protocol ([`wire`]), host audit events ([`event`]), a minimal OpenSSH
//! certificate reader ([`sshcert`]), grant-bound certificate principals and permits
//! ([`grants`]), the host access decision ([`policy`]), the session records sudo is decided by
//! ([`sessionfile`]), the one
//! bounded socket client ([`client`]), the one local-account parser ([`local`]), the default
//! host paths ([`paths`]) and, with the `serde` feature, the sync snapshot model
//! ([`snapshot`]).
//!
//! Must never: depend on an async runtime, TLS, or anything that starts threads; it is
//! linked into the NSS and PAM modules that live inside other people's processes.
//! `unsafe` only in [`client`] (the socket calls std does not offer: non-blocking
//! connect, `poll`, `SO_PEERCRED`, `MSG_NOSIGNAL`) and [`pidlock`] (a lock a forked
//! child can take over), each block with its `SAFETY:` argument.
#![deny(unsafe_code)]

pub mod cache;
pub mod cachefile;
#[allow(unsafe_code)]
pub mod client;
pub mod event;
pub mod grants;
pub mod hostpattern;
pub mod ids;
pub mod local;
pub mod names;
pub mod paths;
#[allow(unsafe_code)]
pub mod pidlock;
pub mod policy;
pub mod sessionfile;
pub mod sshcert;
pub mod sudorules;
pub mod tags;
pub mod text;
pub mod wire;

#[cfg(feature = "serde")]
pub mod snapshot;

pub use hostpattern::HostPattern;
pub use ids::{IdRange, PosixId};
pub use names::{GroupName, HostName, UserName};
pub use tags::{Level, Selector, Tags};
