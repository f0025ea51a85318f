//! `smith hosts [--json]`: the hosts the engineer may reach (`POST /v1/user/hosts`):
//! names, tags, level, the grants they are reached through (with their conditions), and
//! whether the agent holds a certificate that fits each (for her own login). Keeps the
//! list for the check before each connection ([`crate::hostlist`]); with the CA
//! unreachable it shows the list kept last time, saying so.
//!
//! Must never: print a token, or present a host list as current when it is not.

use crate::agent::Agent;
use crate::config::Effective;
use crate::hostlist::HostList;
use serde::Serialize;
use smith_api::{HostGrant, ReachableHost};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Serialize)]
struct Output<'a> {
    user: &'a str,
    ca_url: &'a str,
    /// Unix seconds the list was fetched.
    fetched_at: u64,
    /// False when the CA could not be reached and this is the list kept last time.
    current: bool,
    hosts: Vec<HostOut<'a>>,
}

#[derive(Serialize)]
struct HostOut<'a> {
    #[serde(flatten)]
    host: &'a ReachableHost,
    /// The certificate in the agent that fits this host for her own login, if any.
    certificate: Option<Held>,
}

#[derive(Serialize)]
struct Held {
    key_id: String,
    valid_before: u64,
}

fn grant_text(g: &HostGrant) -> String {
    let mut s = format!(
        "#{} {} {} (group {}",
        g.id,
        g.level,
        if g.selector.is_empty() {
            "*".to_string()
        } else {
            g.selector.to_string()
        },
        g.group
    );
    if g.require_reason {
        s.push_str(", reason");
    }
    if !g.source_cidrs.is_empty() {
        s.push_str(&format!(", from {}", g.source_cidrs.join(",")));
    }
    if !g.time_windows.is_empty() {
        s.push_str(&format!(", {}", g.time_windows.join("; ")));
    }
    s.push(')');
    s
}

pub fn run(cfg: &Effective, json: bool) -> anyhow::Result<()> {
    let profile = cfg.profile().to_string();
    let url = cfg.ca_url()?;
    let cred = cfg.credential()?;
    let (list, current) = match HostList::fetch(cfg, &cred, Duration::from_secs(30)) {
        Ok(l) => {
            if let Err(e) = l.save(&profile) {
                eprintln!("warning: cannot keep the list for the check before ssh: {e:#}");
            }
            (l, true)
        }
        Err(e) if e.downcast_ref::<crate::cert::Denied>().is_none() => {
            match HostList::load(&profile, &url).filter(|l| l.fetched_at > 0) {
                Some(l) => {
                    eprintln!(
                        "warning: {e:#}\nthe list below is the one kept at {}",
                        humantime::format_rfc3339_seconds(
                            UNIX_EPOCH + Duration::from_secs(l.fetched_at)
                        )
                    );
                    (l, false)
                }
                None => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let ids = cfg
        .ssh_auth_sock
        .as_deref()
        .and_then(|s| Agent::connect(Path::new(s)).ok())
        .and_then(|mut a| a.identities().ok())
        .unwrap_or_default();
    let ca_keys = list.ca_keys();
    let now = crate::oidc::now();
    let hosts: Vec<HostOut<'_>> = list
        .hosts
        .iter()
        .map(|h| HostOut {
            host: h,
            certificate: crate::ensure::fitting(
                &ids,
                &ca_keys,
                &h.scope,
                Some(list.user.as_str()),
                now,
                Duration::ZERO,
            )
            .map(|c| Held {
                key_id: c.key_id,
                valid_before: c.valid_before,
            }),
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Output {
                user: list.user.as_str(),
                ca_url: &list.ca_url,
                fetched_at: list.fetched_at,
                current,
                hosts,
            })?
        );
        return Ok(());
    }
    if hosts.is_empty() {
        println!(
            "No enrolled host is covered by a grant of {} (ask your admin for access).",
            list.user
        );
        return Ok(());
    }
    let width = |f: &dyn Fn(&HostOut<'_>) -> usize, min: usize| {
        hosts.iter().map(f).max().unwrap_or(0).max(min)
    };
    let wn = width(&|h| h.host.name.as_str().len(), 4);
    let wt = width(&|h| h.host.tags.to_string().len(), 4);
    let wl = width(
        &|h| {
            h.host
                .logins
                .iter()
                .map(|l| l.as_str().len() + 1)
                .sum::<usize>()
        },
        6,
    );
    println!(
        "{:<wn$}  {:<5}  {:<wt$}  {:<wl$}  {:<22}  GRANTS",
        "HOST", "LEVEL", "TAGS", "LOGINS", "CERTIFICATE"
    );
    for h in &hosts {
        let logins: Vec<&str> = h.host.logins.iter().map(|l| l.as_str()).collect();
        let cert = match &h.certificate {
            Some(c) => format!(
                "until {}",
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(c.valid_before))
            ),
            None => "-".to_string(),
        };
        let grants: Vec<String> = h.host.grants.iter().map(grant_text).collect();
        println!(
            "{:<wn$}  {:<5}  {:<wt$}  {:<wl$}  {:<22}  {}",
            h.host.name.as_str(),
            h.host.level.as_str(),
            h.host.tags.to_string(),
            logins.join(","),
            cert,
            grants.join("; ")
        );
    }
    Ok(())
}
