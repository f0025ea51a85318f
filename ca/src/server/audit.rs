//! The audit endpoints.
//!
//! Hosts (mTLS, the host's own chain only):
//! - `POST /v1/host/audit` [`AuditBatch`] → [`AuditAck`]: the batch must continue the
//!   host's stored chain; it is verified and stored in one transaction. A gap, reordering
//!   or altered record → 409 `audit_chain_broken` naming the seq and reason; a batch
//!   starting at or below the head → 409 `audit_replay` (the host re-reads the head and
//!   sends what follows it). Every rejection is stored and logged.
//! - `GET /v1/host/audit/head` → [`AuditAck`].
//!
//! Admin (admin token):
//! - `GET /v1/admin/audit?host=H&user=U&since=UNIX&limit=N` → `Vec<Entry>`
//! - `GET /v1/admin/audit/verify` → `VerifyReport` (recomputed from the store)
//! - `GET /v1/admin/audit/rejections?limit=N` → `Vec<RejectionInfo>`
//! - `GET /v1/admin/audit/out-of-band?window_secs=S&threshold=N` → `Vec<Finding>`
//!
//! Must never: answer a host before its records are committed.

use super::admin::Admin;
use super::error::{ApiError, ApiJson, ApiQuery};
use super::hosts::HostCaller;
use super::Ca;
use crate::audit::{oob, Entry, Filter, RejectionInfo, VerifyReport};
use axum::extract::{DefaultBodyLimit, State};
use axum::Json;
use axum::Router;
use smith_api::chain::{AuditAck, AuditBatch};
use std::sync::Arc;

/// Largest upload body (hostd sends at most 500 records, about 1 MiB).
pub const AUDIT_BODY_LIMIT: usize = 4 << 20;

pub fn router() -> Router<Arc<Ca>> {
    use axum::routing::{get, post};
    Router::new()
        .route("/v1/host/audit", post(upload))
        .route("/v1/host/audit/head", get(head))
        .route("/v1/admin/audit", get(list))
        .route("/v1/admin/audit/verify", get(verify))
        .route("/v1/admin/audit/rejections", get(rejections))
        .route("/v1/admin/audit/out-of-band", get(out_of_band))
        .layer(DefaultBodyLimit::max(AUDIT_BODY_LIMIT))
}

async fn upload(
    State(ca): State<Arc<Ca>>,
    HostCaller { host, .. }: HostCaller,
    ApiJson(batch): ApiJson<AuditBatch>,
) -> Result<Json<AuditAck>, ApiError> {
    let n = batch.records.len();
    match ca.authority.audit_upload(&host.name, batch.records).await? {
        Ok(ack) => {
            crate::metrics::METRICS.audit_batches_accepted.inc();
            crate::metrics::METRICS.audit_records_accepted.add(n as u64);
            tracing::debug!(host = %host.name, records = n, acked_through = ack.acked_through, "audit records stored");
            Ok(Json(ack))
        }
        Err(rej) => {
            crate::metrics::METRICS.audit_batches_rejected.inc();
            tracing::warn!(host = %host.name, seq = rej.seq, code = %rej.code, reason = %rej.reason, "audit upload rejected");
            Err(ApiError::new(rej.code, rej.message()))
        }
    }
}

async fn head(
    State(ca): State<Arc<Ca>>,
    HostCaller { host, .. }: HostCaller,
) -> Result<Json<AuditAck>, ApiError> {
    let h = ca.run(move |a| a.audit_head(&host.name)).await?;
    Ok(Json(crate::audit::ack_of(h)))
}

#[derive(serde::Deserialize)]
struct ListQuery {
    host: Option<String>,
    user: Option<String>,
    since: Option<u64>,
    limit: Option<u32>,
}

async fn list(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<Entry>>, ApiError> {
    let f = Filter {
        host: q.host.filter(|h| !h.is_empty()),
        kind: None,
        user: q.user.filter(|u| !u.is_empty()),
        since: q.since,
        limit: q.limit.unwrap_or(1000).clamp(1, 100_000),
    };
    Ok(Json(ca.run(move |a| a.audit_list(&f)).await?))
}

async fn verify(_: Admin, State(ca): State<Arc<Ca>>) -> Result<Json<VerifyReport>, ApiError> {
    Ok(Json(ca.run(|a| a.audit_verify()).await?))
}

#[derive(serde::Deserialize)]
struct LimitQuery {
    limit: Option<u32>,
}

async fn rejections(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<RejectionInfo>>, ApiError> {
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    Ok(Json(ca.run(move |a| a.audit_rejections(limit)).await?))
}

#[derive(serde::Deserialize)]
struct OobQuery {
    window_secs: Option<u64>,
    threshold: Option<usize>,
}

async fn out_of_band(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiQuery(q): ApiQuery<OobQuery>,
) -> Result<Json<Vec<oob::Finding>>, ApiError> {
    let d = oob::Config::default();
    let cfg = oob::Config {
        window_secs: q.window_secs.unwrap_or(d.window_secs).clamp(1, 86_400 * 30),
        threshold: q.threshold.unwrap_or(d.threshold).clamp(1, 1_000_000),
    };
    Ok(Json(ca.run(move |a| a.out_of_band(cfg)).await?))
}
