//! Part `ca` (replicas): issuance at 64 clients, durable, with 1, 2 and 3 `smith-ca
//! serve` replicas on one PostgreSQL database, against the embedded SQLite CA, in the
//! same run; and part `propagation` (replicas): a removal made on one replica until
//! simulated hosts long-polling every replica hold it.
//!
//! The PostgreSQL server is Debian's, started by the test kit in the bench's work
//! directory (its own socket, fsync on). Each setup is its own CA (a fresh database, or
//! a fresh data directory) with the same 64 users; the setups are measured in
//! alternating rounds (this machine has slow spells) and each figure is the median of
//! its rounds. Clients are spread evenly over the replicas (as a load balancer does).
//! Afterwards each database must hold a certificate row for every certificate answered.
//!
//! Must never: count a non-200 answer, or leave a server behind (the CAs stop when
//! dropped; the PostgreSQL server dies with this process).

use super::api::Api;
use super::issuance::{bench_request, issuers, level};
use super::localca::{count_rows, LocalCa};
use super::report::{Figure, Goal};
use super::util::{cpu_secs, progress, runtime};
use anyhow::{Context, Result};
use smith_tests::pg::PgServer;
use std::path::Path;
use std::time::Duration;

const SECTION: &str = "CA replicas (PostgreSQL)";
const CLIENTS: usize = 64;
const TARGET_PER_SEC: f64 = 5000.0;

struct Setup {
    label: String,
    replicas: Vec<LocalCa>,
    apis: Vec<Api>,
    tokens: Vec<String>,
    /// The database, when on PostgreSQL.
    db: Option<String>,
    rates: Vec<f64>,
    answered: usize,
    errors: usize,
    /// CPU seconds over the measured rounds: the CA replicas, PostgreSQL, this load
    /// generator; and the certificates they cover.
    cpu: (f64, f64, f64),
    measured: usize,
}

/// Replicas serving the propagation part's simulated hosts.
const PROPAGATION_REPLICAS: usize = 3;

/// Part `propagation` over replicas: a fresh database, three replicas, and
/// [`super::propagation::run_replicas`] with 1,000 and 10,000 hosts spread over them.
pub fn propagation(release: &Path, work: &Path, quick: bool) -> Result<Vec<Figure>> {
    progress("propagation (replicas): starting PostgreSQL");
    let pg =
        PgServer::start().context("starting PostgreSQL (is the postgresql package installed?)")?;
    let url = pg.create_database();
    let dir = work.join("propagation-pg");
    let first = LocalCa::start_with(release, &dir.join("r0"), &["--database", &url], &[])?;
    let mut replicas = vec![first];
    for r in 1..PROPAGATION_REPLICAS {
        let rep = replicas[0].replica(release, &dir.join(format!("r{r}")))?;
        replicas.push(rep);
    }
    let pg_pid = pg.pid().unwrap_or(0);
    let db_cpu = move || tree_cpu(pg_pid);
    let figs = super::propagation::run_replicas(&replicas, &db_cpu, quick);
    drop(replicas);
    pg.stop_immediate();
    figs
}

/// CPU seconds of `pid` and its children (the postmaster and its backends).
fn tree_cpu(pid: u32) -> f64 {
    let mut total = cpu_secs(pid).unwrap_or(0.0);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let ppid = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                });
            if ppid == Some(pid) {
                total += cpu_secs(p).unwrap_or(0.0);
            }
        }
    }
    total
}

pub fn run(release: &Path, work: &Path, quick: bool) -> Result<Vec<Figure>> {
    let rt = runtime()?;
    progress("replicas: starting PostgreSQL");
    let pg =
        PgServer::start().context("starting PostgreSQL (is the postgresql package installed?)")?;
    let req = bench_request(work)?;
    let mut setups = Vec::new();
    {
        let ca = LocalCa::start(release, &work.join("embedded"))?;
        let api = Api::new(&ca.url, &ca.fingerprint, &ca.admin_token)?;
        let tokens = issuers(&rt, &api)?;
        setups.push(Setup {
            label: "embedded SQLite, 1 CA".into(),
            replicas: vec![ca],
            apis: vec![api],
            tokens,
            db: None,
            rates: vec![],
            answered: 0,
            errors: 0,
            cpu: (0.0, 0.0, 0.0),
            measured: 0,
        });
    }
    for n in 1..=3usize {
        let url = pg.create_database();
        let dir = work.join(format!("pg{n}"));
        let first = LocalCa::start_with(release, &dir.join("r0"), &["--database", &url], &[])?;
        let mut replicas = vec![first];
        for r in 1..n {
            let rep = replicas[0].replica(release, &dir.join(format!("r{r}")))?;
            replicas.push(rep);
        }
        let apis = replicas
            .iter()
            .map(|c| Api::new(&c.url, &c.fingerprint, &c.admin_token))
            .collect::<Result<Vec<_>>>()?;
        let tokens = issuers(&rt, &apis[0])?;
        // Every replica has followed the users before the clock starts.
        std::thread::sleep(Duration::from_secs(2));
        setups.push(Setup {
            label: format!("PostgreSQL, {n} replica{}", if n > 1 { "s" } else { "" }),
            replicas,
            apis,
            tokens,
            db: Some(PgServer::db_of(&url)),
            rates: vec![],
            answered: 0,
            errors: 0,
            cpu: (0.0, 0.0, 0.0),
            measured: 0,
        });
    }
    let dur = Duration::from_secs_f64(if quick { 2.0 } else { 5.0 });
    let rounds = if quick { 2 } else { 3 };
    for round in 0..rounds {
        for s in setups.iter_mut() {
            progress(format!(
                "replicas: round {}: {} at {CLIENTS} clients for {dur:?}",
                round + 1,
                s.label
            ));
            let per = CLIENTS / s.replicas.len();
            let extra = CLIENTS % s.replicas.len();
            let pg_pid = pg.pid().unwrap_or(0);
            let pg0 = tree_cpu(pg_pid);
            let runs = rt.block_on(async {
                let mut tasks = Vec::new();
                for (i, (api, ca)) in s.apis.iter().zip(&s.replicas).enumerate() {
                    let clients = per + usize::from(i < extra);
                    // Each replica's clients are distinct users.
                    let tokens: Vec<String> = s
                        .tokens
                        .iter()
                        .skip(i)
                        .step_by(s.replicas.len())
                        .cloned()
                        .collect();
                    let (api, req, pid) = (api.clone(), req.clone(), ca.pid());
                    tasks.push(tokio::spawn(async move {
                        level(&api, &tokens, req, clients, dur, pid).await
                    }));
                }
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.context("an issuance level panicked")?);
                }
                anyhow::Ok(out)
            })?;
            let pg_used = tree_cpu(pg_pid) - pg0;
            let mut ok = 0usize;
            let mut elapsed: f64 = 0.0;
            let mut gen: f64 = 0.0;
            for r in runs {
                let r = r?;
                ok += r.ok;
                s.cpu.0 += r.ca_cpu;
                gen = gen.max(r.gen_cpu);
                s.answered += r.ok + r.warm_ok;
                s.errors += r.errors;
                elapsed = elapsed.max(r.elapsed);
                if let Some(e) = r.first_error {
                    progress(format!(
                        "replicas: {}: {} errors, first: {e}",
                        s.label, r.errors
                    ));
                }
            }
            if s.db.is_some() {
                s.cpu.1 += pg_used;
            }
            s.cpu.2 += gen;
            s.measured += ok;
            s.rates.push(ok as f64 / elapsed.max(1e-9));
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let base = median(&setups[0].rates);
    let mut figs = Vec::new();
    for s in &setups {
        let rate = median(&s.rates);
        let rows = match &s.db {
            Some(db) => {
                let out = pg.psql(db, "SELECT count(*) FROM certificates");
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .find_map(|l| l.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            }
            None => count_rows(&s.replicas[0].db(), "certificates")?,
        };
        let mut f =
            Figure::new(
                SECTION,
                format!("certificates/s, {CLIENTS} clients, {}", s.label),
                rate,
                "/s",
            )
            .note(format!(
            "median of {rounds} rounds {:?}; {} errors; {rows} certificate rows for {} answered; \
             CPU per certificate: CA {:.0} µs, PostgreSQL {:.0} µs, load generator {:.0} µs \
             (the machine has {} µs of CPU per second)",
            s.rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
            s.errors,
            s.answered,
            s.cpu.0 / s.measured.max(1) as f64 * 1e6,
            s.cpu.1 / s.measured.max(1) as f64 * 1e6,
            s.cpu.2 / s.measured.max(1) as f64 * 1e6,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) * 1_000_000
        ));
        if s.db.is_some() {
            f = f.baseline("embedded SQLite, same run", base);
            if s.replicas.len() == 2 {
                f = f.goal(Goal::AtLeast(TARGET_PER_SEC));
            }
        }
        figs.push(f);
        figs.push(
            Figure::new(
                SECTION,
                format!("certificates stored / answered, {}", s.label),
                rows as f64 / s.answered.max(1) as f64,
                "",
            )
            .goal(Goal::AtLeast(1.0)),
        );
    }
    drop(setups);
    pg.stop_immediate();
    Ok(figs)
}
