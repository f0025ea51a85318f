//! The in-memory store: the same contract as the SQLite store without durability across
//! processes, for unit tests of the authority and as the second implementation the
//! [`super::conformance`] suite runs against (what both pass is the contract, not one
//! backend's accident).
//!
//! It refuses what the SQLite schema refuses (an id allocated to another name, a second
//! live user or group of one name, an enrollment token used twice, a serial revoked twice,
//! a repeated serial or request id), so a planning bug fails here as it would there.
//!
//! Must never: be used by `smith-ca serve` (nothing survives a restart).

use crate::audit::{
    self, check_batch, derived, AuditOutcome, ChainVerifier, Entry, Filter, RejectionInfo,
    StoredRecord, VerifyReport, CA_CHAIN,
};
use crate::model::{
    Change, HostCertRevocation, HostSshCert, IdKind, Model, Revocation, Settings, Token, TokenKind,
};
use crate::store::{
    answered, CertQuery, CertRow, Commit, DecisionRow, HostCertQuery, HostCertSelector, HostPlan,
    InitMeta, Loaded, OobInputs, Pending, Plan, Pruned, Record, Selector, Store, StoreError,
    WriteError,
};
use smith_api::chain::{self, AuditRecord, GENESIS};
use smith_api::{Decision, HostCertInfo, IssuedCert, RevocationInfo};
use smith_proto::{PosixId, UserName};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

struct StoredCert {
    row: CertRow,
    user: String,
    issued_at: u64,
}

struct StoredAudit {
    record: AuditRecord,
    received_at: u64,
    columns: (String, String, i64),
}

#[derive(Default)]
struct State {
    model: Option<Model>,
    last_serial: u64,
    liveness: HashMap<u64, (Option<u64>, Option<u64>)>,
    /// (decision id, row, serial, key id), in id order.
    decisions: Vec<(u64, DecisionRow, Option<u64>, Option<String>)>,
    certs: BTreeMap<u64, StoredCert>,
    request_ids: std::collections::HashSet<String>,
    /// Every revocation ever, by serial.
    revocations: BTreeMap<u64, Revocation>,
    /// Every SSH host certificate signed, by serial.
    host_certs: BTreeMap<u64, HostSshCert>,
    /// Every host certificate revocation ever, by serial.
    host_revocations: BTreeMap<u64, HostCertRevocation>,
    audit: BTreeMap<String, Vec<StoredAudit>>,
    rejections: Vec<RejectionInfo>,
    /// (version, at, what, origin)
    changes: Vec<(u64, u64, String, String)>,
    /// Users ever disabled, with when (cleared when a user of that name is re-created).
    disabled_at: HashMap<String, u64>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn conflict(s: String) -> StoreError {
    StoreError::Conflict(s)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl State {
    fn model(&self) -> Result<&Model, StoreError> {
        self.model
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("the store was never initialized".into()))
    }

    fn head(&self, host: &str) -> (u64, [u8; 32]) {
        match self.audit.get(host).and_then(|v| v.last()) {
            Some(r) => (
                r.record.seq,
                chain::parse_hash(&r.record.hash).unwrap_or(GENESIS),
            ),
            None => (0, GENESIS),
        }
    }

    fn append_ca(&mut self, event: String, at: u64) {
        let (seq, hash) = self.head(CA_CHAIN);
        let rec = chain::next_record(CA_CHAIN, seq, &hash, event);
        let columns = derived(&rec.event);
        self.audit
            .entry(CA_CHAIN.to_string())
            .or_default()
            .push(StoredAudit {
                record: rec,
                received_at: at,
                columns,
            });
    }

    /// The refusals the SQLite schema would make for `changes` against `m`.
    fn check(&self, m: &Model, changes: &[Change]) -> Result<(), StoreError> {
        let mut planned_ids: HashMap<u32, (IdKind, String)> = HashMap::new();
        let mut id_ok = |id: u32, kind: IdKind, name: &str| -> Result<(), StoreError> {
            let owner = m
                .id_owner(id)
                .cloned()
                .or_else(|| planned_ids.get(&id).cloned());
            match owner {
                Some((k, n)) if (k, n.as_str()) != (kind, name) => Err(conflict(format!(
                    "id {id} is already allocated to {} '{n}'",
                    k.as_str()
                ))),
                _ => {
                    planned_ids.insert(id, (kind, name.to_string()));
                    Ok(())
                }
            }
        };
        for c in changes {
            match c {
                Change::AddUser(u) => {
                    id_ok(u.uid.get(), IdKind::User, u.name.as_str())?;
                    if m.user(&u.name).is_some() {
                        return Err(conflict(format!(
                            "user '{}' already exists in the database",
                            u.name
                        )));
                    }
                }
                Change::AddGrant(g) => {
                    if let Some(gid) = g.cert.sudo.gid {
                        let name = smith_proto::sudorules::rule_group(g.id);
                        id_ok(gid, IdKind::Group, &name)?;
                    }
                }
                Change::AddGroup(g) => {
                    id_ok(g.gid.get(), IdKind::Group, g.name.as_str())?;
                    if m.group(&g.name).is_some() {
                        return Err(conflict(format!(
                            "group '{}' already exists in the database",
                            g.name
                        )));
                    }
                }
                Change::Enroll { token_hash, .. }
                    if m.token(token_hash)
                        .is_none_or(|t| t.used_at.is_some() || t.uses >= t.max_uses) =>
                {
                    return Err(conflict("enrollment token was used concurrently".into()));
                }
                Change::HostSshCerts(list) => {
                    if let Some(c) = list
                        .iter()
                        .find(|c| self.host_certs.contains_key(&c.serial))
                    {
                        return Err(conflict(format!("host certificate {} exists", c.serial)));
                    }
                }
                Change::RevokeHostCerts(list) => {
                    if let Some(r) = list
                        .iter()
                        .find(|r| self.host_revocations.contains_key(&r.serial))
                    {
                        return Err(conflict(format!(
                            "host certificate {} is already revoked",
                            r.serial
                        )));
                    }
                }
                Change::Revoke(list) => {
                    for r in list {
                        if self.revocations.contains_key(&r.serial) {
                            return Err(conflict(format!(
                                "certificate {} is already revoked",
                                r.serial
                            )));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn host_cert_info(&self, c: &HostSshCert) -> HostCertInfo {
        HostCertInfo {
            serial: c.serial,
            host: c.host.clone(),
            key_id: c.key_id.clone(),
            principals: c.principals.iter().map(|p| p.to_string()).collect(),
            key_fingerprint: c.key_fingerprint.clone(),
            valid_after: c.valid_after,
            valid_before: c.valid_before,
            issued_at: c.issued_at,
            revoked: self
                .host_revocations
                .get(&c.serial)
                .map(|r| RevocationInfo {
                    revoked_at: r.revoked_at,
                    reason: r.reason.clone(),
                    via: r.via.clone(),
                }),
        }
    }

    fn cert_info(&self, serial: u64, c: &StoredCert) -> IssuedCert {
        IssuedCert {
            serial,
            key_id: c.row.key_id.clone(),
            user: c.user.clone(),
            principals: c.row.principals.clone(),
            scope: c.row.scope.clone(),
            valid_after: c.row.valid_after,
            valid_before: c.row.valid_before,
            issued_at: c.issued_at,
            revoked: self.revocations.get(&serial).map(|r| RevocationInfo {
                revoked_at: r.revoked_at,
                reason: r.reason.clone(),
                via: r.via.as_str().to_string(),
            }),
        }
    }
}

impl Store for MemoryStore {
    fn initialize(&self, meta: &InitMeta<'_>) -> Result<(), StoreError> {
        let mut st = self.state();
        if st.model.is_some() {
            return Err(conflict("the store is already initialized".into()));
        }
        let sudo_gid = PosixId::new(meta.id_range.start as u64)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut m = Model::restore(
            crate::model::Restore {
                settings: Settings {
                    id_range: meta.id_range,
                    sudo_gid,
                    users_gid: PosixId::new(meta.id_range.end as u64)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                },
                version: 1,
                next_id: meta.id_range.start + 1,
                next_grant_id: 1,
                next_host_id: 1,
                ids: vec![
                    (
                        sudo_gid.get(),
                        IdKind::Group,
                        smith_proto::names::SUDO_GROUP.to_string(),
                    ),
                    (
                        meta.id_range.end,
                        IdKind::Group,
                        smith_proto::names::USERS_GROUP.to_string(),
                    ),
                ],
                users: vec![],
                groups: vec![],
                memberships: vec![],
                grants: vec![],
                tokens: vec![(
                    meta.admin_token_hash.to_string(),
                    Token::bearer(
                        TokenKind::Bootstrap,
                        "bootstrap",
                        meta.now,
                        meta.now
                            .saturating_add(meta.bootstrap_ttl.min(super::BOOTSTRAP_TTL_SECS)),
                        "smith-ca init",
                    ),
                )],
                hosts: vec![],
                host_certs: vec![],
                revocations: vec![],
                host_revocations: vec![],
                idp_groups: vec![],
                epoch: meta.epoch.to_string(),
                ca_keys: Default::default(),
            },
            meta.now,
        );
        m = m.reloaded();
        st.model = Some(m);
        Ok(())
    }

    fn is_initialized(&self) -> Result<bool, StoreError> {
        Ok(self.state().model.is_some())
    }

    fn load(&self, now: u64) -> Result<Loaded, StoreError> {
        let st = self.state();
        let mut model = st.model()?.reloaded();
        model.rebuild_krl(now);
        model.rebuild_host_krl(now);
        Ok(Loaded {
            model,
            last_serial: st.last_serial,
            liveness: st.liveness.clone(),
        })
    }

    fn commit(&self, c: Commit) -> Result<(), StoreError> {
        let mut st = self.state();
        let current = st.model()?;
        st.check(current, &c.changes)?;
        let mut next = current.clone();
        next.apply(&c.changes, c.new_version);
        for change in &c.changes {
            match change {
                Change::AddUser(u) => {
                    st.disabled_at.remove(u.name.as_str());
                    if u.is_disabled() {
                        st.disabled_at.insert(u.name.to_string(), c.now);
                    }
                }
                Change::DisableUser { name, at, .. } => {
                    st.disabled_at.entry(name.to_string()).or_insert(*at);
                }
                Change::EnableUser { name } => {
                    st.disabled_at.remove(name.as_str());
                }
                Change::DeleteUser { name, at } => {
                    st.disabled_at.entry(name.to_string()).or_insert(*at);
                }
                Change::Revoke(list) => {
                    for r in list {
                        st.revocations.insert(r.serial, r.clone());
                    }
                }
                Change::HostSshCerts(list) => {
                    for h in list {
                        st.host_certs.insert(h.serial, h.clone());
                    }
                }
                Change::RevokeHostCerts(list) => {
                    for r in list {
                        st.host_revocations.insert(r.serial, r.clone());
                    }
                }
                _ => {}
            }
        }
        for event in super::commit_events(&c.changes) {
            st.append_ca(event, c.now);
        }
        if let Some(v) = c.new_version {
            st.changes
                .push((v, c.now, c.what.clone(), c.origin.to_string()));
        }
        st.append_ca(audit::change_event(&c), c.now);
        st.model = Some(next);
        Ok(())
    }

    fn record(&self, r: Record) -> Pending<u64> {
        let mut st = self.state();
        if let Some(c) = &r.cert {
            if st.certs.contains_key(&c.serial) || st.request_ids.contains(&c.request_id) {
                return answered(Err(WriteError::Failed(format!(
                    "serial {} or request id {} is already recorded",
                    c.serial, c.request_id
                ))));
            }
        }
        let id = st.decisions.len() as u64 + 1;
        let serial = r.cert.as_ref().map(|c| c.serial);
        let key_id = r.cert.as_ref().map(|c| c.key_id.clone());
        st.append_ca(
            audit::decision_event(id, &r.decision, serial, key_id.as_deref()),
            now_secs(),
        );
        if let Some(c) = r.cert {
            st.last_serial = st.last_serial.max(c.serial);
            st.request_ids.insert(c.request_id.clone());
            st.certs.insert(
                c.serial,
                StoredCert {
                    user: r.decision.user.clone(),
                    issued_at: r.decision.at,
                    row: c,
                },
            );
        }
        st.decisions.push((id, r.decision, serial, key_id));
        answered(Ok(id))
    }

    fn audit_upload(&self, host: String, records: Vec<AuditRecord>) -> Pending<AuditOutcome> {
        let mut st = self.state();
        let now = now_secs();
        let outcome = match check_batch(st.head(&host), &host, &records) {
            Ok(head) => {
                let chain = st.audit.entry(host).or_default();
                for r in records {
                    let columns = derived(&r.event);
                    chain.push(StoredAudit {
                        record: r,
                        received_at: now,
                        columns,
                    });
                }
                Ok(audit::ack_of(head))
            }
            Err(rej) => {
                let id = st.rejections.len() as u64 + 1;
                st.rejections.push(RejectionInfo {
                    id,
                    host: host.clone(),
                    seq: rej.seq,
                    code: rej.code.as_str().to_string(),
                    reason: rej.reason.clone(),
                    at: now,
                    first_seq: records.first().map(|r| r.seq).unwrap_or(0),
                    last_seq: records.last().map(|r| r.seq).unwrap_or(0),
                    records: records.len() as u64,
                });
                Err(rej)
            }
        };
        answered(Ok(outcome))
    }

    fn host_seen(&self, host_id: u64, at: u64, synced_version: Option<u64>) {
        let mut st = self.state();
        let e = st.liveness.entry(host_id).or_insert((None, None));
        e.0 = Some(e.0.map_or(at, |s| s.max(at)));
        if synced_version.is_some() {
            e.1 = synced_version;
        }
    }

    fn prune(
        &self,
        decided_before: Option<u64>,
        expired_before: Option<u64>,
        limit: u32,
        now: u64,
    ) -> Result<Pruned, StoreError> {
        let mut st = self.state();
        let mut p = Pruned::default();
        if let Some(before) = decided_before {
            let old: Vec<usize> = st
                .decisions
                .iter()
                .enumerate()
                .filter(|(_, d)| d.1.at < before)
                .map(|(i, _)| i)
                .take(limit as usize)
                .collect();
            p.decisions = old.len() as u64;
            for i in old.into_iter().rev() {
                st.decisions.remove(i);
            }
        }
        if let Some(before) = expired_before {
            let old: Vec<u64> = st
                .certs
                .iter()
                .filter(|(_, c)| c.row.valid_before < before)
                .map(|(s, _)| *s)
                .take(limit as usize)
                .collect();
            p.certificates = old.len() as u64;
            for s in old {
                st.certs.remove(&s);
            }
        }
        if p != Pruned::default() {
            st.append_ca(
                super::retention_event(&p, decided_before, expired_before, now),
                now,
            );
        }
        Ok(p)
    }

    fn shutdown(&self) {}

    fn decisions(&self, limit: u32, user: Option<&UserName>) -> Result<Vec<Decision>, StoreError> {
        let st = self.state();
        let mut out: Vec<Decision> = st
            .decisions
            .iter()
            .rev()
            .filter(|(_, d, _, _)| user.is_none_or(|u| d.user == u.as_str()))
            .take(limit as usize)
            .map(|(id, d, serial, key_id)| Decision {
                id: *id,
                at: d.at,
                user: d.user.clone(),
                allowed: d.allowed,
                reason: d.reason.clone(),
                scope: d.scope.clone(),
                requested_ttl_secs: d.requested_ttl_secs,
                serial: *serial,
                key_id: key_id.clone(),
                source: d.source_ip.clone(),
            })
            .collect();
        out.reverse();
        Ok(out)
    }

    fn certs(&self, q: &CertQuery) -> Result<Vec<IssuedCert>, StoreError> {
        let st = self.state();
        Ok(st
            .certs
            .iter()
            .rev()
            .filter(|(_, c)| q.user.as_ref().is_none_or(|u| c.user == u.as_str()))
            .map(|(s, c)| st.cert_info(*s, c))
            .filter(|c| !q.valid_only || (c.valid_before > q.now && c.revoked.is_none()))
            .take(q.limit as usize)
            .collect())
    }

    fn cert_plan(&self, sel: &Selector, now: u64) -> Result<Option<Plan>, StoreError> {
        let st = self.state();
        let certs: Vec<IssuedCert> = st
            .certs
            .iter()
            .filter(|(serial, c)| match sel {
                Selector::Serial(s) => *serial == s,
                Selector::KeyId(k) => k.contains(':') && c.row.key_id == *k,
                Selector::User(u) => c.user == u.as_str(),
            })
            .map(|(s, c)| st.cert_info(*s, c))
            .collect();
        Ok(Plan::of(certs, now))
    }

    fn valid_certs_of(&self, user: &UserName, now: u64) -> Result<Vec<IssuedCert>, StoreError> {
        let st = self.state();
        Ok(st
            .certs
            .iter()
            .filter(|(s, c)| {
                c.user == user.as_str()
                    && c.row.valid_before > now
                    && !st.revocations.contains_key(s)
            })
            .map(|(s, c)| st.cert_info(*s, c))
            .collect())
    }

    fn host_certs(&self, q: &HostCertQuery) -> Result<Vec<HostCertInfo>, StoreError> {
        let st = self.state();
        let mut all: Vec<&HostSshCert> = st
            .host_certs
            .values()
            .filter(|c| q.host.as_ref().is_none_or(|h| &c.host == h))
            .collect();
        all.sort_by_key(|c| std::cmp::Reverse((c.issued_at, c.serial)));
        Ok(all
            .into_iter()
            .map(|c| st.host_cert_info(c))
            .filter(|c| !q.valid_only || (c.valid_before > q.now && c.revoked.is_none()))
            .take(q.limit as usize)
            .collect())
    }

    fn host_cert_plan(
        &self,
        sel: HostCertSelector,
        now: u64,
    ) -> Result<Option<HostPlan>, StoreError> {
        let st = self.state();
        let certs = st
            .host_certs
            .values()
            .filter(|c| match sel {
                HostCertSelector::Serial(s) => c.serial == s,
                HostCertSelector::Host(h) => c.host_id == h,
            })
            .map(|c| st.host_cert_info(c))
            .collect();
        Ok(HostPlan::of(certs, now))
    }

    fn audit_head(&self, host: &str) -> Result<(u64, [u8; 32]), StoreError> {
        Ok(self.state().head(host))
    }

    fn audit_list(&self, f: &Filter) -> Result<Vec<Entry>, StoreError> {
        let st = self.state();
        let mut rows: Vec<(&String, &StoredAudit)> = st
            .audit
            .iter()
            .filter(|(h, _)| f.host.as_ref().is_none_or(|x| x == *h))
            .flat_map(|(h, v)| v.iter().map(move |r| (h, r)))
            .filter(|(_, r)| f.user.as_ref().is_none_or(|u| &r.columns.1 == u))
            .filter(|(_, r)| f.kind.as_ref().is_none_or(|k| &r.columns.0 == k))
            .filter(|(_, r)| {
                f.since
                    .is_none_or(|s| r.columns.2 >= s.min(i64::MAX as u64) as i64)
            })
            .collect();
        // The most recent `limit` by reception (ties: host, seq descending), shown in
        // chain order per host.
        rows.sort_by(|a, b| {
            (b.1.received_at, b.0, b.1.record.seq).cmp(&(a.1.received_at, a.0, a.1.record.seq))
        });
        rows.truncate(f.limit.max(1) as usize);
        rows.sort_by(|a, b| (a.0, a.1.record.seq).cmp(&(b.0, b.1.record.seq)));
        Ok(rows
            .into_iter()
            .map(|(h, r)| Entry {
                host: h.clone(),
                seq: r.record.seq,
                kind: r.columns.0.clone(),
                user: r.columns.1.clone(),
                at_unix: r.columns.2.max(0) as u64,
                received_at: r.received_at,
                hash: r.record.hash.clone(),
                event: serde_json::from_str(&r.record.event)
                    .unwrap_or_else(|_| serde_json::Value::String(r.record.event.clone())),
            })
            .collect())
    }

    fn audit_verify(&self) -> Result<VerifyReport, StoreError> {
        let st = self.state();
        let mut v = ChainVerifier::default();
        for (host, rows) in &st.audit {
            for r in rows {
                v.push(StoredRecord {
                    host: host.clone(),
                    record: r.record.clone(),
                    columns: r.columns.clone(),
                });
            }
        }
        Ok(v.finish())
    }

    fn audit_rejections(&self, limit: u32) -> Result<Vec<RejectionInfo>, StoreError> {
        let st = self.state();
        let skip = st.rejections.len().saturating_sub(limit.max(1) as usize);
        Ok(st.rejections[skip..].to_vec())
    }

    fn oob_inputs(&self) -> Result<OobInputs, StoreError> {
        let st = self.state();
        let mut out = OobInputs {
            disabled: st.disabled_at.clone(),
            ..Default::default()
        };
        for (host, rows) in &st.audit {
            for r in rows.iter().filter(|r| r.columns.0 == "sshd") {
                out.sshd_events
                    .push((host.clone(), r.record.seq, r.record.event.clone()));
                let serial = serde_json::from_str::<serde_json::Value>(&r.record.event)
                    .ok()
                    .and_then(|v| v.get("serial")?.as_u64());
                if let Some(c) = serial.and_then(|s| st.certs.get(&s).map(|c| (s, c))) {
                    out.issued.insert(
                        c.0,
                        crate::audit::oob::Issued {
                            user: c.1.user.clone(),
                            key_id: c.1.row.key_id.clone(),
                            principals: c.1.row.principals.clone(),
                        },
                    );
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_memory_store_passes_the_conformance_suite() {
        super::super::conformance::run_all(|| Box::new(super::MemoryStore::new()));
    }
}
