//! The audit endpoints.
//!
//! Hosts (mTLS, the host's own chain only):
//! - `POST /v1/host/audit` [`AuditBatch`] → [`AuditAck`]: the batch must continue the
//!   host's stored chain; it is verified and stored in one transaction by the writer
//!   thread. A gap, reordering or altered record → 409 `audit_chain_broken` naming the
//!   seq and reason; a batch starting at or below the head → 409 `audit_replay` (the host re-reads
//!   the head and sends what follows it). Every
//!   rejection is stored in `audit_rejections` and logged.
//! - `GET /v1/host/audit/head` → [`AuditAck`].
//!
//! Admin (admin token):
//! - `GET /v1/admin/audit?host=H&user=U&since=UNIX&limit=N` → `Vec<Entry>`
//! - `GET /v1/admin/audit/verify` → `VerifyReport` (recomputed from the database)
//! - `GET /v1/admin/audit/rejections?limit=N` → `Vec<RejectionInfo>`
//! - `GET /v1/admin/audit/out-of-band?window_secs=S&threshold=N` → `Vec<Finding>`
//!
//! Must never: store a batch that does not continue the chain, or answer a host before
//! its records are committed.

use super::oob;
use super::store::{self, Entry, Filter, RejectionInfo, VerifyReport};
use crate::server::admin::Admin;
use crate::server::error::{ApiError, ApiJson, ApiQuery};
use crate::server::{Ca, Peer};
use axum::extract::{DefaultBodyLimit, State};
use axum::Json;
use axum::Router;
use smith_api::chain::{AuditAck, AuditBatch};
use smith_api::ErrorCode;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Largest upload body (hostd sends at most 500 records, about 1 MiB).
pub const AUDIT_BODY_LIMIT: usize = 4 << 20;
/// Most records in one upload.
pub const MAX_RECORDS: usize = 1000;

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
    peer: Peer,
    ApiJson(batch): ApiJson<AuditBatch>,
) -> Result<Json<AuditAck>, ApiError> {
    let host = crate::server::hosts::host_of(&ca, &peer)?;
    if batch.records.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            "an audit batch needs at least one record",
        ));
    }
    if batch.records.len() > MAX_RECORDS {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("at most {MAX_RECORDS} records per batch"),
        ));
    }
    let n = batch.records.len();
    match ca
        .writer
        .audit(host.name.to_string(), batch.records)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?
    {
        Ok(ack) => {
            tracing::debug!(host = %host.name, records = n, acked_through = ack.acked_through, "audit records stored");
            Ok(Json(ack))
        }
        Err(rej) => {
            tracing::warn!(host = %host.name, seq = rej.seq, code = %rej.code, reason = %rej.reason, "audit upload rejected");
            Err(ApiError::new(rej.code, rej.message()))
        }
    }
}

async fn head(State(ca): State<Arc<Ca>>, peer: Peer) -> Result<Json<AuditAck>, ApiError> {
    let host = crate::server::hosts::host_of(&ca, &peer)?;
    let name = host.name.to_string();
    let h = ca
        .query(move |s| store::head(s.conn(), &name).map_err(Into::into))
        .await?;
    Ok(Json(store::ack_of(h)))
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
        user: q.user.filter(|u| !u.is_empty()),
        since: q.since,
        limit: q.limit.unwrap_or(1000).clamp(1, 100_000),
    };
    Ok(Json(
        ca.query(move |s| store::list(s.conn(), &f).map_err(Into::into))
            .await?,
    ))
}

async fn verify(_: Admin, State(ca): State<Arc<Ca>>) -> Result<Json<VerifyReport>, ApiError> {
    let r = ca
        .query(|s| store::verify_all(s.conn()).map_err(Into::into))
        .await?;
    if let Some(b) = &r.first_break {
        tracing::error!(host = %b.host, seq = b.seq, reason = %b.reason, "audit verify: a chain is broken");
    }
    Ok(Json(r))
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
    Ok(Json(
        ca.query(move |s| store::rejections(s.conn(), limit).map_err(Into::into))
            .await?,
    ))
}

#[derive(serde::Deserialize)]
struct OobQuery {
    window_secs: Option<u64>,
    threshold: Option<usize>,
}

/// SHA256 fingerprints (`SHA256:...`) of OpenSSH public key lines.
pub fn fingerprints(lines: &[String]) -> HashSet<String> {
    lines
        .iter()
        .filter_map(|l| ssh_key::PublicKey::from_openssh(l.trim()).ok())
        .map(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
        .collect()
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
    let cas = fingerprints(&ca.user_ca_keys);
    let findings = ca
        .query(move |s| {
            let conn = s.conn();
            let events = store::sshd_events(conn)?;
            let serials: HashSet<u64> = events
                .iter()
                .filter_map(|(_, _, e)| {
                    serde_json::from_str::<serde_json::Value>(e)
                        .ok()?
                        .get("serial")?
                        .as_u64()
                })
                .collect();
            let mut issued = HashMap::new();
            {
                let mut st = conn.prepare_cached(
                    "SELECT user_name, key_id, principals FROM certificates WHERE serial = ?1",
                )?;
                for serial in serials {
                    if serial > i64::MAX as u64 {
                        continue;
                    }
                    let mut rows = st.query([serial as i64])?;
                    if let Some(r) = rows.next()? {
                        let principals: String = r.get(2)?;
                        issued.insert(
                            serial,
                            oob::Issued {
                                user: r.get(0)?,
                                key_id: r.get(1)?,
                                principals: principals.split(',').map(String::from).collect(),
                            },
                        );
                    }
                }
            }
            let mut disabled = HashMap::new();
            {
                let mut st = conn
                    .prepare("SELECT name, disabled_at FROM users WHERE disabled_at IS NOT NULL")?;
                let rows =
                    st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                for row in rows {
                    let (name, at) = row?;
                    disabled.insert(name, at.max(0) as u64);
                }
            }
            Ok(oob::classify(&events, &issued, &disabled, &cas, cfg))
        })
        .await?;
    Ok(Json(findings))
}
