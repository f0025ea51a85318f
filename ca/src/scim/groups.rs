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
    external_id, mutate, posix_id, rfc3339, scim_response, unchanged_id, ScimBody, ScimClient,
    ScimError, BASE, CORE_GROUP, GROUP_EXT,
};
use crate::model::{Change, Group, IdKind, Model};
use crate::server::Ca;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use smith_proto::{GroupName, UserName};
use std::collections::{BTreeSet, HashMap};
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
        .and_then(|n| m.groups.get(&n).cloned())
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

fn check_users(m: &Model, users: &BTreeSet<UserName>) -> Result<(), ScimError> {
    for u in users {
        if !m.users.contains_key(u) {
            return Err(ScimError::invalid_value(format!(
                "member '{u}' is not a user here; create the user first"
            )));
        }
    }
    Ok(())
}

/// Changes that make `g`'s members exactly `want`.
fn set_members(g: &Group, want: &BTreeSet<UserName>, at: u64) -> Vec<Change> {
    let mut c = Vec::new();
    for u in g.members.difference(want) {
        c.push(Change::RemoveMember {
            group: g.name.clone(),
            user: u.clone(),
        });
    }
    for u in want.difference(&g.members) {
        c.push(Change::AddMember {
            group: g.name.clone(),
            user: u.clone(),
            at,
        });
    }
    c
}

fn located(status: StatusCode, g: &Group) -> Response {
    let mut r = scim_response(status, resource(g, true));
    if let Ok(v) = HeaderValue::from_str(&format!("{BASE}/Groups/{}", g.name)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn current(ca: &Ca, name: &GroupName) -> Result<Group, ScimError> {
    found(&ca.model(), name.as_str())
}

pub async fn create(
    _: ScimClient,
    State(ca): State<Arc<Ca>>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let name = group_name(body.get("displayName"))?;
    let gid = posix_id(&body, GROUP_EXT, "gidNumber")?;
    let ext = external_id(body.get("externalId").unwrap_or(&Value::Null))?;
    let want: BTreeSet<UserName> = members(body.get("members"))?.into_iter().collect();
    let n = name.clone();
    mutate(&ca, format!("scim group create {name}"), move |m, at| {
        if m.groups.contains_key(&n) {
            return Err(ScimError::uniqueness(format!("group '{n}' already exists")));
        }
        if UserName::new(n.as_str()).is_ok_and(|u| m.users.contains_key(&u)) {
            return Err(ScimError::uniqueness(format!(
                "'{n}' is a user's name (their private group on hosts); pick another group name"
            )));
        }
        check_users(m, &want)?;
        let gid = m
            .allocate_id(IdKind::Group, n.as_str(), gid)
            .map_err(|e| ScimError::new(409, Some("uniqueness"), e.to_string()))?;
        let g = Group {
            name: n.clone(),
            gid,
            members: Default::default(),
            created_at: at,
            external_id: ext,
        };
        let mut c = vec![Change::AddGroup(g.clone())];
        c.extend(set_members(&g, &want, at));
        Ok(c)
    })
    .await?;
    Ok(located(StatusCode::CREATED, &current(&ca, &name)?))
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
    let m = ca.model();
    let all: Vec<Value> = m
        .groups
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
    let g = found(&ca.model(), &id)?;
    Ok(scim_response(
        StatusCode::OK,
        resource(&g, !excludes_members(&q)),
    ))
}

fn same_name(g: &Group, v: Option<&Value>) -> Result<(), ScimError> {
    if let Some(v) = v {
        let n = group_name(Some(v))?;
        if n != g.name {
            return Err(ScimError::mutability(format!(
                "displayName cannot change ('{}' to '{n}'): Smith group names are fixed (grants \
                 refer to them); create a new group instead",
                g.name
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
    let want: BTreeSet<UserName> = members(body.get("members"))?.into_iter().collect();
    mutate(&ca, format!("scim group replace {name}"), move |m, at| {
        let g = found(m, &id)?;
        same_name(&g, body.get("displayName"))?;
        unchanged_id(&body, GROUP_EXT, "gidNumber", g.gid, "gids")?;
        check_users(m, &want)?;
        let ext = external_id(body.get("externalId").unwrap_or(&Value::Null))?;
        let mut c = Vec::new();
        if ext != g.external_id {
            c.push(Change::SetGroupExternalId {
                name: g.name.clone(),
                external_id: ext,
            });
        }
        c.extend(set_members(&g, &want, at));
        Ok(c)
    })
    .await?;
    Ok(located(StatusCode::OK, &current(&ca, &name)?))
}

pub async fn patch(
    _: ScimClient,
    State(ca): State<Arc<Ca>>,
    Path(id): Path<String>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let ops = patch_ops(&body)?;
    let name = found(&ca.model(), &id)?.name;
    mutate(&ca, format!("scim group patch {name}"), move |m, at| {
        let g = found(m, &id)?;
        let mut want = g.members.clone();
        let mut ext = g.external_id.clone();
        let mut apply = |attr: &str, op: Op, v: Option<&Value>| -> Result<(), ScimError> {
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
                want.remove(&u);
                return Ok(());
            }
            match attr.to_ascii_lowercase().as_str() {
                "members" => {
                    let list = members(v)?;
                    match op {
                        Op::Add => want.extend(list),
                        Op::Remove if v.is_none_or(Value::is_null) => want.clear(),
                        Op::Remove => list.iter().for_each(|u| {
                            want.remove(u);
                        }),
                        Op::Replace => want = list.into_iter().collect(),
                    }
                }
                "displayname" => same_name(&g, v)?,
                "externalid" => {
                    ext = if op == Op::Remove {
                        None
                    } else {
                        external_id(v.unwrap_or(&Value::Null))?
                    };
                }
                // id, meta, schemas and attributes Smith does not keep are ignored.
                _ => {}
            }
            Ok(())
        };
        for op in &ops {
            match (&op.path, &op.value) {
                (Some(p), v) => apply(p, op.op, v.as_ref())?,
                (None, Some(Value::Object(obj))) => {
                    for (k, v) in obj {
                        apply(k, op.op, Some(v))?;
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
        check_users(m, &want.difference(&g.members).cloned().collect())?;
        let mut c = Vec::new();
        if ext != g.external_id {
            c.push(Change::SetGroupExternalId {
                name: g.name.clone(),
                external_id: ext,
            });
        }
        c.extend(set_members(&g, &want, at));
        Ok(c)
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
    mutate(&ca, format!("scim group delete {name}"), move |m, at| {
        let g = found(m, &id)?;
        let mut c: Vec<Change> = m
            .grants
            .values()
            .filter(|gr| gr.group == g.name)
            .map(|gr| Change::RemoveGrant { id: gr.id, at })
            .collect();
        c.push(Change::DeleteGroup { name: g.name, at });
        Ok(c)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
