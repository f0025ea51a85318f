//! Revoking issued certificates (by serial, key ID or user) and listing them.
//!
//! A revocation is a [`Change::Revoke`]: it bumps the global version, so hosts get the
//! new KRL with their next sync (long polls wake up), and the store commits it together
//! with one `@ca` audit record per certificate.
//!
//! Must never: revoke a certificate this CA did not issue (unknown serials and key IDs
//! are refused), count an expired certificate as revoked (it is reported as expired and
//! left out of the KRL), or report a certificate as revoked that was not.

use super::{now, Authority, Error};
use crate::model::{Change, RevokeVia};
use crate::origin::Origin;
use crate::store::{CertQuery, Plan, Selector};
use smith_api::{IssuedCert, RevocationInfo};

/// Longest revocation reason accepted.
pub const MAX_REASON_LEN: usize = 256;

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// Certificates revoked by this request (with their revocation).
    pub revoked: Vec<IssuedCert>,
    /// Matching certificates revoked before.
    pub already_revoked: Vec<u64>,
    /// Matching certificates that had expired already.
    pub expired: Vec<u64>,
    /// The policy version after the change.
    pub version: u64,
}

/// Validates an admin's reason: bounded, printable.
pub fn check_reason(reason: &str) -> Result<(), Error> {
    if reason.chars().count() > MAX_REASON_LEN {
        return Err(Error::InvalidReason(format!(
            "the reason is longer than {MAX_REASON_LEN} characters"
        )));
    }
    if reason.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidReason(
            "the reason may not contain control characters".into(),
        ));
    }
    Ok(())
}

impl Authority {
    /// Revokes the still-valid certificates `sel` names.
    pub fn revoke(
        &self,
        origin: &Origin,
        sel: &Selector,
        reason: Option<&str>,
    ) -> Result<RevokeOutcome, Error> {
        if let Selector::KeyId(k) = sel {
            if k.is_empty() || k.len() > 256 || k.chars().any(|c| c.is_control()) {
                return Err(Error::InvalidInput(
                    "key_id must be 1 to 256 printable characters".into(),
                ));
            }
        }
        let reason = reason
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .unwrap_or("revoked by the admin")
            .to_string();
        check_reason(&reason)?;
        let via = match sel {
            Selector::Serial(_) => RevokeVia::Serial,
            Selector::KeyId(_) => RevokeVia::KeyId,
            Selector::User(_) => RevokeVia::User,
        };
        let (version, plan) =
            self.mutate(origin, format!("cert revoke {sel}"), |m, store, at| {
                let plan = match (store.cert_plan(sel, at)?, sel) {
                    (Some(p), _) => p,
                    // A known user without certificates: nothing to do, not an error.
                    (None, Selector::User(u)) if m.user(u).is_some() => Plan::default(),
                    (None, _) => return Err(Error::NoSuchCertificate(sel.to_string())),
                };
                let revs = self.revocations(&plan.revoke, at, &reason, via);
                let changes = if revs.is_empty() {
                    vec![]
                } else {
                    vec![Change::Revoke(revs)]
                };
                Ok((changes, plan))
            })?;
        let at = now();
        let revoked: Vec<IssuedCert> = plan
            .revoke
            .into_iter()
            .map(|mut c| {
                c.revoked = Some(RevocationInfo {
                    revoked_at: at,
                    reason: reason.clone(),
                    via: via.as_str().to_string(),
                });
                c
            })
            .collect();
        for c in &revoked {
            tracing::info!(serial = c.serial, key_id = %c.key_id, user = %c.user, via = %via, "certificate revoked");
        }
        Ok(RevokeOutcome {
            revoked,
            already_revoked: plan.already_revoked,
            expired: plan.expired,
            version,
        })
    }

    /// Issued certificates, newest first.
    pub fn certs(&self, q: &CertQuery) -> Result<Vec<IssuedCert>, Error> {
        Ok(self.store.certs(q)?)
    }
}
