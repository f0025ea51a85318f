//! SCIM request parsing that is not tied to one resource: the `filter` subset IdPs use
//! (`ATTR eq "VALUE"`), list paging, and PATCH operations (RFC 7644 §3.5.2) in the shapes
//! Okta and Entra ID send.
//!
//! Must never: accept a filter it does not evaluate exactly (anything else is
//! `invalidFilter`), or a PATCH op other than add/replace/remove.

use super::ScimError;
use serde_json::Value;

/// `ATTR eq "VALUE"` (attribute name case-insensitive, as SCIM says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EqFilter {
    /// Lower-cased attribute name.
    pub attr: String,
    pub value: String,
}

pub fn parse_filter(text: &str, allowed: &[&str]) -> Result<EqFilter, ScimError> {
    let bad = |why: &str| {
        ScimError::new(
            400,
            Some("invalidFilter"),
            format!(
                "filter '{}': {why}; supported: {} eq \"VALUE\"",
                text.escape_debug(),
                allowed.join("|")
            ),
        )
    };
    let t = text.trim();
    let (attr, rest) = t
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad("no operator"))?;
    let rest = rest.trim_start();
    let (op, value) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad("no value"))?;
    if !op.eq_ignore_ascii_case("eq") {
        return Err(bad(&format!("operator '{op}' is not supported")));
    }
    let value = value.trim();
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or_else(|| bad("the value must be a quoted string"))?;
    // JSON string unescaping handles \" and \\ exactly.
    let value: String = serde_json::from_str(&format!("\"{inner}\""))
        .map_err(|_| bad("the value is not a valid string"))?;
    let attr_l = attr.to_ascii_lowercase();
    if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&attr_l)) {
        return Err(bad(&format!("attribute '{attr}' cannot be filtered on")));
    }
    Ok(EqFilter {
        attr: attr_l,
        value,
    })
}

/// `startIndex` (1-based) and `count` of a list request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub start: usize,
    pub count: usize,
}

pub const DEFAULT_COUNT: usize = 100;
pub const MAX_COUNT: usize = 1000;

impl Page {
    pub fn from_query(start: Option<&str>, count: Option<&str>) -> Result<Page, ScimError> {
        let num = |v: Option<&str>, what: &str, default: i64| -> Result<i64, ScimError> {
            match v {
                None | Some("") => Ok(default),
                Some(s) => s
                    .parse::<i64>()
                    .map_err(|_| ScimError::invalid_value(format!("{what} must be an integer"))),
            }
        };
        let start = num(start, "startIndex", 1)?.max(1) as usize;
        let count = num(count, "count", DEFAULT_COUNT as i64)?.clamp(0, MAX_COUNT as i64) as usize;
        Ok(Page { start, count })
    }

    /// The ListResponse for `all` (already filtered and ordered).
    pub fn list(&self, all: Vec<Value>) -> Value {
        let total = all.len();
        let items: Vec<Value> = all
            .into_iter()
            .skip(self.start - 1)
            .take(self.count)
            .collect();
        serde_json::json!({
            "schemas": [super::LIST],
            "totalResults": total,
            "startIndex": self.start,
            "itemsPerPage": items.len(),
            "Resources": items,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Replace,
    Remove,
}

/// One PATCH operation.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    pub op: Op,
    /// The `path`, if any (e.g. `active`, `members`, `members[value eq "alice"]`).
    pub path: Option<String>,
    pub value: Option<Value>,
}

/// The `Operations` of a PATCH body (op names case-insensitive: Entra sends `Replace`).
pub fn patch_ops(body: &Value) -> Result<Vec<PatchOp>, ScimError> {
    let ops = body
        .get("Operations")
        .or_else(|| body.get("operations"))
        .and_then(|o| o.as_array())
        .ok_or_else(|| ScimError::syntax("a PATCH body needs an \"Operations\" array"))?;
    if ops.len() > 1000 {
        return Err(ScimError::new(
            400,
            Some("tooMany"),
            "at most 1000 operations per PATCH",
        ));
    }
    ops.iter()
        .map(|o| {
            let name = o
                .get("op")
                .and_then(|v| v.as_str())
                .ok_or_else(|| ScimError::syntax("every operation needs an \"op\""))?;
            let op = match name.to_ascii_lowercase().as_str() {
                "add" => Op::Add,
                "replace" => Op::Replace,
                "remove" => Op::Remove,
                _ => {
                    return Err(ScimError::invalid_value(format!(
                        "op '{}' is not add, replace or remove",
                        name.escape_debug()
                    )))
                }
            };
            let path = match o.get("path") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
                Some(_) => {
                    return Err(ScimError::new(
                        400,
                        Some("invalidPath"),
                        "path must be a string",
                    ))
                }
            };
            Ok(PatchOp {
                op,
                path,
                value: o.get("value").cloned(),
            })
        })
        .collect()
}

/// For `members[value eq "X"]`: `X`.
pub fn member_path_value(path: &str) -> Result<Option<String>, ScimError> {
    let Some(rest) = path
        .strip_prefix("members[")
        .or_else(|| path.strip_prefix("Members["))
    else {
        return Ok(None);
    };
    let inner = rest
        .strip_suffix(']')
        .ok_or_else(|| ScimError::new(400, Some("invalidPath"), format!("bad path '{path}'")))?;
    let f = parse_filter(inner, &["value"])?;
    Ok(Some(f.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters() {
        let f = parse_filter("userName eq \"alice\"", &["userName", "externalId"]).unwrap();
        assert_eq!((f.attr.as_str(), f.value.as_str()), ("username", "alice"));
        let f = parse_filter("externalid EQ \"a \\\"b\\\"\"", &["userName", "externalId"]).unwrap();
        assert_eq!(f.value, "a \"b\"");
        for bad in [
            "userName co \"al\"",
            "userName eq alice",
            "emails eq \"x\"",
            "userName",
            "userName eq \"a\" and active eq true",
        ] {
            let e = parse_filter(bad, &["userName"]).unwrap_err();
            assert_eq!(e.scim_type, Some("invalidFilter"), "{bad}");
        }
    }

    #[test]
    fn paging() {
        let p = Page::from_query(Some("2"), Some("2")).unwrap();
        let l = p.list(vec![json!(1), json!(2), json!(3), json!(4)]);
        assert_eq!(l["totalResults"], 4);
        assert_eq!(l["Resources"], json!([2, 3]));
        assert_eq!(l["startIndex"], 2);
        let p = Page::from_query(Some("0"), Some("-1")).unwrap();
        assert_eq!((p.start, p.count), (1, 0));
        assert!(Page::from_query(Some("x"), None).is_err());
    }

    #[test]
    fn patch_shapes() {
        // Okta: value object without a path.
        let ops = patch_ops(
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": false}}]}),
        )
        .unwrap();
        assert_eq!(ops[0].op, Op::Replace);
        assert_eq!(ops[0].path, None);
        // Entra: capitalised op with a path.
        let ops = patch_ops(
            &json!({"Operations": [{"op": "Replace", "path": "active", "value": "False"}]}),
        )
        .unwrap();
        assert_eq!(
            (ops[0].op, ops[0].path.as_deref()),
            (Op::Replace, Some("active"))
        );
        assert!(patch_ops(&json!({"Operations": [{"op": "move"}]})).is_err());
        assert!(patch_ops(&json!({"ops": []})).is_err());
        assert_eq!(
            member_path_value("members[value eq \"alice\"]")
                .unwrap()
                .as_deref(),
            Some("alice")
        );
        assert_eq!(member_path_value("members").unwrap(), None);
    }
}
