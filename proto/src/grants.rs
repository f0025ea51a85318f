//! Grant-bound certificates: how a certificate names the grants that authorized it, and
//! how a host decides from that.
//!
//! The CA signs, for every grant a certificate was issued under, one principal per
//! person and grant, `smith-grant:<id>:<level>:<person>` ([`grant_principal`]). hostd
//! keeps one file per login name in [`crate::paths::PRINCIPALS_DIR`] (sshd's
//! `AuthorizedPrincipalsFile .../%u`) listing exactly the principals that may log in as
//! that name on this host *now*: for a Smith user, one line per grant in the host's
//! snapshot that covers the host and whose group the user is in; for a shared local
//! account a grant allows (`--login deploy`), one line per member of that grant's group.
//! So sshd admits a certificate only where one of *its* grants covers the host, with no
//! command run per login, and a removed grant or membership ends it at the next sync.
//! pam_smith reads the same file to decide sudo: the session's certificate must carry a
//! `sudo` grant principal the file still lists ([`sudo_allowed`]).
//!
//! Hosts that only trust the CA (no hostd) match the other form,
//! `smith-tags:<selector>:<login>` ([`tags_principal`]), against a principals file listing
//! every subset of the host's declared tags ([`trust_only_principals`]).
//!
//! Per-grant certificate contents ([`Permits`]): a certificate carries a permit only if
//! every grant it was issued under allows it.
//!
//! Must never: produce a principal that two different (grant, person) or (selector,
//! login) pairs share, or accept a malformed one as a grant principal.

use crate::names::UserName;
use crate::tags::{Level, Tags};

/// The prefix of the per-(grant, person) principal.
pub const GRANT_PREFIX: &str = "smith-grant:";
/// The prefix of the per-(selector, login) principal for trust-only hosts.
pub const TAGS_PREFIX: &str = "smith-tags:";
/// The signed extension listing the authorizing grants, for people and records:
/// `<id>:<level>:<selector or *>` separated by spaces.
pub const GRANTS_EXTENSION: &str = "grants@smith";
/// OpenSSH refuses certificates with more principals than this.
pub const MAX_CERT_PRINCIPALS: usize = 256;
/// Most tags a trust-only host may declare (its principals file lists every subset).
pub const MAX_TRUST_ONLY_TAGS: usize = 10;

/// `smith-grant:<id>:<level>:<person>`.
pub fn grant_principal(id: u64, level: Level, person: &str) -> String {
    format!("{GRANT_PREFIX}{id}:{}:{person}", level.as_str())
}

/// A parsed grant principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantPrincipal<'a> {
    pub id: u64,
    pub level: Level,
    pub person: &'a str,
}

/// Parses [`grant_principal`]'s form; anything else (or a malformed one) is `None`.
pub fn parse_grant_principal(p: &str) -> Option<GrantPrincipal<'_>> {
    let rest = p.strip_prefix(GRANT_PREFIX)?;
    let mut it = rest.splitn(3, ':');
    let id = it.next()?;
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id = id.parse().ok()?;
    let level: Level = it.next()?.parse().ok()?;
    let person = it.next()?;
    UserName::new(person).ok()?;
    Some(GrantPrincipal { id, level, person })
}

/// `smith-tags:<selector>:<login>`; the empty selector (every host) is `*`.
pub fn tags_principal(selector: &Tags, login: &str) -> String {
    if selector.is_empty() {
        format!("{TAGS_PREFIX}*:{login}")
    } else {
        format!("{TAGS_PREFIX}{selector}:{login}")
    }
}

/// The principals a trust-only host with `tags` lists for `login`: one per subset of its
/// tags (a grant covers the host when its selector is one of them), `*` included.
pub fn trust_only_principals(tags: &Tags, login: &str) -> Result<Vec<String>, String> {
    let pairs: Vec<(&str, &str)> = tags.iter().collect();
    if pairs.len() > MAX_TRUST_ONLY_TAGS {
        return Err(format!(
            "a trust-only host may declare at most {MAX_TRUST_ONLY_TAGS} tags ({} given): its \
             principals file lists every subset of them",
            pairs.len()
        ));
    }
    let mut out = Vec::with_capacity(1 << pairs.len());
    for mask in 0u32..(1u32 << pairs.len()) {
        let mut sel = Tags::new();
        for (i, (k, v)) in pairs.iter().enumerate() {
            if mask & (1 << i) != 0 {
                sel.insert(k, v).map_err(|e| e.to_string())?;
            }
        }
        out.push(tags_principal(&sel, login));
    }
    Ok(out)
}

/// What a certificate permits, per grant (`permit-*` extensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct Permits {
    pub pty: bool,
    pub user_rc: bool,
    pub port_forwarding: bool,
    pub agent_forwarding: bool,
    pub x11_forwarding: bool,
}

impl Default for Permits {
    /// A terminal and port forwarding; no agent or X11 forwarding, no `~/.ssh/rc`.
    fn default() -> Self {
        Permits {
            pty: true,
            user_rc: false,
            port_forwarding: true,
            agent_forwarding: false,
            x11_forwarding: false,
        }
    }
}

/// The names `--permit`/`--deny` take, with the extension each stands for.
pub const PERMIT_NAMES: &[(&str, &str)] = &[
    ("pty", "permit-pty"),
    ("user-rc", "permit-user-rc"),
    ("port-forwarding", "permit-port-forwarding"),
    ("agent-forwarding", "permit-agent-forwarding"),
    ("x11-forwarding", "permit-X11-forwarding"),
];

impl Permits {
    /// Everything permitted: the identity of [`Permits::intersect`].
    pub const ALL: Permits = Permits {
        pty: true,
        user_rc: true,
        port_forwarding: true,
        agent_forwarding: true,
        x11_forwarding: true,
    };

    fn field(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "pty" => &mut self.pty,
            "user-rc" => &mut self.user_rc,
            "port-forwarding" => &mut self.port_forwarding,
            "agent-forwarding" => &mut self.agent_forwarding,
            "x11-forwarding" => &mut self.x11_forwarding,
            _ => return None,
        })
    }

    /// Sets the permit `name` (one of [`PERMIT_NAMES`]).
    pub fn set(&mut self, name: &str, on: bool) -> Result<(), String> {
        let known: Vec<&str> = PERMIT_NAMES.iter().map(|(n, _)| *n).collect();
        let f = self.field(name).ok_or_else(|| {
            format!(
                "unknown permit '{}'; known: {}",
                name.escape_debug(),
                known.join(", ")
            )
        })?;
        *f = on;
        Ok(())
    }

    fn flags(&self) -> [bool; 5] {
        [
            self.pty,
            self.user_rc,
            self.port_forwarding,
            self.agent_forwarding,
            self.x11_forwarding,
        ]
    }

    /// What both allow.
    pub fn intersect(&self, other: &Permits) -> Permits {
        Permits {
            pty: self.pty && other.pty,
            user_rc: self.user_rc && other.user_rc,
            port_forwarding: self.port_forwarding && other.port_forwarding,
            agent_forwarding: self.agent_forwarding && other.agent_forwarding,
            x11_forwarding: self.x11_forwarding && other.x11_forwarding,
        }
    }

    /// The `permit-*` extensions to sign.
    pub fn extensions(&self) -> Vec<&'static str> {
        self.flags()
            .iter()
            .zip(PERMIT_NAMES)
            .filter(|(on, _)| **on)
            .map(|(_, (_, ext))| *ext)
            .collect()
    }

    /// The permits' short names, e.g. `pty,user-rc,port-forwarding`; `none` if none.
    pub fn describe(&self) -> String {
        let on: Vec<&str> = self
            .flags()
            .iter()
            .zip(PERMIT_NAMES)
            .filter(|(on, _)| **on)
            .map(|(_, (n, _))| *n)
            .collect();
        if on.is_empty() {
            "none".into()
        } else {
            on.join(",")
        }
    }
}

/// The grant principals `principals` carries for `person` (others ignored).
pub fn grants_of<'a>(
    principals: impl IntoIterator<Item = &'a String>,
    person: &'a str,
) -> impl Iterator<Item = GrantPrincipal<'a>> {
    principals
        .into_iter()
        .filter_map(|p| parse_grant_principal(p))
        .filter(move |g| g.person == person)
}

/// Whether a certificate for `person` carrying `cert_principals` may sudo on a host whose
/// principals file for `person` holds `listed` (its lines): one of the certificate's
/// `sudo` grant principals must still be listed.
pub fn sudo_allowed(cert_principals: &[String], person: &str, listed: &[String]) -> Option<u64> {
    listed_sudo_grants(cert_principals, person, listed).next()
}

/// The ids of the certificate's `sudo` grants for `person` that `listed` still holds,
/// in the certificate's order.
pub fn listed_sudo_grants<'a>(
    cert_principals: &'a [String],
    person: &'a str,
    listed: &'a [String],
) -> impl Iterator<Item = u64> + 'a {
    grants_of(cert_principals, person)
        .filter(|g| g.level == Level::Sudo)
        .filter(move |g| {
            listed
                .iter()
                .any(|l| *l == grant_principal(g.id, g.level, person))
        })
        .map(|g| g.id)
}

/// The principal lines of a principals file (comments and blank lines skipped; no
/// options are ever written by hostd, so a line is one principal).
pub fn parse_principals_file(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_principals_round_trip_and_refuse_lookalikes() {
        let p = grant_principal(17, Level::Sudo, "alice");
        assert_eq!(p, "smith-grant:17:sudo:alice");
        assert_eq!(
            parse_grant_principal(&p),
            Some(GrantPrincipal {
                id: 17,
                level: Level::Sudo,
                person: "alice"
            })
        );
        for bad in [
            "alice",
            "smith-grant:",
            "smith-grant:x:ssh:alice",
            "smith-grant:1:root:alice",
            "smith-grant:1:ssh:",
            "smith-grant:1:ssh:Alice Smith",
            "smith-grant:1:ssh:a:b",
            "smith-grant:-1:ssh:alice",
            "smith-grant:99999999999999999999999:ssh:alice",
        ] {
            assert_eq!(parse_grant_principal(bad), None, "{bad}");
        }
    }

    #[test]
    fn trust_only_lists_every_subset() {
        let tags = Tags::parse("env=prod,role=web").unwrap();
        let mut got = trust_only_principals(&tags, "deploy").unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![
                "smith-tags:*:deploy",
                "smith-tags:env=prod,role=web:deploy",
                "smith-tags:env=prod:deploy",
                "smith-tags:role=web:deploy",
            ]
        );
        // What a certificate under a grant on env=prod carries is among them; env=dev not.
        let prod = tags_principal(&Tags::parse("env=prod").unwrap(), "deploy");
        let dev = tags_principal(&Tags::parse("env=dev").unwrap(), "deploy");
        assert!(got.contains(&prod) && !got.contains(&dev));
        let many = Tags::parse("a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1,j=1,k=1").unwrap();
        assert!(trust_only_principals(&many, "x").is_err());
    }

    #[test]
    fn permits_default_intersect_and_extensions() {
        let d = Permits::default();
        assert_eq!(d.extensions(), vec!["permit-pty", "permit-port-forwarding"]);
        let mut fwd = d;
        fwd.set("agent-forwarding", true).unwrap();
        assert!(fwd.extensions().contains(&"permit-agent-forwarding"));
        assert!(!d.intersect(&fwd).agent_forwarding);
        assert!(fwd.set("root", true).is_err());
        let mut none = d;
        for (n, _) in PERMIT_NAMES {
            none.set(n, false).unwrap();
        }
        assert_eq!(none.describe(), "none");
        assert!(none.extensions().is_empty());
    }

    #[test]
    fn sudo_needs_a_sudo_grant_the_host_still_lists() {
        let cert: Vec<String> = vec![
            "alice".into(),
            grant_principal(1, Level::Ssh, "alice"),
            grant_principal(2, Level::Sudo, "alice"),
            grant_principal(3, Level::Sudo, "bob"),
        ];
        let listed = vec![
            grant_principal(1, Level::Ssh, "alice"),
            grant_principal(2, Level::Sudo, "alice"),
        ];
        assert_eq!(sudo_allowed(&cert, "alice", &listed), Some(2));
        assert_eq!(sudo_allowed(&cert, "alice", &listed[..1]), None);
        // Bob's sudo principal in alice's certificate means nothing for alice.
        let bob = vec![grant_principal(3, Level::Sudo, "alice")];
        assert_eq!(sudo_allowed(&cert, "alice", &bob), None);
        let ssh_only: Vec<String> = cert[..2].to_vec();
        assert_eq!(sudo_allowed(&ssh_only, "alice", &listed), None);
    }
}
