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
    Admin,
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
        }
    }
}

/// Maps a bearer credential to a principal.
pub trait Authenticator: Send + Sync {
    fn authenticate(
        &self,
        model: &Model,
        credential: &str,
        now: u64,
    ) -> Result<Principal, AuthError>;
}

/// The embedded default: tokens minted by the admin.
pub struct TokenAuthenticator;

impl Authenticator for TokenAuthenticator {
    fn authenticate(
        &self,
        model: &Model,
        credential: &str,
        now: u64,
    ) -> Result<Principal, AuthError> {
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(AuthError::Missing);
        }
        if credential.len() > 512 {
            return Err(AuthError::Unknown);
        }
        let hash = hash_token(credential);
        let t = model.token(&hash).ok_or(AuthError::Unknown)?;
        if t.expires_at.is_some_and(|e| e <= now) {
            return Err(AuthError::Expired);
        }
        match t.kind {
            TokenKind::Admin => Ok(Principal::Admin),
            TokenKind::Scim => Ok(Principal::Scim),
            TokenKind::User => UserName::new(&t.subject)
                .map(Principal::User)
                .map_err(|_| AuthError::Unknown),
            TokenKind::Enroll => {
                if t.used_at.is_some() {
                    return Err(AuthError::Used);
                }
                Ok(Principal::Enroll {
                    token_hash: hash,
                    tags: t.tags.clone().unwrap_or_default(),
                })
            }
        }
    }
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
            ..Token::bearer(kind, subject, 0, exp)
        };
        m.apply(
            &[Change::AddToken {
                hash: hash_token(&admin),
                token: tok(TokenKind::Admin, "admin", None, None),
            }],
            None,
        );
        m.apply(
            &[Change::AddToken {
                hash: hash_token(&user),
                token: tok(TokenKind::User, "alice", Some(100), None),
            }],
            None,
        );
        m.apply(
            &[Change::AddToken {
                hash: hash_token(&enroll),
                token: tok(TokenKind::Enroll, "host", Some(100), Some(5)),
            }],
            None,
        );
        let a = TokenAuthenticator;
        assert_eq!(a.authenticate(&m, &admin, 50), Ok(Principal::Admin));
        assert_eq!(
            a.authenticate(&m, &user, 50),
            Ok(Principal::User(UserName::new("alice").unwrap()))
        );
        assert_eq!(a.authenticate(&m, &user, 100), Err(AuthError::Expired));
        assert_eq!(a.authenticate(&m, &enroll, 50), Err(AuthError::Used));
        assert_eq!(a.authenticate(&m, "nope", 50), Err(AuthError::Unknown));
        assert_eq!(a.authenticate(&m, "", 50), Err(AuthError::Missing));
        assert!(m.token(&admin).is_none(), "clear text never stored");
    }
}
