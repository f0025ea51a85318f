//! Mechanical checks over the workspace's sources: every client goes through
//! `smith_api` (its endpoints and typed error codes), so that an endpoint or a code has
//! one definition.
//!
//! - No endpoint path literal outside `smith_api` and the CA's routers (and the few
//!   files listed in [`PATHS_ALLOWED`], each with its reason).
//! - No error code's wire string in client code: clients compare `ErrorCode` values.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_api::endpoints;
use smith_api::ErrorCode;
use std::path::{Path, PathBuf};

/// Files that may spell endpoint paths, relative to the workspace root.
const PATHS_ALLOWED: &[(&str, &str)] = &[
    ("api/", "smith_api itself, and its tests' HTTPS server"),
    ("ca/src/server/mod.rs", "the CA's router"),
    ("ca/src/server/audit.rs", "the CA's audit router"),
    (
        "ca/src/scim/mod.rs",
        "the CA's SCIM router (its admin token route)",
    ),
    (
        "hostd/tests/common/mod.rs",
        "hostd's fake CA (to be replaced by the test kit's real CA)",
    ),
    (
        "tests/tests/audit.rs",
        "a replay attack sent with curl from inside a host",
    ),
];

/// Client code: what must compare typed codes.
const CLIENT_CODE: &[&str] = &[
    "cli/src",
    "hostd/src",
    "xtask/src",
    "ca/src/admin_cli.rs",
    "ca/src/audit/cli.rs",
];

fn root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).ok()?;
    manifest.contains("[workspace]").then_some(root)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.is_file() {
        if dir.extension().is_some_and(|e| e == "rs") {
            out.push(dir.to_path_buf());
        }
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        rust_files(&p, out);
    }
}

/// (file relative to root, line number, line) for every line of code (not a comment).
fn code_lines(root: &Path, under: &str) -> Vec<(String, usize, String)> {
    let mut files = Vec::new();
    rust_files(&root.join(under), &mut files);
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            if !line.trim_start().starts_with("//") {
                out.push((rel.clone(), i + 1, line.to_string()));
            }
        }
    }
    out
}

#[test]
fn no_endpoint_path_is_spelled_outside_smith_api() {
    let Some(root) = root() else { return };
    // The fixed part of every endpoint, e.g. `/v1/admin/users`.
    let prefixes: Vec<&str> = endpoints::ALL
        .iter()
        .map(|(_, p)| p.split('{').next().unwrap().trim_end_matches('/'))
        .collect();
    let mut found = Vec::new();
    for (file, n, line) in code_lines(&root, "") {
        if PATHS_ALLOWED.iter().any(|(a, _)| file.starts_with(a)) {
            continue;
        }
        // At the start of a literal, or right after a format placeholder.
        if prefixes
            .iter()
            .any(|p| line.contains(&format!("\"{p}")) || line.contains(&format!("}}{p}")))
        {
            found.push(format!("{file}:{n}: {}", line.trim()));
        }
    }
    assert!(
        found.is_empty(),
        "endpoint paths spelled out (use smith_api::endpoints or a typed client method):\n{}",
        found.join("\n")
    );
}

#[test]
fn client_code_compares_typed_error_codes() {
    let Some(root) = root() else { return };
    // Codes of one word (`internal`, `overloaded`, ...) are ordinary words too.
    let wires: Vec<&str> = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|w| w.contains('_'))
        .collect();
    let mut found = Vec::new();
    for under in CLIENT_CODE {
        for (file, n, line) in code_lines(&root, under) {
            if wires.iter().any(|w| line.contains(&format!("\"{w}\""))) {
                found.push(format!("{file}:{n}: {}", line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "error code strings in client code (compare smith_api::ErrorCode values):\n{}",
        found.join("\n")
    );
}

/// The checks can fail: the patterns they look for are what the old clients had.
#[test]
fn the_checks_recognise_what_they_forbid() {
    let line = r#"client.post("/v1/certs/user", &req)"#;
    assert!(line.contains(&format!("\"{}", endpoints::CERTS_USER)));
    let line = r#"format!("{}/v1/host/sync?since={since}", base)"#;
    assert!(line.contains(&format!("}}{}", endpoints::HOST_SYNC)));
    let line = r#"}) if code == "audit_replay" => {"#;
    assert!(line.contains(&format!("\"{}\"", ErrorCode::AuditReplay.as_str())));
}
