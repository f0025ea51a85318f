//! Admin endpoints for people and credentials (types in `smith_api::people`): tokens of
//! every kind (list, revoke, rotate, named admin tokens), an admin's IdP sign-in, user
//! enable and identity bindings, IdP group mappings, and the record of changes.
//!
//! Must never: show a token's text other than the one just minted, or let an ID token
//! that does not verify, or whose person is not in the admin group, get an admin token.

use super::admin::{binding, minted, parse_group, parse_user, user_info, Admin};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::{Ca, Peer};
use crate::authority::{now, ChangeFilter, TokenInfo as Listed};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use smith_api::{
    AdminLoginRequest, AdminTokenRequest, BindRequest, ChangeInfo, ErrorCode, GroupMapping,
    MappingRequest, TokenInfo, TokenResponse, TokenRotateRequest, UserInfo,
};
use std::sync::Arc;

fn token_info(t: &Listed, now: u64) -> TokenInfo {
    let k = &t.token;
    let state = if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at <= now {
        "expired"
    } else if k.used_at.is_some() && k.kind == crate::model::TokenKind::Enroll {
        "used"
    } else {
        "live"
    };
    TokenInfo {
        id: t.id.clone(),
        kind: k.kind.as_str().to_string(),
        subject: k.subject.clone(),
        created_at: k.created_at,
        created_by: k.created_by.clone(),
        expires_at: k.expires_at,
        used_at: k.used_at,
        revoked_at: k.revoked_at,
        tags: k.tags.as_ref().map(|t| t.to_string()),
        state: state.to_string(),
    }
}

pub(super) async fn list_tokens(_: Admin, State(ca): State<Arc<Ca>>) -> Json<Vec<TokenInfo>> {
    let at = now();
    Json(
        ca.authority
            .tokens()
            .iter()
            .map(|t| token_info(t, at))
            .collect(),
    )
}

pub(super) async fn admin_token(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<AdminTokenRequest>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let t = ca
        .run(move |a| a.mint_admin_token(&origin, &req.name, req.ttl_secs))
        .await?;
    Ok((StatusCode::CREATED, Json(minted(t))))
}

pub(super) async fn revoke_token(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let t = ca.run(move |a| a.revoke_token(&origin, &id)).await?;
    Ok(Json(token_info(&t, now())))
}

pub(super) async fn rotate_token(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(id): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let req: TokenRotateRequest = if body.iter().all(|b| b.is_ascii_whitespace()) {
        TokenRotateRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(ErrorCode::InvalidInput, format!("invalid JSON body: {e}"))
        })?
    };
    let t = ca
        .run(move |a| a.rotate_token(&origin, &id, req.ttl_secs))
        .await?;
    Ok((StatusCode::CREATED, Json(minted(t))))
}

/// `POST /v1/admin/login`: an ID token of a member of the admin group gets a named admin
/// token. The ID token is verified like an engineer's (signature, issuer, audience,
/// times, age) and its nonce must be the one the sign-in asked for.
pub(super) async fn login(
    State(ca): State<Arc<Ca>>,
    peer: Peer,
    ApiJson(req): ApiJson<AdminLoginRequest>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let Some(v) = ca.oidc.clone() else {
        return Err(ApiError::new(
            ErrorCode::OidcNotConfigured,
            "this CA has no OpenID Provider configured, so admins cannot sign in through it; \
             use a named admin token (`smith-ca admin token create`)",
        ));
    };
    let t = v
        .verify(&req.id_token)
        .await
        .map_err(|r| ApiError::new(r.code, r.reason))?;
    crate::oidc::verify::check_nonce(t.nonce.as_deref(), req.nonce.as_deref())
        .map_err(|r| ApiError::new(r.code, r.reason))?;
    let who = t.username.clone();
    let source = peer.addr.ip();
    let minted_token = ca.run(move |a| a.admin_sign_in(&t, source)).await?;
    tracing::info!(admin = %who, %source, "admin signed in through the IdP");
    Ok((StatusCode::CREATED, Json(minted(minted_token))))
}

pub(super) async fn enable_user(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<UserInfo>, ApiError> {
    let name = parse_user(&name)?;
    let u = ca.run(move |a| a.enable_user(&origin, &name)).await?;
    Ok(Json(user_info(&u)))
}

pub(super) async fn bind_user(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<BindRequest>,
) -> Result<Json<UserInfo>, ApiError> {
    let name = parse_user(&name)?;
    let b = binding(&ca, req.subject, req.issuer)?;
    let u = ca
        .run(move |a| a.bind_user(&origin, &name, Some(b)))
        .await?;
    Ok(Json(user_info(&u)))
}

pub(super) async fn unbind_user(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<UserInfo>, ApiError> {
    let name = parse_user(&name)?;
    let u = ca.run(move |a| a.bind_user(&origin, &name, None)).await?;
    Ok(Json(user_info(&u)))
}

fn all_mappings(ca: &Ca) -> Vec<GroupMapping> {
    let m = ca.authority.model();
    let mut v: Vec<GroupMapping> = m
        .idp_groups()
        .iter()
        .flat_map(|(idp, groups)| {
            groups.iter().map(move |g| GroupMapping {
                group: g.to_string(),
                idp_group: idp.clone(),
            })
        })
        .collect();
    v.sort();
    v
}

pub(super) async fn mappings(_: Admin, State(ca): State<Arc<Ca>>) -> Json<Vec<GroupMapping>> {
    Json(all_mappings(&ca))
}

pub(super) async fn map_group(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<MappingRequest>,
) -> Result<Json<Vec<GroupMapping>>, ApiError> {
    let group = parse_group(&name)?;
    ca.run(move |a| a.map_group(&origin, &group, &req.idp_group))
        .await?;
    Ok(Json(all_mappings(&ca)))
}

pub(super) async fn unmap_group(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath((name, idp_group)): ApiPath<(String, String)>,
) -> Result<Json<Vec<GroupMapping>>, ApiError> {
    let group = parse_group(&name)?;
    ca.run(move |a| a.unmap_group(&origin, &group, &idp_group))
        .await?;
    Ok(Json(all_mappings(&ca)))
}

pub(super) async fn changes(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiQuery(q): ApiQuery<smith_api::ChangeQuery>,
) -> Result<Json<Vec<ChangeInfo>>, ApiError> {
    let f = ChangeFilter {
        actor: q.actor.filter(|a| !a.is_empty()),
        since: q.since,
        limit: q.limit.unwrap_or(100).clamp(1, 100_000),
    };
    Ok(Json(ca.run(move |a| a.changes(&f)).await?))
}
