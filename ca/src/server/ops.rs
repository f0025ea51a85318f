//! What operators and load balancers ask of a replica: liveness and readiness on the
//! HTTPS listener (`/v1/health/live`, `/v1/health/ready`, public), the Prometheus
//! metrics on their own plain-HTTP listener (`--metrics-listen`, off by default), and
//! the settings that make one data directory serve as several replicas
//! ([`ReplicaArgs`]: each replica's own server certificate names).
//!
//! Who may scrape: whoever reaches `--metrics-listen`. It is plain HTTP without
//! authentication, so bind it to loopback or a management network; the metrics carry
//! counts only (no user, host or token names), see [`crate::metrics`].
//!
//! Must never: answer "ready" while the store is unreachable or the CA is shutting
//! down, or put a name in a metric.

use super::Ca;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// `smith-ca serve` flags for running several replicas of one data directory.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReplicaArgs {
    /// A name or IP this replica is reached at (repeatable). Given, the replica presents
    /// a server certificate for these names (plus the --listen address when it is not a
    /// wildcard), issued at start from the TLS root in the data directory and kept in
    /// memory; hosts pin the root, so any replica's certificate works for them. Without
    /// it: tls-server.crt from `smith-ca init` (its --san names).
    #[arg(long = "name", value_name = "NAME_OR_IP")]
    pub names: Vec<String>,
    /// Serve Prometheus metrics (`GET /metrics`, plain HTTP, no authentication) on this
    /// address, e.g. 127.0.0.1:9443. Off by default; bind it to loopback or a management
    /// network. The metrics hold counts only, never user or host names.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

/// `GET /v1/health/live`: the process serves requests.
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "live" }))
}

/// `GET /v1/health/ready`: 200 when this replica can serve (store reachable, model caught
/// up, not shutting down), else 503 with `{"status":"not_ready","reason":...}`.
pub async fn ready(State(ca): State<Arc<Ca>>) -> Response {
    let r = readiness(&ca).await;
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::json!({
        "status": if r.ready { "ready" } else { "not_ready" },
        "version": r.version,
        "epoch": r.epoch,
    });
    if let Some(reason) = &r.reason {
        body["reason"] = reason.clone().into();
    }
    (status, Json(body)).into_response()
}

async fn readiness(ca: &Arc<Ca>) -> crate::authority::Readiness {
    if *ca.shutdown.borrow() {
        let m = ca.authority.model();
        return crate::authority::Readiness {
            ready: false,
            reason: Some("shutting down".into()),
            version: m.version(),
            epoch: m.epoch().to_string(),
        };
    }
    let a = ca.authority.clone();
    match tokio::task::spawn_blocking(move || a.readiness()).await {
        Ok(r) => r,
        Err(e) => crate::authority::Readiness {
            ready: false,
            reason: Some(format!("readiness check failed: {e}")),
            version: 0,
            epoch: String::new(),
        },
    }
}

/// `GET /metrics` (the metrics listener only).
async fn metrics(State(ca): State<Arc<Ca>>) -> Response {
    let r = readiness(&ca).await;
    let live = {
        let m = ca.authority.model();
        crate::metrics::Live {
            policy_version: m.version(),
            ready: r.ready,
            rejected_credentials: ca.authority.rejected_credentials(),
            users: m.users().len() as u64,
            hosts: m.active_host_count() as u64,
        }
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::METRICS.render(&live),
    )
        .into_response()
}

/// Binds `addr` and serves `/metrics` until `shutdown` turns true; returns the bound
/// address.
pub async fn serve_metrics(
    addr: SocketAddr,
    ca: Arc<Ca>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "only /metrics here\n") })
        .with_state(ca);
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    tracing::info!(local = %bound, "metrics served (GET /metrics, plain HTTP)");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// A CA loaded from a fresh data directory, its router, and its shutdown signal.
    fn ca() -> (tempfile::TempDir, axum::Router, watch::Sender<bool>) {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("ca");
        crate::init::create(&crate::init::InitArgs {
            data_dir: data_dir.clone(),
            user_ca_algorithm: "ed25519".into(),
            sans: Vec::new(),
            url: None,
            id_range: "200000-299999".into(),
            json: true,
            bootstrap_ttl: None,
            database: Default::default(),
            user_ca: None,
            host_ca: None,
        })
        .unwrap();
        let authority = crate::authority::Authority::open(
            &crate::datadir::DataDir::new(&data_dir),
            Default::default(),
        )
        .unwrap();
        let (tx, rx) = watch::channel(false);
        let ca = Arc::new(Ca {
            authority: Arc::new(authority),
            oidc: None,
            shutdown: rx,
        });
        (dir, super::super::router(ca), tx)
    }

    async fn get(app: &axum::Router, path: &str) -> (u16, serde_json::Value) {
        let r = app
            .clone()
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_shutting_down_is_live_but_not_ready() {
        let (_dir, app, stop) = ca();
        assert_eq!(get(&app, smith_api::endpoints::HEALTH_READY).await.0, 200);
        stop.send_replace(true);
        let (status, body) = get(&app, smith_api::endpoints::HEALTH_READY).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["status"], "not_ready");
        assert_eq!(body["reason"], "shutting down");
        assert_eq!(get(&app, smith_api::endpoints::HEALTH_LIVE).await.0, 200);
        assert_eq!(get(&app, smith_api::endpoints::HEALTH).await.0, 200);
    }
}
