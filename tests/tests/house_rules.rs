//! House rules the compiler cannot see, checked over the source tree:
//! - the CA's rules live in its authority: no `Change` is built, and no SQL runs, outside
//!   `ca/src/authority/`, `ca/src/store/` and the model itself;
//! - the CA's adapters (`server/`, `scim/`, `oidc/`) reach the store only through the
//!   authority (they import no `store` internals: no SQLite, no writer);
//! - clients (smith, smith-host and hostd, the modules, `smith-ca admin`, xtask) decide on
//!   the typed `ErrorCode`, never on an error's wire string or message;
//!
//! Test code (from a file's `#[cfg(test)]` on, where each file keeps its tests) is not
//! checked: tests may build changes to set up a model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file under `dir`, with its shipped code (everything before the first
/// `#[cfg(test)]` line).
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                let shipped = match text.find("\n#[cfg(test)]") {
                    Some(i) => text[..i].to_string(),
                    None => text,
                };
                out.push((p, shipped));
            }
        }
    }
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap().display().to_string()
}

/// The lines of `code` containing any of `needles`, as `file:line: text`.
fn hits(path: &Path, code: &str, needles: &[&str]) -> Vec<String> {
    code.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter(|(_, l)| needles.iter().any(|n| l.contains(n)))
        .map(|(i, l)| format!("{}:{}: {}", rel(path), i + 1, l.trim()))
        .collect()
}

#[test]
fn changes_and_sql_live_in_the_authority_and_its_stores() {
    let ca = root().join("ca/src");
    let allowed_changes = ["authority/", "store/", "model.rs"];
    let mut bad = Vec::new();
    for (p, code) in sources(&ca) {
        let r = rel(&p);
        let inside = |prefixes: &[&str]| {
            prefixes
                .iter()
                .any(|a| r.starts_with(&format!("ca/src/{a}")))
        };
        if !inside(&allowed_changes) {
            bad.extend(hits(&p, &code, &["Change::"]));
        }
        if !inside(&["store/"]) {
            bad.extend(hits(
                &p,
                &code,
                &[
                    "rusqlite",
                    "SELECT ",
                    "INSERT INTO",
                    "DELETE FROM",
                    "UPDATE ",
                ],
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "changes built or SQL run outside the authority and its stores:\n{}",
        bad.join("\n")
    );
}

#[test]
fn adapters_reach_the_store_only_through_the_authority() {
    let mut bad = Vec::new();
    for dir in ["server", "scim", "oidc"] {
        for (p, code) in sources(&root().join("ca/src").join(dir)) {
            bad.extend(hits(
                &p,
                &code,
                &[
                    "crate::store",
                    "store::sqlite",
                    "Writer",
                    "rusqlite",
                    "crate::db",
                    "crate::writer",
                ],
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "an adapter imports the store's internals:\n{}",
        bad.join("\n")
    );
}

/// Clients decide on the CA's typed `ErrorCode` (smith-api), never on its wire string or
/// on the text of a message: a reworded message or a new code must not change what a
/// client does.
#[test]
fn clients_never_match_error_strings_or_messages() {
    let r = root();
    let mut files = Vec::new();
    for dir in [
        "cli/src",
        "hostd/src",
        "login/src",
        "xtask/src",
        "pam_smith/src",
        "nss_smith/src",
    ] {
        files.extend(sources(&r.join(dir)));
    }
    for f in [
        "ca/src/admin_cli.rs",
        "ca/src/admin_people.rs",
        "ca/src/audit/cli.rs",
    ] {
        files.extend(
            sources(r.join(f).parent().unwrap())
                .into_iter()
                .filter(|(p, _)| p.ends_with(f)),
        );
    }
    let mut bad = Vec::new();
    for (p, code) in &files {
        bad.extend(hits(
            p,
            code,
            &[
                // A wire code compared as text.
                "code() == Some(\"",
                "code == \"",
                "wire_code ==",
                "wire_code.as_str() ==",
                ".code.as_str() ==",
                // An error recognised by its message.
                "to_string().contains(",
                "to_string().starts_with(",
                "message.contains(",
                "message.starts_with(",
                "error_chain(&e).contains(",
            ],
        ));
    }
    assert!(!files.is_empty());
    assert!(
        bad.is_empty(),
        "client code matches an error's wire string or message (use smith_api::ErrorCode, \
         ClientError::code or tls_error):\n{}",
        bad.join("\n")
    );
}
