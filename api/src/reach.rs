//! Host-aware certificates: which enrolled host a name typed at `ssh` means, which of a
//! person's grants fit that host as which login, and the scope of the certificate for it.
//!
//! Shared by the CA (it resolves the name of `POST /v1/certs/host` against its enrolled
//! hosts and issues under exactly the grants [`ReachableHost::grants_for`] picks) and by
//! `smith` (it resolves the name ssh hands its `Match exec` block against its cached list
//! of the hosts the person may reach, and decides offline whether the agent already holds
//! a certificate that fits), so that both sides always agree.
//!
//! **How a name maps to an enrolled host** ([`resolve`]), the first rule that applies:
//! 1. The name is normalized ([`normalize`]): ASCII lowercase, one trailing dot removed.
//!    What is then not a valid host name (spaces, quotes, `_`, an IPv6 literal, more than
//!    253 bytes) matches nothing.
//! 2. Exact: a host's enrolled name, or one of its SSH names (the principals of its SSH
//!    host certificates, which ssh verifies the server against).
//! 3. Short name: a name without a dot, that is not an IPv4 address, is the first label
//!    of an enrolled name or SSH name: `db-1` is `db-1.dev.example.com` when exactly one
//!    host has such a name; several hosts → [`Resolution::Ambiguous`] (type the full
//!    name).
//! 4. Nothing else matches: an IP address only where a host was enrolled (or given an SSH
//!    name) under that very address; no DNS lookups, no reverse lookups.
//!
//! An ssh alias (`Host mydb` with `HostName db-1.example.com`) reaches Smith as its
//! `HostName` (ssh's `%h`); a `HostKeyAlias` (ssh's `%k`) is the name ssh checks the
//! host certificate against, so `smith` tries it first, with rule 2 only. A name that
//! matches nothing is not Smith's: `smith` stays out of the way and ssh goes on untouched.
//!
//! **Which grants fit** a host as a login ([`ReachableHost::grants_for`]): the person's
//! grants whose selector is contained in the host's tags (they cover it) and that allow
//! the login (every grant allows the person's own login; a shared login such as `deploy`
//! only the grants that name it). The certificate's scope is the union of their
//! selectors ([`union_of`]): contained in the host's tags (the host accepts it), and the
//! same for every host covered by the same grants, so one certificate serves all of them
//! (db-1 and db-2 on `env=dev` share one `env=dev` certificate). Whether a certificate in
//! the agent fits a host is decided by that scope alone (plus the login among its
//! principals): a certificate for `env=dev` never fits a host whose grants make the scope
//! `env=prod`.
//!
//! Room for routes: a bastion route for a host will be one more field of
//! [`ReachableHost`] (older clients ignore it), decided by the CA with the grants.

use crate::types::{HostGrant, ReachableHost};
use smith_proto::{HostName, Tags, UserName};

/// Names this module maps onto enrolled hosts: a name and its SSH names.
pub trait NamedHost {
    fn host_name(&self) -> &HostName;
    fn ssh_names(&self) -> &[HostName];
}

impl NamedHost for ReachableHost {
    fn host_name(&self) -> &HostName {
        &self.name
    }
    fn ssh_names(&self) -> &[HostName] {
        &self.ssh_names
    }
}

/// How a name matched its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matched {
    /// The host's enrolled name.
    Name,
    /// One of its SSH names (host certificate principals).
    SshName,
    /// The first label of one of its names, unique among the hosts.
    ShortName,
}

impl Matched {
    pub fn as_str(self) -> &'static str {
        match self {
            Matched::Name => "name",
            Matched::SshName => "SSH name",
            Matched::ShortName => "short name",
        }
    }
}

/// What a name means among a set of hosts.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution<'a, H> {
    Found(&'a H, Matched),
    /// Not a host of the set: not Smith's business.
    Unknown,
    /// Several hosts (their names, sorted): the name must be more precise.
    Ambiguous(Vec<HostName>),
}

/// The normalized form of a typed name (lowercase, one trailing dot removed), if it can
/// be a host's name at all.
pub fn normalize(typed: &str) -> Option<HostName> {
    if typed.len() > 254 {
        return None;
    }
    let t = typed.strip_suffix('.').unwrap_or(typed);
    HostName::new(&t.to_ascii_lowercase()).ok()
}

fn is_ipv4(name: &str) -> bool {
    name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn first_label(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// The host `typed` means among `hosts` (see the module doc for the rules).
pub fn resolve<'a, H, I>(typed: &str, hosts: I) -> Resolution<'a, H>
where
    H: NamedHost + 'a,
    I: Iterator<Item = &'a H> + Clone,
{
    let Some(name) = normalize(typed) else {
        return Resolution::Unknown;
    };
    let exact: Vec<(&H, Matched)> = hosts
        .clone()
        .filter_map(|h| {
            if h.host_name() == &name {
                Some((h, Matched::Name))
            } else if h.ssh_names().contains(&name) {
                Some((h, Matched::SshName))
            } else {
                None
            }
        })
        .collect();
    match exact.as_slice() {
        [(h, m)] => return Resolution::Found(h, *m),
        [] => {}
        many => return ambiguous(many.iter().map(|(h, _)| *h)),
    }
    if name.as_str().contains('.') || is_ipv4(name.as_str()) {
        return Resolution::Unknown;
    }
    let short: Vec<&H> = hosts
        .filter(|h| {
            std::iter::once(h.host_name())
                .chain(h.ssh_names())
                .any(|n| !is_ipv4(n.as_str()) && first_label(n.as_str()) == name.as_str())
        })
        .collect();
    match short.as_slice() {
        [h] => Resolution::Found(h, Matched::ShortName),
        [] => Resolution::Unknown,
        many => ambiguous(many.iter().copied()),
    }
}

fn ambiguous<'a, H: NamedHost + 'a>(hosts: impl Iterator<Item = &'a H>) -> Resolution<'a, H> {
    let mut names: Vec<HostName> = hosts.map(|h| h.host_name().clone()).collect();
    names.sort();
    names.dedup();
    Resolution::Ambiguous(names)
}

/// Whether a grant allowing the shared `logins` lets `person` log in as `login`.
pub fn allows_login(person: &UserName, login: &UserName, logins: &[UserName]) -> bool {
    login == person || logins.contains(login)
}

/// The union of `selectors` (each a subset of one host's tags, so they never disagree on
/// a key; a later value would win).
pub fn union_of<'a>(selectors: impl IntoIterator<Item = &'a Tags>) -> Tags {
    let mut out = Tags::new();
    for s in selectors {
        for (k, v) in s.iter() {
            // Cannot fail: the pairs come from valid tags, and a host has at most
            // MAX_TAGS of them.
            let _ = out.insert(k, v);
        }
    }
    out
}

impl ReachableHost {
    /// The grants that fit this host as `login` for `person` (see the module doc).
    pub fn grants_for<'a>(
        &'a self,
        person: &'a UserName,
        login: &'a UserName,
    ) -> impl Iterator<Item = &'a HostGrant> + 'a {
        self.grants
            .iter()
            .filter(move |g| allows_login(person, login, &g.logins))
    }

    /// The scope of the certificate that fits this host as `login`; `None` when no grant
    /// lets `person` log in as `login` here.
    pub fn scope_for(&self, person: &UserName, login: &UserName) -> Option<Tags> {
        let mut fitting = self.grants_for(person, login).peekable();
        fitting.peek()?;
        Some(union_of(fitting.map(|g| &g.selector)))
    }

    /// Whether a grant that fits this host as `login` asks for a reason.
    pub fn requires_reason(&self, person: &UserName, login: &UserName) -> bool {
        self.grants_for(person, login).any(|g| g.require_reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smith_proto::{GroupName, Level};

    fn host(name: &str, ssh: &[&str]) -> ReachableHost {
        ReachableHost {
            name: HostName::new(name).unwrap(),
            ssh_names: ssh.iter().map(|n| HostName::new(n).unwrap()).collect(),
            tags: Tags::parse("env=dev,role=db").unwrap(),
            level: Level::Ssh,
            logins: vec![],
            scope: Tags::new(),
            grants: vec![],
        }
    }

    fn found<'a>(r: Resolution<'a, ReachableHost>) -> (&'a str, Matched) {
        match r {
            Resolution::Found(h, m) => (h.name.as_str(), m),
            other => panic!("not found: {other:?}"),
        }
    }

    #[test]
    fn names_resolve_exactly_then_by_unique_short_name_and_ips_only_when_enrolled() {
        let hosts = [
            host("db-1.dev.example.com", &["db-1.lan"]),
            host("web-1.prod.example.com", &["10.0.0.5"]),
            host("web-1.stage.example.com", &[]),
            host("db-1", &[]),
        ];
        let r = |t: &str| resolve(t, hosts.iter());
        assert_eq!(
            found(r("db-1.dev.example.com")),
            ("db-1.dev.example.com", Matched::Name)
        );
        assert_eq!(
            found(r("DB-1.Dev.Example.com.")),
            ("db-1.dev.example.com", Matched::Name)
        );
        assert_eq!(
            found(r("db-1.lan")),
            ("db-1.dev.example.com", Matched::SshName)
        );
        // An exact name wins over short names.
        assert_eq!(found(r("db-1")), ("db-1", Matched::Name));
        // Short names: unique, or ambiguous.
        assert_eq!(
            r("web-1"),
            Resolution::Ambiguous(vec![
                HostName::new("web-1.prod.example.com").unwrap(),
                HostName::new("web-1.stage.example.com").unwrap()
            ])
        );
        let two = [
            host("db-1.dev.example.com", &[]),
            host("web-1.prod.example.com", &[]),
        ];
        assert_eq!(
            found(resolve("web-1", two.iter())),
            ("web-1.prod.example.com", Matched::ShortName)
        );
        // A prefix of several labels is not a short name.
        assert_eq!(resolve("web-1.prod", two.iter()), Resolution::Unknown);
        // IPs: only an enrolled one, and never as a short name.
        assert_eq!(
            found(r("10.0.0.5")),
            ("web-1.prod.example.com", Matched::SshName)
        );
        assert_eq!(r("10.0.0.6"), Resolution::Unknown);
        assert_eq!(r("10"), Resolution::Unknown);
        assert_eq!(r("::1"), Resolution::Unknown);
        // Anything that cannot be a host name matches nothing.
        for bad in [
            "",
            "a b",
            "x';touch /tmp/p;'",
            "$(id)",
            "a\nb",
            "db_1",
            &"a".repeat(300),
        ] {
            assert_eq!(r(bad), Resolution::Unknown, "{bad:?}");
        }
        assert_eq!(r("nosuch"), Resolution::Unknown);
    }

    #[test]
    fn the_scope_is_the_union_of_the_grants_that_fit_the_login() {
        let alice = UserName::new("alice").unwrap();
        let deploy = UserName::new("deploy").unwrap();
        let bob = UserName::new("bob").unwrap();
        let g = |id, sel: &str, level, logins: &[&UserName], reason| HostGrant {
            id,
            group: GroupName::new("dev").unwrap(),
            selector: Tags::parse(sel).unwrap(),
            level,
            logins: logins.iter().map(|l| (*l).clone()).collect(),
            require_reason: reason,
            source_cidrs: vec![],
            time_windows: vec![],
            max_ttl_secs: 3600,
        };
        let mut h = host("db-1", &[]);
        h.grants = vec![
            g(1, "env=dev", Level::Ssh, &[&deploy], false),
            g(2, "role=db", Level::Sudo, &[], true),
            g(3, "", Level::Ssh, &[], false),
        ];
        assert_eq!(
            h.scope_for(&alice, &alice),
            Some(Tags::parse("env=dev,role=db").unwrap())
        );
        assert!(h.requires_reason(&alice, &alice));
        assert_eq!(
            h.scope_for(&alice, &deploy),
            Some(Tags::parse("env=dev").unwrap())
        );
        assert!(!h.requires_reason(&alice, &deploy));
        assert_eq!(h.scope_for(&alice, &bob), None);
        // Only the every-host grant: the empty scope.
        h.grants.truncate(0);
        h.grants.push(g(3, "", Level::Ssh, &[], false));
        assert_eq!(h.scope_for(&alice, &alice), Some(Tags::new()));
    }
}
