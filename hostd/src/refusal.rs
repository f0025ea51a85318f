//! The CA no longer accepting this host: removed by the admin (`403 host_removed`), a
//! client certificate replaced by a renewal elsewhere (`client_cert_superseded`), a
//! renewal refused as a second holder of the identity (`409 host_identity_forked`), or
//! an expired client certificate (refused by the CA's TLS layer with a
//! `CertificateExpired` alert, or a 401/403 `client_cert_expired`, or simply past its
//! `not_after` here).
//!
//! Owns: recognising those answers (by their typed code and TLS error, never by text), the [`CaRefusal`] record kept in
//! `sync-status.json` (so `status` and `doctor` can explain it without asking the CA),
//! and the sentence telling the admin what to do. Must never: make hostd stop serving
//! its last snapshot (never lock out on doubt: the admin deactivates the host, or the
//! users' grants change at the CA and reach the host when it is enrolled again).

use serde::{Deserialize, Serialize};
use smith_api::{ClientError, ErrorCode};

/// What `status` and `doctor` print for a removed host.
pub const REMOVED_ADVICE: &str = "removed at the CA: run smith-host deactivate, or re-enroll with a new token (smith-host activate --token T); until then the last snapshot keeps serving";
/// What `status` and `doctor` print for an expired client certificate.
pub const EXPIRED_ADVICE: &str = "client certificate expired: re-enroll with smith-host activate --token T (the admin first runs `smith-ca admin host remove NAME`, then `smith-ca admin host token`); until then the last snapshot keeps serving";

/// What `status` and `doctor` print when a newer client certificate replaced this one.
pub const SUPERSEDED_ADVICE: &str = "another holder of this host's identity renewed it (host.key was copied, or a restored backup runs beside this host): if this is the real host, ask the admin to run `smith-ca admin host remove NAME` (which also revokes its host certificates) and re-enroll with a new token (smith-host activate --token T); until then the last snapshot keeps serving";
/// What `status` and `doctor` print when the CA refused a renewal as a fork.
pub const FORKED_ADVICE: &str = "the CA refused to renew: a newer certificate of this host's identity is in use elsewhere (recorded as an alert at the CA): this copy of host.key is not the host's current one; re-enroll with a new token (smith-host activate --token T) after the admin checks the alert";

/// Why the CA refuses this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// `smith-ca admin host remove`: the CA answers 403 `host_removed`.
    HostRemoved,
    /// The client certificate expired (TLS alert, or the CA's 401/403 saying so).
    ClientCertExpired,
    /// A renewal elsewhere replaced this client certificate (`client_cert_superseded`).
    ClientCertSuperseded,
    /// A renewal from this certificate was refused as a second holder
    /// (`host_identity_forked`).
    HostIdentityForked,
}

impl RefusalKind {
    pub fn advice(self) -> &'static str {
        match self {
            RefusalKind::HostRemoved => REMOVED_ADVICE,
            RefusalKind::ClientCertExpired => EXPIRED_ADVICE,
            RefusalKind::ClientCertSuperseded => SUPERSEDED_ADVICE,
            RefusalKind::HostIdentityForked => FORKED_ADVICE,
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

/// The wire code recorded for a TLS alert refusing an expired client certificate.
pub const EXPIRED_ALERT_CODE: &str = "certificate_expired";

/// Classifies an HTTP refusal by status and code.
pub fn classify_status(status: u16, code: ErrorCode) -> Option<RefusalKind> {
    match (status, code) {
        (403, ErrorCode::HostRemoved) => Some(RefusalKind::HostRemoved),
        (401 | 403, ErrorCode::ClientCertExpired) => Some(RefusalKind::ClientCertExpired),
        (401 | 403, ErrorCode::ClientCertSuperseded) => Some(RefusalKind::ClientCertSuperseded),
        (409, ErrorCode::HostIdentityForked) => Some(RefusalKind::HostIdentityForked),
        _ => None,
    }
}

/// Whether the connection broke on the TLS alert a server sends for an expired client
/// certificate.
pub fn is_expired_alert(e: &ClientError) -> bool {
    matches!(
        e.tls_error(),
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateExpired
        ))
    )
}

/// Classifies an error of the CA client: the kind, the code to record (the CA's, or
/// [`EXPIRED_ALERT_CODE`]) and the CA's message (or the TLS error).
pub fn classify(e: &ClientError) -> Option<(RefusalKind, String, String)> {
    match e {
        ClientError::Status {
            status,
            code,
            wire_code,
            message,
        } => classify_status(*status, *code).map(|k| (k, wire_code.clone(), message.clone())),
        ClientError::Transport { cause, .. } if is_expired_alert(e) => Some((
            RefusalKind::ClientCertExpired,
            EXPIRED_ALERT_CODE.into(),
            smith_api::client::error_chain(cause),
        )),
        _ => None,
    }
}

/// The kind of refusal alone (`doctor`).
pub fn classify_api(e: &ClientError) -> Option<RefusalKind> {
    classify(e).map(|(kind, _, _)| kind)
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
            classify_status(403, ErrorCode::HostRemoved),
            Some(RefusalKind::HostRemoved)
        );
        assert_eq!(
            classify_status(401, ErrorCode::ClientCertExpired),
            Some(RefusalKind::ClientCertExpired)
        );
        assert_eq!(
            classify_status(403, ErrorCode::ClientCertSuperseded),
            Some(RefusalKind::ClientCertSuperseded)
        );
        assert_eq!(
            classify_status(409, ErrorCode::HostIdentityForked),
            Some(RefusalKind::HostIdentityForked)
        );
        assert_eq!(classify_status(401, ErrorCode::TokenExpired), None);
        assert_eq!(classify_status(403, ErrorCode::WrongHost), None);
        assert_eq!(classify_status(500, ErrorCode::HostRemoved), None);
        let e = ClientError::Status {
            status: 403,
            code: ErrorCode::HostRemoved,
            wire_code: ErrorCode::HostRemoved.as_str().into(),
            message: "removed".into(),
        };
        assert_eq!(
            classify(&e),
            Some((
                RefusalKind::HostRemoved,
                ErrorCode::HostRemoved.as_str().to_string(),
                "removed".to_string()
            ))
        );
        // A message that merely mentions an expired certificate is not a refusal.
        let e = ClientError::Decode("received fatal alert: CertificateExpired".into());
        assert!(classify(&e).is_none());
        assert!(REMOVED_ADVICE.starts_with(
            "removed at the CA: run smith-host deactivate, or re-enroll with a new token"
        ));
        assert!(EXPIRED_ADVICE
            .starts_with("client certificate expired: re-enroll with smith-host activate --token"));
    }
}
