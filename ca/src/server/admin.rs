//! Public and admin endpoints: health, CA keys, users, groups, grants, host enrollment
//! tokens, hosts, decisions. Each handler parses, calls one authority command with the
//! admin as its origin (who: the bootstrap token or the named admin; from where: the
//! peer address; with which token: its public id), and answers.
//!
//! Must never: answer an admin endpoint for anything but an admin token (a user token gets
//! 403 `admin_only`), or return a token other than the one just minted.

use super::error::{ApiBytes, ApiError, ApiJson, ApiPath, ApiQuery};
use super::{Ca, Peer};
use crate::auth::Principal;
use crate::authority::{
    Error, HostCertTarget, HostTokenInput, Minted, NewGrant, NewGroup, NewUser,
};
use crate::model::{Grant, Group, OidcBinding, User};
use crate::origin::{Actor, Origin};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use smith_api::{
    CaKeys, Decision, ErrorCode, GrantAdd, GrantInfo, GroupAdd, GroupInfo, Health, HostCertInfo,
    HostCertRevokeRequest, HostCertRevokeResponse, HostInfo, HostKrl, HostTagsRequest,
    HostTokenRequestNamed, MemberChange, TokenRequest, TokenResponse, UserAdd, UserInfo,
};
use smith_proto::{GroupName, HostName, HostPattern, UserName};
use std::sync::Arc;

/// Extractor: the request carries an admin token (the bootstrap token or a named
/// admin's); the origin of its changes.
pub struct Admin(pub Origin);

/// The origin `actor` has with this request's peer address.
pub fn origin_of(parts: &Parts, actor: Actor) -> Origin {
    let o = Origin::new(actor);
    match parts.extensions.get::<Peer>() {
        Some(p) => o.from_addr(p.addr.ip()),
        None => o,
    }
}

impl FromRequestParts<Arc<Ca>> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, ca: &Arc<Ca>) -> Result<Self, ApiError> {
        let auth = ca.authenticated(parts)?;
        match auth.principal {
            Principal::Admin { name } => {
                let actor = match name {
                    None => Actor::Bootstrap,
                    Some(name) => Actor::Admin { name },
                };
                Ok(Admin(origin_of(parts, actor).with_token(auth.token_id)))
            }
            _ => Err(ApiError::new(
                ErrorCode::AdminOnly,
                "this endpoint needs an admin token; a user or enrollment token cannot use it",
            )),
        }
    }
}

/// The answer for a freshly minted token.
pub fn minted(t: Minted) -> TokenResponse {
    TokenResponse {
        token: t.token,
        expires_at: t.expires_at,
        id: Some(t.id),
    }
}

pub async fn health(
    State(ca): State<Arc<Ca>>,
    parts: axum::http::request::Parts,
) -> (axum::http::StatusCode, Json<Health>) {
    let admin = matches!(
        ca.authority.authenticate(super::bearer(&parts)),
        Ok(crate::auth::Authenticated {
            principal: Principal::Admin { .. },
            ..
        })
    );
    // Readiness includes the CA keys: a token that is down makes this a 503 (the probe
    // may touch the token, so off the async runtime).
    let a = ca.clone();
    let signers = tokio::task::spawn_blocking(move || a.authority.signers_ready())
        .await
        .unwrap_or_default();
    let unavailable: Vec<String> = signers
        .iter()
        .filter(|s| !s.ok)
        .map(|s| {
            format!(
                "{}: {}",
                s.role,
                s.error.as_deref().unwrap_or("unavailable")
            )
        })
        .collect();
    let (code, status) = if unavailable.is_empty() {
        (axum::http::StatusCode::OK, "ok")
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            smith_api::ErrorCode::SignerUnavailable.as_str(),
        )
    };
    (
        code,
        Json(Health {
            status: status.into(),
            version: admin.then(|| env!("CARGO_PKG_VERSION").to_string()),
            rejected_credentials: admin.then(|| ca.authority.rejected_credentials()),
            unavailable_signers: unavailable,
        }),
    )
}

pub async fn user_keys(State(ca): State<Arc<Ca>>) -> Json<CaKeys> {
    Json(CaKeys {
        keys: ca.authority.user_ca_keys(),
        patterns: vec![],
    })
}

/// `GET /v1/ca/host-keys` (public): the host CA keys and the host name patterns they
/// certify, for `@cert-authority` lines.
pub async fn host_keys(State(ca): State<Arc<Ca>>) -> Json<CaKeys> {
    Json(CaKeys {
        keys: ca.authority.host_ca_keys(),
        patterns: ca.authority.host_patterns(),
    })
}

/// `GET /v1/ca/host-krl` (public): revoked SSH host certificates, for ssh clients'
/// `RevokedHostKeys`.
pub async fn host_krl(State(ca): State<Arc<Ca>>) -> Result<Json<HostKrl>, ApiError> {
    // An outdated replica's list may miss a revocation: the client asks another.
    ca.authority.serving()?;
    Ok(Json(HostKrl {
        krl_base64: ca.authority.host_krl(),
        generated_at: crate::authority::now(),
    }))
}

/// `GET /v1/ca/user-krl` (public): the binary KRL of revoked user certificates, for
/// hosts that only trust the CA (`smith-ca admin host trust-only`). Empty when nothing is
/// revoked (sshd reads an empty `RevokedKeys` file as "none").
pub async fn user_krl(State(ca): State<Arc<Ca>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    use base64::Engine as _;
    if let Err(e) = ca.authority.serving() {
        return ApiError::from(e).into_response();
    }
    let bytes = ca
        .authority
        .model()
        .krl_base64()
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b.as_bytes()))
        .transpose();
    match bytes {
        Ok(b) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            b.unwrap_or_default(),
        )
            .into_response(),
        Err(e) => ApiError::new(
            ErrorCode::Internal,
            format!("the KRL is not valid base64: {e}"),
        )
        .into_response(),
    }
}

/// `GET /v1/ca/tls-root` (public): the TLS root clients pin.
pub async fn tls_root(State(ca): State<Arc<Ca>>) -> Json<smith_api::TlsRoot> {
    Json(smith_api::TlsRoot {
        root_pem: ca.authority.tls_root().cert_pem.clone(),
    })
}

fn invalid_name(what: &str, s: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidName,
        format!("{what} name '{}': {e}", s.escape_debug()),
    )
}

pub fn parse_user(s: &str) -> Result<UserName, ApiError> {
    UserName::new(s).map_err(|e| invalid_name("user", s, e))
}

pub fn parse_group(s: &str) -> Result<GroupName, ApiError> {
    GroupName::new(s).map_err(|e| invalid_name("group", s, e))
}

pub fn user_info(u: &User) -> UserInfo {
    UserInfo {
        name: u.name.clone(),
        uid: u.uid,
        groups: u.groups.iter().cloned().collect(),
        disabled: u.is_disabled(),
        gecos: u.gecos.clone(),
        shell: u.shell.clone(),
        created_at: u.created_at,
        disabled_by: u.disabled.map(|d| d.as_str().to_string()),
        source: Some(u.source.as_str().to_string()),
        oidc_issuer: u.oidc.as_ref().map(|b| b.issuer.clone()),
        oidc_subject: u.oidc.as_ref().map(|b| b.subject.clone()),
        external_id: u.external_id.clone(),
    }
}

/// The binding an admin asks for: `subject` at `issuer`, else at the CA's configured
/// issuer.
pub fn binding(ca: &Ca, subject: String, issuer: Option<String>) -> Result<OidcBinding, ApiError> {
    let issuer = match issuer.or_else(|| ca.oidc.as_ref().map(|v| v.cfg.issuer.clone())) {
        Some(i) => i,
        None => {
            return Err(ApiError::new(
                ErrorCode::OidcNotConfigured,
                "this CA has no OpenID Provider configured: give the issuer of the binding \
                 explicitly, or configure --oidc-issuer",
            ))
        }
    };
    Ok(OidcBinding { issuer, subject })
}

fn group_info(g: &Group) -> GroupInfo {
    GroupInfo {
        name: g.name.clone(),
        gid: g.gid,
        members: g.members.iter().cloned().collect(),
    }
}

fn grant_info(g: &Grant) -> GrantInfo {
    GrantInfo {
        id: g.id,
        group: g.group.clone(),
        selector: g.selector.clone(),
        level: g.level,
        max_ttl_secs: g.max_ttl_secs,
        source_cidrs: g.source_cidrs.iter().map(|c| c.to_string()).collect(),
        require_reason: g.require_reason,
        time_windows: g.time_windows.iter().map(|w| w.to_string()).collect(),
        created_at: g.created_at,
        logins: g.cert.logins.clone(),
        permits: g.cert.permits,
        force_command: g.cert.force_command.clone(),
        sudo: g.cert.sudo.clone(),
    }
}

pub async fn list_users(_: Admin, State(ca): State<Arc<Ca>>) -> Json<Vec<UserInfo>> {
    Json(
        ca.authority
            .model()
            .users()
            .values()
            .map(user_info)
            .collect(),
    )
}

pub async fn add_user(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<UserAdd>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    let oidc = match req.oidc_subject {
        Some(s) => Some(binding(&ca, s, None)?),
        None => None,
    };
    let new = NewUser {
        uid: req.uid,
        reuse_uid: req.reuse_uid,
        gecos: req.gecos.unwrap_or_default(),
        shell: req.shell,
        groups: req.groups,
        create_groups: req.create_groups,
        oidc,
        ..NewUser::named(req.name)
    };
    let u = ca.run(move |a| a.add_user(&origin, new)).await?;
    Ok((StatusCode::CREATED, Json(user_info(&u))))
}

pub async fn disable_user(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<UserInfo>, ApiError> {
    let name = parse_user(&name)?;
    let u = ca.run(move |a| a.disable_user(&origin, &name)).await?;
    Ok(Json(user_info(&u)))
}

pub async fn user_token(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(name): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let name = parse_user(&name)?;
    let req: TokenRequest = if body.iter().all(|b| b.is_ascii_whitespace()) {
        TokenRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(ErrorCode::InvalidInput, format!("invalid JSON body: {e}"))
        })?
    };
    let t = ca
        .run(move |a| a.mint_user_token(&origin, &name, req.ttl_secs))
        .await?;
    Ok((StatusCode::CREATED, Json(minted(t))))
}

pub async fn list_groups(_: Admin, State(ca): State<Arc<Ca>>) -> Json<Vec<GroupInfo>> {
    Json(
        ca.authority
            .model()
            .groups()
            .values()
            .map(group_info)
            .collect(),
    )
}

/// `POST /v1/admin/groups`: idempotent, like `group add dev` after `user add alice
/// --groups dev` made it (200 with the group; 201 when created).
pub async fn add_group(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<GroupAdd>,
) -> Result<(StatusCode, Json<GroupInfo>), ApiError> {
    let new = NewGroup {
        name: req.name,
        gid: req.gid,
        external_id: None,
        members: Default::default(),
    };
    let asked = new.gid;
    let name = new.name.clone();
    match ca.run(move |a| a.add_group(&origin, new)).await {
        Ok(g) => Ok((StatusCode::CREATED, Json(group_info(&g)))),
        Err(e) if e.code == ErrorCode::GroupExists => {
            let existing = ca.authority.model().group(&name).cloned();
            match existing {
                Some(g) if asked.is_none_or(|gid| gid == g.gid) => {
                    Ok((StatusCode::OK, Json(group_info(&g))))
                }
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

pub async fn add_member(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(group): ApiPath<String>,
    ApiJson(req): ApiJson<MemberChange>,
) -> Result<Json<GroupInfo>, ApiError> {
    let group = parse_group(&group)?;
    let g = ca
        .run(move |a| a.add_member(&origin, &group, &req.user))
        .await?;
    Ok(Json(group_info(&g)))
}

pub async fn remove_member(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath((group, user)): ApiPath<(String, String)>,
) -> Result<Json<GroupInfo>, ApiError> {
    let group = parse_group(&group)?;
    let user = parse_user(&user)?;
    let g = ca
        .run(move |a| a.remove_member(&origin, &group, &user))
        .await?;
    Ok(Json(group_info(&g)))
}

pub async fn list_grants(_: Admin, State(ca): State<Arc<Ca>>) -> Json<Vec<GrantInfo>> {
    Json(
        ca.authority
            .model()
            .grants()
            .values()
            .map(grant_info)
            .collect(),
    )
}

pub async fn add_grant(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<GrantAdd>,
) -> Result<(StatusCode, Json<GrantInfo>), ApiError> {
    let commands = req
        .sudo_commands
        .iter()
        .map(|c| smith_proto::sudorules::SudoCommand::parse(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::from(crate::authority::Error::InvalidGrantOption(e)))?;
    let new = NewGrant {
        group: req.group,
        selector: req.selector,
        level: req.level,
        max_ttl_secs: req.max_ttl_secs,
        source_cidrs: req.source_cidrs,
        require_reason: req.require_reason,
        time_windows: req.time_windows,
        cert: crate::model::CertRules {
            logins: req.logins,
            permits: req.permits,
            force_command: req.force_command,
            sudo: smith_proto::sudorules::SudoRules {
                commands,
                run_as: req.sudo_as,
                gid: None,
            },
        },
    };
    let g = ca.run(move |a| a.add_grant(&origin, new)).await?;
    Ok((StatusCode::CREATED, Json(grant_info(&g))))
}

pub async fn remove_grant(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<GrantInfo>, ApiError> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::from(Error::InvalidInput(format!(
            "grant id '{}' is not a number",
            id.escape_debug()
        )))
    })?;
    let g = ca.run(move |a| a.remove_grant(&origin, id)).await?;
    Ok(Json(grant_info(&g)))
}

pub async fn host_token(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<HostTokenRequestNamed>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let mut names = req.names;
    names.extend(req.ssh_names.into_iter().map(HostPattern::Exact));
    let input = HostTokenInput {
        tags: req.request.tags,
        ttl_secs: req.request.ttl_secs,
        names,
        uses: req.uses.unwrap_or(1),
    };
    let t = ca.run(move |a| a.mint_host_token(&origin, input)).await?;
    Ok((StatusCode::CREATED, Json(minted(t))))
}

pub fn host_info(ca: &Ca, h: &crate::model::Host) -> HostInfo {
    let live = ca.authority.liveness(h.id);
    HostInfo {
        name: h.name.clone(),
        tags: h.tags.clone(),
        enrolled_at: h.enrolled_at,
        last_seen: live.last_seen,
        synced_version: live.synced_version,
        removed: h.removed,
        ssh_names: h.principals(),
    }
}

pub async fn list_hosts(_: Admin, State(ca): State<Arc<Ca>>) -> Json<Vec<HostInfo>> {
    let hosts: Vec<crate::model::Host> = ca.authority.model().hosts().values().cloned().collect();
    Json(hosts.iter().map(|h| host_info(&ca, h)).collect())
}

pub async fn remove_host(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<HostInfo>, ApiError> {
    let name = HostName::new(&name).map_err(|e| invalid_name("host", &name, e))?;
    let h = ca.run(move |a| a.remove_host(&origin, &name)).await?;
    Ok(Json(host_info(&ca, &h)))
}

/// `POST /v1/admin/hosts/{name}/tags`: replaces a host's tags.
pub async fn set_host_tags(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<HostTagsRequest>,
) -> Result<Json<HostInfo>, ApiError> {
    let name = HostName::new(&name).map_err(|e| invalid_name("host", &name, e))?;
    let h = ca
        .run(move |a| a.set_host_tags(&origin, &name, req.tags))
        .await?;
    Ok(Json(host_info(&ca, &h)))
}

#[derive(serde::Deserialize)]
pub struct HostCertQueryParams {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    valid: bool,
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET /v1/admin/hosts/certs?host=H&valid=true&limit=N`: SSH host certificates.
pub async fn host_certs(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiQuery(q): ApiQuery<HostCertQueryParams>,
) -> Result<Json<Vec<HostCertInfo>>, ApiError> {
    let host = match q.host {
        Some(h) => Some(HostName::new(&h).map_err(|e| invalid_name("host", &h, e))?),
        None => None,
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    Ok(Json(
        ca.run(move |a| a.host_certs(host, q.valid, limit)).await?,
    ))
}

/// `POST /v1/admin/hosts/certs/revoke`: by serial, or every valid one of a host.
pub async fn revoke_host_certs(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<HostCertRevokeRequest>,
) -> Result<Json<HostCertRevokeResponse>, ApiError> {
    let target = match (req.serial, req.host) {
        (Some(s), None) => HostCertTarget::Serial(s),
        (None, Some(h)) => HostCertTarget::Host(h),
        _ => return Err(Error::InvalidInput("name exactly one of serial and host".into()).into()),
    };
    let plan = ca
        .run(move |a| a.revoke_host_certs(&origin, &target, req.reason.as_deref()))
        .await?;
    Ok(Json(HostCertRevokeResponse {
        revoked: plan.revoke,
        already_revoked: plan.already_revoked,
        expired: plan.expired,
    }))
}

#[derive(serde::Deserialize)]
pub struct DecisionQuery {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    user: Option<String>,
}

pub async fn decisions(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiQuery(q): ApiQuery<DecisionQuery>,
) -> Result<Json<Vec<Decision>>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let user = match q.user {
        Some(u) => Some(parse_user(&u)?),
        None => None,
    };
    Ok(Json(
        ca.run(move |a| a.decisions(limit, user.as_ref())).await?,
    ))
}
