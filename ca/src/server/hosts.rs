//! Host endpoints: enrollment with a single-use token, mTLS client certificate renewal,
//! and the long-polling sync. The host's identity is its verified client certificate
//! ([`crate::authority::Authority::host_identity`]).
//!
//! Must never: let one host read another's snapshot, or hold a model lock while waiting.

use super::error::{ApiError, ApiJson, ApiQuery};
use super::{Ca, Peer};
use crate::authority::{EnrollInput, Enrolled, Error};
use crate::model::Host;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use smith_api::{EnrollRequestNamed, EnrollResponse, RenewRequest};
use std::sync::Arc;
use std::time::Duration;

/// Longest long-poll a host may ask for.
pub const MAX_WAIT_SECS: u64 = 60;

fn answer(ca: &Ca, e: Enrolled) -> EnrollResponse {
    EnrollResponse {
        host_name: e.host.name,
        tags: e.host.tags,
        client_cert_pem: e.client_cert_pem,
        root_pem: ca.authority.tls_root().cert_pem.clone(),
        client_cert_not_after: e.client_cert_not_after,
        user_ca_keys: ca.authority.user_ca_keys(),
        ssh_host_certs: e.ssh_host_certs,
    }
}

/// Extractor: an enrollment token sent as `Authorization: Bearer` is checked before the
/// body is read (a request without one carries it in its body, as older hosts send it).
pub struct EnrollBearer(Option<String>);

impl axum::extract::FromRequestParts<Arc<Ca>> for EnrollBearer {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        ca: &Arc<Ca>,
    ) -> Result<Self, ApiError> {
        let token = super::bearer(parts);
        if token.is_empty() {
            return Ok(EnrollBearer(None));
        }
        ca.authority.check_enrollment_token(token)?;
        Ok(EnrollBearer(Some(token.to_string())))
    }
}

pub async fn enroll(
    State(ca): State<Arc<Ca>>,
    peer: Peer,
    EnrollBearer(bearer): EnrollBearer,
    ApiJson(req): ApiJson<EnrollRequestNamed>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    if bearer.as_ref().is_some_and(|b| *b != req.request.token) {
        return Err(Error::InvalidInput(
            "the enrollment token in the Authorization header and the one in the body differ"
                .into(),
        )
        .into());
    }
    let input = EnrollInput {
        token: req.request.token,
        host_name: req.request.host_name,
        csr_pem: req.request.csr_pem,
        ssh_host_keys: req.request.ssh_host_keys,
        ssh_names: req.ssh_names,
    };
    let enrolled = ca.run(move |a| a.enroll(input)).await?;
    tracing::info!(host = %enrolled.host.name, peer = %peer.addr, "enrollment answered");
    Ok((StatusCode::CREATED, Json(answer(&ca, enrolled))))
}

/// The enrolled, not removed host presenting this connection's client certificate.
pub(crate) fn host_of(ca: &Ca, peer: &Peer) -> Result<Host, ApiError> {
    Ok(ca.authority.host_identity(peer.cert.as_ref())?)
}

/// Extractor: the host presenting this connection's client certificate, and that
/// certificate's serial. As a parts extractor it runs before any body is read, so an
/// unauthenticated peer never gets a body parsed.
pub struct HostCaller {
    pub host: Host,
    pub serial: String,
}

impl axum::extract::FromRequestParts<Arc<Ca>> for HostCaller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        ca: &Arc<Ca>,
    ) -> Result<Self, ApiError> {
        let peer = Peer::from_request_parts(parts, ca).await?;
        let host = host_of(ca, &peer)?;
        Ok(HostCaller {
            host,
            serial: peer.cert.map(|c| c.serial).unwrap_or_default(),
        })
    }
}

pub async fn renew(
    State(ca): State<Arc<Ca>>,
    HostCaller {
        host,
        serial: presented,
    }: HostCaller,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let renewed = ca
        .run(move |a| a.renew(&host, &presented, &req.csr_pem, &req.ssh_host_keys))
        .await?;
    Ok(Json(answer(&ca, renewed)))
}

#[derive(serde::Deserialize)]
pub struct SyncQuery {
    #[serde(default)]
    since: u64,
    #[serde(default)]
    wait: u64,
    #[serde(default)]
    host: Option<String>,
    /// The epoch of the host's version (hostd since epochs).
    #[serde(default)]
    epoch: Option<String>,
    /// Heartbeat period in seconds (`smith_api::SyncQuery::beat`).
    #[serde(default)]
    beat: Option<u64>,
}

pub async fn sync(
    State(ca): State<Arc<Ca>>,
    peer: Peer,
    ApiQuery(q): ApiQuery<SyncQuery>,
) -> Result<Response, ApiError> {
    // A replica that cannot read the policy sends none: the host moves to another.
    ca.authority.serving()?;
    let host = host_of(&ca, &peer)?;
    if let Some(h) = &q.host {
        if h != host.name.as_str() {
            return Err(Error::WrongHost {
                cert: host.name,
                asked: h.clone(),
            }
            .into());
        }
    }
    // Another epoch's version means nothing here: a full snapshot, at once.
    let since = ca.authority.sync_base(&host, q.since, q.epoch.as_deref());
    let mut rx = ca.authority.subscribe();
    let current = *rx.borrow_and_update();
    let known = since > 0 && since <= current;
    if known {
        // The host has applied `since` (its user CA keys among it): a user CA rotation
        // waiting for it must not wait out its long poll.
        ca.authority.host_seen(host.id, Some(since));
    }
    if since == current && since > 0 {
        let wait = Duration::from_secs(q.wait.min(MAX_WAIT_SECS));
        if let Some(beat) = q.beat.filter(|_| q.wait > 0) {
            let beat = Duration::from_secs(beat.clamp(1, MAX_BEAT_SECS));
            return Ok(beating(ca, peer, host, since, rx, wait, beat));
        }
        let _waiting = crate::metrics::Waiting::start();
        let mut shutdown = ca.shutdown.clone();
        let changed = tokio::select! {
            r = tokio::time::timeout(wait, rx.changed()) => matches!(r, Ok(Ok(()))),
            _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => false,
        };
        if !changed {
            ca.authority.host_seen(host.id, Some(since));
            crate::metrics::METRICS.syncs.inc();
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    // Re-check: the host may have been removed, or this replica outdated, while waiting.
    ca.authority.serving()?;
    let host = host_of(&ca, &peer)?;
    let resp = ca.authority.sync_view(&host, since);
    ca.authority.host_seen(host.id, known.then_some(since));
    crate::metrics::METRICS.syncs.inc();
    Ok(Json(resp).into_response())
}

/// Longest heartbeat period a host may ask for.
pub const MAX_BEAT_SECS: u64 = 30;

/// A long poll with a heartbeat: `200` at once with the `smith-beat` header, a space
/// every `beat` while nothing changes, then the snapshot as JSON, or `null` when nothing
/// changed within `wait` (or the host was removed meanwhile: its next request hears
/// why). The wait runs in its own task; a host that hangs up ends it.
fn beating(
    ca: Arc<Ca>,
    peer: Peer,
    host: Host,
    since: u64,
    mut rx: tokio::sync::watch::Receiver<u64>,
    wait: Duration,
    beat: Duration,
) -> Response {
    let (tx, chunks) = tokio::sync::mpsc::channel::<axum::body::Bytes>(4);
    tokio::spawn(async move {
        let _waiting = crate::metrics::Waiting::start();
        let space = axum::body::Bytes::from_static(b" ");
        if tx.send(space.clone()).await.is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut shutdown = ca.shutdown.clone();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
        let changed = loop {
            tokio::select! {
                r = rx.changed() => break r.is_ok(),
                _ = tokio::time::sleep_until(deadline) => break false,
                _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => break false,
                _ = tick.tick() => {
                    if tx.send(space.clone()).await.is_err() {
                        return;
                    }
                }
            }
        };
        let outdated = ca.authority.serving().is_err();
        let body = match (changed, host_of(&ca, &peer)) {
            // Its next request hears why (upgrade_required) and moves on.
            (true, _) if outdated => b"null".to_vec(),
            (true, Ok(host)) => {
                let resp = ca.authority.sync_view(&host, since);
                ca.authority.host_seen(host.id, Some(since));
                serde_json::to_vec(&resp).unwrap_or_else(|_| b"null".to_vec())
            }
            (false, _) => {
                ca.authority.host_seen(host.id, Some(since));
                b"null".to_vec()
            }
            (true, Err(_)) => b"null".to_vec(),
        };
        crate::metrics::METRICS.syncs.inc();
        let _ = tx.send(axum::body::Bytes::from(body)).await;
    });
    let stream = futures_util::stream::unfold(chunks, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    let mut r = axum::body::Body::from_stream(stream).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&beat.as_secs().to_string()) {
        r.headers_mut().insert(smith_api::client::BEAT_HEADER, v);
    }
    r
}
