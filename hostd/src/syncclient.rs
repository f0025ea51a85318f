//! The host's HTTPS client for the CA's host endpoints (mTLS): the long-poll sync
//! (`GET /v1/host/sync`), client certificate renewal (`POST /v1/host/renew`) and the
//! audit upload (`GET /v1/host/audit/head`, `POST /v1/host/audit`).
//!
//! Owns: building the async reqwest client from `smith_api::tls::client_config` (the
//! pinned root and the host identity), request timeouts, response size bounds and the
//! mapping of HTTP answers to [`CaError`]. Must never: trust anything but the pinned
//! root, or accept an unbounded response body.

use crate::identity::HostCredentials;
use serde::Deserialize;
use smith_api::chain::{AuditAck, AuditBatch};
use smith_api::ErrorBody;
use smith_proto::snapshot::SyncResponse;
use smith_proto::HostName;
use std::time::Duration;

/// Largest sync response accepted (a 10,000-user snapshot is a few MB).
pub const MAX_SYNC_BODY: usize = 64 << 20;
/// Largest renewal response accepted.
pub const MAX_RENEW_BODY: usize = 1 << 20;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CaError {
    #[error("cannot reach the CA at {url}: {message}")]
    Transport { url: String, message: String },
    #[error("the CA refused the request ({status} {code}): {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the CA: {0}")]
    Decode(String),
    #[error("{0}")]
    Config(String),
}

impl CaError {
    pub fn status(&self) -> Option<u16> {
        match self {
            CaError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn code(&self) -> Option<&str> {
        match self {
            CaError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// What `POST /v1/host/renew` returns (an `EnrollResponse`-like body; only the new
/// certificate is required).
#[derive(Debug, Clone, Deserialize)]
pub struct RenewResponse {
    pub client_cert_pem: String,
    #[serde(default)]
    pub client_cert_not_after: Option<u64>,
    /// SSH host certificates for the `ssh_host_keys` sent, same order (empty from a CA
    /// that does not sign them on renewal).
    #[serde(default)]
    pub ssh_host_certs: Vec<String>,
}

/// The sync URL path (`epoch`: of the version `since`; a CA of another epoch answers a
/// full snapshot).
pub fn sync_path(since: u64, wait_secs: u64, host: &HostName, epoch: Option<&str>) -> String {
    let mut p = format!("/v1/host/sync?since={since}&wait={wait_secs}&host={host}");
    if let Some(e) = epoch.filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_hexdigit())) {
        p.push_str(&format!("&epoch={e}"));
    }
    p
}

pub struct CaClient {
    http: reqwest::Client,
    base: String,
}

impl CaClient {
    pub fn new(base_url: &str, creds: &HostCredentials) -> Result<CaClient, CaError> {
        crate::config::validate_ca_url(base_url).map_err(CaError::Config)?;
        let tls = smith_api::tls::client_config(&creds.trust, Some(&creds.identity))
            .map_err(CaError::Config)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| CaError::Config(smith_api::client::error_chain(&e)))?;
        Ok(CaClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
        })
    }

    async fn body(
        url: &str,
        mut resp: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, CaError> {
        let mut out = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if out.len() + c.len() > limit {
                        return Err(CaError::Decode(format!(
                            "response from {url} is larger than {limit} bytes"
                        )));
                    }
                    out.extend_from_slice(&c);
                }
                Ok(None) => return Ok(out),
                Err(e) => {
                    return Err(CaError::Transport {
                        url: url.to_string(),
                        message: smith_api::client::error_chain(&e),
                    })
                }
            }
        }
    }

    async fn check(url: &str, resp: reqwest::Response) -> Result<reqwest::Response, CaError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = Self::body(url, resp, 64 * 1024).await.unwrap_or_default();
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&text) {
            Ok(b) => (b.code, b.error),
            Err(_) => (
                "http_error".to_string(),
                String::from_utf8_lossy(&text).chars().take(300).collect(),
            ),
        };
        Err(CaError::Status {
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// One sync request. `Ok(None)`: nothing changed within `wait_secs` (204).
    pub async fn sync(
        &self,
        since: u64,
        wait_secs: u64,
        host: &HostName,
        epoch: Option<&str>,
    ) -> Result<Option<SyncResponse>, CaError> {
        let url = format!("{}{}", self.base, sync_path(since, wait_secs, host, epoch));
        let resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(wait_secs + 20))
            .send()
            .await
            .map_err(|e| CaError::Transport {
                url: url.clone(),
                message: smith_api::client::error_chain(&e),
            })?;
        let resp = Self::check(&url, resp).await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let body = Self::body(&url, resp, MAX_SYNC_BODY).await?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| CaError::Decode(format!("sync response: {e}")))
    }

    /// The CA's head of this host's audit chain.
    pub async fn audit_head(&self) -> Result<AuditAck, CaError> {
        let url = format!("{}/v1/host/audit/head", self.base);
        let resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| CaError::Transport {
                url: url.clone(),
                message: smith_api::client::error_chain(&e),
            })?;
        let resp = Self::check(&url, resp).await?;
        let body = Self::body(&url, resp, MAX_RENEW_BODY).await?;
        serde_json::from_slice(&body).map_err(|e| CaError::Decode(format!("audit head: {e}")))
    }

    /// Uploads audit records (in chain order); the CA answers its new head.
    pub async fn audit_upload(&self, batch: &AuditBatch) -> Result<AuditAck, CaError> {
        let url = format!("{}/v1/host/audit", self.base);
        let resp = self
            .http
            .post(&url)
            .timeout(Duration::from_secs(60))
            .json(batch)
            .send()
            .await
            .map_err(|e| CaError::Transport {
                url: url.clone(),
                message: smith_api::client::error_chain(&e),
            })?;
        let resp = Self::check(&url, resp).await?;
        let body = Self::body(&url, resp, MAX_RENEW_BODY).await?;
        serde_json::from_slice(&body).map_err(|e| CaError::Decode(format!("audit upload: {e}")))
    }

    /// Asks for a new client certificate for `csr_pem`, and SSH host certificates for
    /// `ssh_host_keys` (OpenSSH public key lines).
    pub async fn renew(
        &self,
        csr_pem: &str,
        ssh_host_keys: &[String],
    ) -> Result<RenewResponse, CaError> {
        let url = format!("{}/v1/host/renew", self.base);
        let resp = self
            .http
            .post(&url)
            .timeout(Duration::from_secs(30))
            .json(&smith_api::RenewRequest {
                csr_pem: csr_pem.to_string(),
                ssh_host_keys: ssh_host_keys.to_vec(),
            })
            .send()
            .await
            .map_err(|e| CaError::Transport {
                url: url.clone(),
                message: smith_api::client::error_chain(&e),
            })?;
        let resp = Self::check(&url, resp).await?;
        let body = Self::body(&url, resp, MAX_RENEW_BODY).await?;
        serde_json::from_slice(&body).map_err(|e| CaError::Decode(format!("renew response: {e}")))
    }
}
