//! Part `ca`: certificate issuance over HTTPS against `ssh-keygen -s`.
//!
//! 64 users with a grant and a token each; for 1, 16 and 64 concurrent clients, each
//! client is a different user (as on a morning when engineers sign in) and a tokio task
//! with its own keep-alive connection (smith-api's async client) sending
//! `POST /v1/certs/user` back to back for a fixed time. Certificates per second and the
//! per-request latency (p50/p99) are recorded, with the CPU time the CA and this load
//! generator used. Afterwards the `certificates` rows in the CA's SQLite must equal the
//! certificates answered (each issuance durably recorded before its response). Baseline:
//! `ssh-keygen -s` run once per certificate, sequentially, with an Ed25519 CA key (the
//! CA's default algorithm), in the same run.
//!
//! The front door: one client issuing from 127.0.0.1 while another address (127.0.0.2)
//! holds 1,000 idle connections that never send a byte (a slow-client flood), against
//! the same client with none held, in alternating rounds of the same run. The CA keeps
//! each address to its connection cap and closes the rest, so the flood costs the
//! issuing client nothing measurable (issue 12, H3).
//!
//! CA keys in a token (issue 23): the 64-client level again against a second CA whose
//! user and host CA keys live in a fresh SoftHSM2 token (PKCS#11), beside the file
//! signer's figure of the same run; its certificates are counted in its SQLite too.
//!
//! Must never: count a failed or non-200 answer as a certificate.

use super::api::{client, Api};
use super::localca::{count_rows, LocalCa};
use super::report::{Figure, Goal};
use super::util::{cpu_secs, progress, runtime, self_cpu_secs, stats};
use anyhow::{bail, Context, Result};
use smith_api::CertRequest;
use smith_proto::{Level, Tags};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECTION: &str = "CA issuance";
const TARGET_PER_SEC: f64 = 5000.0;
/// Issue 23: with the CA keys in SoftHSM2, at 64 clients, durable.
const HSM_TARGET_PER_SEC: f64 = 2000.0;
/// Distinct users issuing (client i is user i mod USERS).
const USERS: usize = 64;
/// Idle connections the flooding address opens in the front-door rounds.
const IDLE: usize = 1000;

/// `n` TCP connections to `ca` from 127.0.0.2 that never send anything (those the CA
/// closes at once, past its per-source cap, are simply held closed).
fn idle_connections(ca: std::net::SocketAddr, n: usize) -> Result<Vec<std::net::TcpStream>> {
    use socket2::{Domain, Socket, Type};
    let from = std::net::SocketAddr::from(([127, 0, 0, 2], 0));
    (0..n)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            s.bind(&from.into())?;
            s.connect(&ca.into())?;
            Ok(s.into())
        })
        .collect::<std::io::Result<_>>()
        .context("opening the idle connections")
}

pub(super) struct LevelRun {
    pub clients: usize,
    pub ok: usize,
    pub warm_ok: usize,
    pub errors: usize,
    pub elapsed: f64,
    pub lat_us: Vec<f64>,
    pub ca_cpu: f64,
    pub gen_cpu: f64,
    pub first_error: Option<String>,
}

/// One level: `clients` tasks issuing until `dur` has passed.
pub(super) async fn level(
    api: &Api,
    user_tokens: &[String],
    req: Arc<CertRequest>,
    clients: usize,
    dur: Duration,
    ca_pid: u32,
) -> Result<LevelRun> {
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let token = &user_tokens[i % user_tokens.len()];
        let user = client(&api.base, &api.fingerprint, Some(token), None)?;
        let (req, barrier) = (req.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let one = || async {
                let c = user.issue_cert(&req).await.map_err(|e| e.to_string())?;
                if !c.certificate.starts_with("ssh-") {
                    return Err(format!("not a certificate: {}", c.certificate));
                }
                Ok::<(), String>(())
            };
            // Warm-up: the TLS handshake and the keep-alive connection.
            let warm = one().await;
            barrier.wait().await;
            let deadline = Instant::now() + dur;
            let warm_ok = warm.is_ok();
            let (mut lat, mut errors, mut first_error) = (Vec::new(), 0usize, warm.err());
            while Instant::now() < deadline {
                let t = Instant::now();
                match one().await {
                    Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1e6),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, errors, first_error, warm_ok)
        }));
    }
    barrier.wait().await;
    let (ca0, gen0, t0) = (cpu_secs(ca_pid)?, self_cpu_secs(), Instant::now());
    let mut out = LevelRun {
        clients,
        ok: 0,
        warm_ok: 0,
        errors: 0,
        elapsed: 0.0,
        lat_us: Vec::new(),
        ca_cpu: 0.0,
        gen_cpu: 0.0,
        first_error: None,
    };
    for t in tasks {
        let (lat, errors, first_error, warm_ok) = t.await.context("an issuance task panicked")?;
        out.warm_ok += usize::from(warm_ok);
        out.ok += lat.len();
        out.lat_us.extend(lat);
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
    }
    out.elapsed = t0.elapsed().as_secs_f64();
    out.ca_cpu = cpu_secs(ca_pid)? - ca0;
    out.gen_cpu = self_cpu_secs() - gen0;
    Ok(out)
}

/// `ssh-keygen -s` once per certificate, sequentially: (certs/s, latencies in µs).
fn keygen_baseline(work: &Path, runs: usize) -> Result<(f64, Vec<f64>)> {
    let dir = work.join("keygen");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for k in ["ca", "user"] {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", k, "-f"])
            .arg(dir.join(k))
            .status()
            .context("running ssh-keygen")?;
        if !st.success() {
            bail!("ssh-keygen -t ed25519 failed");
        }
    }
    let mut lat = Vec::with_capacity(runs);
    let t0 = Instant::now();
    for i in 0..runs {
        let t = Instant::now();
        let st = Command::new("ssh-keygen")
            .arg("-q")
            .arg("-s")
            .arg(dir.join("ca"))
            .args([
                "-I",
                &format!("bench:ivan:{i}"),
                "-n",
                "ivan",
                "-V",
                "-5m:+1h",
                "-z",
                &(i + 1).to_string(),
            ])
            .arg(dir.join("user.pub"))
            .status()
            .context("running ssh-keygen -s")?;
        if !st.success() {
            bail!("ssh-keygen -s failed");
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok((runs as f64 / t0.elapsed().as_secs_f64(), lat))
}

/// The issuing users (a group with a grant on `env=bench`, [`USERS`] users with a token
/// each) made through `admin`: their tokens.
pub(super) fn issuers(rt: &tokio::runtime::Runtime, admin: &Api) -> Result<Vec<String>> {
    rt.block_on(async {
        admin.group_add("issuers").await?;
        admin.grant_add("issuers", "env=bench", Level::Ssh).await?;
        let mut tokens = Vec::with_capacity(USERS);
        for i in 0..USERS {
            let name = format!("ivan{i:02}");
            admin.user_add(&name, &["issuers"]).await?;
            tokens.push(admin.user_token(&name).await?);
        }
        anyhow::Ok(tokens)
    })
}

/// Debian's SoftHSM2 PKCS#11 module.
const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A CA whose user and host CA keys live in a fresh SoftHSM2 token under `work/hsm`.
fn start_hsm_ca(bin_dir: &Path, work: &Path) -> Result<LocalCa> {
    if !Path::new(SOFTHSM_MODULE).exists() {
        bail!(
            "{SOFTHSM_MODULE} is missing: apt-get install softhsm2 (cargo xtask test installs it)"
        );
    }
    let dir = work.join("hsm");
    let _ = std::fs::remove_dir_all(&dir);
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    let pin = dir.join("pin");
    std::fs::write(&pin, "bench-pin\n")?;
    let st = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            "bench-so",
            "--pin",
            "bench-pin",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running softhsm2-util")?;
    if !st.success() {
        bail!("softhsm2-util --init-token failed");
    }
    let uri = |object: &str| {
        format!(
            "pkcs11:token=bench;object={object}?module-path={SOFTHSM_MODULE}&pin-source=file:{}",
            pin.display()
        )
    };
    let (u, h) = (uri("smith-user-ca"), uri("smith-host-ca"));
    LocalCa::start_with(
        bin_dir,
        &dir,
        &[
            "--user-ca",
            &u,
            "--host-ca",
            &h,
            "--user-ca-algorithm",
            "ecdsa-p256",
        ],
        &[("SOFTHSM2_CONF", conf.as_path())],
    )
}

/// The request every client sends: a fresh Ed25519 public key (made in `work`) for
/// `env=bench`, an hour.
pub(super) fn bench_request(work: &Path) -> Result<Arc<CertRequest>> {
    // The subject key: an Ed25519 public key line, as `smith cert` sends.
    let key = work.join("issue_key");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(work.join("issue_key.pub"));
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
        .arg(&key)
        .status()
        .context("running ssh-keygen")?;
    if !st.success() {
        bail!("ssh-keygen failed");
    }
    let public_key = std::fs::read_to_string(work.join("issue_key.pub"))?
        .trim()
        .to_string();
    Ok(Arc::new(CertRequest {
        public_key,
        scope: Tags::parse("env=bench").map_err(|e| anyhow::anyhow!("{e}"))?,
        ttl_secs: 3600,
        reason: None,
        oidc_nonce: None,
    }))
}

pub fn run(ca: &LocalCa, bin_dir: &Path, work: &Path, quick: bool) -> Result<Vec<Figure>> {
    let rt = runtime()?;
    let admin = Api::new(&ca.url, &ca.fingerprint, &ca.admin_token)?;
    let tokens = issuers(&rt, &admin)?;
    let req = bench_request(work)?;
    let rows_before = count_rows(&ca.db(), "certificates")?;
    let dur = Duration::from_secs_f64(if quick { 2.0 } else { 6.0 });
    let mut levels = Vec::new();
    let mut answered = 0usize;
    for clients in [1usize, 16, 64] {
        progress(format!(
            "ca: {clients} concurrent client(s) for {:.0?}",
            dur
        ));
        let l = rt.block_on(level(&admin, &tokens, req.clone(), clients, dur, ca.pid()))?;
        // The warm-up certificates are recorded like any other.
        answered += l.ok + l.warm_ok;
        if l.errors > 0 {
            progress(format!(
                "ca: {} errors at {clients} clients, first: {}",
                l.errors,
                l.first_error.as_deref().unwrap_or("?")
            ));
        }
        levels.push(l);
    }
    // The front door: quiet and flooded rounds, alternating.
    let ca_addr: std::net::SocketAddr = ca
        .url
        .trim_start_matches("https://")
        .parse()
        .context("the local CA's address")?;
    let (mut quiet, mut flooded, mut flood_errors) = (Vec::new(), Vec::new(), 0usize);
    let round = Duration::from_secs_f64(if quick { 1.0 } else { 2.0 });
    for r in 0..if quick { 2 } else { 3 } {
        progress(format!(
            "ca: front door round {}: 1 client, then the same with {IDLE} idle connections open",
            r + 1
        ));
        let l = rt.block_on(level(&admin, &tokens, req.clone(), 1, round, ca.pid()))?;
        answered += l.ok + l.warm_ok;
        quiet.extend(l.lat_us);
        let held = idle_connections(ca_addr, IDLE)?;
        std::thread::sleep(Duration::from_millis(200));
        let l = rt.block_on(level(&admin, &tokens, req.clone(), 1, round, ca.pid()))?;
        answered += l.ok + l.warm_ok;
        flood_errors += l.errors + (l.clients - l.warm_ok);
        flooded.extend(l.lat_us);
        drop(held);
    }
    // The same 64 clients against a CA whose keys are in a SoftHSM2 token (the file
    // signer's figure above is its baseline, same run).
    progress(format!(
        "ca: SoftHSM2 signer, 64 concurrent clients for {dur:.0?}"
    ));
    let hsm = (|| {
        let hca = start_hsm_ca(bin_dir, work)?;
        let hadmin = Api::new(&hca.url, &hca.fingerprint, &hca.admin_token)?;
        let htokens = issuers(&rt, &hadmin)?;
        let before = count_rows(&hca.db(), "certificates")?;
        let l = rt.block_on(level(&hadmin, &htokens, req.clone(), 64, dur, hca.pid()))?;
        let recorded = count_rows(&hca.db(), "certificates")? - before;
        anyhow::Ok((l, recorded))
    })();
    let keygen_runs = if quick { 100 } else { 300 };
    progress(format!("ca: baseline, ssh-keygen -s x {keygen_runs}"));
    let (kg_rate, kg_lat) = keygen_baseline(work, keygen_runs)?;
    let kg = stats(&kg_lat);
    let rows_after = count_rows(&ca.db(), "certificates")?;
    let recorded = rows_after - rows_before;

    let mut figs = Vec::new();
    for l in &levels {
        let rate = l.ok as f64 / l.elapsed;
        let s = stats(&l.lat_us);
        let c = l.clients;
        let mut f = Figure::new(SECTION, format!("certificates/s, {c} client(s)"), rate, "/s")
            .baseline("ssh-keygen -s per cert", kg_rate)
            .note(format!(
                "{} certs in {:.1} s, {} errors; CPU: CA {:.0} µs/cert, load generator {:.0} µs/cert (same 2 cores)",
                l.ok,
                l.elapsed,
                l.errors,
                l.ca_cpu / l.ok.max(1) as f64 * 1e6,
                l.gen_cpu / l.ok.max(1) as f64 * 1e6
            ));
        if c == 1 {
            f.note
                .push_str("; sequential: every certificate waits for its own fsync");
        } else {
            f = f.goal(Goal::AtLeast(TARGET_PER_SEC));
        }
        figs.push(f);
        figs.push(
            Figure::new(
                SECTION,
                format!("latency p50, {c} client(s)"),
                s.p50 / 1000.0,
                "ms",
            )
            .baseline("ssh-keygen -s p50", kg.p50 / 1000.0),
        );
        figs.push(
            Figure::new(
                SECTION,
                format!("latency p99, {c} client(s)"),
                s.p99 / 1000.0,
                "ms",
            )
            .baseline("ssh-keygen -s p99", kg.p99 / 1000.0),
        );
    }
    let (q, f) = (stats(&quiet), stats(&flooded));
    for (what, a, b) in [("p50", q.p50, f.p50), ("p99", q.p99, f.p99)] {
        figs.push(
            Figure::new(
                SECTION,
                format!("latency {what}, 1 client, {IDLE} idle connections open elsewhere"),
                b / 1000.0,
                "ms",
            )
            .baseline("none open", a / 1000.0)
            .note(format!(
                "{} vs {} certificates in alternating rounds; {flood_errors} errors while flooded",
                flooded.len(),
                quiet.len()
            )),
        );
    }
    let file64 = levels
        .iter()
        .find(|l| l.clients == 64)
        .map(|l| l.ok as f64 / l.elapsed)
        .unwrap_or(0.0);
    match hsm {
        Ok((l, recorded)) => {
            let answered = l.ok + l.warm_ok;
            let s = stats(&l.lat_us);
            figs.push(
                Figure::new(
                    SECTION,
                    "certificates/s, 64 clients, CA keys in SoftHSM2 (PKCS#11)",
                    l.ok as f64 / l.elapsed,
                    "/s",
                )
                .baseline("file signer, 64 clients", file64)
                .goal(Goal::AtLeast(HSM_TARGET_PER_SEC))
                .note(format!(
                    "{} certs in {:.1} s, {} errors{}; p50 {:.2} ms, p99 {:.2} ms; CPU: CA {:.0} µs/cert; {recorded} recorded for {answered} answered",
                    l.ok,
                    l.elapsed,
                    l.errors,
                    l.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
                    s.p50 / 1000.0,
                    s.p99 / 1000.0,
                    l.ca_cpu / l.ok.max(1) as f64 * 1e6,
                )),
            );
            figs.push(
                Figure::new(
                    SECTION,
                    "SoftHSM2 CA: certificates in SQLite / answered",
                    recorded as f64 / answered.max(1) as f64,
                    "",
                )
                .goal(Goal::AtLeast(1.0)),
            );
        }
        Err(e) => {
            progress(format!("ca: the SoftHSM2 run failed: {e:#}"));
            figs.push(
                Figure::new(
                    SECTION,
                    "certificates/s, 64 clients, CA keys in SoftHSM2 (PKCS#11)",
                    0.0,
                    "/s",
                )
                .baseline("file signer, 64 clients", file64)
                .goal(Goal::AtLeast(HSM_TARGET_PER_SEC))
                .note(format!("the run failed: {e:#}")),
            );
        }
    }
    figs.push(
        Figure::new(SECTION, "certificates in SQLite / answered", recorded as f64 / answered.max(1) as f64, "")
            .goal(Goal::AtLeast(1.0))
            .note(format!(
                "{recorded} rows added to `certificates` for {answered} certificates answered (warm-ups included)"
            )),
    );
    Ok(figs)
}
