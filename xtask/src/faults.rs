//! `cargo xtask faults`: the fault matrix of issue 18 (`smith_tests::faults`): one fleet
//! host under each external fault (hostd killed or frozen, CA down, network cut, cache
//! damaged, `/var/lib/smith` full, clock skewed, sshd restarted), crossed with an allowed
//! login, refused logins, sudo, `getent` and audit delivery; each cell run again with
//! the protection it tests switched off. Prints one markdown table (and writes it with
//! `--out`); exits 1 if a cell fails or a protection-off run counted nothing.
//! `cargo xtask test` runs a subset (`tests/tests/faults.rs`).

use crate::{deps, workspace_root};
use anyhow::{bail, Context, Result};
use smith_tests::faults::{run_cells, table, verdict, Fault, Matrix, ABOUT, FAULTS, OPS};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct FaultsArgs {
    /// Only these faults (repeatable): hostd-killed, hostd-frozen, ca-down,
    /// network-cut, cache-corrupted, disk-full, clock-skew, sshd-restarted.
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// Skip the protection-off runs (half the time; the table then cannot show that
    /// each cell can fail).
    #[arg(long)]
    no_off: bool,
    /// Also write the table, with the date and commit, to this markdown file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not install Debian packages (fail if something is missing).
    #[arg(long)]
    no_install: bool,
    /// Use target/debug as it is (no `cargo build` first).
    #[arg(long)]
    no_build: bool,
}

pub fn run(args: FaultsArgs) -> Result<()> {
    if !deps::is_root() {
        bail!("the fault matrix builds network and mount namespaces: run it as root");
    }
    let mut faults = Vec::new();
    for s in &args.faults {
        faults.push(Fault::from_slug(s).with_context(|| {
            format!(
                "unknown fault {s:?}; one of: {}",
                FAULTS.map(|f| f.slug()).join(", ")
            )
        })?);
    }
    if faults.is_empty() {
        faults = FAULTS.to_vec();
    }
    if args.no_install {
        if !deps::missing().is_empty() {
            bail!("missing Debian packages: {}", deps::missing().join(" "));
        }
    } else {
        deps::ensure()?;
    }
    let root = workspace_root();
    if !args.no_build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        println!("faults: building the workspace");
        let st = Command::new(&cargo)
            .current_dir(&root)
            .args(["build", "--workspace", "--bins", "--lib"])
            .status()
            .context("running cargo build")?;
        if !st.success() {
            bail!("cargo build failed");
        }
    }
    std::env::set_var("SMITH_BIN_DIR", root.join("target/debug"));
    std::env::set_var("SMITH_E2E_REQUIRED", "1");
    let started = Instant::now();
    println!("faults: building the fleet");
    let mut m = Matrix::new()?;
    let cells: Vec<_> = faults
        .iter()
        .flat_map(|&f| OPS.into_iter().map(move |op| (f, op)))
        .collect();
    let cells = run_cells(&mut m, &cells, !args.no_off, &mut |line| {
        println!("faults: {line}")
    })?;
    drop(m);
    let text = table(&cells);
    println!("\n{text}");
    let took = started.elapsed();
    println!("faults: {} cells in {:.0?}", cells.len(), took);
    if let Some(out) = &args.out {
        let commit = Command::new("git")
            .current_dir(&root)
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let doc = format!(
            "# The fault matrix\n\n`cargo xtask faults` on {date}, commit `{commit}` (debug build), \
             {} cells in {:.0?}. Regenerate with `cargo xtask faults --out tests/FAULTS.md`.\n\n{ABOUT}\n\n{text}",
            cells.len(),
            took
        );
        std::fs::write(out, doc).with_context(|| format!("writing {}", out.display()))?;
        println!("faults: table written to {}", out.display());
    }
    verdict(&cells)
}
