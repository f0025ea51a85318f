//! `cargo xtask bench`: Smith's speed against what an operator would otherwise run,
//! measured in the same run (issue 7). See `README.md` next to this file for what each
//! figure means and how it is measured.
//!
//! Flow: build the workspace in release mode, then re-run itself as the release xtask
//! (so the load generators are optimized code), then the parts in order: `nss`, `ca`
//! and simulated `propagation` (a loopback CA), then the fleet parts `login`, real-host
//! `propagation` and `apply` (one fleet host). Every part reports [`report::Figure`]s;
//! a part that fails becomes a "not measured" row and the others still run. The table
//! goes to stdout, progress to stderr, `--json FILE` gets the same figures.
//!
//! Owns: `xtask/src/bench/`. Must never: modify the machine's own /etc (everything runs
//! in private namespaces), assert on timings (benchmarks are not tests), or leave a
//! process behind (every child is stopped when its part ends).

mod api;
mod fleet;
pub mod helper;
mod issuance;
mod localca;
mod nss;
mod propagation;
mod replicas;
mod report;
mod util;

use crate::{deps, workspace_root};
use anyhow::{bail, Context, Result};
use report::Figure;
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use util::progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// glibc lookups: passwd: smith / files smith vs files (10k users), nscd and SSSD.
    Nss,
    /// Certificate login vs authorized_keys login to the same sshd (fleet host).
    Login,
    /// Certificate issuance over HTTPS (1/16/64 clients) vs ssh-keygen -s.
    Ca,
    /// remove-member → visible on 1/100/1000 simulated hosts, on 1,000/10,000 spread over
    /// three PostgreSQL replicas, and on a real host.
    Propagation,
    /// A 10,000-user grant applied by a real smith-hostd; its RSS and idle CPU.
    Apply,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Also write every figure (value, baseline, ratio, target, met) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Small runs (under ~2 minutes): fewer calls, rounds and users (apply uses 2,000
    /// users); figures are noisier and the apply figure is not the 10k one.
    #[arg(long)]
    quick: bool,
    /// Run only these parts (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Do not run `cargo build --release` first (use target/release as it is).
    #[arg(long)]
    no_build: bool,
    /// Internal: set when the release xtask is re-run by the debug one.
    #[arg(long, hide = true)]
    built: bool,
}

/// The workspace's target directory.
pub fn workspace_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn build(root: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for args in [
        vec!["build", "--release", "--workspace"],
        vec![
            "build",
            "--release",
            "-p",
            "nss_smith",
            "--example",
            "bench-cache",
        ],
    ] {
        progress(format!("cargo {}", args.join(" ")));
        let st = Command::new(&cargo)
            .current_dir(root)
            .args(&args)
            .status()
            .context("running cargo")?;
        if !st.success() {
            bail!(
                "cargo {} failed; fix the build, or measure what target/release already holds \
                 with `cargo xtask bench --no-build`",
                args.join(" ")
            );
        }
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn git_rev(root: &Path) -> String {
    Command::new("git")
        .current_dir(root)
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Runs one part; its failure becomes a row instead of ending the bench.
fn part(
    figs: &mut Vec<Figure>,
    failed: &mut Vec<String>,
    section: &'static str,
    r: Result<Vec<Figure>>,
) {
    match r {
        Ok(f) => figs.extend(f),
        Err(e) => {
            progress(format!("{section}: FAILED: {e:#}"));
            failed.push(format!("{section}: {e:#}"));
            figs.push(Figure::missing(section, "part failed", format!("{e:#}")));
        }
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    util::start_clock();
    if !deps::is_root() {
        bail!(
            "cargo xtask bench needs root (private mount and network namespaces); run it as root"
        );
    }
    let root = workspace_root();
    let release = workspace_target().join("release");
    if !args.built {
        if !args.no_build {
            build(&root)?;
        }
        let rel_xtask = release.join("xtask");
        let me = std::env::current_exe().context("locating this program")?;
        if !same_file(&me, &rel_xtask) {
            if !rel_xtask.exists() {
                bail!("{} is missing: run without --no-build", rel_xtask.display());
            }
            let mut c = Command::new(&rel_xtask);
            c.args(["bench", "--built"]);
            if let Some(j) = &args.json {
                c.arg("--json").arg(j);
            }
            if args.quick {
                c.arg("--quick");
            }
            for p in &args.only {
                let name = clap::ValueEnum::to_possible_value(p)
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default();
                c.args(["--only", &name]);
            }
            progress("re-running as the release xtask");
            let e = c.exec();
            bail!("cannot run {}: {e}", rel_xtask.display());
        }
    }
    util::install_interrupt_cleanup();
    // Simulated hosts hold a socket each, and so do the CAs they sync from.
    util::raise_fd_limit();
    let want = |p: Part| args.only.is_empty() || args.only.contains(&p);
    let xtask = std::env::current_exe()?;
    let work = workspace_target().join(format!("bench/run-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    if std::env::var("SMITH_BENCH_KEEP").as_deref() != Ok("1") {
        util::register_work_dir(&work);
    }
    // The fleet harness reads these (release binaries; fleet directories under ours).
    std::env::set_var("SMITH_BIN_DIR", &release);
    std::env::set_var("SMITH_FLEET_DIR", fleet::fleet_dir(&work));
    let load_before = util::loadavg();
    progress(format!(
        "load average {load_before} on {} cores{}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if args.quick { " (quick mode)" } else { "" }
    ));

    let mut figs = Vec::new();
    let mut failed = Vec::new();
    let mut nss_raw = json!(null);
    if want(Part::Nss) {
        let r = nss::run(&release, &work, args.quick).map(|(f, raw)| {
            nss_raw = raw;
            f
        });
        part(&mut figs, &mut failed, "NSS (p50)", r);
    }
    if want(Part::Ca) || want(Part::Propagation) {
        match localca::LocalCa::start(&release, &work) {
            Ok(ca) => {
                if want(Part::Ca) {
                    part(
                        &mut figs,
                        &mut failed,
                        "CA issuance",
                        issuance::run(&ca, &release, &work, args.quick),
                    );
                }
                if want(Part::Propagation) {
                    part(
                        &mut figs,
                        &mut failed,
                        "Propagation",
                        propagation::run(&ca, args.quick),
                    );
                }
            }
            Err(e) => part(&mut figs, &mut failed, "CA issuance", Err(e)),
        }
        if want(Part::Ca) {
            part(
                &mut figs,
                &mut failed,
                "CA replicas (PostgreSQL)",
                replicas::run(&release, &work, args.quick),
            );
        }
        if want(Part::Propagation) {
            part(
                &mut figs,
                &mut failed,
                "Propagation",
                replicas::propagation(&release, &work, args.quick),
            );
        }
    }
    let fleet_parts = fleet::Parts {
        login: want(Part::Login),
        propagation: want(Part::Propagation),
        apply: want(Part::Apply),
    };
    if fleet_parts.login || fleet_parts.propagation || fleet_parts.apply {
        // Its own thread: it enters the fleet's network namespace.
        let on_fleet = |parts: &fleet::Parts, user_ca| {
            std::thread::scope(|s| {
                s.spawn(|| fleet::run(parts, user_ca, &xtask, args.quick))
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the fleet part panicked")))
            })
        };
        let r = on_fleet(&fleet_parts, fleet::UserCa::EcdsaP256);
        part(&mut figs, &mut failed, "Fleet", r);
        if fleet_parts.login {
            // The same login comparison with an Ed25519 user CA, on a fleet of its own.
            let login_only = fleet::Parts {
                login: true,
                propagation: false,
                apply: false,
            };
            let r = on_fleet(&login_only, fleet::UserCa::Ed25519);
            part(&mut figs, &mut failed, "Fleet (Ed25519 user CA)", r);
        }
    }
    // Sections in a fixed order.
    let order = [
        "NSS (p50)",
        "Login",
        "CA issuance",
        "CA replicas (PostgreSQL)",
        "Propagation",
        "Snapshot apply",
        "Fleet",
    ];
    figs.sort_by_key(|f| {
        order
            .iter()
            .position(|s| *s == f.section)
            .unwrap_or(order.len())
    });

    let load_after = util::loadavg();
    println!();
    println!(
        "cargo xtask bench{} — {} — load average before {load_before}, after {load_after}",
        if args.quick { " --quick" } else { "" },
        git_rev(&root)
    );
    print!("{}", report::table(&figs));
    let met = figs.iter().filter(|f| f.met() == Some(true)).count();
    let not_met = figs.iter().filter(|f| f.met() == Some(false)).count();
    println!(
        "targets: {met} met, {not_met} not met; {} part(s) failed",
        failed.len()
    );
    if let Some(path) = &args.json {
        let meta = json!({
            "command": if args.quick { "cargo xtask bench --quick" } else { "cargo xtask bench" },
            "git": git_rev(&root),
            "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "quick": args.quick,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "load_before": load_before,
            "load_after": load_after,
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "failed_parts": failed,
            "nss_raw": nss_raw,
        });
        let text = serde_json::to_string_pretty(&report::to_json(&figs, meta))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        progress(format!("figures written to {}", path.display()));
    }
    if std::env::var("SMITH_BENCH_KEEP").as_deref() == Ok("1") {
        progress(format!("work directory kept: {}", work.display()));
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    if !failed.is_empty() {
        bail!(
            "{} part(s) could not be measured (see the table)",
            failed.len()
        );
    }
    Ok(())
}
