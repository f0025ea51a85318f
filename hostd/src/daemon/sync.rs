//! The sync loop: long-poll the CA for changes since our version, apply them through
//! the [`Store`](crate::store::Store), publish the new view to the socket server; and
//! renew the mTLS client certificate at 2/3 of its lifetime.
//!
//! Owns: the retry policy (1 s doubling to 30 s, with jitter, reset on success), the
//! reaction to `SIGUSR1` (abandon the current long-poll and ask again without waiting),
//! recovery from a delta on the wrong base (ask for a full snapshot), and the
//! renewal seam (`POST /v1/host/renew`; a CA without it is asked again hourly). The
//! renewal also sends the SSH host public keys of the managed host certificates
//! ([`crate::hostcerts`]); when one of those is due (2/3 of its lifetime, or missing) the
//! certificates the CA returns are checked, written atomically, and sshd is reloaded
//! (retried every 5 minutes until it works). A renewal is also started when only the
//! host certificates are due.
//!
//! A CA refusing this host (403 `host_removed`, an expired client certificate) is
//! logged once as an error saying what to do and recorded in `sync-status.json` for
//! `status`/`doctor` ([`crate::refusal`]); the last snapshot keeps serving. When
//! `host.crt` changes on disk (re-enrollment by `smith-host activate --token` while the
//! daemon runs) the credentials are reloaded.
//!
//! Must never: stop serving the last good snapshot because the CA is unreachable,
//! refuses this host or answers garbage, replace working host certificates with ones
//! that fail the checks, or hammer the CA in a tight loop.

use super::Shared;
use crate::identity::{self, HostCredentials};
use crate::syncclient;
use rand::Rng;
use smith_api::{AsyncClient, ClientError, RenewRequest};
use smith_proto::snapshot::{ApplyError, SyncResponse};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Exponential backoff with jitter.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            next: BACKOFF_START,
        }
    }
    pub fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
    /// The delay to wait now (the nominal delay ±20 %), doubling the next one.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        base.mul_f64(jitter)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

enum Outcome {
    /// The CA answered; loop at once.
    Synced,
    /// Ask for a full snapshot next.
    NeedFull,
    /// Wait (backoff) before the next attempt.
    Failed(String),
}

struct Renewal {
    next_attempt: u64,
    /// Earliest renewal for host certificates alone (after the CA returned none or
    /// unusable ones).
    host_next_attempt: u64,
    /// Host certificates were replaced but sshd could not be reloaded: retry then.
    reload_at: Option<u64>,
}

pub async fn run(shared: Arc<Shared>, creds: HostCredentials, mut shutdown: watch::Receiver<bool>) {
    let host = shared.config.host_name.clone();
    let wait_secs = shared.config.sync_wait_secs;
    let mut creds = creds;
    let mut client = match syncclient::connect(&shared.replicas, &creds) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot build the CA client; not syncing (the last snapshot keeps serving)");
            return;
        }
    };
    let mut backoff = Backoff::new();
    let mut renewal = Renewal {
        next_attempt: 0,
        host_next_attempt: 0,
        reload_at: None,
    };
    let mut force_full = false;
    let mut immediate = true;
    let mut warned_expiry = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = crate::now_unix();
        let managed = crate::hostcerts::managed(&shared.paths);
        let client_due = now >= creds.cert.renew_at();
        let hosts_due = now >= renewal.host_next_attempt && host_certs_due(&shared, &managed, now);
        if (client_due || hosts_due) && now >= renewal.next_attempt {
            if let Some((c, new_creds)) =
                renew(&shared, &client, &creds, &managed, &mut renewal).await
            {
                client = c;
                creds = new_creds;
                warned_expiry = false;
            }
        }
        if renewal.reload_at.is_some_and(|t| now >= t) {
            reload_sshd(&shared, &mut renewal).await;
        }
        if now >= creds.cert.not_after && !warned_expiry {
            warned_expiry = true;
            error!(
                not_after = creds.cert.not_after,
                "the host's client certificate has expired; the CA will refuse syncs. \
                 Re-enroll with `smith-host activate --token T ...` (the last snapshot keeps serving)"
            );
        }

        let since = if force_full { 0 } else { lock_version(&shared) };
        let epoch = lock_epoch(&shared);
        let wait = if immediate { 0 } else { wait_secs };
        immediate = false;
        debug!(since, wait, "sync request");
        let result = tokio::select! {
            r = client.sync(&syncclient::sync_query(since, wait, &host, epoch.as_deref())) => r,
            _ = shared.sync_now.notified() => {
                immediate = true;
                backoff.reset();
                continue;
            }
            _ = shutdown.changed() => return,
        };
        let outcome = match result {
            Ok(Some(resp)) => apply(&shared, resp).await,
            Ok(None) => {
                record(&shared, None, lock_version(&shared));
                Outcome::Synced
            }
            Err(e) => {
                if let Some((c, new_creds)) = note_refusal(&shared, &e, &creds) {
                    client = c;
                    creds = new_creds;
                    warned_expiry = false;
                    immediate = true;
                    continue;
                }
                Outcome::Failed(describe(&e))
            }
        };
        match outcome {
            Outcome::Synced => {
                force_full = false;
                backoff.reset();
                shared.notify_ready("first sync completed");
            }
            Outcome::NeedFull => {
                force_full = true;
                immediate = true;
            }
            Outcome::Failed(msg) => {
                record(&shared, Some(msg.clone()), lock_version(&shared));
                let delay = backoff.next_delay();
                warn!(
                    error = %msg,
                    retry_in_ms = delay.as_millis() as u64,
                    "sync failed; serving the last good snapshot"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.sync_now.notified() => { immediate = true; backoff.reset(); }
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

fn lock_version(shared: &Shared) -> u64 {
    shared.store.lock().map(|s| s.version()).unwrap_or(0)
}

fn lock_epoch(shared: &Shared) -> Option<String> {
    shared
        .store
        .lock()
        .ok()
        .and_then(|s| s.epoch().map(str::to_string))
}

/// Records (and logs once) a refusal of this host by the CA. If `host.crt` on disk is
/// not the certificate in use (re-enrolled meanwhile), returns a client for the new
/// credentials instead.
fn note_refusal(
    shared: &Shared,
    e: &ClientError,
    creds: &HostCredentials,
) -> Option<(AsyncClient, HostCredentials)> {
    let refused = crate::refusal::classify(e);
    let auth_like = refused.is_some() || matches!(e.status(), Some(401) | Some(403));
    if auth_like {
        if let Ok(disk) = identity::load_credentials(
            &shared.paths.ca_bundle,
            &shared.paths.host_cert,
            &shared.paths.host_key,
        ) {
            if disk.cert.fingerprint != creds.cert.fingerprint {
                match syncclient::connect(&shared.replicas, &disk) {
                    Ok(c) => {
                        info!(
                            not_after = disk.cert.not_after,
                            "host.crt changed on disk (re-enrolled?); using the new credentials"
                        );
                        return Some((c, disk));
                    }
                    Err(err) => warn!(error = %err, "cannot use the new host.crt"),
                }
            }
        }
    }
    let (kind, code, message) = refused?;
    let Ok(mut st) = shared.status.lock() else {
        return None;
    };
    if st.ca_refusal.as_ref().map(|r| r.kind) != Some(kind) {
        error!(
            code = %code,
            ca_message = %message,
            "the CA refuses this host: {} (the last snapshot keeps serving; `smith-host status` shows this too)",
            kind.advice()
        );
        st.ca_refusal = Some(crate::refusal::CaRefusal::new(
            kind,
            code,
            message,
            crate::now_unix(),
        ));
    }
    None
}

fn describe(e: &ClientError) -> String {
    if let Some((kind, _, _)) = crate::refusal::classify(e) {
        return format!("{e}\nhint: {}", kind.advice());
    }
    match e.status() {
        Some(401) | Some(403) => format!(
            "{e}\nhint: the CA does not accept this host's certificate (removed by the admin, or expired?); re-enroll with `smith-host activate`"
        ),
        _ => e.to_string(),
    }
}

/// Records the outcome of a sync attempt (in memory, in the socket's Pong and in
/// `sync-status.json`).
fn record(shared: &Shared, error: Option<String>, version: u64) {
    let now = crate::now_unix();
    let Ok(mut st) = shared.status.lock() else {
        return;
    };
    st.last_attempt_unix = Some(now);
    st.version = version;
    if error.is_none() {
        st.last_sync_unix = Some(now);
        if st.ca_refusal.take().is_some() {
            info!("the CA accepts this host again");
        }
        if let Ok(mut s) = shared.served.write() {
            s.last_sync_unix = now;
        }
    }
    st.last_error = error;
    shared.save_status(st);
}

async fn apply(shared: &Arc<Shared>, resp: SyncResponse) -> Outcome {
    let sh = shared.clone();
    let full = resp.base_version.is_none();
    let theirs = resp.version;
    let result = tokio::task::spawn_blocking(move || {
        let r = match sh.store.lock() {
            Ok(mut s) => Some(s.apply(resp)),
            Err(_) => None,
        };
        sh.publish();
        release_freed_memory();
        r
    })
    .await;
    // Ending processes waits (a grace period per user): not on the sync's path.
    let sh = shared.clone();
    tokio::task::spawn_blocking(move || super::removal::run(&sh));
    let version = lock_version(shared);
    match result {
        Ok(Some(Ok(a))) => {
            info!(
                from = a.from_version,
                to = a.to_version,
                full = a.full,
                users = a.users,
                "snapshot applied"
            );
            if let Some(e) = a.epoch_change {
                if let Ok(mut st) = shared.status.lock() {
                    st.epoch_change = Some(e);
                }
            }
            record(shared, None, version);
            Outcome::Synced
        }
        Ok(Some(Err(ApplyError::BaseMismatch { ours, base }))) => {
            info!(ours, base, "delta on another base; asking for a full snapshot");
            Outcome::NeedFull
        }
        Ok(Some(Err(ApplyError::NotNewer { ours, theirs: t }))) if t == ours => {
            record(shared, None, version);
            Outcome::Synced
        }
        Ok(Some(Err(ApplyError::NotNewer { ours, .. }))) => Outcome::Failed(format!(
            "the CA sent version {theirs} ({}) of this host's epoch but this host is at {ours}: the CA's version went backwards without a new epoch (a CA older than epochs restored by hand?); keeping ours",
            if full { "full" } else { "delta" }
        )),
        Ok(Some(Err(e))) => Outcome::Failed(e.to_string()),
        Ok(None) | Err(_) => Outcome::Failed("internal error applying the snapshot".into()),
    }
}

/// Gives memory freed after a large snapshot (JSON body, old state) back to the
/// system, so the daemon's RSS reflects what it holds, not its peak.
fn release_freed_memory() {
    // SAFETY: malloc_trim only walks glibc's own heap structures under its locks; it has
    // no preconditions and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Renews the client certificate. On success returns the new client and credentials.
async fn renew(
    shared: &Arc<Shared>,
    client: &AsyncClient,
    creds: &HostCredentials,
    managed: &[crate::hostcerts::Managed],
    renewal: &mut Renewal,
) -> Option<(AsyncClient, HostCredentials)> {
    let now = crate::now_unix();
    let host = &shared.config.host_name;
    info!(
        not_after = creds.cert.not_after,
        host_keys = managed.len(),
        "renewing the host's client certificate and SSH host certificates"
    );
    let new_key = match identity::generate_key_and_csr(host) {
        Ok(k) => k,
        Err(e) => {
            error!(error = %e, "cannot generate a new host key");
            renewal.next_attempt = now + 300;
            return None;
        }
    };
    let host_keys: Vec<String> = managed.iter().map(|m| m.key_line.clone()).collect();
    let req = RenewRequest {
        csr_pem: new_key.csr_pem.clone(),
        ssh_host_keys: host_keys,
    };
    let resp = match client.renew(&req).await {
        Ok(r) => r,
        Err(ClientError::Status { status, .. }) if status == 404 || status == 405 => {
            info!("the CA does not offer certificate renewal; asking again in an hour");
            renewal.next_attempt = now + 3600;
            return None;
        }
        Err(e) => {
            match crate::refusal::classify(&e) {
                Some((kind, _, _)) => error!(
                    error = %e,
                    "certificate renewal refused: {}; retrying in 5 minutes",
                    kind.advice()
                ),
                None => warn!(
                    error = %e,
                    "certificate renewal failed (the current certificates stay in use); retrying in 5 minutes"
                ),
            }
            renewal.next_attempt = now + 300;
            return None;
        }
    };
    let check = (|| -> Result<(), String> {
        let s = identity::summarize_pem(resp.client_cert_pem.as_bytes())?;
        if s.common_name.as_deref() != Some(host.as_str()) {
            return Err(format!(
                "the renewed certificate names {:?}, not {host}",
                s.common_name
            ));
        }
        if !identity::key_matches_cert(&new_key.key_pem, resp.client_cert_pem.as_bytes())? {
            return Err("the renewed certificate is not for the key we sent".into());
        }
        Ok(())
    })();
    if let Err(e) = check {
        error!(error = %e, "refusing the renewed certificate; retrying in 5 minutes");
        renewal.next_attempt = now + 300;
        return None;
    }
    let paths = shared.paths.clone();
    let key_pem = new_key.key_pem.clone();
    let cert_pem = resp.client_cert_pem.clone();
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        // Key first: if we crash in between, the old certificate no longer matches
        // and the next start fails loudly rather than silently using a stale pair.
        crate::fsutil::atomic_write(&paths.host_key, key_pem.as_bytes(), identity::KEY_MODE)?;
        crate::fsutil::atomic_write(&paths.host_cert, cert_pem.as_bytes(), identity::CERT_MODE)
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        error!("cannot write the renewed key and certificate; keeping the old ones for now");
        renewal.next_attempt = now + 300;
        return None;
    }
    let new_creds = match identity::load_credentials(
        &shared.paths.ca_bundle,
        &shared.paths.host_cert,
        &shared.paths.host_key,
    ) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot reload the renewed credentials");
            renewal.next_attempt = now + 300;
            return None;
        }
    };
    match syncclient::connect(&shared.replicas, &new_creds) {
        Ok(c) => {
            info!(
                not_after = new_creds.cert.not_after,
                "client certificate renewed"
            );
            renew_host_certs(shared, managed, &resp.ssh_host_certs, renewal).await;
            Some((c, new_creds))
        }
        Err(e) => {
            error!(error = %e, "cannot use the renewed certificate");
            renewal.next_attempt = now + 300;
            None
        }
    }
}

/// Whether the SSH host certificates need renewing: one is due (2/3 of its life, missing,
/// wrong), or one was signed by another host CA key than the one the CA signs with now
/// (a host CA rotation switched: move to the new key before the old one retires).
fn host_certs_due(shared: &Shared, managed: &[crate::hostcerts::Managed], now: u64) -> bool {
    if crate::hostcerts::any_due(managed, now) {
        return true;
    }
    let signing = shared
        .store
        .lock()
        .ok()
        .and_then(|s| s.state().and_then(|st| st.host_ca_key.clone()));
    crate::hostcerts::any_from_another_ca(managed, signing.as_deref())
}

/// Replaces the managed host certificates with the renewed ones when any is due, then
/// reloads sshd. On any doubt the old certificates stay.
async fn renew_host_certs(
    shared: &Arc<Shared>,
    managed: &[crate::hostcerts::Managed],
    certs: &[String],
    renewal: &mut Renewal,
) {
    let now = crate::now_unix();
    if managed.is_empty() || !host_certs_due(shared, managed, now) {
        return;
    }
    if certs.is_empty() {
        warn!(
            "the CA returned no SSH host certificates on renewal (an older CA?);              keeping the current ones and asking again in an hour"
        );
        renewal.host_next_attempt = now + 3600;
        return;
    }
    let lines = match crate::hostcerts::check_renewed(managed, certs, &shared.config.host_name, now)
    {
        Ok(l) => l,
        Err(e) => {
            error!(
                error = %e,
                "refusing the renewed SSH host certificates; keeping the current ones, retrying in 5 minutes"
            );
            renewal.host_next_attempt = now + 300;
            return;
        }
    };
    let m = managed.to_vec();
    let written = tokio::task::spawn_blocking(move || crate::hostcerts::write(&m, &lines)).await;
    if host_certs_due(shared, managed, now) {
        // Never renew in a loop, whatever the CA issues.
        warn!("the SSH host certificates are still due after renewal; asking again in 5 minutes");
        renewal.host_next_attempt = now + 300;
    }
    match written {
        Ok(Ok(changed)) if changed.is_empty() => {}
        Ok(Ok(changed)) => {
            info!(
                files = %changed
                    .iter()
                    .map(|p| shared.paths.logical(p).display().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                "SSH host certificates renewed"
            );
            renewal.reload_at = Some(now);
            reload_sshd(shared, renewal).await;
        }
        Ok(Err(e)) => {
            error!(error = %e, "cannot write the renewed SSH host certificates; sshd keeps the current ones, retrying in 5 minutes");
            renewal.host_next_attempt = now + 300;
        }
        Err(_) => {
            renewal.host_next_attempt = now + 300;
        }
    }
}

/// Reloads sshd so it presents the new host certificates; retried every 5 minutes.
async fn reload_sshd(shared: &Arc<Shared>, renewal: &mut Renewal) {
    let paths = shared.paths.clone();
    let r = tokio::task::spawn_blocking(move || crate::service::reload_sshd(&paths)).await;
    match r {
        Ok(Ok(what)) => {
            info!(action = %what, "sshd reloaded for the new host certificates");
            renewal.reload_at = None;
        }
        Ok(Err(e)) => {
            warn!(
                error = %e,
                "sshd was not reloaded: it presents its previous host certificates until it is (retrying in 5 minutes)"
            );
            renewal.reload_at = Some(crate::now_unix() + 300);
        }
        Err(_) => renewal.reload_at = Some(crate::now_unix() + 300),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new();
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(800) && d[0] <= Duration::from_millis(1200));
        assert!(d[1] >= Duration::from_millis(1600) && d[1] <= Duration::from_millis(2400));
        assert!(d[7] <= Duration::from_secs(36) && d[7] >= Duration::from_secs(24));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1200));
    }
}
