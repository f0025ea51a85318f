//! SCIM discovery documents: `ServiceProviderConfig`, `ResourceTypes`, `Schemas` (minimal:
//! what an IdP's connector checks before it provisions). They state what Smith
//! supports: PATCH yes, bulk/sort/etag/password change no, filter `eq` only.
//!
//! Must never: advertise a feature the handlers do not implement.

use super::{
    scim_response, ScimClient, ScimError, BASE, CORE_GROUP, CORE_USER, GROUP_EXT, USER_EXT,
};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

pub async fn service_provider_config(_: ScimClient) -> Response {
    scim_response(
        StatusCode::OK,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": "https://example.invalid/smith/ca/README.md#scim",
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": super::filter::MAX_COUNT},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": false},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "Smith SCIM token",
                "description": "Authorization: Bearer <token from `smith-ca admin scim token`>",
                "primary": true
            }],
            "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{BASE}/ServiceProviderConfig")}
        }),
    )
}

fn resource_types_list() -> Vec<Value> {
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User", "name": "User", "endpoint": "/Users",
            "description": "A Smith user (login name = userName)",
            "schema": CORE_USER,
            "schemaExtensions": [{"schema": USER_EXT, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": format!("{BASE}/ResourceTypes/User")}
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group", "name": "Group", "endpoint": "/Groups",
            "description": "A Smith group (name = displayName)",
            "schema": CORE_GROUP,
            "schemaExtensions": [{"schema": GROUP_EXT, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": format!("{BASE}/ResourceTypes/Group")}
        }),
    ]
}

fn list(items: Vec<Value>) -> Value {
    json!({
        "schemas": [super::LIST],
        "totalResults": items.len(),
        "startIndex": 1,
        "itemsPerPage": items.len(),
        "Resources": items,
    })
}

pub async fn resource_types(_: ScimClient) -> Response {
    scim_response(StatusCode::OK, list(resource_types_list()))
}

pub async fn resource_type(_: ScimClient, Path(id): Path<String>) -> Result<Response, ScimError> {
    resource_types_list()
        .into_iter()
        .find(|r| r["id"] == id.as_str())
        .map(|r| scim_response(StatusCode::OK, r))
        .ok_or_else(|| ScimError::not_found(format!("no resource type '{}'", id.escape_debug())))
}

fn attr(name: &str, ty: &str, required: bool, mutability: &str, uniqueness: &str) -> Value {
    json!({
        "name": name, "type": ty, "multiValued": false, "required": required,
        "caseExact": true, "mutability": mutability, "returned": "default",
        "uniqueness": uniqueness
    })
}

fn schemas_list() -> Vec<Value> {
    let members = json!({
        "name": "members", "type": "complex", "multiValued": true, "required": false,
        "mutability": "readWrite", "returned": "default",
        "subAttributes": [attr("value", "string", true, "immutable", "none")]
    });
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": CORE_USER, "name": "User", "description": "Smith user",
            "attributes": [
                attr("userName", "string", true, "immutable", "server"),
                attr("displayName", "string", false, "readWrite", "none"),
                attr("active", "boolean", false, "readWrite", "none"),
                attr("externalId", "string", false, "readWrite", "none"),
            ],
            "meta": {"resourceType": "Schema", "location": format!("{BASE}/Schemas/{CORE_USER}")}
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": CORE_GROUP, "name": "Group", "description": "Smith group",
            "attributes": [
                attr("displayName", "string", true, "immutable", "server"),
                attr("externalId", "string", false, "readWrite", "none"),
                members,
            ],
            "meta": {"resourceType": "Schema", "location": format!("{BASE}/Schemas/{CORE_GROUP}")}
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": USER_EXT, "name": "SmithUser", "description": "POSIX uid of a Smith user",
            "attributes": [attr("uidNumber", "integer", false, "immutable", "server")],
            "meta": {"resourceType": "Schema", "location": format!("{BASE}/Schemas/{USER_EXT}")}
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": GROUP_EXT, "name": "SmithGroup", "description": "POSIX gid of a Smith group",
            "attributes": [attr("gidNumber", "integer", false, "immutable", "server")],
            "meta": {"resourceType": "Schema", "location": format!("{BASE}/Schemas/{GROUP_EXT}")}
        }),
    ]
}

pub async fn schemas(_: ScimClient) -> Response {
    scim_response(StatusCode::OK, list(schemas_list()))
}

pub async fn schema(_: ScimClient, Path(id): Path<String>) -> Result<Response, ScimError> {
    schemas_list()
        .into_iter()
        .find(|s| s["id"] == id.as_str())
        .map(|s| scim_response(StatusCode::OK, s))
        .ok_or_else(|| ScimError::not_found(format!("no schema '{}'", id.escape_debug())))
}
