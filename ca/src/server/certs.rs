//! `POST /v1/certs/user`: certificate issuance.
//!
//! Authenticate (user token through the [`crate::auth::Authenticator`] seam), decide from
//! the in-memory model ([`crate::issue::decide`]), sign with the user CA key, record the
//! decision and the certificate through the group-commit writer, and only then answer.
//! Denials of an authenticated user are recorded too, with their reason.
//!
//! Must never: read SQLite, answer before the record is durable, or sign for a principal
//! other than the authenticated user's name.

use super::error::{ApiError, ApiJson};
use super::{now, Ca, Peer};
use crate::auth::{request_id, Principal};
use crate::issue::{decide, Denied, IssueRequest};
use crate::sshca::{fingerprint, parse_subject_key, sign_user_cert, UserCertSpec};
use crate::writer::{CertRow, DecisionRow, Record};
use axum::extract::State;
use axum::http::request::Parts;
use axum::Json;
use smith_api::{CertRequest, CertResponse};
use smith_proto::UserName;
use std::sync::Arc;

/// Clock-skew backdating of `valid_after`.
pub const BACKDATE_SECS: u64 = 300;

/// Extractor: the authenticated engineer.
pub struct Engineer(pub UserName);

impl axum::extract::FromRequestParts<Arc<Ca>> for Engineer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, ca: &Arc<Ca>) -> Result<Self, ApiError> {
        match ca.principal(parts)? {
            Principal::User(u) => Ok(Engineer(u)),
            Principal::Admin => Err(ApiError::forbidden(
                "not_a_user",
                "the admin token cannot get certificates; mint a user token with \
                 `smith-ca admin user token NAME`",
            )),
            Principal::Enroll { .. } => Err(ApiError::forbidden(
                "not_a_user",
                "an enrollment token cannot get certificates",
            )),
            Principal::Scim => Err(ApiError::forbidden(
                "not_a_user",
                "a SCIM token cannot get certificates",
            )),
        }
    }
}

async fn record(ca: &Ca, rec: Record) -> Result<u64, ApiError> {
    ca.writer.record(rec).await.map_err(|e| match e {
        crate::writer::WriteError::Overloaded => ApiError::new(503, "overloaded", e.to_string()),
        crate::writer::WriteError::ShuttingDown => {
            ApiError::new(503, "shutting_down", e.to_string())
        }
        crate::writer::WriteError::Failed(_) => ApiError::internal("recording the decision", e),
    })
}

async fn deny(ca: &Ca, decision: DecisionRow, d: Denied) -> ApiError {
    let mut decision = decision;
    decision.allowed = false;
    decision.reason = d.reason.clone();
    decision.grant_ids = d.grant_ids.clone();
    tracing::info!(user = %decision.user, scope = %decision.scope, code = d.code, reason = %d.reason, "certificate denied");
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
    ApiError::new(d.status, d.code, d.reason)
}

pub async fn issue(
    State(ca): State<Arc<Ca>>,
    peer: Peer,
    Engineer(user): Engineer,
    ApiJson(req): ApiJson<CertRequest>,
) -> Result<Json<CertResponse>, ApiError> {
    let at = now();
    let decision = DecisionRow {
        at,
        user: user.to_string(),
        allowed: false,
        reason: String::new(),
        scope: req.scope.to_string(),
        requested_ttl_secs: req.ttl_secs,
        source_ip: peer.addr.ip().to_string(),
        grant_ids: vec![],
    };
    let subject = match parse_subject_key(&req.public_key) {
        Ok(k) => k,
        Err(e) => {
            return Err(deny(
                &ca,
                decision,
                Denied::new(400, "invalid_public_key", e.to_string()),
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
        Err(d) => return Err(deny(&ca, decision, d).await),
    };
    let serial = ca.next_serial();
    let rid = request_id();
    let key_id = format!("smith:{user}:{rid}");
    let valid_after = at.saturating_sub(BACKDATE_SECS);
    let valid_before = at + allowed.validity_secs;
    let scope_text = req.scope.to_string();
    let cert = sign_user_cert(
        &ca.user_ca,
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
    let mut decision = decision;
    decision.allowed = true;
    decision.reason = match &req.reason {
        Some(r) if !r.is_empty() => format!("{}; reason: {r}", allowed.summary),
        _ => allowed.summary.clone(),
    };
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
    tracing::info!(%user, serial, key_id = %key_id, scope = %req.scope, validity = allowed.validity_secs, "certificate issued");
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
