//! Every path of the CA's API (`/v1/...`), in one place: the CA's router and every
//! client name endpoints through these constants and builders, never through literals.
//!
//! A constant is the route pattern as the router spells it (axum syntax, `{name}` for a
//! path parameter); for a pattern with parameters a builder of the same name in
//! lowercase fills them in from validated values (names, ids), which need no escaping.
//! Query strings are built from the query types in [`crate::types`] by the client.
//! [`ALL`] lists every endpoint with its method, for checks that the router and the
//! client agree. What each endpoint takes and returns is in [`crate::types`].
//!
//! Must never: change a path (older clients and hosts call it), or hold a path that is
//! not served by the CA.

use smith_proto::{GroupName, HostName, UserName};

// --- public ----------------------------------------------------------------------------------

pub const HEALTH: &str = "/v1/health";
/// The process is up (200, public).
pub const HEALTH_LIVE: &str = "/v1/health/live";
/// The replica can serve: 200, or 503 with `{"status":"not_ready","reason"}` (public).
pub const HEALTH_READY: &str = "/v1/health/ready";
pub const CA_USER_KEYS: &str = "/v1/ca/user-keys";
pub const CA_HOST_KEYS: &str = "/v1/ca/host-keys";
pub const CA_HOST_KRL: &str = "/v1/ca/host-krl";
/// The binary OpenSSH KRL of revoked user certificates (`application/octet-stream`),
/// for hosts that only trust the CA (hosts with smith-hostd get it with their sync).
pub const CA_USER_KRL: &str = "/v1/ca/user-krl";
/// The CA's TLS root (PEM), for clients that pinned its fingerprint.
pub const CA_TLS_ROOT: &str = "/v1/ca/tls-root";
pub const AUTH_CONFIG: &str = "/v1/auth/config";

// --- people ----------------------------------------------------------------------------------

pub const CERTS_USER: &str = "/v1/certs/user";
/// A certificate for one host as one login (host-aware certificates).
pub const CERTS_HOST: &str = "/v1/certs/host";
/// The hosts the caller's grants cover (`smith hosts`).
pub const USER_HOSTS: &str = "/v1/user/hosts";

// --- admin -----------------------------------------------------------------------------------

pub const ADMIN_USERS: &str = "/v1/admin/users";
pub const ADMIN_USER_DISABLE: &str = "/v1/admin/users/{name}/disable";
pub const ADMIN_USER_TOKEN: &str = "/v1/admin/users/{name}/token";
pub const ADMIN_GROUPS: &str = "/v1/admin/groups";
pub const ADMIN_GROUP_MEMBERS: &str = "/v1/admin/groups/{name}/members";
pub const ADMIN_GROUP_MEMBER: &str = "/v1/admin/groups/{name}/members/{user}";
pub const ADMIN_GRANTS: &str = "/v1/admin/grants";
pub const ADMIN_GRANT: &str = "/v1/admin/grants/{id}";
pub const ADMIN_HOST_TOKENS: &str = "/v1/admin/hosts/tokens";
pub const ADMIN_HOSTS: &str = "/v1/admin/hosts";
pub const ADMIN_HOST: &str = "/v1/admin/hosts/{name}";
pub const ADMIN_HOST_TAGS: &str = "/v1/admin/hosts/{name}/tags";
pub const ADMIN_HOST_CERTS: &str = "/v1/admin/hosts/certs";
pub const ADMIN_HOST_CERTS_REVOKE: &str = "/v1/admin/hosts/certs/revoke";
pub const ADMIN_SCIM_TOKEN: &str = "/v1/admin/scim/token";
pub const ADMIN_TOKENS: &str = "/v1/admin/tokens";
pub const ADMIN_TOKEN: &str = "/v1/admin/tokens/{id}";
pub const ADMIN_TOKEN_ROTATE: &str = "/v1/admin/tokens/{id}/rotate";
pub const ADMIN_LOGIN: &str = "/v1/admin/login";
pub const ADMIN_USER_ENABLE: &str = "/v1/admin/users/{name}/enable";
pub const ADMIN_USER_BINDING: &str = "/v1/admin/users/{name}/binding";
pub const ADMIN_GROUP_MAPPINGS_ALL: &str = "/v1/admin/groups/mappings";
pub const ADMIN_GROUP_MAPPINGS: &str = "/v1/admin/groups/{name}/mappings";
pub const ADMIN_GROUP_MAPPING: &str = "/v1/admin/groups/{name}/mappings/{idp_group}";
pub const ADMIN_CHANGES: &str = "/v1/admin/changes";
pub const ADMIN_DECISIONS: &str = "/v1/admin/decisions";
pub const ADMIN_CERTS: &str = "/v1/admin/certs";
pub const ADMIN_CERTS_REVOKE: &str = "/v1/admin/certs/revoke";
pub const ADMIN_AUDIT: &str = "/v1/admin/audit";
pub const ADMIN_AUDIT_VERIFY: &str = "/v1/admin/audit/verify";
pub const ADMIN_AUDIT_REJECTIONS: &str = "/v1/admin/audit/rejections";
pub const ADMIN_AUDIT_OUT_OF_BAND: &str = "/v1/admin/audit/out-of-band";
/// Where a CA key rotation stands (`?role=user|host`).
pub const ADMIN_CA_ROTATION: &str = "/v1/admin/ca/rotation";
/// Starts a CA key rotation, or forces its pending step.
pub const ADMIN_CA_ROTATE: &str = "/v1/admin/ca/rotate";

// --- hosts -----------------------------------------------------------------------------------

/// Enrollment (the token is in the body; no client certificate yet).
pub const HOSTS_ENROLL: &str = "/v1/hosts/enroll";
pub const HOST_RENEW: &str = "/v1/host/renew";
pub const HOST_SYNC: &str = "/v1/host/sync";
pub const HOST_AUDIT: &str = "/v1/host/audit";
pub const HOST_AUDIT_HEAD: &str = "/v1/host/audit/head";

/// Every endpoint as (method, route pattern). SCIM (`/scim/v2/...`, for identity
/// providers) is not listed: it is not called by Smith's clients.
pub const ALL: &[(&str, &str)] = &[
    ("GET", HEALTH),
    ("GET", HEALTH_LIVE),
    ("GET", HEALTH_READY),
    ("GET", CA_USER_KEYS),
    ("GET", CA_HOST_KEYS),
    ("GET", CA_HOST_KRL),
    ("GET", CA_USER_KRL),
    ("GET", CA_TLS_ROOT),
    ("GET", AUTH_CONFIG),
    ("POST", CERTS_USER),
    ("POST", CERTS_HOST),
    ("POST", USER_HOSTS),
    ("GET", ADMIN_USERS),
    ("POST", ADMIN_USERS),
    ("POST", ADMIN_USER_DISABLE),
    ("POST", ADMIN_USER_TOKEN),
    ("GET", ADMIN_GROUPS),
    ("POST", ADMIN_GROUPS),
    ("POST", ADMIN_GROUP_MEMBERS),
    ("DELETE", ADMIN_GROUP_MEMBER),
    ("GET", ADMIN_GRANTS),
    ("POST", ADMIN_GRANTS),
    ("DELETE", ADMIN_GRANT),
    ("POST", ADMIN_HOST_TOKENS),
    ("GET", ADMIN_HOSTS),
    ("DELETE", ADMIN_HOST),
    ("POST", ADMIN_HOST_TAGS),
    ("GET", ADMIN_HOST_CERTS),
    ("POST", ADMIN_HOST_CERTS_REVOKE),
    ("POST", ADMIN_SCIM_TOKEN),
    ("GET", ADMIN_TOKENS),
    ("POST", ADMIN_TOKENS),
    ("DELETE", ADMIN_TOKEN),
    ("POST", ADMIN_TOKEN_ROTATE),
    ("POST", ADMIN_LOGIN),
    ("POST", ADMIN_USER_ENABLE),
    ("POST", ADMIN_USER_BINDING),
    ("DELETE", ADMIN_USER_BINDING),
    ("GET", ADMIN_GROUP_MAPPINGS_ALL),
    ("POST", ADMIN_GROUP_MAPPINGS),
    ("DELETE", ADMIN_GROUP_MAPPING),
    ("GET", ADMIN_CHANGES),
    ("GET", ADMIN_DECISIONS),
    ("GET", ADMIN_CERTS),
    ("POST", ADMIN_CERTS_REVOKE),
    ("GET", ADMIN_AUDIT),
    ("GET", ADMIN_AUDIT_VERIFY),
    ("GET", ADMIN_AUDIT_REJECTIONS),
    ("GET", ADMIN_AUDIT_OUT_OF_BAND),
    ("GET", ADMIN_CA_ROTATION),
    ("POST", ADMIN_CA_ROTATE),
    ("POST", HOSTS_ENROLL),
    ("POST", HOST_RENEW),
    ("GET", HOST_SYNC),
    ("POST", HOST_AUDIT),
    ("GET", HOST_AUDIT_HEAD),
];

fn fill(pattern: &str, params: &[(&str, &str)]) -> String {
    let mut out = pattern.to_string();
    for (k, v) in params {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// [`ADMIN_USER_DISABLE`] for `name`.
pub fn admin_user_disable(name: &UserName) -> String {
    fill(ADMIN_USER_DISABLE, &[("name", name.as_str())])
}

/// [`ADMIN_USER_TOKEN`] for `name`.
pub fn admin_user_token(name: &UserName) -> String {
    fill(ADMIN_USER_TOKEN, &[("name", name.as_str())])
}

/// [`ADMIN_GROUP_MEMBERS`] for `group`.
pub fn admin_group_members(group: &GroupName) -> String {
    fill(ADMIN_GROUP_MEMBERS, &[("name", group.as_str())])
}

/// [`ADMIN_GROUP_MEMBER`] for `user` in `group`.
pub fn admin_group_member(group: &GroupName, user: &UserName) -> String {
    fill(
        ADMIN_GROUP_MEMBER,
        &[("name", group.as_str()), ("user", user.as_str())],
    )
}

/// [`ADMIN_GRANT`] for grant `id`.
pub fn admin_grant(id: u64) -> String {
    fill(ADMIN_GRANT, &[("id", &id.to_string())])
}

/// [`ADMIN_HOST`] for `name`.
pub fn admin_host(name: &HostName) -> String {
    fill(ADMIN_HOST, &[("name", name.as_str())])
}

/// One path segment from free text (an IdP group id, a token id): anything but
/// unreserved characters percent-encoded.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// [`ADMIN_TOKEN`] for the token with public id `id`.
pub fn admin_token(id: &str) -> String {
    fill(ADMIN_TOKEN, &[("id", &seg(id))])
}

/// [`ADMIN_TOKEN_ROTATE`] for the token with public id `id`.
pub fn admin_token_rotate(id: &str) -> String {
    fill(ADMIN_TOKEN_ROTATE, &[("id", &seg(id))])
}

/// [`ADMIN_USER_ENABLE`] for `name`.
pub fn admin_user_enable(name: &UserName) -> String {
    fill(ADMIN_USER_ENABLE, &[("name", name.as_str())])
}

/// [`ADMIN_USER_BINDING`] for `name`.
pub fn admin_user_binding(name: &UserName) -> String {
    fill(ADMIN_USER_BINDING, &[("name", name.as_str())])
}

/// [`ADMIN_GROUP_MAPPINGS`] for `group`.
pub fn admin_group_mappings(group: &GroupName) -> String {
    fill(ADMIN_GROUP_MAPPINGS, &[("name", group.as_str())])
}

/// [`ADMIN_GROUP_MAPPING`] for `idp_group` mapped to `group`.
pub fn admin_group_mapping(group: &GroupName, idp_group: &str) -> String {
    fill(
        ADMIN_GROUP_MAPPING,
        &[("name", group.as_str()), ("idp_group", &seg(idp_group))],
    )
}

/// [`ADMIN_HOST_TAGS`] for `name`.
pub fn admin_host_tags(name: &HostName) -> String {
    fill(ADMIN_HOST_TAGS, &[("name", name.as_str())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn builders_fill_every_parameter_of_their_pattern() {
        let u = UserName::new("alice").unwrap();
        let g = GroupName::new("ops").unwrap();
        let h = HostName::new("web-1").unwrap();
        let built = [
            (admin_user_disable(&u), "/v1/admin/users/alice/disable"),
            (admin_user_token(&u), "/v1/admin/users/alice/token"),
            (admin_group_members(&g), "/v1/admin/groups/ops/members"),
            (
                admin_group_member(&g, &u),
                "/v1/admin/groups/ops/members/alice",
            ),
            (admin_grant(42), "/v1/admin/grants/42"),
            (admin_host(&h), "/v1/admin/hosts/web-1"),
        ];
        for (got, want) in built {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn every_endpoint_is_listed_once_and_well_formed() {
        let mut seen = BTreeSet::new();
        for (method, path) in ALL {
            assert!(seen.insert((method, path)), "{method} {path} listed twice");
            assert!(["GET", "POST", "DELETE"].contains(method), "{method}");
            assert!(path.starts_with("/v1/") && !path.ends_with('/'), "{path}");
            assert!(
                !path.contains('?'),
                "{path}: queries are built by the client"
            );
        }
    }
}
