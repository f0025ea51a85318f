//! Part `propagation` (simulated hosts): from `group remove-member` at the CA until each
//! of N = 1, 100, 1000 hosts has received the sync response carrying the new version,
//! plus the CA's memory and CPU while it holds 1,000 long-polling hosts; and the same
//! over PostgreSQL replicas ([`run_replicas`]) for 1,000 and 10,000 hosts spread over
//! them, each change made on one replica.
//!
//! Every simulated host is real to the CA: it is enrolled with its own single-use token
//! (minted through the admin API) and a CSR made with rcgen, and syncs over mTLS with
//! the client certificate it got, in a long-poll loop like hostd's
//! (`GET /v1/host/sync?since=V&wait=25`). The loops are tokio tasks in this process; each
//! records the CLOCK_MONOTONIC time at which a response with a new version was read and
//! parsed. The real-host variant (through NSS on a fleet host) is in [`super::fleet`].
//!
//! Must never: count a host as updated before it parsed a response with the new version.

use super::api::{client, Api};
use super::localca::LocalCa;
use super::report::{Figure, Goal};
use super::util::{cpu_secs, mono_ns, progress, rss_mb, runtime, stats};
use anyhow::{bail, Context, Result};
use smith_api::tls::Identity;
use smith_api::{EnrollRequest, EnrollRequestNamed, SyncQuery};
use smith_proto::{HostName, Level};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECTION: &str = "Propagation";
/// hostd's default long-poll (`sync_wait_secs`).
const WAIT_SECS: u64 = 25;
const SIM_TAGS: &str = "env=sim";
const SIM_GROUP: &str = "simg";
const SIM_USER: &str = "sim0";

pub struct SimHost {
    name: HostName,
    identity: Identity,
}

/// What every sync loop reports: its current version and when it arrived.
#[derive(Default)]
struct Slot {
    version: AtomicU64,
    at_ns: AtomicU64,
}

struct Board {
    slots: Vec<Slot>,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Board {
    fn fail(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(e);
        }
    }
}

/// A fresh ECDSA P-256 key and a CSR for `name` (what hostd sends at enrollment).
fn key_and_csr(name: &HostName) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name.as_str());
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

async fn enroll_one(admin: &Api, name: HostName, shared: Option<String>) -> Result<SimHost> {
    let token = match shared {
        Some(t) => t,
        None => admin.host_token(SIM_TAGS, &name).await?,
    };
    let (key_pem, csr_pem) = key_and_csr(&name)?;
    let req = EnrollRequestNamed {
        request: EnrollRequest {
            token,
            host_name: name.clone(),
            csr_pem,
            ssh_host_keys: vec![],
        },
        ssh_names: vec![],
    };
    let resp = admin.client.enroll(&req).await?;
    Ok(SimHost {
        name,
        identity: Identity {
            cert_pem: resp.client_cert_pem.into_bytes(),
            key_pem: key_pem.into_bytes(),
        },
    })
}

/// hostd's loop, reduced to what the CA sees: long-poll, parse, remember the version.
async fn sync_loop(i: usize, base: String, fp: String, host: Arc<SimHost>, board: Arc<Board>) {
    let c = match client(&base, &fp, None, Some(&host.identity)) {
        Ok(c) => c,
        Err(e) => return board.fail(format!("{e:#}")),
    };
    let mut since = 0u64;
    loop {
        let q = SyncQuery {
            since,
            wait: WAIT_SECS,
            host: Some(host.name.clone()),
            epoch: None,
            beat: None,
        };
        match c.sync(&q).await {
            Ok(None) => continue,
            Ok(Some(s)) => {
                since = s.version;
                let slot = &board.slots[i];
                slot.at_ns.store(mono_ns(), Ordering::Release);
                slot.version.store(since, Ordering::Release);
            }
            Err(e @ smith_api::ClientError::Decode(_)) => board.fail(e.to_string()),
            Err(e) => {
                board.fail(e.to_string());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Waits until hosts `0..n` all hold at least `version`.
async fn all_at(board: &Board, n: usize, version: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let behind = board.slots[..n]
            .iter()
            .filter(|s| s.version.load(Ordering::Acquire) < version)
            .count();
        if behind == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            let last = board.last_error.lock().ok().and_then(|l| l.clone());
            bail!(
                "{behind} of {n} simulated hosts did not reach version {version} within {timeout:?} \
                 ({} sync errors, last: {})",
                board.errors.load(Ordering::Relaxed),
                last.unwrap_or_else(|| "none".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn current_version(board: &Board, n: usize) -> u64 {
    board.slots[..n]
        .iter()
        .map(|s| s.version.load(Ordering::Acquire))
        .max()
        .unwrap_or(0)
}

/// A CA (or one replica of it) that simulated hosts sync from.
pub struct Target {
    pub url: String,
    pub fingerprint: String,
    pub pid: u32,
}

impl Target {
    pub fn of(ca: &LocalCa) -> Target {
        Target {
            url: ca.url.clone(),
            fingerprint: ca.fingerprint.clone(),
            pid: ca.pid(),
        }
    }
}

/// How the simulated hosts get their enrollment tokens.
enum Tokens {
    /// A single-use token per host, named exactly (what an admin does by hand).
    PerHost,
    /// One token for `*.DOMAIN` good for every host (an autoscaling group's way).
    Shared { token: String },
}

/// The group, users and grant every simulated host serves.
async fn prepare(admin: &Api) -> Result<()> {
    admin.group_add(SIM_GROUP).await?;
    for u in 0..4 {
        admin.user_add(&format!("sim{u}"), &[SIM_GROUP]).await?;
    }
    admin.grant_add(SIM_GROUP, SIM_TAGS, Level::Ssh).await?;
    Ok(())
}

/// Enrolls one host per name, `at_once` at a time; host `i` enrolls through
/// `admins[i % admins.len()]` (the replica it will sync from).
async fn enroll(
    admins: &[Api],
    names: Vec<HostName>,
    tokens: &Tokens,
    at_once: usize,
) -> Result<Vec<SimHost>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(at_once));
    let mut set = tokio::task::JoinSet::new();
    let n = names.len();
    for (i, name) in names.into_iter().enumerate() {
        let (admin, sem) = (admins[i % admins.len()].clone(), sem.clone());
        let shared = match tokens {
            Tokens::PerHost => None,
            Tokens::Shared { token } => Some(token.clone()),
        };
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, enroll_one(&admin, name, shared).await)
        });
    }
    let mut hosts: Vec<Option<SimHost>> = (0..n).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (i, h) = r.context("an enrollment task panicked")?;
        hosts[i] = Some(h.with_context(|| format!("enrolling simulated host {i}"))?);
        if (i + 1) % 2000 == 0 {
            progress(format!("propagation: {} hosts enrolled", i + 1));
        }
    }
    Ok(hosts.into_iter().flatten().collect())
}

/// What one measurement covers.
struct Plan<'a> {
    section: &'static str,
    /// Host `i` syncs from `targets[i % targets.len()]`; changes are made on the first.
    targets: &'a [Target],
    /// More processes whose CPU counts per change (PostgreSQL's).
    also_cpu: Option<&'a dyn Fn() -> f64>,
    admin: &'a Api,
    hosts: &'a [Arc<SimHost>],
    /// (hosts, changes) per stage.
    stages: Vec<(usize, usize)>,
    idle_secs: f64,
    /// How the figures name the hosts' spread ("" for one CA).
    spread: String,
}

struct StageResult {
    n: usize,
    lat_ms: Vec<f64>,
    admin_ms: Vec<f64>,
    ca_cpu_per_change: f64,
    db_cpu_per_change: Option<f64>,
}

/// Holding figures measured at the largest stage: the CAs' summed RSS and CPU.
struct Holding {
    rss: f64,
    cpu: f64,
}

fn sum_over(targets: &[Target], f: impl Fn(u32) -> Result<f64>) -> Result<f64> {
    targets.iter().map(|t| f(t.pid)).sum()
}

fn measure(rt: &tokio::runtime::Runtime, plan: &Plan) -> Result<(Vec<StageResult>, Holding)> {
    let max_n = plan.stages.iter().map(|s| s.0).max().unwrap_or(1);
    let board = Arc::new(Board {
        slots: (0..max_n).map(|_| Slot::default()).collect(),
        errors: AtomicU64::new(0),
        last_error: Mutex::new(None),
    });
    let mut results = Vec::new();
    let mut holding = Holding { rss: 0.0, cpu: 0.0 };
    for &(n, rounds) in &plan.stages {
        progress(format!(
            "propagation: {n} simulated host(s){}, {rounds} changes",
            plan.spread
        ));
        let r = rt.block_on(async {
            let mut tasks = Vec::new();
            for (i, h) in plan.hosts.iter().enumerate().take(n) {
                let t = &plan.targets[i % plan.targets.len()];
                // Every slot starts from scratch (a full snapshot) in each stage.
                board.slots[i].version.store(0, Ordering::Release);
                tasks.push(tokio::spawn(sync_loop(
                    i,
                    t.url.clone(),
                    t.fingerprint.clone(),
                    h.clone(),
                    board.clone(),
                )));
            }
            let connect = Duration::from_secs(120 + n as u64 / 50);
            all_at(&board, n, 1, connect).await?;
            // Let every loop re-issue its long poll.
            tokio::time::sleep(Duration::from_millis(500 + n as u64 / 10)).await;
            if n == max_n {
                let cpu0 = sum_over(plan.targets, cpu_secs)?;
                tokio::time::sleep(Duration::from_secs_f64(plan.idle_secs)).await;
                let cpu = (sum_over(plan.targets, cpu_secs)? - cpu0) / plan.idle_secs * 100.0;
                holding = Holding {
                    rss: sum_over(plan.targets, rss_mb)?,
                    cpu,
                };
            }
            let mut out = StageResult {
                n,
                lat_ms: Vec::new(),
                admin_ms: Vec::new(),
                ca_cpu_per_change: 0.0,
                db_cpu_per_change: plan.also_cpu.map(|_| 0.0),
            };
            let settle = Duration::from_secs(30 + n as u64 / 200);
            let (mut ca_cpu, mut db_cpu) = (0.0, 0.0);
            for _ in 0..rounds {
                let v = current_version(&board, n);
                all_at(&board, n, v, settle).await?;
                let c0 = sum_over(plan.targets, cpu_secs)?;
                let d0 = plan.also_cpu.map(|f| f()).unwrap_or(0.0);
                let t0 = mono_ns();
                plan.admin.member_remove(SIM_GROUP, SIM_USER).await?;
                out.admin_ms.push((mono_ns() - t0) as f64 / 1e6);
                all_at(&board, n, v + 1, settle).await?;
                ca_cpu += sum_over(plan.targets, cpu_secs)? - c0;
                db_cpu += plan.also_cpu.map(|f| f()).unwrap_or(0.0) - d0;
                for s in &board.slots[..n] {
                    out.lat_ms
                        .push(s.at_ns.load(Ordering::Acquire).saturating_sub(t0) as f64 / 1e6);
                }
                plan.admin.member_add(SIM_GROUP, SIM_USER).await?;
                all_at(&board, n, v + 2, settle).await?;
                tokio::time::sleep(Duration::from_millis(300 + n as u64 / 20)).await;
            }
            out.ca_cpu_per_change = ca_cpu / rounds as f64;
            if let Some(d) = out.db_cpu_per_change.as_mut() {
                *d = db_cpu / rounds as f64;
            }
            for t in tasks {
                t.abort();
            }
            anyhow::Ok(out)
        })?;
        results.push(r);
    }
    let errors = board.errors.load(Ordering::Relaxed);
    if errors > 0 {
        let last = board.last_error.lock().ok().and_then(|l| l.clone());
        progress(format!(
            "propagation{}: {errors} sync errors, last: {}",
            plan.spread,
            last.unwrap_or_default()
        ));
    }
    Ok((results, holding))
}

/// The p50 / p99 / max rows of every stage (target p99 ≤ 1 s from 1,000 hosts).
fn stage_figures(plan: &Plan, results: &[StageResult]) -> Vec<Figure> {
    let mut figs = Vec::new();
    for r in results {
        let s = stats(&r.lat_ms);
        let a = stats(&r.admin_ms);
        let (n, spread) = (r.n, &plan.spread);
        let base = ("remove-member API call p50 (incl. commit)", a.p50);
        figs.push(
            Figure::new(
                plan.section,
                format!("{n} simulated host(s){spread}: p50"),
                s.p50,
                "ms",
            )
            .baseline(base.0, base.1),
        );
        let db = r
            .db_cpu_per_change
            .map(|d| format!(", PostgreSQL {:.0} ms", d * 1e3))
            .unwrap_or_default();
        let mut p99 = Figure::new(
            plan.section,
            format!("{n} simulated host(s){spread}: p99"),
            s.p99,
            "ms",
        )
        .baseline(base.0, base.1)
        .note(format!(
            "{} samples, max {:.1} ms; CPU per change: CA {:.0} ms{db} (10 ms clock ticks)",
            s.n,
            s.max,
            r.ca_cpu_per_change * 1e3
        ));
        if n >= 1000 {
            p99 = p99.goal(Goal::AtMost(1000.0));
        }
        figs.push(p99);
        figs.push(Figure::new(
            plan.section,
            format!("{n} simulated host(s){spread}: max"),
            s.max,
            "ms",
        ));
    }
    figs
}

/// Part `propagation` against one CA: 1, 100 and 1,000 hosts, plus the CA's memory and
/// CPU while it holds 1,000 long polls.
pub fn run(ca: &LocalCa, quick: bool) -> Result<Vec<Figure>> {
    let rt = runtime()?;
    let admin = Api::new(&ca.url, &ca.fingerprint, &ca.admin_token)?;
    let stages: Vec<(usize, usize)> = if quick {
        vec![(1, 5), (100, 3), (1000, 2)]
    } else {
        vec![(1, 20), (100, 10), (1000, 6)]
    };
    let max_n = stages.iter().map(|s| s.0).max().unwrap_or(1);
    rt.block_on(prepare(&admin))?;
    progress(format!(
        "propagation: enrolling {max_n} simulated hosts (token + CSR + enroll each)"
    ));
    let t = Instant::now();
    let names = (0..max_n)
        .map(|i| HostName::new(&format!("sim{i:04}")))
        .collect::<Result<Vec<_>, _>>()?;
    let hosts: Vec<Arc<SimHost>> = rt
        .block_on(enroll(
            std::slice::from_ref(&admin),
            names,
            &Tokens::PerHost,
            8,
        ))?
        .into_iter()
        .map(Arc::new)
        .collect();
    let enroll_secs = t.elapsed().as_secs_f64();

    let pid = ca.pid();
    let idle_secs = if quick { 3.0 } else { 10.0 };
    let rss_idle = rss_mb(pid)?;
    let cpu0 = cpu_secs(pid)?;
    std::thread::sleep(Duration::from_secs_f64(idle_secs));
    let cpu_idle_none = (cpu_secs(pid)? - cpu0) / idle_secs * 100.0;

    let targets = [Target::of(ca)];
    let plan = Plan {
        section: SECTION,
        targets: &targets,
        also_cpu: None,
        admin: &admin,
        hosts: &hosts,
        stages,
        idle_secs,
        spread: String::new(),
    };
    let (results, holding) = measure(&rt, &plan)?;
    let mut figs = stage_figures(&plan, &results);
    figs.push(
        Figure::new(
            SECTION,
            format!("CA RSS holding {max_n} long-polling hosts"),
            holding.rss,
            "MB",
        )
        .baseline("CA RSS, no host connected", rss_idle),
    );
    figs.push(
        Figure::new(
            SECTION,
            format!("CA CPU holding {max_n} hosts, idle ({idle_secs:.0} s)"),
            holding.cpu,
            "%",
        )
        .baseline("CA idle, no host connected", cpu_idle_none)
        .note("% of one core; each host re-polls every 25 s"),
    );
    figs.push(
        Figure::new(
            SECTION,
            "enrollment (token + CSR + enroll)",
            max_n as f64 / enroll_secs,
            "hosts/s",
        )
        .note(format!("{max_n} hosts in {enroll_secs:.1} s, 8 at a time")),
    );
    Ok(figs)
}

/// Part `propagation` over replicas (issue 19): `replicas` serving one PostgreSQL
/// database, 1,000 and 10,000 simulated hosts spread evenly over them, every change
/// made on the first replica. The other replicas learn of it from the database (NOTIFY,
/// then reading the change log), so the figure covers the whole path between replicas.
pub fn run_replicas(
    replicas: &[LocalCa],
    db_cpu: &dyn Fn() -> f64,
    quick: bool,
) -> Result<Vec<Figure>> {
    let rt = runtime()?;
    let first = replicas.first().context("no replica")?;
    let admins = replicas
        .iter()
        .map(|c| Api::new(&c.url, &c.fingerprint, &c.admin_token))
        .collect::<Result<Vec<_>>>()?;
    let stages: Vec<(usize, usize)> = if quick {
        vec![(1000, 2), (10_000, 1)]
    } else {
        vec![(1000, 6), (10_000, 4)]
    };
    let max_n = stages.iter().map(|s| s.0).max().unwrap_or(1);
    let domain = "sim.bench.example";
    let token = rt.block_on(async {
        prepare(&admins[0]).await?;
        admins[0]
            .shared_host_token(SIM_TAGS, &format!("*.{domain}"), max_n as u32)
            .await
    })?;
    let k = replicas.len();
    progress(format!(
        "propagation: enrolling {max_n} simulated hosts over {k} replicas (one token for *.{domain})"
    ));
    let t = Instant::now();
    let names = (0..max_n)
        .map(|i| HostName::new(&format!("h{i:05}.{domain}")))
        .collect::<Result<Vec<_>, _>>()?;
    let hosts: Vec<Arc<SimHost>> = rt
        .block_on(enroll(&admins, names, &Tokens::Shared { token }, 16))?
        .into_iter()
        .map(Arc::new)
        .collect();
    let enroll_secs = t.elapsed().as_secs_f64();
    let targets: Vec<Target> = replicas.iter().map(Target::of).collect();
    let plan = Plan {
        section: SECTION,
        targets: &targets,
        also_cpu: Some(db_cpu),
        admin: &admins[0],
        hosts: &hosts,
        stages,
        idle_secs: if quick { 3.0 } else { 10.0 },
        spread: format!(" over {k} PostgreSQL replicas"),
    };
    let (results, holding) = measure(&rt, &plan)?;
    let mut figs = stage_figures(&plan, &results);
    figs.push(
        Figure::new(
            SECTION,
            format!("CA RSS holding {max_n} hosts, sum of {k} replicas"),
            holding.rss,
            "MB",
        )
        .note(format!(
            "{} hosts per replica; idle CPU of the replicas together: {:.1} % of one core",
            max_n / k,
            holding.cpu
        )),
    );
    figs.push(
        Figure::new(
            SECTION,
            format!("enrollment over {k} PostgreSQL replicas"),
            max_n as f64 / enroll_secs,
            "hosts/s",
        )
        .note(format!(
            "{max_n} hosts in {enroll_secs:.1} s, 16 at a time, first: {}",
            first.url
        )),
    );
    Ok(figs)
}
