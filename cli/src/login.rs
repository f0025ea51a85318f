//! `smith login` and `smith logout`: sign in with the OpenID Provider the CA names
//! (`GET /v1/auth/config`), keep the ID token and the provider's refresh token in the
//! kernel keyring for this profile and CA (or, with `--cert`, only in memory for one
//! certificate), and forget them (revoking the refresh token at the provider).
//!
//! Also the credential of a kept sign-in ([`kept_credential`]): the ID token while it is
//! fresh, else renewed with the refresh token without the browser
//! ([`smith_login::session`]); and what a CA's refusal of a sign-in means to the engineer
//! ([`sign_in_refused`]).
//!
//! Where no kernel keyring can be used (a container whose seccomp profile blocks
//! `keyctl`), `smith login` says so before opening the browser and points at
//! `smith login --cert` (the token stays in that process) or an admin's token.
//!
//! Must never: print a token, keep it in a file, or sign in against a provider other
//! than the one the pinned CA names.

use crate::cert::{self, CertArgs};
use crate::config::{Credential, Effective};
use crate::keyring::{self, Refresh, Stored};
use crate::oidc::{self, Provider, SignIn};
use anyhow::{anyhow, Context};
use smith_api::{AuthConfig, ClientError, ErrorCode};
use smith_login::session;
use std::time::{Duration, UNIX_EPOCH};

/// The maximum sign-in age assumed when the CA does not say (an older CA): its default.
const DEFAULT_MAX_SIGN_IN_AGE_SECS: u64 = 12 * 3600;

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
    /// Until when `smith cert` renews the ID token without the browser (a refresh token
    /// is kept); absent when the provider gave none.
    renewable_until: Option<u64>,
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

/// What is kept for a sign-in: the ID token, and the refresh token with what renewals
/// check, living until the sign-in is older than the CA accepts.
fn to_store(sign_in: &SignIn, provider: &Provider, ac: &AuthConfig, now: u64) -> Stored {
    let c = &sign_in.claims;
    let refresh = sign_in.refresh_token.as_ref().map(|token| {
        let signed_in_at = c.auth_time.unwrap_or(if c.iat > 0 { c.iat } else { now });
        let max_age = ac
            .max_sign_in_age_secs
            .unwrap_or(DEFAULT_MAX_SIGN_IN_AGE_SECS);
        let mut until = signed_in_at.saturating_add(max_age);
        if let Some(rt) = sign_in.refresh_expires_in {
            until = until.min(now.saturating_add(rt));
        }
        Refresh {
            token: token.clone(),
            token_endpoint: provider.disco.token_endpoint.clone(),
            revocation_endpoint: provider.disco.revocation_endpoint.clone(),
            client_id: ac.client_id.clone(),
            subject: c.sub.clone(),
            signed_in_at,
            until,
            renewals: 0,
        }
    });
    let user_claim = ac.username_claim.as_deref().unwrap_or("preferred_username");
    let groups_claim = ac.groups_claim.as_deref().unwrap_or("groups");
    Stored {
        id_token: sign_in.id_token.clone(),
        nonce: sign_in.nonce.clone(),
        issuer: ac.issuer.clone(),
        expires_at: c.exp,
        user: c.string(user_claim),
        groups: c.groups(groups_claim),
        refresh,
    }
}

pub fn run(cfg: &Effective, args: LoginArgs) -> anyhow::Result<()> {
    let ca_url = cfg.ca_url()?;
    let keep = args.cert.is_none();
    if keep {
        // Before the browser: a sign-in that cannot be kept is a wasted one.
        keyring::platform().check()?;
    }
    let ac = auth_config(cfg)?;
    let provider = Provider::discover(&ac.issuer, &ac.client_id, ac.scopes.clone())?
        .with_max_age(ac.max_sign_in_age_secs);
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
    let kept = to_store(&sign_in, &provider, &ac, oidc::now());
    let (user, groups, expires_at) = (kept.user.clone(), kept.groups.clone(), kept.expires_at);
    let renewable_until = kept.refresh.as_ref().map(|r| r.until);
    if keep {
        keyring::store(cfg.profile(), &ca_url, &kept, oidc::now())
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
                renewable_until,
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
            out(match renewable_until {
                Some(u) => format!(
                    "  renewed:     without the browser until {}: a refresh token is kept \
                     beside it",
                    until(u)
                ),
                None => "  renewed:     no (the provider gave no refresh token): sign in again \
                         when it expires"
                    .to_string(),
            });
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
    // The refresh token outlives the ID token: revoke it at the provider (best effort).
    let revoked = match keyring::load(cfg.profile(), &url).ok().flatten() {
        Some(Stored {
            refresh: Some(r), ..
        }) => r.revocation_endpoint.as_deref().map(|endpoint| {
            oidc::http_client_with(session::RENEW_TIMEOUT)
                .and_then(|http| oidc::revoke(&http, endpoint, &r.client_id, &r.token))
        }),
        _ => None,
    };
    if keyring::remove(cfg.profile(), &url)? {
        println!(
            "Signed out: forgot the sign-in of profile '{}' for {url}.",
            cfg.profile()
        );
        match revoked {
            Some(Ok(())) => println!("Revoked its refresh token at the identity provider."),
            Some(Err(e)) => eprintln!(
                "warning: could not revoke the refresh token at the identity provider ({e:#}); \
                 it is forgotten here and ends with the sign-in"
            ),
            None => {}
        }
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
        Ok(Some(s)) => {
            let user = s.user.as_deref().unwrap_or("(unknown user)");
            match &s.refresh {
                Some(r) => format!(
                    "{user}, renewed without the browser until {} ({} renewals so far)",
                    until(r.until),
                    r.renewals
                ),
                None => format!("{user} until {}", until(s.expires_at)),
            }
        }
        Ok(None) => "not signed in".into(),
        Err(e) => format!("keyring unavailable: {e}"),
    }
}

/// The credential of `profile`'s kept sign-in at `url`: its ID token, renewed without the
/// browser first when it expired and a refresh token is kept.
pub fn kept_credential(profile: &str, url: &str) -> anyhow::Result<Credential> {
    let store = keyring::platform();
    let fresh = session::fresh(store, profile, url, crate::state::dir().as_deref())
        .map_err(|e| anyhow!("{e}"))?;
    match fresh {
        Some(f) => {
            if let Some(why) = &f.not_kept {
                eprintln!(
                    "warning: your sign-in was renewed but the new tokens could not be kept \
                     ({why}); the next renewal may need `smith login`"
                );
            }
            Ok(Credential::IdToken {
                token: f.stored.id_token,
                nonce: f.stored.nonce,
            })
        }
        None => {
            if let Err(e) = store.check() {
                anyhow::bail!("not signed in: {e}");
            }
            anyhow::bail!(
                "not signed in: run `smith login` (profile '{profile}', CA {url}; a sign-in \
                 that ended is forgotten), or pass --token / set SMITH_TOKEN (your admin mints \
                 one with `smith-ca admin user token NAME`)"
            )
        }
    }
}

/// When the CA refuses a kept sign-in because it is over (older than the CA accepts, or
/// expired despite renewals), the error to show: sign in again. The kept sign-in is
/// forgotten when no renewal can help. `None`: any other answer.
pub fn sign_in_refused(
    cfg: &Effective,
    cred: &Credential,
    e: &ClientError,
) -> Option<anyhow::Error> {
    if !matches!(cred, Credential::IdToken { .. }) {
        return None;
    }
    let code = e.code()?;
    let what = match code {
        ErrorCode::OidcSignInTooOld => {
            if let Ok(url) = cfg.ca_url() {
                let _ = keyring::remove(cfg.profile(), &url);
            }
            "your sign-in at the identity provider is older than this CA accepts"
        }
        ErrorCode::OidcExpired | ErrorCode::OidcTokenTooOld => {
            "your ID token is too old for the CA (check this machine's clock)"
        }
        _ => return None,
    };
    let said = match e {
        ClientError::Status { message, .. } => message.as_str(),
        _ => "",
    };
    Some(
        cert::Denied {
            code,
            code_text: code.to_string(),
            message: format!("{what} ({code}: {said}); sign in again with `smith login`"),
        }
        .into(),
    )
}
