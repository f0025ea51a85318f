//! `cargo xtask fuzz`: every target of `fuzz-targets/` under libFuzzer (cargo-fuzz on
//! the nightly toolchain, crate `fuzz/`), one after the other, growing
//! `fuzz/corpus/<target>/` (commit what it adds), then one table: executions, coverage
//! (libFuzzer's edge count), features, corpus size, crashes (files in
//! `fuzz/artifacts/<target>/`). Exits 1 if anything crashed. Not part of
//! `cargo xtask test`, which replays the corpus on stable instead.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Time per target, e.g. 60s, 10m (default 60s).
    #[arg(long, default_value = "60s")]
    time: humantime::Duration,
    /// Stop a target after this many executions (libFuzzer's -runs).
    #[arg(long)]
    runs: Option<u64>,
    /// Only these targets (repeatable; default all).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Parallel jobs per target (libFuzzer's -fork; default 1).
    #[arg(long, default_value_t = 1)]
    jobs: u32,
}

/// One target's run.
struct Row {
    name: String,
    execs: u64,
    cov: u64,
    ft: u64,
    corpus: usize,
    crashes: Vec<String>,
    secs: f64,
}

const GOAL_EXECS: u64 = 10_000_000;

fn cargo_fuzz_ready() -> Result<()> {
    let nightly = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("running rustup")?;
    if !String::from_utf8_lossy(&nightly.stdout).contains("nightly") {
        bail!("cargo-fuzz needs the nightly toolchain: `rustup toolchain install nightly`");
    }
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
        let st = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .context("cargo install cargo-fuzz")?;
        if !st.success() {
            bail!("cargo install cargo-fuzz failed");
        }
    }
    Ok(())
}

/// The last value after `key` in libFuzzer's output (`cov: 123`, `ft: 456`).
fn last_value(text: &str, key: &str) -> u64 {
    text.rsplit(key)
        .next()
        .filter(|_| text.contains(key))
        .and_then(|rest| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok())
        })
        .unwrap_or(0)
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

pub fn run(args: FuzzArgs) -> Result<()> {
    let root = crate::workspace_root();
    cargo_fuzz_ready()?;
    let all = [
        "nss_cache",
        "wire",
        "auth_info",
        "krl",
        "sshd_log",
        "scim_filter",
        "audit_upload",
        "ca_requests",
    ];
    for t in &args.targets {
        if !all.contains(&t.as_str()) {
            bail!("unknown target {t}; the targets are {}", all.join(", "));
        }
    }
    let secs = args.time.as_secs().max(1);
    let mut rows = Vec::new();
    for name in all
        .iter()
        .filter(|t| args.targets.is_empty() || args.targets.iter().any(|a| a == *t))
    {
        let corpus = root.join("fuzz/corpus").join(name);
        let artifacts = root.join("fuzz/artifacts").join(name);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let before = files_in(&artifacts);
        eprintln!("fuzz: {name} for {secs} s ...");
        let mut c = Command::new("cargo");
        c.current_dir(&root)
            .args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz", name])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        if let Some(n) = args.runs {
            c.arg(format!("-runs={n}"));
        }
        if args.jobs > 1 {
            c.arg(format!("-fork={}", args.jobs));
        }
        let t = Instant::now();
        let out = c
            .output()
            .with_context(|| format!("cargo fuzz run {name}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(artifacts.join(".last-run.log"), &text)?;
        let crashes: Vec<String> = files_in(&artifacts)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !out.status.success() && crashes.is_empty() && !text.contains("Done ") {
            bail!(
                "cargo fuzz run {name} failed ({}): see {}",
                out.status,
                artifacts.join(".last-run.log").display()
            );
        }
        rows.push(Row {
            name: name.to_string(),
            execs: last_value(&text, "stat::number_of_executed_units:"),
            cov: last_value(&text, "cov:"),
            ft: last_value(&text, "ft:"),
            corpus: files_in(&corpus).len(),
            crashes,
            secs: t.elapsed().as_secs_f64(),
        });
    }
    println!(
        "\n| target | executions | goal 10 M | coverage (edges) | features | corpus | crashes | time |"
    );
    println!("|---|---:|---|---:|---:|---:|---|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} s |",
            r.name,
            r.execs,
            if r.execs >= GOAL_EXECS {
                "met".to_string()
            } else {
                format!("{:.1} %", r.execs as f64 * 100.0 / GOAL_EXECS as f64)
            },
            r.cov,
            r.ft,
            r.corpus,
            if r.crashes.is_empty() {
                "0".to_string()
            } else {
                r.crashes.join(" ")
            },
            r.secs
        );
    }
    if rows.iter().any(|r| !r.crashes.is_empty()) {
        bail!("crashes found: reproduce with `cargo +nightly fuzz run --fuzz-dir fuzz TARGET fuzz/artifacts/TARGET/FILE`, fix, and add the file to fuzz/corpus/TARGET");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_figures_are_read_from_its_output() {
        let out = "#2 INITED cov: 10 ft: 11 corp: 1/1b\n#4096 pulse cov: 120 ft: 300\nDone 5000 runs in 1 second(s)\nstat::number_of_executed_units: 5000\n";
        assert_eq!(last_value(out, "cov:"), 120);
        assert_eq!(last_value(out, "ft:"), 300);
        assert_eq!(last_value(out, "stat::number_of_executed_units:"), 5000);
        assert_eq!(last_value("nothing", "cov:"), 0);
    }
}
