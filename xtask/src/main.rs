//! `cargo xtask`: the project's own commands.
//!
//! - `test`: installs what the suite needs (Debian packages), builds everything and runs
//!   every test, the multi-host end-to-end suite included.
//! - `demo`: the whole story on one machine, in namespaces, cleaned up afterwards.
//! - `package deb|rpm`: the packages an operator installs, built and checked, with
//!   their SBOMs and a signed `SHA256SUMS`.
//! - `repro`: two builds of this commit in two directories, compared byte for byte.
//! - `audit`: Cargo.lock's sources, and its crates against the RustSec advisories.
//! - `bench`: measured speed against the anchors (issue 7), see `src/bench/README.md`.
//! - `faults`: the fault matrix (issue 18), see `tests/FAULTS.md`.
//!
//! Must never: modify the machine's own `/etc` beyond installing packages.

mod audit;
mod bench;
mod demo;
mod deps;
mod faults;
mod fuzz;
mod package;
mod release;
mod repro;
mod sbom;
mod testrun;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Smith's developer commands")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install prerequisites, build, and run every test (unit + end-to-end fleet).
    Test {
        /// Do not install Debian packages (fail if something is missing).
        #[arg(long)]
        no_install: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Show the whole story on this machine: a CA, two hosts, Alice and Oscar.
    Demo {
        /// Do not install Debian packages.
        #[arg(long)]
        no_install: bool,
        /// Keep the demo's directories afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Only install the Debian packages the suite needs.
    Deps,
    /// Build the .deb or .rpm packages and check them (lintian, systemd-analyze, rpm -qlp);
    /// write an SBOM per package and SHA256SUMS beside them, signed with --sign-key.
    Package(package::PackageArgs),
    /// Build this commit twice in two different directories and compare the binaries
    /// and packages byte for byte (--quick: the cheap check CI runs).
    Repro(repro::ReproArgs),
    /// Check Cargo.lock: every crate from crates.io with a checksum (or the workspace),
    /// and none with a RustSec advisory (when an advisory database is at hand).
    Audit(audit::AuditArgs),
    /// Measure Smith against its baselines (NSS, login, CA issuance, propagation,
    /// snapshot apply) in release mode and print one table; see xtask/src/bench/README.md.
    Bench(bench::BenchArgs),
    /// Fuzz every parser that meets hostile input (cargo-fuzz on nightly; the corpus in
    /// fuzz/corpus grows, commit it) and print executions, coverage and crashes per
    /// target; see fuzz-targets/README.md.
    Fuzz(fuzz::FuzzArgs),
    /// The fault matrix: one fleet host under each fault (hostd killed/frozen, CA down,
    /// network cut, cache damaged, disk full, clock skewed, sshd restarted) crossed with
    /// logins, sudo, getent and audit delivery, each cell also with its protection
    /// switched off; prints a markdown table (see tests/FAULTS.md).
    Faults(faults::FaultsArgs),
    /// Internal helpers the bench runs inside test hosts.
    #[command(hide = true)]
    BenchHelper {
        #[command(subcommand)]
        cmd: bench::helper::HelperCmd,
    },
}

/// The workspace root (xtask lives in `<root>/xtask`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Test {
            no_install,
            cargo_args,
        } => testrun::run(no_install, &cargo_args),
        Cmd::Demo { no_install, keep } => demo::run(no_install, keep),
        Cmd::Deps => deps::ensure(),
        Cmd::Package(args) => package::run(args),
        Cmd::Repro(args) => repro::run(args),
        Cmd::Audit(args) => audit::run(args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Fuzz(args) => fuzz::run(args),
        Cmd::Faults(args) => faults::run(args),
        Cmd::BenchHelper { cmd } => bench::helper::run(cmd),
    }
}
