//! Host-aware certificates over HTTPS: `POST /v1/certs/host` (a certificate for exactly
//! the grants that fit one host as one login) and `POST /v1/user/hosts` (the hosts the
//! caller may reach). Callers authenticate as for `POST /v1/certs/user`
//! ([`super::certs::Engineer`]); the authority decides, signs and records.
//!
//! Must never: decide anything itself.

use super::certs::{cert_response, run_issue, Engineer};
use super::error::{ApiError, ApiJson};
use super::{Ca, Peer};
use crate::authority::{HostTarget, IssueInput};
use axum::extract::State;
use axum::Json;
use smith_api::{HostCertRequest, HostCertResponse, HostsRequest, HostsResponse};
use std::sync::Arc;

/// `POST /v1/certs/host`.
pub async fn issue_for_host(
    State(ca): State<Arc<Ca>>,
    peer: Peer,
    Engineer(caller): Engineer,
    ApiJson(req): ApiJson<HostCertRequest>,
) -> Result<Json<HostCertResponse>, ApiError> {
    let mut issued = run_issue(
        &ca,
        IssueInput {
            caller,
            public_key: req.public_key,
            scope: Default::default(),
            ttl_secs: req.ttl_secs,
            reason: req.reason,
            source: peer.addr.ip(),
            oidc_nonce: req.oidc_nonce,
            target: Some(HostTarget {
                host: req.host,
                login: req.login,
            }),
        },
    )
    .await?;
    let target = issued
        .target
        .take()
        .ok_or_else(|| ApiError::internal("issuing for a host", "no target in the answer"))?;
    Ok(Json(HostCertResponse {
        cert: cert_response(issued),
        host: target.host,
        matched: target.matched,
        login: target.login,
    }))
}

/// `POST /v1/user/hosts`.
pub async fn hosts(
    State(ca): State<Arc<Ca>>,
    peer: Peer,
    Engineer(caller): Engineer,
    ApiJson(req): ApiJson<HostsRequest>,
) -> Result<Json<HostsResponse>, ApiError> {
    let (user, hosts) = ca
        .authority
        .reachable_hosts(caller, req.oidc_nonce.as_deref(), peer.addr.ip())
        .await?;
    Ok(Json(HostsResponse {
        user,
        hosts,
        user_ca_keys: ca.authority.user_ca_keys(),
        generated_at: crate::authority::now(),
    }))
}
