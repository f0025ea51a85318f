//! The issuance decision: may this user get a certificate for this scope, for how long,
//! and with which restrictions. Pure: reads the in-memory model, decides, never signs or
//! writes (the HTTP handler signs and the writer records).
//!
//! Rules: the caller's grants (through their groups) whose selector is contained in the
//! requested scope cover it (an empty scope: every grant). A grant with source CIDRs
//! matches only a request coming from one of them; a grant with `require_reason` only a
//! request with a reason; a grant with time windows only inside one. The certificate is
//! issued under exactly the covering grants whose conditions passed, and names them
//! (grant-bound: a host admits it only where one of *those* grants covers the host, at
//! their level): validity = min(requested, the CA-wide max, every such grant's max TTL
//! and the time left in its window); `source-address` = the networks every such grant
//! with networks allows; the `permit-*` extensions = what every such grant permits; a
//! forced command if one grant forces it (two different ones: refused). A certificate
//! for one host ([`crate::reach::target`]) considers exactly the grants that fit that
//! host as the login asked for, instead of those the scope covers; the same conditions
//! and limits apply.
//!
//! Must never: issue to a disabled or unknown user, for a scope no grant covers, under a
//! grant whose conditions did not pass, or for longer than any of its grants allows.

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
    /// A certificate for one host ([`crate::reach::target`]): exactly these grants are
    /// considered (those that fit the host as the login), instead of every grant the
    /// scope covers. `scope` is then the certificate's scope only.
    pub only: Option<&'a BTreeSet<u64>>,
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
    /// The grants the certificate is issued under: every grant that covers the scope and
    /// whose conditions passed, and only those.
    pub grant_ids: Vec<u64>,
    /// Everything the certificate names ([`principals`]).
    pub principals: Vec<String>,
    /// What every one of those grants permits.
    pub permits: smith_proto::grants::Permits,
    pub force_command: Option<String>,
    /// The `grants@smith` extension's text.
    pub grants_extension: String,
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

/// The user `name`, who must exist and not be disabled.
pub fn live_user<'m>(m: &'m Model, name: &UserName) -> Result<&'m crate::model::User, Denied> {
    let user = m.user(name).ok_or_else(|| {
        Denied::new(
            ErrorCode::UnknownUser,
            format!("user '{name}' does not exist at this CA"),
        )
    })?;
    if user.is_disabled() {
        return Err(Denied::new(
            ErrorCode::UserDisabled,
            format!("user '{}' is disabled; no certificate is issued", user.name),
        ));
    }
    Ok(user)
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
    let user = live_user(m, req.user)?;
    let scope_text = if req.scope.is_empty() {
        "(any)".to_string()
    } else {
        req.scope.to_string()
    };
    let held: Vec<&Grant> = m.grants_of(user).collect();
    let covering: Vec<&Grant> = held
        .iter()
        .copied()
        .filter(|g| match req.only {
            Some(ids) => ids.contains(&g.id),
            None => g.selector.is_subset_of(req.scope) || req.scope.is_empty(),
        })
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
    let mut validity = req.ttl_secs.min(req.ca_max_ttl_secs);
    let mut clipped_by = Vec::new();
    for g in &matching {
        let mut limit = g.max_ttl_secs;
        if !g.time_windows.is_empty() {
            limit = limit.min(crate::timewin::open_for(&g.time_windows, req.now, validity));
        }
        if limit < validity {
            validity = limit;
            clipped_by = vec![g.id];
        } else if limit == validity && validity < req.ttl_secs {
            clipped_by.push(g.id);
        }
    }
    if validity < MIN_TTL_SECS {
        let mut d = Denied::new(
            ErrorCode::ConditionFailed,
            format!(
                "grant {} allows less than the minimum certificate of {MIN_TTL_SECS}s now (its \
                 time window closes); ask again when it reopens",
                clipped_by
                    .iter()
                    .map(|id| id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        d.grant_ids = matching.iter().map(|g| g.id).collect();
        return Err(d);
    }
    let clipped_to = (validity < req.ttl_secs).then_some(validity);
    let source_address = source_address(&matching);
    let permits = matching
        .iter()
        .fold(smith_proto::grants::Permits::ALL, |p, g| {
            p.intersect(&g.cert.permits)
        });
    let forced: BTreeSet<&str> = matching
        .iter()
        .filter_map(|g| g.cert.force_command.as_deref())
        .collect();
    if forced.len() > 1 {
        let mut d = Denied::new(
            ErrorCode::GrantsConflict,
            format!(
                "the grants matching scope '{scope_text}' force different commands ({}); one \
                 certificate cannot carry both: ask with --scope for one of them",
                matching
                    .iter()
                    .filter(|g| g.cert.force_command.is_some())
                    .map(|g| grant_text(g))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        );
        d.grant_ids = matching.iter().map(|g| g.id).collect();
        return Err(d);
    }
    let force_command = forced.into_iter().next().map(str::to_string);
    let principals = principals(user.name.as_str(), &matching);
    if principals.len() > smith_proto::grants::MAX_CERT_PRINCIPALS {
        let mut d = Denied::new(
            ErrorCode::GrantsConflict,
            format!(
                "scope '{scope_text}' matches {} grants, whose certificate would name {} \
                 principals (OpenSSH accepts at most {}): ask with a narrower --scope",
                matching.len(),
                principals.len(),
                smith_proto::grants::MAX_CERT_PRINCIPALS
            ),
        );
        d.grant_ids = matching.iter().map(|g| g.id).collect();
        return Err(d);
    }
    let ids: Vec<u64> = matching.iter().map(|g| g.id).collect();
    let list: Vec<String> = matching.iter().map(|g| grant_text(g)).collect();
    let mut summary = format!("issued for scope '{scope_text}' under {}", list.join("; "));
    if let Some(c) = clipped_to {
        let by: Vec<String> = clipped_by.iter().map(|id| format!("grant {id}")).collect();
        summary.push_str(&format!(
            "; TTL clipped from {}s to {c}s by {}",
            req.ttl_secs,
            if by.is_empty() {
                "the CA's maximum".to_string()
            } else {
                by.join(", ")
            }
        ));
    }
    if !failed.is_empty() {
        summary.push_str(&format!("; not included: {}", failed.join("; ")));
    }
    Ok(Allowed {
        validity_secs: validity,
        clipped_to,
        source_address,
        grant_ids: ids,
        principals,
        permits,
        force_command,
        grants_extension: matching
            .iter()
            .map(|g| {
                format!(
                    "{}:{}:{}",
                    g.id,
                    g.level,
                    if g.selector.is_empty() {
                        "*".to_string()
                    } else {
                        g.selector.to_string()
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
        summary,
    })
}

/// `source-address`: a certificate under grants with source networks may only be used
/// from networks every one of them allows (the request came from one, so the
/// intersection holds it); grants without networks add no restriction.
fn source_address(grants: &[&Grant]) -> Option<String> {
    let mut sets = grants.iter().filter(|g| !g.source_cidrs.is_empty());
    let first = sets.next()?;
    let mut acc: BTreeSet<ipnet::IpNet> = first.source_cidrs.iter().copied().collect();
    for g in sets {
        let mut next = BTreeSet::new();
        for a in &acc {
            for b in &g.source_cidrs {
                if b.contains(a) {
                    next.insert(*a);
                } else if a.contains(b) {
                    next.insert(*b);
                }
            }
        }
        acc = next;
    }
    Some(
        acc.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// The principals of a certificate for `person` under `grants` (see
/// [`smith_proto::grants`]): the person's login and the grants' shared logins (for people
/// reading it, and hosts of older Smith versions), one `smith-grant:` principal per grant,
/// and one `smith-tags:` principal per grant and login for hosts that only trust the CA.
pub fn principals(person: &str, grants: &[&Grant]) -> Vec<String> {
    use smith_proto::grants::{grant_principal, tags_principal};
    let mut out: Vec<String> = vec![person.to_string()];
    let mut push = |p: String| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for g in grants {
        for l in &g.cert.logins {
            push(l.as_str().to_string());
        }
    }
    for g in grants {
        push(grant_principal(g.id, g.level, person));
    }
    for g in grants {
        push(tags_principal(&g.selector, person));
        for l in &g.cert.logins {
            push(tags_principal(&g.selector, l.as_str()));
        }
    }
    out
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
            cert: Default::default(),
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
            only: None,
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
        // Empty scope: every grant whose conditions pass, and only those: from outside
        // the network and without a reason, the dev grant alone.
        let any = Tags::new();
        let a = decide(&m, &req(&alice, &any, 8 * 3600, None, "127.0.0.1")).unwrap();
        assert_eq!((a.grant_ids.clone(), a.validity_secs), (vec![1], 8 * 3600));
        assert_eq!(a.source_address, None);
        assert!(a.summary.contains("not included"), "{}", a.summary);
        assert_eq!(
            a.principals,
            vec![
                "alice",
                "smith-grant:1:ssh:alice",
                "smith-tags:env=dev:alice"
            ]
        );
        // With both: the prod grant's network binds the whole certificate, and its max
        // TTL bounds it, whatever the dev grant allows.
        let a = decide(&m, &req(&alice, &any, 8 * 3600, Some("x"), "10.1.2.3")).unwrap();
        assert_eq!(a.grant_ids, vec![1, 2]);
        assert_eq!(a.source_address.as_deref(), Some("10.0.0.0/8"));
        assert_eq!((a.validity_secs, a.clipped_to), (3600, Some(3600)));
        assert!(a.summary.contains("by grant 2"), "{}", a.summary);
        assert_eq!(a.grants_extension, "1:ssh:env=dev 2:ssh:env=prod");
    }

    #[test]
    fn certificates_carry_only_what_every_grant_allows() {
        let mut m = setup();
        let alice = UserName::new("alice").unwrap();
        let mut g1 = m.grants().get(&1).unwrap().clone();
        g1.cert.permits.agent_forwarding = true;
        g1.cert.logins = vec![UserName::new("deploy").unwrap()];
        let mut g3 = g1.clone();
        g3.id = 3;
        g3.selector = Tags::parse("env=dev,role=db").unwrap();
        g3.cert.permits.agent_forwarding = false;
        g3.cert.logins = vec![];
        m.apply(
            &[
                Change::RemoveGrant { id: 1, at: 0 },
                Change::AddGrant(g1),
                Change::AddGrant(g3.clone()),
            ],
            Some(9),
        );
        let dev = Tags::parse("env=dev").unwrap();
        let a = decide(&m, &req(&alice, &dev, 600, None, "127.0.0.1")).unwrap();
        assert!(a.permits.agent_forwarding);
        assert_eq!(
            a.principals,
            vec![
                "alice",
                "deploy",
                "smith-grant:1:ssh:alice",
                "smith-tags:env=dev:alice",
                "smith-tags:env=dev:deploy"
            ]
        );
        // A scope both cover: the certificate is under both, so no agent forwarding.
        let db = Tags::parse("env=dev,role=db").unwrap();
        let a = decide(&m, &req(&alice, &db, 600, None, "127.0.0.1")).unwrap();
        assert_eq!(a.grant_ids, vec![1, 3]);
        assert!(!a.permits.agent_forwarding);
        // Two different forced commands cannot share one certificate.
        g3.cert.force_command = Some("/usr/bin/uptime".into());
        let mut g4 = g3.clone();
        g4.id = 4;
        g4.cert.force_command = Some("/bin/true".into());
        m.apply(
            &[
                Change::AddGrant(g4),
                Change::RemoveGrant { id: 3, at: 0 },
                Change::AddGrant(g3),
            ],
            Some(10),
        );
        let d = decide(&m, &req(&alice, &db, 600, None, "127.0.0.1")).unwrap_err();
        assert_eq!(d.code, ErrorCode::GrantsConflict);
        assert_eq!(
            decide(&m, &req(&alice, &dev, 600, None, "127.0.0.1"))
                .unwrap()
                .force_command,
            None
        );
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
        // At 10:00 the window closes in 8 hours: a certificate never outlives it.
        let a = decide(&m, &req(&alice, &dev, 86400, None, "127.0.0.1")).unwrap();
        assert_eq!(a.clipped_to, Some(8 * 3600));
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
