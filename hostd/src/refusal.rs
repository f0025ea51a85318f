//! The CA no longer accepting this host: removed by the admin (`403 host_removed`) or
//! an expired client certificate (refused by the CA's TLS layer with a
//! `certificate_expired` alert, or a 401/403 whose code says so, or simply past its
//! `not_after` here).
//!
//! Owns: recognising those answers, the [`CaRefusal`] record kept in
//! `sync-status.json` (so `status` and `doctor` can explain it without asking the CA),
//! and the sentence telling the admin what to do. Must never: make hostd stop serving
//! its last snapshot (never lock out on doubt: the admin deactivates the host, or the
//! users' grants change at the CA and reach the host when it is enrolled again).

use crate::syncclient::CaError;
use serde::{Deserialize, Serialize};

/// What `status` and `doctor` print for a removed host.
pub const REMOVED_ADVICE: &str = "removed at the CA: run smith-host deactivate, or re-enroll with a new token (smith-host activate --token T); until then the last snapshot keeps serving";
/// What `status` and `doctor` print for an expired client certificate.
pub const EXPIRED_ADVICE: &str = "client certificate expired: re-enroll with smith-host activate --token T (the admin first runs `smith-ca admin host remove NAME`, then `smith-ca admin host token`); until then the last snapshot keeps serving";

/// Why the CA refuses this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// `smith-ca admin host remove`: the CA answers 403 `host_removed`.
    HostRemoved,
    /// The client certificate expired (TLS alert, or the CA's 401/403 saying so).
    ClientCertExpired,
}

impl RefusalKind {
    pub fn advice(self) -> &'static str {
        match self {
            RefusalKind::HostRemoved => REMOVED_ADVICE,
            RefusalKind::ClientCertExpired => EXPIRED_ADVICE,
        }
    }
}

/// Recorded in `sync-status.json` while the CA refuses this host; cleared by the next
/// successful sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRefusal {
    pub kind: RefusalKind,
    /// The CA's error code (`host_removed`, ...) or the TLS alert.
    pub code: String,
    /// The CA's message.
    pub message: String,
    /// First seen (Unix seconds).
    pub since: u64,
    /// What to do.
    pub advice: String,
}

/// Whether a TLS error text is the CA's server refusing an expired client certificate.
pub fn is_expired_tls_alert(text: &str) -> bool {
    // rustls: "received fatal alert: CertificateExpired"; OpenSSL-style peers:
    // "certificate expired" / "certificate_expired".
    let t = text.to_ascii_lowercase();
    t.contains("certificateexpired")
        || t.contains("certificate_expired")
        || t.contains("certificate expired")
}

/// Classifies an HTTP refusal by status and code.
pub fn classify_status(status: u16, code: &str) -> Option<RefusalKind> {
    match (status, code) {
        (403, "host_removed") => Some(RefusalKind::HostRemoved),
        (401 | 403, c) if c.contains("expired") && c.contains("cert") => {
            Some(RefusalKind::ClientCertExpired)
        }
        _ => None,
    }
}

/// Classifies an error of the async host client.
pub fn classify(e: &CaError) -> Option<(RefusalKind, String, String)> {
    match e {
        CaError::Status {
            status,
            code,
            message,
        } => classify_status(*status, code).map(|k| (k, code.clone(), message.clone())),
        CaError::Transport { message, .. } if is_expired_tls_alert(message) => Some((
            RefusalKind::ClientCertExpired,
            "certificate_expired".into(),
            message.clone(),
        )),
        _ => None,
    }
}

/// Classifies an error of the blocking API client (`doctor`).
pub fn classify_api(e: &smith_api::ApiError) -> Option<RefusalKind> {
    if let (Some(status), Some(code)) = (e.status(), e.code()) {
        return classify_status(status, code);
    }
    is_expired_tls_alert(&e.to_string()).then_some(RefusalKind::ClientCertExpired)
}

impl CaRefusal {
    pub fn new(kind: RefusalKind, code: String, message: String, now: u64) -> CaRefusal {
        CaRefusal {
            kind,
            code,
            message,
            since: now,
            advice: kind.advice().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_removal_and_expiry_only() {
        assert_eq!(
            classify_status(403, "host_removed"),
            Some(RefusalKind::HostRemoved)
        );
        assert_eq!(
            classify_status(401, "client_cert_expired"),
            Some(RefusalKind::ClientCertExpired)
        );
        assert_eq!(classify_status(401, "token_expired"), None);
        assert_eq!(classify_status(403, "wrong_host"), None);
        assert_eq!(classify_status(500, "host_removed"), None);
        let e = CaError::Transport {
            url: "https://ca".into(),
            message: "error sending request: received fatal alert: CertificateExpired".into(),
        };
        assert_eq!(
            classify(&e).map(|c| c.0),
            Some(RefusalKind::ClientCertExpired)
        );
        let e = CaError::Transport {
            url: "https://ca".into(),
            message: "connection refused".into(),
        };
        assert!(classify(&e).is_none());
        assert!(REMOVED_ADVICE.starts_with(
            "removed at the CA: run smith-host deactivate, or re-enroll with a new token"
        ));
        assert!(EXPIRED_ADVICE
            .starts_with("client certificate expired: re-enroll with smith-host activate --token"));
    }
}
