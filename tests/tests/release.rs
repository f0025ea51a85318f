//! Issue 26, "Trust the bits": what an operator can check about the packages.
//!
//! - `cargo xtask package deb --sign-key <throwaway key>` writes SHA256SUMS over the
//!   packages and their SBOMs and signs it; the README's two verification commands
//!   (`ssh-keygen -Y verify`, `sha256sum -c`) accept it, and refuse after one byte of a
//!   package or an SBOM changes, after SHA256SUMS is rewritten to match a changed
//!   package, and for signatures by another key or for another namespace.
//! - The SBOMs: the workspace one lists every crate of Cargo.lock (read here with its
//!   own parser) with version, license and the lock file's checksum; each package's
//!   lists exactly the crates `cargo tree` says its binaries are built from.
//! - `cargo xtask repro --quick`: two builds in two different directories (release
//!   builds of the NSS and PAM modules; .deb and .rpm packages) are byte-identical.
//! - `cargo xtask audit`: Cargo.lock's sources, and RustSec advisories when a database
//!   is at hand.
//!
//! Skipped (with a message) unless root with the fleet's tools, like the install test;
//! `SMITH_E2E_REQUIRED=1` makes that a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::{ensure, Context, Result};
use smith_tests::cmd::{outcome, workspace, xtask, Outcome};
use smith_tests::e2e_available;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The README's verification commands, run in the directory of the packages with the
/// project's allowed signers in `smith-allowed-signers`. The test checks the README
/// shows exactly these lines.
const VERIFY: [&str; 2] = [
    "ssh-keygen -Y verify -f smith-allowed-signers -I release@smith -n smith-release -s SHA256SUMS.sig < SHA256SUMS",
    "sha256sum -c SHA256SUMS",
];

fn bin_dir() -> String {
    std::env::var("SMITH_BIN_DIR").unwrap_or_else(|_| {
        workspace()
            .join("target/debug")
            .to_string_lossy()
            .into_owned()
    })
}

fn sh_in(dir: &Path, script: &str) -> Result<Outcome> {
    let mut c = Command::new("/bin/sh");
    c.arg("-ec").arg(script).current_dir(dir);
    outcome(c, Duration::from_secs(60))
}

/// xtask package and repro may install build tools with apt-get and run dpkg tools:
/// one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A throwaway key, the signed .debs built with it, and the allowed_signers line.
struct Built {
    dir: PathBuf,
    work: PathBuf,
    allowed: String,
}

/// Builds the signed packages once for the tests of this file.
fn built() -> &'static Result<Built, String> {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    BUILT.get_or_init(|| build().map_err(|e| format!("{e:#}")))
}

fn build() -> Result<Built> {
    let _serial = serial();
    let work = workspace().join("target/release-test");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let key = work.join("throwaway-release-key");
    let mut c = Command::new("ssh-keygen");
    c.args(["-q", "-t", "ed25519", "-N", "", "-C", "throwaway", "-f"])
        .arg(&key);
    outcome(c, Duration::from_secs(30))?.ok()?;
    let dir = work.join("debs");
    let started = Instant::now();
    let o = xtask(
        &[
            "package",
            "deb",
            "--fast",
            "--no-lintian",
            "--bin-dir",
            &bin_dir(),
            "--out",
            &dir.to_string_lossy(),
            "--sign-key",
            &key.to_string_lossy(),
        ],
        Duration::from_secs(600),
    )?
    .ok()
    .context("cargo xtask package deb --sign-key")?;
    eprintln!("signed .debs built in {:.0?}", started.elapsed());
    let line = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("xtask: allowed_signers line for this key: "))
        .with_context(|| format!("xtask printed no allowed_signers line: {o}"))?;
    // The line xtask prints must be the key's own public half, in the README's form.
    let public = std::fs::read_to_string(work.join("throwaway-release-key.pub"))?;
    let mut w = public.split_whitespace();
    let expected = format!(
        "release@smith namespaces=\"smith-release\" {} {}",
        w.next().context("public key type")?,
        w.next().context("public key blob")?
    );
    ensure!(line == expected, "{line:?} vs {expected:?}");
    Ok(Built {
        dir,
        work,
        allowed: format!("{line}\n"),
    })
}

fn get_built() -> Result<&'static Built> {
    built()
        .as_ref()
        .map_err(|e| anyhow::anyhow!("building the signed packages failed: {e}"))
}

/// A copy of the built packages to tamper with, with `smith-allowed-signers`.
fn scratch(name: &str) -> Result<PathBuf> {
    let b = get_built()?;
    let d = b.work.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    for e in std::fs::read_dir(&b.dir)? {
        let p = e?.path();
        if p.is_file() {
            std::fs::copy(&p, d.join(p.file_name().context("name")?))?;
        }
    }
    std::fs::write(d.join("smith-allowed-signers"), &b.allowed)?;
    Ok(d)
}

/// Runs the README's verification in `dir`: (signature ok, sums ok).
fn verify(dir: &Path) -> Result<(Outcome, Outcome)> {
    Ok((sh_in(dir, VERIFY[0])?, sh_in(dir, VERIFY[1])?))
}

fn flip_byte(path: &Path) -> Result<()> {
    let mut bytes = std::fs::read(path)?;
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(path, bytes)?;
    Ok(())
}

#[test]
fn the_readme_shows_the_verification_the_tests_run() -> Result<()> {
    let readme = std::fs::read_to_string(workspace().join("README.md"))?;
    for line in VERIFY {
        ensure!(
            readme.lines().any(|l| l.trim() == line),
            "README.md does not show {line:?}"
        );
    }
    let activate = std::fs::read_to_string(workspace().join("hostd/src/bin/smith-host.rs"))?;
    ensure!(
        activate.contains("ssh-keygen -Y verify") && activate.contains("sha256sum -c SHA256SUMS"),
        "smith-host activate's help does not say how to verify the packages"
    );
    Ok(())
}

#[test]
fn signed_sums_verify_and_one_changed_byte_does_not() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let b = get_built()?;
    // SHA256SUMS lists every package and SBOM, and nothing else.
    let sums = std::fs::read_to_string(b.dir.join("SHA256SUMS"))?;
    let listed: BTreeSet<String> = sums
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(_, n)| n.to_string()))
        .collect();
    let shipped: BTreeSet<String> = std::fs::read_dir(&b.dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".deb") || n.ends_with(".cdx.json"))
        .collect();
    ensure!(
        listed == shipped,
        "SHA256SUMS lists {listed:?}, the directory has {shipped:?}"
    );
    ensure!(
        listed.len() == 7,
        "3 packages, 3 SBOMs and the workspace SBOM: {listed:?}"
    );

    // As built: both commands succeed.
    let d = scratch("verify-ok")?;
    let (sig, sum) = verify(&d)?;
    ensure!(
        sig.success()
            && sig
                .stdout
                .contains("Good \"smith-release\" signature for release@smith"),
        "{sig}"
    );
    ensure!(
        sum.success() && sum.stdout.matches(": OK").count() == 7,
        "{sum}"
    );

    // One byte of a package: the signature still covers SHA256SUMS, which now fails.
    let d = scratch("one-byte")?;
    let host = d.join("smith-host_0.1.0_amd64.deb");
    flip_byte(&host)?;
    let (sig, sum) = verify(&d)?;
    ensure!(sig.success(), "SHA256SUMS itself was not touched: {sig}");
    ensure!(
        !sum.success() && sum.stdout.contains("smith-host_0.1.0_amd64.deb: FAILED"),
        "a package with one byte changed passed sha256sum -c: {sum}"
    );
    // And back: the check is about that byte.
    flip_byte(&host)?;
    ensure!(
        verify(&d)?.1.success(),
        "restoring the byte did not restore the check"
    );

    // One byte of an SBOM.
    let d = scratch("sbom-byte")?;
    flip_byte(&d.join("smith-ca_0.1.0_amd64.deb.cdx.json"))?;
    let (_, sum) = verify(&d)?;
    ensure!(
        !sum.success()
            && sum
                .stdout
                .contains("smith-ca_0.1.0_amd64.deb.cdx.json: FAILED"),
        "{sum}"
    );

    // The attacker also rewrites SHA256SUMS to match the changed package: now the
    // signature fails.
    let d = scratch("sums-rewritten")?;
    let host = d.join("smith-host_0.1.0_amd64.deb");
    flip_byte(&host)?;
    let new_hash = sh_in(&d, "sha256sum smith-host_0.1.0_amd64.deb")?.ok()?;
    let new_hash = new_hash
        .out()
        .split_whitespace()
        .next()
        .context("hash")?
        .to_string();
    let rewritten: String = sums
        .lines()
        .map(|l| {
            if l.ends_with("  smith-host_0.1.0_amd64.deb") {
                format!("{new_hash}  smith-host_0.1.0_amd64.deb\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(d.join("SHA256SUMS"), rewritten)?;
    let (sig, sum) = verify(&d)?;
    ensure!(
        sum.success(),
        "the rewritten sums match the changed package: {sum}"
    );
    ensure!(
        !sig.success(),
        "a rewritten SHA256SUMS passed the signature check: {sig}"
    );

    // ... and signs it with a key of their own, or gets the release key to sign it for
    // another purpose (namespace `file`): both refused.
    let attacker = b.work.join("attacker-key");
    let _ = std::fs::remove_file(&attacker);
    let _ = std::fs::remove_file(attacker.with_extension("pub"));
    let mut c = Command::new("ssh-keygen");
    c.args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&attacker);
    outcome(c, Duration::from_secs(30))?.ok()?;
    for (key, namespace, what) in [
        (attacker.clone(), "smith-release", "another key"),
        (
            b.work.join("throwaway-release-key"),
            "file",
            "namespace file",
        ),
    ] {
        let _ = std::fs::remove_file(d.join("SHA256SUMS.sig"));
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-Y", "sign", "-n", namespace, "-f"])
            .arg(&key)
            .arg(d.join("SHA256SUMS"));
        outcome(c, Duration::from_secs(30))?.ok()?;
        let (sig, _) = verify(&d)?;
        ensure!(!sig.success(), "a signature by {what} was accepted: {sig}");
    }

    // No signature file at all: refused, not skipped.
    let d = scratch("no-sig")?;
    std::fs::remove_file(d.join("SHA256SUMS.sig"))?;
    ensure!(
        !verify(&d)?.0.success(),
        "verification passed without a signature"
    );
    Ok(())
}

/// `(name, version) -> checksum` from Cargo.lock, parsed line by line (independently
/// of xtask's TOML parsing).
fn lock_entries() -> Result<BTreeMap<(String, String), Option<String>>> {
    let text = std::fs::read_to_string(workspace().join("Cargo.lock"))?;
    let mut out = BTreeMap::new();
    for block in text.split("[[package]]").skip(1) {
        let field = |k: &str| {
            block.lines().find_map(|l| {
                l.strip_prefix(&format!("{k} = \""))
                    .and_then(|v| v.strip_suffix('"'))
                    .map(str::to_string)
            })
        };
        out.insert(
            (
                field("name").context("name")?,
                field("version").context("version")?,
            ),
            field("checksum"),
        );
    }
    Ok(out)
}

fn components(path: &Path) -> Result<Vec<serde_json::Value>> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    ensure!(
        v["bomFormat"] == "CycloneDX" && v["specVersion"] == "1.5",
        "{}",
        path.display()
    );
    ensure!(
        v["serialNumber"]
            .as_str()
            .is_some_and(|s| s.starts_with("urn:uuid:")),
        "no serial number"
    );
    Ok(v["components"].as_array().context("components")?.clone())
}

fn name_version(c: &serde_json::Value) -> (String, String) {
    (
        c["name"].as_str().unwrap_or_default().to_string(),
        c["version"].as_str().unwrap_or_default().to_string(),
    )
}

/// The crates `cargo tree` says these workspace crates are built from (normal and build
/// dependencies, this machine's target), with features as the packaging build unifies
/// them: the five packaged crates built together.
fn cargo_tree(roots: &[&str]) -> Result<BTreeSet<(String, String)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(workspace()).args([
        "tree",
        "--locked",
        "--no-dedupe",
        "-e",
        "normal,build",
        "--prefix",
        "depth",
        "-f",
        "{p}",
    ]);
    for p in [
        "smith-hostd",
        "nss_smith",
        "pam_smith",
        "smith-ca",
        "smith-cli",
    ] {
        c.args(["-p", p]);
    }
    let o = outcome(c, Duration::from_secs(120))?.ok()?;
    let mut out = BTreeSet::new();
    let mut inside = false;
    for l in o.stdout.lines() {
        let mut w = l.split_whitespace();
        let (Some(first), Some(version)) = (w.next(), w.next()) else {
            continue;
        };
        let name = first.trim_start_matches(|c: char| c.is_ascii_digit());
        if first.starts_with('0') && !first[1..].starts_with(|c: char| c.is_ascii_digit()) {
            inside = roots.contains(&name);
        }
        if inside {
            if let Some(v) = version.strip_prefix('v') {
                out.insert((name.to_string(), v.to_string()));
            }
        }
    }
    Ok(out)
}

#[test]
fn sboms_list_every_locked_crate_with_version_and_license() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let b = get_built()?;
    let lock = lock_entries()?;
    let workspace_sbom = components(&b.dir.join("smith-0.1.0.workspace.cdx.json"))?;
    let mut seen = BTreeSet::new();
    for c in &workspace_sbom {
        let nv = name_version(c);
        let license = c["licenses"][0]["expression"].as_str().unwrap_or_default();
        ensure!(!license.trim().is_empty(), "{nv:?} has no license: {c}");
        let checksum = lock
            .get(&nv)
            .with_context(|| format!("{nv:?} is in the SBOM but not in Cargo.lock"))?;
        if let Some(sum) = checksum {
            ensure!(
                c["hashes"][0]["content"].as_str() == Some(sum.as_str())
                    && c["purl"].as_str() == Some(&format!("pkg:cargo/{}@{}", nv.0, nv.1)),
                "{nv:?}: purl/hash do not match Cargo.lock ({sum}): {c}"
            );
        }
        ensure!(seen.insert(nv.clone()), "{nv:?} listed twice");
    }
    let locked: BTreeSet<_> = lock.keys().cloned().collect();
    let missing: Vec<_> = locked.difference(&seen).collect();
    ensure!(
        missing.is_empty(),
        "crates of Cargo.lock missing from the SBOM: {missing:?}"
    );
    eprintln!("workspace SBOM: all {} crates of Cargo.lock", locked.len());

    for (file, roots) in [
        (
            "smith-host_0.1.0_amd64.deb",
            &["smith-hostd", "nss_smith", "pam_smith"][..],
        ),
        ("smith-ca_0.1.0_amd64.deb", &["smith-ca"][..]),
        ("smith_0.1.0_amd64.deb", &["smith-cli"][..]),
    ] {
        let sbom_path = b.dir.join(format!("{file}.cdx.json"));
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&sbom_path)?)?;
        let hash = sh_in(&b.dir, &format!("sha256sum {file}"))?.ok()?;
        ensure!(
            doc["metadata"]["component"]["hashes"][0]["content"].as_str()
                == hash.out().split_whitespace().next(),
            "{file}: the SBOM names another package file"
        );
        let listed: BTreeSet<_> = components(&sbom_path)?.iter().map(name_version).collect();
        let tree = cargo_tree(roots)?;
        ensure!(
            listed == tree,
            "{file}: the SBOM and cargo tree disagree\n  only in SBOM: {:?}\n  only in cargo tree: {:?}",
            listed.difference(&tree).collect::<Vec<_>>(),
            tree.difference(&listed).collect::<Vec<_>>()
        );
        for r in roots {
            ensure!(
                listed.iter().any(|(n, _)| n == r),
                "{file} does not list {r}"
            );
        }
        eprintln!("{file}: {} crates, the same as cargo tree", listed.len());
    }
    Ok(())
}

#[test]
fn two_builds_in_different_directories_are_identical() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let _serial = serial();
    let started = Instant::now();
    let work = workspace().join("target/release-test/repro");
    let o = xtask(
        &[
            "repro",
            "--quick",
            "--bin-dir",
            &bin_dir(),
            "--work",
            &work.to_string_lossy(),
        ],
        Duration::from_secs(900),
    )?;
    ensure!(
        o.success()
            && o.stdout
                .contains("byte-identical across two builds in different directories"),
        "{o}"
    );
    for f in [
        "target/release/libnss_smith.so",
        "target/release/libpam_smith.so",
        "Deb/smith-host_0.1.0_amd64.deb",
        "Rpm/smith-host-0.1.0-1.x86_64.rpm",
        "Deb/SHA256SUMS",
        "Rpm/SHA256SUMS",
    ] {
        ensure!(
            o.stdout
                .lines()
                .any(|l| l.starts_with("  identical") && l.ends_with(f)),
            "{f} was not compared: {o}"
        );
    }
    eprintln!("repro --quick in {:.0?}", started.elapsed());
    Ok(())
}

#[test]
fn dependencies_pass_the_audit() -> Result<()> {
    let o = xtask(&["audit"], Duration::from_secs(600))?;
    ensure!(o.success(), "{o}");
    ensure!(
        o.stdout.contains("each pinned by checksum"),
        "the lock file check did not run: {o}"
    );
    for l in o.stdout.lines().filter(|l| l.contains("RustSec")) {
        eprintln!("{l}");
    }
    Ok(())
}
