//! CA key rotation as commands of the authority (the phases are decided in
//! `crate::cakeys`): start a rotation (a new key in a file or a token), say where it
//! stands, take the step that is due (the server's tick), or force it.
//!
//! Must never: sign with a key that is not the role's signing key, publish a key whose
//! signer could not be opened and checked, or start a rotation while one is under way.

use super::{now, Authority, Error};
use crate::cakeys::{self, CaKey, CaKeyState, CaRole, HostAck, Lifetimes, Phase};
use crate::model::Change;
use crate::origin::Origin;
use crate::signer::pkcs11::{find_or_generate, TokenAlg};
use crate::signer::uri::Pkcs11Uri;
use crate::signer::Signer;
use crate::sshca::{self, CaAlgorithm};
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

/// Default grace period of a host CA rotation: engineers' `smith config ssh` and
/// `smith cert --ensure` runs install the new host CA key meanwhile.
pub const DEFAULT_HOST_GRACE_SECS: u64 = 24 * 3600;
/// Hosts not seen for this long do not hold up a user CA switch.
pub const DEFAULT_STALE_AFTER_SECS: u64 = 24 * 3600;
/// How often a retiring host CA key checks whether every host moved to the new key.
pub const HOST_CERTS_CHECK_SECS: u64 = 10;
static LAST_HOST_CERTS_CHECK: AtomicU64 = AtomicU64::new(0);

/// One key of a role, as `status` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyStatus {
    pub public_key: String,
    pub fingerprint: String,
    /// `file:NAME` or the PKCS#11 URI.
    pub source: String,
    pub state: CaKeyState,
    pub added_at: u64,
    pub signing_since: Option<u64>,
    pub switch_at: Option<u64>,
    pub retire_at: Option<u64>,
}

/// Where a role's rotation stands.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RotationStatus {
    pub role: CaRole,
    pub phase: Phase,
    pub keys: Vec<KeyStatus>,
    /// User CA with a next key: which hosts have it (they synced the version that
    /// published it), which lag (and hold up the switch), which are stale (not seen
    /// recently: listed, not waited for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<RotationHosts>,
    /// What happens next, for a person.
    pub next: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RotationHosts {
    pub acknowledged: Vec<String>,
    pub lagging: Vec<String>,
    pub stale: Vec<String>,
}

/// What `rotate` starts.
#[derive(Debug, Clone, Default)]
pub struct RotateInput {
    /// A PKCS#11 URI for the new key (used if it exists, else generated in the token);
    /// `None`: a new key file in the data directory.
    pub to: Option<String>,
    /// Host CA: seconds before hosts get certificates from the new key.
    pub grace_secs: Option<u64>,
    /// User CA: hosts not seen for this many seconds do not hold up the switch
    /// (default [`DEFAULT_STALE_AFTER_SECS`]).
    pub stale_after_secs: Option<u64>,
}

fn fingerprint(line: &str) -> String {
    PublicKey::from_openssh(line.trim())
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
        .unwrap_or_default()
}

fn rfc3339(t: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
        .to_string()
}

impl Authority {
    fn initial(&self, role: CaRole) -> (&Signer, &str, &str) {
        match role {
            CaRole::User => (
                &self.keys.user_ca,
                self.keys
                    .user_ca_keys
                    .first()
                    .map(String::as_str)
                    .unwrap_or(""),
                &self.keys.user_ca_source,
            ),
            CaRole::Host => (
                &self.keys.host_ca,
                self.keys
                    .host_ca_keys
                    .first()
                    .map(String::as_str)
                    .unwrap_or(""),
                &self.keys.host_ca_source,
            ),
        }
    }

    /// The key that signs `role`'s certificates now.
    pub(super) fn signer(&self, role: CaRole) -> Result<Signer, Error> {
        let signing = {
            let m = self.model();
            cakeys::signing(m.ca_keys(role)).map(|k| (k.public.clone(), k.source.clone()))
        };
        match signing {
            None => Ok(self.initial(role).0.clone()),
            Some((public, source)) => {
                self.keys
                    .open_rotated(&public, &source)
                    .map_err(|e| Error::SignerUnavailable {
                        which: match role {
                            CaRole::User => "user CA",
                            CaRole::Host => "host CA",
                        },
                        detail: format!("{e:#}"),
                    })
            }
        }
    }

    /// The OpenSSH lines of `role`'s published keys, the signing key first.
    pub fn published(&self, role: CaRole) -> Vec<String> {
        let m = self.model();
        let keys = m.ca_keys(role);
        if keys.is_empty() {
            vec![self.initial(role).1.to_string()]
        } else {
            cakeys::published(keys)
        }
    }

    fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            user_cert: self.cfg.max_cert_ttl.as_secs(),
            host_cert: self.cfg.host_ssh_cert_ttl.as_secs(),
            stale_after: DEFAULT_STALE_AFTER_SECS,
        }
    }

    fn host_acks(&self) -> Vec<HostAck> {
        let hosts: Vec<(u64, String)> = {
            let m = self.model();
            m.hosts()
                .values()
                .filter(|h| !h.removed)
                .map(|h| (h.id, h.name.to_string()))
                .collect()
        };
        hosts
            .into_iter()
            .map(|(id, name)| {
                let l = self.liveness(id);
                HostAck {
                    name,
                    last_seen: l.last_seen,
                    synced_version: l.synced_version,
                }
            })
            .collect()
    }

    /// Where `role`'s rotation stands.
    pub fn rotation_status(&self, role: CaRole) -> RotationStatus {
        let keys: Vec<CaKey> = {
            let m = self.model();
            m.ca_keys(role).to_vec()
        };
        let keys = if keys.is_empty() {
            let (_, line, source) = self.initial(role);
            vec![CaKey {
                source: source.to_string(),
                public: line.to_string(),
                state: CaKeyState::Signing,
                added_at: 0,
                added_version: 0,
                signing_since: None,
                switch_at: None,
                retire_at: None,
                stale_after: None,
            }]
        } else {
            keys
        };
        // As published: the signing key first, then the next one, then retiring ones.
        let mut keys = keys;
        keys.sort_by_key(|k| match k.state {
            CaKeyState::Signing => 0,
            CaKeyState::Next => 1,
            CaKeyState::Retiring => 2,
        });
        let at = now();
        let life = self.lifetimes();
        let next_key = keys.iter().find(|k| k.state == CaKeyState::Next);
        let hosts = match (role, next_key) {
            (CaRole::User, Some(n)) => {
                let a = cakeys::acks(n, &self.host_acks(), life.stale_after, at);
                Some(RotationHosts {
                    acknowledged: a.acknowledged,
                    lagging: a.lagging,
                    stale: a.stale,
                })
            }
            _ => None,
        };
        let next = match (cakeys::phase(&keys), role) {
            (Phase::Idle, _) => "nothing pending".to_string(),
            (Phase::Trusting, CaRole::User) => match &hosts {
                Some(h) if !h.lagging.is_empty() => format!(
                    "switch to the new key once {} synced it ({} of them; `--force` switches now)",
                    h.lagging.join(", "),
                    h.lagging.len()
                ),
                _ => "switch to the new key at the next tick".to_string(),
            },
            (Phase::Trusting, CaRole::Host) => format!(
                "host certificates from the new key from {} (`--force` switches now)",
                next_key
                    .and_then(|k| k.switch_at)
                    .map(rfc3339)
                    .unwrap_or_else(|| "now".into())
            ),
            (Phase::Retiring, CaRole::Host) => format!(
                "the old key retires at {}, or once every host holds a certificate of the new \
                 key (`--force` retires it now)",
                keys.iter()
                    .filter_map(|k| k.retire_at)
                    .min()
                    .map(rfc3339)
                    .unwrap_or_else(|| "now".into())
            ),
            (Phase::Retiring, CaRole::User) => format!(
                "the old key retires at {} (`--force` retires it now)",
                keys.iter()
                    .filter_map(|k| k.retire_at)
                    .min()
                    .map(rfc3339)
                    .unwrap_or_else(|| "now".into())
            ),
        };
        RotationStatus {
            role,
            phase: cakeys::phase(&keys),
            keys: keys
                .iter()
                .map(|k| KeyStatus {
                    public_key: k.public.clone(),
                    fingerprint: fingerprint(&k.public),
                    source: k.source.clone(),
                    state: k.state,
                    added_at: k.added_at,
                    signing_since: k.signing_since,
                    switch_at: k.switch_at,
                    retire_at: k.retire_at,
                })
                .collect(),
            hosts,
            next,
        }
    }

    /// A new key for `role` (in the token `to` names, else a key file in the data
    /// directory): (source, public line).
    fn new_key(
        &self,
        role: CaRole,
        current: &KeyData,
        to: Option<&str>,
        at: u64,
    ) -> Result<(String, String), Error> {
        let comment = format!("smith-{}-ca-{at}", role.as_str());
        let ed25519 = matches!(current, KeyData::Ed25519(_));
        match to {
            Some(uri) => {
                let u = Pkcs11Uri::parse(uri).map_err(|e| Error::InvalidInput(e.to_string()))?;
                let alg = if ed25519 && role == CaRole::User {
                    TokenAlg::Ed25519
                } else {
                    TokenAlg::EcdsaP256
                };
                let on = find_or_generate(&u, alg)
                    .map_err(|e| Error::InvalidInput(format!("the new key {uri}: {e}")))?;
                let line = PublicKey::new(on.public, &comment)
                    .to_openssh()
                    .map_err(|e| Error::internal("encoding the new CA key", e))?;
                Ok((uri.to_string(), line))
            }
            None => {
                let dd = self.keys.dd.as_ref().ok_or_else(|| {
                    Error::InvalidInput("this CA has no data directory for a key file".into())
                })?;
                let alg = match current {
                    KeyData::Ed25519(_) => CaAlgorithm::Ed25519,
                    KeyData::Ecdsa(ssh_key::public::EcdsaPublicKey::NistP384(_)) => {
                        CaAlgorithm::EcdsaP384
                    }
                    KeyData::Rsa(_) => CaAlgorithm::Rsa,
                    _ => CaAlgorithm::EcdsaP256,
                };
                let key = sshca::generate(alg, &comment)
                    .map_err(|e| Error::internal("generating the new CA key", e))?;
                let name = format!("{}_ca.{at}", role.as_str());
                let text = sshca::private_openssh(&key)
                    .map_err(|e| Error::internal("encoding the new CA key", e))?;
                crate::datadir::create_new(&dd.root.join(&name), text.as_bytes(), 0o600)
                    .map_err(|e| Error::internal("writing the new CA key file", e))?;
                let line = key
                    .public_key()
                    .to_openssh()
                    .map_err(|e| Error::internal("encoding the new CA key", e))?;
                Ok((format!("file:{name}"), line))
            }
        }
    }

    /// Starts a rotation of `role`: a new key, published beside the signing one.
    pub fn rotate(
        &self,
        origin: &Origin,
        role: CaRole,
        input: &RotateInput,
    ) -> Result<RotationStatus, Error> {
        let status = self.rotation_status(role);
        if status.phase != Phase::Idle {
            return Err(Error::InvalidInput(format!(
                "a rotation of the {} CA is under way: {}; see `smith-ca admin ca status`",
                role.as_str(),
                status.next
            )));
        }
        let current_line = self.published(role).into_iter().next().unwrap_or_default();
        let current = PublicKey::from_openssh(current_line.trim())
            .map_err(|e| Error::internal("reading the current CA key", e))?;
        let at = now();
        let (source, line) = self.new_key(role, current.key_data(), input.to.as_deref(), at)?;
        // Prove the new key signs before anyone is told to trust it.
        let signer = self
            .keys
            .open_rotated(&line, &source)
            .map_err(|e| Error::InvalidInput(format!("the new key cannot sign: {e:#}")))?;
        if signer.probe().is_err() {
            return Err(Error::InvalidInput("the new key cannot sign".into()));
        }
        let grace = input.grace_secs.unwrap_or(DEFAULT_HOST_GRACE_SECS);
        let (_, initial_line, initial_source) = self.initial(role);
        let (initial_line, initial_source) = (initial_line.to_string(), initial_source.to_string());
        let what = format!(
            "rotate the {} CA: add key {} ({})",
            role.as_str(),
            fingerprint(&line),
            source
        );
        self.mutate(origin, what, |m, _, at| {
            let mut keys = m.ca_keys(role).to_vec();
            if keys.is_empty() {
                keys.push(CaKey {
                    source: initial_source.clone(),
                    public: initial_line.clone(),
                    state: CaKeyState::Signing,
                    added_at: 0,
                    added_version: 0,
                    signing_since: None,
                    switch_at: None,
                    retire_at: None,
                    stale_after: None,
                });
            }
            keys.push(CaKey {
                source: source.clone(),
                public: line.clone(),
                state: CaKeyState::Next,
                added_at: at,
                added_version: m.version() + 1,
                signing_since: None,
                switch_at: (role == CaRole::Host).then_some(at + grace),
                retire_at: None,
                stale_after: input.stale_after_secs,
            });
            Ok((vec![Change::SetCaKeys { role, keys }], ()))
        })?;
        Ok(self.rotation_status(role))
    }

    /// Takes the pending step of `role`'s rotation now (`--force`).
    pub fn rotate_force(&self, origin: &Origin, role: CaRole) -> Result<RotationStatus, Error> {
        let life = self.lifetimes();
        let what = format!("rotate the {} CA: forced step", role.as_str());
        self.mutate(origin, what, |m, _, at| {
            match cakeys::forced_step(role, m.ca_keys(role), life, at) {
                Some(keys) => Ok((vec![Change::SetCaKeys { role, keys }], ())),
                None => Err(Error::InvalidInput(format!(
                    "no rotation of the {} CA is under way",
                    role.as_str()
                ))),
            }
        })?;
        Ok(self.rotation_status(role))
    }

    /// Host CA, retiring phase: whether every host that holds host certificates holds
    /// one issued since the switch (signed by the new key). Asked at most every
    /// [`HOST_CERTS_CHECK_SECS`] (it reads the store).
    fn every_host_renewed(&self) -> Result<bool, Error> {
        let at = now();
        let last = LAST_HOST_CERTS_CHECK.load(Ordering::Relaxed);
        if at < last + HOST_CERTS_CHECK_SECS {
            return Ok(false);
        }
        LAST_HOST_CERTS_CHECK.store(at, Ordering::Relaxed);
        let (since, active): (Option<u64>, BTreeSet<String>) = {
            let m = self.model();
            (
                cakeys::signing(m.ca_keys(CaRole::Host)).and_then(|k| k.signing_since),
                m.hosts()
                    .values()
                    .filter(|h| !h.removed)
                    .map(|h| h.name.to_string())
                    .collect(),
            )
        };
        let Some(since) = since else {
            return Ok(false);
        };
        let mut newest: BTreeMap<String, u64> = BTreeMap::new();
        for c in self.host_certs(None, true, 1_000_000)? {
            let e = newest.entry(c.host.to_string()).or_default();
            *e = (*e).max(c.issued_at);
        }
        Ok(newest
            .iter()
            .filter(|(h, _)| active.contains(*h))
            .all(|(_, issued)| *issued >= since))
    }

    /// Takes every step that is due (the server calls it every few seconds).
    pub fn rotation_tick(&self) -> Result<(), Error> {
        let life = self.lifetimes();
        for role in [CaRole::User, CaRole::Host] {
            if self.model().ca_keys(role).is_empty() {
                continue;
            }
            // The host CA's old key also retires once every host moved to the new one.
            if role == CaRole::Host
                && cakeys::phase(self.model().ca_keys(role)) == Phase::Retiring
                && self.every_host_renewed()?
            {
                let origin = Origin::local("ca rotation");
                let what = "rotate the host CA: every host holds a new-key certificate".to_string();
                self.mutate(&origin, what, |m, _, at| {
                    Ok((
                        cakeys::forced_step(role, m.ca_keys(role), life, at)
                            .filter(|_| cakeys::phase(m.ca_keys(role)) == Phase::Retiring)
                            .map(|keys| vec![Change::SetCaKeys { role, keys }])
                            .unwrap_or_default(),
                        (),
                    ))
                })?;
                continue;
            }
            let hosts = self.host_acks();
            let origin = Origin::local("ca rotation");
            let what = format!("rotate the {} CA: scheduled step", role.as_str());
            self.mutate(&origin, what, |m, _, at| {
                Ok((
                    cakeys::due_step(role, m.ca_keys(role), &hosts, life, at)
                        .map(|keys| vec![Change::SetCaKeys { role, keys }])
                        .unwrap_or_default(),
                    (),
                ))
            })?;
        }
        Ok(())
    }
}
