//! The API's types for people and credentials: tokens (listed, revoked, rotated, named
//! admin tokens), an admin's IdP sign-in, identity bindings, IdP group mappings, and the
//! record of every change (`smith-ca admin changes`).
//!
//! Endpoints (admin token unless said otherwise):
//! - `GET /v1/admin/tokens` → `Vec<TokenInfo>`; `POST /v1/admin/tokens` [`AdminTokenRequest`]
//!   → `TokenResponse` (a named admin token); `DELETE /v1/admin/tokens/{id}` → `TokenInfo`
//!   (revoked); `POST /v1/admin/tokens/{id}/rotate` [`TokenRotateRequest`] → `TokenResponse`.
//! - `POST /v1/admin/login` [`AdminLoginRequest`] (no bearer: the ID token is the
//!   credential) → `TokenResponse` (a named admin token for the session).
//! - `POST /v1/admin/users/{name}/enable` → `UserInfo`;
//!   `POST /v1/admin/users/{name}/binding` [`BindRequest`] / `DELETE ...` → `UserInfo`.
//! - `GET /v1/admin/groups/mappings` → `Vec<GroupMapping>`;
//!   `POST /v1/admin/groups/{name}/mappings` [`MappingRequest`] → `Vec<GroupMapping>`;
//!   `DELETE /v1/admin/groups/{name}/mappings/{idp_group}` → `Vec<GroupMapping>`.
//! - `GET /v1/admin/changes?actor=&origin=&since=&limit=` → `Vec<ChangeInfo>`.

use serde::{Deserialize, Serialize};

/// A token as listed: never its text, only its public id (a prefix of its hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    /// `bootstrap`, `admin`, `user`, `scim`, `enroll`.
    pub kind: String,
    /// The admin's name, the user, `scim`, `host enrollment`.
    pub subject: String,
    pub created_at: u64,
    /// Who minted it.
    pub created_by: String,
    pub expires_at: u64,
    #[serde(default)]
    pub used_at: Option<u64>,
    #[serde(default)]
    pub revoked_at: Option<u64>,
    /// Enrollment tokens: the host's tags.
    #[serde(default)]
    pub tags: Option<String>,
    /// `live`, `expired`, `revoked` or `used`.
    pub state: String,
}

/// A named admin token for automation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminTokenRequest {
    /// Who the token acts as in the record of changes, e.g. `ci-deploy`.
    pub name: String,
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct TokenRotateRequest {
    /// The new token's lifetime; the old one's when absent.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// An admin's sign-in through the IdP: the ID token `smith-ca admin login` obtained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminLoginRequest {
    pub id_token: String,
    /// The nonce the sign-in asked for (the token must carry the same).
    #[serde(default)]
    pub nonce: Option<String>,
}

/// Binds a user to an IdP identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BindRequest {
    /// The `sub` the IdP gives the person.
    pub subject: String,
    /// The issuer; the CA's configured issuer when absent.
    #[serde(default)]
    pub issuer: Option<String>,
}

/// An IdP group whose members join a CA group at sign-in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupMapping {
    pub group: String,
    /// The IdP group id as the ID token's groups claim carries it.
    pub idp_group: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MappingRequest {
    pub idp_group: String,
}

/// One change of the CA, as its `@ca` chain record holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangeInfo {
    /// The record's sequence number in the `@ca` chain.
    pub seq: u64,
    pub at: u64,
    /// `admin`, `scim`, `oidc`, `host`, `local`.
    pub origin: String,
    /// The admin's name (`bootstrap`), `scim`, the OIDC subject, the host, the command.
    pub actor: String,
    /// The request's source address.
    #[serde(default)]
    pub source: Option<String>,
    /// The public id of the token that authenticated the request.
    #[serde(default)]
    pub token_id: Option<String>,
    pub what: String,
    /// The policy version it made (none when hosts receive nothing new).
    #[serde(default)]
    pub version: Option<u64>,
    /// The record's hash (the chain `audit verify` checks).
    pub hash: String,
}

/// `GET /v1/admin/changes?actor=A&since=UNIX&limit=N`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ChangeQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}
