//! `cargo xtask package deb|rpm`: the packages an operator installs, built and checked.
//!
//! - `deb`: drives `dpkg-buildpackage -b` on a staging copy of `debian/` (so nothing is
//!   written outside `target/`), then checks the result: the expected files are in each
//!   package, `lintian` is clean (overrides are justified in `debian/*.lintian-overrides`),
//!   the systemd units pass `systemd-analyze verify` against the packaged binaries, and
//!   it prints each unit's `systemd-analyze security` exposure score.
//! - `rpm`: `rpmbuild -bb packaging/smith.spec`, then `rpm -qlp` / `rpm -qp --scripts`
//!   on each package, checking the file lists and scriptlets.
//!
//! Then, beside the packages (`target/package/deb/`, `target/package/rpm/RPMS/<arch>/`):
//! a CycloneDX SBOM per package (`<package file>.cdx.json`) and one for the whole lock
//! file (`smith-VERSION.workspace.cdx.json`), see `sbom.rs`; `SHA256SUMS` over packages
//! and SBOMs; and, given `--sign-key` (or `SMITH_SIGNING_KEY`), `SHA256SUMS.sig`, an
//! `ssh-keygen -Y sign` signature, see `release.rs`.
//!
//! Builds run in `release::build_env`: `SOURCE_DATE_EPOCH` from debian/changelog and
//! path remapping, so that two builds of one commit, in any two directories, give the
//! same bytes (`cargo xtask repro` checks it).
//!
//! `--bin-dir DIR` packages already built artifacts (the install test uses
//! `target/debug`); without it the packaging runs `cargo build --release` once.
//!
//! Owns: `target/package/`. Must never: install the packages on this machine or modify
//! its `/etc` (the checks that need the packaged files run in a private mount namespace);
//! the only change to the machine is installing missing build tools with apt-get; hold
//! or make a signing key.

use crate::{release, sbom, workspace_root};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Which package format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Debian/Ubuntu .deb packages (debian/).
    Deb,
    /// RPM packages for Rocky/Alma/RHEL/Fedora (packaging/smith.spec).
    Rpm,
}

/// Options of `cargo xtask package`.
#[derive(Debug, clap::Args)]
pub struct PackageArgs {
    /// deb or rpm.
    #[arg(value_enum)]
    pub format: Format,
    /// Package the artifacts in this directory (smith, smith-ca, smith-host, smith-hostd,
    /// libnss_smith.so, libpam_smith.so) instead of running `cargo build --release`.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Where the packages go (default: target/package/deb or target/package/rpm).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Skip lintian (deb only; it takes a while on unstripped debug binaries).
    #[arg(long)]
    pub no_lintian: bool,
    /// Do not install missing build tools with apt-get (fail instead).
    #[arg(long)]
    pub no_install: bool,
    /// A quick build for tests (deb only): gzip -1 instead of xz, no -dbgsym packages.
    #[arg(long)]
    pub fast: bool,
    /// Sign SHA256SUMS with this OpenSSH key (`ssh-keygen -Y sign -n smith-release`): a
    /// private key file, or a .pub whose private key is in ssh-agent. Never keep it in
    /// the repository. Without it SHA256SUMS is written unsigned.
    #[arg(long, value_name = "KEY", env = "SMITH_SIGNING_KEY")]
    pub sign_key: Option<PathBuf>,
}

/// What `cargo xtask package` produced: the directory that holds the packages, their
/// SBOMs and `SHA256SUMS` (and `SHA256SUMS.sig` when signed).
#[derive(Debug)]
pub struct Release {
    pub dir: PathBuf,
}

/// Build tools per format: (Debian package, why).
const DEB_TOOLS: &[(&str, &str)] = &[
    ("dpkg-dev", "dpkg-buildpackage"),
    ("debhelper", "dh, compat 13"),
    ("help2man", "manual pages from --help"),
    ("libpam0g-dev", "Build-Depends (pam_smith links libpam)"),
    ("lintian", "package checks"),
    ("systemd", "systemd-analyze verify / security"),
];
const RPM_TOOLS: &[(&str, &str)] = &[("rpm", "rpmbuild, rpm -qlp")];

/// The packages and the files each must contain (paths as `dpkg-deb -c` / `rpm -qlp`
/// print them, `{multiarch}` and `{libdir}` substituted).
const DEB_CONTENTS: &[(&str, &[&str])] = &[
    (
        "smith-host",
        &[
            "/usr/sbin/smith-hostd",
            "/usr/sbin/smith-host",
            "/usr/lib/{multiarch}/libnss_smith.so.2",
            "/usr/lib/{multiarch}/security/pam_smith.so",
            "/usr/share/pam-configs/smith",
            "/lib/systemd/system/smith-hostd.service",
            "/usr/share/man/man8/smith-hostd.8.gz",
            "/usr/share/man/man8/smith-host.8.gz",
        ],
    ),
    (
        "smith-ca",
        &[
            "/usr/bin/smith-ca",
            "/lib/systemd/system/smith-ca.service",
            "/usr/lib/sysusers.d/smith-ca.conf",
            "/usr/share/man/man1/smith-ca.1.gz",
        ],
    ),
    (
        "smith",
        &["/usr/bin/smith", "/usr/share/man/man1/smith.1.gz"],
    ),
];
const RPM_CONTENTS: &[(&str, &[&str])] = &[
    (
        "smith-host",
        &[
            "/usr/sbin/smith-hostd",
            "/usr/sbin/smith-host",
            "{libdir}/libnss_smith.so.2",
            "{libdir}/security/pam_smith.so",
            "/usr/lib/systemd/system/smith-hostd.service",
        ],
    ),
    (
        "smith-ca",
        &[
            "/usr/bin/smith-ca",
            "/usr/lib/systemd/system/smith-ca.service",
            "/usr/lib/sysusers.d/smith-ca.conf",
            "/var/lib/smith-ca",
        ],
    ),
    ("smith", &["/usr/bin/smith"]),
];
/// Scriptlet fragments each RPM must carry (what `rpm -qp --scripts` prints).
const RPM_SCRIPTS: &[(&str, &[&str])] = &[
    (
        "smith-host",
        &[
            "smith-host deactivate",
            "systemctl --no-reload preset smith-hostd.service",
            "try-restart smith-hostd.service",
            "pam_smith",
        ],
    ),
    (
        "smith-ca",
        &["useradd -r", "smith-ca", "try-restart smith-ca.service"],
    ),
];
const UNITS: &[(&str, &str)] = &[
    ("smith-host", "smith-hostd.service"),
    ("smith-ca", "smith-ca.service"),
];

pub fn run(args: PackageArgs) -> Result<()> {
    build(&workspace_root(), &args).map(|_| ())
}

/// Builds, checks, describes and signs the packages of the source tree at `root`.
pub fn build(root: &Path, args: &PackageArgs) -> Result<Release> {
    let root = absolute(root)?;
    let version = workspace_version(&root)?;
    let env = release::build_env(&root, &version)?;
    let packages = match args.format {
        Format::Deb => {
            ensure_tools(DEB_TOOLS, args.no_install, args.no_lintian)?;
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| root.join("target/package/deb"));
            let mut debs = build_deb(
                &root,
                &version,
                args.bin_dir.as_deref(),
                &out,
                args.fast,
                &env,
            )?;
            check_deb_contents(&debs)?;
            if !args.no_lintian {
                lintian(&root, &absolute(&out)?)?;
            }
            check_units(&debs, &absolute(&out)?)?;
            // Debug symbol packages ship too (and so are summed and described).
            for e in std::fs::read_dir(absolute(&out)?)? {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "ddeb") {
                    debs.push(p);
                }
            }
            debs.sort();
            debs
        }
        Format::Rpm => {
            ensure_tools(RPM_TOOLS, args.no_install, false)?;
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| root.join("target/package/rpm"));
            let rpms = build_rpm(&root, &version, args.bin_dir.as_deref(), &out, &env)?;
            check_rpms(&rpms)?;
            rpms
        }
    };
    let epoch = release::source_date_epoch(&root)?;
    finish(&root, &version, epoch, args, packages)
}

/// SBOMs, SHA256SUMS and its signature beside the packages.
fn finish(
    root: &Path,
    version: &str,
    epoch: i64,
    args: &PackageArgs,
    packages: Vec<PathBuf>,
) -> Result<Release> {
    let dir = packages
        .first()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .context("no packages were built")?;
    if packages.iter().any(|p| p.parent() != Some(dir.as_path())) {
        bail!("the packages are not all in {}", dir.display());
    }
    let inputs = sbom::Inputs::read(root, version, epoch)?;
    let mut summed = packages.clone();
    for p in &packages {
        let (name, purl) = package_identity(p, args.format)?;
        let file = p
            .file_name()
            .and_then(|n| n.to_str())
            .context("package file name")?;
        let doc = inputs.package_sbom(&name, p, &purl)?;
        summed.push(sbom::write(&dir.join(format!("{file}.cdx.json")), &doc)?);
    }
    let workspace = dir.join(format!("smith-{version}.workspace.cdx.json"));
    summed.push(sbom::write(&workspace, &inputs.workspace_sbom()?)?);
    let sums = release::write_sums(&dir, &summed)?;
    println!(
        "xtask: {} SBOMs (CycloneDX 1.5), {} over {} files",
        packages.len() + 1,
        sums.display(),
        summed.len()
    );
    match &args.sign_key {
        Some(key) => {
            let line = release::sign(&sums, key)?;
            println!(
                "xtask: signed {} with {} (namespace {})",
                dir.join(release::SIG).display(),
                key.display(),
                release::NAMESPACE
            );
            if let Some(line) = line {
                println!("xtask: allowed_signers line for this key: {line}");
            }
        }
        None => {
            println!(
                "xtask: {} is NOT signed: give --sign-key KEY or SMITH_SIGNING_KEY for a release",
                sums.display()
            );
        }
    }
    println!("xtask: packages in {}:", dir.display());
    for p in &packages {
        println!("  {}", p.display());
    }
    Ok(Release { dir })
}

/// (package name, purl) of a package file.
fn package_identity(p: &Path, format: Format) -> Result<(String, String)> {
    match format {
        Format::Deb => {
            let name = deb_field(p, "Package")?;
            let version = deb_field(p, "Version")?;
            let arch = deb_field(p, "Architecture")?;
            let purl = format!("pkg:deb/smith/{name}@{version}?arch={arch}");
            Ok((name, purl))
        }
        Format::Rpm => {
            let q = rpm_query(p, &["--qf", "%{NAME} %{VERSION}-%{RELEASE} %{ARCH}"])?;
            let mut w = q.split_whitespace();
            let (Some(name), Some(version), Some(arch)) = (w.next(), w.next(), w.next()) else {
                bail!("rpm -qp printed {q:?} for {}", p.display());
            };
            let purl = format!("pkg:rpm/smith/{name}@{version}?arch={arch}");
            Ok((name.to_string(), purl))
        }
    }
}

// --- tools ---------------------------------------------------------------------------------

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn ensure_tools(tools: &[(&str, &str)], no_install: bool, no_lintian: bool) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(p, _)| !(no_lintian && *p == "lintian"))
        .filter(|(p, _)| !installed(p))
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if no_install || !crate::deps::is_root() {
        bail!(
            "missing Debian packages for packaging: {} (install them: apt-get install {})",
            missing.join(" "),
            missing.join(" ")
        );
    }
    println!("xtask: installing {}", missing.join(" "));
    for args in [vec!["update", "-qq"], {
        let mut a = vec![
            "install",
            "-y",
            "-qq",
            "-o",
            "DPkg::Lock::Timeout=300",
            "--no-install-recommends",
        ];
        a.extend(missing.iter().copied());
        a
    }] {
        let st = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !st.success() {
            bail!("apt-get {} failed", args.join(" "));
        }
    }
    Ok(())
}

/// `[workspace.package] version` from the root Cargo.toml.
fn workspace_version(root: &Path) -> Result<String> {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).context("reading Cargo.toml")?;
    let mut in_section = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
            continue;
        }
        if in_section {
            if let Some(v) = line.strip_prefix("version") {
                let v = v
                    .trim_start()
                    .trim_start_matches('=')
                    .trim()
                    .trim_matches('"');
                if !v.is_empty() {
                    return Ok(v.to_string());
                }
            }
        }
    }
    bail!("no version in [workspace.package] of Cargo.toml")
}

/// Runs a command, failing with its output when it fails.
fn run_cmd(mut cmd: Command, what: &str) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn stdout_of(cmd: Command, what: &str) -> Result<String> {
    Ok(String::from_utf8_lossy(&run_cmd(cmd, what)?.stdout).into_owned())
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

// --- deb -----------------------------------------------------------------------------------

fn build_deb(
    root: &Path,
    version: &str,
    bin_dir: Option<&Path>,
    out: &Path,
    fast: bool,
    env: &[(String, String)],
) -> Result<Vec<PathBuf>> {
    // debian/changelog names the package version: it must follow Cargo.toml.
    let changelog = std::fs::read_to_string(root.join("debian/changelog"))?;
    let first = changelog.lines().next().unwrap_or_default();
    let deb_version = first
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default();
    let upstream = deb_version.split('-').next().unwrap_or_default();
    if upstream != version {
        bail!(
            "debian/changelog is at {deb_version:?} but Cargo.toml at {version:?}: add a changelog entry (dch -v {version})"
        );
    }
    let out = absolute(out)?;
    let staging = out.join("build");
    let _ = std::fs::remove_dir_all(&staging);
    let src = staging.join(format!("smith-{version}"));
    copy_dir(&root.join("debian"), &src.join("debian"))?;
    std::fs::create_dir_all(&out)?;
    // Old results would confuse the checks.
    for e in std::fs::read_dir(&out)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if (name.starts_with("smith")
            && [".deb", ".ddeb", ".changes", ".buildinfo", ".cdx.json"]
                .iter()
                .any(|x| name.ends_with(x)))
            || name == release::SUMS
            || name == release::SIG
        {
            std::fs::remove_file(&p)?;
        }
    }

    let mut cmd = Command::new("dpkg-buildpackage");
    cmd.current_dir(&src)
        .args(["-b", "-us", "-uc"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("SMITH_SRCDIR", root)
        .env("DEB_BUILD_OPTIONS", "nocheck");
    if fast {
        // xz takes about a minute on these binaries, gzip -1 a second.
        cmd.env("DEB_BUILD_OPTIONS", "nocheck noddebs")
            .env("DPKG_DEB_COMPRESSOR_TYPE", "gzip")
            .env("DPKG_DEB_COMPRESSOR_LEVEL", "1");
    }
    if let Some(dir) = bin_dir {
        let dir = absolute(dir)?;
        println!(
            "xtask: building .debs from the artifacts in {}",
            dir.display()
        );
        cmd.env("SMITH_BINDIR", &dir);
    } else {
        println!("xtask: building .debs (cargo build --release inside dpkg-buildpackage)");
    }
    if let Ok(cargo) = std::env::var("CARGO") {
        cmd.env("CARGO", cargo);
    }
    let log = out.join("dpkg-buildpackage.log");
    let output = cmd.output().context("running dpkg-buildpackage")?;
    let mut text = output.stdout.clone();
    text.extend_from_slice(&output.stderr);
    std::fs::write(&log, &text)?;
    if !output.status.success() {
        let s = String::from_utf8_lossy(&text);
        let tail: Vec<&str> = s.lines().rev().take(40).collect();
        bail!(
            "dpkg-buildpackage failed (full log: {}):\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let mut debs = Vec::new();
    for e in std::fs::read_dir(&staging)? {
        let p = e?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if [".deb", ".ddeb", ".changes", ".buildinfo"]
            .iter()
            .any(|x| name.ends_with(x))
        {
            let to = out.join(&name);
            std::fs::rename(&p, &to)?;
            if name.ends_with(".deb") {
                debs.push(to);
            }
        }
    }
    debs.sort();
    if debs.is_empty() {
        bail!(
            "dpkg-buildpackage produced no .deb (log: {})",
            log.display()
        );
    }
    Ok(debs)
}

fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let mut c = Command::new("dpkg-deb");
    c.args(["-f"]).arg(deb).arg(field);
    Ok(stdout_of(c, "dpkg-deb -f")?.trim().to_string())
}

fn find_deb<'a>(debs: &'a [PathBuf], package: &str) -> Result<&'a PathBuf> {
    for d in debs {
        if deb_field(d, "Package")? == package {
            return Ok(d);
        }
    }
    bail!("no {package} .deb was built")
}

fn check_deb_contents(debs: &[PathBuf]) -> Result<()> {
    let multiarch = {
        let mut c = Command::new("dpkg-architecture");
        c.args(["-qDEB_HOST_MULTIARCH"]);
        stdout_of(c, "dpkg-architecture")?.trim().to_string()
    };
    for (package, files) in DEB_CONTENTS {
        let deb = find_deb(debs, package)?;
        let mut c = Command::new("dpkg-deb");
        c.arg("-c").arg(deb);
        let listing = stdout_of(c, "dpkg-deb -c")?;
        let paths: Vec<&str> = listing
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .map(|p| p.trim_start_matches('.'))
            .collect();
        for f in *files {
            let f = f.replace("{multiarch}", &multiarch);
            if !paths.contains(&f.as_str()) {
                bail!(
                    "{package}: {f} is missing from {}\n{listing}",
                    deb.display()
                );
            }
        }
        println!(
            "xtask: {package}: {} files, all expected paths present",
            paths.len()
        );
    }
    Ok(())
}

fn lintian(root: &Path, out: &Path) -> Result<()> {
    let changes: Vec<PathBuf> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "changes"))
        .collect();
    let Some(changes) = changes.first() else {
        bail!("no .changes file in {}", out.display());
    };
    println!("xtask: lintian {}", changes.display());
    let o = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--tag-display-limit", "0"])
        .arg(changes)
        .output()
        .context("running lintian")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for l in text.lines() {
        println!("  {l}");
    }
    if !o.status.success() {
        bail!("lintian reported errors or warnings (above)");
    }
    println!("xtask: lintian: no errors, no warnings");
    // Overridden tags do not show above: name them, each is justified in its file.
    for e in std::fs::read_dir(root.join("debian"))? {
        let p = e?.path();
        if p.to_string_lossy().ends_with(".lintian-overrides") {
            for l in std::fs::read_to_string(&p)?.lines() {
                if !l.trim().is_empty() && !l.starts_with('#') {
                    println!("xtask: lintian override ({}): {l}", p.display());
                }
            }
        }
    }
    Ok(())
}

/// `systemd-analyze verify` of the packaged units against the packaged binaries and
/// manual pages (visible only inside a private mount namespace, through an overlay over
/// `/usr`), and the `systemd-analyze security` exposure of each unit.
fn check_units(debs: &[PathBuf], out: &Path) -> Result<()> {
    let tree = out.join("extracted");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    let mut units = Vec::new();
    for (package, unit) in UNITS {
        let deb = find_deb(debs, package)?;
        let mut c = Command::new("dpkg-deb");
        c.arg("-x").arg(deb).arg(&tree);
        run_cmd(c, "dpkg-deb -x")?;
        units.push(tree.join("lib/systemd/system").join(unit));
    }
    if crate::deps::is_root() {
        let list: Vec<String> = units
            .iter()
            .map(|u| shell_quote(&u.to_string_lossy()))
            .collect();
        let script = format!(
            "mount -t overlay smith-verify -o lowerdir={usr}:/usr /usr\nexec systemd-analyze verify {units}",
            usr = shell_quote(&tree.join("usr").to_string_lossy()),
            units = list.join(" ")
        );
        let o = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-ec",
                &script,
            ])
            .output()
            .context("running systemd-analyze verify in a private mount namespace")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if !o.status.success() || !text.trim().is_empty() {
            bail!("systemd-analyze verify did not pass:\n{text}");
        }
        println!("xtask: systemd-analyze verify: {} units OK", units.len());
    } else {
        println!("xtask: systemd-analyze verify skipped: needs root (private mount namespace)");
    }
    for u in &units {
        let mut c = Command::new("systemd-analyze");
        c.args(["security", "--offline=true", "--man=no", "--no-pager"])
            .arg(u);
        let text = stdout_of(c, "systemd-analyze security")?;
        let score = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("(no score printed)");
        println!("xtask: {}", score.trim_start_matches('→').trim());
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

// --- rpm -----------------------------------------------------------------------------------

fn build_rpm(
    root: &Path,
    version: &str,
    bin_dir: Option<&Path>,
    out: &Path,
    env: &[(String, String)],
) -> Result<Vec<PathBuf>> {
    let out = absolute(out)?;
    let _ = std::fs::remove_dir_all(out.join("RPMS"));
    std::fs::create_dir_all(&out)?;
    let mut cmd = Command::new("rpmbuild");
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .arg("-bb")
        .arg(root.join("packaging/smith.spec"))
        // The build tools are Debian's here, not RPMs: nothing for rpm to check.
        .arg("--nodeps")
        .args(["--define", &format!("_topdir {}", out.display())])
        .args(["--define", &format!("smith_srcdir {}", root.display())])
        .args(["--define", &format!("smith_version {version}")]);
    if let Some(dir) = bin_dir {
        let dir = absolute(dir)?;
        println!(
            "xtask: building .rpms from the artifacts in {}",
            dir.display()
        );
        cmd.args(["--define", &format!("smith_bindir {}", dir.display())]);
    } else {
        println!("xtask: building .rpms (cargo build --release inside rpmbuild)");
    }
    let log = out.join("rpmbuild.log");
    let output = cmd.output().context("running rpmbuild")?;
    let mut text = output.stdout.clone();
    text.extend_from_slice(&output.stderr);
    std::fs::write(&log, &text)?;
    if !output.status.success() {
        let s = String::from_utf8_lossy(&text);
        let tail: Vec<&str> = s.lines().rev().take(40).collect();
        bail!(
            "rpmbuild failed (full log: {}):\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let mut rpms = Vec::new();
    let rpmdir = out.join("RPMS");
    for arch in std::fs::read_dir(&rpmdir)? {
        for e in std::fs::read_dir(arch?.path())? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "rpm") {
                rpms.push(p);
            }
        }
    }
    rpms.sort();
    if rpms.is_empty() {
        bail!("rpmbuild produced no .rpm (log: {})", log.display());
    }
    Ok(rpms)
}

fn rpm_query(rpm: &Path, args: &[&str]) -> Result<String> {
    let mut c = Command::new("rpm");
    c.args(["-qp"]).args(args).arg(rpm);
    stdout_of(c, "rpm -qp")
}

fn check_rpms(rpms: &[PathBuf]) -> Result<()> {
    let libdir = {
        let mut c = Command::new("rpm");
        c.args(["--eval", "%{_libdir}"]);
        stdout_of(c, "rpm --eval")?.trim().to_string()
    };
    let mut by_name = std::collections::HashMap::new();
    for r in rpms {
        let name = rpm_query(r, &["--qf", "%{NAME}"])?;
        by_name.insert(name.trim().to_string(), r.clone());
    }
    for (package, files) in RPM_CONTENTS {
        let rpm = by_name
            .get(*package)
            .with_context(|| format!("no {package} rpm was built"))?;
        let list = rpm_query(rpm, &["-l"])?;
        println!("xtask: rpm -qlp {}", rpm.display());
        for l in list.lines() {
            println!("  {l}");
        }
        for f in *files {
            let f = f.replace("{libdir}", &libdir);
            if !list.lines().any(|l| l == f) {
                bail!("{package}: {f} is missing from {}", rpm.display());
            }
        }
        let requires = rpm_query(rpm, &["-R"])?;
        println!(
            "xtask: rpm -qpR {}: {}",
            package,
            requires.lines().collect::<Vec<_>>().join(", ")
        );
    }
    for (package, fragments) in RPM_SCRIPTS {
        let rpm = by_name
            .get(*package)
            .with_context(|| format!("no {package} rpm was built"))?;
        let scripts = rpm_query(rpm, &["--scripts"])?;
        println!("xtask: rpm -qp --scripts {}", rpm.display());
        for l in scripts.lines() {
            println!("  {l}");
        }
        for f in *fragments {
            if !scripts.contains(f) {
                bail!("{package}: scriptlets lack {f:?}");
            }
        }
    }
    println!("xtask: rpm file lists and scriptlets as expected");
    Ok(())
}
