//! The audit trail's commands: hosts' uploads and chain heads, and the admin's queries
//! (records, verification, rejections, out-of-band logins, issuance decisions, and the
//! record of every change: who, from where, what, read back from the `@ca` chain).
//!
//! Must never: store a batch that does not continue the host's chain (the store checks
//! it in the same transaction), or answer a host before its records are durable.

use super::{now, Authority, Error};
use crate::audit::oob;
use crate::audit::{AuditOutcome, Entry, Filter, RejectionInfo, VerifyReport};
use crate::store::settled;
use crate::store::Pruned;
use smith_api::chain::AuditRecord;
use smith_api::{ChangeInfo, Decision};
use smith_proto::{HostName, UserName};

/// Most records in one upload.
pub const MAX_RECORDS: usize = 1000;

/// Which changes to list.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    /// Only this actor's (an admin's name, `scim`, an OIDC subject, a host).
    pub actor: Option<String>,
    /// Only since this time.
    pub since: Option<u64>,
    pub limit: u32,
}

/// A change record's event as listed.
fn change_info(e: &Entry) -> ChangeInfo {
    let s = |k: &str| e.event.get(k).and_then(|v| v.as_str()).map(str::to_string);
    ChangeInfo {
        seq: e.seq,
        at: e.at_unix,
        origin: s("origin").unwrap_or_default(),
        actor: s("actor").unwrap_or_default(),
        source: s("source"),
        token_id: s("token_id"),
        what: s("what").unwrap_or_default(),
        version: e.event.get("version").and_then(|v| v.as_u64()),
        hash: e.hash.clone(),
    }
}

impl Authority {
    /// Verifies and stores a host's upload: the new head, or why it was refused (the
    /// refusal is stored too).
    pub async fn audit_upload(
        &self,
        host: &HostName,
        records: Vec<AuditRecord>,
    ) -> Result<AuditOutcome, Error> {
        if records.is_empty() {
            return Err(Error::InvalidInput(
                "an audit batch needs at least one record".into(),
            ));
        }
        if records.len() > MAX_RECORDS {
            return Err(Error::InvalidInput(format!(
                "at most {MAX_RECORDS} records per batch"
            )));
        }
        Ok(settled(self.store.audit_upload(host.to_string(), records)).await?)
    }

    /// The CA's head of `host`'s chain.
    pub fn audit_head(&self, host: &HostName) -> Result<(u64, [u8; 32]), Error> {
        Ok(self.store.audit_head(host.as_str())?)
    }

    pub fn audit_list(&self, f: &Filter) -> Result<Vec<Entry>, Error> {
        Ok(self.store.audit_list(f)?)
    }

    /// Every chain recomputed from the store.
    pub fn audit_verify(&self) -> Result<VerifyReport, Error> {
        let r = self.store.audit_verify()?;
        if let Some(b) = &r.first_break {
            tracing::error!(host = %b.host, seq = b.seq, reason = %b.reason, "audit verify: a chain is broken");
        }
        Ok(r)
    }

    pub fn audit_rejections(&self, limit: u32) -> Result<Vec<RejectionInfo>, Error> {
        Ok(self.store.audit_rejections(limit)?)
    }

    /// sshd logins that did not go through this CA's certificates, and hot spots of
    /// failures.
    pub fn out_of_band(&self, cfg: oob::Config) -> Result<Vec<oob::Finding>, Error> {
        let inputs = self.store.oob_inputs()?;
        let cas = oob::fingerprints(&self.user_ca_keys());
        Ok(oob::classify(
            &inputs.sshd_events,
            &inputs.issued,
            &inputs.disabled,
            &cas,
            cfg,
        ))
    }

    /// The most recent changes (from the `@ca` chain), oldest first.
    pub fn changes(&self, f: &ChangeFilter) -> Result<Vec<ChangeInfo>, Error> {
        let entries = self.store.audit_list(&Filter {
            host: Some(crate::audit::CA_CHAIN.into()),
            kind: Some(crate::audit::CHANGE_KIND.into()),
            user: f.actor.clone(),
            since: f.since,
            limit: f.limit,
        })?;
        Ok(entries.iter().map(change_info).collect())
    }

    /// Deletes decisions and expired certificates older than `r` says, in batches (so
    /// issuance interleaves), each with its `@ca` retention record. Blocking.
    pub fn apply_retention(&self, r: crate::store::Retention) -> Result<Pruned, Error> {
        const BATCH: u32 = 5000;
        // Once across replicas: the first to claim the sweep holds it for 50 minutes.
        if !self
            .store
            .claim_job("retention", std::time::Duration::from_secs(50 * 60))?
        {
            tracing::debug!("retention: another replica holds the sweep");
            return Ok(Pruned::default());
        }
        let at = now();
        let decided_before = r.decisions_secs.map(|s| at.saturating_sub(s));
        let expired_before = r.certificates_secs.map(|s| at.saturating_sub(s));
        let mut total = Pruned::default();
        loop {
            let p = self
                .store
                .prune(decided_before, expired_before, BATCH, now())?;
            total.decisions += p.decisions;
            total.certificates += p.certificates;
            if p.decisions < BATCH as u64 && p.certificates < BATCH as u64 {
                break;
            }
        }
        if total != Pruned::default() {
            tracing::info!(
                decisions = total.decisions,
                certificates = total.certificates,
                "retention: old decisions and expired certificates deleted (their @ca records stay)"
            );
        }
        Ok(total)
    }

    /// The most recent issuance decisions, oldest first.
    pub fn decisions(&self, limit: u32, user: Option<&UserName>) -> Result<Vec<Decision>, Error> {
        Ok(self.store.decisions(limit, user)?)
    }
}
