//! The authority: the one place where the CA's rules live. It owns the in-memory
//! [`Model`], the durable [`Store`], the signers and the TLS root, and exposes typed
//! commands (users, groups, grants, tokens, hosts, issuance, revocation, audit) that take
//! an [`Origin`] and return typed results or a typed [`Error`]. HTTP, SCIM and OIDC
//! sign-in are adapters over it: they parse, call, and map errors to their transport.
//!
//! Every change goes through one path ([`Authority::mutate`]): plan against the model
//! (mutations are serialized, so the plan cannot go stale), commit to the store in one
//! transaction, apply to the model, wake long-polling hosts. A change that disables or
//! deletes a user also revokes every still-valid certificate of theirs in the same
//! transaction; after the model is updated (from then on issuance refuses the user) a
//! second pass revokes any certificate whose issuance was in flight and got committed
//! meanwhile, and issuance checks the model again after its record is durable.
//!
//! Commands that touch the store block (call them off the async runtime, e.g. with
//! `spawn_blocking`); issuance and audit uploads are async (they await the store's group
//! commit).
//!
//! Must never: change the model without a committed transaction, hold the model lock
//! across an await point, or sign anything no grant allows.

mod audit;
mod directory;
mod error;
mod grants;
mod health;
mod hosts;
mod identity;
mod issuance;
pub mod keys;
mod ratelimit;
mod reach;
mod revocation;
mod rotation;
mod tokens;

pub use crate::store::Retention;
pub use crate::store::{CertQuery, Selector};
pub use audit::ChangeFilter;
pub use directory::{gecos_from, MemberOp, NewGroup, NewUser, UserUpdate};
pub use error::Error;
pub use grants::NewGrant;
pub use health::Readiness;
pub use hosts::{EnrollInput, Enrolled, HostCertTarget, HostTokenInput};
pub use identity::{bound_user, plan_sign_in};
pub use issuance::{Caller, HostTarget, IssueError, IssueInput, Issued};
pub use keys::Keys;
pub use ratelimit::RateLimit;
pub use revocation::RevokeOutcome;
pub use rotation::{RotateInput, RotationStatus};
pub use tokens::{check_admin_name, Minted, TokenInfo};

use crate::auth::{AuthError, Authenticated, Authenticator, TokenAuthenticator};
use crate::datadir::DataDir;
use crate::model::{Change, Model, Revocation, RevokeVia};
use crate::origin::Origin;
use crate::store::{Commit, Counters, Store, StoreError};
use crate::tlsca::TlsRoot;

use smith_proto::UserName;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::sync::watch;

/// The CA-wide settings of a running authority.
#[derive(Debug, Clone)]
pub struct Config {
    /// Longest user certificate, whatever the grants say.
    pub max_cert_ttl: Duration,
    /// Lifetime of hosts' mTLS client certificates.
    pub host_cert_ttl: Duration,
    /// Validity of SSH host certificates.
    pub host_ssh_cert_ttl: Duration,
    /// Lifetime of user tokens minted without one.
    pub default_user_token_ttl: Duration,
    /// How long a host's replaced client certificate keeps working after a renewal.
    pub host_cert_overlap: Duration,
    /// IdP group ids (as the ID token's groups claim carries them) whose members may
    /// sign in as named admins (`smith-ca admin login`); empty: nobody.
    pub admin_groups: Vec<String>,
    /// Lifetime of a named admin's token from an IdP sign-in.
    pub admin_session_ttl: Duration,
    /// Certificate requests per principal.
    pub issuance_rate: RateLimit,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_cert_ttl: Duration::from_secs(24 * 3600),
            host_cert_ttl: Duration::from_secs(24 * 3600),
            host_ssh_cert_ttl: Duration::from_secs(90 * 86400),
            default_user_token_ttl: Duration::from_secs(7 * 86400),
            host_cert_overlap: Duration::from_secs(hosts::DEFAULT_CERT_OVERLAP_SECS),
            admin_groups: vec![],
            admin_session_ttl: Duration::from_secs(12 * 3600),
            issuance_rate: RateLimit::default(),
        }
    }
}

/// When a host last talked to the CA (kept beside the model, not in it: it changes on
/// every sync and is no policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Liveness {
    pub last_seen: Option<u64>,
    pub synced_version: Option<u64>,
}

pub struct Authority {
    model: RwLock<Model>,
    store: Box<dyn Store>,
    /// Serializes mutations: plan, commit and apply happen one change at a time.
    mutations: Mutex<()>,
    auth: Box<dyn Authenticator>,
    keys: Keys,
    cfg: Config,
    /// Last certificate serial handed out (a store with one writer).
    serial: AtomicU64,
    /// Serials reserved from a shared store, not handed out yet (`None`: the store has
    /// one writer and `serial` counts).
    serial_block: Option<Mutex<std::ops::Range<u64>>>,
    /// Set when the follower thread must stop.
    stopping: std::sync::atomic::AtomicBool,
    version_tx: watch::Sender<u64>,
    liveness: Mutex<HashMap<u64, Liveness>>,
    /// Per host, its current client certificate's serial once a request used it (a
    /// renewal from the previous one is then a second holder, not a retry).
    cert_seen: Mutex<HashMap<u64, String>>,
    /// Per host, the times of its recent renewals.
    renewals: Mutex<HashMap<u64, Vec<u64>>>,
    /// Credentials refused before authentication (never recorded as decisions).
    rejected_credentials: AtomicU64,
    /// Certificate requests per principal (see [`RateLimit`]).
    issuance_buckets: ratelimit::Buckets,
    /// When the epoch was last renewed because a host was ahead of the database.
    epoch_renewed_at: Mutex<Option<u64>>,
    /// Why this replica cannot follow the shared store (a newer release wrote a change it
    /// cannot read); while set it serves no policy: host syncs, issuance and changes
    /// answer `upgrade_required` (503, so clients move to another replica) and readiness
    /// fails. Cleared when following succeeds again.
    outdated: Mutex<Option<String>>,
}

/// How long a mutation waits for its turn on a shared store before it goes ahead
/// without (see [`Store::take_turn`]).
const TURN_WAIT: Duration = Duration::from_secs(2);

/// A replica's turn to change a shared store, given back when dropped.
struct Turn<'a>(Option<&'a dyn Store>);

impl<'a> Turn<'a> {
    fn take(store: &'a dyn Store) -> Turn<'a> {
        Turn((store.shared() && store.take_turn(TURN_WAIT)).then_some(store))
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.0 {
            s.end_turn();
        }
    }
}

/// Serials reserved at a time from a store shared by replicas.
const SERIAL_BLOCK: u64 = 1000;

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authority {
    /// The authority over `store` (initialized) with `keys`.
    pub fn new(store: Box<dyn Store>, keys: Keys, cfg: Config) -> Result<Authority, Error> {
        let cfg_rate = cfg.issuance_rate;
        if !store.is_initialized()? {
            return Err(Error::internal(
                "loading the CA",
                "the store was never initialized (smith-ca init)",
            ));
        }
        let loaded = store.load(now())?;
        let serial_block = store.reserve_serials(SERIAL_BLOCK)?.map(Mutex::new);
        let (version_tx, _) = watch::channel(loaded.model.version());
        let liveness = loaded
            .liveness
            .into_iter()
            .map(|(id, (last_seen, synced_version))| {
                (
                    id,
                    Liveness {
                        last_seen,
                        synced_version,
                    },
                )
            })
            .collect();
        Ok(Authority {
            model: RwLock::new(loaded.model),
            store,
            mutations: Mutex::new(()),
            auth: Box::new(TokenAuthenticator),
            keys,
            cfg,
            serial: AtomicU64::new(loaded.last_serial),
            serial_block,
            stopping: std::sync::atomic::AtomicBool::new(false),
            version_tx,
            liveness: Mutex::new(liveness),
            cert_seen: Mutex::new(HashMap::new()),
            renewals: Mutex::new(HashMap::new()),
            rejected_credentials: AtomicU64::new(0),
            issuance_buckets: ratelimit::Buckets::new(cfg_rate),
            epoch_renewed_at: Mutex::new(None),
            outdated: Mutex::new(None),
        })
    }

    /// The authority of the data directory `dd`: its keys, and the database its
    /// settings name (the embedded SQLite store by default).
    pub fn open(dd: &DataDir, cfg: Config) -> anyhow::Result<Authority> {
        let db = crate::database::Database::resolve(dd, &Default::default())?;
        Authority::open_in(dd, &db, cfg)
    }

    /// The authority of the data directory `dd` over the database `db`.
    pub fn open_in(
        dd: &DataDir,
        db: &crate::database::Database,
        cfg: Config,
    ) -> anyhow::Result<Authority> {
        let store = db.open(true)?;
        if !store.is_initialized()? {
            anyhow::bail!(
                "{} was never initialized; run `smith-ca init` (a new CA) or copy the data \
                 directory of a CA that serves it",
                db.shown()
            );
        }
        let keys = Keys::load(dd)?;
        Authority::new(store, keys, cfg).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Reads the model (never hold it across an await point).
    pub fn model(&self) -> RwLockReadGuard<'_, Model> {
        self.model.read().unwrap_or_else(|e| e.into_inner())
    }

    fn model_mut(&self) -> RwLockWriteGuard<'_, Model> {
        self.model.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// OpenSSH lines of the user CA keys (what hosts put in `TrustedUserCAKeys`), the
    /// signing key first (more than one during a rotation).
    pub fn user_ca_keys(&self) -> Vec<String> {
        self.published(crate::cakeys::CaRole::User)
    }

    /// OpenSSH lines of the host CA keys (for `@cert-authority` lines).
    pub fn host_ca_keys(&self) -> Vec<String> {
        self.published(crate::cakeys::CaRole::Host)
    }

    /// The TLS root clients pin.
    pub fn tls_root(&self) -> &TlsRoot {
        &self.keys.tls_root
    }

    /// Wakes when the policy version changes (long-polling hosts).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version_tx.subscribe()
    }

    /// Who a bearer credential belongs to.
    pub fn authenticate(&self, credential: &str) -> Result<Authenticated, AuthError> {
        self.auth.authenticate(&self.model(), credential, now())
    }

    /// This database's epoch (hosts take a full snapshot from a new one).
    pub fn epoch(&self) -> String {
        self.model().epoch().to_string()
    }

    /// Stops background work and finishes pending writes.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.store.shutdown()
    }

    /// The next certificate serial: unique, never repeated across restarts (the store
    /// persists the high-water mark with each certificate) nor across replicas (a shared
    /// store hands out blocks, reserved durably before use).
    async fn next_serial(self: &std::sync::Arc<Self>) -> Result<u64, Error> {
        let Some(block) = &self.serial_block else {
            return Ok(self.serial.fetch_add(1, Ordering::SeqCst) + 1);
        };
        loop {
            {
                let mut b = block.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(s) = b.next() {
                    return Ok(s);
                }
            }
            let me = self.clone();
            let fresh = tokio::task::spawn_blocking(move || me.store.reserve_serials(SERIAL_BLOCK))
                .await
                .map_err(|e| Error::internal("reserving serials", e))??
                .ok_or_else(|| Error::internal("reserving serials", "the store has no blocks"))?;
            let mut b = block.lock().unwrap_or_else(|e| e.into_inner());
            if b.is_empty() {
                *b = fresh;
            }
            // Else another request refilled it meanwhile: this block is left unused (a
            // gap in the serials, never a repeat).
        }
    }

    /// Applies what other replicas committed since this one last looked (blocking):
    /// the model, then hosts long-polling here. Returns how many change sets came.
    pub fn catch_up(&self) -> Result<usize, Error> {
        let _serial = self.mutations.lock().unwrap_or_else(|e| e.into_inner());
        self.apply_followed()
    }

    /// `Ok` while this replica can serve the policy; `upgrade_required` once it met a
    /// change a newer release wrote (see [`Authority::outdated`]).
    pub fn serving(&self) -> Result<(), Error> {
        match &*self.outdated.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(why) => Err(Error::UpgradeRequired(why.clone())),
        }
    }

    /// Records whether following works; a change either way is logged once, and
    /// becoming outdated wakes every parked long poll (their hosts then hear
    /// `upgrade_required` and move to another replica).
    fn set_outdated(&self, why: Option<String>) {
        let mut o = self.outdated.lock().unwrap_or_else(|e| e.into_inner());
        if *o == why {
            return;
        }
        match &why {
            Some(w) => tracing::error!(
                error = %w,
                "this replica cannot read a change in the shared database and stops serving \
                 policy: upgrade smith-ca on this machine (other replicas serve meanwhile)"
            ),
            None => tracing::info!("this replica follows the shared database again"),
        }
        *o = why;
        drop(o);
        self.version_tx.send_modify(|_| {});
    }

    /// [`Authority::catch_up`] with the mutations lock held.
    fn apply_followed(&self) -> Result<usize, Error> {
        let followed = match self.store.follow() {
            Ok(f) => {
                self.set_outdated(None);
                f
            }
            Err(StoreError::NewerRelease(why)) => {
                self.set_outdated(Some(why.clone()));
                return Err(Error::UpgradeRequired(why));
            }
            Err(e) => return Err(e.into()),
        };
        // How long the oldest change waited to reach this replica, in whole seconds (the
        // log records commit times in seconds; 0 when none waited).
        let lag_ms = followed.first().map_or(0, |f| {
            now().saturating_sub(f.at).saturating_sub(1) as i64 * 1000
        });
        crate::metrics::METRICS.replica_lag_millis.set(lag_ms);
        if followed.is_empty() {
            return Ok(0);
        }
        let mut version = None;
        {
            let mut m = self.model_mut();
            for f in &followed {
                m.apply(&f.changes, f.new_version);
                if f.new_version.is_some() {
                    version = Some(m.version());
                }
            }
        }
        if let Some(v) = version {
            self.version_tx.send_replace(v);
            tracing::info!(
                version = v,
                changes = followed.len(),
                "followed another replica's changes"
            );
        }
        Ok(followed.len())
    }

    /// Starts the thread that follows other replicas' changes (a store shared by
    /// several replicas; with one writer it only sleeps): it waits for a notification
    /// or a second, then catches up, until [`Authority::shutdown`].
    pub fn spawn_follower(self: &std::sync::Arc<Self>) {
        let me = std::sync::Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("smith-ca-follower".into())
            .spawn(move || loop {
                let Some(a) = me.upgrade() else { return };
                if a.stopping.load(Ordering::SeqCst) || !a.store.shared() {
                    return;
                }
                a.store.wait_change(Duration::from_secs(1));
                match a.catch_up() {
                    // Said once, when it began (set_outdated).
                    Ok(_) | Err(Error::UpgradeRequired(_)) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot follow other replicas' changes"),
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the follower thread");
        }
    }

    /// When each host last synced.
    pub fn liveness(&self, host_id: u64) -> Liveness {
        self.liveness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&host_id)
            .copied()
            .unwrap_or_default()
    }

    /// Records that a host synced, in memory now and in the store soon.
    pub fn host_seen(&self, host_id: u64, synced_version: Option<u64>) {
        let at = now();
        {
            let mut l = self.liveness.lock().unwrap_or_else(|e| e.into_inner());
            let e = l.entry(host_id).or_default();
            e.last_seen = Some(at);
            if synced_version.is_some() {
                e.synced_version = synced_version;
            }
        }
        self.store.host_seen(host_id, at, synced_version);
    }

    /// Runs one mutation (see the module doc): `plan` computes the changes (and a value
    /// for the caller) from the current model and the store. Returns the version after
    /// the change and the planned value.
    fn mutate<T>(
        &self,
        origin: &Origin,
        what: String,
        plan: impl FnMut(&Model, &dyn Store, u64) -> Result<(Vec<Change>, T), Error>,
    ) -> Result<(u64, T), Error> {
        let _serial = self.mutations.lock().unwrap_or_else(|e| e.into_inner());
        // A shared store: take this replica's turn (no other commits meanwhile), plan
        // against everything other replicas committed, and plan again if one still
        // committed first (no turn: the store answers Stale).
        let _turn = Turn::take(self.store.as_ref());
        let mut plan = plan;
        let mut attempts = 0;
        loop {
            self.apply_followed()?;
            match self.mutate_once(origin, &what, &mut plan) {
                Err(Error::Stale) if attempts < 20 => attempts += 1,
                r => return r,
            }
        }
    }

    /// One attempt of [`Authority::mutate`] (the mutations lock held).
    fn mutate_once<T>(
        &self,
        origin: &Origin,
        what: &str,
        plan: &mut impl FnMut(&Model, &dyn Store, u64) -> Result<(Vec<Change>, T), Error>,
    ) -> Result<(u64, T), Error> {
        let what = what.to_string();
        let at = now();
        let (changes, out, new_version, current, counters) = {
            let m = self.model();
            let (mut changes, out) = plan(&m, self.store.as_ref(), at)?;
            let ended = ended_users(&changes, origin);
            if !ended.is_empty() {
                let revs = self.revocations_for(&ended, &changes, at)?;
                if !revs.is_empty() {
                    changes.push(Change::Revoke(revs));
                }
                // Their user tokens die with the disable: enabling them again later
                // brings none back.
                let hashes: Vec<String> = ended
                    .iter()
                    .flat_map(|(u, _)| m.live_user_tokens(u, at))
                    .collect();
                if !hashes.is_empty() {
                    changes.push(Change::RevokeTokens { hashes, at });
                }
            }
            let nv = changes
                .iter()
                .any(Change::is_policy)
                .then_some(m.version() + 1);
            (changes, out, nv, m.version(), Counters::of(&m))
        };
        if changes.is_empty() {
            return Ok((current, out));
        }
        let ended = ended_users(&changes, origin);
        self.commit_and_apply(origin, &what, changes, counters, new_version, at)?;
        // Issuances decided before the model said "disabled" may have been recorded
        // since the plan read the certificates: revoke those too.
        let mut version = new_version.unwrap_or(current);
        if !ended.is_empty() {
            let at = now();
            let (revs, counters, nv) = {
                let m = self.model();
                let revs = self.revocations_for(&ended, &[], at)?;
                (revs, Counters::of(&m), m.version() + 1)
            };
            if !revs.is_empty() {
                tracing::warn!(
                    count = revs.len(),
                    "certificates issued while their user was being disabled; revoking them too"
                );
                let what = format!("{what} (certificates issued meanwhile)");
                self.commit_and_apply(
                    origin,
                    &what,
                    vec![Change::Revoke(revs)],
                    counters,
                    Some(nv),
                    at,
                )?;
                version = nv;
            }
        }
        Ok((version, out))
    }

    /// The revocations of every still-valid certificate of `users` not already in
    /// `changes`.
    fn revocations_for(
        &self,
        users: &[(UserName, RevokeVia)],
        changes: &[Change],
        at: u64,
    ) -> Result<Vec<Revocation>, Error> {
        let planned: BTreeSet<u64> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Revoke(l) => Some(l.iter().map(|r| r.serial)),
                _ => None,
            })
            .flatten()
            .collect();
        let mut out = Vec::new();
        for (user, via) in users {
            let certs: Vec<smith_api::IssuedCert> = self
                .store
                .valid_certs_of(user, at)?
                .into_iter()
                .filter(|c| !planned.contains(&c.serial))
                .collect();
            let reason = match via {
                RevokeVia::UserDeleted => format!("user {user} was deleted"),
                RevokeVia::ScimDeleted => format!("user {user} was deleted by SCIM provisioning"),
                RevokeVia::ScimDeactivated => {
                    format!("user {user} was deactivated by SCIM provisioning")
                }
                _ => format!("user {user} was disabled"),
            };
            out.extend(self.revocations(&certs, at, &reason, *via));
        }
        Ok(out)
    }

    /// The revocation rows for `certs`.
    fn revocations(
        &self,
        certs: &[smith_api::IssuedCert],
        at: u64,
        reason: &str,
        via: RevokeVia,
    ) -> Vec<Revocation> {
        let ca_key = self.user_ca_keys().first().cloned().unwrap_or_default();
        certs
            .iter()
            .map(|c| Revocation {
                serial: c.serial,
                key_id: c.key_id.clone(),
                user: c.user.clone(),
                valid_before: c.valid_before,
                ca_key: ca_key.clone(),
                revoked_at: at,
                reason: reason.to_string(),
                via,
            })
            .collect()
    }

    /// Commits, applies to the model and wakes the hosts.
    fn commit_and_apply(
        &self,
        origin: &Origin,
        what: &str,
        changes: Vec<Change>,
        counters: Counters,
        new_version: Option<u64>,
        at: u64,
    ) -> Result<(), Error> {
        self.store.commit(Commit {
            counters,
            changes: changes.clone(),
            new_version,
            origin: origin.clone(),
            what: what.to_string(),
            now: at,
        })?;
        self.model_mut().apply(&changes, new_version);
        if let Some(v) = new_version {
            self.version_tx.send_replace(v);
            tracing::info!(version = v, change = %what, origin = %origin, "policy changed");
        } else {
            tracing::info!(change = %what, origin = %origin, "state changed");
        }
        Ok(())
    }
}

/// Users a change set disables or deletes, with how their certificates are revoked
/// (what the origin says: SCIM's own kinds for the IdP's provisioning).
fn ended_users(changes: &[Change], origin: &Origin) -> Vec<(UserName, RevokeVia)> {
    let scim = origin.is_scim();
    let mut out: Vec<(UserName, RevokeVia)> = Vec::new();
    for c in changes {
        let (name, via) = match (c, scim) {
            (Change::DisableUser { name, .. }, false) => (name, RevokeVia::UserDisabled),
            (Change::DeleteUser { name, .. }, false) => (name, RevokeVia::UserDeleted),
            (Change::DisableUser { name, .. }, true) => (name, RevokeVia::ScimDeactivated),
            (Change::DeleteUser { name, .. }, true) => (name, RevokeVia::ScimDeleted),
            _ => continue,
        };
        if let Some(e) = out.iter_mut().find(|(n, _)| n == name) {
            if via.is_deletion() {
                e.1 = via;
            }
        } else {
            out.push((name.clone(), via));
        }
    }
    out
}
