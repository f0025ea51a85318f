//! The audit trail's commands: hosts' uploads and chain heads, and the admin's queries
//! (records, verification, rejections, out-of-band logins, issuance decisions).
//!
//! Must never: store a batch that does not continue the host's chain (the store checks
//! it in the same transaction), or answer a host before its records are durable.

use super::{Authority, Error};
use crate::audit::oob;
use crate::audit::{AuditOutcome, Entry, Filter, RejectionInfo, VerifyReport};
use crate::store::settled;
use smith_api::chain::AuditRecord;
use smith_api::Decision;
use smith_proto::{HostName, UserName};

/// Most records in one upload.
pub const MAX_RECORDS: usize = 1000;

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
        let cas = oob::fingerprints(self.user_ca_keys());
        Ok(oob::classify(
            &inputs.sshd_events,
            &inputs.issued,
            &inputs.disabled,
            &cas,
            cfg,
        ))
    }

    /// The most recent issuance decisions, oldest first.
    pub fn decisions(&self, limit: u32, user: Option<&UserName>) -> Result<Vec<Decision>, Error> {
        Ok(self.store.decisions(limit, user)?)
    }
}
