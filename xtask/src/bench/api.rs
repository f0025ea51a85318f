//! The bench's async client for the CA's HTTPS API (admin calls, enrollment, issuance),
//! built on `smith_api::tls::client_config` so that it pins the CA's root exactly like
//! Smith's own clients.
//!
//! Must never: trust anything but the pinned root, or hide a CA error (every non-2xx
//! answer becomes an error carrying the CA's own message).

use anyhow::{anyhow, bail, Context, Result};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use smith_api::tls::{client_config, Identity, Trust};
use smith_api::{
    ErrorBody, GrantAdd, GroupAdd, GroupInfo, HostTokenRequest, HostTokenRequestNamed,
    MemberChange, TokenRequest, TokenResponse, UserAdd, UserInfo,
};
use smith_proto::{GroupName, HostName, HostPattern, Level, Tags, UserName};
use std::time::Duration;

/// A reqwest client that trusts only the CA whose root has `fingerprint`, optionally
/// presenting a host's mTLS identity. Each client keeps its own keep-alive connections.
pub fn http_client(fingerprint: &str, identity: Option<&Identity>) -> Result<reqwest::Client> {
    let tls = client_config(&Trust::Fingerprint(fingerprint.to_string()), identity)
        .map_err(|e| anyhow!("TLS configuration: {e}"))?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(300))
        .build()
        .context("building the HTTPS client")
}

/// The CA's API with a bearer token (the admin's, or a user's).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub fingerprint: String,
    http: reqwest::Client,
    token: String,
}

impl Api {
    pub fn new(base: &str, fingerprint: &str, token: &str) -> Result<Api> {
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            fingerprint: fingerprint.to_string(),
            http: http_client(fingerprint, None)?,
            token: token.to_string(),
        })
    }

    pub async fn call<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}: cannot reach the CA at {}", self.base))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("{method} {path}: reading the answer"))?;
        if !status.is_success() {
            let why = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| format!("{}: {}", e.code, e.error))
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            bail!("{method} {path}: the CA answered {status}: {why}");
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{method} {path}: unexpected answer {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })
    }

    pub async fn group_add(&self, name: &str) -> Result<GroupInfo> {
        let body = GroupAdd {
            name: GroupName::new(name)?,
            gid: None,
        };
        self.call(Method::POST, "/v1/admin/groups", Some(&body))
            .await
    }

    pub async fn user_add(&self, name: &str, groups: &[&str]) -> Result<UserInfo> {
        let body = UserAdd {
            name: UserName::new(name)?,
            groups: groups
                .iter()
                .map(|g| GroupName::new(g))
                .collect::<Result<_, _>>()?,
            uid: None,
            gecos: None,
            shell: None,
            create_groups: false,
        };
        self.call(Method::POST, "/v1/admin/users", Some(&body))
            .await
    }

    pub async fn member_add(&self, group: &str, user: &str) -> Result<GroupInfo> {
        let body = MemberChange {
            user: UserName::new(user)?,
        };
        self.call(
            Method::POST,
            &format!("/v1/admin/groups/{group}/members"),
            Some(&body),
        )
        .await
    }

    pub async fn member_remove(&self, group: &str, user: &str) -> Result<GroupInfo> {
        self.call::<(), _>(
            Method::DELETE,
            &format!("/v1/admin/groups/{group}/members/{user}"),
            None,
        )
        .await
    }

    pub async fn grant_add(
        &self,
        group: &str,
        tags: &str,
        level: Level,
    ) -> Result<serde_json::Value> {
        let body = GrantAdd {
            group: GroupName::new(group)?,
            selector: Tags::parse(tags).map_err(|e| anyhow!("tags {tags}: {e}"))?,
            level,
            max_ttl_secs: 8 * 3600,
            source_cidrs: vec![],
            require_reason: false,
            time_windows: vec![],
        };
        self.call(Method::POST, "/v1/admin/grants", Some(&body))
            .await
    }

    pub async fn user_token(&self, user: &str) -> Result<String> {
        let body = TokenRequest {
            ttl_secs: Some(86400),
        };
        let t: TokenResponse = self
            .call(
                Method::POST,
                &format!("/v1/admin/users/{user}/token"),
                Some(&body),
            )
            .await?;
        Ok(t.token)
    }

    /// A single-use enrollment token for host `name` with `tags`.
    pub async fn host_token(&self, tags: &str, name: &HostName) -> Result<String> {
        let body = HostTokenRequestNamed {
            request: HostTokenRequest {
                tags: Tags::parse(tags).map_err(|e| anyhow!("tags {tags}: {e}"))?,
                ttl_secs: 3600,
            },
            ssh_names: vec![],
            names: vec![HostPattern::Exact(name.clone())],
            uses: None,
        };
        let t: TokenResponse = self
            .call(Method::POST, "/v1/admin/hosts/tokens", Some(&body))
            .await?;
        Ok(t.token)
    }
}
