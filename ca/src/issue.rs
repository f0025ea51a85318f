//! The issuance decision: may this user get a certificate for this scope, for how long,
//! and with which restrictions. Pure: reads the in-memory model, decides, never signs or
//! writes (the HTTP handler signs and the writer records).
//!
//! Rules: the caller's grants (through their groups) whose selector is contained in the
//! requested scope match (an empty scope matches every grant). A grant with source CIDRs
//! matches only a request coming from one of them; a grant with `require_reason` only a
//! request with a reason. Validity = min(requested, max of the matching grants' max TTL,
//! the CA-wide max). `source-address` = the union of the matching grants' CIDRs when
//! every matching grant has CIDRs (a matching grant without CIDRs allows any source).
//!
//! Must never: issue to a disabled or unknown user, or for a scope no grant covers.

use crate::model::{Grant, Model};
use smith_api::ErrorCode;
use smith_proto::{Tags, UserName};
use std::collections::BTreeSet;
use std::net::IpAddr;

pub const MIN_TTL_SECS: u64 = 60;
pub const MAX_REASON_LEN: usize = 256;

pub struct IssueRequest<'a> {
    pub user: &'a UserName,
    pub scope: &'a Tags,
    pub ttl_secs: u64,
    pub reason: Option<&'a str>,
    pub source: IpAddr,
    /// The CA-wide maximum validity.
    pub ca_max_ttl_secs: u64,
    /// Unix seconds, for time windows.
    pub now: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub validity_secs: u64,
    /// Set when the requested TTL was clipped.
    pub clipped_to: Option<u64>,
    pub source_address: Option<String>,
    pub grant_ids: Vec<u64>,
    /// Human summary for the decision log.
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub code: ErrorCode,
    pub reason: String,
    pub grant_ids: Vec<u64>,
}

impl Denied {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Denied {
        Denied {
            code,
            reason: reason.into(),
            grant_ids: vec![],
        }
    }
}

fn grant_text(g: &Grant) -> String {
    let sel = if g.selector.is_empty() {
        "every host".to_string()
    } else {
        g.selector.to_string()
    };
    format!(
        "grant {} ({} on {sel} via group {})",
        g.id, g.level, g.group
    )
}

/// Validates the reason text: bounded, printable.
pub fn check_reason(reason: Option<&str>) -> Result<(), Denied> {
    if let Some(r) = reason {
        if r.chars().count() > MAX_REASON_LEN {
            return Err(Denied::new(
                ErrorCode::InvalidReason,
                format!("the reason is longer than {MAX_REASON_LEN} characters"),
            ));
        }
        if r.chars().any(|c| c.is_control()) {
            return Err(Denied::new(
                ErrorCode::InvalidReason,
                "the reason may not contain control characters (newlines, tabs, NUL...)",
            ));
        }
    }
    Ok(())
}

pub fn decide(m: &Model, req: &IssueRequest<'_>) -> Result<Allowed, Denied> {
    check_reason(req.reason)?;
    if req.ttl_secs < MIN_TTL_SECS {
        return Err(Denied::new(
            ErrorCode::InvalidTtl,
            format!(
                "requested TTL of {}s is below the minimum of {MIN_TTL_SECS}s",
                req.ttl_secs
            ),
        ));
    }
    if req.ttl_secs > req.ca_max_ttl_secs {
        return Err(Denied::new(
            ErrorCode::InvalidTtl,
            format!(
                "requested TTL of {} is above this CA's maximum of {}",
                humantime::format_duration(std::time::Duration::from_secs(req.ttl_secs)),
                humantime::format_duration(std::time::Duration::from_secs(req.ca_max_ttl_secs))
            ),
        ));
    }
    let user = m.user(req.user).ok_or_else(|| {
        Denied::new(
            ErrorCode::UnknownUser,
            format!("user '{}' does not exist at this CA", req.user),
        )
    })?;
    if user.is_disabled() {
        return Err(Denied::new(
            ErrorCode::UserDisabled,
            format!("user '{}' is disabled; no certificate is issued", user.name),
        ));
    }
    let scope_text = if req.scope.is_empty() {
        "(any)".to_string()
    } else {
        req.scope.to_string()
    };
    let held: Vec<&Grant> = m.grants_of(user).collect();
    let covering: Vec<&Grant> = held
        .iter()
        .copied()
        .filter(|g| g.selector.is_subset_of(req.scope) || req.scope.is_empty())
        .collect();
    if covering.is_empty() {
        let groups: Vec<&str> = user.groups.iter().map(|g| g.as_str()).collect();
        let have = if held.is_empty() {
            "you hold no grant at all".to_string()
        } else {
            let list: Vec<String> = held.iter().map(|g| grant_text(g)).collect();
            format!(
                "your grants cover: {}; ask for a scope that includes one of these selectors",
                list.join("; ")
            )
        };
        return Err(Denied::new(
            ErrorCode::NoMatchingGrant,
            format!(
                "no grant covers scope '{scope_text}' for user '{}' (groups: {}); {have}",
                user.name,
                if groups.is_empty() {
                    "none".to_string()
                } else {
                    groups.join(", ")
                }
            ),
        ));
    }
    let mut failed = Vec::new();
    let matching: Vec<&Grant> = covering
        .iter()
        .copied()
        .filter(|g| {
            if !g.source_cidrs.is_empty() && !g.source_cidrs.iter().any(|c| c.contains(&req.source))
            {
                let cidrs: Vec<String> = g.source_cidrs.iter().map(|c| c.to_string()).collect();
                failed.push(format!(
                    "{}: request source {} is not in {}",
                    grant_text(g),
                    req.source,
                    cidrs.join(",")
                ));
                return false;
            }
            if g.require_reason && req.reason.is_none_or(|r| r.trim().is_empty()) {
                failed.push(format!("{}: requires a reason (--reason)", grant_text(g)));
                return false;
            }
            if !g.time_windows.is_empty() {
                let open = g.time_windows.iter().any(|w| w.contains(req.now));
                if !open {
                    failed.push(format!(
                        "{}: outside its time windows ({}); now is {}",
                        grant_text(g),
                        g.time_windows
                            .iter()
                            .map(|w| w.to_string())
                            .collect::<Vec<_>>()
                            .join("; "),
                        crate::timewin::describe_for(&g.time_windows, req.now)
                    ));
                    return false;
                }
            }
            true
        })
        .collect();
    if matching.is_empty() {
        let mut d = Denied::new(
            ErrorCode::ConditionFailed,
            format!(
                "grants cover scope '{scope_text}' but their conditions are not met: {}",
                failed.join("; ")
            ),
        );
        d.grant_ids = covering.iter().map(|g| g.id).collect();
        return Err(d);
    }
    let grant_max = matching.iter().map(|g| g.max_ttl_secs).max().unwrap_or(0);
    let allowed_max = grant_max.min(req.ca_max_ttl_secs);
    let validity = req.ttl_secs.min(allowed_max);
    let clipped_to = (validity < req.ttl_secs).then_some(validity);
    let source_address = if matching.iter().all(|g| !g.source_cidrs.is_empty()) {
        let set: BTreeSet<String> = matching
            .iter()
            .flat_map(|g| g.source_cidrs.iter().map(|c| c.to_string()))
            .collect();
        Some(set.into_iter().collect::<Vec<_>>().join(","))
    } else {
        None
    };
    let ids: Vec<u64> = matching.iter().map(|g| g.id).collect();
    let list: Vec<String> = matching.iter().map(|g| grant_text(g)).collect();
    let mut summary = format!("issued for scope '{scope_text}' by {}", list.join("; "));
    if let Some(c) = clipped_to {
        summary.push_str(&format!("; TTL clipped from {}s to {c}s", req.ttl_secs));
    }
    Ok(Allowed {
        validity_secs: validity,
        clipped_to,
        source_address,
        grant_ids: ids,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{model, user};
    use crate::model::{Change, Group, IdKind};
    use smith_proto::{GroupName, Level};

    fn setup() -> Model {
        let mut m = model();
        let dev = Group {
            name: GroupName::new("dev").unwrap(),
            gid: m.allocate_id(IdKind::Group, "dev", None).unwrap(),
            members: Default::default(),
            created_at: 0,
            external_id: None,
            source: crate::model::Source::Admin,
        };
        m.apply(&[Change::AddGroup(dev)], Some(1));
        let mut a = user(&m, "alice");
        a.groups.insert(GroupName::new("dev").unwrap());
        m.apply(&[Change::AddUser(a)], Some(2));
        let g = |id, sel: &str, ttl, cidrs: &[&str], reason| Grant {
            id,
            group: GroupName::new("dev").unwrap(),
            selector: Tags::parse(sel).unwrap(),
            level: Level::Ssh,
            max_ttl_secs: ttl,
            source_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            require_reason: reason,
            time_windows: vec![],
            created_at: 0,
        };
        m.apply(
            &[
                Change::AddGrant(g(1, "env=dev", 8 * 3600, &[], false)),
                Change::AddGrant(g(2, "env=prod", 3600, &["10.0.0.0/8"], true)),
            ],
            Some(3),
        );
        m
    }

    fn req<'a>(
        u: &'a UserName,
        scope: &'a Tags,
        ttl: u64,
        reason: Option<&'a str>,
        src: &str,
    ) -> IssueRequest<'a> {
        IssueRequest {
            user: u,
            scope,
            ttl_secs: ttl,
            reason,
            source: src.parse().unwrap(),
            ca_max_ttl_secs: 86400,
            now: 1_704_067_200 + 10 * 3600, // Monday 10:00 UTC
        }
    }

    #[test]
    fn grants_cover_scopes_and_clip_ttl() {
        let m = setup();
        let alice = UserName::new("alice").unwrap();
        let dev = Tags::parse("env=dev,role=db").unwrap();
        let a = decide(&m, &req(&alice, &dev, 3600, None, "127.0.0.1")).unwrap();
        assert_eq!(
            (a.validity_secs, a.clipped_to, a.grant_ids.clone()),
            (3600, None, vec![1])
        );
        assert_eq!(a.source_address, None);
        let a = decide(&m, &req(&alice, &dev, 86400, None, "127.0.0.1")).unwrap();
        assert_eq!(a.clipped_to, Some(8 * 3600));

        let other = Tags::parse("env=staging").unwrap();
        let d = decide(&m, &req(&alice, &other, 3600, None, "127.0.0.1")).unwrap_err();
        assert_eq!(d.code, ErrorCode::NoMatchingGrant);
        assert!(d.reason.contains("env=staging"), "{}", d.reason);
    }

    #[test]
    fn conditions_decide() {
        let m = setup();
        let alice = UserName::new("alice").unwrap();
        let prod = Tags::parse("env=prod").unwrap();
        let d = decide(&m, &req(&alice, &prod, 600, Some("INC-1"), "127.0.0.1")).unwrap_err();
        assert_eq!(d.code, ErrorCode::ConditionFailed);
        assert!(d.reason.contains("not in 10.0.0.0/8"), "{}", d.reason);
        let d = decide(&m, &req(&alice, &prod, 600, None, "10.1.2.3")).unwrap_err();
        assert!(d.reason.contains("requires a reason"), "{}", d.reason);
        let a = decide(&m, &req(&alice, &prod, 600, Some("INC-1"), "10.1.2.3")).unwrap();
        assert_eq!(a.source_address.as_deref(), Some("10.0.0.0/8"));
        // Empty scope: every grant matches; one without CIDRs means no restriction.
        let any = Tags::new();
        let a = decide(&m, &req(&alice, &any, 600, Some("x"), "10.1.2.3")).unwrap();
        assert_eq!(a.grant_ids, vec![1, 2]);
        assert_eq!(a.source_address, None);
    }

    #[test]
    fn time_windows_decide() {
        let mut m = setup();
        let alice = UserName::new("alice").unwrap();
        let mut g = m.grants().get(&1).unwrap().clone();
        g.time_windows = vec![crate::timewin::Window::parse("sat,sun 10:00-12:00 UTC").unwrap()];
        m.apply(
            &[
                Change::RemoveGrant { id: 1, at: 0 },
                Change::AddGrant(g.clone()),
            ],
            Some(9),
        );
        let dev = Tags::parse("env=dev").unwrap();
        let d = decide(&m, &req(&alice, &dev, 600, None, "127.0.0.1")).unwrap_err();
        assert_eq!(d.code, ErrorCode::ConditionFailed);
        assert!(
            d.reason.contains("outside its time windows") && d.reason.contains("Mon 10:00 UTC"),
            "{}",
            d.reason
        );
        g.time_windows
            .push(crate::timewin::Window::parse("mon-fri 09:00-18:00 UTC").unwrap());
        m.apply(
            &[Change::RemoveGrant { id: 1, at: 0 }, Change::AddGrant(g)],
            Some(10),
        );
        assert!(decide(&m, &req(&alice, &dev, 600, None, "127.0.0.1")).is_ok());
    }

    #[test]
    fn bounds_and_disabled_users() {
        let mut m = setup();
        let alice = UserName::new("alice").unwrap();
        let dev = Tags::parse("env=dev").unwrap();
        assert_eq!(
            decide(&m, &req(&alice, &dev, 59, None, "127.0.0.1"))
                .unwrap_err()
                .code,
            ErrorCode::InvalidTtl
        );
        assert_eq!(
            decide(&m, &req(&alice, &dev, 86401, None, "127.0.0.1"))
                .unwrap_err()
                .code,
            ErrorCode::InvalidTtl
        );
        assert_eq!(
            decide(&m, &req(&alice, &dev, 600, Some("a\nb"), "127.0.0.1"))
                .unwrap_err()
                .code,
            ErrorCode::InvalidReason
        );
        m.apply(
            &[Change::DisableUser {
                name: alice.clone(),
                at: 1,
                by: crate::model::Disabler::Admin,
            }],
            Some(4),
        );
        assert_eq!(
            decide(&m, &req(&alice, &dev, 600, None, "127.0.0.1"))
                .unwrap_err()
                .code,
            ErrorCode::UserDisabled
        );
    }
}
