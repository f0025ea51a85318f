//! Public and admin endpoints: health, CA keys, users, groups, grants, host enrollment
//! tokens, hosts, decisions.
//!
//! Every admin change goes through [`Ca::mutate`] (validated against the model, committed
//! in one transaction, then applied), so a refused request writes nothing.
//!
//! Must never: answer an admin endpoint for anything but an admin token (a user token gets
//! 403 `admin_only`), or return a token other than the one just minted.

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::Ca;
use crate::auth::{hash_token, new_token, Principal};
use crate::model::{Change, Grant, Group, IdKind, Model, Token, TokenKind, User};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use smith_api::ErrorCode;
use smith_api::{
    CaKeys, Decision, GrantAdd, GrantInfo, GroupAdd, GroupInfo, Health, HostInfo,
    HostTokenRequestNamed, MemberChange, TokenRequest, TokenResponse, UserAdd, UserInfo,
};
use smith_proto::{GroupName, HostName, UserName};
use std::collections::BTreeSet;
use std::sync::Arc;

pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 86400;
pub const MAX_ENROLL_TTL_SECS: u64 = 30 * 86400;
/// Most extra SSH host certificate names one enrollment token may allow.
pub const MAX_SSH_NAMES: usize = 16;
pub const MAX_CIDRS: usize = 32;

/// Extractor: the request carries the admin token.
pub struct Admin;

impl FromRequestParts<Arc<Ca>> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, ca: &Arc<Ca>) -> Result<Self, ApiError> {
        match ca.principal(parts)? {
            Principal::Admin => Ok(Admin),
            _ => Err(ApiError::new(
                ErrorCode::AdminOnly,
                "this endpoint needs the admin token; a user or enrollment token cannot use it",
            )),
        }
    }
}

pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

pub async fn user_keys(State(ca): State<Arc<Ca>>) -> Json<CaKeys> {
    Json(CaKeys {
        keys: ca.user_ca_keys.clone(),
    })
}

pub async fn host_keys(State(ca): State<Arc<Ca>>) -> Json<CaKeys> {
    Json(CaKeys {
        keys: ca.host_ca_keys.clone(),
    })
}

fn parse_user(s: &str) -> Result<UserName, ApiError> {
    UserName::new(s).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidName,
            format!("user name '{}': {e}", s.escape_debug()),
        )
    })
}

fn parse_group(s: &str) -> Result<GroupName, ApiError> {
    GroupName::new(s).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidName,
            format!("group name '{}': {e}", s.escape_debug()),
        )
    })
}

fn user_info(u: &User) -> UserInfo {
    UserInfo {
        name: u.name.clone(),
        uid: u.uid,
        groups: u.groups.iter().cloned().collect(),
        disabled: u.disabled,
        gecos: u.gecos.clone(),
        shell: u.shell.clone(),
        created_at: u.created_at,
    }
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
        time_windows: g.time_windows.clone(),
        created_at: g.created_at,
    }
}

fn current_user(ca: &Ca, name: &UserName) -> Result<UserInfo, ApiError> {
    ca.model()
        .users
        .get(name)
        .map(user_info)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("user '{name}' does not exist")))
}

fn current_group(ca: &Ca, name: &GroupName) -> Result<GroupInfo, ApiError> {
    ca.model().groups.get(name).map(group_info).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("group '{name}' does not exist"),
        )
    })
}

/// GECOS: printable, no `:` (it would break /etc/passwd lines), bounded.
fn check_gecos(s: &str) -> Result<(), ApiError> {
    if s.len() > 256 || s.chars().any(|c| c.is_control() || c == ':') {
        return Err(ApiError::new(
            ErrorCode::InvalidGecos,
            "gecos must be at most 256 bytes without ':' or control characters",
        ));
    }
    Ok(())
}

/// Shell: an absolute path of safe characters.
fn check_shell(s: &str) -> Result<(), ApiError> {
    let ok = s.starts_with('/')
        && s.len() <= 256
        && !s.contains("/../")
        && !s.ends_with("/..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.' | b'+'));
    if !ok {
        return Err(ApiError::new(
            ErrorCode::InvalidShell,
            format!(
                "shell '{}' must be an absolute path of [A-Za-z0-9/_.+-], at most 256 bytes",
                s.escape_debug()
            ),
        ));
    }
    Ok(())
}

fn id_error(e: crate::model::IdError) -> ApiError {
    ApiError::new(ErrorCode::IdConflict, e.to_string())
}

fn plan_group(
    m: &Model,
    name: &GroupName,
    gid: Option<smith_proto::PosixId>,
    at: u64,
) -> Result<Group, ApiError> {
    if m.users.contains_key(
        &UserName::new(name.as_str())
            .map_err(|_| ApiError::new(ErrorCode::InvalidName, "invalid group name"))?,
    ) {
        return Err(ApiError::new(ErrorCode::NameConflict,
            format!(
                "'{name}' is a user's name (and so their private group on hosts); pick another group name"
            ),
        ));
    }
    Ok(Group {
        name: name.clone(),
        gid: m
            .allocate_id(IdKind::Group, name.as_str(), gid)
            .map_err(id_error)?,
        members: BTreeSet::new(),
        created_at: at,
        external_id: None,
    })
}

pub async fn list_users(_: Admin, State(ca): State<Arc<Ca>>) -> Json<Vec<UserInfo>> {
    Json(ca.model().users.values().map(user_info).collect())
}

pub async fn add_user(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<UserAdd>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    if let Some(g) = &req.gecos {
        check_gecos(g)?;
    }
    if let Some(s) = &req.shell {
        check_shell(s)?;
    }
    if req.groups.len() > 256 {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            "at most 256 groups per user",
        ));
    }
    let name = req.name.clone();
    ca.mutate(format!("user add {name}"), move |m, at| {
        if m.users.contains_key(&req.name) {
            return Err(ApiError::new(ErrorCode::UserExists,
                format!("user '{}' already exists", req.name),
            ));
        }
        if m.groups.contains_key(&GroupName::new(req.name.as_str()).map_err(|_| {
            ApiError::new(ErrorCode::InvalidName, "invalid user name")
        })?) {
            return Err(ApiError::new(ErrorCode::NameConflict,
                format!(
                    "'{}' is already a group's name; a user's private group would collide with it",
                    req.name
                ),
            ));
        }
        let mut changes = Vec::new();
        let mut taken = Vec::new();
        let wanted: BTreeSet<&GroupName> = req.groups.iter().collect();
        for g in wanted {
            if !m.groups.contains_key(g) {
                if !req.create_groups {
                    return Err(ApiError::new(ErrorCode::UnknownGroup,
                        format!(
                            "group '{g}' does not exist; create it with `smith-ca admin group add {g}`"
                        ),
                    ));
                }
                if g.as_str() == req.name.as_str() {
                    return Err(ApiError::new(ErrorCode::NameConflict,
                        format!("group '{g}' would have the same name as the user's private group"),
                    ));
                }
                let mut group = plan_group(m, g, None, at)?;
                group.gid = m
                    .allocate_id_with(IdKind::Group, g.as_str(), None, &taken)
                    .map_err(id_error)?;
                taken.push(group.gid.get());
                changes.push(Change::AddGroup(group));
            }
        }
        let uid = m
            .allocate_id_with(IdKind::User, req.name.as_str(), req.uid, &taken)
            .map_err(id_error)?;
        changes.push(Change::AddUser(User {
            name: req.name.clone(),
            uid,
            disabled: false,
            gecos: req.gecos.clone().unwrap_or_default(),
            shell: req.shell.clone().unwrap_or_else(|| "/bin/bash".into()),
            created_at: at,
            groups: req.groups.iter().cloned().collect(),
            external_id: None,
            oidc_subject: None,
        }));
        Ok(changes)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(current_user(&ca, &name)?)))
}

pub async fn disable_user(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<UserInfo>, ApiError> {
    let name = parse_user(&name)?;
    let n = name.clone();
    ca.mutate(format!("user disable {name}"), move |m, at| {
        match m.users.get(&n) {
            None => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("user '{n}' does not exist"),
            )),
            Some(u) if u.disabled => Ok(vec![]),
            Some(_) => Ok(vec![Change::DisableUser { name: n, at }]),
        }
    })
    .await?;
    Ok(Json(current_user(&ca, &name)?))
}

fn ttl_in(ttl: Option<u64>, default: u64, min: u64, max: u64, what: &str) -> Result<u64, ApiError> {
    let ttl = ttl.unwrap_or(default);
    if !(min..=max).contains(&ttl) {
        return Err(ApiError::new(
            ErrorCode::InvalidTtl,
            format!(
                "{what} lifetime must be between {} and {}",
                humantime::format_duration(std::time::Duration::from_secs(min)),
                humantime::format_duration(std::time::Duration::from_secs(max))
            ),
        ));
    }
    Ok(ttl)
}

pub async fn user_token(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(name): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let name = parse_user(&name)?;
    let req: TokenRequest = if body.iter().all(|b| b.is_ascii_whitespace()) {
        TokenRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(ErrorCode::InvalidInput, format!("invalid JSON body: {e}"))
        })?
    };
    let ttl = ttl_in(
        req.ttl_secs,
        ca.cfg.default_user_token_ttl.as_secs(),
        60,
        MAX_TOKEN_TTL_SECS,
        "a user token's",
    )?;
    let token = new_token(TokenKind::User);
    let hash = hash_token(&token);
    let expires_at = super::now() + ttl;
    ca.mutate(format!("user token {name}"), move |m, at| {
        match m.users.get(&name) {
            None => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("user '{name}' does not exist"),
            )),
            Some(u) if u.disabled => Err(ApiError::new(
                ErrorCode::UserDisabled,
                format!("user '{name}' is disabled; no token is minted"),
            )),
            Some(_) => Ok(vec![Change::AddToken {
                hash,
                token: Token {
                    kind: TokenKind::User,
                    subject: name.to_string(),
                    tags: None,
                    created_at: at,
                    expires_at: Some(expires_at),
                    used_at: None,
                    ssh_names: vec![],
                },
            }]),
        }
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenResponse { token, expires_at }),
    ))
}

pub async fn list_groups(_: Admin, State(ca): State<Arc<Ca>>) -> Json<Vec<GroupInfo>> {
    Json(ca.model().groups.values().map(group_info).collect())
}

pub async fn add_group(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<GroupAdd>,
) -> Result<(StatusCode, Json<GroupInfo>), ApiError> {
    let name = req.name.clone();
    let mut created = true;
    if let Some(existing) = ca.model().groups.get(&name) {
        // Idempotent: `group add dev` after `user add alice --groups dev` created it.
        if req.gid.is_none() || req.gid == Some(existing.gid) {
            created = false;
        }
    }
    if created {
        ca.mutate(format!("group add {name}"), move |m, at| {
            if let Some(g) = m.groups.get(&req.name) {
                return Err(ApiError::new(
                    ErrorCode::GroupExists,
                    format!("group '{}' already exists with gid {}", req.name, g.gid),
                ));
            }
            Ok(vec![Change::AddGroup(plan_group(
                m, &req.name, req.gid, at,
            )?)])
        })
        .await?;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(current_group(&ca, &name)?)))
}

pub async fn add_member(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(group): ApiPath<String>,
    ApiJson(req): ApiJson<MemberChange>,
) -> Result<Json<GroupInfo>, ApiError> {
    let group = parse_group(&group)?;
    let g = group.clone();
    ca.mutate(
        format!("group add-member {group} {}", req.user),
        move |m, at| {
            let grp = m.groups.get(&g).ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, format!("group '{g}' does not exist"))
            })?;
            if !m.users.contains_key(&req.user) {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!(
                        "user '{}' does not exist; add it with `smith-ca admin user add {}`",
                        req.user, req.user
                    ),
                ));
            }
            if grp.members.contains(&req.user) {
                return Ok(vec![]);
            }
            Ok(vec![Change::AddMember {
                group: g,
                user: req.user,
                at,
            }])
        },
    )
    .await?;
    Ok(Json(current_group(&ca, &group)?))
}

pub async fn remove_member(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath((group, user)): ApiPath<(String, String)>,
) -> Result<Json<GroupInfo>, ApiError> {
    let group = parse_group(&group)?;
    let user = parse_user(&user)?;
    let g = group.clone();
    ca.mutate(
        format!("group remove-member {group} {user}"),
        move |m, _| {
            let grp = m.groups.get(&g).ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, format!("group '{g}' does not exist"))
            })?;
            if !grp.members.contains(&user) {
                return Err(ApiError::new(
                    ErrorCode::NotAMember,
                    format!("user '{user}' is not a member of group '{g}'"),
                ));
            }
            Ok(vec![Change::RemoveMember { group: g, user }])
        },
    )
    .await?;
    Ok(Json(current_group(&ca, &group)?))
}

pub async fn list_grants(_: Admin, State(ca): State<Arc<Ca>>) -> Json<Vec<GrantInfo>> {
    Json(ca.model().grants.values().map(grant_info).collect())
}

pub async fn add_grant(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<GrantAdd>,
) -> Result<(StatusCode, Json<GrantInfo>), ApiError> {
    let max = ca.cfg.max_cert_ttl.as_secs();
    if req.max_ttl_secs < crate::issue::MIN_TTL_SECS || req.max_ttl_secs > max {
        return Err(ApiError::new(
            ErrorCode::InvalidTtl,
            format!(
                "max TTL must be between 1m and this CA's maximum of {}",
                humantime::format_duration(ca.cfg.max_cert_ttl)
            ),
        ));
    }
    if req.source_cidrs.len() > MAX_CIDRS {
        return Err(ApiError::new(
            ErrorCode::InvalidCidr,
            format!("at most {MAX_CIDRS} source CIDRs per grant"),
        ));
    }
    let mut cidrs = Vec::new();
    for c in &req.source_cidrs {
        let net: ipnet::IpNet = c.trim().parse().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidCidr,
                format!(
                    "'{}' is not a network in CIDR notation (e.g. 10.0.0.0/8 or 2001:db8::/32)",
                    c.escape_debug()
                ),
            )
        })?;
        cidrs.push(net.trunc());
    }
    if req.time_windows.len() > crate::timewin::MAX_WINDOWS {
        return Err(ApiError::new(
            ErrorCode::InvalidTimeWindow,
            format!(
                "at most {} time windows per grant",
                crate::timewin::MAX_WINDOWS
            ),
        ));
    }
    for w in &req.time_windows {
        crate::timewin::Window::parse(w)
            .map_err(|e| ApiError::new(ErrorCode::InvalidTimeWindow, e.to_string()))?;
    }
    let id_cell = Arc::new(std::sync::Mutex::new(0u64));
    let id_out = id_cell.clone();
    ca.mutate(
        format!("grant add {} {} {}", req.group, req.selector, req.level),
        move |m, at| {
            if !m.groups.contains_key(&req.group) {
                return Err(ApiError::new(
                    ErrorCode::UnknownGroup,
                    format!(
                        "group '{}' does not exist; create it with `smith-ca admin group add {}`",
                        req.group, req.group
                    ),
                ));
            }
            let id = m.next_grant_id;
            *id_out.lock().unwrap_or_else(|e| e.into_inner()) = id;
            Ok(vec![Change::AddGrant(Grant {
                id,
                group: req.group,
                selector: req.selector,
                level: req.level,
                max_ttl_secs: req.max_ttl_secs,
                source_cidrs: cidrs,
                require_reason: req.require_reason,
                time_windows: req.time_windows,
                created_at: at,
            })])
        },
    )
    .await?;
    let id = *id_cell.lock().unwrap_or_else(|e| e.into_inner());
    let info = ca
        .model()
        .grants
        .get(&id)
        .map(grant_info)
        .ok_or_else(|| ApiError::internal("reading back a grant", "grant vanished"))?;
    Ok((StatusCode::CREATED, Json(info)))
}

pub async fn remove_grant(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<GrantInfo>, ApiError> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("grant id '{}' is not a number", id.escape_debug()),
        )
    })?;
    let info =
        ca.model().grants.get(&id).map(grant_info).ok_or_else(|| {
            ApiError::new(ErrorCode::NotFound, format!("grant {id} does not exist"))
        })?;
    ca.mutate(format!("grant remove {id}"), move |m, at| {
        if !m.grants.contains_key(&id) {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("grant {id} does not exist"),
            ));
        }
        Ok(vec![Change::RemoveGrant { id, at }])
    })
    .await?;
    Ok(Json(info))
}

pub async fn host_token(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<HostTokenRequestNamed>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let HostTokenRequestNamed {
        request: req,
        ssh_names,
    } = req;
    if ssh_names.len() > MAX_SSH_NAMES {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("at most {MAX_SSH_NAMES} SSH names per enrollment token"),
        ));
    }
    let mut ssh_names_dedup: Vec<HostName> = Vec::new();
    for n in ssh_names {
        if !ssh_names_dedup.contains(&n) {
            ssh_names_dedup.push(n);
        }
    }
    let ssh_names = ssh_names_dedup;
    let ttl = ttl_in(
        Some(req.ttl_secs),
        3600,
        1,
        MAX_ENROLL_TTL_SECS,
        "an enrollment token's",
    )?;
    let token = new_token(TokenKind::Enroll);
    let hash = hash_token(&token);
    let expires_at = super::now() + ttl;
    let tags = req.tags.clone();
    let what = if ssh_names.is_empty() {
        format!("host token {tags}")
    } else {
        let names: Vec<&str> = ssh_names.iter().map(|n| n.as_str()).collect();
        format!("host token {tags} ssh names {}", names.join(","))
    };
    ca.mutate::<_, ApiError>(what, move |_, at| {
        Ok(vec![Change::AddToken {
            hash,
            token: Token {
                kind: TokenKind::Enroll,
                subject: "host enrollment".into(),
                tags: Some(tags),
                created_at: at,
                expires_at: Some(expires_at),
                used_at: None,
                ssh_names,
            },
        }])
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenResponse { token, expires_at }),
    ))
}

pub fn host_info(h: &crate::model::Host) -> HostInfo {
    HostInfo {
        name: h.name.clone(),
        tags: h.tags.clone(),
        enrolled_at: h.enrolled_at,
        last_seen: h.last_seen,
        synced_version: h.synced_version,
        removed: h.removed,
        ssh_names: h.principals(),
    }
}

pub async fn list_hosts(_: Admin, State(ca): State<Arc<Ca>>) -> Json<Vec<HostInfo>> {
    Json(ca.model().hosts.values().map(host_info).collect())
}

pub async fn remove_host(
    _: Admin,
    State(ca): State<Arc<Ca>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<HostInfo>, ApiError> {
    let name = HostName::new(&name).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidName,
            format!("host name '{}': {e}", name.escape_debug()),
        )
    })?;
    let id = *ca.model().active_hosts.get(&name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no enrolled host is named '{name}'"),
        )
    })?;
    ca.mutate(format!("host remove {name}"), move |m, at| {
        if m.hosts.get(&id).is_none_or(|h| h.removed) {
            return Err(ApiError::new(ErrorCode::NotFound, "host already removed"));
        }
        Ok(vec![Change::RemoveHost { host_id: id, at }])
    })
    .await?;
    let info = ca
        .model()
        .hosts
        .get(&id)
        .map(host_info)
        .ok_or_else(|| ApiError::internal("reading back a host", "host vanished"))?;
    Ok(Json(info))
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
        Some(u) => Some(parse_user(&u)?.into_string()),
        None => None,
    };
    Ok(Json(
        ca.query(move |s| s.decisions(limit, user.as_deref()))
            .await?,
    ))
}
