//! `/scim/v2/Groups`: create, list (filter, paging, `excludedAttributes=members`), get,
//! replace (PUT), patch (members add/remove/replace in the Okta and Entra shapes), delete.
//!
//! Mapping: `displayName` → the Smith group name (and the resource `id`); `members[].value`
//! → user ids (= login names; they must exist); gid from
//! `urn:ietf:params:scim:schemas:extension:smith:2.0:Group` `{"gidNumber": N}` (or
//! top-level `gidNumber`) at creation only; `externalId` kept. DELETE removes the group,
//! its memberships and the grants on it (access through it ends on every host); the gid
//! stays reserved for the name.
//!
//! Must never: rename a group, change a gid, or add a member that is not a user.

use super::filter::{member_path_value, parse_filter, patch_ops, Op, Page};
use super::{
    external_id, posix_id, rfc3339, run, scim_response, ScimBody, ScimClient, ScimError, BASE,
    CORE_GROUP, GROUP_EXT,
};
use crate::authority::{MemberOp, NewGroup};
use crate::model::{Group, Model};
use crate::server::Ca;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use smith_proto::{GroupName, UserName};
use std::collections::HashMap;
use std::sync::Arc;

pub fn resource(g: &Group, with_members: bool) -> Value {
    let mut v = json!({
        "schemas": [CORE_GROUP, GROUP_EXT],
        "id": g.name.as_str(),
        "displayName": g.name.as_str(),
        GROUP_EXT: {"gidNumber": g.gid.get()},
        "meta": {
            "resourceType": "Group",
            "created": rfc3339(g.created_at),
            "location": format!("{BASE}/Groups/{}", g.name),
        },
    });
    if with_members {
        v["members"] = g
            .members
            .iter()
            .map(|u| {
                json!({
                    "value": u.as_str(),
                    "display": u.as_str(),
                    "$ref": format!("{BASE}/Users/{u}"),
                })
            })
            .collect();
    }
    if let Some(e) = &g.external_id {
        v["externalId"] = json!(e);
    }
    v
}

fn found(m: &Model, id: &str) -> Result<Group, ScimError> {
    GroupName::new(id)
        .ok()
        .and_then(|n| m.group(&n).cloned())
        .ok_or_else(|| ScimError::not_found(format!("no group with id '{}'", id.escape_debug())))
}

fn group_name(v: Option<&Value>) -> Result<GroupName, ScimError> {
    let s = v
        .and_then(|v| v.as_str())
        .ok_or_else(|| ScimError::invalid_value("displayName is required and must be a string"))?;
    GroupName::new(s).map_err(|e| {
        ScimError::invalid_value(format!(
            "displayName '{}' is not a valid group name: {e}",
            s.escape_debug()
        ))
    })
}

/// User names from a `members` value: `[{"value": "alice"}, ...]` (or one object).
fn members(v: Option<&Value>) -> Result<Vec<UserName>, ScimError> {
    let list: Vec<&Value> = match v {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.iter().collect(),
        Some(o @ Value::Object(_)) => vec![o],
        Some(_) => {
            return Err(ScimError::invalid_value(
                "members must be a list of {\"value\": ID}",
            ))
        }
    };
    list.into_iter()
        .map(|m| {
            let id = m.get("value").and_then(|v| v.as_str()).ok_or_else(|| {
                ScimError::invalid_value("every member needs a \"value\" (the user's id)")
            })?;
            UserName::new(id).map_err(|_| {
                ScimError::invalid_value(format!("member '{}' is not a user id", id.escape_debug()))
            })
        })
        .collect()
}

fn located(status: StatusCode, g: &Group) -> Response {
    let mut r = scim_response(status, resource(g, true));
    if let Ok(v) = HeaderValue::from_str(&format!("{BASE}/Groups/{}", g.name)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub async fn create(
    ScimClient(origin): ScimClient,
    State(ca): State<Arc<Ca>>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let new = NewGroup {
        name: group_name(body.get("displayName"))?,
        gid: posix_id(&body, GROUP_EXT, "gidNumber")?,
        external_id: external_id(body.get("externalId").unwrap_or(&Value::Null))?,
        members: members(body.get("members"))?.into_iter().collect(),
    };
    let g = run(&ca, origin, move |a, o| a.add_group(o, new)).await?;
    Ok(located(StatusCode::CREATED, &g))
}

fn excludes_members(q: &HashMap<String, String>) -> bool {
    q.get("excludedAttributes").is_some_and(|e| {
        e.split(',')
            .any(|a| a.trim().eq_ignore_ascii_case("members"))
    })
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
            Some(parse_filter(f, &["displayName", "externalId", "id"])?)
        }
        _ => None,
    };
    let with_members = !excludes_members(&q);
    let m = ca.authority.model();
    let all: Vec<Value> = m
        .groups()
        .values()
        .filter(|g| match &filter {
            None => true,
            Some(f) => match f.attr.as_str() {
                "displayname" | "id" => g.name.as_str() == f.value,
                "externalid" => g.external_id.as_deref() == Some(f.value.as_str()),
                _ => false,
            },
        })
        .map(|g| resource(g, with_members))
        .collect();
    Ok(scim_response(StatusCode::OK, page.list(all)))
}

pub async fn get(
    _: ScimClient,
    State(ca): State<Arc<Ca>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ScimError> {
    let g = found(&ca.authority.model(), &id)?;
    Ok(scim_response(
        StatusCode::OK,
        resource(&g, !excludes_members(&q)),
    ))
}

fn same_name(name: &GroupName, v: Option<&Value>) -> Result<(), ScimError> {
    if let Some(v) = v {
        let n = group_name(Some(v))?;
        if &n != name {
            return Err(ScimError::mutability(format!(
                "displayName cannot change ('{name}' to '{n}'): Smith group names are fixed \
                 (grants refer to them); create a new group instead"
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
    same_name(&name, body.get("displayName"))?;
    let ops = vec![MemberOp::Replace(members(body.get("members"))?)];
    let ext = external_id(body.get("externalId").unwrap_or(&Value::Null))?;
    let gid = posix_id(&body, GROUP_EXT, "gidNumber")?;
    let g = run(&ca, origin, move |a, o| {
        a.update_group(o, &name, &ops, Some(ext), gid)
    })
    .await?;
    Ok(located(StatusCode::OK, &g))
}

/// One PATCH operation as membership steps and an external id.
fn patch_op(
    name: &GroupName,
    attr: &str,
    op: Op,
    v: Option<&Value>,
    steps: &mut Vec<MemberOp>,
    ext: &mut Option<Option<String>>,
) -> Result<(), ScimError> {
    if let Some(one) = member_path_value(attr)? {
        // `members[value eq "X"]`: only remove makes sense.
        let u = UserName::new(&one)
            .map_err(|_| ScimError::invalid_value(format!("'{one}' is not a user id")))?;
        if op != Op::Remove {
            return Err(ScimError::new(
                400,
                Some("invalidPath"),
                "a filtered members path only takes op remove",
            ));
        }
        steps.push(MemberOp::Remove(vec![u]));
        return Ok(());
    }
    match attr.to_ascii_lowercase().as_str() {
        "members" => {
            let list = members(v)?;
            steps.push(match op {
                Op::Add => MemberOp::Add(list),
                Op::Remove if v.is_none_or(Value::is_null) => MemberOp::RemoveAll,
                Op::Remove => MemberOp::Remove(list),
                Op::Replace => MemberOp::Replace(list),
            });
        }
        "displayname" => same_name(name, v)?,
        "externalid" => {
            *ext = Some(if op == Op::Remove {
                None
            } else {
                external_id(v.unwrap_or(&Value::Null))?
            });
        }
        // id, meta, schemas and attributes Smith does not keep are ignored.
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
    let mut steps = Vec::new();
    let mut ext = None;
    for op in &ops {
        match (&op.path, &op.value) {
            (Some(p), v) => patch_op(&name, p, op.op, v.as_ref(), &mut steps, &mut ext)?,
            (None, Some(Value::Object(obj))) => {
                for (k, v) in obj {
                    patch_op(&name, k, op.op, Some(v), &mut steps, &mut ext)?;
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
    let g = run(&ca, origin, move |a, o| {
        a.update_group(o, &name, &steps, ext, None)
    })
    .await?;
    Ok(located(StatusCode::OK, &g))
}

pub async fn delete(
    ScimClient(origin): ScimClient,
    State(ca): State<Arc<Ca>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ScimError> {
    let name = found(&ca.authority.model(), &id)?.name;
    run(&ca, origin, move |a, o| a.delete_group(o, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
