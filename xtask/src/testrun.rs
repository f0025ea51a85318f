//! `cargo xtask test`: prerequisites, build, every test, one summary line.

use crate::{deps, workspace_root};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

pub fn run(no_install: bool, cargo_args: &[String]) -> Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    if !no_install {
        deps::ensure()?;
    } else if !deps::missing().is_empty() {
        bail!("missing Debian packages: {}", deps::missing().join(" "));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("xtask: building the workspace");
    let st = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--workspace", "--bins", "--lib"])
        .status()
        .context("running cargo build")?;
    if !st.success() {
        bail!("cargo build failed");
    }
    let e2e_required = deps::is_root();
    if !e2e_required {
        println!("xtask: not root: end-to-end tests will be skipped (CI runs them as root)");
    }
    println!("xtask: running every test");
    let mut child = Command::new(&cargo)
        .current_dir(&root)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(cargo_args)
        .env("SMITH_BIN_DIR", root.join("target/debug"))
        .env("SMITH_E2E_REQUIRED", if e2e_required { "1" } else { "0" })
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut w = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (w.next(), w.next()) else {
                    continue;
                };
                let n: u64 = n
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .unwrap_or(0);
                match what {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    "ignored" => ignored += n,
                    _ => {}
                }
            }
        }
    }
    let st = child.wait()?;
    println!("xtask: finished in {:.0?}", started.elapsed());
    println!("{passed} passed, {failed} failed, {ignored} skipped");
    if !st.success() || failed > 0 {
        bail!("some tests failed");
    }
    Ok(())
}
