//! Admin endpoints for issued certificates: `GET /v1/admin/certs` (list) and
//! `POST /v1/admin/certs/revoke` (by serial, key ID or user).
//!
//! Must never: revoke without exactly one selector, answer before the revocation and
//! its audit records are committed, or report a certificate as revoked that was not.

use super::admin::Admin;
use super::error::{ApiError, ApiJson, ApiQuery};
use super::{now, Ca};
use crate::model::Change;
use crate::revoke::{self, Selector};
use axum::extract::State;
use axum::Json;
use smith_api::ErrorCode;
use smith_api::{IssuedCert, RevokeRequest, RevokeResponse};
use smith_proto::UserName;
use std::sync::{Arc, Mutex};

#[derive(serde::Deserialize)]
pub struct CertQuery {
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
    ApiQuery(q): ApiQuery<CertQuery>,
) -> Result<Json<Vec<IssuedCert>>, ApiError> {
    let user = match q.user {
        Some(u) => Some(
            UserName::new(&u)
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::InvalidName,
                        format!("user name '{}': {e}", u.escape_debug()),
                    )
                })?
                .into_string(),
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    let at = now();
    Ok(Json(
        ca.query(move |s| revoke::list(s.conn(), user.as_deref(), q.valid, limit, at))
            .await?,
    ))
}

fn selector(req: &RevokeRequest) -> Result<Selector, ApiError> {
    let given = [
        req.serial.is_some(),
        req.key_id.is_some(),
        req.user.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            "name exactly one of serial, key_id or user",
        ));
    }
    if let Some(s) = req.serial {
        return Ok(Selector::Serial(s));
    }
    if let Some(k) = &req.key_id {
        if k.is_empty() || k.len() > 256 || k.chars().any(|c| c.is_control()) {
            return Err(ApiError::new(
                ErrorCode::InvalidInput,
                "key_id must be 1 to 256 printable characters",
            ));
        }
        return Ok(Selector::KeyId(k.clone()));
    }
    req.user.clone().map(Selector::User).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidInput,
            "name exactly one of serial, key_id or user",
        )
    })
}

pub async fn revoke(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let sel = selector(&req)?;
    let reason = req
        .reason
        .clone()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "revoked by the admin".to_string());
    revoke::check_reason(&reason).map_err(|e| ApiError::new(ErrorCode::InvalidReason, e))?;
    let via = match &sel {
        Selector::Serial(_) => "serial",
        Selector::KeyId(_) => "key_id",
        Selector::User(_) => "user",
    };
    let reason_out = reason.clone();
    let out = Arc::new(Mutex::new(None));
    let out_plan = out.clone();
    let ca_key = ca.user_ca_keys.first().cloned().unwrap_or_default();
    let what = format!("cert revoke {sel}");
    let sel_text = sel.to_string();
    let version = ca
        .mutate_with(what, move |m, store, at| {
            let plan = revoke::plan(store.conn(), &sel, at)?;
            let plan = match (plan, &sel) {
                (Some(p), _) => p,
                // A known user without certificates: nothing to do, not an error.
                (None, Selector::User(u)) if m.users.contains_key(u) => Default::default(),
                (None, _) => {
                    return Err(ApiError::new(ErrorCode::NotFound,
                        format!(
                            "this CA issued no certificate with {sel_text}; see `smith-ca admin cert list`"
                        ),
                    ))
                }
            };
            let revs = revoke::revocations(&plan.revoke, &ca_key, at, &reason, via);
            *out_plan.lock().unwrap_or_else(|e| e.into_inner()) = Some(plan);
            Ok(if revs.is_empty() {
                vec![]
            } else {
                vec![Change::Revoke(revs)]
            })
        })
        .await?;
    let plan = out
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    let at = now();
    let revoked = plan
        .revoke
        .into_iter()
        .map(|mut c| {
            c.revoked = Some(smith_api::RevocationInfo {
                revoked_at: at,
                reason: reason_out.clone(),
                via: via.to_string(),
            });
            c
        })
        .collect::<Vec<_>>();
    for c in &revoked {
        tracing::info!(serial = c.serial, key_id = %c.key_id, user = %c.user, via, "certificate revoked");
    }
    Ok(Json(RevokeResponse {
        revoked,
        already_revoked: plan.already_revoked,
        expired: plan.expired,
        version,
    }))
}
