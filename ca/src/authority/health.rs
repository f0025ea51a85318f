//! Whether this authority can serve: what `GET /v1/health/ready` answers, so that a load
//! balancer drains a replica whose store is unreachable or behind.
//!
//! Must never: block for long (the store's check is bounded by the store), or say more
//! than a reason an operator can act on (no user, host or token in it).

use super::Authority;
use serde::Serialize;

/// The answer of [`Authority::readiness`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The policy version this replica serves.
    pub version: u64,
    /// Its CA epoch.
    pub epoch: String,
}

impl Authority {
    /// Ready when the store answers its health check (for a shared database: reachable
    /// and this replica's model caught up with it). Blocking (call it off the runtime).
    pub fn readiness(&self) -> Readiness {
        let (version, epoch) = {
            let m = self.model();
            (m.version(), m.epoch().to_string())
        };
        if let Err(e) = self.serving() {
            return Readiness {
                ready: false,
                reason: Some(e.to_string()),
                version,
                epoch,
            };
        }
        match self.store.health() {
            Ok(()) => Readiness {
                ready: true,
                reason: None,
                version,
                epoch,
            },
            Err(e) => Readiness {
                ready: false,
                reason: Some(format!("store: {e}")),
                version,
                epoch,
            },
        }
    }
}
