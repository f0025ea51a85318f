//! `POST /v1/certs/user`: certificate issuance, and `GET /v1/auth/config`.
//!
//! Authenticate (a user token through the [`crate::auth::Authenticator`] seam, or an
//! OIDC ID token verified by [`crate::oidc`], whose nonce must match the request's and
//! whose sign-in may provision the user and set their memberships), decide from the
//! in-memory model ([`crate::issue::decide`]), sign with the user CA key, record the
//! decision and the certificate through the group-commit writer, and only then answer.
//! Denials are recorded too, with their reason, including refused ID tokens (labelled
//! with the token's unverified login name).
//!
//! Must never: read SQLite, answer before the record is durable, or sign for a principal
//! other than the authenticated user's name.

use super::error::{ApiError, ApiJson};
use super::{now, Ca, Peer};
use crate::auth::{request_id, Principal};
use crate::issue::{decide, Denied, IssueRequest};
use crate::oidc::{IdToken, Refusal};
use crate::sshca::{fingerprint, parse_subject_key, sign_user_cert, UserCertSpec};
use crate::writer::{CertRow, DecisionRow, Record};
use axum::extract::State;
use axum::http::request::Parts;
use axum::Json;
use smith_api::ErrorCode;
use smith_api::{AuthConfig, CertRequest, CertResponse};
use smith_proto::UserName;
use std::sync::Arc;

/// Clock-skew backdating of `valid_after`.
pub const BACKDATE_SECS: u64 = 300;

/// Extractor: who asks for a certificate. A user token is settled here; an OIDC ID
/// token is verified here but judged in the handler (nonce, sign-in, decision log).
pub enum Engineer {
    Token(UserName),
    Oidc(Result<IdToken, Refusal>),
}

fn bearer(parts: &Parts) -> &str {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or("")
        .trim()
}

impl axum::extract::FromRequestParts<Arc<Ca>> for Engineer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, ca: &Arc<Ca>) -> Result<Self, ApiError> {
        if let Some(v) = &ca.oidc {
            let token = bearer(parts);
            if crate::oidc::verify::looks_like_jwt(token) {
                return Ok(Engineer::Oidc(v.verify(token).await));
            }
        }
        match ca.principal(parts)? {
            Principal::User(u) => Ok(Engineer::Token(u)),
            Principal::Admin => Err(ApiError::new(
                ErrorCode::NotAUser,
                "the admin token cannot get certificates; mint a user token with \
                 `smith-ca admin user token NAME`",
            )),
            Principal::Enroll { .. } => Err(ApiError::new(
                ErrorCode::NotAUser,
                "an enrollment token cannot get certificates",
            )),
            Principal::Scim => Err(ApiError::new(
                ErrorCode::NotAUser,
                "a SCIM token cannot get certificates",
            )),
        }
    }
}

async fn record(ca: &Ca, rec: Record) -> Result<u64, ApiError> {
    ca.writer.record(rec).await.map_err(|e| match e {
        crate::writer::WriteError::Overloaded => {
            ApiError::new(ErrorCode::Overloaded, e.to_string())
        }
        crate::writer::WriteError::ShuttingDown => {
            ApiError::new(ErrorCode::ShuttingDown, e.to_string())
        }
        crate::writer::WriteError::Failed(_) => ApiError::internal("recording the decision", e),
    })
}

async fn deny(ca: &Ca, decision: DecisionRow, d: Denied) -> ApiError {
    let mut decision = decision;
    decision.allowed = false;
    decision.reason = d.reason.clone();
    decision.grant_ids = d.grant_ids.clone();
    tracing::info!(user = %decision.user, scope = %decision.scope, code = %d.code, reason = %d.reason, "certificate denied");
    if let Err(e) = record(
        ca,
        Record {
            decision,
            cert: None,
        },
    )
    .await
    {
        return e;
    }
    ApiError::new(d.code, d.reason)
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
        })),
        None => Err(ApiError::new(
            ErrorCode::OidcNotConfigured,
            "this CA has no OpenID Provider configured (smith-ca serve --oidc-issuer); sign \
             in with a token from your admin instead (--token or SMITH_TOKEN)",
        )),
    }
}

fn refused(r: Refusal) -> Denied {
    Denied::new(r.code, r.reason)
}

/// Applies a verified OIDC sign-in: nonce rule, then provisioning and memberships.
/// Returns the user and a note for the decision log.
async fn sign_in(
    ca: &Arc<Ca>,
    t: IdToken,
    req: &CertRequest,
) -> Result<(UserName, String), Refusal> {
    crate::oidc::verify::check_nonce(t.nonce.as_deref(), req.oidc_nonce.as_deref())?;
    if !t.ignored_groups.is_empty() {
        tracing::info!(user = %t.username, ignored = ?t.ignored_groups, "OIDC groups that are not valid group names were ignored");
    }
    let planned = crate::oidc::signin::plan(&ca.model(), &t, now())?;
    if !planned.is_empty() {
        let tok = t.clone();
        let what = format!("oidc sign-in {} (sub {})", t.username, t.subject);
        ca.mutate(what, move |m, at| {
            crate::oidc::signin::plan(m, &tok, at).map_err(|r| ApiError::new(r.code, r.reason))
        })
        .await
        .map_err(|e| Refusal {
            code: ErrorCode::OidcSignInFailed,
            reason: e.message,
            claimed_user: None,
        })?;
    }
    let groups: Vec<&str> = t.groups.iter().map(|g| g.as_str()).collect();
    let note = format!(
        "via OIDC (sub {}, token groups: {})",
        t.subject,
        if groups.is_empty() {
            "none".to_string()
        } else {
            groups.join(",")
        }
    );
    Ok((t.username, note))
}

pub async fn issue(
    State(ca): State<Arc<Ca>>,
    peer: Peer,
    engineer: Engineer,
    ApiJson(req): ApiJson<CertRequest>,
) -> Result<Json<CertResponse>, ApiError> {
    let at = now();
    let mut decision = DecisionRow {
        at,
        user: String::new(),
        allowed: false,
        reason: String::new(),
        scope: req.scope.to_string(),
        requested_ttl_secs: req.ttl_secs,
        source_ip: peer.addr.ip().to_string(),
        grant_ids: vec![],
    };
    let (user, via) = match engineer {
        Engineer::Token(u) => (u, None),
        Engineer::Oidc(verified) => {
            let outcome = match verified {
                Ok(t) => {
                    decision.user = t.username.to_string();
                    sign_in(&ca, t, &req).await
                }
                Err(r) => Err(r),
            };
            match outcome {
                Ok((u, note)) => (u, Some(note)),
                Err(r) => {
                    if decision.user.is_empty() {
                        decision.user = r
                            .claimed_user
                            .clone()
                            .unwrap_or_else(|| "(unknown)".to_string());
                    }
                    let mut d = refused(r);
                    d.reason = format!("ID token refused: {}", d.reason);
                    return Err(deny(&ca, decision, d).await);
                }
            }
        }
    };
    decision.user = user.to_string();
    let with_via = |mut d: Denied| {
        if let Some(v) = &via {
            d.reason = format!("{} [{v}]", d.reason);
        }
        d
    };
    let subject = match parse_subject_key(&req.public_key) {
        Ok(k) => k,
        Err(e) => {
            return Err(deny(
                &ca,
                decision,
                with_via(Denied::new(ErrorCode::InvalidPublicKey, e.to_string())),
            )
            .await)
        }
    };
    let outcome = {
        let m = ca.model();
        decide(
            &m,
            &IssueRequest {
                user: &user,
                scope: &req.scope,
                ttl_secs: req.ttl_secs,
                reason: req.reason.as_deref(),
                source: peer.addr.ip().to_canonical(),
                ca_max_ttl_secs: ca.cfg.max_cert_ttl.as_secs(),
                now: at,
            },
        )
    };
    let allowed = match outcome {
        Ok(a) => a,
        Err(d) => return Err(deny(&ca, decision, with_via(d)).await),
    };
    let serial = ca.next_serial();
    let rid = request_id();
    let key_id = format!("smith:{user}:{rid}");
    let valid_after = at.saturating_sub(BACKDATE_SECS);
    let valid_before = at + allowed.validity_secs;
    let scope_text = req.scope.to_string();
    let cert = sign_user_cert(
        &ca.user_ca_signer,
        &subject,
        &UserCertSpec {
            serial,
            key_id: &key_id,
            principal: user.as_str(),
            valid_after,
            valid_before,
            source_address: allowed.source_address.clone(),
            scope: (!req.scope.is_empty()).then(|| scope_text.clone()),
        },
    )
    .map_err(|e| ApiError::internal("signing a certificate", e))?;
    let line = cert
        .to_openssh()
        .map_err(|e| ApiError::internal("encoding a certificate", e))?;
    decision.allowed = true;
    decision.reason = match &req.reason {
        Some(r) if !r.is_empty() => format!("{}; reason: {r}", allowed.summary),
        _ => allowed.summary.clone(),
    };
    if let Some(v) = &via {
        decision.reason.push_str(&format!(" [{v}]"));
    }
    decision.grant_ids = allowed.grant_ids.clone();
    record(
        &ca,
        Record {
            decision,
            cert: Some(CertRow {
                serial,
                key_id: key_id.clone(),
                principals: vec![user.to_string()],
                scope: scope_text,
                valid_after,
                valid_before,
                request_id: rid,
                public_key_fp: fingerprint(&subject),
            }),
        },
    )
    .await?;
    // A disable or delete that reached the model while this certificate was being signed
    // revokes only the certificates committed by then (crate::server::Ca::mutate_with):
    // never hand out one it may have missed.
    if ca.model().users.get(&user).is_none_or(|u| u.disabled) {
        return Err(ApiError::new(
            ErrorCode::UserDisabled,
            format!("user '{user}' was disabled while this certificate was being issued"),
        ));
    }
    // Debug, not info: one line per certificate costs the hot path more than the rest of
    // its bookkeeping, and every issuance is in `decisions` and the `@ca` audit chain.
    tracing::debug!(%user, serial, key_id = %key_id, scope = %req.scope, validity = allowed.validity_secs, "certificate issued");
    Ok(Json(CertResponse {
        certificate: line,
        serial,
        key_id,
        principals: vec![user.to_string()],
        scope: req.scope,
        valid_after,
        valid_before,
        clipped_to_secs: allowed.clipped_to,
    }))
}
