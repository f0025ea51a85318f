//! The OpenID Connect client side of `smith login`: discovery, the authorization code
//! flow with PKCE (S256) and a loopback redirect (RFC 8252), and the device flow
//! (RFC 8628), ending with an ID token.
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
}

/// What a sign-in yields.
#[derive(Debug, Clone)]
pub struct SignIn {
    pub id_token: String,
    /// The nonce sent in the authorization request (the CA compares it with the token's).
    pub nonce: Option<String>,
    pub claims: Claims,
}

/// The claims `smith` shows (read without verification: the CA verifies).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub exp: u64,
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
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("smith/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

pub struct Provider {
    pub http: reqwest::blocking::Client,
    pub disco: Discovery,
    pub client_id: String,
    pub scopes: Vec<String>,
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
        Ok(Provider {
            http,
            disco,
            client_id: client_id.to_string(),
            scopes,
        })
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
