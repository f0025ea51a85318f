//! Verifying one OIDC ID token presented as `Authorization: Bearer <id token>`.
//!
//! Order of checks: shape and size; header algorithm (asymmetric only); the `iss` claim
//! (read before the signature so that a token from another issuer is named as such and
//! never triggers a JWKS fetch); the signature with a key of the issuer's JWKS (by
//! `kid`, refreshed once if unknown); `aud` contains the client id; `azp`, when present or
//! when `aud` has several values, equals the client id; `exp`, `nbf` and `iat` within the
//! leeway; `iat` no older than the maximum token age (`max_token_age`, generous by
//! default: a replayed token stops working even if its IdP gave it a long life); the
//! sign-in no older than `max_sign_in_age` (default 12h), judged by `auth_time` (when the
//! person authenticated at the IdP, which a renewal with a refresh token keeps; the
//! token's `iat` when the IdP sends no `auth_time`); `sub` present. Then the claims are mapped: the configured username claim must be a valid
//! [`UserName`]; the groups claim's entries are kept as the IdP sends them (group ids:
//! they reach CA groups only through the admin's mappings); the external-id claim
//! (default `sub`) is kept for binding to SCIM's `externalId`.
//! The `nonce` rule ([`check_nonce`]) is applied by the issuance handler, which has the
//! request body.
//!
//! Must never: trust a claim of a token whose signature did not verify (the unverified
//! username is only used to label the refusal in the decision log), or log a token.

use super::jwks::{KeyCache, KeyError};
use super::OidcConfig;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use smith_api::ErrorCode;
use smith_proto::UserName;
use std::sync::Arc;

/// Largest ID token accepted.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Most groups read from a token.
pub const MAX_GROUPS: usize = 256;

/// A verified ID token, mapped to Smith's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdToken {
    /// The issuer (`iss`, equal to the configured one).
    pub issuer: String,
    pub username: UserName,
    pub subject: String,
    /// The groups claim's entries as the IdP sends them (ids or names), deduplicated, in
    /// token order, each 1 to 256 printable characters (others are dropped).
    pub groups: Vec<String>,
    /// The external-id claim (`[oidc] external_id_claim`, default `sub`): what a SCIM
    /// `externalId` of the same person holds.
    pub external_id: Option<String>,
    /// The `name` claim, for the GECOS field of a user provisioned at first sign-in.
    pub display_name: Option<String>,
    pub nonce: Option<String>,
    pub expires_at: u64,
    pub issued_at: u64,
    /// When the person authenticated at the IdP (`auth_time`), if the token says.
    pub auth_time: Option<u64>,
}

/// Why a token was refused: HTTP status, a stable code, a sentence for the engineer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub reason: String,
}

impl Refusal {
    fn new(code: ErrorCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason: reason.into(),
        }
    }
}

/// Whether a bearer credential is shaped like a JWT (three base64url parts), as opposed
/// to a Smith token (`smith_<kind>_...`).
pub fn looks_like_jwt(credential: &str) -> bool {
    let c = credential.trim();
    !c.starts_with("smith_")
        && c.split('.').count() == 3
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The `nonce` rule: a token with a nonce needs a request carrying the same nonce, and a
/// request carrying a nonce needs a token with it.
pub fn check_nonce(token: Option<&str>, request: Option<&str>) -> Result<(), Refusal> {
    match (token, request) {
        (None, None) => Ok(()),
        (Some(t), Some(r)) if t == r => Ok(()),
        (Some(_), Some(_)) => Err(Refusal::new(
            ErrorCode::OidcNonceMismatch,
            "the ID token's nonce is not the one this request expects (a token replayed from \
             another sign-in?); run `smith login` again",
        )),
        (Some(_), None) => Err(Refusal::new(
            ErrorCode::OidcNonceMismatch,
            "the ID token carries a nonce but the request does not say which nonce it \
             expects; send the nonce of your sign-in (`smith cert` does this after `smith login`)",
        )),
        (None, Some(_)) => Err(Refusal::new(
            ErrorCode::OidcNonceMismatch,
            "the request expects a nonce but the ID token carries none",
        )),
    }
}

fn unverified_payload(token: &str) -> Option<Map<String, Value>> {
    let part = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn accepted(alg: Algorithm) -> bool {
    matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verifies ID tokens for one configured provider.
pub struct Verifier {
    pub cfg: Arc<OidcConfig>,
    pub keys: KeyCache,
}

impl Verifier {
    pub fn new(cfg: OidcConfig) -> Result<Verifier, String> {
        let cfg = Arc::new(cfg);
        Ok(Verifier {
            keys: KeyCache::new(cfg.clone())?,
            cfg,
        })
    }

    /// Verifies an ID token. A refusal says nothing about who the token claims to be:
    /// no unverified claim ever labels anything.
    pub async fn verify(&self, token: &str) -> Result<IdToken, Refusal> {
        let token = token.trim();
        let cfg = &self.cfg;
        if token.len() > MAX_TOKEN_LEN || !looks_like_jwt(token) {
            return Err(Refusal::new(
                ErrorCode::OidcMalformed,
                "the bearer credential is not a well-formed ID token (JWT)",
            ));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            Refusal::new(ErrorCode::OidcMalformed,
                format!("the ID token's header cannot be read ({e}); only RS*, PS*, ES256, ES384 and EdDSA are accepted"),
            )
        })?;
        if !accepted(header.alg) {
            return Err(Refusal::new(
                ErrorCode::OidcBadAlgorithm,
                format!(
                    "the ID token is signed with {:?}; only asymmetric algorithms (RS*, PS*, \
                     ES256, ES384, EdDSA) are accepted",
                    header.alg
                ),
            ));
        }
        let payload = unverified_payload(token).ok_or_else(|| {
            Refusal::new(
                ErrorCode::OidcMalformed,
                "the ID token's claims are not a JSON object",
            )
        })?;
        let iss = payload.get("iss").and_then(|v| v.as_str()).unwrap_or("");
        if iss != cfg.issuer {
            return Err(Refusal::new(
                ErrorCode::OidcWrongIssuer,
                format!(
                    "the ID token was issued by '{}', but this CA trusts '{}'; sign in with \
                     `smith login` against this CA",
                    iss.chars().take(100).collect::<String>().escape_debug(),
                    cfg.issuer
                ),
            ));
        }
        let keys = self
            .keys
            .keys_for(header.kid.as_deref(), header.alg)
            .await
            .map_err(|e| match e {
                KeyError::Unavailable(m) => Refusal::new(
                    ErrorCode::OidcUnavailable,
                    format!(
                        "cannot verify the ID token now: the OpenID Provider's keys could not be \
                         fetched ({m}); try again later or use a token from your admin"
                    ),
                ),
                KeyError::UnknownKey(m) => Refusal::new(
                    ErrorCode::OidcUnknownKey,
                    format!("the ID token's signing key is unknown: {m}"),
                ),
            })?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[cfg.issuer.as_str()]);
        validation.set_audience(&[cfg.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = cfg.leeway.as_secs();
        validation.validate_nbf = true;
        let mut last = None;
        let mut verified = None;
        for k in &keys {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
                Ok(d) => {
                    verified = Some(d.claims);
                    break;
                }
                Err(e) => {
                    let bad_sig = matches!(e.kind(), ErrorKind::InvalidSignature);
                    last = Some(e);
                    if !bad_sig {
                        break;
                    }
                }
            }
        }
        let claims = match verified {
            Some(c) => c,
            None => return Err(map_error(last.as_ref().map(|e| e.kind()), cfg)),
        };
        self.check_and_map(claims, now())
    }

    /// The checks jsonwebtoken does not do (`iat`, `azp`), then the mapping.
    pub fn check_and_map(&self, claims: Map<String, Value>, now: u64) -> Result<IdToken, Refusal> {
        let cfg = &self.cfg;
        let leeway = cfg.leeway.as_secs();
        let iat = claims.get("iat").and_then(|v| v.as_u64()).ok_or_else(|| {
            Refusal::new(
                ErrorCode::OidcMalformed,
                "the ID token has no numeric 'iat' claim",
            )
        })?;
        if iat > now + leeway {
            return Err(Refusal::new(ErrorCode::OidcNotYetValid,
                "the ID token was issued in the future (iat); check the clocks of the CA and the IdP",
            ));
        }
        let age = now.saturating_sub(iat);
        if age > cfg.max_token_age.as_secs() + leeway {
            return Err(Refusal::new(
                ErrorCode::OidcTokenTooOld,
                format!(
                    "the ID token was issued {} ago, longer than this CA accepts ({}); run \
                     `smith login` again",
                    humantime::format_duration(std::time::Duration::from_secs(age)),
                    humantime::format_duration(cfg.max_token_age)
                ),
            ));
        }
        let auth_time = match claims.get("auth_time") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                Refusal::new(
                    ErrorCode::OidcMalformed,
                    "the ID token's 'auth_time' is not a number of seconds",
                )
            })?),
        };
        check_sign_in_age(auth_time.unwrap_or(iat), now, cfg)?;
        let auds: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => vec![],
        };
        match claims.get("azp") {
            Some(Value::String(azp)) if azp != &cfg.client_id => {
                return Err(Refusal::new(
                    ErrorCode::OidcWrongAudience,
                    format!(
                        "the ID token was issued to client '{}' (azp), not to '{}'",
                        azp.escape_debug(),
                        cfg.client_id
                    ),
                ))
            }
            Some(Value::String(_)) => {}
            None if auds.len() > 1 => {
                return Err(Refusal::new(
                    ErrorCode::OidcWrongAudience,
                    "the ID token has several audiences but no 'azp' naming this client",
                ))
            }
            None => {}
            Some(_) => {
                return Err(Refusal::new(
                    ErrorCode::OidcMalformed,
                    "the 'azp' claim is not a string",
                ))
            }
        }
        let subject = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or_else(|| {
                Refusal::new(ErrorCode::OidcMalformed, "the ID token has no usable 'sub'")
            })?
            .to_string();
        let raw_user = claims
            .get(&cfg.username_claim)
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::OidcInvalidUsername,
                    format!(
                        "the ID token has no '{}' claim to take the login name from; ask the \
                         admin to map a claim with --oidc-username-claim",
                        cfg.username_claim
                    ),
                )
            })?;
        let username = UserName::new(raw_user).map_err(|e| {
            Refusal::new(
                ErrorCode::OidcInvalidUsername,
                format!(
                    "the ID token's '{}' claim '{}' is not a valid login name ({e}); ask the \
                     admin to map another claim with --oidc-username-claim",
                    cfg.username_claim,
                    raw_user.escape_debug()
                ),
            )
        })?;
        let raw_groups: Vec<String> = match claims.get(&cfg.groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .take(MAX_GROUPS)
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => vec![],
        };
        let mut groups: Vec<String> = Vec::new();
        for g in raw_groups {
            let usable = !g.is_empty() && g.len() <= 256 && !g.chars().any(|c| c.is_control());
            if usable && !groups.contains(&g) {
                groups.push(g);
            }
        }
        let external_id = claims
            .get(&cfg.external_id_claim)
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty() && s.len() <= 256);
        let display_name = claims
            .get("name")
            .and_then(|v| v.as_str())
            .map(|s| {
                s.chars()
                    .filter(|c| !c.is_control() && *c != ':')
                    .take(128)
                    .collect::<String>()
            })
            .filter(|s| !s.is_empty());
        Ok(IdToken {
            issuer: cfg.issuer.clone(),
            username,
            subject,
            groups,
            external_id,
            display_name,
            nonce: claims
                .get("nonce")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            expires_at: claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(0),
            issued_at: iat,
            auth_time,
        })
    }
}

/// The sign-in behind a token (at `signed_in`, Unix seconds) is no older than
/// `max_sign_in_age` and not in the future (both within the leeway).
fn check_sign_in_age(signed_in: u64, now: u64, cfg: &OidcConfig) -> Result<(), Refusal> {
    let leeway = cfg.leeway.as_secs();
    if signed_in > now + leeway {
        return Err(Refusal::new(
            ErrorCode::OidcNotYetValid,
            "the ID token says the sign-in happened in the future (auth_time); check the \
             clocks of the CA and the IdP",
        ));
    }
    let age = now.saturating_sub(signed_in);
    if age > cfg.max_sign_in_age.as_secs() + leeway {
        return Err(Refusal::new(
            ErrorCode::OidcSignInTooOld,
            format!(
                "you signed in at the identity provider {} ago; this CA accepts a sign-in for \
                 {} (renewals do not extend it); run `smith login` again",
                humantime::format_duration(std::time::Duration::from_secs(age)),
                humantime::format_duration(cfg.max_sign_in_age)
            ),
        ));
    }
    Ok(())
}

fn map_error(kind: Option<&ErrorKind>, cfg: &OidcConfig) -> Refusal {
    match kind {
        Some(ErrorKind::InvalidSignature) => Refusal::new(
            ErrorCode::OidcBadSignature,
            "the ID token's signature does not verify with the provider's keys (tampered or \
             forged token)",
        ),
        Some(ErrorKind::ExpiredSignature) => Refusal::new(
            ErrorCode::OidcExpired,
            "the ID token has expired; run `smith login` again",
        ),
        Some(ErrorKind::ImmatureSignature) => Refusal::new(
            ErrorCode::OidcNotYetValid,
            "the ID token is not valid yet (nbf); check the clocks of the CA and the IdP",
        ),
        Some(ErrorKind::InvalidAudience) => Refusal::new(
            ErrorCode::OidcWrongAudience,
            format!(
                "the ID token is not meant for this CA: its audience does not include the \
                 client '{}'",
                cfg.client_id
            ),
        ),
        Some(ErrorKind::InvalidIssuer) => Refusal::new(
            ErrorCode::OidcWrongIssuer,
            format!("the ID token was not issued by '{}'", cfg.issuer),
        ),
        Some(ErrorKind::MissingRequiredClaim(c)) => Refusal::new(
            ErrorCode::OidcMalformed,
            format!("the ID token has no '{c}' claim"),
        ),
        Some(ErrorKind::InvalidAlgorithm) => Refusal::new(
            ErrorCode::OidcBadAlgorithm,
            "the ID token's algorithm does not match its key",
        ),
        Some(other) => Refusal::new(
            ErrorCode::OidcMalformed,
            format!("the ID token cannot be verified: {other:?}"),
        ),
        None => Refusal::new(
            ErrorCode::OidcUnknownKey,
            "no key to verify the ID token with",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::time::Duration;

    fn cfg() -> OidcConfig {
        OidcConfig {
            issuer: "https://idp.example".into(),
            client_id: "smith".into(),
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
            scopes: vec!["openid".into()],
            extra_roots_pem: None,
            allow_http: false,
            leeway: Duration::from_secs(30),
            jwks_min_refresh: Duration::from_secs(30),
            external_id_claim: "sub".into(),
            max_token_age: Duration::from_secs(3600),
            max_sign_in_age: Duration::from_secs(3 * 3600),
            admin_groups: vec![],
        }
    }

    fn verifier() -> Verifier {
        Verifier::new(cfg()).unwrap()
    }

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    const NOW: u64 = 1_800_000_000;

    fn base() -> Value {
        json!({"iss": "https://idp.example", "aud": "smith", "sub": "u-1", "iat": NOW - 5,
               "exp": NOW + 600, "preferred_username": "alice",
               "groups": ["dev", "Engineering Staff", "dev", "ops"], "name": "Alice: A.",
               "nonce": "n-1"})
    }

    #[test]
    fn maps_claims_and_keeps_group_ids_as_sent() {
        let t = verifier().check_and_map(claims(base()), NOW).unwrap();
        assert_eq!(t.username.as_str(), "alice");
        assert_eq!(t.subject, "u-1");
        assert_eq!(t.issuer, "https://idp.example");
        assert_eq!(t.external_id.as_deref(), Some("u-1"));
        let g: Vec<&str> = t.groups.iter().map(|g| g.as_str()).collect();
        assert_eq!(g, vec!["dev", "Engineering Staff", "ops"]);
        assert_eq!(t.display_name.as_deref(), Some("Alice A."));
        assert_eq!(t.nonce.as_deref(), Some("n-1"));
    }

    #[test]
    fn refuses_bad_usernames_audiences_and_times() {
        let v = verifier();
        let mut c = base();
        c["preferred_username"] = json!("alice@example.com");
        let r = v.check_and_map(claims(c), NOW).unwrap_err();
        assert_eq!(r.code, ErrorCode::OidcInvalidUsername);
        assert!(r.reason.contains("--oidc-username-claim"), "{}", r.reason);
        let mut c = base();
        c["preferred_username"] = json!("root");
        assert_eq!(
            v.check_and_map(claims(c), NOW).unwrap_err().code,
            ErrorCode::OidcInvalidUsername
        );
        let mut c = base();
        c["aud"] = json!(["smith", "other"]);
        assert_eq!(
            v.check_and_map(claims(c.clone()), NOW).unwrap_err().code,
            ErrorCode::OidcWrongAudience
        );
        c["azp"] = json!("smith");
        assert!(v.check_and_map(claims(c.clone()), NOW).is_ok());
        c["azp"] = json!("other");
        assert_eq!(
            v.check_and_map(claims(c), NOW).unwrap_err().code,
            ErrorCode::OidcWrongAudience
        );
        let mut c = base();
        c["iat"] = json!(NOW + 120);
        assert_eq!(
            v.check_and_map(claims(c), NOW).unwrap_err().code,
            ErrorCode::OidcNotYetValid
        );
        // Older than the maximum token age, though not expired.
        let mut c = base();
        c["iat"] = json!(NOW - 3600 - 31);
        assert_eq!(
            v.check_and_map(claims(c), NOW).unwrap_err().code,
            ErrorCode::OidcTokenTooOld
        );
        // A fresh token (a renewal) of a sign-in older than the maximum sign-in age.
        let mut c = base();
        c["auth_time"] = json!(NOW - 3 * 3600 - 31);
        let r = v.check_and_map(claims(c.clone()), NOW).unwrap_err();
        assert_eq!(r.code, ErrorCode::OidcSignInTooOld);
        assert!(r.reason.contains("smith login"), "{}", r.reason);
        c["auth_time"] = json!(NOW - 3 * 3600 + 60);
        assert_eq!(
            v.check_and_map(claims(c.clone()), NOW).unwrap().auth_time,
            Some(NOW - 3 * 3600 + 60)
        );
        c["auth_time"] = json!(NOW + 120);
        assert_eq!(
            v.check_and_map(claims(c.clone()), NOW).unwrap_err().code,
            ErrorCode::OidcNotYetValid
        );
        c["auth_time"] = json!("yesterday");
        assert_eq!(
            v.check_and_map(claims(c), NOW).unwrap_err().code,
            ErrorCode::OidcMalformed
        );
        let mut c = base();
        c.as_object_mut().unwrap().remove("iat");
        assert_eq!(
            v.check_and_map(claims(c), NOW).unwrap_err().code,
            ErrorCode::OidcMalformed
        );
    }

    #[test]
    fn nonce_rule() {
        assert!(check_nonce(None, None).is_ok());
        assert!(check_nonce(Some("a"), Some("a")).is_ok());
        for (t, r) in [(Some("a"), Some("b")), (Some("a"), None), (None, Some("a"))] {
            assert_eq!(
                check_nonce(t, r).unwrap_err().code,
                ErrorCode::OidcNonceMismatch
            );
        }
    }

    #[test]
    fn shape() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(!looks_like_jwt("smith_user_abc"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c d"));
    }

    /// Full path with a real ES256 signature (key made here) and a pre-filled key cache:
    /// good token, tampered payload, wrong audience, expired, HS256 and another issuer.
    #[tokio::test]
    async fn signatures_and_standard_claims() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]});
        let v = verifier();
        v.keys
            .preload(super::super::jwks::parse_jwks(&jwks).unwrap());
        let enc = EncodingKey::from_ec_der(&kp.serialize_der());
        let sign = |c: &Value| {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some("k1".into());
            jsonwebtoken::encode(&h, c, &enc).unwrap()
        };
        let now = now();
        let mut c = base();
        c["iat"] = json!(now - 5);
        c["exp"] = json!(now + 600);
        let good = sign(&c);
        assert_eq!(v.verify(&good).await.unwrap().username.as_str(), "alice");

        // Tampered: another user in the payload, same signature.
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        let mut forged = c.clone();
        forged["preferred_username"] = json!("oscar");
        parts[1] = b64(forged.to_string().as_bytes());
        let r = v.verify(&parts.join(".")).await.unwrap_err();
        assert_eq!(r.code, ErrorCode::OidcBadSignature);

        let mut w = c.clone();
        w["aud"] = json!("smith-other");
        assert_eq!(
            v.verify(&sign(&w)).await.unwrap_err().code,
            ErrorCode::OidcWrongAudience
        );
        let mut e = c.clone();
        e["exp"] = json!(now - 120);
        assert_eq!(
            v.verify(&sign(&e)).await.unwrap_err().code,
            ErrorCode::OidcExpired
        );
        let mut i = c.clone();
        i["iss"] = json!("https://evil.example");
        assert_eq!(
            v.verify(&sign(&i)).await.unwrap_err().code,
            ErrorCode::OidcWrongIssuer
        );
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &c,
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert_eq!(
            v.verify(&hs).await.unwrap_err().code,
            ErrorCode::OidcBadAlgorithm
        );
    }
}
