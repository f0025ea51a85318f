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
use crate::local::{LocalAccounts, OtherSources};
use crate::nssprobe::{self, Query, Verdict};
use crate::paths::HostPaths;
use crate::removal::Access;
use crate::state;
use crate::trust;
use crate::view::{self, Skip};
use smith_proto::cache::CacheView;
use smith_proto::snapshot::{ApplyError, HostState, SyncResponse};
use smith_proto::HostName;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Identity of a file's current version (inode, size, mtime), to notice edits.
type FileStamp = Option<(u64, u64, i64, i64)>;

fn stamp(path: &Path) -> FileStamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// How long an answer of another NSS source is reused.
pub const PROBE_TTL: Duration = Duration::from_secs(600);
/// How soon a source that did not answer is asked again.
pub const PROBE_RETRY: Duration = Duration::from_secs(30);

fn ttl(v: Verdict) -> Duration {
    match v {
        Verdict::Unavailable => PROBE_RETRY,
        _ => PROBE_TTL,
    }
}

/// The binary that answers `--nss-probe` (smith-hostd, beside `smith-host` when the
/// one-shot sync runs).
fn probe_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/sbin/smith-hostd"));
    if exe.file_name().is_some_and(|n| n == "smith-hostd") {
        exe
    } else {
        exe.with_file_name("smith-hostd")
    }
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
    /// passwd, group, subuid, subgid, nsswitch.conf as of the last build.
    local_stamp: Vec<FileStamp>,
    /// The cache file as this daemon last wrote or checked it (issue 18).
    cache_stamp: FileStamp,
    /// What other NSS sources said, per (source, question), and when.
    probed: HashMap<(String, Query), (Verdict, Instant)>,
    dirty_state: bool,
    dirty_cache: bool,
    dirty_trust: bool,
    /// The principals files (who may log in as which name), derived with the cache.
    principals: crate::logins::PrincipalsDir,
    /// What the last cache build admitted (served users, principals).
    access: Access,
    /// What was admitted before the syncs applied since [`Store::take_removals`] last
    /// answered, and whether one of them came from a new CA epoch.
    removal_base: Option<(Access, bool)>,
}

/// What a sync took away: compare with [`crate::removal::losses`].
#[derive(Debug, Clone)]
pub struct Removals {
    pub before: Access,
    pub after: Access,
    /// One of the syncs was a full snapshot from a new CA epoch.
    pub new_epoch: bool,
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
            local_stamp: Vec::new(),
            cache_stamp: stamp(&paths.cache_file),
            probed: HashMap::new(),
            principals: crate::logins::PrincipalsDir::new(&paths.principals_dir),
            access: Access::default(),
            removal_base: None,
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
        let had_state = self.state.is_some();
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
        if had_state {
            let new_epoch = epoch_change.is_some();
            match &mut self.removal_base {
                Some((_, e)) => *e |= new_epoch,
                None => self.removal_base = Some((self.access.clone(), new_epoch)),
            }
        }
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

    /// What this host admits as of the last cache build.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Once the cache (and principals files) of the syncs applied since the last call
    /// are written: what was admitted before them and what is admitted now.
    pub fn take_removals(&mut self) -> Option<Removals> {
        if self.dirty_cache {
            return None;
        }
        let (before, new_epoch) = self.removal_base.take()?;
        Some(Removals {
            before,
            after: self.access.clone(),
            new_epoch,
        })
    }

    fn local_stamps(&self) -> Vec<FileStamp> {
        [
            &self.paths.passwd,
            &self.paths.group,
            &self.paths.subuid,
            &self.paths.subgid,
            &self.paths.nsswitch,
        ]
        .iter()
        .map(|p| stamp(p))
        .collect()
    }

    /// Whether the local account files (passwd, group, subuid, subgid, nsswitch.conf)
    /// changed since the cache was built, or what other NSS sources said is due for a
    /// new look (every [`PROBE_TTL`]; every [`PROBE_RETRY`] while one did not answer).
    pub fn local_accounts_changed(&self) -> bool {
        self.state.is_some()
            && (self.local_stamps() != self.local_stamp
                || self.probed.values().any(|(v, at)| at.elapsed() >= ttl(*v)))
    }

    /// Whether the cache file on disk is no longer the one this daemon last wrote or
    /// checked: truncated, overwritten in place, removed or replaced by someone else
    /// (issue 18: a damaged cache kept failing lookups until the next change at the CA).
    /// Housekeeping then rebuilds it, which rewrites a file that does not match.
    pub fn cache_file_changed(&self) -> bool {
        self.state.is_some() && stamp(&self.paths.cache_file) != self.cache_stamp
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
        let stamp_before = self.local_stamps();
        let local = match LocalAccounts::load(
            &self.paths.passwd,
            &self.paths.group,
            &self.paths.subuid,
            &self.paths.subgid,
        ) {
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
        let mut local = local;
        local.other = self.other_sources(state);
        let now = crate::now_unix();
        let (contents, skips) =
            view::build_contents(state, &local, &self.home_base, self.generation + 1, now);
        self.save_skips(&skips);
        self.log_skips(skips);
        let served: BTreeSet<&str> = contents.users.iter().map(|u| u.name.as_str()).collect();
        let want = crate::logins::wanted(state, &served, &local.user_names);
        let mut principals_ok = self.write_sudo_rules(state, &contents);
        match self.principals.sync(&want) {
            Ok(0) => {}
            Ok(n) => info!(
                changed = n,
                logins = want.len(),
                dir = %self.paths.principals_dir.display(),
                "principals files updated"
            ),
            Err(e) => {
                error!(
                    dir = %self.paths.principals_dir.display(),
                    error = %e,
                    "cannot write the principals files; sshd keeps the previous ones, will retry"
                );
                principals_ok = false;
            }
        }
        // What this build admits, for the removals of the next syncs (the principals
        // are moved in, not copied: they can be as large as the user list).
        self.access = Access::new(
            contents
                .users
                .iter()
                .map(|u| (u.name.clone(), u.uid))
                .collect(),
            want,
        );
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
            self.cache_stamp = stamp(&self.paths.cache_file);
            return principals_ok;
        }
        let bytes = match smith_proto::cache::build(&contents) {
            Ok(b) => b,
            Err(e) => {
                error!(error = %e, "cannot build the cache; keeping the previous one");
                return principals_ok; // the cache would fail the same way until the next sync
            }
        };
        self.generation += 1;
        self.served = Some(Arc::new(bytes.clone()));
        match cachefile::install(&self.paths.cache_file, &bytes) {
            Ok(()) => {
                self.cache_stamp = stamp(&self.paths.cache_file);
                info!(
                    version = contents.snapshot_version,
                    users = contents.users.len(),
                    groups = contents.groups.len(),
                    path = %self.paths.cache_file.display(),
                    "cache written"
                );
                principals_ok
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

    /// The sudoers file and the rules file for the rule-limited sudo grants whose groups
    /// the cache serves (issue 17), rewritten only when their contents change; sudoers
    /// only once `visudo -cf` accepts it. `false`: to be retried.
    fn write_sudo_rules(
        &mut self,
        state: &HostState,
        contents: &smith_proto::cache::CacheContents,
    ) -> bool {
        use smith_proto::sudorules::{render_file, rule_group};
        let served: BTreeSet<&str> = contents.groups.iter().map(|g| g.name.as_str()).collect();
        let grants: Vec<(u64, String, &smith_proto::sudorules::SudoRules)> = state
            .grants
            .iter()
            .filter(|g| g.level == smith_proto::Level::Sudo && !g.sudo.is_unrestricted())
            .map(|g| (g.id, rule_group(g.id), &g.sudo))
            .filter(|(_, name, _)| served.contains(name.as_str()))
            .collect();
        let rules_text = render_file(grants.iter().map(|(id, _, r)| (*id, *r)));
        let lines: Vec<(String, &smith_proto::sudorules::SudoRules)> =
            grants.iter().map(|(_, n, r)| (n.clone(), *r)).collect();
        let sudoers_text = crate::sudoers::render(&lines);
        let same =
            |path: &Path, text: &str| std::fs::read(path).is_ok_and(|b| b == text.as_bytes());
        let mut ok = true;
        // The rules pam_smith checks first: never looser than sudoers while both change.
        if !same(&self.paths.sudo_rules, &rules_text) {
            if let Err(e) =
                crate::fsutil::atomic_write(&self.paths.sudo_rules, rules_text.as_bytes(), 0o644)
            {
                error!(path = %self.paths.sudo_rules.display(), error = %e, "cannot write the sudo rules; will retry");
                ok = false;
            }
        }
        // Only on a host activate set up (it owns the file), never created here.
        if self.paths.sudoers.exists() && !same(&self.paths.sudoers, &sudoers_text) {
            match crate::sudoers::check(&sudoers_text) {
                Ok(()) => match crate::fsutil::atomic_write(
                    &self.paths.sudoers,
                    sudoers_text.as_bytes(),
                    crate::sudoers::MODE,
                ) {
                    Ok(()) => info!(
                        rule_grants = grants.len(),
                        path = %self.paths.sudoers.display(),
                        "sudoers rules updated"
                    ),
                    Err(e) => {
                        error!(path = %self.paths.sudoers.display(), error = %e, "cannot write the sudoers file; the previous one stays, will retry");
                        ok = false;
                    }
                },
                // The same text would fail the same way: not retried until it changes.
                Err(e) => {
                    error!(error = %e, "the sudoers rules were refused; the previous sudoers file stays")
                }
            }
        }
        ok
    }

    /// `skipped.json`, for `status` and `doctor` (informational: not fsynced).
    fn save_skips(&self, skips: &[Skip]) {
        let list: Vec<serde_json::Value> = skips
            .iter()
            .map(|s| serde_json::json!({"kind": s.kind, "name": s.name, "reason": s.reason}))
            .collect();
        if let Ok(bytes) = serde_json::to_vec_pretty(&list) {
            let _ = crate::fsutil::atomic_write_with(
                &self.paths.skipped_file,
                &bytes,
                0o644,
                crate::fsutil::Durability::AtomicOnly,
            );
        }
    }

    /// Asks the host's other NSS sources (nsswitch.conf's `passwd:` and `group:` lines
    /// besides files and smith) about the snapshot's names and ids, reusing answers
    /// younger than [`PROBE_TTL`]. A source that does not answer leaves an entry
    /// unverified: it keeps being served if the current cache serves it (it was checked
    /// before, and never lock out), and is not served otherwise until the source answers.
    fn other_sources(&mut self, state: &HostState) -> OtherSources {
        let conf = std::fs::read_to_string(&self.paths.nsswitch).unwrap_or_default();
        // nsswitch.conf changed (a source added, removed, or brought back by an
        // operator): ask again rather than trust answers about another configuration.
        if self.local_stamp.get(4) != Some(&stamp(&self.paths.nsswitch)) {
            self.probed.clear();
        }
        let mut out = OtherSources::default();
        let mut asks: Vec<(String, Query)> = Vec::new();
        let sudo = (
            smith_proto::names::SUDO_GROUP.to_string(),
            state.sudo_gid.get(),
        );
        for db in ["passwd", "group"] {
            for src in nssprobe::other_sources(&conf, db) {
                let mut qs: Vec<Query> = Vec::new();
                if db == "passwd" {
                    for u in state.users.values() {
                        qs.push(Query::UserName(u.name.to_string()));
                        qs.push(Query::Uid(u.uid.get()));
                    }
                } else {
                    for u in state.users.values() {
                        qs.push(Query::GroupName(u.name.to_string()));
                        qs.push(Query::Gid(u.uid.get()));
                    }
                    for g in &state.groups {
                        qs.push(Query::GroupName(g.name.to_string()));
                        qs.push(Query::Gid(g.gid.get()));
                    }
                    qs.push(Query::GroupName(sudo.0.clone()));
                    qs.push(Query::Gid(sudo.1));
                    if let Some(g) = state.users_gid {
                        qs.push(Query::GroupName(
                            smith_proto::names::USERS_GROUP.to_string(),
                        ));
                        qs.push(Query::Gid(g.get()));
                    }
                }
                asks.extend(qs.into_iter().map(|q| (src.clone(), q)));
            }
        }
        if asks.is_empty() {
            self.probed.clear();
            return out;
        }
        // Ask each source what is not known (or known for too long).
        let mut due: HashMap<String, Vec<Query>> = HashMap::new();
        for (src, q) in &asks {
            let fresh = self
                .probed
                .get(&(src.clone(), q.clone()))
                .is_some_and(|(v, at)| at.elapsed() < ttl(*v));
            if !fresh {
                due.entry(src.clone()).or_default().push(q.clone());
            }
        }
        let exe = probe_exe();
        for (src, qs) in due {
            let answers = nssprobe::probe(&exe, &src, &qs, nssprobe::PROBE_TIMEOUT);
            let down = answers
                .values()
                .filter(|v| **v == Verdict::Unavailable)
                .count();
            if down > 0 {
                warn!(source = %src, unanswered = down, "an NSS source did not answer about Smith's names and ids; unverified entries not served before wait for it");
            }
            let now = Instant::now();
            for (q, v) in answers {
                self.probed.insert((src.clone(), q), (v, now));
            }
        }
        let asked: HashSet<&(String, Query)> = asks.iter().collect();
        self.probed.retain(|k, _| asked.contains(k));
        let served = self.served_names();
        for ((src, q), (v, _)) in &self.probed {
            match (v, q) {
                (Verdict::Found, Query::UserName(n)) => {
                    out.user_names.insert(n.clone(), src.clone());
                }
                (Verdict::Found, Query::Uid(u)) => {
                    out.uids.insert(*u, src.clone());
                }
                (Verdict::Found, Query::GroupName(n)) => {
                    out.group_names.insert(n.clone(), src.clone());
                }
                (Verdict::Found, Query::Gid(g)) => {
                    out.gids.insert(*g, src.clone());
                }
                (Verdict::Unavailable, q) => {
                    // The user or group this question is about.
                    let (users, groups) = (&served.0, &served.1);
                    let mut mark = |kind_user: bool, name: &str| {
                        let was_served = if kind_user {
                            users.contains(name)
                        } else {
                            groups.contains(name)
                        };
                        if !was_served {
                            let m = if kind_user {
                                &mut out.unverified_users
                            } else {
                                &mut out.unverified_groups
                            };
                            m.insert(name.to_string(), src.clone());
                        }
                    };
                    match q {
                        Query::UserName(n) => mark(true, n),
                        Query::Uid(u) => {
                            for su in state.users.values().filter(|su| su.uid.get() == *u) {
                                mark(true, su.name.as_str());
                            }
                        }
                        Query::GroupName(n) => {
                            if state.users.values().any(|su| su.name.as_str() == n) {
                                mark(true, n);
                            } else {
                                mark(false, n);
                            }
                        }
                        Query::Gid(g) => {
                            for su in state.users.values().filter(|su| su.uid.get() == *g) {
                                mark(true, su.name.as_str());
                            }
                            for sg in state.groups.iter().filter(|sg| sg.gid.get() == *g) {
                                mark(false, sg.name.as_str());
                            }
                            if *g == sudo.1 {
                                mark(false, &sudo.0);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// User and group names in the cache currently served.
    fn served_names(&self) -> (HashSet<String>, HashSet<String>) {
        let mut users = HashSet::new();
        let mut groups = HashSet::new();
        if let Some(v) = self.served.as_ref().and_then(|b| CacheView::parse(b).ok()) {
            for i in 0..v.n_users() {
                if let Ok(u) = v.user(i) {
                    users.insert(String::from_utf8_lossy(u.name).into_owned());
                }
            }
            for i in 0..v.n_groups() {
                if let Ok(g) = v.group(i) {
                    groups.insert(String::from_utf8_lossy(g.name).into_owned());
                }
            }
        }
        (users, groups)
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
        let krl = trust::render_krl(state.krl_base64.as_deref()).and_then(|krl| {
            trust::validate_krl(&krl)
                .map(|_| krl)
                .map_err(|e| format!("the KRL from the CA is malformed ({e})"))
        });
        match krl {
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
            // sshd would refuse every public key login, root's included, with a KRL it
            // cannot parse: the previous one keeps serving until the CA sends a good one.
            Err(e) => {
                error!(error = %e, path = %self.paths.revoked_keys.display(), "keeping the previous KRL")
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use smith_proto::snapshot::SyncResponse;
    use smith_proto::{PosixId, Tags};

    fn response(version: u64, krl: Option<&[u8]>) -> SyncResponse {
        SyncResponse {
            host: HostName::new("web-1").unwrap(),
            tags: Tags::parse("env=prod").unwrap(),
            version,
            base_version: None,
            users: vec![crate::view::tests::user(
                "alice",
                2_001_000_001,
                smith_proto::Level::Ssh,
                &[],
            )],
            removed_users: vec![],
            groups: vec![],
            grants: vec![],
            sudo_gid: PosixId::new(2_001_000_000).unwrap(),
            users_gid: None,
            user_ca_keys: vec![],
            krl_base64: krl.map(|k| base64::engine::general_purpose::STANDARD.encode(k).into()),
            epoch: None,
            host_ca_key: None,
        }
    }

    /// L6: a malformed KRL from the CA is not installed (sshd would then refuse every
    /// public key login, root's included); the previous one keeps serving, and a good
    /// one replaces it. Before issue 14 the decoded bytes were written as they came.
    #[test]
    fn a_malformed_krl_never_replaces_the_previous_one() {
        let d = tempfile::tempdir().unwrap();
        let paths = HostPaths::under(d.path());
        let mut store = Store::open(&paths, &HostName::new("web-1").unwrap(), "/home");
        // A valid KRL with no sections (what ssh-keygen -k writes for an empty spec).
        let mut good = b"SSHKRL\n\0".to_vec();
        good.extend_from_slice(&1u32.to_be_bytes());
        for _ in 0..3 {
            good.extend_from_slice(&7u64.to_be_bytes());
        }
        good.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        store.apply(response(1, Some(&good))).unwrap();
        store.flush();
        assert_eq!(std::fs::read(&paths.revoked_keys).unwrap(), good);
        for bad in [&b"garbage that sshd cannot parse"[..], &good[..20]] {
            store
                .apply(response(store.version() + 1, Some(bad)))
                .unwrap();
            store.flush();
            assert_eq!(std::fs::read(&paths.revoked_keys).unwrap(), good, "kept");
        }
        store.apply(response(store.version() + 1, None)).unwrap();
        store.flush();
        assert!(std::fs::read(&paths.revoked_keys).unwrap().is_empty());
    }

    /// Issue 18 (the fault matrix): the cache file damaged in place or removed while
    /// hostd runs was rewritten only at the next change from the CA; meanwhile every
    /// new process fell back to the socket and pam_smith refused Smith users. Now the
    /// daemon notices (housekeeping, every 5 s) and writes it again.
    #[test]
    fn a_damaged_or_removed_cache_file_is_noticed_and_rewritten() {
        let d = tempfile::tempdir().unwrap();
        let paths = HostPaths::under(d.path());
        let mut store = Store::open(&paths, &HostName::new("web-1").unwrap(), "/home");
        store.apply(response(1, None)).unwrap();
        store.flush();
        let good = std::fs::read(&paths.cache_file).unwrap();
        assert!(!store.cache_file_changed(), "just written");
        // What housekeeping does on each tick.
        let tick = |store: &mut Store| {
            if store.cache_file_changed() {
                store.mark_cache_dirty();
            }
            store.flush();
        };
        tick(&mut store);
        assert_eq!(std::fs::read(&paths.cache_file).unwrap(), good, "untouched");
        for damage in ["truncate", "overwrite", "remove"] {
            match damage {
                "truncate" => {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&paths.cache_file)
                        .unwrap();
                    f.set_len(good.len() as u64 / 2).unwrap();
                }
                "overwrite" => {
                    use std::io::{Seek, Write};
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&paths.cache_file)
                        .unwrap();
                    f.seek(std::io::SeekFrom::Start(good.len() as u64 / 2))
                        .unwrap();
                    f.write_all(&[0xa5; 64]).unwrap();
                }
                _ => std::fs::remove_file(&paths.cache_file).unwrap(),
            }
            assert!(store.cache_file_changed(), "{damage}");
            tick(&mut store);
            let now = cachefile::read_valid(&paths.cache_file)
                .unwrap_or_else(|e| panic!("{damage}: {e}"))
                .unwrap_or_else(|| panic!("{damage}: no cache written"));
            assert_eq!(now.len(), good.len(), "{damage}");
            assert!(!store.cache_file_changed(), "{damage}: settled");
        }
    }
}
