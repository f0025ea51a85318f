//! `/scim/v2/Users`: create, list (filter, paging), get, replace (PUT), patch, delete.
//!
//! Mapping: `userName` → the Smith login name (and the resource `id`); `displayName`, else
//! `name.formatted`, else `name.givenName name.familyName` → GECOS; `active` → enabled
//! (`false` disables: no certificates, gone from hosts at their next sync); `externalId`
//! kept as given; uid from `urn:ietf:params:scim:schemas:extension:smith:2.0:User`
//! `{"uidNumber": N}` (or top-level `uidNumber`) at creation only. DELETE disables the
//! user and removes them with their memberships (the uid stays reserved for the name).
//! `groups` is read-only here (memberships are managed through `/Groups`).
//!
//! Must never: rename a user, change a uid, or accept an invalid login name.

use super::filter::{parse_filter, patch_ops, Op, Page};
use super::{
    boolean, external_id, gecos_from, posix_id, rfc3339, run, scim_response, ScimBody, ScimClient,
    ScimError, BASE, CORE_USER, USER_EXT,
};
use crate::authority::{NewUser, UserUpdate};
use crate::model::{Model, User};
use crate::server::Ca;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use smith_proto::UserName;
use std::collections::HashMap;
use std::sync::Arc;

pub fn resource(u: &User) -> Value {
    let mut v = json!({
        "schemas": [CORE_USER, USER_EXT],
        "id": u.name.as_str(),
        "userName": u.name.as_str(),
        "active": !u.is_disabled(),
        "groups": u.groups.iter().map(|g| json!({
            "value": g.as_str(),
            "display": g.as_str(),
            "$ref": format!("{BASE}/Groups/{g}"),
        })).collect::<Vec<_>>(),
        USER_EXT: {"uidNumber": u.uid.get()},
        "meta": {
            "resourceType": "User",
            "created": rfc3339(u.created_at),
            "location": format!("{BASE}/Users/{}", u.name),
        },
    });
    if !u.gecos.is_empty() {
        v["displayName"] = json!(u.gecos);
        v["name"] = json!({"formatted": u.gecos});
    }
    if let Some(e) = &u.external_id {
        v["externalId"] = json!(e);
    }
    v
}

fn found(m: &Model, id: &str) -> Result<User, ScimError> {
    UserName::new(id)
        .ok()
        .and_then(|n| m.user(&n).cloned())
        .ok_or_else(|| ScimError::not_found(format!("no user with id '{}'", id.escape_debug())))
}

fn user_name(v: Option<&Value>) -> Result<UserName, ScimError> {
    let s = v
        .and_then(|v| v.as_str())
        .ok_or_else(|| ScimError::invalid_value("userName is required and must be a string"))?;
    UserName::new(s).map_err(|e| {
        ScimError::invalid_value(format!(
            "userName '{}' is not a valid login name: {e}",
            s.escape_debug()
        ))
    })
}

/// GECOS from a resource's display attributes, if it states any.
fn display(body: &Value) -> Option<String> {
    if let Some(d) = body.get("displayName").and_then(|v| v.as_str()) {
        return Some(gecos_from(d));
    }
    let name = body.get("name")?;
    if let Some(f) = name.get("formatted").and_then(|v| v.as_str()) {
        return Some(gecos_from(f));
    }
    let parts: Vec<&str> = ["givenName", "familyName"]
        .iter()
        .filter_map(|k| name.get(*k).and_then(|v| v.as_str()))
        .collect();
    (!parts.is_empty()).then(|| gecos_from(&parts.join(" ")))
}

fn located(status: StatusCode, u: &User) -> Response {
    let mut r = scim_response(status, resource(u));
    if let Ok(v) = HeaderValue::from_str(&format!("{BASE}/Users/{}", u.name)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub async fn create(
    ScimClient(origin): ScimClient,
    State(ca): State<Arc<Ca>>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let new = NewUser {
        uid: posix_id(&body, USER_EXT, "uidNumber")?,
        disabled: match body.get("active") {
            None | Some(Value::Null) => false,
            Some(v) => !boolean(v, "active")?,
        },
        external_id: external_id(body.get("externalId").unwrap_or(&Value::Null))?,
        gecos: display(&body).unwrap_or_default(),
        ..NewUser::named(user_name(body.get("userName"))?)
    };
    let u = run(&ca, origin, move |a, o| a.add_user(o, new)).await?;
    Ok(located(StatusCode::CREATED, &u))
}

pub async fn list(
    _: ScimClient,
    State(ca): State<Arc<Ca>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ScimError> {
    let page = Page::from_query(
        q.get("startIndex").map(String::as_str),
        q.get("count").map(String::as_str),
    )?;
    let filter = match q.get("filter") {
        Some(f) if !f.trim().is_empty() => {
            Some(parse_filter(f, &["userName", "externalId", "id"])?)
        }
        _ => None,
    };
    let m = ca.authority.model();
    let all: Vec<Value> = m
        .users()
        .values()
        .filter(|u| match &filter {
            None => true,
            Some(f) => match f.attr.as_str() {
                "username" | "id" => u.name.as_str() == f.value,
                "externalid" => u.external_id.as_deref() == Some(f.value.as_str()),
                _ => false,
            },
        })
        .map(resource)
        .collect();
    Ok(scim_response(StatusCode::OK, page.list(all)))
}

pub async fn get(
    _: ScimClient,
    State(ca): State<Arc<Ca>>,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    let u = found(&ca.authority.model(), &id)?;
    Ok(located(StatusCode::OK, &u))
}

fn same_name(name: &UserName, v: Option<&Value>) -> Result<(), ScimError> {
    if let Some(v) = v {
        let n = user_name(Some(v))?;
        if &n != name {
            return Err(ScimError::mutability(format!(
                "userName cannot change ('{name}' to '{n}'): Smith login names are fixed; create \
                 a new user instead"
            )));
        }
    }
    Ok(())
}

pub async fn replace(
    ScimClient(origin): ScimClient,
    State(ca): State<Arc<Ca>>,
    Path(id): Path<String>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let name = found(&ca.authority.model(), &id)?.name;
    same_name(&name, body.get("userName"))?;
    let up = UserUpdate {
        gecos: Some(display(&body).unwrap_or_default()),
        active: Some(match body.get("active") {
            None | Some(Value::Null) => true,
            Some(v) => boolean(v, "active")?,
        }),
        external_id: Some(external_id(body.get("externalId").unwrap_or(&Value::Null))?),
        uid: posix_id(&body, USER_EXT, "uidNumber")?,
    };
    let u = run(&ca, origin, move |a, o| a.update_user(o, &name, up)).await?;
    Ok(located(StatusCode::OK, &u))
}

/// Applies one attribute of a PATCH to `up` (unknown attributes are ignored, as IdPs
/// send many Smith has no use for).
fn patch_attr(
    name: &UserName,
    up: &mut UserUpdate,
    attr: &str,
    op: Op,
    v: Option<&Value>,
) -> Result<(), ScimError> {
    let null = Value::Null;
    let v = if op == Op::Remove {
        &null
    } else {
        v.unwrap_or(&null)
    };
    match attr.to_ascii_lowercase().as_str() {
        "active" => {
            up.active = Some(if op == Op::Remove {
                false
            } else {
                boolean(v, "active")?
            });
        }
        "displayname" | "name.formatted" => {
            up.gecos = Some(v.as_str().map(gecos_from).unwrap_or_default());
        }
        "name" => {
            if let Some(g) = display(&json!({ "name": v })) {
                up.gecos = Some(g);
            }
        }
        "externalid" => up.external_id = Some(external_id(v)?),
        "username" => same_name(name, Some(v))?,
        _ => {}
    }
    Ok(())
}

pub async fn patch(
    ScimClient(origin): ScimClient,
    State(ca): State<Arc<Ca>>,
    Path(id): Path<String>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let ops = patch_ops(&body)?;
    let name = found(&ca.authority.model(), &id)?.name;
    let mut up = UserUpdate::default();
    for op in &ops {
        match (&op.path, &op.value) {
            (Some(p), v) => patch_attr(&name, &mut up, p, op.op, v.as_ref())?,
            (None, Some(Value::Object(obj))) => {
                for (k, v) in obj {
                    patch_attr(&name, &mut up, k, op.op, Some(v))?;
                }
            }
            (None, _) => {
                return Err(ScimError::new(
                    400,
                    Some("noTarget"),
                    "an operation without a path needs an object value",
                ))
            }
        }
    }
    let u = run(&ca, origin, move |a, o| a.update_user(o, &name, up)).await?;
    Ok(located(StatusCode::OK, &u))
}

pub async fn delete(
    ScimClient(origin): ScimClient,
    State(ca): State<Arc<Ca>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ScimError> {
    let name = found(&ca.authority.model(), &id)?.name;
    run(&ca, origin, move |a, o| a.delete_user(o, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
