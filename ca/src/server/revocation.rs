//! Admin endpoints for issued certificates: `GET /v1/admin/certs` (list) and
//! `POST /v1/admin/certs/revoke` (by serial, key ID or user).
//!
//! Must never: revoke without exactly one selector.

use super::admin::{parse_user, Admin};
use super::error::{ApiError, ApiJson, ApiQuery};
use super::Ca;
use crate::authority::{now, Error};
use crate::store::{CertQuery, Selector};
use axum::extract::State;
use axum::Json;
use smith_api::{IssuedCert, RevokeRequest, RevokeResponse};
use std::sync::Arc;

#[derive(serde::Deserialize)]
pub struct CertQueryParams {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    valid: bool,
    #[serde(default)]
    limit: Option<u32>,
}

pub async fn list(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiQuery(q): ApiQuery<CertQueryParams>,
) -> Result<Json<Vec<IssuedCert>>, ApiError> {
    let query = CertQuery {
        user: q.user.as_deref().map(parse_user).transpose()?,
        valid_only: q.valid,
        limit: q.limit.unwrap_or(1000).clamp(1, 100_000),
        now: now(),
    };
    Ok(Json(ca.run(move |a| a.certs(&query)).await?))
}

fn selector(req: &RevokeRequest) -> Result<Selector, Error> {
    match (req.serial, &req.key_id, &req.user) {
        (Some(s), None, None) => Ok(Selector::Serial(s)),
        (None, Some(k), None) => Ok(Selector::KeyId(k.clone())),
        (None, None, Some(u)) => Ok(Selector::User(u.clone())),
        _ => Err(Error::InvalidInput(
            "name exactly one of serial, key_id or user".into(),
        )),
    }
}

pub async fn revoke(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let sel = selector(&req)?;
    let out = ca
        .run(move |a| a.revoke(&origin, &sel, req.reason.as_deref()))
        .await?;
    Ok(Json(RevokeResponse {
        revoked: out.revoked,
        already_revoked: out.already_revoked,
        expired: out.expired,
        version: out.version,
    }))
}
