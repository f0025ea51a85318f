//! Credentials with a lifecycle: every token kind (bootstrap, named admin, user, SCIM,
//! enrollment) is minted here, expires, can be listed, revoked and rotated, and is
//! recorded (its public id, never its text) in the `@ca` chain with who minted it.
//!
//! Rules that live here once:
//! - every token expires; the bootstrap token after a day, and it is revoked as soon as
//!   a named admin exists (a named admin token minted, or an admin's IdP sign-in);
//! - named admins: people in the configured IdP admin group who sign in
//!   ([`Authority::admin_sign_in`]), and named tokens an admin mints for automation;
//! - a disabled user gets no token, and disabling a user revokes theirs (in
//!   [`Authority::mutate`]): enabling them again brings none back;
//! - a revoked token is refused at once (the model is updated in the same step).
//!
//! Must never: keep or log a token's text, or hand out a token for a disabled user.

use super::{now, Authority, Error};
use crate::auth::{hash_token, new_token, token_id};
use crate::model::{Change, Model, Token, TokenKind};
use crate::oidc::IdToken;
use crate::origin::{Actor, Origin};
use smith_proto::{HostPattern, Tags, UserName};

/// Longest lifetime of a user, SCIM or named admin token.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 86400;
/// Default lifetime of a SCIM token (short enough to be rotated; the IdP keeps it).
pub const DEFAULT_SCIM_TOKEN_TTL_SECS: u64 = 90 * 86400;
/// Default lifetime of a named admin token for automation.
pub const DEFAULT_ADMIN_TOKEN_TTL_SECS: u64 = 30 * 86400;

/// A token as listed (never its text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The public id ([`crate::auth::token_id`]).
    pub id: String,
    pub token: Token,
}

/// A freshly minted token (shown once).
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    pub id: String,
    pub expires_at: u64,
}

fn ttl_in(ttl: u64, min: u64, max: u64, what: &'static str) -> Result<u64, Error> {
    if !(min..=max).contains(&ttl) {
        return Err(Error::InvalidTtl { what, min, max });
    }
    Ok(ttl)
}

/// A named admin's name: 1 to 64 of `[A-Za-z0-9._@-]`, not `bootstrap`.
pub fn check_admin_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "bootstrap"
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if !ok {
        return Err(Error::InvalidInput(format!(
            "admin name '{}' must be 1 to 64 of A-Z a-z 0-9 . _ @ - (and not 'bootstrap')",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// The hashes of the live bootstrap tokens (revoked once a named admin exists).
fn live_bootstrap(m: &Model, at: u64) -> Vec<String> {
    let mut v: Vec<String> = m
        .tokens()
        .iter()
        .filter(|(_, t)| t.kind == TokenKind::Bootstrap && t.is_live(at))
        .map(|(h, _)| h.clone())
        .collect();
    v.sort();
    v
}

/// The token whose public id is `id` (a unique prefix of its hash).
fn find<'a>(m: &'a Model, id: &str) -> Result<(&'a String, &'a Token), Error> {
    let id = id.trim().to_ascii_lowercase();
    if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidInput(
            "a token id is at least 8 hex digits (see `smith-ca admin token list`)".into(),
        ));
    }
    let mut found = m.tokens().iter().filter(|(h, _)| h.starts_with(&id));
    match (found.next(), found.next()) {
        (Some(t), None) => Ok(t),
        (None, _) => Err(Error::NoSuchToken(id)),
        (Some(_), Some(_)) => Err(Error::InvalidInput(format!(
            "token id {id} is ambiguous; give more of it"
        ))),
    }
}

impl Authority {
    /// Mints a token of `kind` for `subject` (the change is planned by `check`, which
    /// may refuse, and may add changes of its own).
    #[allow(clippy::too_many_arguments)]
    fn mint(
        &self,
        origin: &Origin,
        what: String,
        kind: TokenKind,
        subject: String,
        ttl: u64,
        tags: Option<Tags>,
        names: Vec<HostPattern>,
        max_uses: u32,
        mut check: impl FnMut(&Model, u64) -> Result<Vec<Change>, Error>,
    ) -> Result<Minted, Error> {
        let token = new_token(kind);
        let hash = hash_token(&token);
        let expires_at = now() + ttl;
        let created_by = origin.to_string();
        self.mutate(origin, what, |m, _, at| {
            let mut c = check(m, at)?;
            c.push(Change::AddToken {
                hash: hash.clone(),
                token: Token {
                    kind,
                    subject: subject.clone(),
                    tags: tags.clone(),
                    created_at: at,
                    expires_at,
                    used_at: None,
                    names: names.clone(),
                    max_uses,
                    uses: 0,
                    created_by: created_by.clone(),
                    revoked_at: None,
                },
            });
            Ok((c, ()))
        })?;
        Ok(Minted {
            id: token_id(&hash).to_string(),
            token,
            expires_at,
        })
    }

    /// Mints a user token (shown once).
    pub fn mint_user_token(
        &self,
        origin: &Origin,
        name: &UserName,
        ttl_secs: Option<u64>,
    ) -> Result<Minted, Error> {
        let ttl = ttl_in(
            ttl_secs.unwrap_or(self.cfg.default_user_token_ttl.as_secs()),
            60,
            MAX_TOKEN_TTL_SECS,
            "a user token's lifetime",
        )?;
        self.mint(
            origin,
            format!("user token {name}"),
            TokenKind::User,
            name.to_string(),
            ttl,
            None,
            vec![],
            1,
            |m, _| match m.user(name) {
                None => Err(Error::NoSuchUser(name.clone())),
                Some(u) if u.is_disabled() => Err(Error::UserDisabled(name.clone())),
                Some(_) => Ok(vec![]),
            },
        )
    }

    /// Mints the SCIM client's bearer token (shown once).
    pub fn mint_scim_token(&self, origin: &Origin, ttl_secs: Option<u64>) -> Result<Minted, Error> {
        let ttl = ttl_in(
            ttl_secs.unwrap_or(DEFAULT_SCIM_TOKEN_TTL_SECS),
            60,
            MAX_TOKEN_TTL_SECS,
            "a SCIM token's lifetime",
        )?;
        self.mint(
            origin,
            "scim token".into(),
            TokenKind::Scim,
            "scim".into(),
            ttl,
            None,
            vec![],
            1,
            |_, _| Ok(vec![]),
        )
    }

    /// Mints a single-use enrollment token (shown once).
    pub(super) fn mint_enroll_token(
        &self,
        origin: &Origin,
        what: String,
        ttl: u64,
        tags: Tags,
        names: Vec<HostPattern>,
        max_uses: u32,
    ) -> Result<Minted, Error> {
        self.mint(
            origin,
            what,
            TokenKind::Enroll,
            "host enrollment".into(),
            ttl,
            Some(tags),
            names,
            max_uses,
            |_, _| Ok(vec![]),
        )
    }

    /// Mints a named admin token (for automation; shown once). The bootstrap token is
    /// revoked with it: a named admin exists from now on.
    pub fn mint_admin_token(
        &self,
        origin: &Origin,
        name: &str,
        ttl_secs: Option<u64>,
    ) -> Result<Minted, Error> {
        check_admin_name(name)?;
        let ttl = ttl_in(
            ttl_secs.unwrap_or(DEFAULT_ADMIN_TOKEN_TTL_SECS),
            60,
            MAX_TOKEN_TTL_SECS,
            "an admin token's lifetime",
        )?;
        self.mint(
            origin,
            format!("admin token {name}"),
            TokenKind::Admin,
            name.to_string(),
            ttl,
            None,
            vec![],
            1,
            |m, at| Ok(retire_bootstrap(m, at)),
        )
    }

    /// An admin's IdP sign-in (`smith-ca admin login`): a verified ID token of a member
    /// of one of the configured admin groups gets a named admin token (shown once) for
    /// the configured session length. The bootstrap token is revoked with it.
    pub fn admin_sign_in(&self, t: &IdToken, source: std::net::IpAddr) -> Result<Minted, Error> {
        let admin_groups = &self.cfg.admin_groups;
        if admin_groups.is_empty() || !t.groups.iter().any(|g| admin_groups.contains(g)) {
            return Err(Error::NotAnAdmin(t.username.clone()));
        }
        let name = t.username.to_string();
        let origin = Origin::new(Actor::OidcSignIn {
            subject: t.subject.clone(),
        })
        .from_addr(source);
        self.mint(
            &origin,
            format!("admin login {name} (sub {})", t.subject),
            TokenKind::Admin,
            name,
            self.cfg.admin_session_ttl.as_secs(),
            None,
            vec![],
            1,
            |m, at| Ok(retire_bootstrap(m, at)),
        )
    }

    /// A new bootstrap token (shown once, a day's life), the live ones revoked: the
    /// break-glass of whoever runs `smith-ca bootstrap-token` on the CA's machine with the
    /// CA stopped (they hold the keys anyway). Recorded like any change.
    pub fn mint_bootstrap_token(&self, origin: &Origin) -> Result<Minted, Error> {
        self.mint(
            origin,
            "bootstrap token (break-glass)".into(),
            TokenKind::Bootstrap,
            "bootstrap".into(),
            crate::store::BOOTSTRAP_TTL_SECS,
            None,
            vec![],
            1,
            |m, at| Ok(retire_bootstrap(m, at)),
        )
    }

    /// Every token in memory (live, and dead for less than 30 days), newest first.
    pub fn tokens(&self) -> Vec<TokenInfo> {
        let m = self.model();
        let mut v: Vec<TokenInfo> = m
            .tokens()
            .iter()
            .map(|(h, t)| TokenInfo {
                id: token_id(h).to_string(),
                token: t.clone(),
            })
            .collect();
        v.sort_by(|a, b| (b.token.created_at, &b.id).cmp(&(a.token.created_at, &a.id)));
        v
    }

    /// Revokes the token with public id `id`: refused from now on.
    pub fn revoke_token(&self, origin: &Origin, id: &str) -> Result<TokenInfo, Error> {
        let (_, hash) = self.mutate(origin, format!("token revoke {id}"), |m, _, at| {
            let (hash, t) = find(m, id)?;
            if t.revoked_at.is_some() {
                return Ok((vec![], hash.clone()));
            }
            Ok((
                vec![Change::RevokeTokens {
                    hashes: vec![hash.clone()],
                    at,
                }],
                hash.clone(),
            ))
        })?;
        let m = self.model();
        let t = m
            .token(&hash)
            .cloned()
            .ok_or_else(|| Error::NoSuchToken(id.to_string()))?;
        Ok(TokenInfo {
            id: token_id(&hash).to_string(),
            token: t,
        })
    }

    /// Replaces the token with public id `id` by a new one of the same kind, subject and
    /// scope (the old one is revoked in the same change); `ttl_secs` `None`: the old
    /// one's lifetime. A used enrollment token or a bootstrap token cannot be rotated.
    pub fn rotate_token(
        &self,
        origin: &Origin,
        id: &str,
        ttl_secs: Option<u64>,
    ) -> Result<Minted, Error> {
        let (old_hash, old) = {
            let m = self.model();
            let (h, t) = find(&m, id)?;
            (h.clone(), t.clone())
        };
        match old.kind {
            TokenKind::Bootstrap => {
                return Err(Error::InvalidInput(
                    "the bootstrap token is not rotated: mint a named admin token (`smith-ca \
                     admin token create --name NAME`) or sign in (`smith-ca admin login`)"
                        .into(),
                ))
            }
            TokenKind::Enroll if old.used_at.is_some() => {
                return Err(Error::EnrollmentTokenUsed);
            }
            _ => {}
        }
        let ttl = ttl_secs.unwrap_or(old.expires_at.saturating_sub(old.created_at).max(60));
        let ttl = ttl_in(ttl, 60, MAX_TOKEN_TTL_SECS, "a token's lifetime")?;
        let user = match old.kind {
            TokenKind::User => UserName::new(&old.subject).ok(),
            _ => None,
        };
        self.mint(
            origin,
            format!("token rotate {}", token_id(&old_hash)),
            old.kind,
            old.subject.clone(),
            ttl,
            old.tags.clone(),
            old.names.clone(),
            old.max_uses.saturating_sub(old.uses).max(1),
            move |m, at| {
                let t = m
                    .token(&old_hash)
                    .ok_or_else(|| Error::NoSuchToken(token_id(&old_hash).to_string()))?;
                if t.revoked_at.is_some() {
                    return Err(Error::InvalidInput(format!(
                        "token {} is revoked; mint a new one instead",
                        token_id(&old_hash)
                    )));
                }
                if let Some(u) = &user {
                    match m.user(u) {
                        None => return Err(Error::NoSuchUser(u.clone())),
                        Some(u) if u.is_disabled() => {
                            return Err(Error::UserDisabled(u.name.clone()))
                        }
                        Some(_) => {}
                    }
                }
                Ok(vec![Change::RevokeTokens {
                    hashes: vec![old_hash.clone()],
                    at,
                }])
            },
        )
    }
}

/// The bootstrap token's retirement, planned with the first named admin.
fn retire_bootstrap(m: &Model, at: u64) -> Vec<Change> {
    let hashes = live_bootstrap(m, at);
    if hashes.is_empty() {
        return vec![];
    }
    tracing::warn!("a named admin exists now: the bootstrap admin token is revoked");
    vec![Change::RevokeTokens { hashes, at }]
}
