//! The host-side access decision, as pam_smith's session check (defence in depth behind
//! sshd) and `smith-host principals` (the diagnostic) make it: may this certificate log
//! in as this name on this host, now?
//!
//! Grant-bound (see [`crate::grants`]): the certificate must carry a principal that the
//! host's principals file for the name lists, i.e. one of the grants it was issued under
//! still covers this host and still counts the person among its group. sshd makes the
//! same decision from the same file; nothing else (other grants the person holds, the
//! scope asked for) matters.

use crate::grants::{self, GRANT_PREFIX};
use crate::sshcert::CertInfo;
use std::fmt;

/// Why a certificate was refused on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotAUserCertificate,
    Expired,
    /// The certificate names no grant: issued by a CA older than grant-bound
    /// certificates.
    NoGrants,
    /// None of the certificate's grants allows this name here now.
    NoGrantHere {
        /// The grant ids the certificate carries.
        grants: Vec<u64>,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotAUserCertificate => write!(f, "not a user certificate"),
            Refusal::Expired => write!(f, "certificate is not valid now"),
            Refusal::NoGrants => write!(
                f,
                "the certificate names no grant (issued by a CA older than grant-bound \
                 certificates): get a new one with `smith cert`"
            ),
            Refusal::NoGrantHere { grants } => {
                let ids: Vec<String> = grants.iter().map(|g| g.to_string()).collect();
                write!(
                    f,
                    "none of the grants the certificate was issued under ({}) allows this \
                     login on this host now",
                    ids.join(", ")
                )
            }
        }
    }
}

/// Decides whether `cert` may log in as the name whose principals file holds `listed`
/// (its principal lines) at `now`. Answers the principal that admits it.
pub fn check_certificate<'a>(
    cert: &'a CertInfo,
    listed: &[String],
    now_unix: u64,
) -> Result<&'a str, Refusal> {
    if !cert.is_user_cert() {
        return Err(Refusal::NotAUserCertificate);
    }
    if !cert.valid_at(now_unix) {
        return Err(Refusal::Expired);
    }
    if let Some(p) = cert
        .principals
        .iter()
        .find(|p| p.starts_with(GRANT_PREFIX) && listed.contains(p))
    {
        return Ok(p.as_str());
    }
    let ids: Vec<u64> = cert
        .principals
        .iter()
        .filter_map(|p| grants::parse_grant_principal(p))
        .map(|g| g.id)
        .collect();
    if ids.is_empty() {
        Err(Refusal::NoGrants)
    } else {
        Err(Refusal::NoGrantHere { grants: ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::grant_principal;
    use crate::Level;

    fn cert(principals: &[String]) -> CertInfo {
        CertInfo {
            key_type: "ssh-ed25519-cert-v01@openssh.com".into(),
            serial: 1,
            cert_type: 1,
            key_id: "k".into(),
            principals: principals.to_vec(),
            valid_after: 10,
            valid_before: 100,
            critical_options: vec![],
            extensions: vec![],
        }
    }

    #[test]
    fn decisions() {
        let dev = grant_principal(1, Level::Ssh, "alice");
        let prod = grant_principal(2, Level::Sudo, "alice");
        let on_prod = vec![prod.clone()];
        let dev_cert = cert(&["alice".into(), dev.clone()]);
        assert_eq!(
            check_certificate(&dev_cert, &on_prod, 50),
            Err(Refusal::NoGrantHere { grants: vec![1] })
        );
        let prod_cert = cert(&["alice".into(), prod.clone()]);
        assert_eq!(
            check_certificate(&prod_cert, &on_prod, 50),
            Ok(prod.as_str())
        );
        // An old certificate naming only the login: refused, and said why.
        let old = cert(&["alice".into()]);
        assert_eq!(
            check_certificate(&old, &["alice".to_string()], 50),
            Err(Refusal::NoGrants)
        );
        assert_eq!(
            check_certificate(&prod_cert, &on_prod, 100),
            Err(Refusal::Expired)
        );
        let mut host_cert = prod_cert.clone();
        host_cert.cert_type = 2;
        assert_eq!(
            check_certificate(&host_cert, &on_prod, 50),
            Err(Refusal::NotAUserCertificate)
        );
    }
}
