//! Certificate issuance, end to end: who is asking (a user token, or an OIDC ID token
//! verified by the adapter, whose nonce must match and whose sign-in may provision the
//! user and set their memberships), the decision from the in-memory model
//! ([`crate::issue::decide`]), the serial, the key ID, the signature, the durable record
//! of the decision and the certificate (through the store's group commit), and only then
//! the answer. Denials are recorded too, with their reason. Requests beyond the
//! per-principal rate limit (by user for user tokens, by the verified `sub` for ID
//! tokens) are refused before anything else and not recorded (see `ratelimit`).
//! A request for one host ([`HostTarget`]) is decided under exactly the grants that fit
//! that host as the login asked for ([`crate::reach::target`]); a name that matches no
//! host, or one no grant fits, is a recorded denial like any other.
//!
//! Must never: read the store on this path, answer before the record is durable, sign for
//! a principal other than the authenticated user's name, or hand out a certificate whose
//! user was disabled while it was being issued.

use super::{now, Authority, Error};
use crate::auth::request_id;
use crate::issue::{decide, Denied, IssueRequest};
use crate::oidc::{IdToken, Refusal};
use crate::sshca::{fingerprint, parse_subject_key, sign_user_cert, UserCertSpec};
use crate::store::{settled, CertRow, DecisionRow, Record};
use smith_api::ErrorCode;
use smith_proto::{Tags, UserName};
use std::net::IpAddr;
use std::sync::Arc;

pub use super::hosts::BACKDATE_SECS;

/// Who asks for a certificate: an authenticated caller (a token that did not verify
/// never gets here: it is refused and counted by [`Authority::reject_credential`], never
/// recorded as a decision).
#[derive(Debug, Clone)]
pub enum Caller {
    /// A user token, settled by the adapter.
    Token(UserName),
    /// An OIDC ID token whose signature, issuer, audience and times verified (signed in
    /// here).
    Oidc(IdToken),
}

/// A certificate request.
#[derive(Debug, Clone)]
pub struct IssueInput {
    pub caller: Caller,
    /// One OpenSSH public key line.
    pub public_key: String,
    pub scope: Tags,
    pub ttl_secs: u64,
    pub reason: Option<String>,
    /// The request's source address (for grants with source networks).
    pub source: IpAddr,
    /// The nonce of the client's OIDC sign-in, when it presents an ID token.
    pub oidc_nonce: Option<String>,
    /// A certificate for one host (its scope is then computed; `scope` is ignored).
    pub target: Option<HostTarget>,
}

/// Why [`Authority::settle`] found no user.
pub(super) enum Unsettled {
    /// Refused before anything is recorded (the rate limit, a replayed ID token).
    Early(IssueError),
    /// The OIDC sign-in of `claimed` was refused: a decision about an authenticated
    /// caller, recorded by issuance.
    SignIn { claimed: String, denied: Denied },
}

/// Instead of a scope: a certificate for the host a name means, as a login
/// ([`crate::reach::target`]).
#[derive(Debug, Clone)]
pub struct HostTarget {
    /// As typed (ssh's `%h`, `smith cert --host`).
    pub host: String,
    /// The login to be used there; the caller's own when `None`.
    pub login: Option<UserName>,
}

/// An issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// One OpenSSH line.
    pub certificate: String,
    pub serial: u64,
    pub key_id: String,
    pub principals: Vec<String>,
    pub scope: Tags,
    pub valid_after: u64,
    pub valid_before: u64,
    /// Set when the requested TTL was clipped.
    pub clipped_to: Option<u64>,
    /// For a [`HostTarget`]: the host, how its name matched, the login.
    pub target: Option<crate::reach::Target>,
}

/// Why no certificate was issued: a recorded denial, a caller whose credential turned
/// out not to be theirs (counted, not recorded), or a failure of the CA.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IssueError {
    #[error("{}", .0.reason)]
    Denied(Denied),
    #[error("{}", .0.reason)]
    Unauthenticated(Refusal),
    #[error(transparent)]
    Failed(#[from] Error),
}

impl IssueError {
    pub fn code(&self) -> ErrorCode {
        match self {
            IssueError::Denied(d) => d.code,
            IssueError::Unauthenticated(r) => r.code,
            IssueError::Failed(e) => e.code(),
        }
    }
}

impl Authority {
    /// Records a denial and returns it.
    async fn deny(&self, mut decision: DecisionRow, d: Denied) -> IssueError {
        decision.allowed = false;
        decision.reason = d.reason.clone();
        decision.grant_ids = d.grant_ids.clone();
        tracing::info!(user = %decision.user, scope = %decision.scope, code = %d.code, reason = %d.reason, "certificate denied");
        match settled(self.store.record(Record {
            decision,
            cert: None,
        }))
        .await
        {
            Ok(_) => IssueError::Denied(d),
            Err(e) => IssueError::Failed(e.into()),
        }
    }

    /// Counts a credential that did not verify (a forged, expired or replayed token):
    /// nothing is recorded about it (its claims are unverified, and unauthenticated
    /// traffic must not write to the decisions or the chain); the count is logged now and
    /// then.
    pub fn reject_credential(&self, why: &Refusal) {
        let n = self
            .rejected_credentials
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n.is_power_of_two() {
            tracing::warn!(total = n, code = %why.code, "credentials refused before authentication (not recorded as decisions)");
        }
    }

    /// How many credentials were refused before authentication since start.
    pub fn rejected_credentials(&self) -> u64 {
        self.rejected_credentials
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Applies a verified OIDC sign-in (nonce rule, binding, provisioning, mapped
    /// memberships); returns the user it signs in as and a note for the decision log.
    async fn oidc_caller(
        self: &Arc<Self>,
        t: IdToken,
        nonce: Option<&str>,
        source: IpAddr,
    ) -> Result<(UserName, String), Denied> {
        crate::oidc::verify::check_nonce(t.nonce.as_deref(), nonce)
            .map_err(|r| Denied::new(r.code, r.reason))?;
        let me = self.clone();
        let token = t.clone();
        let user = tokio::task::spawn_blocking(move || me.sign_in(&token, source))
            .await
            .map_err(|e| Denied::new(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| Denied::new(e.code(), e.to_string()))?;
        let groups: Vec<String> = t
            .groups
            .iter()
            .take(16)
            .map(|g| g.chars().take(64).collect())
            .collect();
        let note = format!(
            "via OIDC (sub {}, token groups: {})",
            t.subject,
            if groups.is_empty() {
                "none".to_string()
            } else {
                groups.join(",")
            }
        );
        Ok((user, note))
    }

    /// Who an authenticated caller is: a user token's user, or the user an OIDC sign-in
    /// signs in as (its nonce checked, its memberships applied), with a note for the
    /// decision log; each request taken from the caller's bucket of the rate limit.
    pub(super) async fn settle(
        self: &Arc<Self>,
        caller: Caller,
        oidc_nonce: Option<&str>,
        source: IpAddr,
    ) -> Result<(UserName, Option<String>), Unsettled> {
        match caller {
            Caller::Token(u) => {
                self.rate_check(&format!("user {u}"))
                    .map_err(Unsettled::Early)?;
                Ok((u, None))
            }
            Caller::Oidc(t) => {
                // A nonce that does not match: a token replayed from another sign-in,
                // so not this caller's: refused like a forged one, not recorded.
                if let Err(r) = crate::oidc::verify::check_nonce(t.nonce.as_deref(), oidc_nonce) {
                    self.reject_credential(&r);
                    return Err(Unsettled::Early(IssueError::Unauthenticated(r)));
                }
                self.rate_check(&format!("sub {}", t.subject))
                    .map_err(Unsettled::Early)?;
                let claimed = t.username.to_string();
                match self.oidc_caller(t, oidc_nonce, source).await {
                    Ok((u, note)) => Ok((u, Some(note))),
                    Err(denied) => Err(Unsettled::SignIn { claimed, denied }),
                }
            }
        }
    }

    /// Takes one request from `key`'s issuance bucket.
    fn rate_check(&self, key: &str) -> Result<(), IssueError> {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.issuance_buckets.take(key, ms).map_err(|wait| {
            IssueError::Failed(Error::RateLimited {
                user: key.to_string(),
                retry_after: wait,
            })
        })
    }

    /// Issues a certificate (see the module doc).
    pub async fn issue(self: &Arc<Self>, input: IssueInput) -> Result<Issued, IssueError> {
        // A replica that cannot read the policy signs nothing (nothing recorded either).
        self.serving()?;
        let at = now();
        let mut decision = DecisionRow {
            at,
            user: String::new(),
            allowed: false,
            reason: String::new(),
            // A host target's scope is known once the host is.
            scope: match &input.target {
                Some(_) => String::new(),
                None => input.scope.to_string(),
            },
            requested_ttl_secs: input.ttl_secs,
            source_ip: input.source.to_string(),
            grant_ids: vec![],
        };
        let (user, via) = match self
            .settle(input.caller, input.oidc_nonce.as_deref(), input.source)
            .await
        {
            Ok(settled) => settled,
            Err(Unsettled::Early(e)) => return Err(e),
            Err(Unsettled::SignIn {
                claimed,
                mut denied,
            }) => {
                decision.user = claimed;
                denied.reason = format!("sign-in refused: {}", denied.reason);
                return Err(self.deny(decision, denied).await);
            }
        };
        decision.user = user.to_string();
        let with_via = |mut d: Denied| {
            if let Some(v) = &via {
                d.reason = format!("{} [{v}]", d.reason);
            }
            d
        };
        let subject = match parse_subject_key(&input.public_key) {
            Ok(k) => k,
            Err(e) => {
                let d = Denied::new(ErrorCode::InvalidPublicKey, e.to_string());
                return Err(self.deny(decision, with_via(d)).await);
            }
        };
        let outcome = {
            let m = self.model();
            let target = match &input.target {
                None => Ok(None),
                Some(t) => crate::reach::target(&m, &user, &t.host, t.login.as_ref()).map(Some),
            };
            target.and_then(|target| {
                let scope = target
                    .as_ref()
                    .map_or_else(|| input.scope.clone(), |t| t.scope.clone());
                let allowed = decide(
                    &m,
                    &IssueRequest {
                        user: &user,
                        scope: &scope,
                        only: target.as_ref().map(|t| &t.grant_ids),
                        ttl_secs: input.ttl_secs,
                        reason: input.reason.as_deref(),
                        source: input.source.to_canonical(),
                        ca_max_ttl_secs: self.cfg.max_cert_ttl.as_secs(),
                        now: at,
                    },
                );
                match (allowed, &target) {
                    (Ok(a), _) => Ok((a, scope, target)),
                    (Err(mut d), Some(t)) => {
                        d.reason =
                            format!("for host '{}' as '{}': {}", t.host.name, t.login, d.reason);
                        Err(d)
                    }
                    (Err(d), None) => Err(d),
                }
            })
        };
        let (allowed, scope, target) = match outcome {
            Ok(a) => a,
            Err(d) => return Err(self.deny(decision, with_via(d)).await),
        };
        decision.scope = scope.to_string();
        let serial = self.next_serial().await?;
        let rid = request_id();
        let key_id = format!("smith:{user}:{rid}");
        let valid_after = at.saturating_sub(BACKDATE_SECS);
        let valid_before = at + allowed.validity_secs;
        let scope_text = scope.to_string();
        let signer = self.signer(crate::cakeys::CaRole::User)?;
        let cert = sign_user_cert(
            &signer,
            &subject,
            &UserCertSpec {
                serial,
                key_id: &key_id,
                principals: &allowed.principals,
                valid_after,
                valid_before,
                source_address: allowed.source_address.clone(),
                scope: (!scope.is_empty()).then(|| scope_text.clone()),
                permits: allowed.permits,
                force_command: allowed.force_command.as_deref(),
                grants: Some(&allowed.grants_extension),
            },
        )
        .map_err(|e| self.sign_failed("user CA", &signer, "signing a certificate", e))?;
        let line = cert
            .to_openssh()
            .map_err(|e| Error::internal("encoding a certificate", e))?;
        decision.allowed = true;
        decision.reason = match &input.reason {
            Some(r) if !r.is_empty() => format!("{}; reason: {r}", allowed.summary),
            _ => allowed.summary.clone(),
        };
        if let Some(t) = &target {
            decision
                .reason
                .push_str(&format!("; for host '{}' as '{}'", t.host.name, t.login));
        }
        if let Some(v) = &via {
            decision.reason.push_str(&format!(" [{v}]"));
        }
        decision.grant_ids = allowed.grant_ids.clone();
        settled(self.store.record(Record {
            decision,
            cert: Some(CertRow {
                serial,
                key_id: key_id.clone(),
                principals: allowed.principals.clone(),
                scope: scope_text,
                valid_after,
                valid_before,
                request_id: rid,
                public_key_fp: fingerprint(&subject),
            }),
        }))
        .await
        .map_err(Error::from)?;
        // Another replica committed before this record (its batch saw the newer log
        // entry): follow first, so that a disable there is seen here.
        if self.store.behind() {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.catch_up())
                .await
                .map_err(|e| Error::internal("following other replicas", e))??;
        }
        // A disable or delete that reached the model while this certificate was being
        // signed revokes only the certificates committed by then (see `mutate`): never
        // hand out one it may have missed.
        if self.model().user(&user).is_none_or(|u| u.is_disabled()) {
            return Err(IssueError::Denied(Denied::new(
                ErrorCode::UserDisabled,
                format!("user '{user}' was disabled while this certificate was being issued"),
            )));
        }
        // Debug, not info: one line per certificate costs the hot path more than the rest
        // of its bookkeeping, and every issuance is in the decisions and the `@ca` chain.
        tracing::debug!(%user, serial, key_id = %key_id, scope = %scope, validity = allowed.validity_secs, "certificate issued");
        Ok(Issued {
            certificate: line,
            serial,
            key_id,
            principals: allowed.principals,
            scope,
            valid_after,
            valid_before,
            clipped_to: allowed.clipped_to,
            target,
        })
    }
}
