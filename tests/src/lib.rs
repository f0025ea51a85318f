//! `smith-tests`: the end-to-end suite's harness.
//!
//! Owns: building a CA and a fleet of hosts on one machine out of network, mount and UTS
//! namespaces ([`fleet`]), running commands with deadlines ([`cmd`]), and the fault matrix
//! of `cargo xtask faults` on such a fleet ([`faults`]). The scenarios
//! themselves are in `tests/tests/*.rs` and drive only real programs: `smith-ca`,
//! `smith`, `smith-host`, `smith-hostd`, `sshd`, `ssh`, `ssh-agent`, `sudo`, `getent`,
//! `id`, `pamtester`.
//!
//! Must never: modify the machine's own `/etc`, `/home` or `/root`, or send traffic
//! anywhere but loopback and the fleet's own namespaces.

// The harness is test code: a failed setup step panics with its context.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cmd;
pub mod faults;
pub mod fleet;
pub mod oidc;
pub mod pg;
pub mod softhsm;

pub use cmd::Outcome;
pub use fleet::{e2e_available, Client, Fleet, Host};
pub use softhsm::SoftHsm;
