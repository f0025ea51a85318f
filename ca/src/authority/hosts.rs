//! Hosts: enrollment tokens, enrollment, mTLS client certificate renewal (with the SSH
//! host certificates), a host's identity from its client certificate, SSH host
//! certificates (recorded, listed, revoked), tags, removal, and what a host receives
//! when it syncs.
//!
//! - Names: an enrollment token lists the host names it allows (exact names and
//!   `*.domain` patterns, [`HostPattern`]); a host's name and every SSH name it asks for
//!   must be covered, and never be another enrolled host's. A token may be reusable
//!   (`uses`), for autoscaling groups. Nothing else is ever signed into a host
//!   certificate.
//! - One identity per host: a host's identity is its verified client certificate (its
//!   serial one this CA issued to a host that is not removed, its CN that host's name).
//!   A renewal replaces the certificate; the replaced one keeps working for an overlap
//!   (`--host-cert-overlap`, [`DEFAULT_CERT_OVERLAP_SECS`]: requests in flight), then is
//!   refused. A renewal presented
//!   with a replaced certificate while its successor is in use means two holders of one
//!   identity: refused, and recorded as an alert in the CA's chain. A host renews at
//!   most [`MAX_RENEWALS_PER_WINDOW`] times in [`RENEW_WINDOW_SECS`].
//! - Removing a host revokes its SSH host certificates; an admin may revoke them too
//!   (the host KRL ssh clients refresh).
//!
//! Must never: accept a used, expired or non-enrollment token; certify a host for a name
//! its token does not cover or for another enrolled host's name; let one host read
//! another's snapshot.

use super::{now, Authority, Error};
use crate::auth::{hash_token, AuthError, Principal};
use crate::model::{
    Alert, Change, Host, HostCert, HostCertRevocation, HostSshCert, Model, TokenKind,
};
use crate::origin::Origin;
use crate::sshca::{fingerprint, sign_host_cert};
use crate::store::{HostCertQuery, HostCertSelector, HostPlan};
use crate::tlsca::{PeerCert, TlsCaError, ValidityError};
use smith_api::HostCertInfo;
use smith_proto::hostpattern::is_ip_literal;
use smith_proto::snapshot::SyncResponse;
use smith_proto::{HostName, HostPattern, Tags};

/// Longest life of an enrollment token.
pub const MAX_ENROLL_TTL_SECS: u64 = 30 * 86400;
/// Most host names (exact or patterns) one enrollment token may list.
pub const MAX_TOKEN_NAMES: usize = 64;
/// Most hosts one reusable token may enroll.
pub const MAX_TOKEN_USES: u32 = 10_000;
/// Most extra SSH names one host may ask for.
pub const MAX_SSH_NAMES: usize = 16;
/// Most SSH host keys certified at once.
pub const MAX_HOST_KEYS: usize = 8;
/// Clock-skew backdating of certificates' `valid_after`.
pub const BACKDATE_SECS: u64 = 300;
/// How long a replaced client certificate keeps working after its renewal, by default
/// (`smith-ca serve --host-cert-overlap`).
pub const DEFAULT_CERT_OVERLAP_SECS: u64 = 600;
/// Most renewals one host may make in [`RENEW_WINDOW_SECS`] (hostd renews at two thirds
/// of a certificate's life: once a day with the default 24 h certificates).
pub const MAX_RENEWALS_PER_WINDOW: usize = 6;
pub const RENEW_WINDOW_SECS: u64 = 600;

/// An enrollment token to mint.
#[derive(Debug, Clone)]
pub struct HostTokenInput {
    /// The tags the host will get.
    pub tags: Tags,
    pub ttl_secs: u64,
    /// The host names a host enrolling with it may take (as its name and SSH names).
    pub names: Vec<HostPattern>,
    /// How many hosts may enroll with it.
    pub uses: u32,
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
    allowed: &[HostPattern],
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
    if asked.len() > MAX_SSH_NAMES {
        return Err(Error::TooManySshNames(MAX_SSH_NAMES));
    }
    let mut out: Vec<HostName> = Vec::new();
    for n in asked {
        if n == host_name || out.contains(n) {
            continue;
        }
        if !allowed.iter().any(|p| p.matches(n)) {
            return Err(Error::SshNameNotAllowed {
                name: n.clone(),
                allowed: patterns_text(allowed),
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

/// The allowed names, for a refusal.
fn patterns_text(allowed: &[HostPattern]) -> String {
    if allowed.is_empty() {
        "none".to_string()
    } else {
        allowed
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A host may take `name` with a token allowing `allowed`.
fn check_host_name(name: &HostName, allowed: &[HostPattern]) -> Result<(), Error> {
    if allowed.iter().any(|p| p.matches(name)) {
        return Ok(());
    }
    Err(Error::HostNameNotAllowed {
        name: name.clone(),
        allowed: patterns_text(allowed),
        ip: is_ip_literal(name.as_str()),
    })
}

fn csr_error(e: TlsCaError) -> Error {
    match e {
        TlsCaError::BadCsr(m) => Error::InvalidCsr(m),
        e => Error::internal("issuing a host certificate", e),
    }
}

impl Authority {
    /// Mints an enrollment token (shown once).
    pub fn mint_host_token(
        &self,
        origin: &Origin,
        input: HostTokenInput,
    ) -> Result<super::Minted, Error> {
        if input.names.is_empty() {
            return Err(Error::InvalidInput(
                "say which host names this token allows: --name web-1.example.com (exact), \
                 --name '*.prod.example.com' (one label under a domain), repeatable"
                    .into(),
            ));
        }
        if input.names.len() > MAX_TOKEN_NAMES {
            return Err(Error::InvalidInput(format!(
                "at most {MAX_TOKEN_NAMES} host names per enrollment token"
            )));
        }
        if !(1..=MAX_TOKEN_USES).contains(&input.uses) {
            return Err(Error::InvalidInput(format!(
                "an enrollment token enrolls between 1 and {MAX_TOKEN_USES} hosts"
            )));
        }
        if !(1..=MAX_ENROLL_TTL_SECS).contains(&input.ttl_secs) {
            return Err(Error::InvalidTtl {
                what: "an enrollment token's lifetime",
                min: 1,
                max: MAX_ENROLL_TTL_SECS,
            });
        }
        let mut names: Vec<HostPattern> = Vec::new();
        for n in input.names {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let shown: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let what = format!(
            "host token {} names {}{}",
            input.tags,
            shown.join(","),
            if input.uses > 1 {
                format!(" uses {}", input.uses)
            } else {
                String::new()
            }
        );
        self.mint_enroll_token(origin, what, input.ttl_secs, input.tags, names, input.uses)
    }

    /// Certifies SSH host keys for `principals` (the host's name first): the certificates
    /// and their records.
    fn sign_host_keys(
        &self,
        host: &Host,
        keys: &[String],
        at: u64,
    ) -> Result<(Vec<String>, Vec<HostSshCert>), Error> {
        if keys.len() > MAX_HOST_KEYS {
            return Err(Error::TooManyHostKeys);
        }
        let principals = host.principals();
        let key_id = format!("smith-host:{}", host.name);
        let valid_after = at.saturating_sub(BACKDATE_SECS);
        let valid_before = at + self.cfg.host_ssh_cert_ttl.as_secs();
        let mut lines = Vec::new();
        let mut records = Vec::new();
        let signer = self.signer(crate::cakeys::CaRole::Host)?;
        for line in keys {
            let key = crate::sshca::parse_subject_key(line)
                .map_err(|e| Error::InvalidHostKey(e.to_string()))?;
            // Host certificates are signed by the host CA: their serials are random and
            // separate from the user certificates' sequence (and fit a signed 64-bit
            // column).
            let serial = rand::Rng::gen_range(&mut rand::rngs::OsRng, 1..i64::MAX as u64);
            let cert = sign_host_cert(
                &signer,
                &key,
                serial,
                &key_id,
                &principals.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                valid_after,
                valid_before,
            )
            .map_err(|e| self.sign_failed("host CA", &signer, "signing a host certificate", e))?;
            lines.push(
                cert.to_openssh()
                    .map_err(|e| Error::internal("encoding a host certificate", e))?,
            );
            records.push(HostSshCert {
                serial,
                host_id: host.id,
                host: host.name.clone(),
                key_id: key_id.clone(),
                principals: principals.clone(),
                key_fingerprint: fingerprint(&key),
                valid_after,
                valid_before,
                issued_at: at,
            });
        }
        Ok((lines, records))
    }

    /// The names an enrollment token allows, or why it cannot enroll anything (used,
    /// expired, unknown, another kind).
    pub fn check_enrollment_token(&self, token: &str) -> Result<Vec<HostPattern>, Error> {
        let m = self.model();
        match self.auth.authenticate(&m, token, now()) {
            Ok(crate::auth::Authenticated {
                principal: Principal::Enroll { .. },
                ..
            }) => Ok(m
                .token(&hash_token(token))
                .map(|t| t.names.clone())
                .unwrap_or_default()),
            Ok(_) => Err(Error::NotAnEnrollmentToken),
            Err(AuthError::Used) => Err(Error::EnrollmentTokenUsed),
            Err(AuthError::Expired) => Err(Error::EnrollmentTokenExpired),
            Err(e) => Err(Error::Credential(e)),
        }
    }

    /// Enrolls a host with an enrollment token.
    pub fn enroll(&self, input: EnrollInput) -> Result<Enrolled, Error> {
        let at = now();
        let token_hash = hash_token(&input.token);
        // Check the token first so that a bad token learns nothing else.
        let allowed = self.check_enrollment_token(&input.token)?;
        // Before anything is issued or the token used: a refused name leaves the token
        // usable (the host may retry with another name, or the admin mint a fitting one).
        check_host_name(&input.host_name, &allowed)?;
        let (tags, ssh_names) = {
            let m = self.model();
            let names = check_ssh_names(&m, &input.host_name, &input.ssh_names, &allowed)?;
            if m.active_host(&input.host_name).is_some() {
                return Err(Error::HostExists(input.host_name.clone()));
            }
            let tags = m
                .token(&token_hash)
                .and_then(|t| t.tags.clone())
                .unwrap_or_default();
            (tags, names)
        };
        let (cert_pem, serial, not_after) = self
            .keys
            .tls_root
            .issue_client_cert(&input.host_name, &input.csr_pem, self.cfg.host_cert_ttl, at)
            .map_err(csr_error)?;
        let origin = Origin::host(input.host_name.clone())
            .with_token(crate::auth::token_id(&token_hash).to_string());
        let (_, (host, ssh_host_certs)) = self.mutate(
            &origin,
            format!("host enroll {}", input.host_name),
            |m, _, at| {
                // Re-check under the mutation lock: a concurrent enrollment may have won.
                if m.token(&token_hash)
                    .is_none_or(|t| t.used_at.is_some() || t.uses >= t.max_uses)
                {
                    return Err(Error::EnrollmentTokenUsed);
                }
                if m.active_host(&input.host_name).is_some() {
                    return Err(Error::HostExists(input.host_name.clone()));
                }
                check_ssh_names(m, &input.host_name, &ssh_names, &allowed)?;
                let host = Host {
                    id: m.next_host_id(),
                    name: input.host_name.clone(),
                    tags: tags.clone(),
                    enrolled_at: at,
                    removed: false,
                    cert_serial: serial.clone(),
                    cert_not_after: not_after,
                    ssh_names: ssh_names.clone(),
                };
                let (lines, records) = self.sign_host_keys(&host, &input.ssh_host_keys, at)?;
                let mut changes = vec![Change::Enroll {
                    token_hash: token_hash.clone(),
                    at,
                    host: host.clone(),
                    cert: HostCert {
                        serial: serial.clone(),
                        not_after,
                        issued_at: at,
                    },
                }];
                if !records.is_empty() {
                    changes.push(Change::HostSshCerts(records));
                }
                Ok((changes, (host, lines)))
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
    /// connection had none). A replaced certificate works for the configured overlap
    /// after its renewal.
    pub fn host_identity(&self, cert: Option<&PeerCert>) -> Result<Host, Error> {
        let cert = cert.ok_or(Error::ClientCertRequired)?;
        let m = self.model();
        let known = m.host_cert(&cert.serial);
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
        let (host, known) = match (host, known) {
            (Some(h), Some(k)) => (h, k),
            _ => return Err(Error::UnknownHost),
        };
        if host.name.as_str() != cert.common_name {
            return Err(Error::WrongCertName);
        }
        if let Some(since) = known.superseded_at {
            if at > since.saturating_add(self.cfg.host_cert_overlap.as_secs()) {
                return Err(Error::ClientCertSuperseded {
                    host: host.name.clone(),
                    since,
                });
            }
        } else {
            self.cert_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(host.id, cert.serial.clone());
        }
        Ok(host.clone())
    }

    /// Whether `serial` (a host's current certificate) was used since it was issued.
    fn current_cert_seen(&self, host_id: u64, serial: &str) -> bool {
        self.cert_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&host_id)
            .is_some_and(|s| s == serial)
    }

    /// Issues a new client certificate to `host` (identified by `presented`, the serial
    /// of the certificate it connected with) and certifies its SSH host keys again.
    pub fn renew(
        &self,
        host: &Host,
        presented: &str,
        csr_pem: &str,
        ssh_host_keys: &[String],
    ) -> Result<Enrolled, Error> {
        let at = now();
        if presented != host.cert_serial {
            if self.current_cert_seen(host.id, &host.cert_serial) {
                return Err(self.identity_forked(host, presented, at));
            }
            // The host never used the certificate it got last time (its answer was lost):
            // a retry, not a second holder.
            tracing::warn!(host = %host.name, "renewal from the previous client certificate; its successor was never used");
        }
        {
            let mut recent = self.renewals.lock().unwrap_or_else(|e| e.into_inner());
            let times = recent.entry(host.id).or_default();
            times.retain(|t| at < t + RENEW_WINDOW_SECS);
            if times.len() >= MAX_RENEWALS_PER_WINDOW {
                let oldest = times.iter().min().copied().unwrap_or(at);
                return Err(Error::RenewTooSoon {
                    host: host.name.clone(),
                    retry_after: (oldest + RENEW_WINDOW_SECS).saturating_sub(at).max(1),
                });
            }
            times.push(at);
        }
        let (cert_pem, serial, not_after) = self
            .keys
            .tls_root
            .issue_client_cert(&host.name, csr_pem, self.cfg.host_cert_ttl, at)
            .map_err(csr_error)?;
        let origin = Origin::host(host.name.clone());
        let (_, lines) =
            self.mutate(&origin, format!("host renew {}", host.name), |m, _, at| {
                let h = match m.host(host.id) {
                    Some(h) if !h.removed => h,
                    _ => return Err(Error::HostRemoved(host.name.clone())),
                };
                let (lines, records) = self.sign_host_keys(h, ssh_host_keys, at)?;
                let mut changes = vec![Change::HostCert {
                    host_id: host.id,
                    cert: HostCert {
                        serial: serial.clone(),
                        not_after,
                        issued_at: at,
                    },
                }];
                if !records.is_empty() {
                    changes.push(Change::HostSshCerts(records));
                }
                Ok((changes, lines))
            })?;
        tracing::info!(host = %host.name, "host client certificate renewed");
        Ok(Enrolled {
            host: host.clone(),
            client_cert_pem: cert_pem,
            client_cert_not_after: not_after,
            ssh_host_certs: lines,
        })
    }

    /// Two holders of one host identity: refuse, log, and record an alert in the CA's
    /// audit chain.
    fn identity_forked(&self, host: &Host, presented: &str, at: u64) -> Error {
        let detail = format!(
            "host '{}' asked for a renewal with client certificate {presented}, which was \
             replaced by {} now in use: two holders of this host's identity (a copied \
             host.key?); the renewal was refused",
            host.name, host.cert_serial
        );
        tracing::error!(host = %host.name, presented, current = %host.cert_serial, "host identity forked: renewal refused");
        let alert = Change::Alert(Alert {
            kind: "host_identity_forked".into(),
            host: Some(host.name.clone()),
            detail,
            at,
        });
        let origin = Origin::host(host.name.clone());
        if let Err(e) = self.mutate(&origin, format!("alert {}", host.name), |_, _, _| {
            Ok((vec![alert.clone()], ()))
        }) {
            tracing::error!(error = %e, "could not record the alert");
        }
        Error::HostIdentityForked(host.name.clone())
    }

    /// Revocations of `certs` (SSH host certificates).
    fn host_revocations(
        &self,
        certs: &[HostCertInfo],
        at: u64,
        reason: &str,
        via: &str,
    ) -> Vec<HostCertRevocation> {
        let ca_key = self.host_ca_keys().first().cloned().unwrap_or_default();
        certs
            .iter()
            .map(|c| HostCertRevocation {
                serial: c.serial,
                host: c.host.clone(),
                valid_before: c.valid_before,
                ca_key: ca_key.clone(),
                revoked_at: at,
                reason: reason.to_string(),
                via: via.to_string(),
            })
            .collect()
    }

    /// Removes an enrolled host: it gets no more policy, and its SSH host certificates
    /// are revoked.
    pub fn remove_host(&self, origin: &Origin, name: &HostName) -> Result<Host, Error> {
        let (_, id) = self.mutate(origin, format!("host remove {name}"), |m, store, at| {
            let h = m
                .active_host(name)
                .ok_or_else(|| Error::NoSuchHost(name.clone()))?;
            let mut changes = vec![Change::RemoveHost { host_id: h.id, at }];
            if let Some(plan) = store.host_cert_plan(HostCertSelector::Host(h.id), at)? {
                let revs = self.host_revocations(
                    &plan.revoke,
                    at,
                    &format!("host {name} was removed"),
                    "host_removed",
                );
                if !revs.is_empty() {
                    changes.push(Change::RevokeHostCerts(revs));
                }
            }
            Ok((changes, h.id))
        })?;
        self.model()
            .host(id)
            .cloned()
            .ok_or_else(|| Error::NoSuchHost(name.clone()))
    }

    /// Revokes the SSH host certificates `sel` names (a serial, or every certificate of
    /// an enrolled host).
    pub fn revoke_host_certs(
        &self,
        origin: &Origin,
        sel: &HostCertTarget,
        reason: Option<&str>,
    ) -> Result<HostPlan, Error> {
        let reason = reason
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .unwrap_or("revoked by the admin")
            .to_string();
        super::revocation::check_reason(&reason)?;
        let (_, plan) =
            self.mutate(origin, format!("host cert revoke {sel}"), |m, store, at| {
                let (selector, via) = match sel {
                    HostCertTarget::Serial(s) => (HostCertSelector::Serial(*s), "serial"),
                    HostCertTarget::Host(name) => {
                        let h = m
                            .active_host(name)
                            .ok_or_else(|| Error::NoSuchHost(name.clone()))?;
                        (HostCertSelector::Host(h.id), "host")
                    }
                };
                let plan = store
                    .host_cert_plan(selector, at)?
                    .ok_or_else(|| Error::NoSuchCertificate(sel.to_string()))?;
                let revs = self.host_revocations(&plan.revoke, at, &reason, via);
                let changes = if revs.is_empty() {
                    vec![]
                } else {
                    vec![Change::RevokeHostCerts(revs)]
                };
                Ok((changes, plan))
            })?;
        Ok(plan)
    }

    /// SSH host certificates, newest first.
    pub fn host_certs(
        &self,
        host: Option<HostName>,
        valid_only: bool,
        limit: u32,
    ) -> Result<Vec<HostCertInfo>, Error> {
        Ok(self.store.host_certs(&HostCertQuery {
            host,
            valid_only,
            limit,
            now: now(),
        })?)
    }

    /// The KRL of revoked SSH host certificates (base64, built once per change and
    /// shared by every answer), `None` when nothing is revoked.
    pub fn host_krl(&self) -> Option<std::sync::Arc<str>> {
        self.model().host_krl_base64().cloned()
    }

    /// The host name patterns this CA certifies hosts for: enrolled hosts' names and
    /// what unexpired enrollment tokens allow (for clients' `@cert-authority` lines).
    pub fn host_patterns(&self) -> Vec<String> {
        let m = self.model();
        let at = now();
        let domains: Vec<&HostPattern> = m
            .tokens()
            .values()
            .filter(|t| t.kind == TokenKind::Enroll && t.is_live(at))
            .flat_map(|t| t.names.iter())
            .collect();
        // Enrolled names a pattern already covers are left out (shorter lines, and a
        // domain's new hosts are trusted without running `smith config ssh` again).
        let mut out: Vec<String> = m
            .hosts()
            .values()
            .filter(|h| !h.removed)
            .flat_map(|h| h.principals())
            .filter(|n| {
                !domains
                    .iter()
                    .any(|p| matches!(p, HostPattern::Domain(_)) && p.matches(n))
            })
            .map(|n| n.to_string())
            .chain(domains.iter().map(|p| p.to_string()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Replaces a host's tags (it gets a full snapshot of what they now select).
    pub fn set_host_tags(
        &self,
        origin: &Origin,
        name: &HostName,
        tags: Tags,
    ) -> Result<Host, Error> {
        let (_, id) = self.mutate(origin, format!("host tags {name} {tags}"), |m, _, _| {
            let h = m
                .active_host(name)
                .ok_or_else(|| Error::NoSuchHost(name.clone()))?;
            if h.tags == tags {
                return Ok((vec![], h.id));
            }
            Ok((
                vec![Change::SetHostTags {
                    host_id: h.id,
                    tags: tags.clone(),
                }],
                h.id,
            ))
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
            Ok((
                vec![Change::SetEpoch {
                    epoch: epoch.clone(),
                }],
                (),
            ))
        }) {
            tracing::error!(error = %e, "could not start a new epoch");
        }
    }

    /// What `host` receives when it has version `since` (0 = nothing): a full snapshot or
    /// a delta (see [`crate::sync`]).
    pub fn sync_view(&self, host: &Host, since: u64) -> SyncResponse {
        let user_ca_keys = self.user_ca_keys();
        let host_ca_key = self.host_ca_keys().into_iter().next();
        let m = self.model();
        let mut r = crate::sync::sync_response(&m, &host.name, &host.tags, since, &user_ca_keys);
        r.host_ca_key = host_ca_key;
        r
    }
}

/// What an admin's host certificate revocation names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCertTarget {
    Serial(u64),
    /// Every still-valid host certificate of this enrolled host.
    Host(HostName),
}

impl std::fmt::Display for HostCertTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostCertTarget::Serial(s) => write!(f, "serial {s}"),
            HostCertTarget::Host(h) => write!(f, "host {h}"),
        }
    }
}
