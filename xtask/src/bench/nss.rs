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
//! | baseline build | as `passwd: smith` and module only | with `SMITH_BENCH_NSS_BASELINE=PATH` (a `libnss_smith.so` of another build): paired rounds, this build and that one alternately |
//! | `initgroups: smith [NOTFOUND=continue] files` | the system's own | `passwd: files smith`, `group: files smith` plus that line, paired with the same without it (getgrouplist only) |
//!
//! The glibc floor, `stat("/etc/nsswitch.conf")` (glibc 2.36 does it on every lookup),
//! is measured in the same process as the Smith run. nscd and SSSD are Debian's own
//! binaries, extracted with `apt-get download` + `dpkg -x` (never installed: their
//! postinsts would start machine-wide daemons), each run inside its namespace with
//! private state directories (tmpfs `/run`, `/var/lib`, `/var/log`), so their sockets
//! exist only there. SSSD's binaries and libraries reach their compiled-in paths through
//! a read-only overlay of `/usr` (the extracted tree above the system's).
//!
//! Must never: modify the machine's /etc, /usr, /var or /run (everything is a bind, tmpfs
//! or read-only overlay mount inside `unshare --mount --propagation private`), or use an
//! overlay of /etc (overlayfs makes glibc's per-call stat slower and would skew the
//! floor).

use super::report::{num, Figure, Goal};
use super::util::{progress, stats};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// Runs `script` as `sh -ec` in a private mount + PID namespace; returns stdout. Its
/// stderr is shown as progress while it runs (at most 20 lines).
fn in_namespace(script: &str, what: &str) -> Result<String> {
    let mut child = Command::new("unshare")
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
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running unshare")?;
    let stderr = child.stderr.take().context("unshare's stderr")?;
    let what_err = what.to_string();
    let shown = std::thread::spawn(move || {
        for (i, l) in BufReader::new(stderr)
            .lines()
            .map_while(|l| l.ok())
            .enumerate()
        {
            if i < 20 {
                progress(format!("nss: {what_err}: {l}"));
            }
        }
    });
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        use std::io::Read;
        o.read_to_string(&mut out)
            .context("reading the namespace's output")?;
    }
    let status = child.wait().context("waiting for unshare")?;
    let _ = shown.join();
    if !status.success() {
        bail!("{what}: the namespace script failed ({status})");
    }
    Ok(out)
}

struct Setup {
    dir: PathBuf,
    nssbench: PathBuf,
    lib: PathBuf,
    smith_dir: PathBuf,
    files_dir: PathBuf,
    sys_dir: PathBuf,
    /// "name uid gid" of the system's own accounts (getgrouplist of a local user).
    local_names: PathBuf,
    /// A system account other than root (SSSD filters root out).
    sys_user: String,
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
    let sys_passwd = std::fs::read_to_string(sys_dir.join("passwd"))?;
    let accounts: Vec<(String, u32, u32)> = sys_passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect();
    let local_names = dir.join("sys/names.txt");
    write(
        &local_names,
        &accounts
            .iter()
            .map(|(n, u, g)| format!("{n} {u} {g}\n"))
            .collect::<String>(),
    )?;
    let sys_user = accounts
        .iter()
        .find(|(_, u, _)| *u != 0)
        .map(|(n, _, _)| n.clone())
        .context("/etc/passwd has no account other than root")?;
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
        local_names,
        sys_user,
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
/// `dir/sssd/root`, merged-/usr style (`lib/` copied into `usr/lib/`). The .debs are
/// kept in `target/bench-cache/sssd`. Returns that root.
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
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb")
                })
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
    // Some libraries (libnss_sss.so.2, libnl-3) are shipped in /lib: the overlay covers
    // /usr only (/lib is a link to usr/lib on Debian 12).
    if root.join("lib").is_dir() {
        std::fs::create_dir_all(root.join("usr/lib"))?;
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", root.join("lib").display()))
                .arg(root.join("usr/lib")),
            "copying SSSD's /lib into its usr/lib",
        )?;
    }
    if !root.join("usr/sbin/sssd").exists() {
        bail!("sssd-common has no usr/sbin/sssd");
    }
    Ok(root)
}

/// Shell lines that start SSSD (files provider) in the current namespace with the 10k
/// users loaded, leaving its pid in `$SSSD`. Lookups through it are run with
/// `dir/sssd/sss CMD…` (CMD in a nested mount namespace whose nsswitch.conf says `sss`):
/// SSSD itself must keep seeing `files` there, as it resolves its own user through NSS
/// (through itself, it deadlocks and its watchdog kills it).
///
/// The provider reads `passwd_files`/`group_files` in a private `/run/sssd-data`. It
/// starts with the system's own small files, because SSSD 2.8's files provider loads
/// everything synchronously in its backend: with 10k users at start its NSS responder
/// cannot connect meanwhile and the monitor stops restarting it (SSSD#5699). Once the
/// responder answers, the 10k-user files are moved in (inotify) and the script waits
/// until the last user and group answer through `sss` and the backend is idle; it prints
/// `SSSD_LOAD_S seconds` (that load's duration) on stdout.
fn sssd_start(s: &Setup, root: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let d = s.dir.join("sssd");
    let conf = d.join("sssd.conf");
    // timeout: the watchdog (3 missed heartbeats) would kill the backend while it loads.
    write(
        &conf,
        "[sssd]
services = nss
domains = files
timeout = 900

[nss]
timeout = 900

[domain/files]
id_provider = files
passwd_files = /run/sssd-data/passwd
group_files = /run/sssd-data/group
timeout = 900
",
    )?;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600))?;
    let nss = d.join("nsswitch.sss");
    write(&nss, "passwd: sss\ngroup: sss\n")?;
    // `sss CMD…`: CMD in a nested mount namespace whose nsswitch.conf says `sss`.
    let sss = d.join("sss");
    write(
        &sss,
        &format!(
            "#!/bin/sh\nexec unshare --mount --propagation private -- /bin/sh -ec \
             'mount --bind \"$0\" /etc/nsswitch.conf; exec \"$@\"' {} \"$@\"\n",
            sh_quote(&nss)
        ),
    )?;
    std::fs::set_permissions(&sss, std::fs::Permissions::from_mode(0o755))?;
    let q = |p: &Path| sh_quote(p);
    let log = d.join("sssd.log");
    Ok(format!(
        r#"mount -t overlay overlay -o ro,lowerdir={usr}:/usr /usr
mount -t proc proc /proc
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mkdir -p /var/lib/sss/db /var/lib/sss/mc /var/lib/sss/pipes/private /var/lib/sss/pubconf /var/lib/sss/gpo_cache /var/lib/sss/deskprofile /var/lib/sss/keytabs
mount -t tmpfs tmpfs /var/log
mkdir -p /var/log/sssd
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/sssd-data
cp {sys}/passwd {sys}/group /run/sssd-data/
SSS={sss}
fail() {{ echo "$1; the end of sssd's log:" >&2; tail -n 5 {log} >&2; exit 1; }}
/usr/sbin/sssd -i -c {conf} --logger=stderr >{log} 2>&1 &
SSSD=$!
end=$(($(date +%s) + 60))
until [ -S /var/lib/sss/pipes/nss ] && timeout 10 $SSS getent passwd {user} >/dev/null; do
  [ $(date +%s) -lt $end ] && kill -0 $SSSD 2>/dev/null || fail 'sssd did not start'
  sleep 0.1
done
t0=$(date +%s.%N)
cp {files}/passwd /run/sssd-data/passwd.new && mv /run/sssd-data/passwd.new /run/sssd-data/passwd
cp {files}/group /run/sssd-data/group.new && mv /run/sssd-data/group.new /run/sssd-data/group
echo "loading the 10k users and 1k groups into SSSD (minutes: SSSD#5699)" >&2
end=$(($(date +%s) + 900)); next=$(($(date +%s) + 60))
until timeout 120 $SSS getent passwd u09999 >/dev/null 2>&1 && timeout 120 $SSS getent group g0999 >/dev/null 2>&1; do
  [ $(date +%s) -lt $end ] && kill -0 $SSSD 2>/dev/null || fail 'SSSD did not load the 10k users in 15 minutes'
  if [ $(date +%s) -ge $next ]; then echo "still loading after $(($(date +%s) - ${{t0%.*}})) s" >&2; next=$((next + 60)); fi
  sleep 1
done
# The group file's own reload may follow the passwd one: wait until the backend is idle.
be=$(pgrep -x sssd_be | head -n 1)
cpu() {{ awk '{{print $14 + $15}}' /proc/$be/stat; }}
a=$(cpu); sleep 1; b=$(cpu)
while [ $((b - a)) -gt 2 ] && [ $(date +%s) -lt $end ]; do a=$b; sleep 1; b=$(cpu); done
t1=$(date +%s.%N)
echo "SSSD_LOAD_S $(awk "BEGIN {{ print $t1 - $t0 - 1 }}")"
timeout 120 $SSS id u09999 >/dev/null || fail 'id u09999 through SSSD failed'
"#,
        usr = q(&root.join("usr")),
        sys = q(&s.sys_dir),
        files = q(&s.files_dir),
        sss = q(&sss),
        log = q(&log),
        conf = q(&conf),
        user = s.sys_user,
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

/// Per-round results of two configurations measured alternately in the same session:
/// (label, phase) → one (this, other) pair per round.
type Pairs = BTreeMap<(String, String), Vec<(Phase, Phase)>>;

/// `rounds` rounds of the namespace scripts `this` and `other` (whose RESULT lines have
/// the same labels), alternately: this-other, other-this, …, so that a slow spell of the
/// machine falls on both. Every (label, phase) gets one pair per round.
fn paired(rounds: usize, this: &str, other: &str, what: &str, into: &mut Pairs) -> Result<()> {
    for r in 0..rounds {
        let mut got: [Results; 2] = Default::default();
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let script = if i == 0 { this } else { other };
            parse_results(&in_namespace(script, what)?, &mut got[i])?;
        }
        for (label, phases) in &got[0] {
            for (phase, a) in phases.iter().filter(|(p, _)| *p != "timer_overhead") {
                if let Some(b) = got[1].get(label).and_then(|m| m.get(phase)) {
                    into.entry((label.clone(), phase.clone()))
                        .or_default()
                        .push((a.clone(), b.clone()));
                }
            }
        }
    }
    Ok(())
}

/// How many calls and rounds.
struct Sizes {
    fast: usize,
    threads: usize,
    slow: usize,
    rounds: usize,
    sssd_threads: usize,
}

pub fn run(release: &Path, work: &Path, quick: bool) -> Result<(Vec<Figure>, Value)> {
    let s = prepare(release, work)?;
    let mut res: Results = BTreeMap::new();
    let n = if quick {
        Sizes {
            fast: 2000,
            threads: 500,
            slow: 200,
            rounds: 3,
            sssd_threads: 0,
        }
    } else {
        Sizes {
            fast: 5000,
            threads: 2000,
            slow: 1000,
            rounds: 7,
            sssd_threads: 300,
        }
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
        + &bench("smith", &smith_names, n.fast, &with_stat, "")
        + &bench("smith16", &smith_names, n.threads, &with_stat, "-t 16")
        + &bench("direct", &smith_names, n.fast, PHASES, &format!("-d {lib}"))
        + &bench(
            "direct16",
            &smith_names,
            n.threads,
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

    // Another build of the module (e.g. the previous commit), in this session: this
    // build and that one alternately, so that what a change did is not the machine's mood.
    let mut builds: Pairs = BTreeMap::new();
    let mut builds_note = String::new();
    if let Some(old) = std::env::var_os("SMITH_BENCH_NSS_BASELINE") {
        let old_dir = s.dir.join("lib-baseline");
        std::fs::create_dir_all(&old_dir)?;
        let old_lib = old_dir.join("libnss_smith.so.2");
        std::fs::copy(&old, &old_lib)
            .with_context(|| format!("copying SMITH_BENCH_NSS_BASELINE {old:?}"))?;
        let runs = |lib: &Path| {
            let l = sh_quote(lib);
            binds(&s.dir.join("nsswitch.smith"), &s.sys_dir)
                + &smith_cache_mount_with(&s, lib)
                + &bench("glibc", &smith_names, n.fast, PHASES, "")
                + &bench("glibc16", &smith_names, n.threads, PHASES, "-t 16")
                + &bench("direct", &smith_names, n.fast, PHASES, &format!("-d {l}"))
                + &bench(
                    "direct16",
                    &smith_names,
                    n.threads,
                    PHASES,
                    &format!("-d {l} -t 16"),
                )
        };
        progress(format!(
            "nss: this build vs the baseline build {} ({} alternating rounds)",
            Path::new(&old).display(),
            n.rounds
        ));
        if let Err(e) = paired(
            n.rounds,
            &runs(&s.lib),
            &runs(&old_lib),
            "baseline build",
            &mut builds,
        ) {
            builds_note = format!("{e:#}");
            progress(format!("nss: baseline build not measured: {builds_note}"));
        }
    }

    // Instructions per call inside the module (callgrind): the same on every run,
    // whatever else the machine is doing, so a difference of a few ns between builds
    // shows here even when the timed rounds above are noisy.
    let instructions = if Path::new("/usr/bin/valgrind").exists() {
        progress("nss: instructions per call, module alone (callgrind, 1,000 vs 11,000 calls)");
        let old_lib = s.dir.join("lib-baseline/libnss_smith.so.2");
        let mut libs = vec![("this", s.lib.clone())];
        if old_lib.exists() && builds_note.is_empty() {
            libs.push(("baseline", old_lib));
        }
        libs.iter()
            .map(|(tag, lib)| {
                in_namespace(&callgrind_script(&s, lib, tag), "callgrind")?;
                per_call_instructions(&s.dir, tag)
            })
            .collect::<Result<Vec<_>>>()
    } else {
        Err(anyhow::anyhow!("valgrind is not installed"))
    };

    // `initgroups: smith [NOTFOUND=continue] files` against the same nsswitch.conf
    // without it, alternately: getgrouplist of Smith users and of the system's own.
    progress(format!(
        "nss: initgroups: smith [NOTFOUND=continue] files vs none (getgrouplist, {} alternating rounds)",
        n.rounds
    ));
    let mut ig: Pairs = BTreeMap::new();
    let ig_runs = |nsswitch: &str| {
        binds(&s.dir.join(nsswitch), &s.sys_dir)
            + &smith_cache_mount(&s)
            + &bench("smith_users", &smith_names, n.fast, "grouplist", "")
            + &bench("local_users", &s.local_names, n.fast, "grouplist", "")
    };
    let ig_note = match paired(
        n.rounds,
        &ig_runs("nsswitch.files-smith-ig"),
        &ig_runs("nsswitch.files-smith"),
        "initgroups line",
        &mut ig,
    ) {
        Ok(()) => String::new(),
        Err(e) => format!("{e:#}"),
    };

    progress("nss: passwd: files smith (the system's passwd + 10k Smith users)");
    let script = binds(&s.dir.join("nsswitch.files-smith"), &s.sys_dir)
        + &smith_cache_mount(&s)
        + &bench("files_smith", &smith_names, n.fast, PHASES, "");
    parse_results(&in_namespace(&script, "passwd: files smith")?, &mut res)?;

    progress("nss: files with 10k users in /etc/passwd (baseline)");
    let script = binds(&s.dir.join("nsswitch.files"), &s.files_dir)
        + &bench("files10k", &files_names, n.slow, &with_stat, "-w 100");
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
                + &bench("nscd", &files_names, n.fast, PHASES, "")
                + &bench("nscd16", &files_names, n.threads, PHASES, "-t 16")
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

    // Last: its backend keeps a core busy for minutes while it loads the 10k users.
    let mut sssd_note = String::new();
    let mut sssd_load = None;
    if quick {
        sssd_note = "not measured with --quick: SSSD's files provider takes minutes to load \
                     10k users (SSSD#5699)"
            .into();
    } else {
        match sssd(&s.dir).and_then(|root| sssd_start(&s, &root)) {
            Ok(start) => {
                progress("nss: SSSD's files provider (10k users; warm-up fills its memory cache)");
                let sss = sh_quote(&s.dir.join("sssd/sss"));
                let script = binds(&s.dir.join("nsswitch.files"), &s.files_dir)
                    + &start
                    + &format!("{sss} ")
                    + &bench("sssd", &files_names, n.fast, PHASES, "")
                    + &format!("{sss} ")
                    + &bench("sssd16", &files_names, n.sssd_threads, PHASES, "-t 16")
                    + "kill $SSSD 2>/dev/null || true\n";
                match in_namespace(&script, "sssd").and_then(|o| {
                    sssd_load = o
                        .lines()
                        .find_map(|l| l.strip_prefix("SSSD_LOAD_S "))
                        .and_then(|v| v.trim().parse::<f64>().ok());
                    parse_results(&o, &mut res)
                }) {
                    Ok(()) => {}
                    Err(e) => sssd_note = format!("{e:#}"),
                }
            }
            Err(e) => sssd_note = format!("{e:#}"),
        }
    }
    if !sssd_note.is_empty() {
        progress(format!("nss: SSSD: {sssd_note}"));
    }

    let notes = Notes {
        nscd: nscd_note,
        sssd: sssd_note,
        builds: builds_note,
        ig: ig_note,
    };
    let mut figs = figures(&res, &builds, &ig, &notes);
    if let Some(secs) = sssd_load {
        figs.push(
            Figure::new(
                SECTION,
                "SSSD files provider: load of the 10k users and 1k groups",
                secs,
                "s",
            )
            .note(
                "from moving the 10k-user passwd and group files into its passwd_files/group_files \
                 until u09999 and g0999 answer through sss and its backend is idle",
            ),
        );
    }
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
    figs.extend(instruction_figures(instructions));
    Ok((figs, raw_json(&res, &builds, &ig)))
}

/// Phases counted by callgrind, with the entry point each calls (callgrind counts only
/// inside it: `--toggle-collect`) and how it is shown.
const COUNTED: [(&str, &str, &str); 4] = [
    ("pwnam_hit", "_nss_smith_getpwnam_r", "getpwnam_r hit"),
    (
        "pwnam_miss",
        "_nss_smith_getpwnam_r",
        "getpwnam_r miss (warm)",
    ),
    ("pwuid_hit", "_nss_smith_getpwuid_r", "getpwuid_r hit"),
    ("grouplist", "_nss_smith_initgroups_dyn", "getgrouplist"),
];
const COUNTED_SMALL: usize = 1000;
const COUNTED_BIG: usize = 11000;

/// Shell lines running `nssbench -d lib` under callgrind for each of [`COUNTED`], with
/// 1,000 and 11,000 calls and no warm-up (the difference of the two leaves out the
/// first call's cache load and the program's own work).
fn callgrind_script(s: &Setup, lib: &Path, tag: &str) -> String {
    let mut script =
        binds(&s.dir.join("nsswitch.smith"), &s.sys_dir) + &smith_cache_mount_with(s, lib);
    for (phase, entry, _) in COUNTED {
        for n in [COUNTED_SMALL, COUNTED_BIG] {
            script += &format!(
                "valgrind --tool=callgrind --callgrind-out-file={} --toggle-collect={entry} \
                 {} -f {} -n {n} -w 0 -p {phase} -d {} >/dev/null 2>&1\n",
                sh_quote(&s.dir.join(format!("callgrind.{tag}.{phase}.{n}"))),
                sh_quote(&s.nssbench),
                sh_quote(&s.smith_dir.join("names.txt")),
                sh_quote(lib)
            );
        }
    }
    script
}

/// The `summary:` (total instructions) of a callgrind output file.
fn callgrind_total(path: &Path) -> Result<f64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("{} has no callgrind summary", path.display()))
}

/// Instructions per call for each of [`COUNTED`] (by phase).
fn per_call_instructions(dir: &Path, tag: &str) -> Result<BTreeMap<String, f64>> {
    let mut m = BTreeMap::new();
    for (phase, _, _) in COUNTED {
        let at = |n: usize| callgrind_total(&dir.join(format!("callgrind.{tag}.{phase}.{n}")));
        let per = (at(COUNTED_BIG)? - at(COUNTED_SMALL)?) / (COUNTED_BIG - COUNTED_SMALL) as f64;
        m.insert(phase.to_string(), per);
    }
    Ok(m)
}

/// Rows of instructions per call: this build, against the baseline build when one was
/// measured.
fn instruction_figures(r: Result<Vec<BTreeMap<String, f64>>>) -> Vec<Figure> {
    let counts = match r {
        Ok(c) => c,
        Err(e) => {
            return vec![Figure::missing(
                SECTION,
                "instructions per call [module alone]",
                format!("{e:#}"),
            )]
        }
    };
    let mut figs = Vec::new();
    for (phase, entry, pname) in COUNTED {
        let (Some(this), other) = (
            counts.first().and_then(|m| m.get(phase)),
            counts.get(1).and_then(|m| m.get(phase)),
        ) else {
            continue;
        };
        let name = match other {
            Some(_) => {
                format!("instructions per {pname} [module alone, this build vs baseline build]")
            }
            None => format!("instructions per {pname} [module alone]"),
        };
        let mut f = Figure::new(SECTION, name, *this, "").note(format!(
            "callgrind, inside {entry}: ({COUNTED_BIG} calls − {COUNTED_SMALL} calls) / {}",
            COUNTED_BIG - COUNTED_SMALL
        ));
        if let Some(o) = other {
            f = f.baseline("baseline build, callgrind", *o);
        }
        figs.push(f);
    }
    figs
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

fn phase_json(r: &Phase) -> Value {
    json!({"n": r.n, "mean": r.mean, "p50": r.p50, "p90": r.p90, "p99": r.p99,
           "max": r.max, "errors": r.errors, "avg_groups": r.avg_groups})
}

fn raw_json(res: &Results, builds: &Pairs, ig: &Pairs) -> Value {
    let mut m = serde_json::Map::new();
    for (label, phases) in res {
        let mut pm = serde_json::Map::new();
        for (p, r) in phases {
            pm.insert(p.clone(), phase_json(r));
        }
        m.insert(label.clone(), Value::Object(pm));
    }
    let pairs = |p: &Pairs| -> Value {
        let mut out = serde_json::Map::new();
        for ((label, phase), rounds) in p {
            out.insert(
                format!("{label}/{phase}"),
                Value::Array(
                    rounds
                        .iter()
                        .map(|(a, b)| json!([phase_json(a), phase_json(b)]))
                        .collect(),
                ),
            );
        }
        Value::Object(out)
    };
    // Rounds in order, each [this, other].
    m.insert(
        "paired".into(),
        json!({"this_build_vs_baseline_build": pairs(builds),
               "with_initgroups_line_vs_without": pairs(ig)}),
    );
    Value::Object(m)
}

/// Why a configuration has no figures.
struct Notes {
    nscd: String,
    sssd: String,
    builds: String,
    ig: String,
}

/// The figure of paired rounds: the median of `this`'s p50s against the median of
/// `other`'s, with the per-round ratios in the note.
fn paired_figure(name: String, rounds: &[(Phase, Phase)], other: &str) -> Figure {
    let this: Vec<f64> = rounds.iter().map(|(a, _)| a.p50).collect();
    let them: Vec<f64> = rounds.iter().map(|(_, b)| b.p50).collect();
    let ratios: Vec<f64> = rounds
        .iter()
        .filter(|(_, b)| b.p50 > 0.0)
        .map(|(a, b)| a.p50 / b.p50)
        .collect();
    let r = stats(&ratios);
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let mut note = format!(
        "median p50 of {} alternating rounds; per-round ratio median {}x, range {}–{}x",
        rounds.len(),
        num(r.p50),
        num(lo),
        num(r.max)
    );
    if rounds.first().is_some_and(|(a, _)| a.n > 5000) {
        // The 16-thread rows: their tail too.
        let p99 = |v: Vec<f64>| num(stats(&v).p50);
        note += &format!(
            "; p99 {} vs {} µs",
            p99(rounds.iter().map(|(a, _)| a.p99).collect()),
            p99(rounds.iter().map(|(_, b)| b.p99).collect())
        );
    }
    let errors: u64 = rounds.iter().map(|(a, b)| a.errors + b.errors).sum();
    if errors > 0 {
        note += &format!("; {errors} wrong answers");
    }
    // getgrouplist: both sides must find the same groups (a module that gives up on a
    // lock and answers fewer groups would look fast).
    let groups =
        |f: fn(&(Phase, Phase)) -> f64| rounds.iter().map(f).sum::<f64>() / rounds.len() as f64;
    let (ga, gb) = (groups(|(a, _)| a.avg_groups), groups(|(_, b)| b.avg_groups));
    if (ga - gb).abs() > 0.005 {
        note += &format!("; groups per call {ga:.3} vs {gb:.3}");
    }
    Figure::new(SECTION, name, stats(&this).p50, "µs")
        .baseline(other, stats(&them).p50)
        .note(note)
}

fn figures(res: &Results, builds: &Pairs, ig: &Pairs, notes: &Notes) -> Vec<Figure> {
    let phases: [(&str, &str, f64); 5] = [
        ("pwnam_hit", "getpwnam_r hit", 0.5),
        ("pwnam_miss", "getpwnam_r miss (warm)", 1.0),
        ("pwnam_miss_u", "getpwnam_r miss (never seen)", 1.0),
        ("pwuid_hit", "getpwuid_r hit", 0.5),
        ("grouplist", "getgrouplist", 1.0),
    ];
    // (label, shown as, has the target)
    let configs: [(&str, &str, bool); 9] = [
        ("smith", "passwd: smith", true),
        ("smith16", "passwd: smith, 16 threads", true),
        ("direct", "module alone (dlsym)", true),
        ("direct16", "module alone, 16 threads", true),
        ("files_smith", "passwd: files smith", false),
        ("nscd", "nscd shared map", false),
        ("nscd16", "nscd shared map, 16 threads", false),
        ("sssd", "SSSD files provider", false),
        ("sssd16", "SSSD files provider, 16 threads", false),
    ];
    // Paired rows, this build against the baseline build: (label, shown as).
    let build_rows: [(&str, &str); 4] = [
        ("glibc", "passwd: smith"),
        ("glibc16", "passwd: smith, 16 threads"),
        ("direct", "module alone"),
        ("direct16", "module alone, 16 threads"),
    ];
    let get = |label: &str, phase: &str| res.get(label).and_then(|m| m.get(phase));
    let mut figs = Vec::new();
    for (phase, pname, target) in phases {
        let base = get("files10k", phase);
        for (label, cname, targeted) in configs {
            let name = format!("{pname} [{cname}]");
            let Some(r) = get(label, phase) else {
                let why = if label.starts_with("nscd") && !notes.nscd.is_empty() {
                    notes.nscd.clone()
                } else if label.starts_with("sssd") && !notes.sssd.is_empty() {
                    notes.sssd.clone()
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
                f = f.note(format!("p99 {} µs over {} calls", num(r.p99), r.n));
            }
            if r.errors > 0 {
                let sep = if f.note.is_empty() { "" } else { "; " };
                f.note = format!("{}{sep}{} wrong answers in {} calls", f.note, r.errors, r.n);
            }
            figs.push(f);
            if label == "direct16" {
                // This build against the baseline build, after the Smith rows.
                for (blabel, bname) in build_rows {
                    let name = format!("{pname} [{bname}, this build vs baseline build]");
                    match builds.get(&(blabel.to_string(), phase.to_string())) {
                        Some(rounds) => {
                            figs.push(paired_figure(name, rounds, "baseline build, same rounds"))
                        }
                        None if !notes.builds.is_empty() => {
                            figs.push(Figure::missing(SECTION, name, notes.builds.clone()))
                        }
                        None => {} // not asked for
                    }
                }
            }
        }
        if phase == "grouplist" {
            for (label, who) in [
                ("smith_users", "Smith users"),
                ("local_users", "local users"),
            ] {
                let name = format!(
                    "{pname} [files smith + initgroups: smith [NOTFOUND=continue] files, {who}]"
                );
                match ig.get(&(label.to_string(), phase.to_string())) {
                    Some(rounds) => figs.push(paired_figure(
                        name,
                        rounds,
                        "files smith without the line, same rounds",
                    )),
                    None => figs.push(Figure::missing(
                        SECTION,
                        name,
                        if notes.ig.is_empty() {
                            "no result (see the progress output)".to_string()
                        } else {
                            notes.ig.clone()
                        },
                    )),
                }
            }
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

    fn phase(p50: f64, avg_groups: f64) -> Phase {
        Phase {
            n: 5000,
            mean: p50,
            p50,
            p90: p50,
            p99: p50,
            max: p50,
            errors: 0,
            avg_groups,
        }
    }

    #[test]
    fn paired_rows_are_medians_with_round_ratios() {
        let rounds = vec![
            (phase(1.0, 6.0), phase(2.0, 6.0)),
            (phase(3.0, 6.0), phase(2.0, 6.0)),
            (phase(1.2, 6.0), phase(1.0, 6.0)),
        ];
        let f = paired_figure("x".into(), &rounds, "other");
        assert_eq!(f.value, Some(1.2));
        assert_eq!(f.baseline.as_ref().map(|b| b.value), Some(2.0));
        assert!(f.note.contains("3 alternating rounds"), "{}", f.note);
        assert!(f.note.contains("ratio median 1.200x"), "{}", f.note);
        assert!(f.note.contains("range 0.500–1.500x"), "{}", f.note);
        assert!(!f.note.contains("groups"), "{}", f.note);
        let fewer = vec![(phase(1.0, 1.0), phase(2.0, 6.0))];
        let f = paired_figure("x".into(), &fewer, "other");
        assert!(
            f.note.contains("groups per call 1.000 vs 6.000"),
            "{}",
            f.note
        );
    }
}
