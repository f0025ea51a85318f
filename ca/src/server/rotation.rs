//! Admin endpoints of CA key rotation: `GET /v1/admin/ca/rotation?role=user|host` (where
//! it stands) and `POST /v1/admin/ca/rotate` (start one, or `force` the pending step:
//! `smith_api::endpoints::ADMIN_CA_ROTATION`, `ADMIN_CA_ROTATE`);
//! and the tick that takes due steps (every few seconds).
//!
//! Must never: rotate for anyone but an admin.

use super::admin::Admin;
use super::error::{ApiError, ApiJson, ApiQuery};
use super::Ca;
use crate::authority::{Authority, Error, RotateInput, RotationStatus};
use crate::cakeys::CaRole;
use axum::extract::State;
use axum::Json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often due rotation steps are taken.
pub const TICK: Duration = Duration::from_secs(2);

#[derive(serde::Deserialize)]
pub struct RoleQuery {
    role: CaRole,
}

/// Body of `POST /v1/admin/ca/rotate`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RotateRequest {
    pub role: CaRole,
    /// Take the pending step now instead of starting a rotation.
    #[serde(default)]
    pub force: bool,
    /// The new key's PKCS#11 URI (absent: a new key file).
    #[serde(default)]
    pub to: Option<String>,
    /// Host CA: seconds before hosts get certificates from the new key.
    #[serde(default)]
    pub grace_secs: Option<u64>,
    /// User CA: hosts not seen for this many seconds do not hold up the switch.
    #[serde(default)]
    pub stale_after_secs: Option<u64>,
}

pub async fn status(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiQuery(q): ApiQuery<RoleQuery>,
) -> Result<Json<RotationStatus>, ApiError> {
    Ok(Json(ca.run(move |a| Ok(a.rotation_status(q.role))).await?))
}

pub async fn rotate(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<RotateRequest>,
) -> Result<Json<RotationStatus>, ApiError> {
    if req.force && (req.to.is_some() || req.grace_secs.is_some() || req.stale_after_secs.is_some())
    {
        return Err(
            Error::InvalidInput("--force takes no --to, --grace or --stale-after".into()).into(),
        );
    }
    if req.role == CaRole::User && req.grace_secs.is_some() {
        return Err(Error::InvalidInput(
            "--grace is for the host CA; the user CA switches once hosts have the new key".into(),
        )
        .into());
    }
    if req.role == CaRole::Host && req.stale_after_secs.is_some() {
        return Err(Error::InvalidInput(
            "--stale-after is for the user CA; the host CA switches after --grace".into(),
        )
        .into());
    }
    let out = ca
        .run(move |a| {
            if req.force {
                a.rotate_force(&origin, req.role)
            } else {
                a.rotate(
                    &origin,
                    req.role,
                    &RotateInput {
                        to: req.to.clone(),
                        grace_secs: req.grace_secs,
                        stale_after_secs: req.stale_after_secs,
                    },
                )
            }
        })
        .await?;
    Ok(Json(out))
}

/// Takes due rotation steps every [`TICK`] until shutdown.
pub fn spawn_tick(authority: Arc<Authority>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let a = authority.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || a.rotation_tick()).await {
                tracing::warn!(error = %e, "CA key rotation step failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
}
