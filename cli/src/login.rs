//! `smith login` and `smith logout`: sign in with the OpenID Provider the CA names
//! (`GET /v1/auth/config`), keep the ID token in the kernel keyring for this profile and
//! CA (or, with `--cert`, only in memory for one certificate), and forget it.
//!
//! Must never: print the token, keep it in a file, or sign in against a provider other
//! than the one the pinned CA names.

use crate::cert::{self, CertArgs};
use crate::config::{Credential, Effective};
use crate::keyring::{self, Stored};
use crate::oidc::{self, Provider, SignIn};
use anyhow::{anyhow, Context};
use smith_api::{AuthConfig, ErrorCode};
use std::time::{Duration, UNIX_EPOCH};

pub struct LoginArgs {
    pub device: bool,
    pub no_browser: bool,
    pub timeout: Duration,
    pub json: bool,
    /// `--cert`: get a certificate right away, keeping the token in memory only.
    pub cert: Option<CertArgs>,
}

#[derive(serde::Serialize)]
struct Summary<'a> {
    user: Option<&'a str>,
    name: Option<&'a str>,
    groups: &'a [String],
    issuer: &'a str,
    profile: &'a str,
    expires_at: u64,
    kept_in_keyring: bool,
}

fn auth_config(cfg: &Effective) -> anyhow::Result<AuthConfig> {
    let client = cfg.client_with(None)?;
    client.auth_config().map_err(|e| match e.code() {
        Some(ErrorCode::OidcNotConfigured) => anyhow!(
            "this CA has no OpenID Provider configured, so there is nothing to sign in to; use \
             a token from your admin (--token or SMITH_TOKEN)"
        ),
        _ => anyhow::Error::from(e),
    })
}

fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

fn open_browser(url: &str) -> bool {
    match std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
            true
        }
        Err(_) => false,
    }
}

fn until(t: u64) -> String {
    let left = t.saturating_sub(oidc::now());
    format!(
        "{} (in {})",
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)),
        humantime::format_duration(Duration::from_secs(left))
    )
}

pub fn run(cfg: &Effective, args: LoginArgs) -> anyhow::Result<()> {
    let ca_url = cfg.ca_url()?;
    let ac = auth_config(cfg)?;
    let provider = Provider::discover(&ac.issuer, &ac.client_id, ac.scopes.clone())?;
    let sign_in: SignIn = if args.device {
        provider.device_flow(&|uri, code, complete| {
            eprintln!("To sign in, open {uri} and enter the code {code}");
            if let Some(c) = complete {
                eprintln!("  (or open {c})");
            }
            eprintln!("Waiting for approval...");
        })?
    } else {
        let browser = !args.no_browser && has_display();
        let timeout = args.timeout;
        provider.code_flow(timeout, &|url| {
            let opened = browser && open_browser(url);
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
    let groups_claim = ac.groups_claim.as_deref().unwrap_or("groups");
    let user = sign_in.claims.string(user_claim);
    let groups = sign_in.claims.groups(groups_claim);
    let expires_at = sign_in.claims.exp;
    let keep = args.cert.is_none();
    if keep {
        keyring::store(
            cfg.profile(),
            &ca_url,
            &Stored {
                id_token: sign_in.id_token.clone(),
                nonce: sign_in.nonce.clone(),
                issuer: ac.issuer.clone(),
                expires_at,
                user: user.clone(),
                groups: groups.clone(),
            },
            oidc::now(),
        )
        .context("signed in, but the token could not be kept; `smith login --cert` gets a certificate without keeping it")?;
    }
    if args.json && keep {
        println!(
            "{}",
            serde_json::to_string_pretty(&Summary {
                user: user.as_deref(),
                name: sign_in.claims.name.as_deref(),
                groups: &groups,
                issuer: &ac.issuer,
                profile: cfg.profile(),
                expires_at,
                kept_in_keyring: keep,
            })?
        );
    } else {
        // With --cert, the certificate is the output: the sign-in goes to stderr.
        let out = |line: String| {
            if keep {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
        };
        let who = match (&user, &sign_in.claims.name) {
            (Some(u), Some(n)) => format!("{u} ({n})"),
            (Some(u), None) => u.clone(),
            (None, _) => format!("subject {} (no '{user_claim}' claim!)", sign_in.claims.sub),
        };
        out(format!("Signed in as {who} at {}", ac.issuer));
        out(format!(
            "  groups:      {}",
            if groups.is_empty() {
                "(none in the token)".to_string()
            } else {
                groups.join(", ")
            }
        ));
        out(format!("  valid until: {}", until(expires_at)));
        if keep {
            out(format!(
                "  kept in:     your kernel keyring (profile '{}'); `smith logout` forgets it",
                cfg.profile()
            ));
            out("Next: smith cert --scope k=v --ttl 1h".to_string());
        }
    }
    if let Some(cert_args) = args.cert {
        let cred = Credential::IdToken {
            token: sign_in.id_token,
            nonce: sign_in.nonce,
        };
        return cert::run(cfg, cert_args, &cred);
    }
    Ok(())
}

pub fn logout(cfg: &Effective) -> anyhow::Result<()> {
    let url = cfg.ca_url()?;
    if keyring::remove(cfg.profile(), &url)? {
        println!(
            "Signed out: forgot the sign-in of profile '{}' for {url}.",
            cfg.profile()
        );
    } else {
        println!(
            "Not signed in (profile '{}', {url}): nothing to forget.",
            cfg.profile()
        );
    }
    Ok(())
}

/// A line for `smith config show`: the profile's sign-in, if any.
pub fn status(cfg: &Effective) -> String {
    let Ok(url) = cfg.ca_url() else {
        return "-".into();
    };
    match keyring::load(cfg.profile(), &url) {
        Ok(Some(s)) => format!(
            "{} until {}",
            s.user.as_deref().unwrap_or("(unknown user)"),
            until(s.expires_at)
        ),
        Ok(None) => "not signed in".into(),
        Err(e) => format!("keyring unavailable: {e}"),
    }
}
