//! SCIM 2.0 provisioning (RFC 7643/7644) under `/scim/v2/...`: what Okta or Entra ID push
//! (users and groups, created, updated, deactivated, deleted) becomes Smith users and
//! groups, through the same authority commands as every admin change (with
//! [`Origin::Scim`]), so a change reaches hosts like any other (a deactivated user
//! disappears from their snapshots). This module only translates SCIM to commands and
//! the authority's refusals to SCIM errors.
//!
//! - Auth: `Authorization: Bearer <SCIM token>`, minted by `smith-ca admin scim token`
//!   (`POST /v1/admin/scim/token`); admin and user tokens get 403 here.
//! - Resources: `Users` ([`users`]), `Groups` ([`groups`]), and the discovery documents
//!   `ServiceProviderConfig`, `ResourceTypes`, `Schemas` ([`meta`]). A resource's `id` is
//!   its Smith name (stable: renames are refused with `mutability`).
//! - Smith's extension schemas carry POSIX ids: [`USER_EXT`] `{"uidNumber": N}` and
//!   [`GROUP_EXT`] `{"gidNumber": N}` (a plain top-level `uidNumber`/`gidNumber` is
//!   accepted too). Ids are fixed at creation and never change.
//! - Errors use the SCIM error schema ([`ScimError`]): `status`, `scimType`, `detail`.
//! - Filters ([`filter`]): `ATTR eq "VALUE"` on `userName`/`externalId`/`id` (users) and
//!   `displayName`/`externalId`/`id` (groups); paging with `startIndex`/`count`.
//!
//! Must never: accept a name that is not a valid Smith name (`invalidValue`), rename a
//! resource or change its id, answer for any token but a SCIM token, or change anything
//! when a request is refused.

pub mod filter;
pub mod groups;
pub mod meta;
pub mod users;

use crate::auth::Principal;
use crate::authority::{Authority, Error};
use crate::origin::Origin;
use crate::server::admin::Admin;
use crate::server::error::{ApiError, ApiJson};
use crate::server::Ca;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use smith_api::{TokenRequest, TokenResponse};
use std::sync::Arc;

pub const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const USER_EXT: &str = "urn:ietf:params:scim:schemas:extension:smith:2.0:User";
pub const GROUP_EXT: &str = "urn:ietf:params:scim:schemas:extension:smith:2.0:Group";
pub const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const BASE: &str = "/scim/v2";
const CONTENT_TYPE: &str = "application/scim+json";

/// A SCIM error response.
#[derive(Debug, Clone)]
pub struct ScimError {
    pub status: u16,
    /// `invalidValue`, `uniqueness`, `mutability`, `invalidFilter`, `invalidSyntax`,
    /// `invalidPath`, `noTarget`, `tooMany`, or none.
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    pub fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidValue"), detail)
    }
    pub fn syntax(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidSyntax"), detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, None, detail)
    }
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(409, Some("uniqueness"), detail)
    }
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::new(400, Some("mutability"), detail)
    }
}

impl From<Error> for ScimError {
    fn from(e: Error) -> ScimError {
        let code = e.code();
        let scim_type = match &e {
            Error::UserExists(_)
            | Error::GroupExists { .. }
            | Error::NameIsAGroup(_)
            | Error::NameIsAUser(_)
            | Error::Id(_) => Some("uniqueness"),
            Error::IdImmutable { .. } => Some("mutability"),
            Error::InvalidInput(_)
            | Error::InvalidGecos
            | Error::MemberNotAUser(_)
            | Error::IdOutOfRange { .. }
            | Error::UnknownGroup(_) => Some("invalidValue"),
            Error::RecycledId { .. } => Some("uniqueness"),
            Error::DisabledByAdmin(_) | Error::NotScimManaged { .. } => Some("mutability"),
            _ => None,
        };
        let status = match &e {
            Error::IdImmutable { .. } | Error::MemberNotAUser(_) => 400,
            Error::Id(_) => 409,
            _ => crate::server::error::status_of(code).as_u16(),
        };
        ScimError {
            status,
            scim_type,
            detail: e.to_string(),
        }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": [ERROR],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        scim_response(status, body)
    }
}

/// A SCIM JSON response with `Content-Type: application/scim+json`.
pub fn scim_response(status: StatusCode, body: Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}

/// Extractor: the request carries the SCIM token; the origin of its changes (SCIM,
/// from the peer, with the token's public id).
pub struct ScimClient(pub Origin);

impl FromRequestParts<Arc<Ca>> for ScimClient {
    type Rejection = ScimError;
    async fn from_request_parts(parts: &mut Parts, ca: &Arc<Ca>) -> Result<Self, ScimError> {
        match ca.authenticated(parts) {
            Ok(a) if a.principal == Principal::Scim => Ok(ScimClient(
                crate::server::admin::origin_of(parts, crate::origin::Actor::Scim)
                    .with_token(a.token_id),
            )),
            Ok(_) => Err(ScimError::new(
                403,
                None,
                "SCIM needs a SCIM token (`smith-ca admin scim token`); admin, user and \
                 enrollment tokens are refused here",
            )),
            Err(e) => Err(ScimError::new(401, None, e.message)),
        }
    }
}

/// Extractor: a JSON body (`application/scim+json` or `application/json`), with SCIM
/// errors for bad input.
pub struct ScimBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for ScimBody {
    type Rejection = ScimError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ScimError> {
        let bytes = tokio::time::timeout(
            crate::server::error::BODY_DEADLINE,
            axum::body::Bytes::from_request(req, state),
        )
        .await
        .map_err(|_| ScimError::new(408, None, crate::server::error::body_timeout().message))?
        .map_err(|_| {
            ScimError::new(
                413,
                Some("tooMany"),
                format!(
                    "the request body is larger than {} KiB",
                    crate::server::BODY_LIMIT / 1024
                ),
            )
        })?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ScimError::syntax(format!("the body is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(ScimError::syntax("the body must be a JSON object"));
        }
        Ok(ScimBody(v))
    }
}

/// Runs a blocking authority command as SCIM (`origin`, from [`ScimClient`]) off the
/// async runtime, with SCIM errors.
pub async fn run<T, F>(ca: &Arc<Ca>, origin: Origin, f: F) -> Result<T, ScimError>
where
    T: Send + 'static,
    F: FnOnce(&Authority, &Origin) -> Result<T, Error> + Send + 'static,
{
    let a = ca.authority.clone();
    tokio::task::spawn_blocking(move || f(&a, &origin))
        .await
        .map_err(|e| ScimError::new(500, None, format!("internal error: {e}")))?
        .map_err(ScimError::from)
}

/// RFC 3339 form of unix seconds.
pub fn rfc3339(t: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
        .to_string()
}

pub use crate::authority::gecos_from;

/// An `externalId`: printable, bounded.
pub fn external_id(v: &Value) -> Result<Option<String>, ScimError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) if s.len() <= 256 && !s.chars().any(|c| c.is_control()) => {
            Ok(Some(s.clone()))
        }
        _ => Err(ScimError::invalid_value(
            "externalId must be a string of at most 256 printable characters",
        )),
    }
}

/// SCIM booleans; Entra ID sends `"True"`/`"False"` strings.
pub fn boolean(v: &Value, what: &str) -> Result<bool, ScimError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ScimError::invalid_value(format!(
            "{what} must be true or false"
        ))),
    }
}

/// A POSIX id from an extension object or a top-level attribute.
pub fn posix_id(
    body: &Value,
    ext: &str,
    attr: &str,
) -> Result<Option<smith_proto::PosixId>, ScimError> {
    let v = body
        .get(ext)
        .and_then(|e| e.get(attr))
        .or_else(|| body.get(attr));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| ScimError::invalid_value(format!("{attr} must be a number")))?;
            smith_proto::PosixId::new(n)
                .map(Some)
                .map_err(|e| ScimError::invalid_value(format!("{attr} {n}: {e}")))
        }
    }
}

pub fn router() -> axum::Router<Arc<Ca>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/admin/scim/token", post(mint_token))
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(meta::service_provider_config),
        )
        .route("/scim/v2/ResourceTypes", get(meta::resource_types))
        .route("/scim/v2/ResourceTypes/{id}", get(meta::resource_type))
        .route("/scim/v2/Schemas", get(meta::schemas))
        .route("/scim/v2/Schemas/{id}", get(meta::schema))
        .route("/scim/v2/Users", get(users::list).post(users::create))
        .route(
            "/scim/v2/Users/{id}",
            get(users::get)
                .put(users::replace)
                .patch(users::patch)
                .delete(users::delete),
        )
        .route("/scim/v2/Groups", get(groups::list).post(groups::create))
        .route(
            "/scim/v2/Groups/{id}",
            get(groups::get)
                .put(groups::replace)
                .patch(groups::patch)
                .delete(groups::delete),
        )
}

/// `POST /v1/admin/scim/token` (admin): a SCIM bearer token for the IdP.
pub async fn mint_token(
    Admin(origin): Admin,
    State(ca): State<Arc<Ca>>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let t = ca
        .run(move |a| a.mint_scim_token(&origin, req.ttl_secs))
        .await?;
    Ok((StatusCode::CREATED, Json(crate::server::admin::minted(t))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smith_proto::UserName;

    #[test]
    fn values() {
        assert!(boolean(&json!("False"), "active").is_ok_and(|b| !b));
        assert!(boolean(&json!(true), "active").unwrap());
        assert!(boolean(&json!("no"), "active").is_err());
        assert_eq!(gecos_from("Alice: \"A\"\n Example"), "Alice \"A\" Example");
        let body = json!({USER_EXT: {"uidNumber": 200500}});
        assert_eq!(
            posix_id(&body, USER_EXT, "uidNumber")
                .unwrap()
                .unwrap()
                .get(),
            200500
        );
        let body = json!({"uidNumber": "200501"});
        assert_eq!(
            posix_id(&body, USER_EXT, "uidNumber")
                .unwrap()
                .unwrap()
                .get(),
            200501
        );
        assert!(posix_id(&json!({"uidNumber": 0}), USER_EXT, "uidNumber").is_err());
        let e = ScimError::from(Error::NameIsAGroup(UserName::new("x").unwrap()));
        assert_eq!((e.status, e.scim_type), (409, Some("uniqueness")));
        let e = ScimError::from(Error::MemberNotAUser(UserName::new("x").unwrap()));
        assert_eq!((e.status, e.scim_type), (400, Some("invalidValue")));
    }
}
