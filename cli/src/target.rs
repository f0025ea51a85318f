//! The check before each ssh connection: make sure the agent holds a certificate that
//! fits the host ssh is about to reach, as the login it will use. Run by ssh through the
//! block `smith config ssh` writes (`smith cert --ensure --quiet --host=%h --login=%r
//! --port=%p [--host-key-alias=%k]`) and by `smith ssh` before it runs ssh.
//!
//! Decided offline, from the agent's certificates and the host list
//! ([`crate::hostlist`]):
//! 1. Which host: the `HostKeyAlias` (`%k`, when it differs from `%h`) if it is exactly a
//!    host's name or SSH name, else `%h` by the rules of [`smith_api::reach`] (name, SSH
//!    name, unique short name; an IP only where a host was enrolled under it). A name that
//!    is none of the engineer's hosts: nothing to do, nothing printed, ssh goes on
//!    untouched (when the list is older than [`crate::hostlist::FRESH_FOR`], it is
//!    fetched once first).
//! 2. Which certificate: the scope [`ReachableHost::scope_for`] the login (`%r`). A login
//!    none of her grants allows there: nothing to do (one line on stderr says so).
//! 3. A certificate of this CA in the agent with that scope and the login among its
//!    principals, valid for `--min-valid` more: nothing to do, no network (the CA may be
//!    down).
//! 4. Else, under the profile's lock (parallel runs wait, then find it in the agent and
//!    ask nothing): one `POST /v1/certs/host` for the host's enrolled name and the login,
//!    with the reason of `--reason`, else `SMITH_REASON`, else asked on the terminal
//!    when a grant there requires one. In the agent it replaces any certificate of the
//!    same scope.
//!
//! Must never: act on a name that cannot be a host's (ssh hands `%h` over from the
//! command line or an included config: it is only ever compared, never run or passed to
//! a shell), touch the network when step 3 finds a certificate, or try the CA again within
//! [`crate::hostlist::RETRY_AFTER`] after it could not be reached.

use crate::agent::Agent;
use crate::cert::{self, CertArgs, Denied, HostAsk};
use crate::config::Effective;
use crate::hostlist::HostList;
use anyhow::Context;
use smith_api::reach::{normalize, resolve, Matched, Resolution};
use smith_api::{ErrorCode, ReachableHost};
use smith_proto::{Tags, UserName};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

/// The connection ssh is about to make, as its `Match exec` tokens give it.
#[derive(Debug, Clone, Default)]
pub struct SshTarget {
    /// `%h`: the host name (after `HostName`).
    pub host: String,
    /// `%r`: the remote login.
    pub login: Option<String>,
    /// `%p`: the port (kept for routes through bastions).
    pub port: Option<String>,
    /// `%k`: the `HostKeyAlias`, or `%h` when none is set.
    pub host_key_alias: Option<String>,
}

pub struct EnsureHost {
    pub target: SshTarget,
    pub min_valid: Duration,
    pub quiet: bool,
    pub ttl: Option<Duration>,
    pub reason: Option<String>,
}

/// The host among `hosts` that `t` reaches (step 1 of the module doc).
pub fn pick<'a>(hosts: &'a [ReachableHost], t: &SshTarget) -> Resolution<'a, ReachableHost> {
    if let Some(alias) = t.host_key_alias.as_deref().filter(|a| *a != t.host) {
        if let r @ Resolution::Found(_, Matched::Name | Matched::SshName) =
            resolve(alias, hosts.iter())
        {
            return r;
        }
    }
    resolve(&t.host, hosts.iter())
}

/// Fetches and keeps the host list; `None` (said on stderr unless `quiet`) when it cannot
/// be had now.
fn fetch_list(cfg: &Effective, profile: &str, quiet: bool) -> Option<HostList> {
    let marker = crate::hostlist::failed_marker(profile);
    if marker
        .as_deref()
        .is_some_and(|m| crate::state::recent(m, crate::hostlist::RETRY_AFTER))
    {
        return None;
    }
    let fetched = cfg
        .credential()
        .and_then(|cred| HostList::fetch(cfg, &cred, crate::hostlist::FETCH_TIMEOUT));
    match fetched {
        Ok(l) => {
            if let Some(m) = &marker {
                let _ = std::fs::remove_file(m);
            }
            if let Err(e) = l.save(profile) {
                if !quiet {
                    eprintln!("warning: cannot keep the list of your hosts: {e:#}");
                }
            }
            Some(l)
        }
        Err(e) => {
            if crate::hostlist::is_unreachable(&e) {
                if let Some(m) = &marker {
                    crate::state::touch(m);
                }
            }
            if !quiet {
                eprintln!("warning: {e:#}");
            }
            None
        }
    }
}

/// Asks for a reason on the terminal (ssh's `Match exec` has no stdin); `None` without
/// one.
fn ask_reason(host: &str) -> Option<String> {
    use std::io::{BufRead, Write};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let mut w = tty.try_clone().ok()?;
    write!(
        w,
        "smith: your access to {host} requires a reason (recorded; e.g. a ticket): "
    )
    .ok()?;
    let mut line = String::new();
    std::io::BufReader::new(tty).read_line(&mut line).ok()?;
    let r = line.trim().to_string();
    (!r.is_empty()).then_some(r)
}

pub fn ensure(cfg: &Effective, a: EnsureHost) -> anyhow::Result<()> {
    let t = &a.target;
    let is_name = |s: &str| normalize(s).is_some();
    if !is_name(&t.host) && !t.host_key_alias.as_deref().is_some_and(is_name) {
        // Not a host name at all (an IPv6 literal, or something hostile): not ours.
        return Ok(());
    }
    let sock = cfg.ssh_auth_sock.clone().ok_or_else(|| {
        anyhow::anyhow!("no ssh-agent (SSH_AUTH_SOCK is not set): nothing to ensure")
    })?;
    let url = cfg.ca_url()?;
    let profile = cfg.profile().to_string();
    let now = crate::oidc::now();

    // 1. Which host (fetching the list once, under the lock, when it is too old to say).
    let mut list = HostList::load(&profile, &url);
    let mut lock = None;
    let (list, host) = loop {
        let fresh = list.as_ref().is_some_and(|l| l.is_fresh(now));
        match list.as_ref().map(|l| pick(&l.hosts, t)) {
            Some(Resolution::Found(h, _)) => {
                let h = h.clone();
                break (list.take().context("the host list")?, h);
            }
            Some(Resolution::Ambiguous(names)) => {
                let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                anyhow::bail!(
                    "'{}' matches several hosts you may reach ({}): use the full name",
                    t.host.escape_debug(),
                    names.join(", ")
                );
            }
            // Not one of her hosts, by a list recent enough to say so (or the best
            // there is): ssh goes on untouched.
            _ if fresh || lock.is_some() => return Ok(()),
            _ => {}
        }
        lock = Some(crate::state::lock(&profile));
        // Another run may have fetched it while this one waited.
        list = HostList::load(&profile, &url);
        if !list.as_ref().is_some_and(|l| l.is_fresh(now)) {
            if let Some(l) = fetch_list(cfg, &profile, a.quiet) {
                list = Some(l);
            }
        }
    };

    // 2. Which certificate fits it as this login.
    let person = list.user.clone();
    let login = match t.login.as_deref() {
        None => person.clone(),
        Some(l) => match UserName::new(l) {
            Ok(u) => u,
            // Not a name Smith could have granted: not ours.
            Err(_) => return Ok(()),
        },
    };
    let Some(scope) = host.scope_for(&person, &login) else {
        let allowed: Vec<&str> = host.logins.iter().map(|l| l.as_str()).collect();
        eprintln!(
            "smith: {} is a Smith host, but your grants there allow the login{} {}, not '{login}'; \
             ssh goes on without a Smith certificate",
            host.name,
            if allowed.len() == 1 { "" } else { "s" },
            allowed.join(", ")
        );
        return Ok(());
    };

    // 3. Held already?
    let ca_keys = list.ca_keys();
    let held = || -> anyhow::Result<Option<crate::ensure::Held>> {
        let ids = Agent::connect(Path::new(&sock))
            .and_then(|mut ag| ag.identities())
            .context("cannot list the ssh-agent's keys")?;
        Ok(crate::ensure::fitting(
            &ids,
            &ca_keys,
            &scope,
            Some(login.as_str()),
            crate::oidc::now(),
            a.min_valid,
        ))
    };
    let said = |h: crate::ensure::Held| {
        if !a.quiet {
            println!(
                "The agent holds {} for {} ({}), valid until {}: nothing to do.",
                h.key_id,
                host.name,
                shown_scope(&scope),
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(h.valid_before)),
            );
        }
    };
    if let Some(h) = held()? {
        said(h);
        return Ok(());
    }
    if lock.is_none() {
        lock = Some(crate::state::lock(&profile));
        if let Some(h) = held()? {
            said(h);
            return Ok(());
        }
    }

    // 4. Ask the CA.
    let marker = crate::hostlist::failed_marker(&profile);
    if let Some(age) = marker
        .as_deref()
        .and_then(crate::state::age)
        .filter(|age| *age < crate::hostlist::RETRY_AFTER)
    {
        anyhow::bail!(
            "the CA could not be reached {}s ago; no new certificate for {} before {}s have \
             passed (`smith cert --host {}` tries now)",
            age.as_secs(),
            host.name,
            crate::hostlist::RETRY_AFTER.as_secs(),
            host.name
        );
    }
    let cred = cfg.credential()?;
    let reason = a
        .reason
        .or_else(|| {
            std::env::var("SMITH_REASON")
                .ok()
                .filter(|r| !r.trim().is_empty())
        })
        .or_else(|| {
            host.requires_reason(&person, &login)
                .then(|| ask_reason(host.name.as_str()))
                .flatten()
        });
    let ttl = a
        .ttl
        .or_else(|| {
            crate::ensure::load_last(&profile)
                .filter(|l| l.ca_url.trim_end_matches('/') == url.trim_end_matches('/'))
                .map(|l| Duration::from_secs(l.ttl_secs))
        })
        .unwrap_or(Duration::from_secs(3600));
    let had_reason = reason.is_some();
    let issued = cert::issue(
        cfg,
        CertArgs {
            scope: Tags::default(),
            host: Some(HostAsk {
                host: host.name.to_string(),
                login: Some(login.clone()),
            }),
            ttl,
            reason,
            out: None,
            json: false,
            quiet: a.quiet,
        },
        &cred,
    );
    drop(lock);
    match issued {
        Ok(_) => {
            if let Some(m) = &marker {
                let _ = std::fs::remove_file(m);
            }
            Ok(())
        }
        Err(e) => match e.downcast_ref::<Denied>().map(|d| d.code) {
            // The list was wrong about this host: forget it there.
            Some(ErrorCode::NoSuchHost | ErrorCode::NoMatchingGrant) => {
                if let Some(mut l) = HostList::load(&profile, &url) {
                    l.hosts.retain(|h| h.name != host.name);
                    let _ = l.save(&profile);
                }
                Err(e)
            }
            Some(ErrorCode::ConditionFailed) if !had_reason => Err(e.context(format!(
                "no certificate for {} (give a reason with SMITH_REASON=TEXT, or run `smith \
                 cert --host {} --reason TEXT`)",
                host.name, host.name
            ))),
            Some(_) => Err(e),
            None => {
                if crate::hostlist::is_unreachable(&e) {
                    if let Some(m) = &marker {
                        crate::state::touch(m);
                    }
                }
                Err(e)
            }
        },
    }
}

fn shown_scope(scope: &Tags) -> String {
    if scope.is_empty() {
        "every host of your grants".to_string()
    } else {
        scope.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smith_proto::{HostName, Level};

    fn host(name: &str) -> ReachableHost {
        ReachableHost {
            name: HostName::new(name).unwrap(),
            ssh_names: vec![],
            tags: Tags::new(),
            level: Level::Ssh,
            logins: vec![],
            scope: Tags::new(),
            grants: vec![],
        }
    }

    #[test]
    fn a_host_key_alias_wins_by_exact_name_only() {
        let hosts = vec![host("db-1"), host("web-1.example.com"), host("10.0.0.5")];
        let t = |h: &str, k: Option<&str>| SshTarget {
            host: h.into(),
            host_key_alias: k.map(str::to_string),
            ..Default::default()
        };
        let name = |r: Resolution<'_, ReachableHost>| match r {
            Resolution::Found(h, _) => Some(h.name.to_string()),
            _ => None,
        };
        // HostName=10.0.0.9 with HostKeyAlias=db-1: the alias says which host.
        assert_eq!(
            name(pick(&hosts, &t("10.0.0.9", Some("db-1")))).as_deref(),
            Some("db-1")
        );
        // A short alias is not a HostKeyAlias match: %h decides.
        assert_eq!(
            name(pick(&hosts, &t("10.0.0.5", Some("web-1")))).as_deref(),
            Some("10.0.0.5")
        );
        // No alias set (%k = %h): the host name's rules, short names included.
        assert_eq!(
            name(pick(&hosts, &t("web-1", Some("web-1")))).as_deref(),
            Some("web-1.example.com")
        );
        assert_eq!(name(pick(&hosts, &t("github.com", None))), None);
    }
}
