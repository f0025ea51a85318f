//! `cargo xtask repro`: two builds of this commit, in two different directories,
//! compared byte for byte.
//!
//! The source tree (the files git tracks, plus untracked ones not ignored) is copied
//! twice, to `WORK/a/smith` and `WORK/b/elsewhere/smith-copy` (different paths and
//! depths), and each copy is built with its own target directory:
//!
//! - full (default): `cargo xtask package deb` (release build with `cargo build
//!   --release` inside dpkg-buildpackage, xz, -dbgsym packages) then `package rpm` from
//!   the same binaries; compared: the six release artifacts, and every package, SBOM
//!   and `SHA256SUMS` of both formats. Two full release builds: tens of minutes on two
//!   cores, hence not in CI.
//! - `--quick` (CI, `tests/tests/release.rs`): release builds of `nss_smith` and
//!   `pam_smith` only (the path remapping and flags are the same as for the whole
//!   workspace), compared; then `.deb` (`--fast`) and `.rpm` packages of one set of
//!   already built binaries (`--bin-dir`), from each copy, compared: that checks the
//!   packaging (timestamps, build paths, archive metadata, SBOMs) while reusing builds.
//!
//! Exits non-zero, naming each differing file, if anything differs. Owns: `WORK`
//! (default `target/repro`), removed first. Must never: write outside `WORK` and the
//! copies' own target directories (inside `WORK`).

use crate::package::{self, Format, PackageArgs};
use crate::{release, workspace_root};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Options of `cargo xtask repro`.
#[derive(Debug, clap::Args)]
pub struct ReproArgs {
    /// The cheap check CI runs: release builds of the NSS and PAM modules, and packages
    /// of already built binaries (--bin-dir), twice each.
    #[arg(long)]
    pub quick: bool,
    /// With --quick: the binaries to package (default: target/debug).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Where the two copies and their builds go (default: target/repro; removed first).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// Keep WORK afterwards (default: removed when everything matched).
    #[arg(long)]
    pub keep: bool,
}

const ARTIFACTS: &[&str] = &[
    "smith",
    "smith-ca",
    "smith-host",
    "smith-hostd",
    "libnss_smith.so",
    "libpam_smith.so",
];

pub fn run(args: ReproArgs) -> Result<()> {
    let started = Instant::now();
    if std::env::var_os("CARGO_TARGET_DIR").is_some() {
        bail!("unset CARGO_TARGET_DIR: each of the two builds needs its own target directory");
    }
    let root = workspace_root();
    let work = std::path::absolute(
        args.work
            .clone()
            .unwrap_or_else(|| root.join("target/repro")),
    )?;
    let _ = std::fs::remove_dir_all(&work);
    let copies = [work.join("a/smith"), work.join("b/elsewhere/smith-copy")];
    for c in &copies {
        copy_source(&root, c)?;
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => std::path::absolute(d)?,
        None => root.join("target/debug"),
    };
    let mut outputs: Vec<BTreeMap<String, String>> = Vec::new();
    for (i, copy) in copies.iter().enumerate() {
        println!("xtask: build {} of 2 in {}", i + 1, copy.display());
        let mut files = BTreeMap::new();
        let target = copy.join("target");
        if args.quick {
            cargo_release(copy, &["-p", "nss_smith", "-p", "pam_smith"])?;
            for a in ["libnss_smith.so", "libpam_smith.so"] {
                files.insert(
                    format!("target/release/{a}"),
                    release::sha256_file(&target.join("release").join(a))?,
                );
            }
        }
        for format in [Format::Deb, Format::Rpm] {
            let out = target.join(match format {
                Format::Deb => "package/deb",
                Format::Rpm => "package/rpm",
            });
            let pkg_bin = if args.quick {
                Some(bin_dir.clone())
            } else if format == Format::Rpm {
                // The binaries the .deb build just made, with the same flags.
                Some(target.join("release"))
            } else {
                None
            };
            let pargs = PackageArgs {
                format,
                bin_dir: pkg_bin,
                out: Some(out),
                no_lintian: true,
                no_install: false,
                fast: args.quick,
                sign_key: None,
            };
            let rel = package::build(copy, &pargs)
                .with_context(|| format!("packaging in {}", copy.display()))?;
            let sums = std::fs::read_to_string(rel.dir.join(release::SUMS))?;
            for line in sums.lines() {
                if let Some((hash, name)) = line.split_once("  ") {
                    files.insert(format!("{format:?}/{name}"), hash.to_string());
                }
            }
            files.insert(
                format!("{format:?}/{}", release::SUMS),
                release::sha256_file(&rel.dir.join(release::SUMS))?,
            );
        }
        if !args.quick {
            for a in ARTIFACTS {
                files.insert(
                    format!("target/release/{a}"),
                    release::sha256_file(&target.join("release").join(a))?,
                );
            }
        }
        outputs.push(files);
    }
    let (a, b) = (&outputs[0], &outputs[1]);
    let mut differ = Vec::new();
    for (name, ha) in a {
        match b.get(name) {
            Some(hb) if hb == ha => println!("  identical  {ha}  {name}"),
            Some(hb) => {
                println!("  DIFFERENT  {name}: {ha} vs {hb}");
                differ.push(name.clone());
            }
            None => {
                println!("  ONLY IN A  {name}");
                differ.push(name.clone());
            }
        }
    }
    for name in b.keys().filter(|n| !a.contains_key(*n)) {
        println!("  ONLY IN B  {name}");
        differ.push(name.clone());
    }
    let mode = if args.quick { "quick" } else { "full" };
    if !differ.is_empty() {
        bail!(
            "repro ({mode}): {} of {} files differ between {} and {} (kept for diffoscope): {}",
            differ.len(),
            a.len().max(b.len()),
            copies[0].display(),
            copies[1].display(),
            differ.join(", ")
        );
    }
    println!(
        "xtask: repro ({mode}): {} files byte-identical across two builds in different directories ({:.0?})",
        a.len(),
        started.elapsed()
    );
    if !args.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}

/// Copies the files git knows of (tracked, or untracked and not ignored) to `to`.
fn copy_source(root: &Path, to: &Path) -> Result<()> {
    let out = Command::new("git")
        .current_dir(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .context("running git ls-files (repro copies the git checkout)")?;
    if !out.status.success() {
        bail!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut n = 0;
    for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let rel = Path::new(std::str::from_utf8(name).context("non-UTF-8 path in git")?);
        let from = root.join(rel);
        // A tracked file deleted in the work tree is not part of this build.
        let Ok(meta) = std::fs::symlink_metadata(&from) else {
            continue;
        };
        let dest = to.join(rel);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p)?;
        }
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &dest)?;
        } else {
            std::fs::copy(&from, &dest).with_context(|| format!("copying {}", from.display()))?;
        }
        n += 1;
    }
    println!("xtask: copied {n} files to {}", to.display());
    Ok(())
}

/// `cargo build --release --locked ARGS` in `dir` with the release build environment.
fn cargo_release(dir: &Path, args: &[&str]) -> Result<()> {
    let version = {
        let text = std::fs::read_to_string(dir.join("Cargo.toml"))?;
        text.lines()
            .skip_while(|l| l.trim() != "[workspace.package]")
            .find_map(|l| l.trim().strip_prefix("version"))
            .map(|v| {
                v.trim_start_matches([' ', '='])
                    .trim()
                    .trim_matches('"')
                    .to_string()
            })
            .context("no [workspace.package] version")?
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--release", "--locked"])
        .args(args)
        .envs(release::build_env(dir, &version)?)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .status()
        .context("running cargo build --release")?;
    if !st.success() {
        bail!(
            "cargo build --release {} failed in {}",
            args.join(" "),
            dir.display()
        );
    }
    Ok(())
}
