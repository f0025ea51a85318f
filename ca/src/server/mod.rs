//! `smith-ca serve`: the HTTPS server. TLS (rustls, ring) with optional client
//! certificates verified against the CA's own root, a hyper accept loop that hands each
//! request the verified peer identity, the axum router, and graceful shutdown.
//!
//! Owns: the shared [`Ca`] state (model, store, writer, keys) and the one path by which
//! admin changes happen ([`Ca::mutate`]: plan against the model, commit to SQLite, apply
//! to the model, wake long-polling hosts).
//!
//! Must never: let a request change the model without a committed transaction, or hold a
//! model lock across an await point.

pub mod admin;
pub mod certs;
pub mod error;
pub mod hosts;
pub mod mtls;
pub mod revocation;

use crate::auth::{AuthError, Authenticator, Principal, TokenAuthenticator};
use crate::datadir::DataDir;
use crate::db::Store;
use crate::model::{Change, Model};
use crate::tlsca::{peer_identity, PeerCert, TlsRoot};
use crate::writer::Writer;
use anyhow::Context;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::Router;
use error::ApiError;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use smith_api::ErrorCode;
use smith_proto::UserName;
use ssh_key::PrivateKey;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 8192;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: String,
    pub max_cert_ttl: Duration,
    pub host_cert_ttl: Duration,
    /// Validity of the SSH host certificates signed at enrollment and renewal.
    pub host_ssh_cert_ttl: Duration,
    pub default_user_token_ttl: Duration,
    /// OIDC sign-in (`--oidc-*`, `[oidc]` in `D/ca.toml`); `None`: tokens only.
    pub oidc: Option<crate::oidc::OidcConfig>,
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

pub struct Ca {
    model: RwLock<Model>,
    store: Mutex<Store>,
    pub writer: Writer,
    pub auth: Box<dyn Authenticator>,
    /// Verifies OIDC ID tokens, when an issuer is configured.
    pub oidc: Option<Arc<crate::oidc::Verifier>>,
    /// The user CA key prepared for signing (see [`crate::signer`]).
    pub user_ca_signer: crate::signer::CaSigner,
    pub host_ca: PrivateKey,
    pub user_ca_keys: Vec<String>,
    pub host_ca_keys: Vec<String>,
    pub tls_root: TlsRoot,
    /// Last certificate serial handed out.
    serial: AtomicU64,
    pub version_tx: watch::Sender<u64>,
    pub shutdown: watch::Receiver<bool>,
    pub cfg: ServeConfig,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Ca {
    pub fn model(&self) -> RwLockReadGuard<'_, Model> {
        self.model.read().unwrap_or_else(|e| e.into_inner())
    }
    fn model_mut(&self) -> RwLockWriteGuard<'_, Model> {
        self.model.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The next certificate serial: unique and increasing, never repeated across restarts
    /// (the writer persists the high-water mark with each certificate).
    pub fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Authenticates the request's bearer token.
    pub fn principal(&self, parts: &Parts) -> Result<Principal, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .unwrap_or("");
        self.auth
            .authenticate(&self.model(), token, now())
            .map_err(|e| match e {
                AuthError::Missing => ApiError::new(ErrorCode::MissingToken, e.to_string()),
                AuthError::Expired => ApiError::new(ErrorCode::TokenExpired, e.to_string()),
                AuthError::Used => ApiError::new(ErrorCode::TokenUsed, e.to_string()),
                AuthError::Unknown => ApiError::new(ErrorCode::InvalidToken, e.to_string()),
            })
    }

    /// Runs one admin mutation: `plan` computes the changes from the current model (all
    /// mutations are serialized by the store lock, so the plan cannot go stale), they are
    /// committed in one transaction, then applied to the model, then hosts are woken.
    /// Returns the version after the change. See [`Ca::mutate_with`].
    pub async fn mutate<F, E>(self: &Arc<Self>, what: String, plan: F) -> Result<u64, E>
    where
        F: FnOnce(&Model, u64) -> Result<Vec<Change>, E> + Send + 'static,
        E: From<ApiError> + Send + 'static,
    {
        self.mutate_with(what, move |m, _, at| plan(m, at)).await
    }

    /// [`Ca::mutate`] whose plan may also read the store (issued certificates).
    ///
    /// A change that disables or deletes a user also revokes every still-valid
    /// certificate of theirs, in the same transaction; after the model is updated (from
    /// then on issuance refuses the user) a second pass revokes any certificate whose
    /// issuance was in flight and got committed meanwhile. An issuance committed after
    /// that pass is never handed out: `certs::issue` checks the model again after its
    /// record is durable (disabled by then → 403 `user_disabled`). Changes with
    /// revocations are committed by the writer, which adds their `@ca` audit records in
    /// the same transaction.
    pub async fn mutate_with<F, E>(self: &Arc<Self>, what: String, plan: F) -> Result<u64, E>
    where
        F: FnOnce(&Model, &Store, u64) -> Result<Vec<Change>, E> + Send + 'static,
        E: From<ApiError> + Send + 'static,
    {
        let ca = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = ca.store.lock().unwrap_or_else(|e| e.into_inner());
            let at = now();
            let (changes, new_version, current, counters) = {
                let m = ca.model();
                let mut changes = plan(&m, &store, at)?;
                let ended = ended_users(&changes, what.starts_with("scim "));
                if !ended.is_empty() {
                    let revs = ca
                        .revocations_for(&store, &ended, &changes, at)
                        .map_err(E::from)?;
                    if !revs.is_empty() {
                        changes.push(Change::Revoke(revs));
                    }
                }
                let nv = changes
                    .iter()
                    .any(Change::is_policy)
                    .then_some(m.version + 1);
                (changes, nv, m.version, crate::db::Counters::of(&m))
            };
            if changes.is_empty() {
                return Ok(current);
            }
            let ended = ended_users(&changes, what.starts_with("scim "));
            ca.commit_and_apply(&mut store, changes, counters, new_version, &what, at)
                .map_err(E::from)?;
            // Issuances decided before the model said "disabled" may have been recorded
            // since the plan read the certificates: revoke those too.
            let mut version = new_version.unwrap_or(current);
            if !ended.is_empty() {
                let at = now();
                let (revs, counters, nv) = {
                    let m = ca.model();
                    let revs = ca
                        .revocations_for(&store, &ended, &[], at)
                        .map_err(E::from)?;
                    (revs, crate::db::Counters::of(&m), m.version + 1)
                };
                if !revs.is_empty() {
                    tracing::warn!(count = revs.len(), "certificates issued while their user was being disabled; revoking them too");
                    let what = format!("{what} (certificates issued meanwhile)");
                    ca.commit_and_apply(&mut store, vec![Change::Revoke(revs)], counters, Some(nv), &what, at)
                        .map_err(E::from)?;
                    version = nv;
                }
            }
            Ok(version)
        })
        .await
        .map_err(|e| E::from(ApiError::internal("running a change", e)))?
    }

    /// The revocations of every still-valid certificate of `users` not already in
    /// `changes`.
    fn revocations_for(
        &self,
        store: &Store,
        users: &[(UserName, &'static str)],
        changes: &[Change],
        at: u64,
    ) -> Result<Vec<crate::model::Revocation>, ApiError> {
        let planned: std::collections::BTreeSet<u64> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Revoke(l) => Some(l.iter().map(|r| r.serial)),
                _ => None,
            })
            .flatten()
            .collect();
        let mut out = Vec::new();
        for (user, via) in users {
            let certs: Vec<smith_api::IssuedCert> =
                crate::revoke::valid_of_user(store.conn(), user, at)?
                    .into_iter()
                    .filter(|c| !planned.contains(&c.serial))
                    .collect();
            let reason = match *via {
                "user_deleted" => format!("user {user} was deleted"),
                "scim_deleted" => format!("user {user} was deleted by SCIM provisioning"),
                "scim_deactivated" => format!("user {user} was deactivated by SCIM provisioning"),
                _ => format!("user {user} was disabled"),
            };
            out.extend(crate::revoke::revocations(
                &certs,
                self.user_ca_keys.first().map(String::as_str).unwrap_or(""),
                at,
                &reason,
                via,
            ));
        }
        Ok(out)
    }

    /// Commits (through the writer when revocations are among the changes), applies to
    /// the model and wakes the hosts.
    fn commit_and_apply(
        &self,
        store: &mut Store,
        changes: Vec<Change>,
        counters: crate::db::Counters,
        new_version: Option<u64>,
        what: &str,
        at: u64,
    ) -> Result<(), ApiError> {
        if changes.iter().any(|c| matches!(c, Change::Revoke(_))) {
            self.writer
                .commit(crate::writer::PendingCommit {
                    counters,
                    changes: changes.clone(),
                    new_version,
                    what: what.to_string(),
                    now: at,
                })
                .map_err(|e| ApiError::internal("recording a revocation", e))?;
        } else {
            store.commit(&counters, &changes, new_version, what, at)?;
        }
        self.model_mut().apply(&changes, new_version);
        if let Some(v) = new_version {
            self.version_tx.send_replace(v);
            tracing::info!(version = v, change = %what, "policy changed");
        } else {
            tracing::info!(change = %what, "state changed");
        }
        Ok(())
    }

    /// Runs a read-only query against the store (not on hot paths).
    pub async fn query<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, crate::db::StoreError> + Send + 'static,
    {
        let ca = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = ca.store.lock().unwrap_or_else(|e| e.into_inner());
            f(&store).map_err(ApiError::from)
        })
        .await
        .map_err(|e| ApiError::internal("reading the store", e))?
    }

    /// Records that a host synced, in memory now and in the database soon.
    pub fn host_seen(&self, host_id: u64, synced_version: Option<u64>) {
        let at = now();
        if let Some(h) = self.model_mut().hosts.get_mut(&host_id) {
            h.last_seen = Some(at);
            if synced_version.is_some() {
                h.synced_version = synced_version;
            }
        }
        self.writer.host_seen(host_id, at, synced_version);
    }
}

fn read_key(dd: &DataDir, path: &std::path::Path) -> anyhow::Result<PrivateKey> {
    let text = dd.read(path)?;
    PrivateKey::from_openssh(text.trim())
        .with_context(|| format!("{} is not an OpenSSH private key", path.display()))
}

/// Loads the CA from its data directory.
pub fn load(
    dd: &DataDir,
    cfg: ServeConfig,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Arc<Ca>> {
    if !dd.db().exists() {
        anyhow::bail!(
            "{} does not exist\nhint: create the CA first with `smith-ca init --data-dir {}`",
            dd.db().display(),
            dd.root.display()
        );
    }
    let store = Store::open(&dd.db()).context("cannot open the CA database")?;
    if !store.is_initialized()? {
        anyhow::bail!(
            "{} was never initialized; remove it and run `smith-ca init` again",
            dd.db().display()
        );
    }
    let model = store.load().context("cannot load the CA database")?;
    let last_serial = store.last_serial()?;
    // Hosts' last-seen data is written by the writer; the model loaded it too.
    let user_ca = read_key(dd, &dd.user_ca())?;
    let host_ca = read_key(dd, &dd.host_ca())?;
    let user_ca_keys = vec![user_ca.public_key().to_openssh()?];
    let user_ca_signer = crate::signer::CaSigner::new(&user_ca)
        .with_context(|| format!("{} is not a usable key", dd.user_ca().display()))?;
    let host_ca_keys = vec![host_ca.public_key().to_openssh()?];
    let tls_root = TlsRoot::load(
        &dd.read(&dd.tls_root_cert())?,
        &dd.read(&dd.tls_root_key())?,
    )
    .context("cannot load the TLS root")?;
    let writer = Writer::start(&dd.db())?;
    let (version_tx, _) = watch::channel(model.version);
    let oidc = match &cfg.oidc {
        Some(c) => Some(Arc::new(
            crate::oidc::Verifier::new(c.clone()).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    Ok(Arc::new(Ca {
        model: RwLock::new(model),
        store: Mutex::new(store),
        writer,
        auth: Box::new(TokenAuthenticator),
        oidc,
        user_ca_signer,
        host_ca,
        user_ca_keys,
        host_ca_keys,
        tls_root,
        serial: AtomicU64::new(last_serial),
        version_tx,
        shutdown,
        cfg,
    }))
}

pub fn router(ca: Arc<Ca>) -> Router {
    use axum::routing::{delete, get, post};
    Router::new()
        .route("/v1/health", get(admin::health))
        .route("/v1/ca/user-keys", get(admin::user_keys))
        .route("/v1/ca/host-keys", get(admin::host_keys))
        .route("/v1/certs/user", post(certs::issue))
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
        .route("/v1/admin/decisions", get(admin::decisions))
        .route("/v1/admin/certs", get(revocation::list))
        .route("/v1/admin/certs/revoke", post(revocation::revoke))
        .route("/v1/hosts/enroll", post(hosts::enroll))
        .route("/v1/host/renew", post(hosts::renew))
        .route("/v1/host/sync", get(hosts::sync))
        .merge(crate::scim::router())
        .merge(crate::audit::server::router())
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

fn tls_config(dd: &DataDir, root: &TlsRoot) -> anyhow::Result<rustls::ServerConfig> {
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
    let mut chain = smith_api::tls::certs_from_pem(dd.read(&dd.tls_server_cert())?.as_bytes())
        .map_err(anyhow::Error::msg)?;
    chain.push(root.cert_der.clone());
    let key = smith_api::tls::key_from_pem(dd.read(&dd.tls_server_key())?.as_bytes())
        .map_err(anyhow::Error::msg)?;
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
    pub ca: Arc<Ca>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, ends long polls, drains connections (at most
    /// [`DRAIN_TIMEOUT`]) and flushes the writer.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        self.ca.writer.shutdown();
        tracing::info!("smith-ca stopped");
    }
}

/// Loads the CA from `dd`, binds `cfg.listen` and serves in a background task until
/// [`Running::stop`]. `smith-ca serve` is this plus the signals; the test kit starts
/// CAs in-process with it.
pub async fn start(dd: DataDir, cfg: ServeConfig) -> anyhow::Result<Running> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let ca = load(&dd, cfg.clone(), shutdown_rx.clone())?;
    let tls = Arc::new(tls_config(&dd, &ca.tls_root)?);
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
        let m = ca.model();
        tracing::info!(
            local = %addr,
            version = m.version,
            users = m.users.len(),
            hosts = m.active_hosts.len(),
            "smith-ca serving"
        );
    }
    let task = tokio::spawn(accept_loop(
        listener,
        acceptor,
        router(ca.clone()),
        shutdown_rx,
    ));
    Ok(Running {
        addr,
        ca,
        shutdown: shutdown_tx,
        task,
    })
}

/// Runs the server until SIGTERM/SIGINT.
pub async fn serve(dd: DataDir, cfg: ServeConfig) -> anyhow::Result<()> {
    let running = start(dd, cfg).await?;
    // Tests and scripts read this line to learn the port (`--listen 127.0.0.1:0`).
    println!("smith-ca listening on {}", running.addr);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    signals().await;
    running.stop().await;
    Ok(())
}

/// Accepts connections until `shutdown` turns true, then drains them.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    shutdown_rx: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        tasks.spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
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
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(tls), svc);
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

/// Users a change set disables or deletes, with how their certificates are revoked.
/// `scim`: the change came from the IdP's SCIM provisioning.
fn ended_users(changes: &[Change], scim: bool) -> Vec<(UserName, &'static str)> {
    let mut out: Vec<(UserName, &'static str)> = Vec::new();
    for c in changes {
        let (name, via) = match (c, scim) {
            (Change::DisableUser { name, .. }, false) => (name, "user_disabled"),
            (Change::DeleteUser { name, .. }, false) => (name, "user_deleted"),
            (Change::DisableUser { name, .. }, true) => (name, "scim_deactivated"),
            (Change::DeleteUser { name, .. }, true) => (name, "scim_deleted"),
            _ => continue,
        };
        if let Some(e) = out.iter_mut().find(|(n, _)| n == name) {
            if via.ends_with("deleted") {
                e.1 = via;
            }
        } else {
            out.push((name.clone(), via));
        }
    }
    out
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
