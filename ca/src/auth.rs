//! Bearer tokens and who a request comes from.
//!
//! Tokens are 32 random bytes, shown once as `smith_<kind>_<base64url>`; only their
//! SHA-256 is stored. [`Authenticator`] maps such a bearer credential to a [`Principal`]
//! using only the in-memory model. OIDC ID tokens (JWTs) take another path: they are
//! verified by [`crate::oidc`] in the issuance handler, which needs the request body
//! (the nonce) and records refusals as decisions.
//!
//! Must never: store or log a token in clear, or read SQLite.

use crate::model::{Model, TokenKind};
use base64::Engine;
use sha2::{Digest, Sha256};
use smith_proto::{Tags, UserName};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An admin: `name` `None` for the bootstrap token, else the named admin.
    Admin {
        name: Option<String>,
    },
    User(UserName),
    /// The IdP's SCIM client (`/scim/v2/...` only).
    Scim,
    /// An enrollment token (only valid in the enroll body, never as a bearer).
    Enroll {
        token_hash: String,
        tags: Tags,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential: send `Authorization: Bearer <token>` (set --token or SMITH_TOKEN)")]
    Missing,
    #[error("the token is not known to this CA (mistyped, or minted by another CA)")]
    Unknown,
    #[error("the token expired; ask an admin for a new one")]
    Expired,
    #[error("the token was already used; enrollment tokens are single-use, ask for a new one")]
    Used,
    #[error("the token was revoked; ask an admin for a new one")]
    Revoked,
}

impl AuthError {
    /// The stable code of this refusal.
    pub fn code(&self) -> smith_api::ErrorCode {
        use smith_api::ErrorCode as C;
        match self {
            AuthError::Missing => C::MissingToken,
            AuthError::Unknown => C::InvalidToken,
            AuthError::Expired => C::TokenExpired,
            AuthError::Used => C::TokenUsed,
            AuthError::Revoked => C::TokenRevoked,
        }
    }
}

/// Who a credential belongs to, and the credential's public id (for attribution).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub principal: Principal,
    /// [`token_id`] of the token.
    pub token_id: String,
}

/// Maps a bearer credential to a principal.
pub trait Authenticator: Send + Sync {
    fn authenticate(
        &self,
        model: &Model,
        credential: &str,
        now: u64,
    ) -> Result<Authenticated, AuthError>;
}

/// The embedded default: tokens minted by the admin.
pub struct TokenAuthenticator;

impl Authenticator for TokenAuthenticator {
    fn authenticate(
        &self,
        model: &Model,
        credential: &str,
        now: u64,
    ) -> Result<Authenticated, AuthError> {
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(AuthError::Missing);
        }
        if credential.len() > 512 {
            return Err(AuthError::Unknown);
        }
        let hash = hash_token(credential);
        let t = model.token(&hash).ok_or(AuthError::Unknown)?;
        if t.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if t.expires_at <= now {
            return Err(AuthError::Expired);
        }
        let principal = match t.kind {
            TokenKind::Bootstrap => Principal::Admin { name: None },
            TokenKind::Admin => Principal::Admin {
                name: Some(t.subject.clone()),
            },
            TokenKind::Scim => Principal::Scim,
            TokenKind::User => UserName::new(&t.subject)
                .map(Principal::User)
                .map_err(|_| AuthError::Unknown)?,
            TokenKind::Enroll => {
                if t.used_at.is_some() {
                    return Err(AuthError::Used);
                }
                Principal::Enroll {
                    token_hash: hash.clone(),
                    tags: t.tags.clone().unwrap_or_default(),
                }
            }
        };
        Ok(Authenticated {
            principal,
            token_id: token_id(&hash).to_string(),
        })
    }
}

/// A token's public id: the first 16 hex digits of its hash. Listed, revoked and
/// recorded by this id; it reveals nothing about the token (a prefix of a one-way hash).
pub fn token_id(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

/// Hex SHA-256 of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token for `kind`.
pub fn new_token(kind: TokenKind) -> String {
    let mut b = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut b);
    format!(
        "smith_{}_{}",
        kind.as_str(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// A request id: 12 hex digits of Unix time in milliseconds, then 8 random hex digits.
///
/// Time-ordered on purpose: request ids are indexed UNIQUE (migration 6) and a key ID is
/// `smith:<user>:<request id>`; ids that grow with time are appended at the end of that
/// index, so a batch of issuances dirties a page or two of it instead of one random page
/// each (the WAL bytes per certificate are most of the writer's cost). Two issuances in
/// the same millisecond collide with chance 2^-32 per pair; a collision is refused by the
/// index, never stored twice.
pub fn request_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let random: u32 = rand::random();
    format!("{:012x}{random:08x}", ms & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{tests::model, Change, Token};

    #[test]
    fn tokens_authenticate_by_hash_only() {
        let mut m = model();
        let admin = new_token(TokenKind::Admin);
        let user = new_token(TokenKind::User);
        let enroll = new_token(TokenKind::Enroll);
        let tok = |kind, subject: &str, exp, used| Token {
            used_at: used,
            ..Token::bearer(kind, subject, 0, exp, "test")
        };
        m.apply(
            &[Change::AddToken {
                hash: hash_token(&admin),
                token: tok(TokenKind::Bootstrap, "bootstrap", 1000, None),
            }],
            None,
        );
        m.apply(
            &[Change::AddToken {
                hash: hash_token(&user),
                token: tok(TokenKind::User, "alice", 100, None),
            }],
            None,
        );
        m.apply(
            &[Change::AddToken {
                hash: hash_token(&enroll),
                token: tok(TokenKind::Enroll, "host", 100, Some(5)),
            }],
            None,
        );
        let a = TokenAuthenticator;
        let p = |c: &str| a.authenticate(&m, c, 50).map(|x| x.principal);
        assert_eq!(p(&admin), Ok(Principal::Admin { name: None }));
        assert_eq!(
            p(&user),
            Ok(Principal::User(UserName::new("alice").unwrap()))
        );
        assert_eq!(
            a.authenticate(&m, &user, 50).unwrap().token_id,
            hash_token(&user)[..16]
        );
        assert_eq!(a.authenticate(&m, &user, 100), Err(AuthError::Expired));
        assert_eq!(a.authenticate(&m, &enroll, 50), Err(AuthError::Used));
        assert_eq!(a.authenticate(&m, "nope", 50), Err(AuthError::Unknown));
        assert_eq!(a.authenticate(&m, "", 50), Err(AuthError::Missing));
        assert!(m.token(&admin).is_none(), "clear text never stored");
        m.apply(
            &[Change::RevokeTokens {
                hashes: vec![hash_token(&user)],
                at: 60,
            }],
            None,
        );
        assert_eq!(a.authenticate(&m, &user, 61), Err(AuthError::Revoked));
    }
}
