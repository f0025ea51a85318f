//! `smith-ca serve`: the HTTPS adapter over the [`Authority`]. TLS (rustls, ring) with
//! optional client certificates verified against the CA's own root, a hyper accept loop
//! that hands each request the verified peer identity, the axum router, and graceful
//! shutdown. Handlers parse, authenticate, call one authority command and map its errors
//! to statuses ([`error`]).
//!
//! Must never: decide a rule of the CA itself (the authority does), run a blocking
//! command on the async runtime (they go through [`Ca::run`]), or hold a model lock across
//! an await point.

pub mod admin;
pub mod audit;
pub mod certs;
pub mod error;
pub mod hosts;
pub mod mtls;
pub mod ops;
pub mod people;
pub mod proxy;
pub mod reach;
pub mod revocation;
pub mod rotation;

use crate::auth::Authenticated;
use crate::authority::{self, Authority};
use crate::datadir::DataDir;
use crate::tlsca::{peer_identity, PeerCert, TlsRoot};
use anyhow::Context;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::Router;
use error::ApiError;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use smith_api::ErrorCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Default of `--max-connections`: connections served at once; more wait in the
/// kernel's accept queue. Every long-polling host holds one.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16384;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's headers must arrive within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// A trusted proxy's PROXY header must arrive within this.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `--max-connections-per-source`.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 256;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: String,
    pub max_cert_ttl: Duration,
    pub host_cert_ttl: Duration,
    /// Validity of the SSH host certificates signed at enrollment and renewal.
    pub host_ssh_cert_ttl: Duration,
    pub default_user_token_ttl: Duration,
    /// How long a host's replaced client certificate keeps working after a renewal.
    pub host_cert_overlap: Duration,
    /// Load balancers whose connections start with a PROXY protocol header (v1 or v2)
    /// naming the real client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Connections one client address may hold at once; more are closed at once.
    pub max_connections_per_source: usize,
    /// Connections served at once (every long-polling host holds one); more wait.
    pub max_connections: usize,
    /// OIDC sign-in (`--oidc-*`, `[oidc]` in `D/ca.toml`); `None`: tokens only.
    pub oidc: Option<crate::oidc::OidcConfig>,
    /// Lifetime of a named admin's token from `smith-ca admin login`.
    pub admin_session_ttl: Duration,
    /// Certificate requests per principal.
    pub issuance_rate: authority::RateLimit,
    /// How long decisions and expired certificates are kept (`None`: forever).
    pub retention: crate::authority::Retention,
    /// Where the database is (flags; else the environment and `D/ca.toml`).
    pub database: crate::database::DatabaseArgs,
    /// This replica's server certificate names and metrics listener.
    pub replica: ops::ReplicaArgs,
}

impl ServeConfig {
    /// The authority's part of the configuration.
    pub fn authority(&self) -> authority::Config {
        authority::Config {
            max_cert_ttl: self.max_cert_ttl,
            host_cert_ttl: self.host_cert_ttl,
            host_ssh_cert_ttl: self.host_ssh_cert_ttl,
            default_user_token_ttl: self.default_user_token_ttl,
            host_cert_overlap: self.host_cert_overlap,
            admin_groups: self
                .oidc
                .as_ref()
                .map(|o| o.admin_groups.clone())
                .unwrap_or_default(),
            admin_session_ttl: self.admin_session_ttl,
            issuance_rate: self.issuance_rate,
        }
    }
}

/// Per-connection facts every request of that connection carries.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The verified client certificate, if the client sent one.
    pub cert: Option<PeerCert>,
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Peer>()
            .cloned()
            .ok_or_else(|| ApiError::internal("reading the connection's peer", "no peer info"))
    }
}

/// The server's state: the authority, the OIDC verifier, and the shutdown signal.
pub struct Ca {
    pub authority: Arc<Authority>,
    /// Verifies OIDC ID tokens, when an issuer is configured.
    pub oidc: Option<Arc<crate::oidc::Verifier>>,
    pub shutdown: watch::Receiver<bool>,
}

/// The bearer token of a request (`Authorization: Bearer ...`), `""` when none.
pub fn bearer(parts: &Parts) -> &str {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or("")
        .trim()
}

impl Ca {
    /// Authenticates the request's bearer token.
    pub fn authenticated(&self, parts: &Parts) -> Result<Authenticated, ApiError> {
        self.authority
            .authenticate(bearer(parts))
            .map_err(|e| ApiError::new(e.code(), e.to_string()))
    }

    /// Runs a blocking authority command off the async runtime.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Authority) -> Result<T, authority::Error> + Send + 'static,
    {
        let a = self.authority.clone();
        tokio::task::spawn_blocking(move || f(&a))
            .await
            .map_err(|e| ApiError::internal("running a command", e))?
            .map_err(ApiError::from)
    }
}

/// Loads the CA from its data directory.
pub fn load(
    dd: &DataDir,
    cfg: &ServeConfig,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Arc<Ca>> {
    let db = crate::database::Database::resolve(dd, &cfg.database)?;
    let authority = Arc::new(Authority::open_in(dd, &db, cfg.authority())?);
    // Several replicas on one database: follow the others' changes.
    authority.spawn_follower();
    let oidc = match &cfg.oidc {
        Some(c) => Some(Arc::new(
            crate::oidc::Verifier::new(c.clone()).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    Ok(Arc::new(Ca {
        authority,
        oidc,
        shutdown,
    }))
}

pub fn router(ca: Arc<Ca>) -> Router {
    use axum::routing::{delete, get, post};
    Router::new()
        .route("/v1/health", get(admin::health))
        .route(smith_api::endpoints::HEALTH_LIVE, get(ops::live))
        .route(smith_api::endpoints::HEALTH_READY, get(ops::ready))
        .route("/v1/ca/user-keys", get(admin::user_keys))
        .route("/v1/ca/host-keys", get(admin::host_keys))
        .route("/v1/ca/host-krl", get(admin::host_krl))
        .route(smith_api::endpoints::CA_USER_KRL, get(admin::user_krl))
        .route(smith_api::endpoints::CA_TLS_ROOT, get(admin::tls_root))
        .route("/v1/certs/user", post(certs::issue))
        .route(
            smith_api::endpoints::CERTS_HOST,
            post(reach::issue_for_host),
        )
        .route(smith_api::endpoints::USER_HOSTS, post(reach::hosts))
        .route("/v1/auth/config", get(certs::auth_config))
        .route(
            "/v1/admin/users",
            get(admin::list_users).post(admin::add_user),
        )
        .route("/v1/admin/users/{name}/disable", post(admin::disable_user))
        .route("/v1/admin/users/{name}/token", post(admin::user_token))
        .route(
            "/v1/admin/groups",
            get(admin::list_groups).post(admin::add_group),
        )
        .route("/v1/admin/groups/{name}/members", post(admin::add_member))
        .route(
            "/v1/admin/groups/{name}/members/{user}",
            delete(admin::remove_member),
        )
        .route(
            "/v1/admin/grants",
            get(admin::list_grants).post(admin::add_grant),
        )
        .route("/v1/admin/grants/{id}", delete(admin::remove_grant))
        .route("/v1/admin/hosts/tokens", post(admin::host_token))
        .route("/v1/admin/hosts", get(admin::list_hosts))
        .route("/v1/admin/hosts/{name}", delete(admin::remove_host))
        .route("/v1/admin/hosts/{name}/tags", post(admin::set_host_tags))
        .route("/v1/admin/hosts/certs", get(admin::host_certs))
        .route(
            "/v1/admin/hosts/certs/revoke",
            post(admin::revoke_host_certs),
        )
        .route("/v1/admin/decisions", get(admin::decisions))
        .route("/v1/admin/certs", get(revocation::list))
        .route("/v1/admin/certs/revoke", post(revocation::revoke))
        .route(
            smith_api::endpoints::ADMIN_CA_ROTATION,
            get(rotation::status),
        )
        .route(
            smith_api::endpoints::ADMIN_CA_ROTATE,
            post(rotation::rotate),
        )
        .route("/v1/hosts/enroll", post(hosts::enroll))
        .route("/v1/host/renew", post(hosts::renew))
        .route("/v1/host/sync", get(hosts::sync))
        .route(
            "/v1/admin/tokens",
            get(people::list_tokens).post(people::admin_token),
        )
        .route("/v1/admin/tokens/{id}", delete(people::revoke_token))
        .route("/v1/admin/tokens/{id}/rotate", post(people::rotate_token))
        .route("/v1/admin/login", post(people::login))
        .route("/v1/admin/users/{name}/enable", post(people::enable_user))
        .route(
            "/v1/admin/users/{name}/binding",
            post(people::bind_user).delete(people::unbind_user),
        )
        .route("/v1/admin/groups/mappings", get(people::mappings))
        .route("/v1/admin/groups/{name}/mappings", post(people::map_group))
        .route(
            "/v1/admin/groups/{name}/mappings/{idp_group}",
            delete(people::unmap_group),
        )
        .route("/v1/admin/changes", get(people::changes))
        .merge(crate::scim::router())
        .merge(audit::router())
        .fallback(|| async {
            ApiError::new(
                ErrorCode::NotFound,
                "no such endpoint; the API is documented in smith-api's types.rs",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ca)
}

/// The names in this replica's own server certificate: `--name`s, plus the listen
/// address when it is not a wildcard. Empty: use `tls-server.crt` from init.
fn replica_names(cfg: &ServeConfig) -> Vec<String> {
    let mut names = cfg.replica.names.clone();
    if names.is_empty() {
        return names;
    }
    if let Ok(a) = cfg.listen.parse::<SocketAddr>() {
        let ip = a.ip().to_string();
        if !a.ip().is_unspecified() && !names.contains(&ip) {
            names.push(ip);
        }
    }
    names
}

/// The server certificate and key (PEM): issued now for `names`, or init's files.
fn server_identity(
    dd: &DataDir,
    root: &TlsRoot,
    names: &[String],
) -> anyhow::Result<(String, zeroize::Zeroizing<String>)> {
    if names.is_empty() {
        return Ok((
            dd.read(&dd.tls_server_cert())?,
            dd.read_secret(&dd.tls_server_key())?,
        ));
    }
    for n in names {
        if n.parse::<std::net::IpAddr>().is_err() && smith_proto::HostName::new(n).is_err() {
            anyhow::bail!("--name '{n}' is neither an IP address nor a DNS name");
        }
    }
    let (cert, key) = root
        .issue_server_cert(names, authority::now())
        .context("cannot issue this replica's server certificate")?;
    tracing::info!(names = %names.join(","), "server certificate issued for this replica's names");
    Ok((cert, zeroize::Zeroizing::new(key)))
}

fn tls_config(
    dd: &DataDir,
    root: &TlsRoot,
    names: &[String],
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = smith_api::tls::provider();
    let mut roots = RootCertStore::empty();
    roots.add(root.cert_der.clone())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("cannot build the client certificate verifier")?;
    // Expired client certificates get through the handshake so that the API can say
    // what to do (401 client_cert_expired); see mtls.rs.
    let verifier = Arc::new(mtls::LenientValidity::new(verifier));
    let (cert_pem, key_pem) = server_identity(dd, root, names)?;
    let mut chain =
        smith_api::tls::certs_from_pem(cert_pem.as_bytes()).map_err(anyhow::Error::msg)?;
    chain.push(root.cert_der.clone());
    let key = smith_api::tls::key_from_pem(key_pem.as_bytes()).map_err(anyhow::Error::msg)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("cannot use the server certificate")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Waits for SIGTERM or SIGINT.
async fn signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
    }
}

/// A CA serving on its listener, started by [`start`]: the bound address, the shared
/// state, and the handle that stops it.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` is served (`--metrics-listen`).
    pub metrics_addr: Option<SocketAddr>,
    pub ca: Arc<Ca>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The data directory's lock, held while serving (a replica is a copy of the data
    /// directory, with its own lock).
    _lock: crate::datadir::DirLock,
}

impl Running {
    /// Stops accepting, ends long polls, drains connections (at most
    /// [`DRAIN_TIMEOUT`]) and flushes the writer.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        self.ca.authority.shutdown();
        tracing::info!("smith-ca stopped");
    }
}

/// Loads the CA from `dd`, binds `cfg.listen` and serves in a background task until
/// [`Running::stop`]. `smith-ca serve` is this plus the signals; the test kit starts
/// CAs in-process with it.
pub async fn start(dd: DataDir, cfg: ServeConfig) -> anyhow::Result<Running> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let lock = dd.lock("serve")?;
    let ca = load(&dd, &cfg, shutdown_rx.clone())?;
    let tls = Arc::new(tls_config(
        &dd,
        ca.authority.tls_root(),
        &replica_names(&cfg),
    )?);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    if let Some(v) = ca.oidc.clone() {
        tracing::info!(issuer = %v.cfg.issuer, client_id = %v.cfg.client_id, "OIDC sign-in enabled");
        tokio::spawn(async move { v.keys.warm().await });
    }
    {
        let m = ca.authority.model();
        tracing::info!(
            local = %addr,
            version = m.version(),
            users = m.users().len(),
            hosts = m.active_host_count(),
            "smith-ca serving"
        );
    }
    let limits = Arc::new(Limits {
        trusted_proxies: cfg.trusted_proxies.clone(),
        total: cfg.max_connections.max(1),
        per_source: cfg.max_connections_per_source.max(1),
        open: std::sync::Mutex::new(std::collections::HashMap::new()),
        refused: std::sync::atomic::AtomicU64::new(0),
    });
    spawn_retention(ca.authority.clone(), cfg.retention, shutdown_rx.clone());
    let metrics_addr = match cfg.replica.metrics_listen {
        Some(a) => Some(ops::serve_metrics(a, ca.clone(), shutdown_rx.clone()).await?),
        None => None,
    };
    rotation::spawn_tick(ca.authority.clone(), shutdown_rx.clone());
    let task = tokio::spawn(accept_loop(
        listener,
        acceptor,
        router(ca.clone()),
        shutdown_rx,
        limits,
    ));
    Ok(Running {
        addr,
        metrics_addr,
        ca,
        shutdown: shutdown_tx,
        task,
        _lock: lock,
    })
}

/// Process settings of a server holding CA keys: no core dumps (they would hold the
/// keys), not dumpable by ptrace, and as many file descriptors as the hard limit allows
/// (connections are files; the unit sets `LimitNOFILE`).
pub fn harden_process() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!(error = %e, "cannot disable core dumps");
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot make the process non-dumpable");
    }
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, "cannot raise the open file limit");
            }
        }
    }
}

/// Applies the retention settings at start and hourly.
fn spawn_retention(
    authority: Arc<Authority>,
    r: crate::authority::Retention,
    mut shutdown: watch::Receiver<bool>,
) {
    if r.decisions_secs.is_none() && r.certificates_secs.is_none() {
        return;
    }
    tokio::spawn(async move {
        loop {
            let a = authority.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || a.apply_retention(r)).await {
                tracing::warn!(error = %e, "retention sweep failed; retrying in an hour");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
}

/// Runs the server until SIGTERM/SIGINT.
pub async fn serve(dd: DataDir, cfg: ServeConfig) -> anyhow::Result<()> {
    harden_process();
    let running = start(dd, cfg).await?;
    // Tests and scripts read this line to learn the port (`--listen 127.0.0.1:0`). A
    // reader that went away after it must not stop the CA: write errors are ignored.
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "smith-ca listening on {}", running.addr);
    if let Some(m) = running.metrics_addr {
        let _ = writeln!(out, "smith-ca metrics on http://{m}/metrics");
    }
    let _ = out.flush();
    signals().await;
    running.stop().await;
    Ok(())
}

/// What unauthenticated connections may take: per-source connection caps, and which
/// peers speak the PROXY protocol.
struct Limits {
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Connections served at once.
    total: usize,
    per_source: usize,
    /// Open connections per client address.
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// Connections closed for being over their source's cap (logged now and then).
    refused: std::sync::atomic::AtomicU64,
}

/// One connection counted against its source; uncounted when dropped.
struct SourceSlot {
    limits: Arc<Limits>,
    ip: std::net::IpAddr,
}

impl Limits {
    /// Counts a connection from `ip`, or `None` when `ip` holds its cap already.
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.per_source {
            drop(open);
            let refused = self
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if refused.is_power_of_two() {
                tracing::warn!(source = %ip, cap = self.per_source, refused, "a client address holds its connection cap; closing its new connections (--max-connections-per-source)");
            }
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections until `shutdown` turns true, then drains them.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    shutdown_rx: watch::Receiver<bool>,
    limits: Arc<Limits>,
) {
    let limit = Arc::new(Semaphore::new(limits.total));
    let mut tasks = tokio::task::JoinSet::new();
    let mut stop = shutdown_rx.clone();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        let permit = tokio::select! {
            _ = &mut stopped => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, addr) = tokio::select! {
            _ = &mut stopped => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while tasks.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut shutdown = shutdown_rx.clone();
        let limits = limits.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let mut tcp = tcp;
            let _ = tcp.set_nodelay(true);
            // Behind a trusted load balancer, the client is who its PROXY header says.
            let mut addr = addr;
            if limits.trusted_proxies.iter().any(|n| n.contains(&addr.ip())) {
                match proxy::read_header(&mut tcp, PROXY_HEADER_TIMEOUT).await {
                    Ok(proxy::Header::Proxied(client)) => addr = client,
                    Ok(proxy::Header::Local) => {}
                    Err(e) => {
                        tracing::debug!(proxy = %addr, error = %e, "no valid PROXY header from a trusted proxy");
                        return;
                    }
                }
            }
            let Some(slot) = limits.admit(addr.ip()) else {
                return;
            };
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| peer_identity(c));
            // A host that proved its client certificate (signed by this CA's root) no
            // longer counts against its address: a fleet behind one NAT address holds
            // one long poll per host. The cap is for connections nobody vouched for.
            let slot = if cert.is_some() {
                drop(slot);
                None
            } else {
                Some(slot)
            };
            let peer = Peer { addr, cert };
            let svc = tower::ServiceExt::map_request(
                app,
                move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer.clone());
                    req
                },
            );
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tls), svc);
            let _slot = slot;
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%addr, error = %e, "connection ended with an error");
                    }
                }
                _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}; closing them");
        tasks.abort_all();
    }
}

/// Starts the server's log output: journald when it is there, else stderr.
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SMITH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        if let Ok(j) = tracing_journald::layer() {
            let _ = registry
                .with(j.with_syslog_identifier("smith-ca".into()))
                .try_init();
            return;
        }
    }
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr),
        )
        .try_init();
}
