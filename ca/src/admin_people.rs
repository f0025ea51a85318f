//! `smith-ca admin login|logout|token|changes` and the identity parts of `user` and
//! `group` (enable, bind, unbind, map, unmap, mappings): the admin's side of people and
//! credentials, over the HTTPS admin API.
//!
//! `login` signs in through the CA's OpenID Provider with the same flow as `smith login`
//! (`smith_login::oidc`), trades the ID token for a named admin token
//! (`POST /v1/admin/login`) and keeps it in the kernel keyring until it expires, where
//! every later `smith-ca admin` command finds it.
//!
//! Must never: print a token other than one just minted, keep a token in a file, or show
//! recorded text without escaping control characters.

use anyhow::{anyhow, Context};
use clap::Subcommand;
use smith_api::{
    AdminLoginRequest, AdminTokenRequest, AuthConfig, BindRequest, ChangeInfo, ChangeQuery, Client,
    ErrorCode, GroupMapping, MappingRequest, TokenInfo, TokenResponse, TokenRotateRequest,
    UserInfo,
};
use smith_login::{keyring, oidc};
use smith_proto::{GroupName, UserName};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn parse_ttl(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration like 12h or 30d: {e}"))?;
    Ok(d.as_secs())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn time(t: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string()
}

/// Recorded text for a terminal: control characters escaped.
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Every token the CA knows (live, and dead for less than 30 days): id, kind, who
    /// it is for, who minted it, expiry, state. Never the tokens themselves.
    List {
        /// Also expired, revoked and used ones.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Mint a named admin token for automation (shown once). Its changes are recorded
    /// under NAME. The bootstrap token stops working as soon as one exists.
    Create {
        /// Who the token acts as, e.g. ci-deploy.
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = parse_ttl, default_value = "30d")]
        ttl: u64,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (see `token list`): refused from now on.
    Revoke { id: String },
    /// Replace a token by a new one of the same kind and subject (shown once); the old
    /// one is revoked in the same change.
    Rotate {
        id: String,
        /// The new token's lifetime (default: the old one's).
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u64>,
        #[arg(long)]
        json: bool,
    },
}

/// What `login` keeps in the kernel keyring.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct AdminSession {
    pub token: String,
    pub expires_at: u64,
    pub name: Option<String>,
}

/// The named admin token `smith-ca admin login` kept for `ca_url`, if any.
pub fn session_token(ca_url: &str) -> Option<String> {
    let data = keyring::load_entry(&keyring::admin_description(ca_url))
        .ok()
        .flatten()?;
    let s: AdminSession = serde_json::from_slice(&data).ok()?;
    (s.expires_at > now()).then_some(s.token)
}

pub struct LoginArgs {
    pub device: bool,
    pub no_browser: bool,
    pub timeout: Duration,
}

/// `smith-ca admin login`.
pub fn login(c: &Client, ca_url: &str, args: LoginArgs) -> anyhow::Result<()> {
    let ac: AuthConfig = c.auth_config().map_err(|e| match e.code() {
        Some(ErrorCode::OidcNotConfigured) => anyhow!(
            "this CA has no OpenID Provider configured, so admins cannot sign in through it; \
             use a named admin token (`smith-ca admin token create --name NAME`)"
        ),
        _ => anyhow::Error::from(e),
    })?;
    // `max_age`: an IdP session older than the CA accepts signs the admin in again.
    let provider = oidc::Provider::discover(&ac.issuer, &ac.client_id, ac.scopes.clone())?
        .with_max_age(ac.max_sign_in_age_secs);
    let sign_in = if args.device {
        provider.device_flow(&|uri, code, complete| {
            eprintln!("To sign in, open {uri} and enter the code {code}");
            if let Some(c) = complete {
                eprintln!("  (or open {c})");
            }
            eprintln!("Waiting for approval...");
        })?
    } else {
        let timeout = args.timeout;
        let browser = !args.no_browser
            && ["DISPLAY", "WAYLAND_DISPLAY"]
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
        provider.code_flow(timeout, &|url| {
            let opened = browser
                && std::process::Command::new("xdg-open")
                    .arg(url)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .is_ok();
            if opened {
                eprintln!("Opening your browser to sign in. If it does not open, visit:");
            } else {
                eprintln!(
                    "Open this URL in a browser to sign in (waiting up to {}):",
                    humantime::format_duration(timeout)
                );
            }
            eprintln!();
            eprintln!("  {url}");
            eprintln!();
        })?
    };
    let user_claim = ac.username_claim.as_deref().unwrap_or("preferred_username");
    let name = sign_in.claims.string(user_claim);
    let t: TokenResponse = c
        .admin_login(&AdminLoginRequest {
            id_token: sign_in.id_token,
            nonce: sign_in.nonce,
        })
        .context("the CA refused the admin sign-in")?;
    let session = AdminSession {
        token: t.token,
        expires_at: t.expires_at,
        name: name.clone(),
    };
    keyring::store_entry(
        &keyring::admin_description(ca_url),
        &serde_json::to_vec(&session)?,
        t.expires_at.saturating_sub(now()),
    )
    .context("signed in, but the admin token could not be kept in the kernel keyring")?;
    println!(
        "Signed in as admin {} at {}",
        clean(name.as_deref().unwrap_or("?")),
        ac.issuer
    );
    println!("  valid until: {}", time(t.expires_at));
    println!(
        "  kept in:     your kernel keyring; `smith-ca admin` commands use it, `smith-ca admin logout` forgets it"
    );
    Ok(())
}

/// `smith-ca admin logout`.
pub fn logout(ca_url: &str) -> anyhow::Result<()> {
    if keyring::remove_entry(&keyring::admin_description(ca_url))? {
        println!("Signed out: forgot the admin session for {ca_url}.");
    } else {
        println!("No admin session for {ca_url}: nothing to forget.");
    }
    Ok(())
}

fn print_token_info(t: &TokenInfo) {
    let mut extra = String::new();
    if let Some(tags) = &t.tags {
        extra.push_str(&format!("  tags {}", clean(tags)));
    }
    println!(
        "{:<16} {:<9} {:<20} {:<8} expires {}  by {}{}",
        t.id,
        t.kind,
        clean(&t.subject),
        t.state.to_uppercase(),
        time(t.expires_at),
        clean(&t.created_by),
        extra
    );
}

fn print_minted(t: &TokenResponse, as_json: bool, what: &str) -> anyhow::Result<()> {
    if as_json {
        return json(t);
    }
    println!("{}", t.token);
    eprintln!(
        "{what}, id {}, valid until {} (shown once; keep it secret: pass it in SMITH_TOKEN or a file, not on a command line)",
        t.id.as_deref().unwrap_or("?"),
        time(t.expires_at)
    );
    Ok(())
}

pub fn token(c: &Client, cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::List { all, json: as_json } => {
            let mut v: Vec<TokenInfo> = c.list_tokens()?;
            if !all {
                v.retain(|t| t.state == "live");
            }
            if as_json {
                return json(&v);
            }
            if v.is_empty() {
                println!("no live tokens (`token list --all` shows the others)");
            }
            v.iter().for_each(print_token_info);
        }
        TokenCmd::Create {
            name,
            ttl,
            json: as_json,
        } => {
            let t: TokenResponse = c.mint_admin_token(&AdminTokenRequest {
                name: name.clone(),
                ttl_secs: Some(ttl),
            })?;
            print_minted(&t, as_json, &format!("named admin token for {name}"))?;
        }
        TokenCmd::Revoke { id } => {
            let t: TokenInfo = c.revoke_token(&id)?;
            print!("revoked ");
            print_token_info(&t);
        }
        TokenCmd::Rotate {
            id,
            ttl,
            json: as_json,
        } => {
            let t: TokenResponse = c.rotate_token(&id, &TokenRotateRequest { ttl_secs: ttl })?;
            print_minted(
                &t,
                as_json,
                &format!("replacement for token {id} (revoked)"),
            )?;
        }
    }
    Ok(())
}

/// `user enable NAME`.
pub fn enable(c: &Client, name: &UserName) -> anyhow::Result<UserInfo> {
    Ok(c.enable_user(name)?)
}

/// `user bind NAME --oidc-subject SUB [--oidc-issuer URL]`.
pub fn bind(
    c: &Client,
    name: &UserName,
    subject: String,
    issuer: Option<String>,
) -> anyhow::Result<UserInfo> {
    Ok(c.bind_user(name, &BindRequest { subject, issuer })?)
}

/// `user unbind NAME`.
pub fn unbind(c: &Client, name: &UserName) -> anyhow::Result<UserInfo> {
    Ok(c.unbind_user(name)?)
}

fn print_mappings(v: &[GroupMapping]) {
    if v.is_empty() {
        println!(
            "no IdP group is mapped: sign-ins put nobody in any group (`group map GROUP IDP_GROUP_ID`)"
        );
    }
    for m in v {
        println!("{:<20} <- IdP group {}", m.group, clean(&m.idp_group));
    }
}

/// `group map|unmap|mappings`.
pub fn mapping(
    c: &Client,
    group: Option<&GroupName>,
    idp_group: Option<String>,
    remove: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let v: Vec<GroupMapping> = match (group, idp_group) {
        (Some(g), Some(id)) if remove => c.unmap_group(g, &id)?,
        (Some(g), Some(id)) => c.map_group(g, &MappingRequest { idp_group: id })?,
        _ => c.group_mappings()?,
    };
    if as_json {
        return json(&v);
    }
    print_mappings(&v);
    Ok(())
}

/// `smith-ca admin changes`.
pub fn changes(
    c: &Client,
    actor: Option<String>,
    since: Option<u64>,
    limit: u32,
    as_json: bool,
) -> anyhow::Result<()> {
    let v: Vec<ChangeInfo> = c
        .changes(&ChangeQuery {
            actor,
            since,
            limit: Some(limit),
        })
        .context("cannot list changes")?;
    if as_json {
        return json(&v);
    }
    if v.is_empty() {
        println!("no changes recorded");
    }
    for ch in &v {
        println!(
            "{} #{:<6} {:<6} {:<24} {:<16} {}{}{}",
            time(ch.at),
            ch.seq,
            ch.origin,
            clean(&ch.actor),
            ch.source
                .as_deref()
                .map(clean)
                .unwrap_or_else(|| "-".into()),
            clean(&ch.what),
            ch.version
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default(),
            ch.token_id
                .as_deref()
                .map(|t| format!(" [token {}]", clean(t)))
                .unwrap_or_default()
        );
    }
    Ok(())
}
