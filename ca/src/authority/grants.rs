//! Grants: a group × a host-tag selector × a level, with conditions (max TTL, source
//! networks, reason required, time windows), validated and parsed once when added.
//!
//! A grant also says what certificates issued under it carry ([`CertRules`]): shared
//! local accounts (never a Smith user's name, so a grant never lets one person log in as
//! another), permits, a forced command.
//!
//! Must never: store a grant whose conditions cannot be evaluated exactly (an unparsable
//! window, a malformed network), or one longer than the CA's maximum.

use super::{Authority, Error};
use crate::model::{CertRules, Change, Grant, Model};
use crate::origin::Origin;
use crate::timewin::{Window, MAX_WINDOWS};
use ipnet::IpNet;
use smith_proto::{GroupName, Level, Tags};

/// Most source networks one grant may list.
pub const MAX_CIDRS: usize = 32;
/// Most shared logins one grant may allow.
pub const MAX_LOGINS: usize = 16;
/// Longest forced command.
pub const MAX_FORCE_COMMAND: usize = 1024;

/// Checks what a grant's certificates would carry, against the directory `m`.
fn check_cert_rules(m: &Model, rules: &CertRules, level: Level) -> Result<(), Error> {
    if rules.logins.len() > MAX_LOGINS {
        return Err(Error::InvalidGrantOption(format!(
            "at most {MAX_LOGINS} shared logins per grant"
        )));
    }
    for l in &rules.logins {
        if m.user(l).is_some() {
            return Err(Error::InvalidGrantOption(format!(
                "'{l}' is a Smith user: a grant's --login names a shared local account \
                 (deploy, ubuntu...), never a person's account"
            )));
        }
    }
    if !rules.sudo.is_unrestricted() && level != Level::Sudo {
        return Err(Error::InvalidGrantOption(
            "--sudo-command and --sudo-as limit a sudo grant: use them with --level sudo".into(),
        ));
    }
    if rules.sudo.commands.len() > smith_proto::sudorules::MAX_COMMANDS
        || rules.sudo.run_as.len() > smith_proto::sudorules::MAX_RUN_AS
    {
        return Err(Error::InvalidGrantOption(format!(
            "at most {} sudo commands and {} run-as users per grant",
            smith_proto::sudorules::MAX_COMMANDS,
            smith_proto::sudorules::MAX_RUN_AS
        )));
    }
    if let Some(c) = &rules.force_command {
        if c.trim().is_empty() || c.len() > MAX_FORCE_COMMAND || c.chars().any(char::is_control) {
            return Err(Error::InvalidGrantOption(format!(
                "a forced command must be 1 to {MAX_FORCE_COMMAND} bytes without control \
                 characters"
            )));
        }
    }
    Ok(())
}

/// A grant to add, as asked (validated by [`Authority::add_grant`]).
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub group: GroupName,
    pub selector: Tags,
    pub level: Level,
    pub max_ttl_secs: u64,
    /// CIDR texts, e.g. `10.0.0.0/8`.
    pub source_cidrs: Vec<String>,
    pub require_reason: bool,
    /// Window texts, e.g. `mon-fri 09:00-18:00 Europe/Paris`.
    pub time_windows: Vec<String>,
    /// What certificates issued under it carry.
    pub cert: CertRules,
}

impl Authority {
    /// Adds a grant; answers it as stored.
    pub fn add_grant(&self, origin: &Origin, new: NewGrant) -> Result<Grant, Error> {
        let max = self.cfg.max_cert_ttl.as_secs();
        if new.max_ttl_secs < crate::issue::MIN_TTL_SECS || new.max_ttl_secs > max {
            return Err(Error::InvalidTtl {
                what: "a grant's max TTL",
                min: crate::issue::MIN_TTL_SECS,
                max,
            });
        }
        if new.source_cidrs.len() > MAX_CIDRS {
            return Err(Error::TooManyCidrs(MAX_CIDRS));
        }
        let source_cidrs = new
            .source_cidrs
            .iter()
            .map(|c| {
                c.trim()
                    .parse::<IpNet>()
                    .map(|n| n.trunc())
                    .map_err(|_| Error::InvalidCidr(c.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if new.time_windows.len() > MAX_WINDOWS {
            return Err(Error::TooManyTimeWindows(MAX_WINDOWS));
        }
        let time_windows = new
            .time_windows
            .iter()
            .map(|w| Window::parse(w).map_err(Error::InvalidTimeWindow))
            .collect::<Result<Vec<_>, _>>()?;
        let what = format!("grant add {} {} {}", new.group, new.selector, new.level);
        let (_, id) = self.mutate(origin, what, |m, _, at| {
            if m.group(&new.group).is_none() {
                return Err(Error::UnknownGroup(new.group.clone()));
            }
            check_cert_rules(m, &new.cert, new.level)?;
            let id = m.next_grant_id();
            // A grant with sudo rules gets its own NSS group on hosts: its gid comes
            // from the range like any group's, and stays allocated to it.
            let mut cert = new.cert.clone();
            cert.sudo.gid = None;
            if !cert.sudo.is_unrestricted() {
                let name = smith_proto::sudorules::rule_group(id);
                let gid = m
                    .allocate_id(crate::model::IdKind::Group, &name, None)
                    .map_err(Error::from)?;
                cert.sudo.gid = Some(gid.get());
            }
            Ok((
                vec![Change::AddGrant(Grant {
                    id,
                    group: new.group.clone(),
                    selector: new.selector.clone(),
                    level: new.level,
                    max_ttl_secs: new.max_ttl_secs,
                    source_cidrs: source_cidrs.clone(),
                    require_reason: new.require_reason,
                    time_windows: time_windows.clone(),
                    created_at: at,
                    cert,
                })],
                id,
            ))
        })?;
        self.model()
            .grants()
            .get(&id)
            .cloned()
            .ok_or(Error::NoSuchGrant(id))
    }

    /// Removes a grant; answers it as it was.
    pub fn remove_grant(&self, origin: &Origin, id: u64) -> Result<Grant, Error> {
        let (_, grant) = self.mutate(origin, format!("grant remove {id}"), |m, _, at| {
            let g = m.grants().get(&id).cloned().ok_or(Error::NoSuchGrant(id))?;
            Ok((vec![Change::RemoveGrant { id, at }], g))
        })?;
        Ok(grant)
    }
}
