//! The hosts a caller may reach (`smith hosts`, and the list `smith` keeps to decide
//! offline which certificate fits a host): authenticated like issuance (an OIDC sign-in
//! applies its memberships first, under the same rate limit), computed from the model
//! by [`crate::reach::reachable`]. A read: nothing is recorded.
//!
//! Must never: list a host none of the caller's grants covers.

use super::issuance::Unsettled;
use super::{Authority, Caller, IssueError};
use smith_api::ReachableHost;
use smith_proto::UserName;
use std::net::IpAddr;
use std::sync::Arc;

impl Authority {
    /// The caller and the enrolled hosts their grants cover, by name.
    pub async fn reachable_hosts(
        self: &Arc<Self>,
        caller: Caller,
        oidc_nonce: Option<&str>,
        source: IpAddr,
    ) -> Result<(UserName, Vec<ReachableHost>), IssueError> {
        let user = match self.settle(caller, oidc_nonce, source).await {
            Ok((u, _)) => u,
            Err(Unsettled::Early(e)) => return Err(e),
            Err(Unsettled::SignIn { mut denied, .. }) => {
                denied.reason = format!("sign-in refused: {}", denied.reason);
                return Err(IssueError::Denied(denied));
            }
        };
        let hosts = crate::reach::reachable(&self.model(), &user).map_err(IssueError::Denied)?;
        Ok((user, hosts))
    }
}
