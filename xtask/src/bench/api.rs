//! The bench's handle on the CA's HTTPS API: smith-api's async client (which pins the
//! CA's root exactly like Smith's own clients), with helpers taking plain names.
//!
//! Must never: trust anything but the pinned root, or hide a CA error (every refusal
//! becomes an error carrying the CA's own code and message).

use anyhow::{anyhow, Context, Result};
use smith_api::tls::{Identity, Trust};
use smith_api::{
    AsyncClient, ClientOptions, GrantAdd, GrantInfo, GroupAdd, GroupInfo, HostTokenRequest,
    HostTokenRequestNamed, TokenRequest, UserAdd, UserInfo,
};
use smith_proto::{GroupName, HostName, HostPattern, Level, Tags, UserName};

/// A client of the CA whose root has `fingerprint`, with a bearer `token` and/or a
/// host's mTLS identity. Each client keeps its own keep-alive connections.
pub fn client(
    base: &str,
    fingerprint: &str,
    token: Option<&str>,
    identity: Option<&Identity>,
) -> Result<AsyncClient> {
    AsyncClient::new(ClientOptions {
        token: token.map(str::to_string),
        identity: identity.cloned(),
        ..ClientOptions::new(base, Trust::Fingerprint(fingerprint.to_string()))
    })
    .context("building the HTTPS client")
}

/// The CA's API with the admin's bearer token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub fingerprint: String,
    pub client: AsyncClient,
}

impl Api {
    pub fn new(base: &str, fingerprint: &str, token: &str) -> Result<Api> {
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            fingerprint: fingerprint.to_string(),
            client: client(base, fingerprint, Some(token), None)?,
        })
    }

    pub async fn group_add(&self, name: &str) -> Result<GroupInfo> {
        let body = GroupAdd {
            name: GroupName::new(name)?,
            gid: None,
        };
        Ok(self.client.add_group(&body).await?)
    }

    pub async fn user_add(&self, name: &str, groups: &[&str]) -> Result<UserInfo> {
        let body = UserAdd {
            name: UserName::new(name)?,
            groups: groups
                .iter()
                .map(|g| GroupName::new(g))
                .collect::<Result<_, _>>()?,
            uid: None,
            reuse_uid: false,
            oidc_subject: None,
            gecos: None,
            shell: None,
            create_groups: false,
        };
        Ok(self.client.add_user(&body).await?)
    }

    pub async fn member_add(&self, group: &str, user: &str) -> Result<GroupInfo> {
        Ok(self
            .client
            .add_member(&GroupName::new(group)?, &UserName::new(user)?)
            .await?)
    }

    pub async fn member_remove(&self, group: &str, user: &str) -> Result<GroupInfo> {
        Ok(self
            .client
            .remove_member(&GroupName::new(group)?, &UserName::new(user)?)
            .await?)
    }

    pub async fn grant_add(&self, group: &str, tags: &str, level: Level) -> Result<GrantInfo> {
        let body = GrantAdd {
            group: GroupName::new(group)?,
            selector: Tags::parse(tags).map_err(|e| anyhow!("tags {tags}: {e}"))?,
            level,
            max_ttl_secs: 8 * 3600,
            source_cidrs: vec![],
            require_reason: false,
            time_windows: vec![],
            logins: vec![],
            permits: Default::default(),
            force_command: None,
            sudo_commands: vec![],
            sudo_as: vec![],
        };
        Ok(self.client.add_grant(&body).await?)
    }

    /// A sudo grant limited to `command` run as `run_as` (issue 17).
    pub async fn grant_add_sudo_rule(
        &self,
        group: &str,
        tags: &str,
        command: &str,
        run_as: &str,
    ) -> Result<GrantInfo> {
        let body = GrantAdd {
            group: GroupName::new(group)?,
            selector: Tags::parse(tags).map_err(|e| anyhow!("tags {tags}: {e}"))?,
            level: Level::Sudo,
            max_ttl_secs: 8 * 3600,
            source_cidrs: vec![],
            require_reason: false,
            time_windows: vec![],
            logins: vec![],
            permits: Default::default(),
            force_command: None,
            sudo_commands: vec![command.to_string()],
            sudo_as: vec![smith_proto::UserName::new(run_as)?],
        };
        Ok(self.client.add_grant(&body).await?)
    }

    pub async fn grant_remove(&self, id: u64) -> Result<()> {
        self.client.remove_grant(id).await?;
        Ok(())
    }

    pub async fn user_token(&self, user: &str) -> Result<String> {
        let body = TokenRequest {
            ttl_secs: Some(86400),
        };
        let t = self.client.user_token(&UserName::new(user)?, &body).await?;
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
        Ok(self.client.host_token(&body).await?.token)
    }

    /// One enrollment token good for `uses` hosts named `pattern` (`*.DOMAIN`), as an
    /// autoscaling group gets.
    pub async fn shared_host_token(&self, tags: &str, pattern: &str, uses: u32) -> Result<String> {
        let body = HostTokenRequestNamed {
            request: HostTokenRequest {
                tags: Tags::parse(tags).map_err(|e| anyhow!("tags {tags}: {e}"))?,
                ttl_secs: 3600,
            },
            ssh_names: vec![],
            names: vec![HostPattern::parse(pattern).map_err(|e| anyhow!("{pattern}: {e}"))?],
            uses: Some(uses),
        };
        Ok(self.client.host_token(&body).await?.token)
    }
}
