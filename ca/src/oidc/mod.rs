//! OIDC on the CA side: configuration and ID token verification against the OpenID
//! Provider's JWKS. What a verified sign-in changes (user provisioning and group
//! memberships) is the authority's ([`crate::authority`]).
//!
//! - [`OidcArgs`] / [`OidcConfig`]: `smith-ca serve --oidc-*` flags, merged over the
//!   optional `[oidc]` section of `D/ca.toml`;
//! - [`jwks`]: discovery and the JWKS cache (bounded timeouts, refresh on an unknown
//!   `kid` at most once per `jwks_min_refresh`, the last good keys kept when the IdP is
//!   down);
//! - [`verify`]: the checks on one ID token (signature, `iss`, `aud`/`azp`, `exp`, `nbf`,
//!   `iat`, the sign-in's age from `auth_time`, claims mapping) and the `nonce` rule;
//!
//! Must never: accept a token whose signature was not verified with a key the
//! configured issuer publishes, accept a symmetric (`HS*`) or `none` algorithm, block
//! admin or user-token requests on the IdP, or log a token.

pub mod jwks;
pub mod verify;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use verify::{IdToken, Refusal, Verifier};

/// `[oidc] max_sign_in_age` when not set: a working day. An engineer signs in once in
/// the morning; renewals with the refresh token then work until this long after.
pub const DEFAULT_MAX_SIGN_IN_AGE_SECS: u64 = 12 * 3600;

/// Default scopes `smith login` asks for.
pub const DEFAULT_SCOPES: &[&str] = &["openid", "profile", "groups"];

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("'{s}' is not a duration like 30s: {e}"))
}

/// `smith-ca serve` flags for OIDC (each overrides the same key of `[oidc]` in
/// `D/ca.toml`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OidcArgs {
    /// Accept OIDC ID tokens from this OpenID Provider (its issuer URL, exactly as in the
    /// tokens' `iss`). Engineers then sign in with `smith login`. Also settable as
    /// `issuer` in the [oidc] section of DATA_DIR/ca.toml.
    #[arg(long, value_name = "URL")]
    pub oidc_issuer: Option<String>,
    /// The client id registered at the provider for `smith login` (a public native
    /// client with PKCE); ID tokens must carry it in `aud`.
    #[arg(long, value_name = "ID")]
    pub oidc_client_id: Option<String>,
    /// The claim that holds the login name (must be a valid Smith user name).
    /// [default: preferred_username]
    #[arg(long, value_name = "CLAIM")]
    pub oidc_username_claim: Option<String>,
    /// The claim that holds the user's groups (an array of names; invalid names are
    /// ignored). [default: groups]
    #[arg(long, value_name = "CLAIM")]
    pub oidc_groups_claim: Option<String>,
    /// Space-separated scopes `smith login` asks for. [default: "openid profile groups"]
    #[arg(long, value_name = "SCOPES")]
    pub oidc_scopes: Option<String>,
    /// PEM file of CA certificates to trust for the provider's HTTPS, in addition to the
    /// system roots (for an IdP behind a private CA).
    #[arg(long, value_name = "PEM")]
    pub oidc_ca_file: Option<PathBuf>,
    /// Allow a plain-HTTP issuer. FOR TESTS ONLY (a provider on loopback): over HTTP the
    /// provider's keys can be swapped by anyone on the path.
    #[arg(long)]
    pub oidc_allow_http: bool,
    /// Clock-skew leeway for exp/nbf/iat. [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub oidc_leeway: Option<Duration>,
    /// Least time between two JWKS fetches caused by tokens with an unknown `kid`.
    /// [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub oidc_jwks_min_refresh: Option<Duration>,
    /// The claim holding the IdP's id of the person as its SCIM provisioning sends it in
    /// `externalId`: an existing, unbound user is bound at their first sign-in only when
    /// this claim equals their externalId (Okta: sub; Entra ID: oid). [default: sub]
    #[arg(long, value_name = "CLAIM")]
    pub oidc_external_id_claim: Option<String>,
    /// Oldest ID token accepted (by its `iat`), whatever its `exp`: bounds the replay of
    /// a leaked token. [default: 24h]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub oidc_max_token_age: Option<Duration>,
    /// Longest a sign-in at the IdP lasts: an ID token whose `auth_time` (when the person
    /// last authenticated at the IdP; its `iat` when it has none) is older is refused,
    /// however fresh the token itself is, so renewals with a refresh token end this long
    /// after the browser sign-in and the engineer signs in again. `smith login` asks the
    /// IdP for this `max_age`. Also `max_sign_in_age` in [oidc]. [default: 12h]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub oidc_max_sign_in_age: Option<Duration>,
    /// An IdP group id (as the groups claim carries it) whose members may sign in as
    /// named admins with `smith-ca admin login` (repeatable). Entra ID: the group's
    /// Object ID.
    #[arg(long = "oidc-admin-group", value_name = "IDP_GROUP_ID")]
    pub oidc_admin_groups: Vec<String>,
}

/// The `[oidc]` section of `D/ca.toml`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub username_claim: Option<String>,
    pub groups_claim: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub ca_file: Option<PathBuf>,
    pub allow_http: Option<bool>,
    pub leeway: Option<String>,
    pub jwks_min_refresh: Option<String>,
    pub external_id_claim: Option<String>,
    pub max_token_age: Option<String>,
    pub max_sign_in_age: Option<String>,
    pub admin_groups: Option<Vec<String>>,
}

/// `D/ca.toml`: optional settings of `smith-ca serve`: `[oidc]`, `[keys]` (CA keys in a
/// PKCS#11 token), and where the database is (`database = "postgresql://..."`,
/// `database_password_file = "..."`; without them, the embedded SQLite `D/ca.db`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaFile {
    pub oidc: Option<OidcFile>,
    pub database: Option<String>,
    pub database_password_file: Option<std::path::PathBuf>,
    /// Where the CA keys live when not in the data directory's key files (PKCS#11).
    pub keys: Option<crate::authority::keys::KeysFile>,
}

/// The effective OIDC settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub username_claim: String,
    pub groups_claim: String,
    pub scopes: Vec<String>,
    /// Extra trusted roots (PEM text), read at start.
    pub extra_roots_pem: Option<String>,
    pub allow_http: bool,
    pub leeway: Duration,
    pub jwks_min_refresh: Duration,
    /// See [`OidcArgs::oidc_external_id_claim`].
    pub external_id_claim: String,
    /// See [`OidcArgs::oidc_max_token_age`].
    pub max_token_age: Duration,
    /// See [`OidcArgs::oidc_max_sign_in_age`].
    pub max_sign_in_age: Duration,
    /// See [`OidcArgs::oidc_admin_groups`].
    pub admin_groups: Vec<String>,
}

fn check_url(what: &str, s: &str, allow_http: bool) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("{what} '{s}' is not a URL: {e}"))?;
    match u.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(format!(
                "{what} '{s}' is plain HTTP; an OpenID Provider must use HTTPS \
                 (--oidc-allow-http exists for tests on loopback only)"
            ))
        }
        other => return Err(format!("{what} '{s}': unsupported scheme '{other}'")),
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{what} '{s}' has no host"));
    }
    Ok(u)
}

/// Whether `u` points at this machine (loopback).
pub fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Reads `D/ca.toml` if it exists.
pub fn read_ca_file(data_dir: &Path) -> Result<CaFile, String> {
    let path = data_dir.join("ca.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            format!(
                "{} is not a valid smith-ca settings file: {e}",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CaFile::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Merges the flags over `[oidc]`; `None` when no issuer is configured anywhere.
pub fn resolve(args: &OidcArgs, file: Option<&OidcFile>) -> Result<Option<OidcConfig>, String> {
    let f = file.cloned().unwrap_or_default();
    let issuer = match args.oidc_issuer.clone().or(f.issuer) {
        Some(i) if !i.trim().is_empty() => i.trim().to_string(),
        _ => {
            if args.oidc_client_id.is_some() {
                return Err("--oidc-client-id needs --oidc-issuer".into());
            }
            return Ok(None);
        }
    };
    let allow_http = args.oidc_allow_http || f.allow_http.unwrap_or(false);
    let url = check_url("the OIDC issuer", &issuer, allow_http)?;
    if url.scheme() == "http" && !is_loopback(&url) {
        tracing::warn!(
            %issuer,
            "plain-HTTP OIDC issuer that is not on loopback: for tests only, never in production"
        );
    }
    let client_id = args
        .oidc_client_id
        .clone()
        .or(f.client_id)
        .filter(|c| !c.trim().is_empty())
        .ok_or("an OIDC issuer needs a client id: pass --oidc-client-id (the client `smith login` uses)")?;
    let claim = |flag: &Option<String>, file: Option<String>, default: &str, what: &str| {
        let c = flag.clone().or(file).unwrap_or_else(|| default.to_string());
        if c.is_empty() || c.len() > 64 || !c.chars().all(|ch| ch.is_ascii_graphic()) {
            return Err(format!(
                "the OIDC {what} claim name '{c}' is not a claim name"
            ));
        }
        Ok(c)
    };
    let username_claim = claim(
        &args.oidc_username_claim,
        f.username_claim,
        "preferred_username",
        "username",
    )?;
    let groups_claim = claim(&args.oidc_groups_claim, f.groups_claim, "groups", "groups")?;
    let external_id_claim = claim(
        &args.oidc_external_id_claim,
        f.external_id_claim,
        "sub",
        "external id",
    )?;
    let scopes: Vec<String> = match (&args.oidc_scopes, f.scopes) {
        (Some(s), _) => s.split_whitespace().map(str::to_string).collect(),
        (None, Some(v)) => v,
        (None, None) => DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
    };
    if !scopes.iter().any(|s| s == "openid") {
        return Err("the OIDC scopes must include 'openid'".into());
    }
    let ca_file = args.oidc_ca_file.clone().or(f.ca_file);
    let extra_roots_pem = match ca_file {
        Some(p) => Some(
            std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read the OIDC CA file {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let dur =
        |flag: Option<Duration>, file: Option<String>, default: u64, what: &str| match (flag, file)
        {
            (Some(d), _) => Ok(d),
            (None, Some(s)) => parse_duration(&s).map_err(|e| format!("[oidc] {what}: {e}")),
            (None, None) => Ok(Duration::from_secs(default)),
        };
    let leeway = dur(args.oidc_leeway, f.leeway, 30, "leeway")?;
    if leeway > Duration::from_secs(300) {
        return Err("the OIDC leeway is at most 5m".into());
    }
    let jwks_min_refresh = dur(
        args.oidc_jwks_min_refresh,
        f.jwks_min_refresh,
        30,
        "jwks_min_refresh",
    )?;
    let max_token_age = dur(
        args.oidc_max_token_age,
        f.max_token_age,
        24 * 3600,
        "max_token_age",
    )?;
    if max_token_age < Duration::from_secs(5) {
        return Err("the OIDC max token age is at least 5s".into());
    }
    let max_sign_in_age = dur(
        args.oidc_max_sign_in_age,
        f.max_sign_in_age,
        DEFAULT_MAX_SIGN_IN_AGE_SECS,
        "max_sign_in_age",
    )?;
    if max_sign_in_age < Duration::from_secs(5) {
        return Err("the OIDC max sign-in age is at least 5s".into());
    }
    let admin_groups: Vec<String> = if args.oidc_admin_groups.is_empty() {
        f.admin_groups.unwrap_or_default()
    } else {
        args.oidc_admin_groups.clone()
    };
    if let Some(g) = admin_groups
        .iter()
        .find(|g| g.is_empty() || g.len() > 256 || g.chars().any(|c| c.is_control()))
    {
        return Err(format!(
            "the OIDC admin group '{}' is not a group id (1 to 256 printable characters)",
            g.escape_debug()
        ));
    }
    Ok(Some(OidcConfig {
        issuer,
        client_id: client_id.trim().to_string(),
        username_claim,
        groups_claim,
        scopes,
        extra_roots_pem,
        allow_http,
        leeway,
        jwks_min_refresh,
        external_id_claim,
        max_token_age,
        max_sign_in_age,
        admin_groups,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(issuer: &str) -> OidcArgs {
        OidcArgs {
            oidc_issuer: Some(issuer.into()),
            oidc_client_id: Some("smith".into()),
            ..Default::default()
        }
    }

    #[test]
    fn flags_override_the_file_and_defaults_apply() {
        let file = OidcFile {
            issuer: Some("https://file.example".into()),
            client_id: Some("file-client".into()),
            groups_claim: Some("roles".into()),
            scopes: Some(vec!["openid".into(), "email".into()]),
            ..Default::default()
        };
        let c = resolve(&args("https://idp.example/realms/x"), Some(&file))
            .unwrap()
            .unwrap();
        assert_eq!(c.issuer, "https://idp.example/realms/x");
        assert_eq!(c.client_id, "smith");
        assert_eq!(c.username_claim, "preferred_username");
        assert_eq!(c.groups_claim, "roles");
        assert_eq!(c.scopes, vec!["openid", "email"]);
        assert_eq!(c.leeway, Duration::from_secs(30));
        assert_eq!(c.max_sign_in_age, Duration::from_secs(12 * 3600));
        let c = resolve(&OidcArgs::default(), Some(&file)).unwrap().unwrap();
        assert_eq!(c.client_id, "file-client");
        assert!(resolve(&OidcArgs::default(), None).unwrap().is_none());
    }

    #[test]
    fn refuses_what_is_unsafe_or_incomplete() {
        let e = resolve(&args("http://127.0.0.1:9000"), None).unwrap_err();
        assert!(e.contains("plain HTTP"), "{e}");
        let mut a = args("http://127.0.0.1:9000");
        a.oidc_allow_http = true;
        assert!(resolve(&a, None).unwrap().is_some());
        let mut a = args("https://idp.example");
        a.oidc_client_id = None;
        assert!(resolve(&a, None).unwrap_err().contains("client id"));
        let mut a = args("https://idp.example");
        a.oidc_scopes = Some("profile groups".into());
        assert!(resolve(&a, None).unwrap_err().contains("openid"));
        assert!(resolve(&args("ftp://idp.example"), None).is_err());
        let t: Result<CaFile, _> = toml::from_str("[oidc]\nissuer = 'x'\nbogus = 1\n");
        assert!(t.is_err(), "unknown keys are refused");
    }
}
