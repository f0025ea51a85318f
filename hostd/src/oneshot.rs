//! `smith-host sync`: ask the running daemon to sync now (SIGUSR1 through its pid
//! file), or, when it is not running, sync once in-process with the same store and
//! client code the daemon uses.
//!
//! Owns: that choice. Must never: run an in-process sync while a daemon runs (two
//! writers), or signal a process that is not smith-hostd.

use crate::config::Resolved;
use crate::store::Store;
use nix::sys::signal::Signal;
use serde::Serialize;
use smith_proto::snapshot::ApplyError;

#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// The daemon that was signalled, if one runs.
    pub signalled_pid: Option<i32>,
    pub from_version: u64,
    pub to_version: u64,
    pub message: String,
}

pub fn sync(r: &Resolved) -> Result<SyncReport, String> {
    let paths = &r.paths;
    if let Ok(pid) =
        crate::service::signal_pid_file(&paths.pid_file, "smith-hostd", Signal::SIGUSR1)
    {
        return Ok(SyncReport {
            signalled_pid: Some(pid),
            from_version: 0,
            to_version: 0,
            message: format!("asked smith-hostd (pid {pid}) to sync now"),
        });
    }
    let cfg = r
        .config
        .as_ref()
        .ok_or("this host is not enrolled: run `smith-host activate` first")?;
    let creds =
        crate::identity::load_credentials(&paths.ca_bundle, &paths.host_cert, &paths.host_key)?;
    let replicas = cfg.replicas(Some(Box::new(|f: &smith_api::replicas::Failover| {
        if !f.returned {
            eprintln!(
                "smith-host: the CA replica {} did not answer ({}); using {}",
                f.from, f.reason, f.to
            );
        }
    })))?;
    let client =
        crate::syncclient::connect_blocking(&replicas, &creds).map_err(|e| e.to_string())?;
    let mut store = Store::open(paths, &cfg.host_name, &cfg.home_base);
    let from = store.version();
    let mut since = from;
    let mut status = crate::state::load_sync_status(&paths.sync_status_file).unwrap_or_default();
    status.last_attempt_unix = Some(crate::now_unix());
    let result = (|| {
        for _ in 0..2 {
            let epoch = store.epoch().map(str::to_string);
            match client.sync(&crate::syncclient::sync_query(
                since,
                0,
                &cfg.host_name,
                epoch.as_deref(),
            )) {
                Ok(None) => return Ok(()),
                Ok(Some(resp)) => match store.apply(resp) {
                    Ok(a) => {
                        if let Some(e) = a.epoch_change {
                            status.epoch_change = Some(e);
                        }
                        return Ok(());
                    }
                    Err(ApplyError::BaseMismatch { .. }) => since = 0,
                    Err(ApplyError::NotNewer { ours, theirs }) if ours == theirs => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                },
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the CA kept sending deltas on another base".to_string())
    })();
    match &result {
        Ok(()) => {
            status.last_sync_unix = status.last_attempt_unix;
            status.last_error = None;
        }
        Err(e) => status.last_error = Some(e.clone()),
    }
    status.version = store.version();
    let _ = crate::state::save_sync_status(&paths.sync_status_file, &status);
    result?;
    let to = store.version();
    Ok(SyncReport {
        signalled_pid: None,
        from_version: from,
        to_version: to,
        message: if to == from {
            format!("smith-hostd is not running; synced once in-process: already at version {to}")
        } else {
            format!("smith-hostd is not running; synced once in-process: version {from} -> {to}")
        },
    })
}
