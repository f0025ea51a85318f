//! The store seam: everything the authority keeps durably, behind one trait, so that the
//! embedded SQLite store ([`sqlite`]), the in-memory store ([`memory`], for tests and the
//! conformance suite) and later a PostgreSQL store are interchangeable.
//!
//! The contract every store keeps (the [`conformance`] suite checks it on each):
//! - [`Store::commit`] is atomic and durable before it returns: the changes, the bumped
//!   version and its `changes` line, the allocation counters, and one `@ca` chain record
//!   per revocation, all or nothing.
//! - [`Store::record`] (an issuance decision and its certificate) answers only after the
//!   decision, the certificate, its `@ca` chain record and the serial high-water mark are
//!   durable. Records are group-committed where the backend can; commits queued after
//!   records see them (a revocation sweep after an issuance finds its certificate).
//! - [`Store::audit_upload`] stores a batch only if it continues the host's chain, else
//!   records the rejection; both durable before the answer.
//! - Every commit also appends one `@ca` change record (who, from where, what) in the
//!   same transaction ([`crate::audit::change_event`]).
//! - Audit records and revocations are append-only.
//! - [`Store::prune`] deletes decisions and expired certificates older than asked, in
//!   bounded batches, each batch with its `@ca` retention record; nothing else.
//! - [`Store::load`] gives back exactly the committed state.
//!
//! Must never: answer before durability, or be read on the issuance or sync hot path (the
//! model serves those).

/// The `@ca` records a commit appends, in order (the stores write them in the commit's
/// transaction): one per certificate revocation, user or host.
pub fn commit_events(changes: &[crate::model::Change]) -> Vec<String> {
    use crate::audit::{host_revocation_event, revocation_event};
    use crate::model::Change;
    let mut out = Vec::new();
    for change in changes {
        match change {
            Change::Revoke(list) => out.extend(list.iter().map(revocation_event)),
            Change::RevokeHostCerts(list) => out.extend(list.iter().map(host_revocation_event)),
            Change::Alert(a) => out.push(
                serde_json::json!({
                    "type": "alert",
                    "kind": a.kind,
                    "host": a.host.as_ref().map(|h| h.as_str()),
                    "detail": a.detail,
                    "at_unix": a.at,
                })
                .to_string(),
            ),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
pub mod conformance;
pub mod copy;
pub mod memory;
pub mod postgres;
mod queue;
pub mod sqlite;

use crate::audit::{AuditOutcome, Entry, Filter, RejectionInfo, VerifyReport};
use crate::model::{Change, Model};
use crate::origin::Origin;
use smith_api::chain::AuditRecord;
use smith_api::{Decision, IssuedCert};
use smith_proto::{IdRange, UserName};
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the database is corrupt or from another program: {0}")]
    Corrupt(String),
    #[error(
        "the database schema version {found} is newer than this smith-ca supports ({supported}); \
         upgrade smith-ca"
    )]
    TooNew { found: i64, supported: i64 },
    /// A change the model should have refused reached the store (a programming error):
    /// the whole commit is abandoned.
    #[error("change refused by the store: {0}")]
    Conflict(String),
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The database cannot be reached (down, failing over, network cut): writes wait for
    /// it, reads come from memory.
    #[error("the CA database is unreachable: {0}")]
    Unavailable(String),
    /// Another replica committed first: this one must catch up ([`Store::follow`]) and
    /// plan again.
    #[error("another replica changed the CA meanwhile")]
    Stale,
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
    /// The shared database holds a change this smith-ca cannot read: a newer release
    /// wrote it. This replica must not serve (its policy would be wrong) until upgraded.
    #[error("{0}: a newer smith-ca release wrote it; upgrade this replica")]
    NewerRelease(String),
}

/// Why a queued write (issuance record, audit upload, commit) did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("the CA is overloaded (too many pending records); retry in a moment")]
    Overloaded,
    #[error("the CA is shutting down")]
    ShuttingDown,
    #[error("could not record durably: {0}")]
    Failed(String),
    #[error("the CA database is unreachable; retry in a moment")]
    Unavailable,
}

/// The answer to a queued write, once it is durable (or failed).
pub type Pending<T> = oneshot::Receiver<Result<T, WriteError>>;

/// Awaits a [`Pending`] answer.
pub async fn settled<T>(p: Pending<T>) -> Result<T, WriteError> {
    p.await.map_err(|_| WriteError::ShuttingDown)?
}

/// A [`Pending`] already answered.
pub fn answered<T>(r: Result<T, WriteError>) -> Pending<T> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(r);
    rx
}

/// A fresh random epoch (16 random bytes, hex).
pub fn new_epoch() -> String {
    let b: [u8; 16] = rand::random();
    hex::encode(b)
}

/// Life of the bootstrap admin token `smith-ca init` prints (it is also retired as soon
/// as a named admin exists).
pub const BOOTSTRAP_TTL_SECS: u64 = 86400;

/// How long issuance decisions and expired certificates are kept (`None`: forever). The
/// `@ca` chain keeps every decision's record whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Decisions older than this are deleted.
    pub decisions_secs: Option<u64>,
    /// Certificates expired for longer than this are deleted.
    pub certificates_secs: Option<u64>,
}

impl Default for Retention {
    /// 400 days (13 months) for both.
    fn default() -> Retention {
        Retention {
            decisions_secs: Some(400 * 86400),
            certificates_secs: Some(400 * 86400),
        }
    }
}

/// What one [`Store::prune`] batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub decisions: u64,
    pub certificates: u64,
}

/// The `@ca` record of a retention batch.
pub fn retention_event(
    p: &Pruned,
    decided_before: Option<u64>,
    expired_before: Option<u64>,
    at: u64,
) -> String {
    serde_json::json!({
        "type": "retention",
        "at_unix": at,
        "decisions": p.decisions,
        "certificates": p.certificates,
        "decided_before": decided_before,
        "expired_before": expired_before,
    })
    .to_string()
}

/// What a fresh store is initialized with (`smith-ca init`).
pub struct InitMeta<'a> {
    pub id_range: IdRange,
    pub user_ca_algorithm: &'a str,
    /// The bootstrap admin token's hash; it expires `bootstrap_ttl` after `now`.
    pub admin_token_hash: &'a str,
    pub now: u64,
    /// The new database's epoch (random: see [`crate::model::Model::epoch`]).
    pub epoch: &'a str,
    /// The bootstrap token's life (at most [`BOOTSTRAP_TTL_SECS`]).
    pub bootstrap_ttl: u64,
}

/// The model of a freshly initialized store: settings, the reserved sudo and users
/// gids, the bootstrap admin token, version 1.
pub fn initial_model(meta: &InitMeta<'_>) -> Result<Model, StoreError> {
    use crate::model::{IdKind, Restore, Settings, Token, TokenKind};
    let sudo_gid = smith_proto::PosixId::new(meta.id_range.start as u64)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let m = Model::restore(
        Restore {
            settings: Settings {
                id_range: meta.id_range,
                sudo_gid,
                users_gid: smith_proto::PosixId::new(meta.id_range.end as u64)
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
                        .saturating_add(meta.bootstrap_ttl.min(BOOTSTRAP_TTL_SECS)),
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
    Ok(m.reloaded())
}

/// The model's allocation cursors, which a commit persists (copied out so that no model
/// lock is held while the store writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub next_grant_id: u64,
    pub next_host_id: u64,
    pub next_id: u32,
    pub id_range: IdRange,
}

impl Counters {
    pub fn of(m: &Model) -> Counters {
        Counters {
            next_grant_id: m.next_grant_id(),
            next_host_id: m.next_host_id(),
            next_id: m.next_id(),
            id_range: m.settings().id_range,
        }
    }

    /// The counters after `changes` (ids they allocate move the cursors past them).
    pub fn after(&self, changes: &[Change]) -> Counters {
        let mut c = *self;
        for ch in changes {
            match ch {
                Change::AddGrant(g) => c.next_grant_id = c.next_grant_id.max(g.id + 1),
                Change::Enroll { host, .. } => c.next_host_id = c.next_host_id.max(host.id + 1),
                Change::AddUser(u) if c.id_range.contains(u.uid.get()) => {
                    c.next_id = c.next_id.max(u.uid.get().saturating_add(1))
                }
                Change::AddGroup(g) if c.id_range.contains(g.gid.get()) => {
                    c.next_id = c.next_id.max(g.gid.get().saturating_add(1))
                }
                _ => {}
            }
        }
        c
    }
}

/// One atomic change of the model.
#[derive(Debug, Clone)]
pub struct Commit {
    pub counters: Counters,
    pub changes: Vec<Change>,
    /// The version after the change, when it alters what hosts receive.
    pub new_version: Option<u64>,
    /// Who asked.
    pub origin: Origin,
    /// What was asked, for a person (the `changes` table).
    pub what: String,
    pub now: u64,
}

/// An issuance decision, allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRow {
    pub at: u64,
    pub user: String,
    pub allowed: bool,
    pub reason: String,
    pub scope: String,
    pub requested_ttl_secs: u64,
    pub source_ip: String,
    pub grant_ids: Vec<u64>,
}

/// A certificate issued with an allowed decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRow {
    pub serial: u64,
    pub key_id: String,
    pub principals: Vec<String>,
    pub scope: String,
    pub valid_after: u64,
    pub valid_before: u64,
    pub request_id: String,
    pub public_key_fp: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub decision: DecisionRow,
    pub cert: Option<CertRow>,
}

/// What a revocation request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Serial(u64),
    KeyId(String),
    User(UserName),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Serial(s) => write!(f, "serial {s}"),
            Selector::KeyId(k) => write!(f, "key ID {k}"),
            Selector::User(u) => write!(f, "user {u}"),
        }
    }
}

/// The certificates a selector names, sorted out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// To revoke now (still valid, not revoked yet), by serial.
    pub revoke: Vec<IssuedCert>,
    pub already_revoked: Vec<u64>,
    pub expired: Vec<u64>,
}

impl Plan {
    /// Sorts `certs` (with their revocations) as of `now`; `None` when empty.
    pub fn of(certs: Vec<IssuedCert>, now: u64) -> Option<Plan> {
        if certs.is_empty() {
            return None;
        }
        let mut p = Plan::default();
        for c in certs {
            if c.revoked.is_some() {
                p.already_revoked.push(c.serial);
            } else if c.valid_before <= now {
                p.expired.push(c.serial);
            } else {
                p.revoke.push(c);
            }
        }
        Some(p)
    }
}

/// Which SSH host certificates to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCertQuery {
    /// Only those issued to hosts of this name.
    pub host: Option<smith_proto::HostName>,
    /// Only those not expired and not revoked at `now`.
    pub valid_only: bool,
    pub limit: u32,
    pub now: u64,
}

/// What a host certificate revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCertSelector {
    Serial(u64),
    /// Every certificate of the host (by id).
    Host(u64),
}

/// The host certificates a selector names, sorted out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPlan {
    pub revoke: Vec<smith_api::HostCertInfo>,
    pub already_revoked: Vec<u64>,
    pub expired: Vec<u64>,
}

impl HostPlan {
    /// Sorts `certs` as of `now`; `None` when empty.
    pub fn of(certs: Vec<smith_api::HostCertInfo>, now: u64) -> Option<HostPlan> {
        if certs.is_empty() {
            return None;
        }
        let mut p = HostPlan::default();
        for c in certs {
            if c.revoked.is_some() {
                p.already_revoked.push(c.serial);
            } else if c.valid_before <= now {
                p.expired.push(c.serial);
            } else {
                p.revoke.push(c);
            }
        }
        Some(p)
    }
}

/// Which issued certificates to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertQuery {
    pub user: Option<UserName>,
    /// Only those not expired and not revoked at `now`.
    pub valid_only: bool,
    pub limit: u32,
    pub now: u64,
}

/// What the out-of-band classification reads ([`crate::audit::oob`]).
#[derive(Debug, Clone, Default)]
pub struct OobInputs {
    /// Every sshd event: (host, seq, event JSON).
    pub sshd_events: Vec<(String, u64, String)>,
    /// What this CA issued under each serial those events name.
    pub issued: std::collections::HashMap<u64, crate::audit::oob::Issued>,
    /// Users ever disabled, with when.
    pub disabled: std::collections::HashMap<String, u64>,
}

/// The state a store holds, loaded.
pub struct Loaded {
    pub model: Model,
    /// Highest certificate serial ever issued.
    pub last_serial: u64,
    /// Hosts' last contact: host id → (last seen, version synced).
    pub liveness: std::collections::HashMap<u64, (Option<u64>, Option<u64>)>,
}

/// The durable store (see the module doc for the contract).
pub trait Store: Send + Sync {
    /// Fills a fresh store: settings, the reserved sudo gid, the bootstrap admin token.
    fn initialize(&self, meta: &InitMeta<'_>) -> Result<(), StoreError>;
    /// Whether [`Store::initialize`] ran.
    fn is_initialized(&self) -> Result<bool, StoreError>;
    /// Everything the model holds, the serial high-water mark and hosts' liveness.
    fn load(&self, now: u64) -> Result<Loaded, StoreError>;

    /// Commits one change set atomically and durably (blocking: call it off the async
    /// runtime). Every record queued before it is committed first.
    fn commit(&self, c: Commit) -> Result<(), StoreError>;
    /// Queues an issuance decision (and its certificate); answers its decision id once
    /// durable.
    fn record(&self, r: Record) -> Pending<u64>;
    /// Queues a host's audit upload; answers the new head, or the stored rejection.
    fn audit_upload(&self, host: String, records: Vec<AuditRecord>) -> Pending<AuditOutcome>;
    /// Notes a host's contact; written with the next batch, nobody waits.
    fn host_seen(&self, host_id: u64, at: u64, synced_version: Option<u64>);
    /// Deletes at most `limit` decisions taken before `decided_before` and at most
    /// `limit` certificates that expired before `expired_before`, with a `@ca` retention
    /// record when anything went (blocking).
    fn prune(
        &self,
        decided_before: Option<u64>,
        expired_before: Option<u64>,
        limit: u32,
        now: u64,
    ) -> Result<Pruned, StoreError>;
    /// Finishes pending writes and stops background work.
    fn shutdown(&self);

    /// The most recent decisions, oldest first.
    fn decisions(&self, limit: u32, user: Option<&UserName>) -> Result<Vec<Decision>, StoreError>;
    /// Issued certificates, newest first.
    fn certs(&self, q: &CertQuery) -> Result<Vec<IssuedCert>, StoreError>;
    /// The certificates `sel` names, sorted as of `now`; `None` when it names none.
    fn cert_plan(&self, sel: &Selector, now: u64) -> Result<Option<Plan>, StoreError>;
    /// The still-valid, unrevoked certificates of `user`, by serial.
    fn valid_certs_of(&self, user: &UserName, now: u64) -> Result<Vec<IssuedCert>, StoreError>;
    /// SSH host certificates the host CA signed, newest first.
    fn host_certs(&self, q: &HostCertQuery) -> Result<Vec<smith_api::HostCertInfo>, StoreError>;
    /// The host certificates `sel` names, sorted as of `now`; `None` when it names none.
    fn host_cert_plan(
        &self,
        sel: HostCertSelector,
        now: u64,
    ) -> Result<Option<HostPlan>, StoreError>;
    /// The head of `host`'s audit chain: (last seq, its hash), (0, zeros) when empty.
    fn audit_head(&self, host: &str) -> Result<(u64, [u8; 32]), StoreError>;
    fn audit_list(&self, f: &Filter) -> Result<Vec<Entry>, StoreError>;
    /// Every chain recomputed from what is stored.
    fn audit_verify(&self) -> Result<VerifyReport, StoreError>;
    fn audit_rejections(&self, limit: u32) -> Result<Vec<RejectionInfo>, StoreError>;
    fn oob_inputs(&self) -> Result<OobInputs, StoreError>;

    /// Whether several replicas may write this store at once (then the authority follows
    /// it, see [`Store::follow`]).
    fn shared(&self) -> bool {
        false
    }
    /// Changes other replicas committed since this store last committed or followed, in
    /// commit order (blocking). A store with a single writer has none.
    fn follow(&self) -> Result<Vec<Followed>, StoreError> {
        Ok(Vec::new())
    }
    /// Whether [`Store::follow`] has changes waiting, as far as this store has seen
    /// (a hint: issuance checks it after its record is durable, see the authority).
    fn behind(&self) -> bool {
        false
    }
    /// Waits at most `timeout` for a change from another replica (blocking); returns
    /// whether one may have come. A store with a single writer just sleeps.
    fn wait_change(&self, timeout: std::time::Duration) -> bool {
        std::thread::sleep(timeout);
        false
    }
    /// Reserves `n` serials no other replica will use, durably (blocking). `None`: this
    /// store has one writer, and the authority counts from [`Loaded::last_serial`].
    fn reserve_serials(&self, _n: u64) -> Result<Option<std::ops::Range<u64>>, StoreError> {
        Ok(None)
    }
    /// Claims the background job `job` for `lease` (blocking): `true` when this replica
    /// is to run it now (no other replica holds an unexpired lease on it; a replica
    /// that claims again renews its own). Jobs that must run once across replicas (the
    /// retention sweep) ask first. A store with one writer always answers `true`.
    fn claim_job(&self, _job: &str, _lease: std::time::Duration) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Whether the database answers now (readiness).
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Takes this replica's turn to change the model (blocking, at most `wait`): while
    /// it holds the turn no other replica commits a change, so what it follows, plans
    /// and commits cannot go stale. Without a turn (a store with one writer, or `wait`
    /// passed because another replica holds it too long, e.g. frozen) the commit still
    /// checks that nothing came first ([`StoreError::Stale`]). Optimistic commits alone
    /// starve under a burst of changes on several replicas (a fleet enrolling at once):
    /// whoever waits on the log's lock finds it moved and plans again, every time.
    /// Returns whether the turn was taken; [`Store::end_turn`] gives it back.
    fn take_turn(&self, _wait: std::time::Duration) -> bool {
        false
    }
    /// Gives back the turn [`Store::take_turn`] took.
    fn end_turn(&self) {}
}

/// One change set another replica committed.
#[derive(Debug, Clone)]
pub struct Followed {
    pub changes: Vec<Change>,
    pub new_version: Option<u64>,
    /// When it was committed (Unix seconds).
    pub at: u64,
}

/// The refusals every store makes for `changes` against the model `m` they would apply
/// to (what the SQLite schema's constraints refuse): an id allocated to another name, a
/// second live user or group of one name, an enrollment token used twice. `host_cert`
/// and `revoked` say whether a host certificate serial is already recorded and whether
/// a serial is already revoked (as the store knows them).
pub fn refusals(
    m: &Model,
    changes: &[Change],
    host_cert: &dyn Fn(u64) -> bool,
    revoked: &dyn Fn(u64) -> bool,
    host_revoked: &dyn Fn(u64) -> bool,
) -> Result<(), StoreError> {
    use crate::model::IdKind;
    use std::collections::HashMap;
    let conflict = StoreError::Conflict;
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
                if let Some(c) = list.iter().find(|c| host_cert(c.serial)) {
                    return Err(conflict(format!("host certificate {} exists", c.serial)));
                }
            }
            Change::RevokeHostCerts(list) => {
                if let Some(r) = list.iter().find(|r| host_revoked(r.serial)) {
                    return Err(conflict(format!(
                        "host certificate {} is already revoked",
                        r.serial
                    )));
                }
            }
            Change::Revoke(list) => {
                if let Some(r) = list.iter().find(|r| revoked(r.serial)) {
                    return Err(conflict(format!(
                        "certificate {} is already revoked",
                        r.serial
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}
