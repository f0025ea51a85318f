//! The OpenID Connect client side of `smith login`: discovery, the authorization code
//! flow with PKCE (S256) and a loopback redirect (RFC 8252), and the device flow
//! (RFC 8628), ending with an ID token and, when the provider issues one, a refresh
//! token; and the renewal of an ID token with that refresh token ([`refresh`], OIDC Core
//! 12), bounded to a few seconds.
//!
//! The authorization request carries `max_age` when the CA has a maximum sign-in age, so
//! that a provider whose own session is older signs the person in again (and, per OIDC
//! Core 3.1.2.1, puts `auth_time` in the ID token, which the CA checks), and
//! `prompt=consent` when the scopes ask for `offline_access` (OIDC Core 11).
//!
//! The CA verifies the ID token (signature, issuer, audience, expiry, nonce); this module
//! only checks what the client itself must: the `state` of the redirect, the `iss`
//! parameter when the provider sends it (RFC 9207), and that the token carries the nonce
//! it asked for.
//!
//! Must never: accept a redirect with a wrong `state`, listen anywhere but 127.0.0.1,
//! print or log a token, or talk plain HTTP to a provider the CA did not name (the issuer
//! comes from the pinned CA).

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `n` random bytes, base64url.
pub fn random(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b64(&b)
}

/// PKCE S256 challenge of a verifier.
pub fn challenge(verifier: &str) -> String {
    b64(&Sha256::digest(verifier.as_bytes()))
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    /// RFC 7009 token revocation (`smith logout` revokes the refresh token there).
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
}

/// What a sign-in yields.
#[derive(Clone)]
pub struct SignIn {
    pub id_token: String,
    /// The nonce sent in the authorization request (the CA compares it with the token's).
    pub nonce: Option<String>,
    pub claims: Claims,
    /// The refresh token, when the provider issued one (commonly only for the
    /// `offline_access` scope).
    pub refresh_token: Option<String>,
    /// `refresh_expires_in` when the provider says how long the refresh token lives
    /// (Keycloak does; the standard has no such field).
    pub refresh_expires_in: Option<u64>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("id_token", &"(hidden)")
            .field("claims", &self.claims)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "(hidden)"),
            )
            .finish_non_exhaustive()
    }
}

/// The claims `smith` shows (read without verification: the CA verifies).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    /// When the person authenticated at the provider (kept by renewals).
    #[serde(default)]
    pub auth_time: Option<u64>,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl Claims {
    pub fn string(&self, claim: &str) -> Option<String> {
        self.other
            .get(claim)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }
    /// The `aud` claim's values (a string or an array).
    pub fn audiences(&self) -> Vec<String> {
        match self.other.get("aud") {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str())
                .map(str::to_string)
                .collect(),
            _ => vec![],
        }
    }
    pub fn groups(&self, claim: &str) -> Vec<String> {
        match self.other.get(claim) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str())
                .map(str::to_string)
                .collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => vec![],
        }
    }
}

/// Reads an ID token's claims without verifying it (for display and expiry only).
pub fn peek(id_token: &str) -> anyhow::Result<Claims> {
    let part = id_token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow!("the provider's ID token is not a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .context("the ID token's claims are not base64url")?;
    serde_json::from_slice(&bytes).context("the ID token's claims are not JSON")
}

/// Whether a URL points at this machine.
pub fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// An HTTP client for the provider: system roots (plus `SMITH_OIDC_CA_FILE` if set).
pub fn http_client() -> anyhow::Result<reqwest::blocking::Client> {
    http_client_with(HTTP_TIMEOUT)
}

/// [`http_client`] whose requests give up after `timeout` (connecting: at most 3 s).
pub fn http_client_with(timeout: Duration) -> anyhow::Result<reqwest::blocking::Client> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(path) = std::env::var_os("SMITH_OIDC_CA_FILE").filter(|p| !p.is_empty()) {
        let pem = std::fs::read(&path).with_context(|| {
            format!("cannot read SMITH_OIDC_CA_FILE {}", path.to_string_lossy())
        })?;
        for c in smith_api::tls::certs_from_pem(&pem).map_err(anyhow::Error::msg)? {
            roots.add(c)?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(smith_api::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .user_agent(concat!("smith/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

pub struct Provider {
    pub http: reqwest::blocking::Client,
    pub disco: Discovery,
    pub client_id: String,
    pub scopes: Vec<String>,
    /// `max_age` for the authorization request (seconds), from the CA's maximum sign-in
    /// age.
    pub max_age: Option<u64>,
}

fn check_scheme(what: &str, s: &str, issuer_is_http: bool) -> anyhow::Result<url::Url> {
    let u = url::Url::parse(s).with_context(|| format!("{what} '{s}' is not a URL"))?;
    match u.scheme() {
        "https" => Ok(u),
        "http" if issuer_is_http => Ok(u),
        _ => bail!("{what} '{s}' is not HTTPS"),
    }
}

impl Provider {
    /// Discovers the provider the CA names.
    pub fn discover(
        issuer: &str,
        client_id: &str,
        scopes: Vec<String>,
    ) -> anyhow::Result<Provider> {
        let iu = url::Url::parse(issuer)
            .with_context(|| format!("the CA's issuer '{issuer}' is not a URL"))?;
        let plain = iu.scheme() == "http";
        if plain && !is_loopback(&iu) {
            eprintln!(
                "warning: the OpenID Provider {issuer} is plain HTTP (the CA allows it for tests); \
                 never sign in like this outside a test lab"
            );
        }
        check_scheme("the issuer", issuer, plain)?;
        let http = http_client()?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let resp = http.get(&url).send().map_err(|e| {
            anyhow!(
                "cannot reach the OpenID Provider at {url}: {}",
                smith_api::client::error_chain(&e)
            )
        })?;
        if !resp.status().is_success() {
            bail!("the OpenID Provider answered {} for {url}", resp.status());
        }
        let disco: Discovery = resp
            .json()
            .with_context(|| format!("{url} is not an OpenID discovery document"))?;
        if disco.issuer != issuer {
            bail!(
                "the discovery document at {url} names issuer '{}', but the CA trusts '{issuer}'",
                disco.issuer
            );
        }
        check_scheme(
            "authorization_endpoint",
            &disco.authorization_endpoint,
            plain,
        )?;
        check_scheme("token_endpoint", &disco.token_endpoint, plain)?;
        if let Some(d) = &disco.device_authorization_endpoint {
            check_scheme("device_authorization_endpoint", d, plain)?;
        }
        if let Some(d) = &disco.revocation_endpoint {
            check_scheme("revocation_endpoint", d, plain)?;
        }
        Ok(Provider {
            http,
            disco,
            client_id: client_id.to_string(),
            scopes,
            max_age: None,
        })
    }

    /// Asks the provider for a sign-in no older than `secs` (`max_age`).
    pub fn with_max_age(mut self, secs: Option<u64>) -> Provider {
        self.max_age = secs;
        self
    }

    fn token_request(
        &self,
        form: &[(&str, &str)],
    ) -> anyhow::Result<Result<serde_json::Value, (String, String)>> {
        let resp = self
            .http
            .post(&self.disco.token_endpoint)
            .form(form)
            .send()
            .map_err(|e| {
                anyhow!(
                    "cannot reach the token endpoint {}: {}",
                    self.disco.token_endpoint,
                    smith_api::client::error_chain(&e)
                )
            })?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().unwrap_or(serde_json::Value::Null);
        if status.is_success() {
            return Ok(Ok(body));
        }
        let err = body["error"].as_str().unwrap_or("http_error").to_string();
        let desc = body["error_description"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}"));
        Ok(Err((err, desc)))
    }

    fn finish(&self, body: serde_json::Value, nonce: Option<String>) -> anyhow::Result<SignIn> {
        let id_token = body["id_token"]
            .as_str()
            .ok_or_else(|| {
                anyhow!("the provider returned no ID token (is 'openid' among the scopes?)")
            })?
            .to_string();
        let claims = peek(&id_token)?;
        if let Some(n) = &nonce {
            if claims.nonce.as_deref() != Some(n.as_str()) {
                bail!(
                    "the provider's ID token does not carry the nonce of this sign-in; try again"
                );
            }
        }
        // Device flow: no nonce was sent; if the provider set one anyway, keep it so the
        // CA's nonce rule (token and request agree) holds.
        let nonce = nonce.or_else(|| claims.nonce.clone());
        Ok(SignIn {
            id_token,
            nonce,
            claims,
            refresh_token: body["refresh_token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            refresh_expires_in: body["refresh_expires_in"].as_u64().filter(|s| *s > 0),
        })
    }

    /// The authorization code flow with PKCE and a loopback redirect. `show` receives the
    /// URL to visit (and decides whether to open a browser).
    pub fn code_flow(&self, timeout: Duration, show: &dyn Fn(&str)) -> anyhow::Result<SignIn> {
        let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1")?;
        let port = listener.local_addr()?.port();
        let redirect = format!("http://127.0.0.1:{port}/callback");
        let state = random(16);
        let nonce = random(16);
        let verifier = random(32);
        let mut url = url::Url::parse(&self.disco.authorization_endpoint)?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &redirect)
            .append_pair("scope", &self.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        if let Some(m) = self.max_age {
            url.query_pairs_mut().append_pair("max_age", &m.to_string());
        }
        // OIDC Core 11: a request for offline access (a refresh token) must ask for
        // consent; providers that grant it by policy show the page or skip it.
        if self.scopes.iter().any(|s| s == "offline_access") {
            url.query_pairs_mut().append_pair("prompt", "consent");
        }
        show(url.as_str());
        let code = wait_for_code(&listener, &state, &self.disco.issuer, timeout)?;
        let body = self
            .token_request(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect),
                ("client_id", &self.client_id),
                ("code_verifier", &verifier),
            ])?
            .map_err(|(e, d)| anyhow!("the provider refused the code exchange ({e}): {d}"))?;
        self.finish(body, Some(nonce))
    }

    /// The device flow: `show(verification_uri, user_code, verification_uri_complete)`,
    /// then poll until the user approved, honouring `interval` and `slow_down`.
    pub fn device_flow(&self, show: &dyn Fn(&str, &str, Option<&str>)) -> anyhow::Result<SignIn> {
        let endpoint = self.disco.device_authorization_endpoint.as_deref().ok_or_else(|| {
            anyhow!("this OpenID Provider does not offer the device flow; run `smith login` without --device")
        })?;
        let resp = self
            .http
            .post(endpoint)
            .form(&[
                ("client_id", self.client_id.as_str()),
                ("scope", &self.scopes.join(" ")),
            ])
            .send()
            .map_err(|e| {
                anyhow!(
                    "cannot reach {endpoint}: {}",
                    smith_api::client::error_chain(&e)
                )
            })?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            bail!(
                "the provider refused the device authorization ({}): {}",
                body["error"].as_str().unwrap_or("error"),
                body["error_description"]
                    .as_str()
                    .unwrap_or("no description")
            );
        }
        let device_code = body["device_code"]
            .as_str()
            .ok_or_else(|| anyhow!("no device_code in the provider's answer"))?;
        let user_code = body["user_code"]
            .as_str()
            .ok_or_else(|| anyhow!("no user_code in the provider's answer"))?;
        let uri = body["verification_uri"]
            .as_str()
            .or_else(|| body["verification_url"].as_str())
            .ok_or_else(|| anyhow!("no verification_uri in the provider's answer"))?;
        show(uri, user_code, body["verification_uri_complete"].as_str());
        let mut interval = body["interval"].as_u64().unwrap_or(5).clamp(1, 60);
        let expires = body["expires_in"].as_u64().unwrap_or(600).clamp(10, 3600);
        let deadline = Instant::now() + Duration::from_secs(expires);
        loop {
            std::thread::sleep(Duration::from_secs(interval));
            if Instant::now() > deadline {
                bail!("the code {user_code} expired before it was approved; run `smith login --device` again");
            }
            match self.token_request(&[
                ("grant_type", DEVICE_GRANT),
                ("device_code", device_code),
                ("client_id", &self.client_id),
            ])? {
                Ok(body) => return self.finish(body, None),
                Err((e, _)) if e == "authorization_pending" => {}
                Err((e, _)) if e == "slow_down" => interval += 5,
                Err((e, _)) if e == "expired_token" => {
                    bail!("the code {user_code} expired before it was approved; run `smith login --device` again")
                }
                Err((e, _)) if e == "access_denied" => {
                    bail!("the sign-in was denied at the provider")
                }
                Err((e, d)) => bail!("the provider refused the sign-in ({e}): {d}"),
            }
        }
    }
}

/// Why a renewal with a refresh token failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The provider refused the refresh token (`invalid_grant`: revoked, expired, already
    /// used, or the person disabled at the provider): the sign-in is over.
    #[error("the identity provider refused to renew your sign-in ({error}: {description})")]
    Refused { error: String, description: String },
    /// No answer in time, or not an answer from a token endpoint.
    #[error("cannot renew your sign-in at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// An answer that is not a renewal of this sign-in.
    #[error("the identity provider's renewed ID token {0}")]
    Invalid(String),
}

/// What the token endpoint gave for a refresh token.
#[derive(Clone)]
pub struct Refreshed {
    pub id_token: String,
    pub claims: Claims,
    /// A new refresh token (rotation), or none: the old one stays valid.
    pub refresh_token: Option<String>,
}

/// What a renewed ID token must match (OIDC Core 12.2: same issuer, subject and client).
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub subject: &'a str,
    pub now: u64,
}

/// Checks a renewed ID token's claims against the sign-in it renews. Its signature is the
/// CA's to verify (as for the first one); a nonce does not apply to renewals.
pub fn check_renewed(c: &Claims, e: &Expect) -> Result<(), RefreshError> {
    let iss = c.string("iss").unwrap_or_default();
    if iss != e.issuer {
        return Err(RefreshError::Invalid(format!(
            "comes from issuer '{}', not '{}'",
            iss.escape_debug(),
            e.issuer
        )));
    }
    if !c.audiences().iter().any(|a| a == e.client_id) {
        return Err(RefreshError::Invalid(format!(
            "is not meant for the client '{}'",
            e.client_id
        )));
    }
    if let Some(azp) = c.string("azp").filter(|a| a != e.client_id) {
        return Err(RefreshError::Invalid(format!(
            "was issued to the client '{}' (azp)",
            azp.escape_debug()
        )));
    }
    if c.sub != e.subject {
        return Err(RefreshError::Invalid(format!(
            "names another person (sub '{}', signed in as '{}')",
            c.sub.escape_debug(),
            e.subject
        )));
    }
    if c.exp <= e.now {
        return Err(RefreshError::Invalid(
            "is already expired; check this machine's clock".into(),
        ));
    }
    Ok(())
}

/// Trades `refresh_token` at `token_endpoint` for a new ID token (one request with
/// `http`'s bounded timeout), checked with [`check_renewed`].
pub fn refresh(
    http: &reqwest::blocking::Client,
    token_endpoint: &str,
    refresh_token: &str,
    expect: &Expect,
) -> Result<Refreshed, RefreshError> {
    let unreachable = |reason: String| RefreshError::Unreachable {
        endpoint: token_endpoint.to_string(),
        reason,
    };
    let resp = http
        .post(token_endpoint)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", expect.client_id),
        ])
        .send()
        .map_err(|e| unreachable(smith_api::client::error_chain(&e)))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        return match body["error"].as_str() {
            // RFC 6749 5.2: the grant is no good any more (or this client is not allowed it).
            Some(e @ ("invalid_grant" | "unauthorized_client" | "invalid_client")) => {
                Err(RefreshError::Refused {
                    error: e.to_string(),
                    description: body["error_description"]
                        .as_str()
                        .unwrap_or("no description")
                        .chars()
                        .take(200)
                        .collect(),
                })
            }
            _ => Err(unreachable(format!("HTTP {status}"))),
        };
    }
    let id_token = body["id_token"]
        .as_str()
        .ok_or_else(|| RefreshError::Invalid("is missing (no id_token in the answer)".into()))?
        .to_string();
    let claims = peek(&id_token).map_err(|e| RefreshError::Invalid(format!("{e:#}")))?;
    check_renewed(&claims, expect)?;
    Ok(Refreshed {
        id_token,
        claims,
        refresh_token: body["refresh_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string),
    })
}

/// Revokes `token` (a refresh token) at the provider's RFC 7009 endpoint; best effort.
pub fn revoke(
    http: &reqwest::blocking::Client,
    endpoint: &str,
    client_id: &str,
    token: &str,
) -> anyhow::Result<()> {
    let resp = http
        .post(endpoint)
        .form(&[
            ("token", token),
            ("token_type_hint", "refresh_token"),
            ("client_id", client_id),
        ])
        .send()
        .map_err(|e| anyhow!("{}", smith_api::client::error_chain(&e)))?;
    if !resp.status().is_success() {
        bail!("the provider answered {}", resp.status());
    }
    Ok(())
}

const PAGE_OK: &str = "<!doctype html><meta charset=utf-8><title>Smith</title>\
<h1>Signed in</h1><p>You can close this window and go back to your terminal.</p>";

fn respond(mut s: &TcpStream, status: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}

fn html_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            c if c.is_control() => " ".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Reads one HTTP request's target (`/callback?...`).
fn read_target(mut s: &TcpStream) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?;
    let target = parts.next()?;
    (method == "GET").then(|| target.to_string())
}

/// Serves the loopback redirect until the provider sends the browser back with a code
/// (or an error), checking `state` and, when present, `iss`.
fn wait_for_code(
    listener: &TcpListener,
    state: &str,
    issuer: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    bail!(
                        "no sign-in within {}; run `smith login` again (or --device on a machine \
                         without a browser)",
                        humantime::format_duration(timeout)
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => return Err(e).context("the loopback listener failed"),
        };
        stream.set_nonblocking(false)?;
        let Some(target) = read_target(&stream) else {
            respond(&stream, "400 Bad Request", "bad request");
            continue;
        };
        let Ok(u) = url::Url::parse(&format!("http://127.0.0.1{target}")) else {
            respond(&stream, "400 Bad Request", "bad request");
            continue;
        };
        if u.path() != "/callback" {
            respond(&stream, "404 Not Found", "not found");
            continue;
        }
        let q: std::collections::HashMap<String, String> = u.query_pairs().into_owned().collect();
        if q.get("state").map(String::as_str) != Some(state) {
            respond(&stream, "400 Bad Request", "<h1>Sign-in refused</h1><p>The answer does not belong to this sign-in (state mismatch).</p>");
            bail!("the redirect's state does not match this sign-in (a stale or forged redirect); run `smith login` again");
        }
        if let Some(e) = q.get("error") {
            let d = q.get("error_description").cloned().unwrap_or_default();
            respond(
                &stream,
                "200 OK",
                &format!(
                    "<h1>Sign-in failed</h1><p>{}: {}</p>",
                    html_escape(e),
                    html_escape(&d)
                ),
            );
            bail!("the provider refused the sign-in ({e}): {d}");
        }
        if let Some(iss) = q.get("iss") {
            if iss != issuer {
                respond(
                    &stream,
                    "400 Bad Request",
                    "<h1>Sign-in refused</h1><p>Unexpected issuer.</p>",
                );
                bail!("the redirect comes from issuer '{iss}', not '{issuer}' (mix-up attack?); run `smith login` again");
            }
        }
        let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
            respond(&stream, "400 Bad Request", "no code");
            bail!("the provider's redirect carries no authorization code");
        };
        respond(&stream, "200 OK", PAGE_OK);
        return Ok(code.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(random(32).len(), 43);
    }

    #[test]
    fn the_loopback_listener_checks_state_and_issuer() {
        let run = |query: &str| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let q = query.to_string();
            let t = std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                write!(s, "GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                write!(s, "GET /callback?{q} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out
            });
            let r = wait_for_code(&l, "S1", "https://idp", Duration::from_secs(5));
            (r, t.join().unwrap())
        };
        let (r, page) = run("code=C1&state=S1&iss=https%3A%2F%2Fidp");
        assert_eq!(r.unwrap(), "C1");
        assert!(
            page.starts_with("HTTP/1.1 200") && page.contains("Signed in"),
            "{page}"
        );
        assert!(run("code=C1&state=S2")
            .0
            .unwrap_err()
            .to_string()
            .contains("state"));
        assert!(run("code=C1&state=S1&iss=https%3A%2F%2Fevil")
            .0
            .unwrap_err()
            .to_string()
            .contains("issuer"));
        assert!(run("error=access_denied&state=S1")
            .0
            .unwrap_err()
            .to_string()
            .contains("access_denied"));
    }

    #[test]
    fn a_renewed_token_must_be_of_the_same_person_issuer_and_client() {
        let claims = |v: serde_json::Value| -> Claims { serde_json::from_value(v).unwrap() };
        let good = serde_json::json!({"iss": "https://idp", "aud": ["smith"], "sub": "alice-1",
                                      "exp": 200, "iat": 100, "auth_time": 50});
        let e = Expect {
            issuer: "https://idp",
            client_id: "smith",
            subject: "alice-1",
            now: 150,
        };
        assert!(check_renewed(&claims(good.clone()), &e).is_ok());
        assert_eq!(claims(good.clone()).auth_time, Some(50));
        for (k, v, why) in [
            ("sub", serde_json::json!("oscar-2"), "another person"),
            ("iss", serde_json::json!("https://evil"), "issuer"),
            ("aud", serde_json::json!("other"), "client"),
            ("azp", serde_json::json!("other"), "azp"),
            ("exp", serde_json::json!(140), "expired"),
        ] {
            let mut c = good.clone();
            c[k] = v;
            let err = check_renewed(&claims(c), &e).unwrap_err().to_string();
            assert!(err.contains(why), "{k}: {err}");
        }
    }

    #[test]
    fn peek_reads_claims() {
        let payload = b64(
            br#"{"sub":"s","exp":5,"nonce":"n","preferred_username":"alice","groups":["dev"]}"#,
        );
        let c = peek(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.exp, c.nonce.as_deref()),
            ("s", 5, Some("n"))
        );
        assert_eq!(c.string("preferred_username").as_deref(), Some("alice"));
        assert_eq!(c.groups("groups"), vec!["dev"]);
        assert!(peek("nope").is_err());
    }
}
