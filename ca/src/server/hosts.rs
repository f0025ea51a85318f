//! Host endpoints: enrollment with a single-use token, mTLS client certificate renewal,
//! and the long-polling sync.
//!
//! A host's identity on `renew` and `sync` is the verified client certificate: its serial
//! must be one this CA issued to a host that is not removed, and its CN must be that
//! host's name.
//!
//! Must never: accept a used, expired or non-enrollment token; let one host read
//! another's snapshot; hold a model lock while waiting.

use super::error::{ApiError, ApiJson, ApiQuery};
use super::{now, Ca, Peer};
use crate::auth::{hash_token, AuthError, Principal};
use crate::model::{Change, Host, HostCert};
use crate::sshca::sign_host_cert;
use crate::tlsca::ValidityError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use smith_api::ErrorCode;
use smith_api::{EnrollRequestNamed, EnrollResponse, RenewRequest};
use smith_proto::HostName;
use std::sync::Arc;
use std::time::Duration;

/// Longest long-poll a host may ask for.
pub const MAX_WAIT_SECS: u64 = 60;

fn sign_host_keys(
    ca: &Ca,
    host: &HostName,
    principals: &[HostName],
    keys: &[String],
    at: u64,
) -> Result<Vec<String>, ApiError> {
    if keys.len() > 8 {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            "at most 8 SSH host keys",
        ));
    }
    let mut out = Vec::new();
    for line in keys {
        let key = crate::sshca::parse_subject_key(line)
            .map_err(|e| ApiError::new(ErrorCode::InvalidHostKey, format!("SSH host key: {e}")))?;
        let cert = sign_host_cert(
            &ca.host_ca,
            &key,
            // Host certificates are signed by the host CA: their serials are random and
            // separate from the user certificates' sequence.
            rand::Rng::gen_range(&mut rand::rngs::OsRng, 1..u64::MAX),
            &format!("smith-host:{host}"),
            &principals.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            at.saturating_sub(super::certs::BACKDATE_SECS),
            at + ca.cfg.host_ssh_cert_ttl.as_secs(),
        )
        .map_err(|e| ApiError::internal("signing a host certificate", e))?;
        out.push(
            cert.to_openssh()
                .map_err(|e| ApiError::internal("encoding a host certificate", e))?,
        );
    }
    Ok(out)
}

pub async fn enroll(
    State(ca): State<Arc<Ca>>,
    peer: Peer,
    ApiJson(req): ApiJson<EnrollRequestNamed>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    let EnrollRequestNamed {
        request: req,
        ssh_names: asked,
    } = req;
    let at = now();
    let token_hash = hash_token(&req.token);
    // Check the token first so that a bad token learns nothing else.
    let (tags, allowed_names) =
        {
            let m = ca.model();
            match ca.auth.authenticate(&m, &req.token, at) {
                Ok(Principal::Enroll { tags, .. }) => (
                    tags,
                    m.tokens
                        .get(&token_hash)
                        .map(|t| t.ssh_names.clone())
                        .unwrap_or_default(),
                ),
                Ok(_) => {
                    return Err(ApiError::new(
                        ErrorCode::WrongTokenKind,
                        "this is not an enrollment token; get one with `smith-ca admin host token`",
                    ))
                }
                Err(AuthError::Used) => return Err(ApiError::new(
                    ErrorCode::TokenUsed,
                    "enrollment token already used; get a new one with `smith-ca admin host token`",
                )),
                Err(AuthError::Expired) => {
                    return Err(ApiError::new(
                        ErrorCode::TokenExpired,
                        "enrollment token expired; get a new one with `smith-ca admin host token`",
                    ))
                }
                Err(e) => return Err(ApiError::new(ErrorCode::InvalidToken, e.to_string())),
            }
        };
    // Before anything is issued or the token used: a refused name leaves the token
    // usable (the host may retry without the name, or the admin mint a fitting token).
    let ssh_names = check_ssh_names(&ca.model(), &req.host_name, &asked, &allowed_names)?;
    if ca.model().active_hosts.contains_key(&req.host_name) {
        return Err(ApiError::new(
            ErrorCode::HostExists,
            format!(
                "a host named '{}' is already enrolled; remove it first with \
                 `smith-ca admin host remove {}` or pick another name",
                req.host_name, req.host_name
            ),
        ));
    }
    let (cert_pem, serial, not_after) = ca
        .tls_root
        .issue_client_cert(&req.host_name, &req.csr_pem, ca.cfg.host_cert_ttl, at)
        .map_err(|e| match e {
            crate::tlsca::TlsCaError::BadCsr(m) => ApiError::new(ErrorCode::InvalidCsr, m),
            e => ApiError::internal("issuing a host certificate", e),
        })?;
    let host = Host {
        id: 0,
        name: req.host_name.clone(),
        tags: tags.clone(),
        enrolled_at: at,
        last_seen: None,
        synced_version: None,
        removed: false,
        cert_serial: serial.clone(),
        cert_not_after: not_after,
        ssh_names,
    };
    let ssh_host_certs = sign_host_keys(
        &ca,
        &req.host_name,
        &host.principals(),
        &req.ssh_host_keys,
        at,
    )?;
    let host_name = req.host_name.clone();
    let cert_serial = serial.clone();
    ca.mutate(format!("host enroll {host_name}"), move |m, at| {
        // Re-check under the mutation lock: a concurrent enrollment may have won.
        match m.tokens.get(&token_hash) {
            Some(t) if t.used_at.is_none() => {}
            _ => {
                return Err(ApiError::new(
                    ErrorCode::TokenUsed,
                    "enrollment token already used; get a new one with `smith-ca admin host token`",
                ))
            }
        }
        if m.active_hosts.contains_key(&host_name) {
            return Err(ApiError::new(
                ErrorCode::HostExists,
                format!("a host named '{host_name}' is already enrolled"),
            ));
        }
        check_ssh_names(m, &host_name, &host.ssh_names, &host.ssh_names)?;
        let id = m.next_host_id;
        Ok(vec![Change::Enroll {
            token_hash,
            at,
            host: Host {
                id,
                enrolled_at: at,
                ..host
            },
            cert: HostCert {
                serial: cert_serial,
                not_after,
                issued_at: at,
            },
        }])
    })
    .await?;
    tracing::info!(host = %req.host_name, tags = %tags, peer = %peer.addr, "host enrolled");
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            host_name: req.host_name,
            tags,
            client_cert_pem: cert_pem,
            root_pem: ca.tls_root.cert_pem.clone(),
            client_cert_not_after: not_after,
            user_ca_keys: ca.user_ca_keys.clone(),
            ssh_host_certs,
        }),
    ))
}

/// The extra SSH host certificate names a host asked for, checked against what its
/// enrollment token allows and against every other enrolled host's names (a host never
/// gets another host's name, even when a token allowed it). Its own name is always a
/// principal and is dropped from the list.
fn check_ssh_names(
    m: &crate::model::Model,
    host_name: &HostName,
    asked: &[HostName],
    allowed: &[HostName],
) -> Result<Vec<HostName>, ApiError> {
    if let Some(other) = m
        .hosts
        .values()
        .find(|h| !h.removed && &h.name != host_name && h.ssh_names.contains(host_name))
    {
        return Err(ApiError::new(
            ErrorCode::SshNameTaken,
            format!(
                "'{host_name}' is an SSH host name of enrolled host '{}'; remove that host \
                 first (`smith-ca admin host remove {}`) or pick another name",
                other.name, other.name
            ),
        ));
    }
    let mut out: Vec<HostName> = Vec::new();
    for n in asked {
        if n == host_name || out.contains(n) {
            continue;
        }
        if !allowed.contains(n) {
            let allowed_text = if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(ApiError::new(
                ErrorCode::SshNameNotAllowed,
                format!(
                    "this enrollment token does not allow the SSH host name '{n}' (it allows: \
                     {allowed_text}); the token was not used: enroll without that name or \
                     get a token with `smith-ca admin host token --tags ... --ssh-name {n}`"
                ),
            ));
        }
        if let Some(other) = m
            .hosts
            .values()
            .filter(|h| !h.removed && &h.name != host_name)
            .find(|h| h.principals().contains(n))
        {
            return Err(ApiError::new(
                ErrorCode::SshNameTaken,
                format!(
                    "the SSH host name '{n}' belongs to enrolled host '{}'; remove that host \
                     first (`smith-ca admin host remove {}`) or pick another name",
                    other.name, other.name
                ),
            ));
        }
        out.push(n.clone());
    }
    Ok(out)
}

fn rfc3339(t: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The enrolled, not removed host presenting this connection's client certificate.
pub(crate) fn host_of(ca: &Ca, peer: &Peer) -> Result<Host, ApiError> {
    let cert = peer.cert.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::ClientCertRequired,
            "this endpoint needs the host's mTLS client certificate (from enrollment)",
        )
    })?;
    let m = ca.model();
    let host = m
        .host_certs
        .get(&cert.serial)
        .and_then(|id| m.hosts.get(id));
    if let Some(host) = host.filter(|h| h.removed) {
        return Err(ApiError::new(
            ErrorCode::HostRemoved,
            format!(
                "host '{}' was removed from the CA by an admin: it gets no more policy \
                 updates; to bring it back, enroll it again with a new token \
                 (`smith-ca admin host token`, then `smith-host activate --token ...`)",
                host.name
            ),
        ));
    }
    // The handshake lets expired client certificates through (server::mtls) so that
    // the host learns what to do.
    match cert.validity_error(now()) {
        Some(ValidityError::Expired { not_after }) => {
            return Err(ApiError::new(
                ErrorCode::ClientCertExpired,
                format!(
                    "client certificate expired at {}: it was not renewed in time; re-enroll \
                     with smith-host activate --token <token from `smith-ca admin host token`>",
                    rfc3339(not_after)
                ),
            ))
        }
        Some(ValidityError::NotYetValid { not_before }) => {
            return Err(ApiError::new(
                ErrorCode::ClientCertNotYetValid,
                format!(
                    "client certificate is not valid before {}: check this host's clock \
                     (the CA's time is {})",
                    rfc3339(not_before),
                    rfc3339(now() as i64)
                ),
            ))
        }
        None => {}
    }
    let host = host.ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownHost,
            "this client certificate was not issued to a host of this CA; enroll again",
        )
    })?;
    if host.name.as_str() != cert.common_name {
        return Err(ApiError::new(
            ErrorCode::WrongHost,
            "the client certificate's name does not match its enrollment",
        ));
    }
    Ok(host.clone())
}

pub async fn renew(
    State(ca): State<Arc<Ca>>,
    peer: Peer,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let host = host_of(&ca, &peer)?;
    let at = now();
    let (cert_pem, serial, not_after) = ca
        .tls_root
        .issue_client_cert(&host.name, &req.csr_pem, ca.cfg.host_cert_ttl, at)
        .map_err(|e| match e {
            crate::tlsca::TlsCaError::BadCsr(m) => ApiError::new(ErrorCode::InvalidCsr, m),
            e => ApiError::internal("issuing a host certificate", e),
        })?;
    let ssh_host_certs =
        sign_host_keys(&ca, &host.name, &host.principals(), &req.ssh_host_keys, at)?;
    let host_id = host.id;
    ca.mutate(format!("host renew {}", host.name), move |m, at| {
        if m.hosts.get(&host_id).is_none_or(|h| h.removed) {
            return Err(ApiError::new(ErrorCode::HostRemoved, "host was removed"));
        }
        Ok(vec![Change::HostCert {
            host_id,
            cert: HostCert {
                serial,
                not_after,
                issued_at: at,
            },
        }])
    })
    .await?;
    tracing::info!(host = %host.name, "host client certificate renewed");
    Ok(Json(EnrollResponse {
        host_name: host.name,
        tags: host.tags,
        client_cert_pem: cert_pem,
        root_pem: ca.tls_root.cert_pem.clone(),
        client_cert_not_after: not_after,
        user_ca_keys: ca.user_ca_keys.clone(),
        ssh_host_certs,
    }))
}

#[derive(serde::Deserialize)]
pub struct SyncQuery {
    #[serde(default)]
    since: u64,
    #[serde(default)]
    wait: u64,
    #[serde(default)]
    host: Option<String>,
}

pub async fn sync(
    State(ca): State<Arc<Ca>>,
    peer: Peer,
    ApiQuery(q): ApiQuery<SyncQuery>,
) -> Result<Response, ApiError> {
    let host = host_of(&ca, &peer)?;
    if let Some(h) = &q.host {
        if h != host.name.as_str() {
            return Err(ApiError::new(
                ErrorCode::WrongHost,
                format!(
                    "this client certificate belongs to host '{}', not '{}'",
                    host.name,
                    h.escape_debug()
                ),
            ));
        }
    }
    let mut rx = ca.version_tx.subscribe();
    let current = *rx.borrow_and_update();
    let known = q.since > 0 && q.since <= current;
    if q.since == current && q.since > 0 {
        let wait = Duration::from_secs(q.wait.min(MAX_WAIT_SECS));
        let mut shutdown = ca.shutdown.clone();
        let changed = tokio::select! {
            r = tokio::time::timeout(wait, rx.changed()) => matches!(r, Ok(Ok(()))),
            _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => false,
        };
        if !changed {
            ca.host_seen(host.id, Some(q.since));
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    // Re-check: the host may have been removed while waiting.
    let host = host_of(&ca, &peer)?;
    let resp = {
        let m = ca.model();
        crate::sync::sync_response(&m, &host.name, &host.tags, q.since, &ca.user_ca_keys)
    };
    ca.host_seen(host.id, known.then_some(q.since));
    Ok(Json(resp).into_response())
}
