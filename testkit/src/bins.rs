//! Workspace binaries for tests of crates that do not build them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Path of a workspace binary (`smith-ca`, `smith`) beside the running test, built first
/// when it is older than its sources (so `cargo test -p smith-cli` works alone; after a
/// workspace build nothing is rebuilt).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let path = dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        if !fresh(&path, name) {
            let package = match name {
                "smith-ca" => "smith-ca",
                "smith" => "smith-cli",
                other => other,
            };
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet", "-p", package, "--bin", name]);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build");
            assert!(st.success(), "cargo build of {name} failed");
        }
        built.push(name.to_string());
    }
    path
}

/// Whether `path` is newer than every source file it is built from (so a workspace-wide
/// `cargo test`, which built it already, does not wait on the build lock again).
fn fresh(path: &Path, name: &str) -> bool {
    let Ok(built) = std::fs::metadata(path).and_then(|m| m.modified()) else {
        return false;
    };
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let crate_dir = if name == "smith" { "cli" } else { "ca" };
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    let mut stack: Vec<PathBuf> = vec![
        ws.join(crate_dir).join("src"),
        ws.join("api/src"),
        ws.join("proto/src"),
        ws.join("login/src"),
    ];
    while let Some(p) = stack.pop() {
        if p.ends_with("tests") {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if let Ok(m) = meta.modified() {
            newest = newest.max(m);
        }
    }
    built >= newest
}
