//! `smith-testkit`: what every crate's tests share.
//!
//! - [`TestCa`]: the real CA, started **in-process** ([`TestCa::in_process`]: the
//!   `smith_ca` library's own `server::start` on a runtime the kit owns, fast, no binary
//!   needed) or as the **`smith-ca` binary** ([`TestCa::start`]: for tests of the process
//!   itself: its flags, its log, signals, file-descriptor limits). Both serve HTTPS on
//!   127.0.0.1:<free port>, can be stopped and restarted on the same port, and have the
//!   same admin helpers (typed API calls; `smith-ca admin ...` where a test drives the
//!   admin CLI).
//! - [`Sshd`] and [`Agent`]: a real sshd in a private mount namespace, a private
//!   ssh-agent; [`keygen_l`] parses `ssh-keygen -L`.
//! - [`oidc`]: a real OpenID Provider and a scripted browser (from `smith-tests`).
//! - [`SoftHsm`]: a SoftHSM2 token of its own in a temporary directory, for CA keys
//!   that live in a PKCS#11 token.
//! - [`hostile`]: a man-in-the-middle in front of the real CA that alters its answers,
//!   for the behaviour of clients facing a broken CA. There is no fake CA: a test that
//!   needs a CA to do something starts the real one and makes it do it (the house rule
//!   `no_fake_ca_in_any_test` in `tests/tests/house_rules.rs` checks it).
//!
//! Must never: re-implement a CA endpoint, modify the machine's own `/etc`, or leave a
//! process or server running after its handle is dropped.

// The kit is test code: a failed setup step panics with its context.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bins;
mod ca;
pub mod hostile;
mod ssh;

pub use bins::bin;
pub use ca::{default_serve_config, InitJson, TestCa};
pub use smith_ca::server::ServeConfig;
pub use smith_tests::oidc;
pub use smith_tests::pg;
pub use smith_tests::softhsm::SoftHsm;
pub use ssh::{keygen_l, public_key, ssh_host_key, Agent, KeygenL, Sshd};

use std::path::Path;
use std::process::{Command, Output, Stdio};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether tests needing root, namespaces and sshd may run; in CI
/// (`SMITH_E2E_REQUIRED=1`) a missing prerequisite fails instead of skipping.
pub fn e2e_available(what: &str) -> bool {
    let required = std::env::var("SMITH_E2E_REQUIRED").is_ok_and(|v| v == "1");
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root".to_string());
    }
    for tool in [
        "/usr/sbin/sshd",
        "/usr/bin/ssh",
        "/usr/bin/ssh-keygen",
        "/usr/bin/ssh-agent",
        "/usr/bin/unshare",
    ] {
        if !Path::new(tool).exists() {
            missing.push(tool.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    if required {
        panic!(
            "{what}: SMITH_E2E_REQUIRED=1 but missing: {}",
            missing.join(", ")
        );
    }
    eprintln!("SKIP {what}: missing {}", missing.join(", "));
    false
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The typed code of an error body `{code, error}` (unknown codes: `Unrecognized`).
pub fn code_of(body: &serde_json::Value) -> smith_api::ErrorCode {
    smith_api::ErrorCode::parse(body["code"].as_str().unwrap_or(""))
}
