//! `smith-hostd`: the long-running host daemon.
//!
//! Owns: startup (config, last snapshot, cache, pid file, socket), readiness
//! (`sd_notify READY=1` once the last snapshot is loaded or the first sync completed),
//! the tasks (sync loop with renewal, socket server, pending-event ingestion,
//! housekeeping) and signals (`SIGUSR1` = sync now, `SIGTERM`/`SIGINT` = graceful stop).
//!
//! Must never: panic or exit because the CA, the network or the disk misbehaves (it
//! keeps serving the last good snapshot and retries), or start before
//! [`smith_proto::paths::NSS_BYPASS_ENV`] is set (the binary sets it first thing).

pub mod events;
pub mod pending;
pub mod removal;
pub mod server;
pub mod sshdlog;
pub mod sync;
pub mod upload;

use crate::config::{HostConfig, LogTarget};
use crate::paths::HostPaths;
use crate::sessions::SessionTable;
use crate::spool::{Spool, SpoolWriter};
use crate::state::SyncStatus;
use crate::store::Store;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{error, info, warn};

/// How often pending `.evt` files are picked up.
pub const PENDING_INTERVAL: Duration = Duration::from_secs(3);
/// How often local account files are checked and failed writes retried.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(5);

/// What the socket server answers from.
#[derive(Debug, Clone, Default)]
pub struct Served {
    pub cache: Option<Arc<Vec<u8>>>,
    pub last_sync_unix: u64,
}

/// State shared by the daemon's tasks.
pub struct Shared {
    pub paths: HostPaths,
    pub config: HostConfig,
    pub store: Mutex<Store>,
    pub served: RwLock<Served>,
    /// The audit spool (group commit; every accepted event goes through it).
    pub spool: SpoolWriter,
    /// Live SSH sessions, to attribute sudo events to a certificate key ID.
    pub sessions: Mutex<SessionTable>,
    pub sync_now: Notify,
    pub status: Mutex<SyncStatus>,
    /// The CA's replicas every client of the daemon uses (see `crate::syncclient`).
    pub replicas: Arc<smith_api::Replicas>,
    ready: AtomicBool,
}

impl Shared {
    /// Publishes the store's current cache bytes to the socket server.
    pub fn publish(&self) {
        let cache = match self.store.lock() {
            Ok(s) => s.served(),
            Err(_) => return,
        };
        if let Ok(mut w) = self.served.write() {
            w.cache = cache;
        }
    }

    /// Tells systemd we are ready (once).
    pub fn notify_ready(&self, why: &str) {
        if !self.ready.swap(true, Ordering::SeqCst) {
            info!(reason = why, "ready");
            if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
                warn!(error = %e, "sd_notify READY failed");
            }
        }
    }

    /// Writes `sync-status.json` from the status `st` guards, once the lock is released
    /// (informational: a failure is logged at debug level).
    pub fn save_status(&self, mut st: std::sync::MutexGuard<'_, SyncStatus>) {
        let r = self.replicas.status();
        st.ca_url_in_use = Some(r.url);
        st.ca_failovers = r.failovers;
        let snapshot = st.clone();
        drop(st);
        if let Err(e) = crate::state::save_sync_status(&self.paths.sync_status_file, &snapshot) {
            tracing::debug!(error = %e, "cannot write sync-status.json");
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// One line in the journal for each move between the CA's replicas.
fn log_failover(f: &smith_api::replicas::Failover) {
    if f.returned {
        info!(from = %f.from, to = %f.to, "back to the preferred CA replica (it answers again)");
    } else {
        warn!(
            from = %f.from,
            to = %f.to,
            failovers = f.count,
            reason = %f.reason,
            "CA replica failover: the replica in use did not answer; moved to the next one"
        );
    }
}

/// Options of `smith-hostd`.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    pub root: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub log: Option<LogTarget>,
}

/// Runs the daemon until SIGTERM/SIGINT. Builds its own runtime.
pub fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    let resolved = crate::config::resolve(opts.root.as_deref(), opts.config.as_deref())?;
    let paths = resolved.paths;
    let config = resolved.config.with_context(|| {
        format!(
            "{} does not exist: this host is not enrolled\nhint: run `smith-host activate --ca URL --token T --ca-fingerprint SHA256:...` first",
            paths.config.display()
        )
    })?;
    crate::logging::init_daemon(opts.log.unwrap_or(config.log));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("smith-hostd")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(paths, config))
}

async fn run_async(paths: HostPaths, config: HostConfig) -> anyhow::Result<()> {
    info!(
        host = %config.host_name,
        ca = %config.ca_urls().join(","),
        root = %paths.root.display(),
        "smith-hostd starting"
    );
    // Each move between replicas is logged and written to sync-status.json at once.
    let (moved_tx, mut moved) = tokio::sync::mpsc::unbounded_channel::<()>();
    let replicas = config
        .replicas(Some(Box::new(move |f: &smith_api::replicas::Failover| {
            log_failover(f);
            let _ = moved_tx.send(());
        })))
        .map_err(anyhow::Error::msg)?;
    let creds =
        crate::identity::load_credentials(&paths.ca_bundle, &paths.host_cert, &paths.host_key)
            .map_err(anyhow::Error::msg)?;

    // Refuse to run twice: the pid file is locked for our lifetime.
    let _pid_lock = lock_pid_file(&paths)?;
    if tokio::net::UnixStream::connect(&paths.socket).await.is_ok() {
        anyhow::bail!(
            "another smith-hostd is already serving {}; stop it first (pid file {})",
            paths.socket.display(),
            paths.pid_file.display()
        );
    }

    let (store, spool, sessions, status) = {
        let paths = paths.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let store = Store::open(&paths, &config.host_name, &config.home_base);
            let (spool, report) = Spool::open(&paths.spool_dir, config.host_name.as_str())
                .with_context(|| {
                    format!(
                        "cannot open the audit spool in {}",
                        paths.spool_dir.display()
                    )
                })?;
            if report.torn_bytes > 0 {
                warn!(
                    bytes = report.torn_bytes,
                    "the audit spool ended with a torn line (crash during a write); it was cut"
                );
            }
            let (head, _) = spool.head();
            info!(head_seq = head, "audit spool opened");
            let spool = SpoolWriter::start(spool).context("cannot start the spool writer")?;
            let sessions = SessionTable::load(&paths.sessions_file, &paths.proc_root);
            let status =
                crate::state::load_sync_status(&paths.sync_status_file).unwrap_or_default();
            Ok((store, spool, sessions, status))
        })
        .await??
    };
    let has_state = store.state().is_some();
    let shared = Arc::new(Shared {
        served: RwLock::new(Served {
            cache: store.served(),
            last_sync_unix: status.last_sync_unix.unwrap_or(0),
        }),
        store: Mutex::new(store),
        spool,
        sessions: Mutex::new(sessions),
        sync_now: Notify::new(),
        status: Mutex::new(status),
        replicas,
        ready: AtomicBool::new(false),
        paths: paths.clone(),
        config: config.clone(),
    });

    let listener = server::bind(&paths.socket)
        .with_context(|| format!("cannot listen on {}", paths.socket.display()))?;
    if has_state {
        shared.notify_ready("last snapshot loaded");
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(server::serve(listener, shared.clone(), shutdown_rx.clone()));
    tasks.spawn(sync::run(shared.clone(), creds, shutdown_rx.clone()));
    tasks.spawn(pending::run(shared.clone(), shutdown_rx.clone()));
    tasks.spawn(upload::run(shared.clone(), shutdown_rx.clone()));
    tasks.spawn(sshdlog::run(shared.clone(), shutdown_rx.clone()));
    tasks.spawn(housekeeping(shared.clone(), shutdown_rx.clone()));
    {
        let shared = shared.clone();
        let mut stop = shutdown_rx.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    m = moved.recv() => if m.is_none() { return },
                    _ = stop.changed() => return,
                }
                if let Ok(st) = shared.status.lock() {
                    shared.save_status(st);
                }
            }
        });
    }

    wait_for_signals(&shared).await;
    info!("stopping");
    let _ = shutdown_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        warn!("some tasks did not stop within 5 s");
    }
    shared.spool.shutdown();
    let _ = std::fs::remove_file(&paths.socket);
    remove_pid_file(&paths);
    info!("stopped");
    Ok(())
}

async fn wait_for_signals(shared: &Shared) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut usr1), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers; stopping");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = usr1.recv() => {
                info!("SIGUSR1: syncing now");
                shared.sync_now.notify_one();
            }
            _ = hup.recv() => {
                info!("SIGHUP: syncing now (configuration changes need a restart)");
                shared.sync_now.notify_one();
            }
        }
    }
}

/// Rebuilds the cache when local accounts change or the file on disk is not the one
/// written (damaged, removed), and retries failed writes.
async fn housekeeping(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let sh = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(mut store) = sh.store.lock() {
                if store.local_accounts_changed() {
                    info!("local account files changed; rebuilding the cache");
                    store.mark_cache_dirty();
                } else if store.cache_file_changed() {
                    warn!(
                        "the cache file changed on disk (not written by smith-hostd); rewriting it"
                    );
                    store.mark_cache_dirty();
                }
                if !store.is_clean() {
                    store.flush();
                }
            }
            sh.publish();
            removal::run(&sh);
        })
        .await;
    }
}

/// Opens and locks the pid file (held until exit) and writes our pid in it.
fn lock_pid_file(paths: &HostPaths) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = paths.pid_file.parent() {
        crate::fsutil::create_dirs(dir, 0o755)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&paths.pid_file)
        .with_context(|| format!("cannot open the pid file {}", paths.pid_file.display()))?;
    let mut lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(l) => l,
        Err((_, _)) => {
            let other = crate::service::read_pid(&paths.pid_file)
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            anyhow::bail!(
                "another smith-hostd{other} is already running for {}; stop it first",
                paths.root.display()
            );
        }
    };
    lock.set_len(0)?;
    lock.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    Ok(lock)
}

fn remove_pid_file(paths: &HostPaths) {
    if let Ok(text) = std::fs::read_to_string(&paths.pid_file) {
        if text.trim() == std::process::id().to_string() {
            let _ = std::fs::remove_file(&paths.pid_file);
        }
    }
}
