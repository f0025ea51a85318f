//! Part `nss`: glibc user/group lookups with 10,000 users and 1,000 groups of 50, through
//! `nssbench` (our copy of `shared/bench/nss/nssbench.c`, plus threads and a direct mode),
//! for each backend in its own private mount (and PID) namespace with bind-mounted files:
//!
//! | configuration | /etc/passwd, /etc/group | nsswitch.conf |
//! |---|---|---|
//! | `passwd: smith` | the system's own | `smith` (cache at /var/lib/smith/nss.cache) |
//! | `passwd: files smith` | the system's own | `files smith` (as hosts run it) |
//! | `files`, 10k users (baseline) | system + 10k generated (gen-users.py) | `files` |
//! | nscd shared map | system + 10k generated | `files`, nscd running in the namespace |
//! | SSSD, files provider | system + 10k generated | `sss`, Debian's sssd (`id_provider = files`) running in the namespace |
//! | module only | — | `_nss_smith_*` called through dlsym: no glibc around it |
//! | previous build | as `passwd: smith` and module only | with `SMITH_BENCH_NSS_BASELINE=PATH` (a `libnss_smith.so` of another build), the same runs with that module, in the same session |
//! | `initgroups: smith [NOTFOUND=continue] files` | the system's own | `passwd: files smith`, `group: files smith` plus that line (getgrouplist only) |
//!
//! The glibc floor, `stat("/etc/nsswitch.conf")` (glibc 2.36 does it on every lookup),
//! is measured in the same process as the Smith run. nscd is Debian's own binary,
//! extracted with `apt-get download` + `dpkg -x` (never installed: its postinst would
//! start a machine-wide nscd), run with Debian's nscd.conf minus persistence, with a
//! private `/run` so its socket exists only inside the namespace.
//!
//! Must never: modify the machine's /etc, /var or /run (everything is a bind or tmpfs
//! mount inside `unshare --mount --propagation private`), or use an overlay of /etc
//! (overlayfs makes glibc's per-call stat slower and would skew the floor).

use super::report::{Figure, Goal};
use super::util::progress;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SECTION: &str = "NSS (p50)";
const NSSBENCH_C: &str = include_str!("nssbench.c");
const GEN_USERS_PY: &str = include_str!("gen-users.py");
const PHASES: &str = "pwnam_hit,pwnam_miss,pwnam_miss_u,pwuid_hit,grouplist";
const BASELINE: &str = "files, 10k in /etc/passwd";

/// One RESULT line of nssbench.
#[derive(Debug, Clone)]
pub struct Phase {
    pub n: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub errors: u64,
    pub avg_groups: f64,
}

/// label → phase → result.
type Results = BTreeMap<String, BTreeMap<String, Phase>>;

fn parse_results(out: &str, into: &mut Results) -> Result<()> {
    for line in out.lines().filter(|l| l.starts_with("RESULT\t")) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 12 {
            bail!("malformed nssbench line {line:?}");
        }
        let num = |i: usize| -> Result<f64> {
            f[i].parse()
                .with_context(|| format!("field {i} of {line:?}"))
        };
        into.entry(f[1].to_string()).or_default().insert(
            f[2].to_string(),
            Phase {
                n: num(3)? as u64,
                mean: num(4)?,
                p50: num(5)?,
                p90: num(6)?,
                p99: num(7)?,
                max: num(8)?,
                errors: num(9)? as u64,
                avg_groups: num(10)?,
            },
        );
    }
    Ok(())
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Runs `script` as `sh -ec` in a private mount + PID namespace; returns stdout.
fn in_namespace(script: &str, what: &str) -> Result<String> {
    let o = Command::new("unshare")
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-ec",
            script,
        ])
        .output()
        .context("running unshare")?;
    let err = String::from_utf8_lossy(&o.stderr);
    if !err.trim().is_empty() {
        for l in err.lines().take(10) {
            progress(format!("nss: {what}: {l}"));
        }
    }
    if !o.status.success() {
        bail!("{what}: the namespace script failed ({})", o.status);
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

struct Setup {
    dir: PathBuf,
    nssbench: PathBuf,
    lib: PathBuf,
    smith_dir: PathBuf,
    files_dir: PathBuf,
    sys_dir: PathBuf,
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn run_ok(c: &mut Command, what: &str) -> Result<()> {
    let o = c.output().with_context(|| format!("running {what}"))?;
    if !o.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

fn prepare(release: &Path, work: &Path) -> Result<Setup> {
    let dir = work.join("nss");
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["lib", "sys", "src"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    let src = dir.join("src/nssbench.c");
    write(&src, NSSBENCH_C)?;
    let nssbench = dir.join("nssbench");
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&nssbench)
            .arg(&src)
            .arg("-ldl"),
        "gcc -O2 nssbench.c (is gcc installed?)",
    )?;
    let lib = dir.join("lib/libnss_smith.so.2");
    std::fs::copy(release.join("libnss_smith.so"), &lib).context("copying libnss_smith.so")?;
    // Smith's cache: 10k users, 1k groups of 50 (nss_smith's bench-cache example).
    let smith_dir = dir.join("smith");
    run_ok(
        Command::new(release.join("examples/bench-cache"))
            .arg(&smith_dir)
            .args(["10000", "1000"]),
        "bench-cache",
    )?;
    // The system's own small passwd/group (copies: bind mounts of the originals would do,
    // but copies keep the machine's files out of every mount).
    let sys_dir = dir.join("sys");
    for f in ["passwd", "group"] {
        std::fs::copy(Path::new("/etc").join(f), sys_dir.join(f))?;
    }
    // The same shape in /etc/passwd, with the anchors' own generator.
    let files_dir = dir.join("files");
    let py = dir.join("src/gen-users.py");
    write(&py, GEN_USERS_PY)?;
    run_ok(
        Command::new("python3")
            .arg(&py)
            .arg(sys_dir.join("passwd"))
            .arg(sys_dir.join("group"))
            .arg(&files_dir)
            .args(["10000", "1000"]),
        "gen-users.py (is python3 installed?)",
    )?;
    for (name, text) in [
        ("nsswitch.smith", "passwd: smith\ngroup: smith\n"),
        (
            "nsswitch.files-smith",
            "passwd: files smith\ngroup: files smith\n",
        ),
        ("nsswitch.files", "passwd: files\ngroup: files\n"),
        (
            "nsswitch.files-smith-ig",
            "passwd: files smith\ngroup: files smith\ninitgroups: smith [NOTFOUND=continue] files\n",
        ),
    ] {
        write(&dir.join(name), text)?;
    }
    Ok(Setup {
        dir,
        nssbench,
        lib,
        smith_dir,
        files_dir,
        sys_dir,
    })
}

/// Debian's nscd, extracted (not installed) into `dir/nscd`: (binary, nscd.conf).
fn nscd(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let root = dir.join("nscd");
    std::fs::create_dir_all(&root)?;
    let system = Path::new("/usr/sbin/nscd");
    let bin = if system.exists() {
        system.to_path_buf()
    } else {
        let cache = super::workspace_target().join("bench-cache");
        std::fs::create_dir_all(&cache)?;
        let have = std::fs::read_dir(&cache)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("nscd_"))
            });
        let deb = match have {
            Some(d) => d,
            None => {
                progress("nss: apt-get download nscd (extracted, not installed)");
                run_ok(
                    Command::new("apt-get")
                        .args(["download", "-qq", "nscd"])
                        .current_dir(&cache),
                    "apt-get download nscd",
                )?;
                std::fs::read_dir(&cache)?
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .find(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("nscd_"))
                    })
                    .context("apt-get download nscd left no .deb")?
            }
        };
        run_ok(
            Command::new("dpkg").arg("-x").arg(&deb).arg(&root),
            "dpkg -x nscd",
        )?;
        root.join("usr/sbin/nscd")
    };
    let default_conf = [root.join("etc/nscd.conf"), PathBuf::from("/etc/nscd.conf")]
        .into_iter()
        .find(|p| p.exists())
        .context("no nscd.conf in the nscd package")?;
    let conf: String = std::fs::read_to_string(&default_conf)?
        .lines()
        .map(|l| {
            // No persistent database files: nothing is written outside the namespace.
            if l.trim_start().starts_with("persistent") {
                format!("#{l}")
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    let conf_path = dir.join("nscd.conf");
    write(
        &conf_path,
        &(conf + "persistent passwd no\npersistent group no\n"),
    )?;
    Ok((bin, conf_path))
}

/// Debian's SSSD (`sssd-common`, `libnss-sss` and the libraries this machine lacks),
/// extracted (never installed: its postinst would start a machine-wide sssd) into
/// `dir/sssd/root`. Returns that root.
fn sssd(dir: &Path) -> Result<PathBuf> {
    const PACKAGES: &[&str] = &[
        "sssd-common",
        "libnss-sss",
        "libsss-idmap0",
        "libsss-nss-idmap0",
        "libsss-certmap0",
        "libtalloc2",
        "libtevent0",
        "libldb2",
        "libtdb1",
        "libdhash1",
        "libini-config5",
        "libcollection4",
        "libbasicobjects0",
        "libref-array1",
        "libpath-utils1",
        "libc-ares2",
        "liblmdb0",
        "libnl-3-200",
        "libnl-route-3-200",
        "libnfsidmap1",
    ];
    let cache = super::workspace_target().join("bench-cache/sssd");
    std::fs::create_dir_all(&cache)?;
    let have = |pkg: &str| -> Result<Option<PathBuf>> {
        Ok(std::fs::read_dir(&cache)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pkg}_")))
            }))
    };
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| have(p).ok().flatten().is_none())
        .collect();
    if !missing.is_empty() {
        progress(format!(
            "nss: apt-get download {} (SSSD, extracted, not installed)",
            missing.join(" ")
        ));
        run_ok(
            Command::new("apt-get")
                .args(["download", "-qq"])
                .args(&missing)
                .current_dir(&cache),
            "apt-get download sssd-common and its libraries",
        )?;
    }
    let root = dir.join("sssd/root");
    std::fs::create_dir_all(&root)?;
    for pkg in PACKAGES {
        let deb = have(pkg)?.with_context(|| format!("{pkg}: no .deb after apt-get download"))?;
        run_ok(
            Command::new("dpkg").arg("-x").arg(&deb).arg(&root),
            &format!("dpkg -x {pkg}"),
        )?;
    }
    Ok(root)
}

/// Shell lines that start SSSD (files provider) in the current namespace: its
/// libraries, providers and schema are overlaid onto the system directories it has
/// compiled in, its state is on tmpfs; waits until it answers, then points
/// nsswitch.conf at it.
fn sssd_start(dir: &Path, root: &Path) -> Result<String> {
    let d = dir.join("sssd");
    for sub in ["lib-up", "lib-work", "share-up/sssd", "share-work"] {
        std::fs::create_dir_all(d.join(sub))?;
    }
    for src in ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"] {
        let from = root.join(src);
        if from.exists() {
            run_ok(
                Command::new("cp")
                    .arg("-a")
                    .arg(format!("{}/.", from.display()))
                    .arg(d.join("lib-up")),
                "copying SSSD's libraries",
            )?;
        }
    }
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", root.join("usr/share/sssd").display()))
            .arg(d.join("share-up/sssd")),
        "copying SSSD's schema",
    )?;
    let conf = d.join("sssd.conf");
    write(
        &conf,
        "[sssd]
services = nss
domains = files

[nss]

[domain/files]
id_provider = files
",
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600))?;
    write(&d.join("nsswitch.sss"), "passwd: sss
group: sss
")?;
    let q = |p: &Path| sh_quote(p);
    Ok(format!(
        "mount -t overlay overlay -o lowerdir=/usr/lib/x86_64-linux-gnu,upperdir={lu},workdir={lw} /usr/lib/x86_64-linux-gnu
         mount -t overlay overlay -o lowerdir=/usr/share,upperdir={su},workdir={sw} /usr/share
         mount -t tmpfs tmpfs /usr/libexec
mkdir /usr/libexec/sssd
         mount --bind {libexec} /usr/libexec/sssd
         if [ -d /var/lib ]; then mount -t tmpfs -o mode=0755 tmpfs /var/lib; fi
         mkdir -p /var/lib/sss/db /var/lib/sss/mc /var/lib/sss/pipes/private /var/lib/sss/pubconf /var/lib/sss/gpo_cache
         mount -t tmpfs tmpfs /var/log
mkdir -p /var/log/sssd
         mount -t tmpfs -o mode=0755 tmpfs /run
         {sssd} -i -c {conf} --logger=stderr 2>/dev/null &
SSSD=$!
         i=0; while [ ! -S /var/lib/sss/pipes/nss ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
         [ -S /var/lib/sss/pipes/nss ] || {{ echo 'sssd did not start' >&2; exit 1; }}
         mount --bind {nss} /etc/nsswitch.conf
         i=0; until getent passwd u00000 >/dev/null || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
",
        lu = q(&d.join("lib-up")),
        lw = q(&d.join("lib-work")),
        su = q(&d.join("share-up")),
        sw = q(&d.join("share-work")),
        libexec = q(&root.join("usr/libexec/sssd")),
        sssd = q(&root.join("usr/sbin/sssd")),
        conf = q(&conf),
        nss = q(&d.join("nsswitch.sss")),
    ))
}

fn binds(nsswitch: &Path, data: &Path) -> String {
    format!(
        "mount --bind {} /etc/nsswitch.conf\nmount --bind {} /etc/passwd\nmount --bind {} /etc/group\n",
        sh_quote(nsswitch),
        sh_quote(&data.join("passwd")),
        sh_quote(&data.join("group"))
    )
}

fn smith_cache_mount(s: &Setup) -> String {
    smith_cache_mount_with(s, &s.lib)
}

/// The cache mount, and `LD_LIBRARY_PATH` naming the directory of `lib`.
fn smith_cache_mount_with(s: &Setup, lib: &Path) -> String {
    format!(
        "if [ ! -d /var/lib/smith ]; then mount -t tmpfs -o mode=0755 tmpfs /var/lib; mkdir /var/lib/smith; fi\n\
         mount --bind {} /var/lib/smith\n\
         export LD_LIBRARY_PATH={}\n",
        sh_quote(&s.smith_dir),
        sh_quote(lib.parent().unwrap_or(Path::new("/")))
    )
}

pub fn run(release: &Path, work: &Path, quick: bool) -> Result<(Vec<Figure>, Value)> {
    let s = prepare(release, work)?;
    let mut res: Results = BTreeMap::new();
    let (n_fast, n_threads, n_slow) = if quick {
        (2000, 500, 200)
    } else {
        (5000, 2000, 1000)
    };
    let with_stat = format!("{PHASES},stat");
    let bench = |label: &str, names: &Path, n: usize, phases: &str, extra: &str| {
        format!(
            "{} -f {} -n {n} -l {label} -p {phases} {extra}\n",
            sh_quote(&s.nssbench),
            sh_quote(names)
        )
    };
    let smith_names = s.smith_dir.join("names.txt");
    let files_names = s.files_dir.join("names.txt");
    let lib = sh_quote(&s.lib);

    progress("nss: passwd: smith (glibc, 1 and 16 threads; module alone through dlsym)");
    let script = binds(&s.dir.join("nsswitch.smith"), &s.sys_dir)
        + &smith_cache_mount(&s)
        + &bench("smith", &smith_names, n_fast, &with_stat, "")
        + &bench("smith16", &smith_names, n_threads, &with_stat, "-t 16")
        + &bench("direct", &smith_names, n_fast, PHASES, &format!("-d {lib}"))
        + &bench(
            "direct16",
            &smith_names,
            n_threads,
            PHASES,
            &format!("-d {lib} -t 16"),
        );
    parse_results(&in_namespace(&script, "passwd: smith")?, &mut res)?;
    let syscalls = if Path::new("/usr/bin/strace").exists() {
        progress("nss: syscalls per lookup (strace -c, 1,000 vs 11,000 lookups)");
        let counted = |tag: &str, n: usize, extra: &str| {
            format!(
                "strace -f -c -o {} {} -f {} -n {n} -w 0 -p pwnam_hit -l sc {extra} >/dev/null\n",
                sh_quote(&s.dir.join(format!("strace.{tag}.{n}"))),
                sh_quote(&s.nssbench),
                sh_quote(&smith_names)
            )
        };
        let script = binds(&s.dir.join("nsswitch.smith"), &s.sys_dir)
            + &smith_cache_mount(&s)
            + &counted("glibc", 1000, "")
            + &counted("glibc", 11000, "")
            + &counted("direct", 1000, &format!("-d {lib}"))
            + &counted("direct", 11000, &format!("-d {lib}"));
        in_namespace(&script, "strace")
            .map(|_| ["glibc", "direct"].map(|tag| per_call_syscalls(&s.dir, tag, 1000, 11000)))
    } else {
        Err(anyhow::anyhow!("strace is not installed"))
    };

    // The same runs with another build of the module (e.g. the previous release), in
    // this session: what a change did, with the machine's state of this moment.
    if let Some(old) = std::env::var_os("SMITH_BENCH_NSS_BASELINE") {
        let old_dir = s.dir.join("lib-baseline");
        std::fs::create_dir_all(&old_dir)?;
        let old_lib = old_dir.join("libnss_smith.so.2");
        std::fs::copy(&old, &old_lib)
            .with_context(|| format!("copying SMITH_BENCH_NSS_BASELINE {old:?}"))?;
        progress("nss: passwd: smith and module alone with the baseline build");
        let olib = sh_quote(&old_lib);
        let script = binds(&s.dir.join("nsswitch.smith"), &s.sys_dir)
            + &smith_cache_mount_with(&s, &old_lib)
            + &bench("smith_base", &smith_names, n_fast, PHASES, "")
            + &bench("smith16_base", &smith_names, n_threads, PHASES, "-t 16")
            + &bench("direct_base", &smith_names, n_fast, PHASES, &format!("-d {olib}"))
            + &bench(
                "direct16_base",
                &smith_names,
                n_threads,
                PHASES,
                &format!("-d {olib} -t 16"),
            );
        parse_results(&in_namespace(&script, "baseline build")?, &mut res)?;
    }

    progress("nss: initgroups: smith [NOTFOUND=continue] files (getgrouplist)");
    let script = binds(&s.dir.join("nsswitch.files-smith-ig"), &s.sys_dir)
        + &smith_cache_mount(&s)
        + &bench("files_smith_ig", &smith_names, n_fast, "grouplist", "");
    parse_results(&in_namespace(&script, "initgroups line")?, &mut res)?;

    progress("nss: passwd: files smith (the system's passwd + 10k Smith users)");
    let script = binds(&s.dir.join("nsswitch.files-smith"), &s.sys_dir)
        + &smith_cache_mount(&s)
        + &bench("files_smith", &smith_names, n_fast, PHASES, "");
    parse_results(&in_namespace(&script, "passwd: files smith")?, &mut res)?;

    progress("nss: files with 10k users in /etc/passwd (baseline)");
    let script = binds(&s.dir.join("nsswitch.files"), &s.files_dir)
        + &bench("files10k", &files_names, n_slow, &with_stat, "-w 100");
    parse_results(&in_namespace(&script, "files 10k")?, &mut res)?;

    let mut nscd_note = String::new();
    match nscd(&s.dir) {
        Ok((bin, conf)) => {
            progress("nss: nscd's shared map (10k users in /etc/passwd; warm-up fills nscd)");
            let script = binds(&s.dir.join("nsswitch.files"), &s.files_dir)
                + "mount -t tmpfs -o mode=0755 tmpfs /run\nmkdir -p /run/nscd\n"
                + &format!("{} -F -f {} &\nNSCD=$!\n", sh_quote(&bin), sh_quote(&conf))
                + "i=0; while [ ! -S /run/nscd/socket ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n"
                + "[ -S /run/nscd/socket ] || { echo 'nscd did not start' >&2; exit 1; }\n"
                + &bench("nscd", &files_names, n_fast, PHASES, "")
                + &bench("nscd16", &files_names, n_threads, PHASES, "-t 16")
                + "kill $NSCD 2>/dev/null || true\n";
            match in_namespace(&script, "nscd").and_then(|o| parse_results(&o, &mut res)) {
                Ok(()) => {}
                Err(e) => nscd_note = format!("{e:#}"),
            }
        }
        Err(e) => nscd_note = format!("{e:#}"),
    }
    if !nscd_note.is_empty() {
        progress(format!("nss: nscd not measured: {nscd_note}"));
    }
    let mut sssd_note = String::new();
    match sssd(&s.dir).and_then(|root| sssd_start(&s.dir, &root)) {
        Ok(start) => {
            progress("nss: SSSD's files provider (10k users in /etc/passwd; warm-up fills its cache)");
            // nsswitch.conf says `files` while sssd starts (it resolves its own user).
            let script = binds(&s.dir.join("nsswitch.files"), &s.files_dir)
                + &start
                + &bench("sssd", &files_names, n_fast, PHASES, "")
                + &bench("sssd16", &files_names, n_threads, PHASES, "-t 16")
                + "kill $SSSD 2>/dev/null || true\n";
            if let Err(e) = in_namespace(&script, "sssd").and_then(|o| parse_results(&o, &mut res)) {
                sssd_note = format!("{e:#}");
            }
        }
        Err(e) => sssd_note = format!("{e:#}"),
    }
    if !sssd_note.is_empty() {
        progress(format!("nss: SSSD not measured: {sssd_note}"));
    }
    let mut figs = figures(&res, &nscd_note, &sssd_note);
    match syscalls {
        Ok([glibc, direct]) => {
            for (name, r) in [
                ("syscalls per getpwnam_r hit [passwd: smith]", glibc),
                ("syscalls per getpwnam_r hit [module alone]", direct),
            ] {
                figs.push(match r {
                    Ok((total, detail)) => Figure::new(SECTION, name, total, "").note(detail),
                    Err(e) => Figure::missing(SECTION, name, format!("{e:#}")),
                });
            }
        }
        Err(e) => figs.push(Figure::missing(
            SECTION,
            "syscalls per lookup",
            format!("{e:#}"),
        )),
    }
    Ok((figs, raw_json(&res)))
}

/// Per syscall: calls in a `strace -c` summary.
fn strace_counts(path: &Path) -> Result<BTreeMap<String, f64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "% time seconds usecs/call calls [errors] syscall"
        if f.len() >= 5 && f[0].parse::<f64>().is_ok() {
            if let (Ok(calls), Some(name)) = (f[3].parse::<f64>(), f.last()) {
                m.insert(name.to_string(), calls);
            }
        }
    }
    if !m.contains_key("total") {
        bail!("{} is not a strace -c summary", path.display());
    }
    Ok(m)
}

/// (syscalls per lookup, "name per-call, ...") from the difference of two runs.
fn per_call_syscalls(dir: &Path, tag: &str, small: usize, big: usize) -> Result<(f64, String)> {
    let a = strace_counts(&dir.join(format!("strace.{tag}.{small}")))?;
    let b = strace_counts(&dir.join(format!("strace.{tag}.{big}")))?;
    let n = (big - small) as f64;
    let per = |k: &str| (b.get(k).copied().unwrap_or(0.0) - a.get(k).copied().unwrap_or(0.0)) / n;
    let mut detail: Vec<(String, f64)> = b
        .keys()
        .filter(|k| *k != "total")
        .map(|k| (k.clone(), per(k)))
        .filter(|(_, v)| *v >= 0.001)
        .collect();
    detail.sort_by(|x, y| y.1.total_cmp(&x.1));
    let text = if detail.is_empty() {
        "no syscall per lookup".to_string()
    } else {
        detail
            .iter()
            .map(|(k, v)| format!("{k} {v:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok((per("total").max(0.0), format!("per lookup: {text}")))
}

fn raw_json(res: &Results) -> Value {
    let mut m = serde_json::Map::new();
    for (label, phases) in res {
        let mut pm = serde_json::Map::new();
        for (p, r) in phases {
            pm.insert(
                p.clone(),
                json!({"n": r.n, "mean": r.mean, "p50": r.p50, "p90": r.p90, "p99": r.p99,
                       "max": r.max, "errors": r.errors, "avg_groups": r.avg_groups}),
            );
        }
        m.insert(label.clone(), Value::Object(pm));
    }
    Value::Object(m)
}

fn figures(res: &Results, nscd_note: &str, sssd_note: &str) -> Vec<Figure> {
    let phases: [(&str, &str, f64); 5] = [
        ("pwnam_hit", "getpwnam_r hit", 0.5),
        ("pwnam_miss", "getpwnam_r miss (warm)", 1.0),
        ("pwnam_miss_u", "getpwnam_r miss (never seen)", 1.0),
        ("pwuid_hit", "getpwuid_r hit", 0.5),
        ("grouplist", "getgrouplist", 1.0),
    ];
    // (label, shown as, has the target)
    let configs: [(&str, &str, bool); 14] = [
        ("smith", "passwd: smith", true),
        ("smith_base", "passwd: smith, baseline build", false),
        ("smith16", "passwd: smith, 16 threads", true),
        ("smith16_base", "passwd: smith, 16 threads, baseline build", false),
        ("direct", "module alone (dlsym)", true),
        ("direct_base", "module alone, baseline build", false),
        ("direct16", "module alone, 16 threads", true),
        ("direct16_base", "module alone, 16 threads, baseline build", false),
        ("files_smith", "passwd: files smith", false),
        ("files_smith_ig", "files smith + initgroups: smith [NOTFOUND=continue] files", false),
        ("nscd", "nscd shared map", false),
        ("nscd16", "nscd shared map, 16 threads", false),
        ("sssd", "SSSD files provider", false),
        ("sssd16", "SSSD files provider, 16 threads", false),
    ];
    let get = |label: &str, phase: &str| res.get(label).and_then(|m| m.get(phase));
    let mut figs = Vec::new();
    for (phase, pname, target) in phases {
        let base = get("files10k", phase);
        for (label, cname, targeted) in configs {
            let name = format!("{pname} [{cname}]");
            if (label.ends_with("_base") && res.get(label).is_none())
                || (label == "files_smith_ig" && phase != "grouplist")
            {
                continue; // not asked for
            }
            let Some(r) = get(label, phase) else {
                let why = if label.starts_with("nscd") && !nscd_note.is_empty() {
                    nscd_note.to_string()
                } else if label.starts_with("sssd") && !sssd_note.is_empty() {
                    sssd_note.to_string()
                } else {
                    "no result (see the progress output)".into()
                };
                figs.push(Figure::missing(SECTION, name, why));
                continue;
            };
            let mut f = Figure::new(SECTION, name, r.p50, "µs");
            if let Some(b) = base {
                f = f.baseline(BASELINE, b.p50);
            }
            if targeted {
                f = f.goal(Goal::AtMost(target));
            }
            if label.ends_with("16") {
                f = f.note(format!(
                    "p99 {} µs over {} calls",
                    super::report::num(r.p99),
                    r.n
                ));
            }
            if r.errors > 0 {
                let sep = if f.note.is_empty() { "" } else { "; " };
                f.note = format!("{}{sep}{} wrong answers in {} calls", f.note, r.errors, r.n);
            }
            figs.push(f);
        }
    }
    for (label, name) in [
        ("smith", "glibc floor: stat(/etc/nsswitch.conf)"),
        (
            "smith16",
            "glibc floor: stat(/etc/nsswitch.conf), 16 threads",
        ),
    ] {
        if let Some(r) = get(label, "stat") {
            let mut f = Figure::new(SECTION, name, r.p50, "µs")
                .note("glibc 2.36 makes this syscall on every lookup, whatever the module");
            if let Some(b) = get("files10k", "stat") {
                f = f.baseline("same stat, files namespace", b.p50);
            }
            figs.push(f);
        }
    }
    figs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_parse() {
        let out = "RESULT\tsmith\tpwnam_hit\t5000\t0.500\t0.450\t0.600\t1.200\t9.000\t0\t0.00\t0.01\nnoise\n";
        let mut r = BTreeMap::new();
        parse_results(out, &mut r).unwrap();
        let p = &r["smith"]["pwnam_hit"];
        assert_eq!(p.n, 5000);
        assert_eq!(p.p50, 0.45);
        assert!(parse_results("RESULT\tx\n", &mut r).is_err());
    }
}
