//! `POST /v1/certs/user` (certificate issuance) and `GET /v1/auth/config`.
//!
//! Authenticates the caller (a user token through the authority, or an OIDC ID token
//! verified here against the IdP's keys) and hands the request to
//! [`crate::authority::Authority::issue`], which decides, signs, records and answers.
//!
//! Must never: decide anything about the request itself, or answer before the authority
//! has recorded the decision.

use super::error::{ApiError, ApiJson};
use super::{bearer, Ca, Peer};
use crate::auth::Principal;
use crate::authority::{Caller, IssueInput, Issued};
use axum::extract::State;
use axum::http::request::Parts;
use axum::Json;
use smith_api::{AuthConfig, CertRequest, CertResponse, ErrorCode};
use std::sync::Arc;

/// Extractor: who asks for a certificate. A user token is settled here; an OIDC ID
/// token is verified here and judged by the authority (nonce, sign-in, decision log).
pub struct Engineer(pub Caller);

impl axum::extract::FromRequestParts<Arc<Ca>> for Engineer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, ca: &Arc<Ca>) -> Result<Self, ApiError> {
        if let Some(v) = &ca.oidc {
            let token = bearer(parts);
            if crate::oidc::verify::looks_like_jwt(token) {
                return match v.verify(token).await {
                    Ok(t) => Ok(Engineer(Caller::Oidc(t))),
                    // Unauthenticated: counted, never recorded, no claim of it shown.
                    Err(r) => {
                        ca.authority.reject_credential(&r);
                        Err(ApiError::new(
                            r.code,
                            format!("ID token refused: {}", r.reason),
                        ))
                    }
                };
            }
        }
        let principal = ca
            .authenticated(parts)
            .inspect_err(|e| {
                ca.authority.reject_credential(&crate::oidc::Refusal {
                    code: e.code,
                    reason: e.message.clone(),
                })
            })?
            .principal;
        let refused = match principal {
            Principal::User(u) => return Ok(Engineer(Caller::Token(u))),
            Principal::Admin { .. } => {
                "the admin token cannot get certificates; mint a user token with \
                 `smith-ca admin user token NAME`"
            }
            Principal::Enroll { .. } => "an enrollment token cannot get certificates",
            Principal::Scim => "a SCIM token cannot get certificates",
        };
        Err(ApiError::new(ErrorCode::NotAUser, refused))
    }
}

/// `GET /v1/auth/config` (public): the OpenID Provider `smith login` signs in with.
pub async fn auth_config(State(ca): State<Arc<Ca>>) -> Result<Json<AuthConfig>, ApiError> {
    match &ca.oidc {
        Some(v) => Ok(Json(AuthConfig {
            issuer: v.cfg.issuer.clone(),
            client_id: v.cfg.client_id.clone(),
            scopes: v.cfg.scopes.clone(),
            username_claim: Some(v.cfg.username_claim.clone()),
            groups_claim: Some(v.cfg.groups_claim.clone()),
            max_sign_in_age_secs: Some(v.cfg.max_sign_in_age.as_secs()),
        })),
        None => Err(ApiError::new(
            ErrorCode::OidcNotConfigured,
            "this CA has no OpenID Provider configured (smith-ca serve --oidc-issuer); sign \
             in with a token from your admin instead (--token or SMITH_TOKEN)",
        )),
    }
}

pub async fn issue(
    State(ca): State<Arc<Ca>>,
    peer: Peer,
    Engineer(caller): Engineer,
    ApiJson(req): ApiJson<CertRequest>,
) -> Result<Json<CertResponse>, ApiError> {
    let issued = run_issue(
        &ca,
        IssueInput {
            caller,
            public_key: req.public_key,
            scope: req.scope,
            ttl_secs: req.ttl_secs,
            reason: req.reason,
            source: peer.addr.ip(),
            oidc_nonce: req.oidc_nonce,
            target: None,
        },
    )
    .await?;
    Ok(Json(cert_response(issued)))
}

/// Issues through the authority, counting the outcome in the metrics.
pub(super) async fn run_issue(ca: &Arc<Ca>, input: IssueInput) -> Result<Issued, ApiError> {
    let started = std::time::Instant::now();
    let issued = ca.authority.issue(input).await;
    let m = &crate::metrics::METRICS;
    match issued {
        Ok(i) => {
            m.issuance_allowed.inc();
            m.issuance_seconds.observe(started.elapsed());
            Ok(i)
        }
        Err(e) => {
            if matches!(e, crate::authority::IssueError::Denied(_)) {
                m.issuance_denied.inc();
            } else {
                m.issuance_failed.inc();
            }
            Err(e.into())
        }
    }
}

pub(super) fn cert_response(issued: Issued) -> CertResponse {
    CertResponse {
        certificate: issued.certificate,
        serial: issued.serial,
        key_id: issued.key_id,
        principals: issued.principals,
        scope: issued.scope,
        valid_after: issued.valid_after,
        valid_before: issued.valid_before,
        clipped_to_secs: issued.clipped_to,
    }
}
