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
    CertQuery, Client, ClientOptions, DecisionQuery, GrantAdd, GrantInfo, GroupAdd, GroupInfo,
    HostCertInfo, HostCertQuery, HostCertRevokeRequest, HostCertRevokeResponse, HostInfo,
    HostTagsRequest, HostTokenRequest, HostTokenRequestNamed, IssuedCert, RevokeRequest,
    RevokeResponse, TokenRequest, TokenResponse, Trust, UserAdd, UserInfo,
};
use smith_ca::audit::cli::say;
use smith_proto::grants::Permits;
use smith_proto::{GroupName, HostName, HostPattern, Level, PosixId, Tags, UserName};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The CA's URL, e.g. https://ca.example.com:8443. Repeat it (or give a comma
    /// separated list: SMITH_CA_URL=URL1,URL2) for a CA with several replicas,
    /// preferred first: each request goes to the first that answers.
    #[arg(long, env = "SMITH_CA_URL", global = true, value_delimiter = ',')]
    pub ca_url: Vec<String>,
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
    /// The CA's URLs, preferred first.
    pub fn urls(&self) -> anyhow::Result<Vec<String>> {
        let urls = smith_api::replicas::split_urls(&self.ca_url);
        if urls.is_empty() {
            anyhow::bail!("no CA URL: pass --ca-url https://HOST:PORT or set SMITH_CA_URL (several replicas: URL1,URL2)");
        }
        Ok(urls)
    }

    /// The first (preferred) URL: what a named admin's session is kept under.
    pub fn url(&self) -> anyhow::Result<String> {
        Ok(self.urls()?.remove(0))
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
        if let Some(t) = std::env::var("SMITH_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
        {
            return Ok(Some(t.trim().to_string()));
        }
        Ok(self
            .url()
            .ok()
            .as_deref()
            .and_then(crate::admin_people::session_token))
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        self.client_with(self.admin_token()?)
    }

    /// A client sending `token` (none for `login`).
    pub fn client_with(&self, token: Option<String>) -> anyhow::Result<Client> {
        let urls = self.urls()?;
        let fp = self.ca_fingerprint.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "no CA fingerprint: pass --ca-fingerprint SHA256:... or set SMITH_CA_FINGERPRINT \
                 (printed by `smith-ca init`)"
            )
        })?;
        let replicas = smith_api::Replicas::with(
            urls,
            smith_api::replicas::DEFAULT_RETRY_PREFERRED,
            Some(Box::new(|f: &smith_api::replicas::Failover| {
                if !f.returned {
                    eprintln!(
                        "smith-ca admin: the CA replica {} did not answer; using {} ({})",
                        f.from, f.to, f.reason
                    );
                }
            })),
        )
        .map_err(anyhow::Error::msg)?
        .shared();
        Ok(Client::new(ClientOptions {
            token,
            unreachable_hint: Some(smith_api::client::CLI_UNREACHABLE_HINT),
            replicas: Some(replicas.clone()),
            ..ClientOptions::new(replicas.url(0), Trust::Fingerprint(fp))
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
    /// The CA keys: rotate the user CA or host CA key in phases without a flag day.
    #[command(subcommand)]
    Ca(CaCmd),
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
    /// (GUIDs), Okta names or ids as its groups claim is set up; Google Workspace puts
    /// no groups in ID tokens (manage those memberships here or through SCIM). A group
    /// named like a CA group grants nothing without a mapping.
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
// Parsed once per command line: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
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
        /// Certificates under this grant may also log in as this shared local account
        /// (e.g. deploy, ubuntu; never root or a Smith user). Repeatable. Hosts admit it
        /// only under this grant; the trail names the person behind each login.
        #[arg(long = "login", value_name = "ACCOUNT")]
        logins: Vec<UserName>,
        /// Allow what certificates under this grant do not get by default:
        /// agent-forwarding, x11-forwarding, user-rc. Repeatable.
        #[arg(long = "permit", value_name = "WHAT")]
        permit: Vec<String>,
        /// Take away what certificates get by default: pty, port-forwarding. Repeatable.
        #[arg(long = "deny", value_name = "WHAT")]
        deny: Vec<String>,
        /// sshd runs this command instead of whatever is asked (force-command).
        #[arg(long, value_name = "COMMAND")]
        force_command: Option<String>,
        /// Limit a sudo grant to this command: its absolute path, then exactly the
        /// arguments allowed (none given: any), e.g. '/usr/bin/systemctl restart nginx'.
        /// Repeatable. Hosts render it as a sudoers rule on the grant's own NSS group and
        /// re-check it against the login's certificate at every sudo.
        #[arg(long = "sudo-command", value_name = "COMMAND")]
        sudo_commands: Vec<String>,
        /// The user(s) those commands may run as (default root). Repeatable.
        #[arg(long = "sudo-as", value_name = "USER")]
        sudo_as: Vec<UserName>,
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
    /// Mint an enrollment token for hosts with these tags and names. Prints only the
    /// token.
    Token {
        #[arg(long, value_parser = Tags::parse)]
        tags: Tags,
        #[arg(long, value_parser = parse_ttl, default_value = "1h")]
        ttl: u64,
        /// A host name the token allows (repeatable, at least one): exact
        /// (web-1.example.com, or an IP address) or one label under a domain
        /// ('*.prod.example.com'). The enrolling host's name and every SSH name it asks
        /// for must be allowed; nothing else is ever put in its host certificates.
        #[arg(long = "name", value_parser = HostPattern::parse, required_unless_present = "ssh_names")]
        names: Vec<HostPattern>,
        /// How many hosts may enroll with this token (autoscaling groups); default 1.
        #[arg(long)]
        uses: Option<u32>,
        /// An exact name the token allows (the same as --name NAME; kept for scripts).
        #[arg(long = "ssh-name", value_parser = HostName::new)]
        ssh_names: Vec<HostName>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell script that sets up a host that only trusts the CA (no
    /// smith-hostd): sshd admits a certificate as one of the --login accounts only if a
    /// grant allowing that account and whose selector is among --tags issued it; the KRL
    /// of revoked certificates is fetched from the CA every few minutes. It cannot end
    /// access before a certificate expires, serve Smith users, apply sudo rules or record
    /// sessions (the script says so). Run it as root on the host, then reload sshd.
    TrustOnly {
        /// The host's tags (at most 10).
        #[arg(long, value_parser = Tags::parse)]
        tags: Tags,
        /// A local account certificates may log in as (repeatable, at least one).
        #[arg(long = "login", value_name = "ACCOUNT", required = true)]
        logins: Vec<UserName>,
        /// Fetch the KRL this often, in minutes.
        #[arg(long, default_value_t = 5, value_name = "MINUTES")]
        krl_every: u32,
        /// Do not fetch the KRL (revocations never reach the host).
        #[arg(long)]
        no_krl: bool,
    },
    /// List enrolled (and removed) hosts.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a host: its client certificate stops working for sync at once, and its SSH
    /// host certificates are revoked.
    Remove {
        #[arg(value_parser = HostName::new)]
        name: HostName,
    },
    /// Replace a host's tags (a host never chooses its own); it gets a full snapshot of
    /// what they select at its next sync.
    Tags {
        #[arg(value_parser = HostName::new)]
        name: HostName,
        /// The new tags, k=v,... (all of them: the old ones are replaced).
        #[arg(long, value_parser = Tags::parse)]
        set: Tags,
    },
    /// SSH host certificates the host CA signed, newest first.
    Certs {
        /// Only this host's.
        #[arg(long, value_parser = HostName::new)]
        host: Option<HostName>,
        /// Only those neither expired nor revoked.
        #[arg(long)]
        valid: bool,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke SSH host certificates (ssh clients configured by `smith config ssh` refuse
    /// them once they refresh the host revocation list).
    #[command(subcommand)]
    Cert(HostCertCmd),
}

#[derive(Subcommand, Debug)]
pub enum HostCertCmd {
    /// Revoke one host certificate (--serial) or every valid one of a host (--host).
    Revoke {
        #[arg(long, conflicts_with = "host", required_unless_present = "host")]
        serial: Option<u64>,
        #[arg(long, value_parser = HostName::new)]
        host: Option<HostName>,
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
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
    if !g.logins.is_empty() {
        let l: Vec<&str> = g.logins.iter().map(|l| l.as_str()).collect();
        cond.push(format!("also as {}", l.join(",")));
    }
    if g.permits != Permits::default() {
        cond.push(format!("permits {}", g.permits.describe()));
    }
    if let Some(c) = &g.force_command {
        cond.push(format!("forced command {}", c.escape_debug()));
    }
    if !g.sudo.is_unrestricted() {
        let cmds: Vec<String> = g.sudo.commands.iter().map(ToString::to_string).collect();
        cond.push(format!(
            "sudo only {} as {}",
            if cmds.is_empty() {
                "ALL".to_string()
            } else {
                cmds.join(", ")
            },
            g.sudo.targets().join(",")
        ));
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
    say(format!(
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
    ));
}

fn print_host(h: &HostInfo) {
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

fn print_revoked(r: &RevokeResponse) {
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

fn print_host_cert(c: &HostCertInfo) {
    let state = match &c.revoked {
        Some(r) => format!("REVOKED {} ({})", time(r.revoked_at), r.reason),
        None => format!("valid until {}", time(c.valid_before)),
    };
    say(format!(
        "serial {:<20} {:<24} {} {}  {}",
        c.serial,
        c.host.as_str(),
        c.key_fingerprint,
        c.principals.join(","),
        state
    ));
}

fn print_host_certs_revoked(r: &HostCertRevokeResponse) {
    for c in &r.revoked {
        say(format!(
            "REVOKED serial {:<20} {:<24} {} {}  (was valid until {})",
            c.serial,
            c.host.as_str(),
            c.key_fingerprint,
            c.principals.join(","),
            time(c.valid_before)
        ));
    }
    if !r.already_revoked.is_empty() {
        println!(
            "already revoked: serial {}",
            join_serials(&r.already_revoked)
        );
    }
    if !r.expired.is_empty() {
        println!("already expired: serial {}", join_serials(&r.expired));
    }
    if r.revoked.is_empty() {
        println!("nothing to revoke");
    }
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
        AdminCmd::Login { .. } | AdminCmd::Logout => Ok(()),
        AdminCmd::Token(t) => people::token(&c, t),
        AdminCmd::Changes {
            actor,
            since,
            limit,
            json: as_json,
        } => people::changes(&c, actor, since, limit, as_json),
        AdminCmd::User(u) => user(&c, u),
        AdminCmd::Group(g) => group(&c, g),
        AdminCmd::Grant(g) => grant(&c, g),
        AdminCmd::Host(h) => host(&c, h),
        AdminCmd::Cert(cmd) => cert(&c, cmd),
        AdminCmd::Scim(ScimCmd::Token { ttl, json: as_json }) => {
            let t = c.scim_token(&TokenRequest {
                ttl_secs: Some(ttl),
            })?;
            print_token(&t, as_json, "SCIM")
        }
        AdminCmd::Audit(a) => smith_ca::audit::cli::run(&c, a),
        AdminCmd::Ca(cmd) => ca_keys(&c, cmd),
        AdminCmd::Decisions {
            limit,
            user,
            json: as_json,
        } => decisions(&c, limit, user, as_json),
    }
}

/// Which CA a rotation command is about.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct RoleArg {
    /// The user CA (the key hosts trust for engineers' certificates).
    #[arg(long)]
    user: bool,
    /// The host CA (the key engineers' known_hosts trust for hosts).
    #[arg(long)]
    host: bool,
}

impl RoleArg {
    fn role(&self) -> &'static str {
        if self.host {
            "host"
        } else {
            "user"
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum CaCmd {
    /// Start a rotation: a new key, trusted beside the current one. User CA: signing
    /// switches to it once every host has synced it (hosts not seen for a day are listed
    /// and do not block), and the old key retires after the longest user certificate.
    /// Host CA: hosts get certificates from it after --grace (engineers' `smith config
    /// ssh` and `smith cert --ensure` install it meanwhile), and the old key retires
    /// after the longest host certificate. With --force: take the pending step now.
    Rotate {
        #[command(flatten)]
        role: RoleArg,
        /// The new key in a PKCS#11 token (RFC 7512 URI, as for `smith-ca init
        /// --user-ca`); without it, a new key file in the data directory. Rotating from a
        /// file key to a token key is the same operation.
        #[arg(long, value_name = "PKCS11_URI", conflicts_with = "force")]
        to: Option<String>,
        /// Host CA: how long before hosts get certificates from the new key (default 1d).
        #[arg(long, value_parser = parse_ttl, conflicts_with = "force")]
        grace: Option<u64>,
        /// User CA: hosts not seen for this long are listed as stale and do not hold up
        /// the switch (default 1d).
        #[arg(long, value_parser = parse_ttl, conflicts_with = "force")]
        stale_after: Option<u64>,
        /// Take the pending step now: switch to the new key (even if hosts lag), or
        /// retire the old one (its certificates are refused from then on).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Where each phase stands: the keys, their states and times, the hosts that lag.
    Status {
        #[command(flatten)]
        role: RoleArg,
        #[arg(long)]
        json: bool,
    },
}

fn print_rotation(v: &serde_json::Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    println!(
        "{} CA: {}",
        v["role"].as_str().unwrap_or("?"),
        v["phase"].as_str().unwrap_or("?")
    );
    for k in v["keys"].as_array().into_iter().flatten() {
        println!(
            "  {:9} {}  {}",
            k["state"].as_str().unwrap_or("?"),
            k["fingerprint"].as_str().unwrap_or("?"),
            k["source"].as_str().unwrap_or("?")
        );
    }
    if let Some(h) = v.get("hosts").filter(|h| !h.is_null()) {
        let list = |f: &str| {
            h[f].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        println!("  hosts with the new key: {}", list("acknowledged"));
        println!(
            "  hosts lagging (they hold up the switch): {}",
            list("lagging")
        );
        println!(
            "  hosts not seen recently (not waited for): {}",
            list("stale")
        );
    }
    println!("next: {}", v["next"].as_str().unwrap_or("?"));
    Ok(())
}

fn ca_keys(c: &Client, cmd: CaCmd) -> anyhow::Result<()> {
    match cmd {
        CaCmd::Rotate {
            role,
            to,
            grace,
            stale_after,
            force,
            json: as_json,
        } => {
            let v = c.ca_rotate(&serde_json::json!({
                "role": role.role(),
                "force": force,
                "to": to,
                "grace_secs": grace,
                "stale_after_secs": stale_after,
            }))?;
            print_rotation(&v, as_json)
        }
        CaCmd::Status {
            role,
            json: as_json,
        } => print_rotation(&c.ca_rotation(role.role())?, as_json),
    }
}

fn user(c: &Client, cmd: UserCmd) -> anyhow::Result<()> {
    use crate::admin_people as people;
    match cmd {
        UserCmd::Enable {
            name,
            json: as_json,
        } => {
            let info = people::enable(c, &name)?;
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
            let info = people::bind(c, &name, oidc_subject, oidc_issuer)?;
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
            let info = people::unbind(c, &name)?;
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
                let existing = c.list_groups()?;
                groups
                    .iter()
                    .filter(|g| !existing.iter().any(|e| &e.name == *g))
                    .cloned()
                    .collect()
            };
            let info = c.add_user(&UserAdd {
                name,
                groups,
                uid,
                reuse_uid,
                oidc_subject,
                gecos,
                shell,
                create_groups: !strict_groups,
            })?;
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
            let users = c.list_users()?;
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
            let info = c.disable_user(&name)?;
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
            let t = c.user_token(
                &name,
                &TokenRequest {
                    ttl_secs: Some(ttl),
                },
            )?;
            print_token(&t, as_json, &format!("user {name}'s"))?;
        }
    }
    Ok(())
}

fn group(c: &Client, cmd: GroupCmd) -> anyhow::Result<()> {
    use crate::admin_people as people;
    match cmd {
        GroupCmd::Map {
            group,
            idp_group,
            json: as_json,
        } => return people::mapping(c, Some(&group), Some(idp_group), false, as_json),
        GroupCmd::Unmap {
            group,
            idp_group,
            json: as_json,
        } => return people::mapping(c, Some(&group), Some(idp_group), true, as_json),
        GroupCmd::Mappings { json: as_json } => {
            return people::mapping(c, None, None, false, as_json)
        }
        GroupCmd::Add {
            name,
            gid,
            json: as_json,
        } => {
            let existed = c.list_groups()?.into_iter().any(|g| g.name == name);
            let info = c.add_group(&GroupAdd { name, gid })?;
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
        GroupCmd::AddMember { group, user } => print_group(&c.add_member(&group, &user)?),
        GroupCmd::RemoveMember { group, user } => print_group(&c.remove_member(&group, &user)?),
        GroupCmd::List { json: as_json } => {
            let groups = c.list_groups()?;
            if as_json {
                return json(&groups);
            }
            groups.iter().for_each(print_group);
        }
    }
    Ok(())
}

fn grant(c: &Client, cmd: GrantCmd) -> anyhow::Result<()> {
    match cmd {
        GrantCmd::Add {
            group,
            tags,
            level,
            max_ttl,
            source_cidrs,
            require_reason,
            time_windows,
            logins,
            permit,
            deny,
            force_command,
            sudo_commands,
            sudo_as,
            json: as_json,
        } => {
            let mut permits = Permits::default();
            for (names, on) in [(&permit, true), (&deny, false)] {
                for n in names {
                    permits.set(n, on).map_err(anyhow::Error::msg)?;
                }
            }
            let info = c.add_grant(&GrantAdd {
                group,
                selector: tags,
                level,
                max_ttl_secs: max_ttl,
                source_cidrs,
                require_reason,
                time_windows,
                logins,
                permits,
                force_command,
                sudo_commands,
                sudo_as,
            })?;
            if as_json {
                return json(&info);
            }
            print!("added grant ");
            print_grant(&info);
        }
        GrantCmd::List { json: as_json } => {
            let grants = c.list_grants()?;
            if as_json {
                return json(&grants);
            }
            grants.iter().for_each(print_grant);
        }
        GrantCmd::Remove { id } => {
            let info = c.remove_grant(id)?;
            print!("removed grant ");
            print_grant(&info);
        }
    }
    Ok(())
}

fn host(c: &Client, cmd: HostCmd) -> anyhow::Result<()> {
    match cmd {
        HostCmd::Token {
            tags,
            ttl,
            names,
            uses,
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
            let t = c.host_token(&HostTokenRequestNamed {
                request: HostTokenRequest {
                    tags,
                    ttl_secs: ttl,
                },
                ssh_names,
                names,
                uses,
            })?;
            print_token(&t, as_json, &what)?;
        }
        HostCmd::TrustOnly {
            tags,
            logins,
            krl_every,
            no_krl,
        } => {
            let keys = c.user_ca_keys()?.keys;
            let root = if no_krl {
                None
            } else {
                Some(c.tls_root()?.root_pem)
            };
            let base = c.base_url();
            let script = smith_ca::trustonly::render(&smith_ca::trustonly::TrustOnly {
                tags: &tags,
                logins: &logins,
                user_ca_keys: &keys,
                krl: root.as_deref().map(|r| (base.as_str(), r)),
                krl_every_minutes: krl_every,
            })
            .map_err(anyhow::Error::msg)?;
            print!("{script}");
        }
        HostCmd::List { json: as_json } => {
            let hosts = c.list_hosts()?;
            if as_json {
                return json(&hosts);
            }
            hosts.iter().for_each(print_host);
        }
        HostCmd::Remove { name } => {
            c.remove_host(&name)?;
            println!(
                "host {name} removed: it can no longer sync; its host certificates are revoked"
            );
        }
        HostCmd::Tags { name, set } => {
            let h = c.set_host_tags(&name, &HostTagsRequest { tags: set })?;
            println!("host {} now has tags {}", h.name, h.tags);
        }
        HostCmd::Certs {
            host,
            valid,
            limit,
            json: as_json,
        } => {
            let certs = c.host_certs(&HostCertQuery {
                host,
                valid,
                limit: Some(limit),
            })?;
            if as_json {
                return json(&certs);
            }
            certs.iter().for_each(print_host_cert);
        }
        HostCmd::Cert(HostCertCmd::Revoke {
            serial,
            host,
            reason,
            json: as_json,
        }) => {
            let r = c.revoke_host_certs(&HostCertRevokeRequest {
                serial,
                host,
                reason,
            })?;
            if as_json {
                return json(&r);
            }
            print_host_certs_revoked(&r);
        }
    }
    Ok(())
}

fn cert(c: &Client, cmd: CertCmd) -> anyhow::Result<()> {
    match cmd {
        CertCmd::Revoke {
            serial,
            key_id,
            user,
            reason,
            json: as_json,
        } => {
            let r = c
                .revoke(&RevokeRequest {
                    serial,
                    key_id,
                    user,
                    reason,
                })
                .context("cannot revoke")?;
            if as_json {
                return json(&r);
            }
            print_revoked(&r);
        }
        CertCmd::List {
            user,
            valid,
            limit,
            json: as_json,
        } => {
            let certs = c
                .list_certs(&CertQuery {
                    limit: Some(limit),
                    user,
                    valid,
                })
                .context("cannot list certificates")?;
            if as_json {
                return json(&certs);
            }
            if certs.is_empty() {
                println!("no certificates");
            }
            certs.iter().for_each(print_cert);
        }
    }
    Ok(())
}

fn decisions(c: &Client, limit: u32, user: Option<UserName>, as_json: bool) -> anyhow::Result<()> {
    let ds = c
        .decisions(&DecisionQuery {
            limit: Some(limit),
            user,
        })
        .context("cannot list decisions")?;
    if as_json {
        return json(&ds);
    }
    for d in &ds {
        say(format!(
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
        ));
    }
    Ok(())
}
