//! `smith-ca admin ...`: the admin's command line, a thin client of the HTTPS admin API
//! through `smith_api::Client` (TLS root pinned by fingerprint).
//!
//! The admin token comes from, in order: `--token` (warned against: a command line is
//! visible to every local user in /proc), `--token-file FILE` (`-`: stdin),
//! `SMITH_TOKEN`, the session `smith-ca admin login` kept in the kernel keyring.
//!
//! Must never: talk to the database directly, print a token except the one the admin
//! just asked for, or run inside an async runtime (the client is blocking).

use anyhow::Context;
use clap::{Args, Subcommand};
use smith_api::{
    Client, ClientOptions, Decision, GrantAdd, GrantInfo, GroupAdd, GroupInfo, HostInfo,
    HostTokenRequest, HostTokenRequestNamed, IssuedCert, MemberChange, RevokeRequest,
    RevokeResponse, TokenRequest, TokenResponse, Trust, UserAdd, UserInfo,
};
use smith_proto::{GroupName, HostName, Level, PosixId, Tags, UserName};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The CA's URL, e.g. https://ca.example.com:8443.
    #[arg(long, env = "SMITH_CA_URL", global = true)]
    pub ca_url: Option<String>,
    /// SHA256:... fingerprint of the CA's TLS root (printed by `smith-ca init`).
    #[arg(long, env = "SMITH_CA_FINGERPRINT", global = true)]
    pub ca_fingerprint: Option<String>,
    /// An admin token on the command line (visible to every local user in /proc: prefer
    /// SMITH_TOKEN, --token-file or `smith-ca admin login`).
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Read the admin token from FILE (`-`: standard input).
    #[arg(long, env = "SMITH_TOKEN_FILE", global = true, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

/// Reads a token from `path` (`-`: stdin): its first line, trimmed.
pub fn read_token_file(path: &std::path::Path) -> anyhow::Result<String> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().take(4096), &mut s)
            .context("cannot read the token from standard input")?;
        s
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?
    };
    let t = text.lines().next().unwrap_or("").trim().to_string();
    if t.is_empty() {
        anyhow::bail!("{} holds no token", path.display());
    }
    Ok(t)
}

use std::io::Read as _;

impl Conn {
    pub fn url(&self) -> anyhow::Result<String> {
        self.ca_url.clone().ok_or_else(|| {
            anyhow::anyhow!("no CA URL: pass --ca-url https://HOST:PORT or set SMITH_CA_URL")
        })
    }

    /// The admin token to send (see the module doc for where it comes from).
    pub fn admin_token(&self) -> anyhow::Result<Option<String>> {
        if let Some(t) = &self.token {
            eprintln!(
                "warning: --token puts the secret on the command line, where every local user \
                 can read it (/proc/PID/cmdline) and shell history keeps it; use SMITH_TOKEN, \
                 --token-file FILE (or - for stdin), or `smith-ca admin login`"
            );
            return Ok(Some(t.clone()));
        }
        if let Some(p) = &self.token_file {
            return read_token_file(p).map(Some);
        }
        if let Some(t) = std::env::var("SMITH_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
            return Ok(Some(t.trim().to_string()));
        }
        Ok(self
            .ca_url
            .as_deref()
            .and_then(crate::admin_people::session_token))
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        self.client_with(self.admin_token()?)
    }

    /// A client sending `token` (none for `login`).
    pub fn client_with(&self, token: Option<String>) -> anyhow::Result<Client> {
        let url = self.url()?;
        let fp = self.ca_fingerprint.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "no CA fingerprint: pass --ca-fingerprint SHA256:... or set SMITH_CA_FINGERPRINT \
                 (printed by `smith-ca init`)"
            )
        })?;
        Ok(Client::new(ClientOptions {
            base_url: url,
            trust: Trust::Fingerprint(fp),
            token,
            identity: None,
            timeout: Duration::from_secs(30),
        })?)
    }
}

fn parse_ttl(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration like 90s, 60m, 8h or 7d: {e}"))?;
    Ok(d.as_secs())
}

fn parse_id(s: &str) -> Result<PosixId, String> {
    let n: u64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    PosixId::new(n).map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Users: add, list, disable, mint tokens.
    #[command(subcommand)]
    User(UserCmd),
    /// Groups and their members.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Grants: group x host-tag selector x level (ssh|sudo) x conditions.
    #[command(subcommand)]
    Grant(GrantCmd),
    /// Hosts: enrollment tokens, list, remove.
    #[command(subcommand)]
    Host(HostCmd),
    /// Issued user certificates: list them, revoke them (hosts get the revocation list
    /// at their next sync, within about a second, and sshd refuses the certificates).
    #[command(subcommand)]
    Cert(CertCmd),
    /// Sign in as a named admin through the CA's OpenID Provider (the same flow as
    /// `smith login`; members of the admin group configured at the CA). The admin token
    /// it gets is kept in the kernel keyring and used by every `smith-ca admin` command.
    Login {
        /// Sign in on another device (device flow) instead of a browser here.
        #[arg(long)]
        device: bool,
        /// Print the sign-in URL instead of opening a browser.
        #[arg(long)]
        no_browser: bool,
        /// How long to wait for the browser to come back.
        #[arg(long, value_parser = parse_ttl, default_value = "5m")]
        timeout: u64,
    },
    /// Forget the admin session `login` kept.
    Logout,
    /// Tokens of every kind: list, revoke, rotate, and named admin tokens for automation.
    #[command(subcommand)]
    Token(crate::admin_people::TokenCmd),
    /// Every change of the CA (users, groups, grants, tokens, hosts, revocations, SCIM
    /// and sign-ins): when, who, from where, what; read from the CA's audit chain.
    Changes {
        /// Only this actor's (an admin's name, `bootstrap`, `scim`, an OIDC subject, a host).
        #[arg(long)]
        actor: Option<String>,
        /// Only at or after T: RFC 3339 or a duration ago (1h, 7d).
        #[arg(long, value_parser = smith_ca::audit::cli::parse_since)]
        since: Option<u64>,
        /// At most this many (the most recent).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// SCIM provisioning (Okta, Entra ID): mint the bearer token the IdP uses on
    /// /scim/v2/Users and /scim/v2/Groups.
    #[command(subcommand)]
    Scim(ScimCmd),
    /// The audit trail: list, verify, rejected uploads, out-of-band logins.
    #[command(subcommand)]
    Audit(smith_ca::audit::cli::AuditCmd),
    /// Recorded certificate issuance decisions (allowed and denied), oldest first.
    Decisions {
        /// Show at most this many (the most recent).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only this user's decisions.
        #[arg(long, value_parser = UserName::new)]
        user: Option<UserName>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertCmd {
    /// Revoke certificates: one by serial, the one with a key ID, or every still-valid
    /// certificate of a user. They go into the OpenSSH KRL every host syncs to sshd's
    /// RevokedKeys (until they expire). Recorded in the audit trail (`@ca`).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["serial", "key_id", "user"])))]
    Revoke {
        /// The certificate's serial (see `cert list`, or `ssh-keygen -L -f CERT`).
        #[arg(long)]
        serial: Option<u64>,
        /// The certificate's key ID, e.g. smith:alice:0123456789abcdef.
        #[arg(long)]
        key_id: Option<String>,
        /// Every still-valid certificate of this user (the user keeps their access:
        /// a new certificate works; use `user disable` to stop that too).
        #[arg(long, value_parser = UserName::new)]
        user: Option<UserName>,
        /// Why (kept with the revocation and in the audit trail).
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List issued certificates, newest first.
    List {
        /// Only this user's certificates.
        #[arg(long, value_parser = UserName::new)]
        user: Option<UserName>,
        /// Only certificates still valid (not expired, not revoked).
        #[arg(long)]
        valid: bool,
        /// Show at most this many.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ScimCmd {
    /// Mint a SCIM bearer token (printed once, on stdout). Give it to the IdP's SCIM app
    /// with the base URL https://CA/scim/v2. It works on /scim/v2 only.
    Token {
        /// Token lifetime (at most 365d; rotate it with `token rotate ID`).
        #[arg(long, value_parser = parse_ttl, default_value = "90d")]
        ttl: u64,
        /// Print {"token", "expires_at"} as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add a user. Missing groups named in --groups are created (and said so) unless
    /// --strict-groups is given.
    Add {
        #[arg(value_parser = UserName::new)]
        name: UserName,
        /// Comma-separated groups to put the user in.
        #[arg(long, value_parser = GroupName::new, value_delimiter = ',')]
        groups: Vec<GroupName>,
        /// Fixed uid (else a fresh one from the CA's range).
        #[arg(long, value_parser = parse_id)]
        uid: Option<PosixId>,
        /// The login name was deleted before and this is the same person: give them their
        /// old uid back (else a recycled name gets a new uid, so the earlier owner's files
        /// on hosts are not theirs).
        #[arg(long)]
        reuse_uid: bool,
        /// Bind the user to this IdP identity (`sub`) at the CA's issuer: their first
        /// sign-in may then use the account (an unbound existing account is never taken
        /// by a sign-in).
        #[arg(long)]
        oidc_subject: Option<String>,
        /// Full name or comment (GECOS field on hosts).
        #[arg(long)]
        gecos: Option<String>,
        /// Login shell on hosts (default /bin/bash).
        #[arg(long)]
        shell: Option<String>,
        /// Refuse instead of creating groups that do not exist.
        #[arg(long)]
        strict_groups: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List users.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: no more certificates, removed from every host at its next sync,
    /// their valid certificates and their tokens revoked. SCIM cannot enable them again.
    Disable {
        #[arg(value_parser = UserName::new)]
        name: UserName,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Enable a disabled user again (whoever disabled them). Their revoked certificates
    /// and tokens stay revoked: they sign in again or get a new token.
    Enable {
        #[arg(value_parser = UserName::new)]
        name: UserName,
        #[arg(long)]
        json: bool,
    },
    /// Bind a user to their IdP identity (the `sub` the IdP gives them): sign-ins by that
    /// identity use this account, whatever login name the token states; an unbound
    /// existing account is never taken by a sign-in.
    Bind {
        #[arg(value_parser = UserName::new)]
        name: UserName,
        #[arg(long)]
        oidc_subject: String,
        /// The issuer (default: the CA's configured OpenID Provider).
        #[arg(long)]
        oidc_issuer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a user's IdP binding (their next sign-in is refused until bound again).
    Unbind {
        #[arg(value_parser = UserName::new)]
        name: UserName,
        #[arg(long)]
        json: bool,
    },
    /// Mint a bearer token for a user (for `smith cert`). Prints only the token.
    Token {
        #[arg(value_parser = UserName::new)]
        name: UserName,
        /// Token lifetime.
        #[arg(long, value_parser = parse_ttl, default_value = "7d")]
        ttl: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Add a group (does nothing if it already exists with that gid).
    Add {
        #[arg(value_parser = GroupName::new)]
        name: GroupName,
        #[arg(long, value_parser = parse_id)]
        gid: Option<PosixId>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put a user in a group.
    AddMember {
        #[arg(value_parser = GroupName::new)]
        group: GroupName,
        #[arg(value_parser = UserName::new)]
        user: UserName,
    },
    /// Take a user out of a group; hosts drop what that gave within about a second.
    RemoveMember {
        #[arg(value_parser = GroupName::new)]
        group: GroupName,
        #[arg(value_parser = UserName::new)]
        user: UserName,
    },
    /// List groups with their members.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Let members of an IdP group into GROUP when they sign in. IDP_GROUP_ID is the
    /// group as the ID token's groups claim carries it: Entra ID sends Object IDs
    /// (GUIDs), Okta names or ids as its groups claim is set up. A group named like a CA
    /// group grants nothing without a mapping.
    Map {
        #[arg(value_parser = GroupName::new)]
        group: GroupName,
        idp_group: String,
        #[arg(long)]
        json: bool,
    },
    /// End a mapping; the memberships sign-ins made through it are removed.
    Unmap {
        #[arg(value_parser = GroupName::new)]
        group: GroupName,
        idp_group: String,
        #[arg(long)]
        json: bool,
    },
    /// List the IdP group mappings.
    Mappings {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum GrantCmd {
    /// Grant a group access to hosts whose tags include --tags.
    Add {
        /// The group whose members get this access.
        #[arg(long, value_parser = GroupName::new)]
        group: GroupName,
        /// Host-tag selector `k=v,...`; every pair must be among a host's tags.
        #[arg(long, value_parser = Tags::parse)]
        tags: Tags,
        /// ssh (log in) or sudo (log in and sudo).
        #[arg(long)]
        level: Level,
        /// Longest certificate this grant allows, e.g. 8h.
        #[arg(long, value_parser = parse_ttl)]
        max_ttl: u64,
        /// Requests must come from this network; certificates carry it as source-address.
        /// Repeatable.
        #[arg(long = "source-cidr")]
        source_cidrs: Vec<String>,
        /// Certificates need a --reason.
        #[arg(long)]
        require_reason: bool,
        /// Certificates only inside this window, e.g. "mon-fri 09:00-18:00 UTC" or
        /// "daily 22:00-06:00 +02:00" (UTC or fixed offsets). Repeatable (any matches).
        #[arg(long = "time-window")]
        time_windows: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List grants.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a grant by id (see `grant list`).
    Remove { id: u64 },
}

#[derive(Subcommand, Debug)]
pub enum HostCmd {
    /// Mint a single-use enrollment token for a host with these tags. Prints only the token.
    Token {
        #[arg(long, value_parser = Tags::parse)]
        tags: Tags,
        #[arg(long, value_parser = parse_ttl, default_value = "1h")]
        ttl: u64,
        /// An extra name (besides its own host name) the enrolling host may put in its
        /// SSH host certificates, e.g. web.example.com (repeatable). A host asking for
        /// a name the token does not allow is refused.
        #[arg(long = "ssh-name", value_parser = HostName::new)]
        ssh_names: Vec<HostName>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List enrolled (and removed) hosts.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a host: its client certificate stops working for sync at once.
    Remove {
        #[arg(value_parser = HostName::new)]
        name: HostName,
    },
}

fn time(t: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string()
}

fn ago(t: Option<u64>) -> String {
    match t {
        None => "never".into(),
        Some(t) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            format!("{}s ago", now.saturating_sub(t))
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn print_user(u: &UserInfo) {
    let groups: Vec<&str> = u.groups.iter().map(|g| g.as_str()).collect();
    println!(
        "{:<20} uid {:<8} {:<9} groups: {}",
        u.name.as_str(),
        u.uid,
        if u.disabled { "DISABLED" } else { "enabled" },
        if groups.is_empty() {
            "-".to_string()
        } else {
            groups.join(",")
        }
    );
}

fn print_group(g: &GroupInfo) {
    let members: Vec<&str> = g.members.iter().map(|m| m.as_str()).collect();
    println!(
        "{:<20} gid {:<8} members: {}",
        g.name.as_str(),
        g.gid,
        if members.is_empty() {
            "-".to_string()
        } else {
            members.join(",")
        }
    );
}

fn print_grant(g: &GrantInfo) {
    let mut cond = Vec::new();
    if !g.source_cidrs.is_empty() {
        cond.push(format!("from {}", g.source_cidrs.join(",")));
    }
    if g.require_reason {
        cond.push("reason required".to_string());
    }
    if !g.time_windows.is_empty() {
        cond.push(format!("during {}", g.time_windows.join(" or ")));
    }
    println!(
        "#{:<4} group {:<14} -> {:<24} : {:<4}  max {}{}",
        g.id,
        g.group.as_str(),
        if g.selector.is_empty() {
            "(every host)".to_string()
        } else {
            g.selector.to_string()
        },
        g.level.as_str(),
        humantime::format_duration(Duration::from_secs(g.max_ttl_secs)),
        if cond.is_empty() {
            String::new()
        } else {
            format!("  ({})", cond.join("; "))
        }
    );
}

fn join_serials(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

fn print_cert(c: &IssuedCert) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let state = match &c.revoked {
        Some(r) => format!("REVOKED {} ({}; {})", time(r.revoked_at), r.via, r.reason),
        None if c.valid_before <= now => "expired".to_string(),
        None => "valid".to_string(),
    };
    println!(
        "serial {:<8} {:<16} {:<40} scope {:<20} {} .. {}  {}",
        c.serial,
        c.user,
        c.key_id,
        if c.scope.is_empty() {
            "(any)"
        } else {
            c.scope.as_str()
        },
        time(c.valid_after),
        time(c.valid_before),
        state
    );
}

fn print_token(t: &TokenResponse, as_json: bool, what: &str) -> anyhow::Result<()> {
    if as_json {
        return json(t);
    }
    println!("{}", t.token);
    eprintln!(
        "{what} token, valid until {} (shown once; keep it secret)",
        time(t.expires_at)
    );
    Ok(())
}

pub fn run(conn: &Conn, cmd: AdminCmd) -> anyhow::Result<()> {
    use crate::admin_people as people;
    if let AdminCmd::Login {
        device,
        no_browser,
        timeout,
    } = cmd
    {
        let c = conn.client_with(None)?;
        return people::login(
            &c,
            &conn.url()?,
            people::LoginArgs {
                device,
                no_browser,
                timeout: Duration::from_secs(timeout),
            },
        );
    }
    if let AdminCmd::Logout = cmd {
        return people::logout(&conn.url()?);
    }
    let c = conn.client()?;
    match cmd {
        AdminCmd::Login { .. } | AdminCmd::Logout => {}
        AdminCmd::Token(t) => return people::token(&c, t),
        AdminCmd::Changes {
            actor,
            since,
            limit,
            json: as_json,
        } => return people::changes(&c, actor, since, limit, as_json),
        AdminCmd::User(u) => match u {
            UserCmd::Enable {
                name,
                json: as_json,
            } => {
                let info = people::enable(&c, &name)?;
                if as_json {
                    return json(&info);
                }
                print!("enabled ");
                print_user(&info);
            }
            UserCmd::Bind {
                name,
                oidc_subject,
                oidc_issuer,
                json: as_json,
            } => {
                let info = people::bind(&c, &name, oidc_subject, oidc_issuer)?;
                if as_json {
                    return json(&info);
                }
                println!(
                    "user {name} is bound to {} sub {}",
                    info.oidc_issuer.as_deref().unwrap_or("?"),
                    info.oidc_subject.as_deref().unwrap_or("?")
                );
            }
            UserCmd::Unbind {
                name,
                json: as_json,
            } => {
                let info = people::unbind(&c, &name)?;
                if as_json {
                    return json(&info);
                }
                println!("user {name} is bound to no IdP identity: their sign-ins are refused until bound again");
            }
            UserCmd::Add {
                name,
                groups,
                uid,
                reuse_uid,
                oidc_subject,
                gecos,
                shell,
                strict_groups,
                json: as_json,
            } => {
                let missing: Vec<GroupName> = if strict_groups || groups.is_empty() {
                    vec![]
                } else {
                    let existing: Vec<GroupInfo> = c.get("/v1/admin/groups")?;
                    groups
                        .iter()
                        .filter(|g| !existing.iter().any(|e| &e.name == *g))
                        .cloned()
                        .collect()
                };
                let info: UserInfo = c.post(
                    "/v1/admin/users",
                    &UserAdd {
                        name,
                        groups,
                        uid,
                        gecos,
                        shell,
                        create_groups: !strict_groups,
                        reuse_uid,
                        oidc_subject,
                    },
                )?;
                for g in &missing {
                    eprintln!("note: group '{g}' did not exist; created it");
                }
                if as_json {
                    return json(&info);
                }
                print!("added user ");
                print_user(&info);
            }
            UserCmd::List { json: as_json } => {
                let users: Vec<UserInfo> = c.get("/v1/admin/users")?;
                if as_json {
                    return json(&users);
                }
                if users.is_empty() {
                    println!("no users yet; add one with `smith-ca admin user add NAME`");
                }
                users.iter().for_each(print_user);
            }
            UserCmd::Disable {
                name,
                json: as_json,
            } => {
                let info: UserInfo = c.post(
                    &format!("/v1/admin/users/{name}/disable"),
                    &serde_json::json!({}),
                )?;
                if as_json {
                    return json(&info);
                }
                println!("user {name} is disabled: no more certificates, their valid certificates are revoked, removed from hosts at their next sync");
            }
            UserCmd::Token {
                name,
                ttl,
                json: as_json,
            } => {
                let t: TokenResponse = c.post(
                    &format!("/v1/admin/users/{name}/token"),
                    &TokenRequest {
                        ttl_secs: Some(ttl),
                    },
                )?;
                print_token(&t, as_json, &format!("user {name}'s"))?;
            }
        },
        AdminCmd::Scim(ScimCmd::Token { ttl, json: as_json }) => {
            let t: TokenResponse = c.post(
                "/v1/admin/scim/token",
                &TokenRequest {
                    ttl_secs: Some(ttl),
                },
            )?;
            print_token(&t, as_json, "SCIM")?;
        }
        AdminCmd::Group(g) => match g {
            GroupCmd::Map {
                group,
                idp_group,
                json: as_json,
            } => return people::mapping(&c, Some(&group), Some(idp_group), false, as_json),
            GroupCmd::Unmap {
                group,
                idp_group,
                json: as_json,
            } => return people::mapping(&c, Some(&group), Some(idp_group), true, as_json),
            GroupCmd::Mappings { json: as_json } => {
                return people::mapping(&c, None, None, false, as_json)
            }
            GroupCmd::Add {
                name,
                gid,
                json: as_json,
            } => {
                let existed = c
                    .get::<Vec<GroupInfo>>("/v1/admin/groups")?
                    .into_iter()
                    .any(|g| g.name == name);
                let info: GroupInfo = c.post("/v1/admin/groups", &GroupAdd { name, gid })?;
                if as_json {
                    return json(&info);
                }
                if existed {
                    println!(
                        "group {} already exists (gid {}); nothing to do",
                        info.name, info.gid
                    );
                } else {
                    print!("added group ");
                    print_group(&info);
                }
            }
            GroupCmd::AddMember { group, user } => {
                let info: GroupInfo = c.post(
                    &format!("/v1/admin/groups/{group}/members"),
                    &MemberChange { user },
                )?;
                print_group(&info);
            }
            GroupCmd::RemoveMember { group, user } => {
                let info: GroupInfo =
                    c.delete(&format!("/v1/admin/groups/{group}/members/{user}"))?;
                print_group(&info);
            }
            GroupCmd::List { json: as_json } => {
                let groups: Vec<GroupInfo> = c.get("/v1/admin/groups")?;
                if as_json {
                    return json(&groups);
                }
                groups.iter().for_each(print_group);
            }
        },
        AdminCmd::Grant(g) => match g {
            GrantCmd::Add {
                group,
                tags,
                level,
                max_ttl,
                source_cidrs,
                require_reason,
                time_windows,
                json: as_json,
            } => {
                let info: GrantInfo = c.post(
                    "/v1/admin/grants",
                    &GrantAdd {
                        group,
                        selector: tags,
                        level,
                        max_ttl_secs: max_ttl,
                        source_cidrs,
                        require_reason,
                        time_windows,
                    },
                )?;
                if as_json {
                    return json(&info);
                }
                print!("added grant ");
                print_grant(&info);
            }
            GrantCmd::List { json: as_json } => {
                let grants: Vec<GrantInfo> = c.get("/v1/admin/grants")?;
                if as_json {
                    return json(&grants);
                }
                grants.iter().for_each(print_grant);
            }
            GrantCmd::Remove { id } => {
                let info: GrantInfo = c.delete(&format!("/v1/admin/grants/{id}"))?;
                print!("removed grant ");
                print_grant(&info);
            }
        },
        AdminCmd::Host(h) => match h {
            HostCmd::Token {
                tags,
                ttl,
                ssh_names,
                json: as_json,
            } => {
                let what = if ssh_names.is_empty() {
                    format!("single-use enrollment (tags {tags})")
                } else {
                    let n: Vec<&str> = ssh_names.iter().map(|n| n.as_str()).collect();
                    format!(
                        "single-use enrollment (tags {tags}; SSH names allowed: {})",
                        n.join(", ")
                    )
                };
                let t: TokenResponse = c.post(
                    "/v1/admin/hosts/tokens",
                    &HostTokenRequestNamed {
                        request: HostTokenRequest {
                            tags,
                            ttl_secs: ttl,
                        },
                        ssh_names,
                    },
                )?;
                print_token(&t, as_json, &what)?;
            }
            HostCmd::List { json: as_json } => {
                let hosts: Vec<HostInfo> = c.get("/v1/admin/hosts")?;
                if as_json {
                    return json(&hosts);
                }
                for h in &hosts {
                    let extra: Vec<&str> = h
                        .ssh_names
                        .iter()
                        .filter(|n| **n != h.name)
                        .map(|n| n.as_str())
                        .collect();
                    println!(
                        "{:<24} {:<28} {:<8} enrolled {}  last seen {}  version {}{}",
                        h.name.as_str(),
                        h.tags.to_string(),
                        if h.removed { "REMOVED" } else { "active" },
                        time(h.enrolled_at),
                        ago(h.last_seen),
                        h.synced_version
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into()),
                        if extra.is_empty() {
                            String::new()
                        } else {
                            format!("  ssh names {}", extra.join(","))
                        }
                    );
                }
            }
            HostCmd::Remove { name } => {
                let _: HostInfo = c.delete(&format!("/v1/admin/hosts/{name}"))?;
                println!("host {name} removed: it can no longer sync");
            }
        },
        AdminCmd::Audit(a) => return smith_ca::audit::cli::run(&c, a),
        AdminCmd::Cert(CertCmd::Revoke {
            serial,
            key_id,
            user,
            reason,
            json: as_json,
        }) => {
            let r: RevokeResponse = c
                .post(
                    "/v1/admin/certs/revoke",
                    &RevokeRequest {
                        serial,
                        key_id,
                        user,
                        reason,
                    },
                )
                .context("cannot revoke")?;
            if as_json {
                return json(&r);
            }
            for cert in &r.revoked {
                print!("revoked ");
                print_cert(cert);
            }
            if !r.already_revoked.is_empty() {
                println!(
                    "already revoked: serial {}",
                    join_serials(&r.already_revoked)
                );
            }
            if !r.expired.is_empty() {
                println!(
                    "expired already (nothing to revoke): serial {}",
                    join_serials(&r.expired)
                );
            }
            if r.revoked.is_empty() {
                println!("nothing newly revoked");
            } else {
                println!(
                    "{} certificate(s) revoked; hosts get the revocation list with version {}",
                    r.revoked.len(),
                    r.version
                );
            }
        }
        AdminCmd::Cert(CertCmd::List {
            user,
            valid,
            limit,
            json: as_json,
        }) => {
            let mut path = format!("/v1/admin/certs?limit={limit}");
            if let Some(u) = user {
                path.push_str(&format!("&user={u}"));
            }
            if valid {
                path.push_str("&valid=true");
            }
            let certs: Vec<IssuedCert> = c.get(&path).context("cannot list certificates")?;
            if as_json {
                return json(&certs);
            }
            if certs.is_empty() {
                println!("no certificates");
            }
            certs.iter().for_each(print_cert);
        }
        AdminCmd::Decisions {
            limit,
            user,
            json: as_json,
        } => {
            let mut path = format!("/v1/admin/decisions?limit={limit}");
            if let Some(u) = user {
                path.push_str(&format!("&user={u}"));
            }
            let ds: Vec<Decision> = c.get(&path).context("cannot list decisions")?;
            if as_json {
                return json(&ds);
            }
            for d in &ds {
                println!(
                    "{} {:<16} {:<7} scope {:<20} from {:<15} {}{}",
                    time(d.at),
                    d.user,
                    if d.allowed { "ISSUED" } else { "DENIED" },
                    if d.scope.is_empty() {
                        "(any)"
                    } else {
                        d.scope.as_str()
                    },
                    d.source,
                    d.serial
                        .map(|s| format!("serial {s}: "))
                        .unwrap_or_default(),
                    d.reason
                );
            }
        }
    }
    Ok(())
}
