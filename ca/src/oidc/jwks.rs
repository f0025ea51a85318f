//! The OpenID Provider's signing keys: discovery (`ISSUER/.well-known/openid-configuration`),
//! the JWKS fetch, and a cache with a refresh policy.
//!
//! Policy: keys are fetched at start (in the background) and then on demand: when a
//! token names a `kid` the cache does not hold, or the cache is older than
//! [`MAX_AGE`]. Fetches caused by tokens are at most one per `jwks_min_refresh` (a flood of
//! tokens with made-up `kid`s cannot make the CA hammer the IdP), and only one runs at a
//! time. When the IdP is unreachable the last good keys keep being used. Every HTTP call
//! has a connect and a total timeout and a size limit.
//!
//! Must never: take keys from anywhere but the `jwks_uri` of the configured issuer's own
//! discovery document (whose `issuer` must equal the configured one), keep symmetric
//! (`oct`) or encryption keys, or hold a lock while a request waits on the network except
//! the refresh lock itself.

use super::OidcConfig;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Keys older than this are refreshed at the next use.
pub const MAX_AGE: Duration = Duration::from_secs(3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document or JWKS accepted.
const MAX_DOC: usize = 512 * 1024;
const MAX_KEYS: usize = 64;

/// One usable verification key.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Keys {
    fetched_at: Option<Instant>,
    keys: Vec<Key>,
}

#[derive(Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

/// Why no key could be found for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The provider could not be reached and no keys are cached.
    #[error("the OpenID Provider's keys are not available: {0}")]
    Unavailable(String),
    /// The keys are there, but none has this `kid` (and algorithm).
    #[error("{0}")]
    UnknownKey(String),
}

pub struct KeyCache {
    cfg: Arc<OidcConfig>,
    http: reqwest::Client,
    keys: RwLock<Arc<Keys>>,
    refresh: tokio::sync::Mutex<RefreshState>,
}

/// The rustls configuration for talking to the IdP: the system roots plus `extra` PEM.
fn tls_config(extra_pem: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        let _ = roots.add(c);
    }
    if let Some(pem) = extra_pem {
        let certs = smith_api::tls::certs_from_pem(pem.as_bytes())?;
        if certs.is_empty() {
            return Err("the OIDC CA file holds no certificate".into());
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("the OIDC CA file has an unusable certificate: {e}"))?;
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(smith_api::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

/// Parses a JWKS document: keeps the signature keys it can use, skips the rest.
pub fn parse_jwks(doc: &serde_json::Value) -> Result<Vec<Key>, String> {
    let list = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("the JWKS has no \"keys\" array")?;
    let mut out = Vec::new();
    for v in list.iter().take(MAX_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(v.clone()) else {
            continue;
        };
        if let Some(k) = usable(&jwk) {
            out.push(k);
        }
    }
    Ok(out)
}

/// The algorithm a JWK verifies, if it is a signature key of a kind Smith accepts.
fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let declared = jwk.common.key_algorithm;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match declared {
            None | Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::RS384) => Algorithm::RS384,
            Some(KeyAlgorithm::RS512) => Algorithm::RS512,
            Some(KeyAlgorithm::PS256) => Algorithm::PS256,
            Some(KeyAlgorithm::PS384) => Algorithm::PS384,
            Some(KeyAlgorithm::PS512) => Algorithm::PS512,
            _ => return None,
        },
        AlgorithmParameters::EllipticCurve(p) => match (&p.curve, declared) {
            (EllipticCurve::P256, None | Some(KeyAlgorithm::ES256)) => Algorithm::ES256,
            (EllipticCurve::P384, None | Some(KeyAlgorithm::ES384)) => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match (&p.curve, declared) {
            (EllipticCurve::Ed25519, None | Some(KeyAlgorithm::EdDSA)) => Algorithm::EdDSA,
            _ => return None,
        },
        // Symmetric keys in a JWKS would let anyone who read it forge tokens; key types
        // this build does not know are skipped too.
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

/// Redirects the discovery and JWKS fetches may follow: at most 3, each to https on the
/// host the chain started at (never a downgrade to http, never another host or an
/// internal address the IdP's answer names). With `allow_http` (tests on loopback) the
/// scheme may stay http, still on the same host.
fn same_host_https_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().cloned();
        let next = attempt.url().clone();
        let same_host = first.as_ref().is_some_and(|f| {
            f.host_str() == next.host_str()
                && f.port_or_known_default() == next.port_or_known_default()
        });
        let scheme_ok = next.scheme() == "https"
            || first
                .as_ref()
                .is_some_and(|f| f.scheme() == "http" && next.scheme() == "http");
        if attempt.previous().len() > 3 {
            attempt.error("too many redirects")
        } else if same_host && scheme_ok {
            attempt.follow()
        } else {
            attempt.error(format!(
                "refusing a redirect to {next}: only https on the same host is followed"
            ))
        }
    })
}

impl KeyCache {
    pub fn new(cfg: Arc<OidcConfig>) -> Result<KeyCache, String> {
        let tls = tls_config(cfg.extra_roots_pem.as_deref())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .redirect(same_host_https_redirects())
            .user_agent(concat!("smith-ca/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the OIDC HTTP client: {e}"))?;
        Ok(KeyCache {
            cfg,
            http,
            keys: RwLock::new(Arc::new(Keys::default())),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
        })
    }

    /// Replaces the cached keys (unit tests: no network).
    #[cfg(test)]
    pub fn preload(&self, keys: Vec<Key>) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Keys {
            fetched_at: Some(Instant::now()),
            keys,
        });
    }

    fn snapshot(&self) -> Arc<Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn candidates(keys: &Keys, kid: Option<&str>, alg: Algorithm) -> Vec<Key> {
        keys.keys
            .iter()
            .filter(|k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
            .cloned()
            .collect()
    }

    /// The keys that may have signed a token with header `kid` and `alg`.
    pub async fn keys_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<Key>, KeyError> {
        let snap = self.snapshot();
        let fresh = snap.fetched_at.is_some_and(|t| t.elapsed() < MAX_AGE);
        let found = Self::candidates(&snap, kid, alg);
        if fresh && !found.is_empty() {
            return Ok(found);
        }
        // Refresh (one at a time, rate-limited), then look again.
        {
            let mut st = self.refresh.lock().await;
            let again = self.snapshot();
            let someone_refreshed = again.fetched_at != snap.fetched_at;
            let allowed = st
                .last_attempt
                .is_none_or(|t| t.elapsed() >= self.cfg.jwks_min_refresh);
            if !someone_refreshed && allowed {
                st.last_attempt = Some(Instant::now());
                match self.fetch().await {
                    Ok(keys) => {
                        tracing::info!(
                            issuer = %self.cfg.issuer,
                            keys = keys.len(),
                            kids = ?keys.iter().filter_map(|k| k.kid.as_deref()).collect::<Vec<_>>(),
                            "fetched the OpenID Provider's keys"
                        );
                        st.last_error = None;
                        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Keys {
                            fetched_at: Some(Instant::now()),
                            keys,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %self.cfg.issuer, error = %e, "cannot refresh the OpenID Provider's keys");
                        st.last_error = Some(e);
                    }
                }
            }
            let now = self.snapshot();
            let found = Self::candidates(&now, kid, alg);
            if !found.is_empty() {
                return Ok(found);
            }
            if now.fetched_at.is_none() {
                return Err(KeyError::Unavailable(
                    st.last_error
                        .clone()
                        .unwrap_or_else(|| "not fetched yet".to_string()),
                ));
            }
            let age = now.fetched_at.map(|t| t.elapsed().as_secs()).unwrap_or(0);
            Err(KeyError::UnknownKey(match kid {
                Some(k) => format!(
                    "no {alg:?} key with kid '{}' among the provider's keys (fetched {age}s ago)",
                    k.escape_debug()
                ),
                None => format!("the provider publishes no {alg:?} key"),
            }))
        }
    }

    /// Fetches the keys once at start so the first sign-in does not wait (failures are
    /// only logged: the CA serves admin and user tokens without the IdP).
    pub async fn warm(&self) {
        let mut st = self.refresh.lock().await;
        if self.snapshot().fetched_at.is_some() {
            return;
        }
        st.last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(issuer = %self.cfg.issuer, keys = keys.len(), "OpenID Provider keys loaded");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Keys {
                    fetched_at: Some(Instant::now()),
                    keys,
                });
            }
            Err(e) => {
                tracing::warn!(issuer = %self.cfg.issuer, error = %e, "OpenID Provider unreachable at start; OIDC sign-ins will retry");
                st.last_error = Some(e);
            }
        }
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let mut resp = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", smith_api::client::error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: {}", smith_api::client::error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_DOC {
                return Err(format!("GET {url}: answer larger than {MAX_DOC} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
    }

    /// Discovery, then the JWKS.
    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let issuer = self.cfg.issuer.trim_end_matches('/');
        let disco_url = format!("{issuer}/.well-known/openid-configuration");
        let disco = self.get_json(&disco_url).await?;
        let doc_issuer = disco.get("issuer").and_then(|v| v.as_str()).unwrap_or("");
        if doc_issuer != self.cfg.issuer {
            return Err(format!(
                "the discovery document at {disco_url} names issuer '{doc_issuer}', not '{}'; \
                 set --oidc-issuer to exactly the provider's issuer",
                self.cfg.issuer
            ));
        }
        let jwks_uri = disco
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("the discovery document at {disco_url} has no jwks_uri"))?;
        let parsed =
            url::Url::parse(jwks_uri).map_err(|e| format!("jwks_uri '{jwks_uri}': {e}"))?;
        if parsed.scheme() != "https" && !(parsed.scheme() == "http" && self.cfg.allow_http) {
            return Err(format!(
                "jwks_uri '{jwks_uri}' is not HTTPS (--oidc-allow-http is for tests only)"
            ));
        }
        let jwks = self.get_json(jwks_uri).await?;
        let keys = parse_jwks(&jwks)?;
        if keys.is_empty() {
            return Err(format!("{jwks_uri} publishes no usable signature key"));
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_signature_keys_of_accepted_kinds_are_kept() {
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
            {"kty": "EC", "crv": "P-256", "kid": "ec",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "kid": "rsa", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"},
            {"kty": "RSA", "kid": "weird-alg", "alg": "RSA-OAEP", "n": "sXch", "e": "AQAB"},
            {"kty": "XYZ", "kid": "unknown"}
        ]});
        let keys = parse_jwks(&doc).unwrap();
        let got: Vec<(Option<&str>, Algorithm)> =
            keys.iter().map(|k| (k.kid.as_deref(), k.alg)).collect();
        assert_eq!(
            got,
            vec![
                (Some("ec"), Algorithm::ES256),
                (Some("ed"), Algorithm::EdDSA),
                (Some("rsa"), Algorithm::RS256)
            ]
        );
        assert!(parse_jwks(&json!({"nokeys": 1})).is_err());
    }

    /// A tiny IdP on loopback serving discovery and a JWKS; counts JWKS fetches.
    async fn idp() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", l.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let (iss, h) = (issuer.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = if req.starts_with("GET /.well-known/openid-configuration") {
                    json!({"issuer": iss, "jwks_uri": format!("{iss}/jwks")}).to_string()
                } else {
                    h.fetch_add(1, Ordering::SeqCst);
                    json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
                        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})
                    .to_string()
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        (issuer, hits)
    }

    fn cfg(issuer: &str, min_refresh: Duration) -> Arc<OidcConfig> {
        Arc::new(OidcConfig {
            issuer: issuer.into(),
            client_id: "smith".into(),
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
            scopes: vec!["openid".into()],
            extra_roots_pem: None,
            allow_http: true,
            leeway: Duration::from_secs(30),
            jwks_min_refresh: min_refresh,
            external_id_claim: "sub".into(),
            max_token_age: Duration::from_secs(86400),
            max_sign_in_age: Duration::from_secs(86400),
            admin_groups: vec![],
        })
    }

    #[tokio::test]
    async fn unknown_kids_refresh_at_most_once_per_interval() {
        use std::sync::atomic::Ordering;
        let (issuer, hits) = idp().await;
        let cache = KeyCache::new(cfg(&issuer, Duration::from_secs(30))).unwrap();
        assert_eq!(
            cache
                .keys_for(Some("k1"), Algorithm::ES256)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        for _ in 0..5 {
            let e = cache
                .keys_for(Some("forged"), Algorithm::ES256)
                .await
                .unwrap_err();
            assert!(
                matches!(e, KeyError::UnknownKey(ref m) if m.contains("forged")),
                "{e}"
            );
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "no refetch within the interval"
        );
        // Known kid: served from the cache.
        cache.keys_for(Some("k1"), Algorithm::ES256).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // Without a rate limit every unknown kid refetches (what the limit prevents).
        let (issuer, hits) = idp().await;
        let cache = KeyCache::new(cfg(&issuer, Duration::ZERO)).unwrap();
        for _ in 0..3 {
            let _ = cache.keys_for(Some("forged"), Algorithm::ES256).await;
        }
        assert_eq!(hits.load(Ordering::SeqCst), 3);

        // An issuer whose discovery names another issuer is refused.
        let (issuer, _) = idp().await;
        let cache = KeyCache::new(cfg(&format!("{issuer}/"), Duration::ZERO)).unwrap();
        let e = cache
            .keys_for(Some("k1"), Algorithm::ES256)
            .await
            .unwrap_err();
        assert!(
            matches!(e, KeyError::Unavailable(ref m) if m.contains("names issuer")),
            "{e}"
        );
    }
}
