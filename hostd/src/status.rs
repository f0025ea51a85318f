//! `smith-host status [--json]`: is this host enrolled, synced, serving?
//!
//! Owns: gathering the facts from the config, the credentials, `state.json`,
//! `sync-status.json`, the cache file and a socket `Ping`, and presenting them.
//! Must never: change anything, or fail because one source is missing (each fact is
//! optional).

use crate::config::Resolved;
use crate::paths::HostPaths;
use serde::Serialize;
use smith_proto::cache::CacheView;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize)]
pub struct DaemonStatus {
    pub reachable: bool,
    pub pid: Option<i32>,
    pub snapshot_version: Option<u64>,
    pub users: Option<u32>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    pub path: String,
    pub valid: bool,
    pub snapshot_version: Option<u64>,
    pub users: Option<u32>,
    pub written_at: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub enrolled: bool,
    /// Same as `daemon.reachable` (for scripts).
    pub daemon_reachable: bool,
    pub host_name: Option<String>,
    pub tags: Option<String>,
    /// The first (preferred) CA URL.
    pub ca_url: Option<String>,
    /// Every CA URL (its replicas), preferred first.
    pub ca_urls: Vec<String>,
    /// The replica smith-hostd uses now (from `sync-status.json`).
    pub ca_url_in_use: Option<String>,
    /// Times smith-hostd moved away from a replica that died or hung since it started.
    pub ca_failovers: u64,
    pub root_fingerprint: Option<String>,
    pub client_cert_not_after: Option<u64>,
    pub snapshot_version: Option<u64>,
    /// Smith users this host serves (after skipping those colliding with local
    /// accounts).
    pub users_known: Option<usize>,
    /// Users in the stored snapshot (before skipping).
    pub snapshot_users: Option<usize>,
    pub last_sync_unix: Option<u64>,
    pub last_sync_error: Option<String>,
    pub daemon: DaemonStatus,
    pub cache: CacheStatus,
    pub audit: AuditStatus,
    /// The CA's refusal of this host as hostd last saw it (removed, client certificate
    /// expired), from `sync-status.json`.
    pub ca_refusal: Option<crate::refusal::CaRefusal>,
    /// What needs the admin's attention, as a sentence: `removed at the CA: run
    /// smith-host deactivate, or re-enroll with a new token ...` or `client certificate
    /// expired: re-enroll with smith-host activate --token ...`.
    pub problem: Option<String>,
    /// The SSH host certificates hostd keeps renewed.
    pub ssh_host_certs: Vec<HostCertStatus>,
    /// Smith users and groups left out of the cache, each with why and what to do
    /// (colliding with a local account, a subordinate id range or another NSS source).
    pub skipped: Vec<SkippedEntry>,
    /// The last CA epoch change this host went through (a restored or re-initialised CA).
    pub epoch_change: Option<crate::state::EpochChange>,
    /// Losses of access hostd held instead of ending (a new CA epoch, a mass removal),
    /// each with how many of its processes still run.
    pub held_removals: Vec<HeldStatus>,
}

/// One held removal and what of it still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HeldStatus {
    #[serde(flatten)]
    pub held: crate::state::HeldRemoval,
    pub running: u32,
}

/// One Smith user or group this host does not serve (from `skipped.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SkippedEntry {
    pub kind: String,
    pub name: String,
    pub reason: String,
}

/// What hostd last recorded as skipped (empty if nothing, or not written yet).
pub fn skipped(p: &HostPaths) -> Vec<SkippedEntry> {
    std::fs::read(&p.skipped_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// One managed SSH host certificate.
#[derive(Debug, Clone, Serialize)]
pub struct HostCertStatus {
    pub path: String,
    /// `valid`, `due` (past 2/3 of its lifetime), `missing` or `invalid: ...`.
    pub state: String,
    pub valid_before: Option<u64>,
    pub renew_at: Option<u64>,
}

/// The managed host certificates and their state.
pub fn host_certs(p: &HostPaths, now: u64) -> Vec<HostCertStatus> {
    use crate::hostcerts::CertState;
    crate::hostcerts::managed(p)
        .iter()
        .map(|m| {
            let st = crate::hostcerts::state(m);
            let (state, valid_before, renew_at) = match &st {
                CertState::Missing => ("missing".to_string(), None, None),
                CertState::Invalid(e) => (format!("invalid: {e}"), None, None),
                CertState::Current {
                    renew_at,
                    valid_before,
                } => (
                    if st.due(now) { "due" } else { "valid" }.to_string(),
                    Some(*valid_before),
                    Some(*renew_at),
                ),
            };
            HostCertStatus {
                path: p.logical(&m.cert_path).display().to_string(),
                state,
                valid_before,
                renew_at,
            }
        })
        .collect()
}

/// The sentence for what needs the admin's attention: a removal or a second holder of
/// the identity recorded by hostd wins, then an expired client certificate (known locally, or from the CA's refusal).
pub fn problem(
    refusal: Option<&crate::refusal::CaRefusal>,
    client_cert_not_after: Option<u64>,
    now: u64,
) -> Option<String> {
    use crate::refusal::RefusalKind;
    if let Some(r) = refusal.filter(|r| {
        matches!(
            r.kind,
            RefusalKind::HostRemoved
                | RefusalKind::ClientCertSuperseded
                | RefusalKind::HostIdentityForked
        )
    }) {
        return Some(r.kind.advice().to_string());
    }
    if client_cert_not_after.is_some_and(|t| t <= now)
        || refusal.is_some_and(|r| r.kind == RefusalKind::ClientCertExpired)
    {
        return Some(RefusalKind::ClientCertExpired.advice().to_string());
    }
    None
}

/// The audit spool and its upload to the CA.
#[derive(Debug, Clone, Serialize)]
pub struct AuditStatus {
    /// Records in the spool the CA has not acknowledged yet.
    pub pending: u64,
    /// Highest seq spooled.
    pub head_seq: u64,
    /// Highest seq the CA acknowledged.
    pub acked_through: u64,
    pub last_upload_unix: Option<u64>,
    pub last_error: Option<String>,
    /// The last batch the CA rejected (altered record, gap): kept in the spool.
    pub rejection: Option<crate::daemon::upload::Rejection>,
    /// Set while this host's chain and the CA's disagree (uploading stopped).
    pub fork: Option<String>,
    /// Events from sshd's log dropped because the spool was over its quota.
    pub sshd_log_dropped: u64,
    pub spool_quota_bytes: u64,
}

fn audit_status(p: &HostPaths) -> AuditStatus {
    let (pending, acked, up) = crate::daemon::upload::summarize(p);
    let up = up.unwrap_or_default();
    let quota = crate::daemon::events::load_quota(p);
    AuditStatus {
        pending,
        head_seq: acked.acked_through + pending,
        acked_through: acked.acked_through,
        last_upload_unix: up.last_upload_unix,
        last_error: up.last_error,
        rejection: up.rejection,
        fork: up.fork,
        sshd_log_dropped: quota.dropped,
        spool_quota_bytes: crate::daemon::events::SSHD_LOG_QUOTA_BYTES,
    }
}

pub fn gather(r: &Resolved) -> Status {
    let p: &HostPaths = &r.paths;
    let creds = crate::identity::load_credentials(&p.ca_bundle, &p.host_cert, &p.host_key).ok();
    let state = crate::state::load_state(&p.state_file).ok().flatten();
    let sync = crate::state::load_sync_status(&p.sync_status_file);
    let cache = match crate::cachefile::read_valid(&p.cache_file) {
        Ok(Some(b)) => {
            let v = CacheView::parse(&b).ok();
            CacheStatus {
                path: p.cache_file.display().to_string(),
                valid: v.is_some(),
                snapshot_version: v.map(|v| v.snapshot_version()),
                users: v.map(|v| v.n_users()),
                written_at: v.map(|v| v.written_at()),
                error: None,
            }
        }
        Ok(None) => CacheStatus {
            path: p.cache_file.display().to_string(),
            valid: false,
            snapshot_version: None,
            users: None,
            written_at: None,
            error: Some("missing".into()),
        },
        Err(e) => CacheStatus {
            path: p.cache_file.display().to_string(),
            valid: false,
            snapshot_version: None,
            users: None,
            written_at: None,
            error: Some(e),
        },
    };
    let daemon = match crate::localclient::ping(&p.socket) {
        Ok((v, users, last)) => (
            DaemonStatus {
                reachable: true,
                pid: crate::service::running_pid(&p.pid_file, "smith-hostd"),
                snapshot_version: Some(v),
                users: Some(users),
                error: None,
            },
            Some(last).filter(|l| *l > 0),
        ),
        Err(e) => (
            DaemonStatus {
                reachable: false,
                pid: crate::service::running_pid(&p.pid_file, "smith-hostd"),
                snapshot_version: None,
                users: None,
                error: Some(e),
            },
            None,
        ),
    };
    let (daemon, daemon_last_sync) = daemon;
    let last_sync_unix = daemon_last_sync
        .or(sync.as_ref().and_then(|s| s.last_sync_unix))
        .or_else(|| {
            std::fs::metadata(&p.state_file)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
        });
    let cache_tags = crate::cachefile::read_valid(&p.cache_file)
        .ok()
        .flatten()
        .and_then(|b| {
            CacheView::parse(&b)
                .ok()
                .map(|v| String::from_utf8_lossy(v.host_tags()).into_owned())
        });
    let now = crate::now_unix();
    let ca_refusal = sync.as_ref().and_then(|s| s.ca_refusal.clone());
    let epoch_change = sync.as_ref().and_then(|s| s.epoch_change.clone());
    let held_removals = sync
        .as_ref()
        .map(|s| {
            s.held_removals
                .iter()
                .map(|h| HeldStatus {
                    running: crate::removal::held_running(&p.proc_root, h),
                    held: h.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let client_cert_not_after = creds.as_ref().map(|c| c.cert.not_after);
    Status {
        problem: problem(ca_refusal.as_ref(), client_cert_not_after, now),
        skipped: skipped(p),
        ca_refusal,
        epoch_change,
        held_removals,
        ssh_host_certs: host_certs(p, now),
        enrolled: r.config.is_some() && creds.is_some(),
        daemon_reachable: daemon.reachable,
        host_name: r.config.as_ref().map(|c| c.host_name.to_string()),
        tags: state.as_ref().map(|s| s.tags.to_string()).or(cache_tags),
        ca_url: r.config.as_ref().map(|c| c.primary_ca_url()),
        ca_urls: r.config.as_ref().map(|c| c.ca_urls()).unwrap_or_default(),
        ca_url_in_use: sync.as_ref().and_then(|s| s.ca_url_in_use.clone()),
        ca_failovers: sync.as_ref().map(|s| s.ca_failovers).unwrap_or(0),
        root_fingerprint: creds.as_ref().map(|c| c.root_fingerprint.clone()),
        client_cert_not_after,
        snapshot_version: state
            .as_ref()
            .map(|s| s.version)
            .or(daemon.snapshot_version)
            .or(cache.snapshot_version),
        users_known: daemon
            .users
            .or(cache.users)
            .map(|u| u as usize)
            .or(state.as_ref().map(|s| s.users.len())),
        snapshot_users: state.as_ref().map(|s| s.users.len()),
        last_sync_unix,
        last_sync_error: sync.and_then(|s| s.last_error),
        daemon,
        cache,
        audit: audit_status(p),
    }
}

/// A duration for people: seconds below a minute, else rounded to minutes.
pub fn human_duration(secs: u64) -> String {
    let secs = if secs >= 60 { secs - secs % 60 } else { secs };
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// `2025-01-01T10:00:00Z (3m ago)` / `(in 23h 59m)`.
pub fn when(unix: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix);
    let now = crate::now_unix();
    let rel = if unix <= now {
        format!("{} ago", human_duration(now - unix))
    } else {
        format!("in {}", human_duration(unix - now))
    };
    format!("{} ({rel})", humantime::format_rfc3339_seconds(t))
}

pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("  {k:<14} {v}\n"));
    if !s.enrolled {
        out.push_str("This host is not enrolled with a Smith CA.\n");
        out.push_str(
            "  enroll it: smith-host activate --ca URL --token T --ca-fingerprint SHA256:...\n",
        );
        return out;
    }
    out.push_str(&format!(
        "Host {} is enrolled with {}\n",
        s.host_name.as_deref().unwrap_or("?"),
        s.ca_url.as_deref().unwrap_or("?")
    ));
    if let Some(p) = &s.problem {
        line(&mut out, "ATTENTION:", p.clone());
    }
    if let Some(e) = &s.epoch_change {
        line(
            &mut out,
            "WARNING:",
            format!(
                "the CA's database changed epoch {} (restored from a backup or re-initialised): \
                 this host took its full snapshot of version {} although it had seen version {}; \
                 no session was ended by this; changes made at the CA after its backup are gone \
                 (check revocations and disables there)",
                when(e.at),
                e.version,
                e.previous_version
            ),
        );
    }
    for h in &s.held_removals {
        line(
            &mut out,
            "HELD:",
            format!(
                "{} lost access {} but {} {} not ended: {}; end {} with `smith-host terminate {}`",
                h.held.user,
                when(h.held.at),
                h.running,
                if h.running == 1 {
                    "process was"
                } else {
                    "processes were"
                },
                h.held.reason,
                if h.running == 1 { "it" } else { "them" },
                h.held.user
            ),
        );
    }
    if s.ca_urls.len() > 1 {
        line(
            &mut out,
            "CA replicas:",
            format!(
                "{} (in use: {}; {} failover{} since smith-hostd started)",
                s.ca_urls.join(", "),
                s.ca_url_in_use.as_deref().unwrap_or("not yet known"),
                s.ca_failovers,
                if s.ca_failovers == 1 { "" } else { "s" }
            ),
        );
    }
    line(
        &mut out,
        "tags:",
        s.tags
            .clone()
            .unwrap_or_else(|| "unknown (not synced yet)".into()),
    );
    if let Some(fp) = &s.root_fingerprint {
        line(&mut out, "CA root:", fp.clone());
    }
    if let Some(t) = s.client_cert_not_after {
        let expired = t <= crate::now_unix();
        line(
            &mut out,
            "client cert:",
            format!(
                "{} until {}",
                if expired { "EXPIRED" } else { "valid" },
                when(t)
            ),
        );
    }
    for c in &s.ssh_host_certs {
        let v = match (c.state.as_str(), c.valid_before) {
            ("valid", Some(t)) => format!("{}: valid until {}", c.path, when(t)),
            ("due", Some(t)) => format!("{}: due for renewal, valid until {}", c.path, when(t)),
            (st, _) => format!("{}: {st}", c.path),
        };
        line(&mut out, "host cert:", v);
    }
    let synced = match (s.snapshot_version, s.last_sync_unix) {
        (Some(v), Some(t)) => format!("version {v}, last sync {}", when(t)),
        (Some(v), None) => format!("version {v}"),
        _ => "never synced".into(),
    };
    line(&mut out, "snapshot:", synced);
    line(
        &mut out,
        "users known:",
        s.users_known
            .map(|u| u.to_string())
            .unwrap_or_else(|| "unknown".into()),
    );
    if !s.skipped.is_empty() {
        line(
            &mut out,
            "not served:",
            format!(
                "{} Smith user(s)/group(s) collide with this host's own ids or names:",
                s.skipped.len()
            ),
        );
        for k in s.skipped.iter().take(20) {
            out.push_str(&format!("    {} {}: {}\n", k.kind, k.name, k.reason));
        }
        if s.skipped.len() > 20 {
            out.push_str(&format!(
                "    ... and {} more (smith-host status --json)\n",
                s.skipped.len() - 20
            ));
        }
    }
    if let Some(e) = &s.last_sync_error {
        line(
            &mut out,
            "last error:",
            e.lines().next().unwrap_or("").to_string(),
        );
    }
    let d = &s.daemon;
    line(
        &mut out,
        "daemon:",
        if d.reachable {
            format!(
                "running{}, answering on its socket",
                d.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            )
        } else {
            format!(
                "NOT reachable: {}",
                d.error.as_deref().unwrap_or("unknown error")
            )
        },
    );
    let c = &s.cache;
    line(
        &mut out,
        "cache:",
        if c.valid {
            format!(
                "{} (version {}, {} users)",
                c.path,
                c.snapshot_version.unwrap_or(0),
                c.users.unwrap_or(0)
            )
        } else {
            format!("{}: {}", c.path, c.error.as_deref().unwrap_or("invalid"))
        },
    );
    let a = &s.audit;
    line(
        &mut out,
        "audit:",
        format!(
            "{} record(s) waiting for the CA (spooled through {}, acknowledged through {}){}",
            a.pending,
            a.head_seq,
            a.acked_through,
            a.last_upload_unix
                .map(|t| format!(", last upload {}", when(t)))
                .unwrap_or_default()
        ),
    );
    if let Some(r) = &a.rejection {
        line(
            &mut out,
            "REJECTED:",
            format!(
                "the CA rejected record {} ({}): {} (kept in the spool)",
                r.seq, r.code, r.message
            ),
        );
    }
    if let Some(f) = &a.fork {
        line(&mut out, "CHAIN FORK:", format!("{f} (uploading stopped)"));
    }
    if a.sshd_log_dropped > 0 {
        line(
            &mut out,
            "SPOOL FULL:",
            format!(
                "{} event(s) from sshd's log dropped: the spool was over its {} MiB quota (the CA has not acknowledged the backlog: check the upload, smith-host doctor)",
                a.sshd_log_dropped,
                a.spool_quota_bytes >> 20
            ),
        );
    }
    if let (Some(e), None) = (&a.last_error, &a.rejection) {
        if a.pending > 0 {
            line(
                &mut out,
                "upload error:",
                e.lines().next().unwrap_or("").to_string(),
            );
        }
    }
    out
}
