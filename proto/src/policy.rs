//! The host-side access decision shared by `smith-host principals` (sshd's
//! `AuthorizedPrincipalsCommand`) and pam_smith's session check: may this certificate
//! be used to log in as this user on this host?

use crate::sshcert::CertInfo;
use crate::tags::{Level, Tags};
use std::fmt;

/// Why a certificate was refused on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotAUserCertificate,
    PrincipalMismatch,
    Expired,
    NoGrantHere,
    /// The scope extension could not be parsed.
    BadScope(String),
    /// The certificate's scope asks for tags this host does not have.
    ScopeMismatch {
        scope: String,
        host_tags: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotAUserCertificate => write!(f, "not a user certificate"),
            Refusal::PrincipalMismatch => write!(f, "certificate does not name this user"),
            Refusal::Expired => write!(f, "certificate is not valid now"),
            Refusal::NoGrantHere => write!(f, "user has no grant on this host"),
            Refusal::BadScope(s) => {
                write!(f, "certificate scope '{}' is malformed", s.escape_debug())
            }
            Refusal::ScopeMismatch { scope, host_tags } => write!(
                f,
                "certificate scope '{scope}' does not match this host's tags '{host_tags}'"
            ),
        }
    }
}

/// Decides whether `cert` may log in as `user` on a host with `host_tags`, given the
/// user's level here (`None`: no grant / not a Smith user). A certificate without a
/// scope extension is accepted wherever the user has a grant.
pub fn check_certificate(
    cert: &CertInfo,
    user: &str,
    user_level: Option<Level>,
    host_tags: &Tags,
    now_unix: u64,
) -> Result<(), Refusal> {
    if !cert.is_user_cert() {
        return Err(Refusal::NotAUserCertificate);
    }
    if !cert.principals.iter().any(|p| p == user) {
        return Err(Refusal::PrincipalMismatch);
    }
    if !cert.valid_at(now_unix) {
        return Err(Refusal::Expired);
    }
    if user_level.is_none() {
        return Err(Refusal::NoGrantHere);
    }
    if let Some(scope) = cert.scope() {
        let parsed = Tags::parse(&scope).map_err(|_| Refusal::BadScope(scope.clone()))?;
        if !parsed.is_subset_of(host_tags) {
            return Err(Refusal::ScopeMismatch {
                scope,
                host_tags: host_tags.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(scope: Option<&str>) -> CertInfo {
        let mut extensions = vec![("permit-pty".to_string(), vec![])];
        if let Some(s) = scope {
            let mut data = (s.len() as u32).to_be_bytes().to_vec();
            data.extend_from_slice(s.as_bytes());
            extensions.push((crate::sshcert::SCOPE_EXTENSION.to_string(), data));
        }
        CertInfo {
            key_type: "ssh-ed25519-cert-v01@openssh.com".into(),
            serial: 1,
            cert_type: 1,
            key_id: "k".into(),
            principals: vec!["oscar".into()],
            valid_after: 10,
            valid_before: 100,
            critical_options: vec![],
            extensions,
        }
    }

    #[test]
    fn decisions() {
        let web = Tags::parse("env=prod,role=web").unwrap();
        let ok = |c: &CertInfo, l| check_certificate(c, "oscar", l, &web, 50);
        assert_eq!(ok(&cert(Some("env=prod")), Some(Level::Sudo)), Ok(()));
        assert_eq!(ok(&cert(None), Some(Level::Ssh)), Ok(()));
        assert!(matches!(
            ok(&cert(Some("env=dev")), Some(Level::Sudo)),
            Err(Refusal::ScopeMismatch { .. })
        ));
        assert_eq!(ok(&cert(Some("env=prod")), None), Err(Refusal::NoGrantHere));
        assert!(matches!(
            ok(&cert(Some("env")), Some(Level::Ssh)),
            Err(Refusal::BadScope(_))
        ));
        assert_eq!(
            check_certificate(&cert(None), "alice", Some(Level::Ssh), &web, 50),
            Err(Refusal::PrincipalMismatch)
        );
        assert_eq!(
            check_certificate(&cert(None), "oscar", Some(Level::Ssh), &web, 100),
            Err(Refusal::Expired)
        );
        let mut host_cert = cert(None);
        host_cert.cert_type = 2;
        assert_eq!(
            ok(&host_cert, Some(Level::Ssh)),
            Err(Refusal::NotAUserCertificate)
        );
    }
}
