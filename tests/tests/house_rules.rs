//! House rules the compiler cannot see, checked over the source tree:
//! - the CA's rules live in its authority: no `Change` is built, and no SQL runs, outside
//!   `ca/src/authority/`, `ca/src/store/` and the model itself;
//! - the CA's adapters (`server/`, `scim/`, `oidc/`) reach the store only through the
//!   authority (they import no `store` internals: no SQLite, no writer);
//! - clients (smith, smith-host and hostd, the modules, `smith-ca admin`, xtask) decide on
//!   the typed `ErrorCode`, never on an error's wire string or message;
//! - no fake CA in any test: tests that need a CA start the real one (`smith_testkit::TestCa`).
//!
//! Test code (from a file's `#[cfg(test)]` on, where each file keeps its tests) is not
//! checked by the first three: tests may build changes to set up a model. The last one
//! checks test code only.

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

/// Servers in test code that answer on the CA's paths without being a CA: each alters,
/// refuses or garbles, and none makes up a CA's answer (checked below). With the reason
/// each may exist.
const HOSTILE_SERVERS: &[(&str, &str)] = &[
    (
        "api/tests/client.rs",
        "the client's wire tests: canned refusals, garbage and oversized answers",
    ),
    (
        "testkit/src/hostile.rs",
        "a man-in-the-middle in front of the real CA that alters its answers",
    ),
];

/// Every file of test code outside the CA's own `src/`: integration tests (`*/tests/`),
/// the harnesses (`testkit/src`, `tests/src`), and each source file's `#[cfg(test)]`
/// part.
fn test_code() -> Vec<(PathBuf, String)> {
    let r = root();
    let mut out = Vec::new();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(&r)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|d| d.join("Cargo.toml").exists())
        .collect();
    crates.sort();
    for dir in crates {
        let tests = dir.join("tests");
        if tests.is_dir() {
            out.extend(sources_whole(&tests));
        }
        let src = dir.join("src");
        if !src.is_dir() || dir.ends_with("ca") {
            continue;
        }
        if dir.ends_with("testkit") || dir.ends_with("tests") {
            out.extend(sources_whole(&src));
            continue;
        }
        for (p, _) in sources(&src) {
            let text = std::fs::read_to_string(&p).unwrap();
            if let Some(i) = text.find("\n#[cfg(test)]") {
                out.push((p, text[i..].to_string()));
            }
        }
    }
    out
}

/// Every `.rs` file under `dir`, whole.
fn sources_whole(dir: &Path) -> Vec<(PathBuf, String)> {
    sources(dir)
        .into_iter()
        .map(|(p, _)| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// No test fakes the CA: a CA re-implemented for tests (as hostd's tests once had: an axum
/// router answering enroll, sync and renew) drifts from the real one, and the tests then
/// prove the client against the fake. Test code that accepts connections and answers on
/// the CA's paths must be one of [`HOSTILE_SERVERS`], and even those never build a CA's
/// answer (a snapshot, an enrollment, a certificate): they pass on the real CA's.
#[test]
fn no_fake_ca_in_any_test() {
    // Accepting connections (HTTP routers, TLS servers, listeners).
    let serves = [
        "Router::new",
        ".route(",
        "serve_connection",
        "TlsAcceptor",
        "ServerConnection::new",
        ".incoming()",
        ".accept()",
    ];
    // The CA's paths (`/v1/...`, SCIM), as literals or through smith_api's constants.
    let ca_paths = ["\"/v1/", "endpoints::", "\"/scim/"];
    // A CA's answers, made up: the types it answers with, their distinctive fields, and
    // certificates issued from requests.
    let ca_answers = [
        "SyncResponse {",
        "EnrollResponse {",
        "CertResponse {",
        "SnapshotUser {",
        "SnapshotGroup {",
        "SnapshotGrant {",
        "HostKrl {",
        "CaKeys {",
        "AuditAck {",
        "\"client_cert_pem\"",
        "\"user_ca_keys\"",
        "\"removed_users\"",
        "\"krl_base64\"",
        "CertificateSigningRequestParams",
    ];
    let files = test_code();
    assert!(
        files.len() > 20,
        "found only {} files of test code",
        files.len()
    );
    let mut bad = Vec::new();
    let mut servers = Vec::new();
    for (p, code) in &files {
        // This file names the patterns it looks for.
        if p.ends_with("tests/tests/house_rules.rs") {
            continue;
        }
        let serving = hits(p, code, &serves);
        let paths = hits(p, code, &ca_paths);
        if serving.is_empty() || paths.is_empty() {
            continue;
        }
        let r = rel(p);
        servers.push(r.clone());
        let answers = hits(p, code, &ca_answers);
        if !HOSTILE_SERVERS.iter().any(|(f, _)| *f == r) {
            bad.push(format!(
                "{r} serves the CA's paths: a fake CA (start the real one: \
                 smith_testkit::TestCa, or alter its answers: smith_testkit::hostile)\n  {}\n  {}",
                serving.join("\n  "),
                paths.join("\n  ")
            ));
        } else if !answers.is_empty() {
            bad.push(format!(
                "{r} (a hostile server) makes up the CA's answers:\n  {}",
                answers.join("\n  ")
            ));
        }
    }
    for (f, why) in HOSTILE_SERVERS {
        assert!(
            servers.iter().any(|s| s == f),
            "{f} ({why}) no longer serves the CA's paths: take it off HOSTILE_SERVERS"
        );
    }
    assert!(bad.is_empty(), "fake CAs in tests:\n{}", bad.join("\n"));
}
