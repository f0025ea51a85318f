//! The host's applied snapshot and everything derived from it on disk: `state.json`,
//! the NSS cache file, the user CA keys file and the KRL.
//!
//! Owns: applying sync responses in version order, persisting them, and keeping the
//! derived files in step (rewritten only when their contents change; a failed write is
//! retried by [`Store::flush`] while the previous file keeps serving). Also owns the
//! in-memory copy of the cache bytes the socket server answers from, so socket answers
//! and cache file always say the same thing. Used by the daemon and by the one-shot
//! `smith-host sync`.
//!
//! Must never: go backwards in version, apply a delta to the wrong base, discard the
//! existing cache file because `state.json` is unreadable, or resolve users via NSS.

use crate::cachefile;
use crate::local::LocalAccounts;
use crate::paths::HostPaths;
use crate::state;
use crate::trust;
use crate::view::{self, Skip};
use smith_proto::cache::CacheView;
use smith_proto::snapshot::{ApplyError, HostState, SyncResponse};
use smith_proto::HostName;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use tracing::{error, info, warn};

/// Identity of a file's current version (inode, size, mtime), to notice edits.
type FileStamp = Option<(u64, u64, i64, i64)>;

fn stamp(path: &Path) -> FileStamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub from_version: u64,
    pub to_version: u64,
    pub full: bool,
    pub users: usize,
    /// `Some`: a full snapshot from a new CA epoch (restored or re-initialised CA) was
    /// taken whatever its version. Users missing from it were not removed by anyone:
    /// whatever ends sessions of removed users must not act on this resync.
    pub epoch_change: Option<crate::state::EpochChange>,
}

pub struct Store {
    paths: HostPaths,
    host_name: HostName,
    home_base: String,
    state: Option<HostState>,
    /// The cache bytes currently served (from the file at start, then as built).
    served: Option<Arc<Vec<u8>>>,
    generation: u64,
    skips: BTreeSet<Skip>,
    local_stamp: (FileStamp, FileStamp),
    dirty_state: bool,
    dirty_cache: bool,
    dirty_trust: bool,
}

impl Store {
    /// Loads `state.json` (a corrupt or foreign one is logged and ignored) and the
    /// current cache file (served until a state replaces it), then brings the derived
    /// files up to date with the state.
    pub fn open(paths: &HostPaths, host_name: &HostName, home_base: &str) -> Store {
        let state = match state::load_state(&paths.state_file) {
            Ok(Some(s)) if &s.host == host_name => Some(s),
            Ok(Some(s)) => {
                warn!(
                    state_host = %s.host,
                    host = %host_name,
                    "state.json belongs to another host name; ignoring it and resyncing"
                );
                None
            }
            Ok(None) => None,
            Err(e) => {
                error!(
                    error = %e,
                    "cannot load the last snapshot; keeping the current cache file and resyncing"
                );
                None
            }
        };
        let served = match cachefile::read_valid(&paths.cache_file) {
            Ok(b) => b.map(Arc::new),
            Err(e) => {
                warn!(error = %e, "the current cache file is unusable");
                None
            }
        };
        let generation = served
            .as_ref()
            .and_then(|b| CacheView::parse(b).ok().map(|v| v.generation()))
            .unwrap_or(0);
        let has_state = state.is_some();
        let mut store = Store {
            paths: paths.clone(),
            host_name: host_name.clone(),
            home_base: home_base.to_string(),
            state,
            served,
            generation,
            skips: BTreeSet::new(),
            local_stamp: (None, None),
            dirty_state: false,
            dirty_cache: has_state,
            dirty_trust: has_state,
        };
        store.flush();
        store
    }

    pub fn state(&self) -> Option<&HostState> {
        self.state.as_ref()
    }

    /// The version to ask the CA for changes since (0: send everything).
    pub fn version(&self) -> u64 {
        self.state.as_ref().map(|s| s.version).unwrap_or(0)
    }

    /// The CA epoch of [`Store::version`].
    pub fn epoch(&self) -> Option<&str> {
        self.state.as_ref().and_then(|s| s.epoch.as_deref())
    }

    /// The cache bytes the socket server answers from (`None`: nothing to serve yet).
    pub fn served(&self) -> Option<Arc<Vec<u8>>> {
        self.served.clone()
    }

    /// Whether every derived file has been written.
    pub fn is_clean(&self) -> bool {
        !(self.dirty_state || self.dirty_cache || self.dirty_trust)
    }

    /// Applies a sync response and rewrites what changed.
    pub fn apply(&mut self, r: SyncResponse) -> Result<Applied, ApplyError> {
        if r.host != self.host_name {
            return Err(ApplyError::WrongHost {
                ours: self.host_name.to_string(),
                theirs: r.host.to_string(),
            });
        }
        let from_version = self.version();
        let full = r.base_version.is_none();
        let to_epoch = r.epoch.clone();
        let applied = match &mut self.state {
            None => match r.base_version {
                None => {
                    self.state = Some(HostState::from_full(r));
                    smith_proto::snapshot::Applied::Full
                }
                Some(base) => return Err(ApplyError::BaseMismatch { ours: 0, base }),
            },
            Some(s) => s.apply(r)?,
        };
        let epoch_change = match applied {
            smith_proto::snapshot::Applied::NewEpoch {
                previous_epoch,
                previous_version,
            } => {
                warn!(
                    previous_version,
                    version = self.version(),
                    "the CA's database is from another epoch (restored from a backup or \
                     re-initialised): took its full snapshot whatever its version; sessions \
                     are not ended by this resync"
                );
                Some(crate::state::EpochChange {
                    at: crate::now_unix(),
                    previous_epoch,
                    previous_version,
                    epoch: to_epoch,
                    version: self.version(),
                })
            }
            _ => None,
        };
        let (to_version, users) = self
            .state
            .as_ref()
            .map(|s| (s.version, s.users.len()))
            .unwrap_or((0, 0));
        self.dirty_state = true;
        self.dirty_cache = true;
        self.dirty_trust = true;
        self.flush();
        Ok(Applied {
            from_version,
            to_version,
            full,
            users,
            epoch_change,
        })
    }

    /// Whether `/etc/passwd` or `/etc/group` changed since the cache was built.
    pub fn local_accounts_changed(&self) -> bool {
        self.state.is_some()
            && (stamp(&self.paths.passwd), stamp(&self.paths.group)) != self.local_stamp
    }

    /// Rebuilds the cache (e.g. after a local account change).
    pub fn mark_cache_dirty(&mut self) {
        if self.state.is_some() {
            self.dirty_cache = true;
        }
    }

    /// Writes whatever is out of date; failures are logged and retried next time.
    pub fn flush(&mut self) {
        // Taken out while the derived files are written (no copy of a large state).
        let Some(state) = self.state.take() else {
            return;
        };
        self.flush_from(&state);
        self.state = Some(state);
    }

    fn flush_from(&mut self, state: &HostState) {
        if self.dirty_state {
            match state::save_state(&self.paths.state_file, state) {
                Ok(()) => self.dirty_state = false,
                Err(e) => error!(
                    path = %self.paths.state_file.display(),
                    error = %e,
                    "cannot persist the snapshot; will retry"
                ),
            }
        }
        if self.dirty_cache {
            self.dirty_cache = !self.rebuild_cache(state);
        }
        if self.dirty_trust {
            self.dirty_trust = !self.write_trust(state);
        }
    }

    fn rebuild_cache(&mut self, state: &HostState) -> bool {
        let stamp_before = (stamp(&self.paths.passwd), stamp(&self.paths.group));
        let local = match LocalAccounts::load(&self.paths.passwd, &self.paths.group) {
            Ok((l, warnings)) => {
                for w in warnings {
                    warn!("{w}");
                }
                l
            }
            Err(e) => {
                error!(
                    error = %e,
                    "cannot read the local account files; the cache is not rewritten until they are readable"
                );
                return false;
            }
        };
        let now = crate::now_unix();
        let (contents, skips) =
            view::build_contents(state, &local, &self.home_base, self.generation + 1, now);
        self.log_skips(skips);
        self.local_stamp = stamp_before;
        let current = self.served.as_ref().and_then(|b| {
            CacheView::parse(b)
                .ok()
                .and_then(|v| view::contents_from_view(&v))
        });
        let on_disk_matches = cachefile::read_valid(&self.paths.cache_file)
            .ok()
            .flatten()
            .is_some_and(|b| self.served.as_deref() == Some(&b));
        if on_disk_matches && current.is_some_and(|c| view::same_data(&c, &contents)) {
            return true;
        }
        let bytes = match smith_proto::cache::build(&contents) {
            Ok(b) => b,
            Err(e) => {
                error!(error = %e, "cannot build the cache; keeping the previous one");
                return true; // retrying would fail the same way until the next sync
            }
        };
        self.generation += 1;
        self.served = Some(Arc::new(bytes.clone()));
        match cachefile::install(&self.paths.cache_file, &bytes) {
            Ok(()) => {
                info!(
                    version = contents.snapshot_version,
                    users = contents.users.len(),
                    groups = contents.groups.len(),
                    path = %self.paths.cache_file.display(),
                    "cache written"
                );
                true
            }
            Err(e) => {
                error!(
                    path = %self.paths.cache_file.display(),
                    error = %e,
                    "cannot write the cache file; the previous file keeps serving, will retry"
                );
                false
            }
        }
    }

    fn log_skips(&mut self, skips: Vec<Skip>) {
        let new: BTreeSet<Skip> = skips.into_iter().collect();
        for s in new.difference(&self.skips) {
            warn!(kind = s.kind, name = %s.name, reason = %s.reason, "{s}");
        }
        for s in self.skips.difference(&new) {
            info!(kind = s.kind, name = %s.name, "Smith {} '{}' is no longer skipped", s.kind, s.name);
        }
        self.skips = new;
    }

    fn write_trust(&self, state: &HostState) -> bool {
        let mut ok = true;
        let (keys, refused) = trust::render_user_ca_keys(&state.user_ca_keys);
        for r in refused {
            warn!(reason = %r, "user CA key from the CA refused");
        }
        match trust::write_if_changed(&self.paths.user_ca_keys, keys.as_bytes(), trust::TRUST_MODE)
        {
            Ok(true) => info!(path = %self.paths.user_ca_keys.display(), "user CA keys updated"),
            Ok(false) => {}
            Err(e) => {
                ok = false;
                error!(path = %self.paths.user_ca_keys.display(), error = %e, "cannot write the user CA keys; will retry");
            }
        }
        match trust::render_krl(state.krl_base64.as_deref()) {
            Ok(krl) => {
                match trust::write_if_changed(&self.paths.revoked_keys, &krl, trust::TRUST_MODE) {
                    Ok(true) => info!(path = %self.paths.revoked_keys.display(), "KRL updated"),
                    Ok(false) => {}
                    Err(e) => {
                        ok = false;
                        error!(path = %self.paths.revoked_keys.display(), error = %e, "cannot write the KRL; will retry");
                    }
                }
            }
            Err(e) => error!(error = %e, "keeping the previous KRL"),
        }
        ok
    }
}
