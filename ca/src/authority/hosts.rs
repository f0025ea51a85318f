//! Hosts: enrollment tokens, enrollment, mTLS client certificate renewal (with the SSH
//! host certificates), a host's identity from its client certificate, removal, and what
//! a host receives when it syncs.
//!
//! A host's identity is its verified client certificate: its serial must be one this CA
//! issued to a host that is not removed, and its CN must be that host's name.
//!
//! Must never: accept a used, expired or non-enrollment token; certify a host for another
//! enrolled host's name; let one host read another's snapshot.

use super::{now, Authority, Error};
use crate::auth::{hash_token, AuthError, Principal};
use crate::model::{Change, Host, HostCert, Model};
use crate::origin::Origin;
use crate::sshca::sign_host_cert;
use crate::tlsca::{PeerCert, TlsCaError, ValidityError};
use smith_proto::snapshot::SyncResponse;
use smith_proto::{HostName, Tags};

/// Longest life of an enrollment token.
pub const MAX_ENROLL_TTL_SECS: u64 = 30 * 86400;
/// Most extra SSH host certificate names one enrollment token may allow.
pub const MAX_SSH_NAMES: usize = 16;
/// Most SSH host keys certified at once.
pub const MAX_HOST_KEYS: usize = 8;
/// Clock-skew backdating of certificates' `valid_after`.
pub const BACKDATE_SECS: u64 = 300;

/// An enrollment token to mint.
#[derive(Debug, Clone)]
pub struct HostTokenInput {
    /// The tags the host will get.
    pub tags: Tags,
    pub ttl_secs: u64,
    /// Extra SSH host certificate names the host may ask for.
    pub ssh_names: Vec<HostName>,
}

/// A host enrolling.
#[derive(Debug, Clone)]
pub struct EnrollInput {
    pub token: String,
    pub host_name: HostName,
    pub csr_pem: String,
    /// OpenSSH public host keys to certify.
    pub ssh_host_keys: Vec<String>,
    /// Extra SSH names asked for (each must be allowed by the token).
    pub ssh_names: Vec<HostName>,
}

/// What an enrolled (or renewed) host receives.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub host: Host,
    pub client_cert_pem: String,
    pub client_cert_not_after: u64,
    /// SSH host certificates for the keys sent, same order.
    pub ssh_host_certs: Vec<String>,
}

/// The extra SSH host certificate names a host asked for, checked against what its
/// enrollment token allows and against every other enrolled host's names (a host never
/// gets another host's name, even when a token allowed it). Its own name is always a
/// principal and is dropped from the list.
fn check_ssh_names(
    m: &Model,
    host_name: &HostName,
    asked: &[HostName],
    allowed: &[HostName],
) -> Result<Vec<HostName>, Error> {
    let others = || {
        m.hosts()
            .values()
            .filter(move |h| !h.removed && &h.name != host_name)
    };
    if let Some(other) = others().find(|h| h.ssh_names.contains(host_name)) {
        return Err(Error::SshNameTaken {
            name: host_name.clone(),
            owner: other.name.clone(),
        });
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
            return Err(Error::SshNameNotAllowed {
                name: n.clone(),
                allowed: allowed_text,
            });
        }
        if let Some(other) = others().find(|h| h.principals().contains(n)) {
            return Err(Error::SshNameTaken {
                name: n.clone(),
                owner: other.name.clone(),
            });
        }
        out.push(n.clone());
    }
    Ok(out)
}

fn csr_error(e: TlsCaError) -> Error {
    match e {
        TlsCaError::BadCsr(m) => Error::InvalidCsr(m),
        e => Error::internal("issuing a host certificate", e),
    }
}

impl Authority {
    /// Mints a single-use enrollment token (shown once).
    pub fn mint_host_token(
        &self,
        origin: &Origin,
        input: HostTokenInput,
    ) -> Result<super::Minted, Error> {
        if input.ssh_names.len() > MAX_SSH_NAMES {
            return Err(Error::TooManySshNames(MAX_SSH_NAMES));
        }
        if !(1..=MAX_ENROLL_TTL_SECS).contains(&input.ttl_secs) {
            return Err(Error::InvalidTtl {
                what: "an enrollment token's lifetime",
                min: 1,
                max: MAX_ENROLL_TTL_SECS,
            });
        }
        let mut ssh_names: Vec<HostName> = Vec::new();
        for n in input.ssh_names {
            if !ssh_names.contains(&n) {
                ssh_names.push(n);
            }
        }
        let what = if ssh_names.is_empty() {
            format!("host token {}", input.tags)
        } else {
            let names: Vec<&str> = ssh_names.iter().map(|n| n.as_str()).collect();
            format!("host token {} ssh names {}", input.tags, names.join(","))
        };
        self.mint_enroll_token(origin, what, input.ttl_secs, input.tags, ssh_names)
    }

    /// Certifies SSH host keys for `principals` (the host's name first).
    fn sign_host_keys(
        &self,
        host: &HostName,
        principals: &[HostName],
        keys: &[String],
        at: u64,
    ) -> Result<Vec<String>, Error> {
        if keys.len() > MAX_HOST_KEYS {
            return Err(Error::TooManyHostKeys);
        }
        let mut out = Vec::new();
        for line in keys {
            let key = crate::sshca::parse_subject_key(line)
                .map_err(|e| Error::InvalidHostKey(e.to_string()))?;
            let cert = sign_host_cert(
                &self.keys.host_ca,
                &key,
                // Host certificates are signed by the host CA: their serials are random
                // and separate from the user certificates' sequence.
                rand::Rng::gen_range(&mut rand::rngs::OsRng, 1..u64::MAX),
                &format!("smith-host:{host}"),
                &principals.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                at.saturating_sub(BACKDATE_SECS),
                at + self.cfg.host_ssh_cert_ttl.as_secs(),
            )
            .map_err(|e| Error::internal("signing a host certificate", e))?;
            out.push(
                cert.to_openssh()
                    .map_err(|e| Error::internal("encoding a host certificate", e))?,
            );
        }
        Ok(out)
    }

    /// Enrolls a host with a single-use enrollment token.
    pub fn enroll(&self, input: EnrollInput) -> Result<Enrolled, Error> {
        let at = now();
        let token_hash = hash_token(&input.token);
        // Check the token first so that a bad token learns nothing else.
        let (tags, allowed_names) = {
            let m = self.model();
            match self.auth.authenticate(&m, &input.token, at) {
                Ok(crate::auth::Authenticated {
                    principal: Principal::Enroll { tags, .. },
                    ..
                }) => (
                    tags,
                    m.token(&token_hash)
                        .map(|t| t.ssh_names.clone())
                        .unwrap_or_default(),
                ),
                Ok(_) => return Err(Error::NotAnEnrollmentToken),
                Err(AuthError::Used) => return Err(Error::EnrollmentTokenUsed),
                Err(AuthError::Expired) => return Err(Error::EnrollmentTokenExpired),
                Err(e) => return Err(Error::Credential(e)),
            }
        };
        // Before anything is issued or the token used: a refused name leaves the token
        // usable (the host may retry without the name, or the admin mint a fitting token).
        let ssh_names = {
            let m = self.model();
            let names = check_ssh_names(&m, &input.host_name, &input.ssh_names, &allowed_names)?;
            if m.active_host(&input.host_name).is_some() {
                return Err(Error::HostExists(input.host_name.clone()));
            }
            names
        };
        let (cert_pem, serial, not_after) = self
            .keys
            .tls_root
            .issue_client_cert(&input.host_name, &input.csr_pem, self.cfg.host_cert_ttl, at)
            .map_err(csr_error)?;
        let planned = Host {
            id: 0,
            name: input.host_name.clone(),
            tags,
            enrolled_at: at,
            removed: false,
            cert_serial: serial.clone(),
            cert_not_after: not_after,
            ssh_names,
        };
        let ssh_host_certs = self.sign_host_keys(
            &input.host_name,
            &planned.principals(),
            &input.ssh_host_keys,
            at,
        )?;
        let origin = Origin::host(input.host_name.clone())
            .with_token(crate::auth::token_id(&token_hash).to_string());
        let (_, host) = self.mutate(
            &origin,
            format!("host enroll {}", input.host_name),
            |m, _, at| {
                // Re-check under the mutation lock: a concurrent enrollment may have won.
                if m.token(&token_hash).is_none_or(|t| t.used_at.is_some()) {
                    return Err(Error::EnrollmentTokenUsed);
                }
                if m.active_host(&planned.name).is_some() {
                    return Err(Error::HostExists(planned.name.clone()));
                }
                check_ssh_names(m, &planned.name, &planned.ssh_names, &planned.ssh_names)?;
                let host = Host {
                    id: m.next_host_id(),
                    enrolled_at: at,
                    ..planned
                };
                Ok((
                    vec![Change::Enroll {
                        token_hash,
                        at,
                        host: host.clone(),
                        cert: HostCert {
                            serial,
                            not_after,
                            issued_at: at,
                        },
                    }],
                    host,
                ))
            },
        )?;
        tracing::info!(host = %host.name, tags = %host.tags, "host enrolled");
        Ok(Enrolled {
            host,
            client_cert_pem: cert_pem,
            client_cert_not_after: not_after,
            ssh_host_certs,
        })
    }

    /// The enrolled, not removed host presenting this client certificate (`None`: the
    /// connection had none).
    pub fn host_identity(&self, cert: Option<&PeerCert>) -> Result<Host, Error> {
        let cert = cert.ok_or(Error::ClientCertRequired)?;
        let m = self.model();
        let host = m.host_of_cert(&cert.serial);
        if let Some(h) = host.filter(|h| h.removed) {
            return Err(Error::HostRemoved(h.name.clone()));
        }
        // The handshake lets expired client certificates through (server::mtls) so that
        // the host learns what to do.
        let at = now();
        match cert.validity_error(at) {
            Some(ValidityError::Expired { not_after }) => {
                return Err(Error::ClientCertExpired {
                    not_after: not_after.max(0) as u64,
                })
            }
            Some(ValidityError::NotYetValid { not_before }) => {
                return Err(Error::ClientCertNotYetValid {
                    not_before: not_before.max(0) as u64,
                    now: at,
                })
            }
            None => {}
        }
        let host = host.ok_or(Error::UnknownHost)?;
        if host.name.as_str() != cert.common_name {
            return Err(Error::WrongCertName);
        }
        Ok(host.clone())
    }

    /// Issues a new client certificate to `host` (identified by its current one) and
    /// certifies its SSH host keys again.
    pub fn renew(
        &self,
        host: &Host,
        csr_pem: &str,
        ssh_host_keys: &[String],
    ) -> Result<Enrolled, Error> {
        let at = now();
        let (cert_pem, serial, not_after) = self
            .keys
            .tls_root
            .issue_client_cert(&host.name, csr_pem, self.cfg.host_cert_ttl, at)
            .map_err(csr_error)?;
        let ssh_host_certs =
            self.sign_host_keys(&host.name, &host.principals(), ssh_host_keys, at)?;
        let origin = Origin::host(host.name.clone());
        self.mutate(&origin, format!("host renew {}", host.name), |m, _, at| {
            if m.host(host.id).is_none_or(|h| h.removed) {
                return Err(Error::HostRemoved(host.name.clone()));
            }
            Ok((
                vec![Change::HostCert {
                    host_id: host.id,
                    cert: HostCert {
                        serial,
                        not_after,
                        issued_at: at,
                    },
                }],
                (),
            ))
        })?;
        tracing::info!(host = %host.name, "host client certificate renewed");
        Ok(Enrolled {
            host: host.clone(),
            client_cert_pem: cert_pem,
            client_cert_not_after: not_after,
            ssh_host_certs,
        })
    }

    /// Removes an enrolled host: it gets no more policy.
    pub fn remove_host(&self, origin: &Origin, name: &HostName) -> Result<Host, Error> {
        let (_, id) = self.mutate(origin, format!("host remove {name}"), |m, _, at| {
            let h = m
                .active_host(name)
                .ok_or_else(|| Error::NoSuchHost(name.clone()))?;
            Ok((vec![Change::RemoveHost { host_id: h.id, at }], h.id))
        })?;
        self.model()
            .host(id)
            .cloned()
            .ok_or_else(|| Error::NoSuchHost(name.clone()))
    }

    /// The version a host that has `since` of `epoch` is to be answered from: 0 (a full
    /// snapshot) when its epoch is not ours. A host of our epoch ahead of us means the
    /// database went back in time without `smith-ca restore` (a copied file, a VM
    /// snapshot rolled back): the epoch is renewed (at most once an hour), so that every
    /// host takes the full snapshot instead of ignoring the lower version.
    pub fn sync_base(&self, host: &Host, since: u64, epoch: Option<&str>) -> u64 {
        let (ours, version) = {
            let m = self.model();
            (m.epoch().to_string(), m.version())
        };
        match epoch {
            Some(e) if e != ours => 0,
            Some(_) if since > version => {
                self.renew_epoch_after_rollback(host, since, version);
                0
            }
            _ => since,
        }
    }

    fn renew_epoch_after_rollback(&self, host: &Host, theirs: u64, ours: u64) {
        let at = now();
        {
            let mut last = self
                .epoch_renewed_at
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| at < t + 3600) {
                return;
            }
            *last = Some(at);
        }
        tracing::error!(host = %host.name, host_version = theirs, ca_version = ours, "a host has seen a higher policy version than this CA: the database went back in time (restored by hand?); starting a new epoch so that hosts take a full snapshot. Check what changed since (`smith-ca admin changes`) and re-apply revocations and disables made after the copy was taken");
        let epoch = crate::store::new_epoch();
        let origin = Origin::local("epoch check");
        let what = format!(
            "new epoch: host {} has seen version {theirs}, this database is at {ours}",
            host.name
        );
        if let Err(e) = self.mutate(&origin, what, |_, _, _| {
            Ok((vec![Change::SetEpoch { epoch }], ()))
        }) {
            tracing::error!(error = %e, "could not start a new epoch");
        }
    }

    /// What `host` receives when it has version `since` (0 = nothing): a full snapshot or
    /// a delta (see [`crate::sync`]).
    pub fn sync_view(&self, host: &Host, since: u64) -> SyncResponse {
        let m = self.model();
        crate::sync::sync_response(&m, &host.name, &host.tags, since, &self.keys.user_ca_keys)
    }
}
