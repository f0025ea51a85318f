//! Part `propagation` (simulated hosts): from `group remove-member` at the CA until each
//! of N = 1, 100, 1000 hosts has received the sync response carrying the new version,
//! plus the CA's memory and CPU while it holds 1,000 long-polling hosts.
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

async fn enroll_one(admin: &Api, name: HostName) -> Result<SimHost> {
    let token = admin.host_token(SIM_TAGS, &name).await?;
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

/// Enrolls `n` hosts, 8 at a time.
async fn enroll(admin: &Api, n: usize) -> Result<Vec<SimHost>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (admin, sem) = (admin.clone(), sem.clone());
        let name = HostName::new(&format!("sim{i:04}"))?;
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, enroll_one(&admin, name).await)
        });
    }
    let mut hosts: Vec<Option<SimHost>> = (0..n).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (i, h) = r.context("an enrollment task panicked")?;
        hosts[i] = Some(h.with_context(|| format!("enrolling simulated host {i}"))?);
    }
    Ok(hosts.into_iter().flatten().collect())
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

struct StageResult {
    n: usize,
    lat_ms: Vec<f64>,
    admin_ms: Vec<f64>,
    ca_cpu_per_change: f64,
}

pub fn run(ca: &LocalCa, quick: bool) -> Result<Vec<Figure>> {
    let rt = runtime()?;
    let admin = Api::new(&ca.url, &ca.fingerprint, &ca.admin_token)?;
    let stages: Vec<(usize, usize)> = if quick {
        vec![(1, 5), (100, 3), (1000, 2)]
    } else {
        vec![(1, 20), (100, 10), (1000, 6)]
    };
    let max_n = stages.iter().map(|s| s.0).max().unwrap_or(1);
    rt.block_on(async {
        admin.group_add(SIM_GROUP).await?;
        for u in 0..4 {
            admin.user_add(&format!("sim{u}"), &[SIM_GROUP]).await?;
        }
        admin.grant_add(SIM_GROUP, SIM_TAGS, Level::Ssh).await?;
        anyhow::Ok(())
    })?;
    progress(format!(
        "propagation: enrolling {max_n} simulated hosts (token + CSR + enroll each)"
    ));
    let t = Instant::now();
    let hosts: Vec<Arc<SimHost>> = rt
        .block_on(enroll(&admin, max_n))?
        .into_iter()
        .map(Arc::new)
        .collect();
    let enroll_secs = t.elapsed().as_secs_f64();
    let board = Arc::new(Board {
        slots: (0..max_n).map(|_| Slot::default()).collect(),
        errors: AtomicU64::new(0),
        last_error: Mutex::new(None),
    });

    let pid = ca.pid();
    let idle_secs = if quick { 3.0 } else { 10.0 };
    let rss_idle = rss_mb(pid)?;
    let cpu0 = cpu_secs(pid)?;
    std::thread::sleep(Duration::from_secs_f64(idle_secs));
    let cpu_idle_none = (cpu_secs(pid)? - cpu0) / idle_secs * 100.0;

    let mut results = Vec::new();
    let mut holding: Option<(f64, f64)> = None;
    for &(n, rounds) in &stages {
        progress(format!(
            "propagation: {n} simulated host(s), {rounds} changes"
        ));
        let r = rt.block_on(async {
            let mut tasks = Vec::new();
            for (i, h) in hosts.iter().enumerate().take(n) {
                // Every slot starts from scratch (a full snapshot) in each stage.
                board.slots[i].version.store(0, Ordering::Release);
                tasks.push(tokio::spawn(sync_loop(
                    i,
                    ca.url.clone(),
                    ca.fingerprint.clone(),
                    h.clone(),
                    board.clone(),
                )));
            }
            all_at(&board, n, 1, Duration::from_secs(120)).await?;
            // Let every loop re-issue its long poll.
            tokio::time::sleep(Duration::from_millis(500)).await;
            if n == max_n {
                let cpu0 = cpu_secs(pid)?;
                tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
                let cpu = (cpu_secs(pid)? - cpu0) / idle_secs * 100.0;
                holding = Some((rss_mb(pid)?, cpu));
            }
            let mut out = StageResult {
                n,
                lat_ms: Vec::new(),
                admin_ms: Vec::new(),
                ca_cpu_per_change: 0.0,
            };
            let mut ca_cpu = 0.0;
            for _ in 0..rounds {
                let v = current_version(&board, n);
                all_at(&board, n, v, Duration::from_secs(30)).await?;
                let c0 = cpu_secs(pid)?;
                let t0 = mono_ns();
                admin.member_remove(SIM_GROUP, SIM_USER).await?;
                out.admin_ms.push((mono_ns() - t0) as f64 / 1e6);
                all_at(&board, n, v + 1, Duration::from_secs(30)).await?;
                ca_cpu += cpu_secs(pid)? - c0;
                for s in &board.slots[..n] {
                    out.lat_ms
                        .push(s.at_ns.load(Ordering::Acquire).saturating_sub(t0) as f64 / 1e6);
                }
                admin.member_add(SIM_GROUP, SIM_USER).await?;
                all_at(&board, n, v + 2, Duration::from_secs(30)).await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            out.ca_cpu_per_change = ca_cpu / rounds as f64;
            for t in tasks {
                t.abort();
            }
            anyhow::Ok(out)
        })?;
        results.push(r);
    }
    let errors = board.errors.load(Ordering::Relaxed);

    let mut figs = Vec::new();
    for r in &results {
        let s = stats(&r.lat_ms);
        let a = stats(&r.admin_ms);
        let n = r.n;
        let base = ("remove-member API call p50 (incl. commit)", a.p50);
        figs.push(
            Figure::new(SECTION, format!("{n} simulated host(s): p50"), s.p50, "ms")
                .baseline(base.0, base.1),
        );
        let mut p99 = Figure::new(SECTION, format!("{n} simulated host(s): p99"), s.p99, "ms")
            .baseline(base.0, base.1)
            .note(format!(
                "{} samples, max {:.1} ms; CA CPU {:.0} ms per change (10 ms clock ticks)",
                s.n,
                s.max,
                r.ca_cpu_per_change * 1e3
            ));
        if n >= 1000 {
            p99 = p99.goal(Goal::AtMost(1000.0));
        }
        figs.push(p99);
        figs.push(Figure::new(
            SECTION,
            format!("{n} simulated host(s): max"),
            s.max,
            "ms",
        ));
    }
    if let Some((rss, cpu)) = holding {
        figs.push(
            Figure::new(
                SECTION,
                format!("CA RSS holding {max_n} long-polling hosts"),
                rss,
                "MB",
            )
            .baseline("CA RSS, no host connected", rss_idle),
        );
        figs.push(
            Figure::new(
                SECTION,
                format!("CA CPU holding {max_n} hosts, idle ({idle_secs:.0} s)"),
                cpu,
                "%",
            )
            .baseline("CA idle, no host connected", cpu_idle_none)
            .note("% of one core; each host re-polls every 25 s"),
        );
    }
    figs.push(
        Figure::new(SECTION, "enrollment (token + CSR + enroll)", max_n as f64 / enroll_secs, "hosts/s")
            .note(format!("{max_n} hosts in {enroll_secs:.1} s, 8 at a time; {errors} sync errors during the part")),
    );
    Ok(figs)
}
