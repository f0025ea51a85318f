//! A blocking client for the CA's API, for the CLIs (`smith`, `smith-ca admin`,
//! `smith-host`). Never use it inside an async runtime (it runs its own).

use crate::types::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

pub use crate::tls::{Identity, Trust};

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// e.g. `https://ca.example.com:8443`
    pub base_url: String,
    pub trust: Trust,
    /// Bearer token (admin, user, or OIDC ID token).
    pub token: Option<String>,
    /// mTLS identity (hosts).
    pub identity: Option<Identity>,
    pub timeout: Duration,
}

#[derive(Debug)]
pub enum ApiError {
    /// Bad local configuration (URL, fingerprint, PEM files).
    Config(String),
    /// The CA could not be reached or the TLS handshake failed.
    Transport { url: String, message: String },
    /// The CA answered with an error.
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// The CA answered something this client does not understand.
    Decode(String),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Config(m) => write!(f, "{m}"),
            ApiError::Transport { url, message } => write!(
                f,
                "cannot reach the Smith CA at {url}: {message}\n\
                 hint: check the CA URL (--ca-url or SMITH_CA_URL), the pinned fingerprint \
                 (--ca-fingerprint or SMITH_CA_FINGERPRINT) and that `smith-ca serve` is running"
            ),
            ApiError::Status {
                status,
                code,
                message,
            } => write!(f, "the CA refused the request ({status} {code}): {message}"),
            ApiError::Decode(m) => write!(f, "unexpected answer from the CA: {m}"),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// HTTP status of a refusal, if that is what this is.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The whole chain of causes of an error, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Client, ApiError> {
        let base = opts.base_url.trim_end_matches('/').to_string();
        if !base.starts_with("https://") {
            return Err(ApiError::Config(format!(
                "CA URL '{base}' must start with https://"
            )));
        }
        let tls = crate::tls::client_config(&opts.trust, opts.identity.as_ref())
            .map_err(ApiError::Config)?;
        let http = reqwest::blocking::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| ApiError::Config(error_chain(&e)))?;
        Ok(Client {
            http,
            base,
            token: opts.token,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn send(
        &self,
        req: reqwest::blocking::RequestBuilder,
        url: &str,
    ) -> Result<Option<reqwest::blocking::Response>, ApiError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().map_err(|e| ApiError::Transport {
            url: url.to_string(),
            message: error_chain(&e),
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status.is_success() {
            return Ok(Some(resp));
        }
        let text = resp.text().unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => (b.code, b.error),
            Err(_) => ("http_error".to_string(), text.chars().take(500).collect()),
        };
        Err(ApiError::Status {
            status: status.as_u16(),
            code,
            message,
        })
    }

    fn decode<T: DeserializeOwned>(resp: reqwest::blocking::Response) -> Result<T, ApiError> {
        let text = resp.text().map_err(|e| ApiError::Decode(error_chain(&e)))?;
        serde_json::from_str(&text).map_err(|e| ApiError::Decode(e.to_string()))
    }

    fn required<T: DeserializeOwned>(
        r: Option<reqwest::blocking::Response>,
    ) -> Result<T, ApiError> {
        match r {
            Some(resp) => Self::decode(resp),
            None => Err(ApiError::Decode("empty response".into())),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let url = format!("{}{}", self.base, path);
        Self::required(self.send(self.http.get(&url), &url)?)
    }

    /// GET that maps `204 No Content` to `None`.
    pub fn get_optional<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ApiError> {
        let url = format!("{}{}", self.base, path);
        match self.send(self.http.get(&url), &url)? {
            Some(r) => Ok(Some(Self::decode(r)?)),
            None => Ok(None),
        }
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        let url = format!("{}{}", self.base, path);
        Self::required(self.send(self.http.post(&url).json(body), &url)?)
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let url = format!("{}{}", self.base, path);
        Self::required(self.send(self.http.delete(&url), &url)?)
    }
}
