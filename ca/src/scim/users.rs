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
    boolean, external_id, gecos_from, mutate, posix_id, rfc3339, scim_response, unchanged_id,
    ScimBody, ScimClient, ScimError, BASE, CORE_USER, USER_EXT,
};
use crate::model::{Change, IdKind, Model, User};
use crate::server::Ca;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use smith_proto::{GroupName, UserName};
use std::collections::HashMap;
use std::sync::Arc;

pub fn resource(u: &User) -> Value {
    let mut v = json!({
        "schemas": [CORE_USER, USER_EXT],
        "id": u.name.as_str(),
        "userName": u.name.as_str(),
        "active": !u.disabled,
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
        .and_then(|n| m.users.get(&n).cloned())
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

fn current(ca: &Ca, name: &UserName) -> Result<User, ScimError> {
    found(&ca.model(), name.as_str())
}

pub async fn create(
    _: ScimClient,
    State(ca): State<Arc<Ca>>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let name = user_name(body.get("userName"))?;
    let uid = posix_id(&body, USER_EXT, "uidNumber")?;
    let active = match body.get("active") {
        None | Some(Value::Null) => true,
        Some(v) => boolean(v, "active")?,
    };
    let ext = external_id(body.get("externalId").unwrap_or(&Value::Null))?;
    let gecos = display(&body).unwrap_or_default();
    let n = name.clone();
    mutate(&ca, format!("scim user create {name}"), move |m, at| {
        if m.users.contains_key(&n) {
            return Err(ScimError::uniqueness(format!("user '{n}' already exists")));
        }
        if GroupName::new(n.as_str()).is_ok_and(|g| m.groups.contains_key(&g)) {
            return Err(ScimError::uniqueness(format!(
                "'{n}' is a group's name; a user's private group would collide with it"
            )));
        }
        let uid = m
            .allocate_id(IdKind::User, n.as_str(), uid)
            .map_err(|e| ScimError::new(409, Some("uniqueness"), e.to_string()))?;
        Ok(vec![Change::AddUser(User {
            name: n,
            uid,
            disabled: !active,
            gecos,
            shell: "/bin/bash".into(),
            created_at: at,
            groups: Default::default(),
            external_id: ext,
            oidc_subject: None,
        })])
    })
    .await?;
    Ok(located(StatusCode::CREATED, &current(&ca, &name)?))
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
    let m = ca.model();
    let all: Vec<Value> = m
        .users
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
    let u = found(&ca.model(), &id)?;
    Ok(located(StatusCode::OK, &u))
}

/// The attributes SCIM may change on an existing user.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    gecos: String,
    active: bool,
    external_id: Option<String>,
}

fn changes_for(u: &User, w: Wanted) -> Vec<Change> {
    let mut c = Vec::new();
    if w.gecos != u.gecos || w.external_id != u.external_id {
        c.push(Change::SetUserAttrs {
            name: u.name.clone(),
            gecos: w.gecos,
            external_id: w.external_id,
            oidc_subject: u.oidc_subject.clone(),
        });
    }
    if w.active && u.disabled {
        c.push(Change::EnableUser {
            name: u.name.clone(),
        });
    }
    if !w.active && !u.disabled {
        c.push(Change::DisableUser {
            name: u.name.clone(),
            at: crate::server::now(),
        });
    }
    c
}

fn same_name(u: &User, v: Option<&Value>) -> Result<(), ScimError> {
    if let Some(v) = v {
        let n = user_name(Some(v))?;
        if n != u.name {
            return Err(ScimError::mutability(format!(
                "userName cannot change ('{}' to '{n}'): Smith login names are fixed; create a \
                 new user instead",
                u.name
            )));
        }
    }
    Ok(())
}

pub async fn replace(
    _: ScimClient,
    State(ca): State<Arc<Ca>>,
    Path(id): Path<String>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let name = found(&ca.model(), &id)?.name;
    mutate(&ca, format!("scim user replace {name}"), move |m, _| {
        let u = found(m, &id)?;
        same_name(&u, body.get("userName"))?;
        unchanged_id(&body, USER_EXT, "uidNumber", u.uid, "uids")?;
        let w = Wanted {
            gecos: display(&body).unwrap_or_default(),
            active: match body.get("active") {
                None | Some(Value::Null) => true,
                Some(v) => boolean(v, "active")?,
            },
            external_id: external_id(body.get("externalId").unwrap_or(&Value::Null))?,
        };
        Ok(changes_for(&u, w))
    })
    .await?;
    Ok(located(StatusCode::OK, &current(&ca, &name)?))
}

/// Applies one attribute of a PATCH to `w` (unknown attributes are ignored, as IdPs send
/// many Smith has no use for).
fn patch_attr(
    u: &User,
    w: &mut Wanted,
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
            w.active = if op == Op::Remove {
                false
            } else {
                boolean(v, "active")?
            };
        }
        "displayname" | "name.formatted" => {
            w.gecos = v.as_str().map(gecos_from).unwrap_or_default();
        }
        "name" => {
            if let Some(g) = display(&json!({ "name": v })) {
                w.gecos = g;
            }
        }
        "externalid" => w.external_id = external_id(v)?,
        "username" => same_name(u, Some(v))?,
        _ => {}
    }
    Ok(())
}

pub async fn patch(
    _: ScimClient,
    State(ca): State<Arc<Ca>>,
    Path(id): Path<String>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let ops = patch_ops(&body)?;
    let name = found(&ca.model(), &id)?.name;
    mutate(&ca, format!("scim user patch {name}"), move |m, _| {
        let u = found(m, &id)?;
        let mut w = Wanted {
            gecos: u.gecos.clone(),
            active: !u.disabled,
            external_id: u.external_id.clone(),
        };
        for op in &ops {
            match (&op.path, &op.value) {
                (Some(p), v) => patch_attr(&u, &mut w, p, op.op, v.as_ref())?,
                (None, Some(Value::Object(obj))) => {
                    for (k, v) in obj {
                        patch_attr(&u, &mut w, k, op.op, Some(v))?;
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
        Ok(changes_for(&u, w))
    })
    .await?;
    Ok(located(StatusCode::OK, &current(&ca, &name)?))
}

pub async fn delete(
    _: ScimClient,
    State(ca): State<Arc<Ca>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ScimError> {
    let name = found(&ca.model(), &id)?.name;
    mutate(&ca, format!("scim user delete {name}"), move |m, at| {
        let u = found(m, &id)?;
        let mut c = Vec::new();
        if !u.disabled {
            c.push(Change::DisableUser {
                name: u.name.clone(),
                at,
            });
        }
        c.push(Change::DeleteUser { name: u.name, at });
        Ok(c)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
