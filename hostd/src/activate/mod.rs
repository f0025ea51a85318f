//! `smith-host activate` and `smith-host deactivate`.
//!
//! Activate: validate every input, compute every file change in memory (local edits
//! first, so a local problem never burns the one-time token), enroll with the CA
//! (pinning its TLS root by fingerprint), check what the CA returned, then write all
//! files atomically after recording the originals in the manifest; finally reload
//! sshd and start the daemon (or say how). Running it again on an enrolled host needs
//! no token and changes nothing unless a file drifted.
//!
//! Deactivate: stop the daemon, put every file back byte for byte from the manifest
//! (or, for an edited file the admin changed since, remove only Smith's lines), remove
//! what Smith created, reload sshd.
//!
//! Owns: the list of files a host activation consists of. Must never: change anything
//! on disk when activation fails before the write phase, leave a partial activation
//! when a write fails (it rolls back), or touch a file outside [`HostPaths`].

pub mod edits;
pub mod manifest;

use crate::config::HostConfig;
use crate::fsutil;
use crate::identity::{self, HostCredentials};
use crate::paths::{host_cert_path_for, HostPaths};
use crate::service;
use manifest::{backup_name, sha256_hex, FileEntry, Kind, Manifest, Undo};
use serde::Serialize;
use smith_api::{
    Client, ClientOptions, EnrollRequest, EnrollRequestNamed, EnrollResponse, ErrorCode, Trust,
};
use smith_proto::HostName;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// Bad or missing arguments.
    #[error("{0}")]
    Usage(String),
    /// A local file cannot be read or edited.
    #[error("{0}")]
    Local(String),
    /// The CA refused or could not be reached; nothing was changed.
    #[error("{0}")]
    Enroll(String),
    /// Writing failed; what was written has been rolled back.
    #[error("{0}")]
    Write(String),
}

#[derive(Debug, Clone, Default)]
pub struct ActivateOptions {
    /// The CA's URLs (its replicas, preferred first); empty: the current ones.
    pub ca_urls: Vec<String>,
    pub token: Option<String>,
    pub ca_fingerprint: Option<String>,
    pub name: Option<String>,
    pub no_start: bool,
    pub home_base: Option<String>,
    /// Extra principals for the SSH host certificates (the host name is always one);
    /// the enrollment token must allow each (`smith-ca admin host token --ssh-name`).
    pub ssh_names: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActivateReport {
    pub host_name: String,
    pub tags: Option<String>,
    pub already_enrolled: bool,
    /// The first (preferred) CA URL.
    pub ca_url: String,
    /// Every CA URL, preferred first.
    pub ca_urls: Vec<String>,
    pub root_fingerprint: String,
    pub client_cert_not_after: u64,
    /// Set when this run enrolled again a host the CA had refused (removed, or its
    /// client certificate expired).
    pub reenrolled: bool,
    /// SSH host certificates written by this run's enrollment.
    pub ssh_host_certs: Vec<String>,
    /// Logical paths written by this run.
    pub changed: Vec<String>,
    /// Logical paths that already had the right contents.
    pub unchanged: Vec<String>,
    pub actions: Vec<String>,
    pub next_steps: Vec<String>,
    pub warnings: Vec<String>,
}

/// A file as activation wants it.
struct Planned {
    path: PathBuf,
    kind: Kind,
    bytes: Vec<u8>,
    mode: u32,
    daemon_managed: bool,
    role: Role,
}

/// What a planned file is to sshd (and to the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// An SSH host certificate (sshd's `HostCertificate`).
    SshHostCert,
    /// sshd's configuration or a file it was told to trust (`TrustedUserCAKeys`): a
    /// change is followed by an sshd reload.
    SshdConfig,
    Other,
}

impl Planned {
    fn role(mut self, role: Role) -> Planned {
        self.role = role;
        self
    }

    /// A change that sshd only sees after a reload.
    fn reloads_sshd(&self) -> bool {
        matches!(self.role, Role::SshHostCert | Role::SshdConfig)
    }
}

/// How this run relates to the host's current enrollment.
enum Mode<'a> {
    /// Never enrolled: the token, the CA's URL and its fingerprint are needed.
    Fresh,
    /// Enrolled before, but the CA refuses this host (removed, client certificate
    /// expired) or the credentials on disk are not usable: enroll again with a token;
    /// the CA, its pinned root, the name and the settings default to `prior`'s.
    Reenroll { prior: &'a HostConfig },
    /// Enrolled and valid: no token; keep the credentials and re-assert the files.
    Reassert {
        config: &'a HostConfig,
        creds: Box<HostCredentials>,
    },
}

impl Mode<'_> {
    fn enrolls(&self) -> bool {
        !matches!(self, Mode::Reassert { .. })
    }

    fn prior(&self) -> Option<&HostConfig> {
        match self {
            Mode::Reenroll { prior } => Some(prior),
            _ => None,
        }
    }
}

fn usage(msg: impl Into<String>) -> ActivateError {
    ActivateError::Usage(msg.into())
}

fn read_text(path: &Path) -> Result<Option<String>, ActivateError> {
    match fsutil::read_optional(path) {
        Ok(None) => Ok(None),
        Ok(Some(b)) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| ActivateError::Local(format!("{} is not UTF-8 text", path.display()))),
        Err(e) => Err(ActivateError::Local(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// The host's current enrollment, if it is complete and valid.
fn current_enrollment(paths: &HostPaths, cfg: &HostConfig) -> Result<HostCredentials, String> {
    let creds = identity::load_credentials(&paths.ca_bundle, &paths.host_cert, &paths.host_key)?;
    if !creds.cert.is_valid_at(crate::now_unix()) {
        return Err(format!(
            "the client certificate in {} is not valid now",
            paths.host_cert.display()
        ));
    }
    if creds.cert.common_name.as_deref() != Some(cfg.host_name.as_str()) {
        return Err("the client certificate names another host".into());
    }
    let key = String::from_utf8(creds.identity.key_pem.clone()).map_err(|e| e.to_string())?;
    if !identity::key_matches_cert(&key, &creds.identity.cert_pem)? {
        return Err("host.key does not match host.crt".into());
    }
    Ok(creds)
}

fn system_host_name() -> Result<HostName, ActivateError> {
    let raw = nix::unistd::gethostname()
        .map_err(|e| usage(format!("cannot read the host name ({e}); pass --name NAME")))?;
    let raw = raw.to_string_lossy().to_ascii_lowercase();
    HostName::new(&raw).map_err(|e| {
        usage(format!(
            "the system host name '{}' cannot be used ({e}); pass --name NAME",
            raw.escape_debug()
        ))
    })
}

/// Edits of files Smith does not own; computed before anything else.
fn plan_local_edits(
    paths: &HostPaths,
    warnings: &mut Vec<String>,
) -> Result<Vec<Planned>, ActivateError> {
    let mut plan = Vec::new();
    let keep_mode = |p: &Path| fsutil::mode_of(p).unwrap_or(0o644);

    match read_text(&paths.nsswitch)? {
        Some(t) => plan.push(Planned {
            path: paths.nsswitch.clone(),
            kind: Kind::Edited,
            bytes: edits::nss_add(&t).into_bytes(),
            mode: keep_mode(&paths.nsswitch),
            daemon_managed: false,
            role: Role::Other,
        }),
        None => warnings.push(format!(
            "{} does not exist; glibc will not consult Smith for users and groups",
            paths.nsswitch.display()
        )),
    }
    for (path, lines) in [
        (&paths.pam_sshd, edits::pam_lines_sshd()),
        (&paths.pam_sudo, edits::pam_lines_sudo()),
    ] {
        match read_text(path)? {
            Some(t) => plan.push(Planned {
                path: path.clone(),
                kind: Kind::Edited,
                bytes: edits::pam_add(&t, &lines).into_bytes(),
                mode: keep_mode(path),
                daemon_managed: false,
                role: Role::Other,
            }),
            None => warnings.push(format!(
                "{} does not exist; its PAM lines were not added",
                path.display()
            )),
        }
    }
    // sudo's audit plugin (in pam_smith.so): only when the module is installed, since
    // sudo refuses to run at all with a Plugin line whose file is missing.
    let module = crate::doctor::module_candidates(&paths.root, "security/pam_smith.so")
        .into_iter()
        .find(|c| c.is_file());
    match (read_text(&paths.sudo_conf)?, module) {
        (Some(t), Some(m)) => plan.push(Planned {
            path: paths.sudo_conf.clone(),
            kind: Kind::Edited,
            bytes: edits::sudo_conf_add(&t, &paths.logical(&m)).into_bytes(),
            mode: keep_mode(&paths.sudo_conf),
            daemon_managed: false,
            role: Role::Other,
        }),
        (None, _) => warnings.push(format!(
            "{} does not exist; sudo decisions PAM does not see (sudoers' own refusals) are not recorded",
            paths.sudo_conf.display()
        )),
        (_, None) => warnings.push(
            "pam_smith.so is not installed; sudo's audit plugin was not added to sudo.conf"
                .to_string(),
        ),
    }
    match read_text(&paths.sshd_config)? {
        Some(t) => {
            let logical = paths.logical(&paths.sshd_dropin);
            if !edits::sshd_includes(&t, &logical, &paths.sshd_dropin) {
                warnings.push(format!(
                    "{} does not include {}; an Include line was added at its top",
                    paths.sshd_config.display(),
                    paths.sshd_dropin.display()
                ));
                plan.push(Planned {
                    path: paths.sshd_config.clone(),
                    kind: Kind::Edited,
                    bytes: edits::sshd_add_include(&t, &paths.sshd_dropin).into_bytes(),
                    mode: keep_mode(&paths.sshd_config),
                    daemon_managed: false,
                    role: Role::SshdConfig,
                });
            }
        }
        None => warnings.push(format!(
            "{} does not exist; is openssh-server installed?",
            paths.sshd_config.display()
        )),
    }
    Ok(plan)
}

/// The SSH host public keys as (path, OpenSSH line).
fn ssh_host_keys(paths: &HostPaths, warnings: &mut Vec<String>) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for p in paths.ssh_host_public_keys() {
        let line = std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.trim().to_string()));
        match line {
            Some(l) if ssh_key::PublicKey::from_openssh(&l).is_ok() => out.push((p, l)),
            _ => warnings.push(format!(
                "{} is not a valid public key; skipped",
                p.display()
            )),
        }
    }
    out
}

struct Enrolled {
    resp: EnrollResponse,
    key_pem: String,
    host_keys: Vec<(PathBuf, String)>,
    /// The CA's head of this host name's audit chain (a re-enrolled host continues it).
    audit_head: Option<smith_api::chain::AuditAck>,
}

/// Asks the CA (with the new mTLS identity) for the head of this host's audit chain.
fn audit_head(
    replicas: &std::sync::Arc<smith_api::Replicas>,
    fingerprint: &str,
    key_pem: &str,
    cert_pem: &str,
) -> Option<smith_api::chain::AuditAck> {
    let client = Client::new(ClientOptions {
        identity: Some(smith_api::Identity {
            cert_pem: cert_pem.as_bytes().to_vec(),
            key_pem: key_pem.as_bytes().to_vec(),
        }),
        timeout: Duration::from_secs(10),
        replicas: Some(replicas.clone()),
        ..ClientOptions::new(replicas.url(0), Trust::Fingerprint(fingerprint.to_string()))
    })
    .ok()?;
    client.audit_head().ok()
}

fn enroll(
    config: &HostConfig,
    fingerprint: &str,
    token: &str,
    host: &HostName,
    ssh_names: &[HostName],
    host_keys: Vec<(PathBuf, String)>,
) -> Result<Enrolled, ActivateError> {
    let new_key = identity::generate_key_and_csr(host).map_err(ActivateError::Local)?;
    // Enrollment is sent once: to the first replica that takes the connection.
    let replicas = config
        .replicas(Some(Box::new(|f: &smith_api::replicas::Failover| {
            if !f.returned {
                eprintln!(
                    "smith-host: the CA replica {} did not answer ({}); trying {}",
                    f.from, f.reason, f.to
                );
            }
        })))
        .map_err(usage)?;
    let client = Client::new(ClientOptions {
        unreachable_hint: Some(smith_api::client::CLI_UNREACHABLE_HINT),
        replicas: Some(replicas.clone()),
        ..ClientOptions::new(replicas.url(0), Trust::Fingerprint(fingerprint.to_string()))
    })
    .map_err(|e| usage(e.to_string()))?;
    let req = EnrollRequestNamed {
        request: EnrollRequest {
            token: token.to_string(),
            host_name: host.clone(),
            csr_pem: new_key.csr_pem.clone(),
            ssh_host_keys: host_keys.iter().map(|(_, l)| l.clone()).collect(),
        },
        ssh_names: ssh_names.to_vec(),
    };
    let resp: EnrollResponse = client.enroll(&req).map_err(|e| {
        let hint = match (e.status(), e.code()) {
            (Some(403), Some(ErrorCode::SshNameNotAllowed)) => "\nhint: every --ssh-name must be allowed by the token; ask the admin for one with `smith-ca admin host token --tags ... --ssh-name NAME` (the token was not used up)".to_string(),
            _ => match e.status() {
            Some(401) | Some(403) => "\nhint: enrollment tokens are single-use and expire; ask the admin for a new one: smith-ca admin host token --tags k=v,... --ttl 1h".to_string(),
            Some(409) => format!("\nhint: a host named {host} is already enrolled; remove it first (smith-ca admin host remove {host}) or pass --name"),
            _ => String::new(),
            },
        };
        ActivateError::Enroll(format!("enrollment failed, nothing was changed: {e}{hint}"))
    })?;

    // Check everything the CA returned before using any of it.
    let pinned = smith_api::tls::parse_fingerprint(fingerprint).map_err(usage)?;
    let root_der = identity::first_der(resp.root_pem.as_bytes()).map_err(|e| {
        ActivateError::Enroll(format!("the CA returned an unusable root certificate: {e}"))
    })?;
    let got = smith_api::tls::fingerprint(&root_der);
    if smith_api::tls::parse_fingerprint(&got).ok() != Some(pinned) {
        return Err(ActivateError::Enroll(format!(
            "the CA returned a root certificate with fingerprint {got}, not the pinned {fingerprint}; nothing was changed"
        )));
    }
    if resp.host_name != *host {
        return Err(ActivateError::Enroll(format!(
            "the CA enrolled this host as {} instead of {host}",
            resp.host_name
        )));
    }
    let cert = identity::summarize_pem(resp.client_cert_pem.as_bytes()).map_err(|e| {
        ActivateError::Enroll(format!(
            "the CA returned an unusable client certificate: {e}"
        ))
    })?;
    if cert.common_name.as_deref() != Some(host.as_str()) {
        return Err(ActivateError::Enroll(format!(
            "the client certificate names {:?}, not {host}",
            cert.common_name
        )));
    }
    if !identity::key_matches_cert(&new_key.key_pem, resp.client_cert_pem.as_bytes())
        .map_err(ActivateError::Enroll)?
    {
        return Err(ActivateError::Enroll(
            "the client certificate is not for the key this host sent".into(),
        ));
    }
    let audit_head = audit_head(
        &replicas,
        fingerprint,
        &new_key.key_pem,
        &resp.client_cert_pem,
    );
    Ok(Enrolled {
        resp,
        key_pem: new_key.key_pem,
        host_keys,
        audit_head,
    })
}

/// Enrolls (if needed) and writes every file. See the module doc.
pub fn activate(
    paths: &HostPaths,
    existing: Option<&HostConfig>,
    opts: &ActivateOptions,
) -> Result<ActivateReport, ActivateError> {
    let mut warnings = Vec::new();
    let manifest = Manifest::load(&paths.manifest).map_err(ActivateError::Local)?;

    // 1. Are we enrolled already, and do the options fit?
    let mode = mode(paths, existing, opts);
    let ssh_names = ssh_names(opts)?;
    if let Mode::Reassert { config, creds } = &mode {
        check_same_enrollment(paths, config, creds, opts, &ssh_names)?;
    }

    // 2. Inputs.
    let host_name = host_name(&mode, opts)?;
    let config = host_config(&mode, opts, &host_name)?;

    // 3. Local edits (before the token is used), including the sudoers file, which
    //    visudo must accept.
    let mut plan = plan_local_edits(paths, &mut warnings)?;
    plan.push(sudoers_planned(paths)?);
    let host_keys = ssh_host_keys(paths, &mut warnings);

    // 4. Enroll if needed: the files Smith owns.
    let owned = match &mode {
        Mode::Reassert { creds, .. } => Owned {
            cert: creds.cert.clone(),
            root_fingerprint: creds.root_fingerprint.clone(),
            tags: None,
            files: reassert_owned(paths, &config, manifest.as_ref(), &mut warnings)?,
        },
        Mode::Fresh | Mode::Reenroll { .. } => {
            let e = enroll(
                &config,
                config.ca_fingerprint.as_deref().unwrap_or(""),
                opts.token.as_deref().unwrap_or(""),
                &host_name,
                &ssh_names,
                host_keys,
            )?;
            enrolled_owned(paths, &config, &e, &mut warnings)?
        }
    };
    let ssh_host_certs: Vec<String> = owned
        .files
        .iter()
        .filter(|p| mode.enrolls() && p.role == Role::SshHostCert)
        .map(|p| paths.logical(&p.path).display().to_string())
        .collect();
    plan.extend(owned.files);

    // 5. Write.
    let (changed, unchanged) = apply_plan(paths, plan, manifest, host_name.as_str())?;
    if mode.enrolls() {
        forget_refusal(paths);
    }
    let sshd_changed = changed.iter().any(Planned::reloads_sshd);

    // 6. Services.
    let services = start_services(paths, opts, sshd_changed || mode.enrolls());
    warnings.extend(services.warnings);

    let logical = |v: Vec<PathBuf>| -> Vec<String> {
        v.iter()
            .map(|p| paths.logical(p).display().to_string())
            .collect()
    };
    Ok(ActivateReport {
        host_name: host_name.to_string(),
        tags: owned.tags,
        already_enrolled: !mode.enrolls(),
        ca_url: config.primary_ca_url(),
        ca_urls: config.ca_urls(),
        root_fingerprint: owned.root_fingerprint,
        client_cert_not_after: owned.cert.not_after,
        reenrolled: matches!(mode, Mode::Reenroll { .. }),
        ssh_host_certs,
        changed: logical(changed.into_iter().map(|p| p.path).collect()),
        unchanged: logical(unchanged),
        actions: services.actions,
        next_steps: services.next_steps,
        warnings,
    })
}

/// See [`Mode`]. A host the CA refuses enrolls again when given a token.
fn mode<'a>(
    paths: &HostPaths,
    existing: Option<&'a HostConfig>,
    opts: &ActivateOptions,
) -> Mode<'a> {
    let Some(existing) = existing else {
        return Mode::Fresh;
    };
    let refused = crate::state::load_sync_status(&paths.sync_status_file)
        .and_then(|s| s.ca_refusal)
        .is_some();
    let current = current_enrollment(paths, existing);
    match current {
        Ok(creds) if !(opts.token.is_some() && refused) => Mode::Reassert {
            config: existing,
            creds: Box::new(creds),
        },
        _ => Mode::Reenroll { prior: existing },
    }
}

fn ssh_names(opts: &ActivateOptions) -> Result<Vec<HostName>, ActivateError> {
    opts.ssh_names
        .iter()
        .map(|n| HostName::new(n).map_err(|e| usage(format!("--ssh-name '{n}': {e}"))))
        .collect()
}

/// On an enrolled host, the options may only repeat the current enrollment.
fn check_same_enrollment(
    paths: &HostPaths,
    cfg: &HostConfig,
    creds: &HostCredentials,
    opts: &ActivateOptions,
    ssh_names: &[HostName],
) -> Result<(), ActivateError> {
    if let Some(fp) = &opts.ca_fingerprint {
        let want = smith_api::tls::parse_fingerprint(fp).map_err(usage)?;
        if smith_api::tls::parse_fingerprint(&creds.root_fingerprint).ok() != Some(want) {
            return Err(usage(format!(
                "this host is enrolled with another CA (root {}); run `smith-host deactivate` first to move it",
                creds.root_fingerprint
            )));
        }
    }
    if !opts.ca_urls.is_empty() {
        let given: Vec<String> = smith_api::replicas::split_urls(&opts.ca_urls);
        if given != cfg.ca_urls() {
            return Err(usage(format!(
                "this host is enrolled with the CA at {}; to change the URLs (same CA: another replica, a new name) edit ca_urls in {}, or run `smith-host deactivate` first",
                cfg.ca_urls().join(", "),
                paths.config.display()
            )));
        }
    }
    if let Some(n) = &opts.name {
        if n != cfg.host_name.as_str() {
            return Err(usage(format!(
                "this host is enrolled as {}; run `smith-host deactivate` first to rename it",
                cfg.host_name
            )));
        }
    }
    if !ssh_names.is_empty() {
        return Err(usage(
            "--ssh-name applies at enrollment; this host is enrolled: run `smith-host deactivate`, then activate again with a token allowing the names",
        ));
    }
    Ok(())
}

/// The current name when enrolled; else `--name`, the previous enrollment's, or the
/// system's.
fn host_name(mode: &Mode, opts: &ActivateOptions) -> Result<HostName, ActivateError> {
    match (mode, &opts.name) {
        (Mode::Reassert { config, .. }, _) => Ok(config.host_name.clone()),
        (_, Some(n)) => HostName::new(n).map_err(|e| usage(format!("--name '{n}': {e}"))),
        (Mode::Reenroll { prior }, None) => Ok(prior.host_name.clone()),
        (Mode::Fresh, None) => system_host_name(),
    }
}

/// `hostd.toml` as this run writes it: the current one when enrolled; else from the
/// options (defaulting to the previous enrollment's), checked before anything happens.
fn host_config(
    mode: &Mode,
    opts: &ActivateOptions,
    host_name: &HostName,
) -> Result<HostConfig, ActivateError> {
    let mut config = match mode {
        Mode::Reassert { config, .. } => (*config).clone(),
        Mode::Fresh | Mode::Reenroll { .. } => enrollment_config(mode.prior(), opts, host_name)?,
    };
    if let Some(h) = &opts.home_base {
        config.home_base = h.clone();
    }
    config.validate().map_err(usage)?;
    Ok(config)
}

fn enrollment_config(
    prior: Option<&HostConfig>,
    opts: &ActivateOptions,
    host_name: &HostName,
) -> Result<HostConfig, ActivateError> {
    let given = smith_api::replicas::split_urls(&opts.ca_urls);
    let ca_urls = if given.is_empty() {
        prior.map(|p| p.ca_urls())
    } else {
        Some(given)
    };
    let fingerprint = opts
        .ca_fingerprint
        .clone()
        .or_else(|| prior.and_then(|p| p.ca_fingerprint.clone()));
    let missing: Vec<&str> = [
        ("--ca", ca_urls.is_none()),
        ("--token", opts.token.is_none()),
        ("--ca-fingerprint", fingerprint.is_none()),
    ]
    .iter()
    .filter(|(_, m)| *m)
    .map(|(f, _)| *f)
    .collect();
    if !missing.is_empty() {
        return Err(usage(format!(
            "this host is not enrolled yet: {} required (smith-host activate --ca URL --token T --ca-fingerprint SHA256:...)",
            missing.join(", ")
        )));
    }
    let urls = ca_urls.unwrap_or_default();
    for url in &urls {
        crate::config::validate_ca_url(url).map_err(usage)?;
    }
    smith_api::Replicas::new(urls.clone()).map_err(|e| usage(format!("--ca: {e}")))?;
    let fp = fingerprint.unwrap_or_default();
    smith_api::tls::parse_fingerprint(&fp).map_err(|e| usage(format!("--ca-fingerprint: {e}")))?;
    let token = opts.token.as_deref().unwrap_or("");
    if token.trim().is_empty() || token.len() > 4096 || token.contains(char::is_whitespace) {
        return Err(usage(
            "--token must be the enrollment token printed by `smith-ca admin host token`",
        ));
    }
    // Keep the settings of a previous enrollment (home_base, paths, ...).
    let mut c = match prior {
        Some(p) => p.clone(),
        None => HostConfig::new(String::new(), host_name.clone()),
    };
    c.set_ca_urls(urls);
    c.host_name = host_name.clone();
    c.ca_fingerprint = Some(fp);
    Ok(c)
}

/// The files Smith owns, and what the report says of the enrollment.
struct Owned {
    cert: identity::CertSummary,
    root_fingerprint: String,
    /// The tags the CA gave (set when this run enrolled).
    tags: Option<String>,
    files: Vec<Planned>,
}

fn enrolled_owned(
    paths: &HostPaths,
    config: &HostConfig,
    e: &Enrolled,
    warnings: &mut Vec<String>,
) -> Result<Owned, ActivateError> {
    let cert = identity::summarize_pem(e.resp.client_cert_pem.as_bytes())
        .map_err(ActivateError::Enroll)?;
    let root_der =
        identity::first_der(e.resp.root_pem.as_bytes()).map_err(ActivateError::Enroll)?;
    Ok(Owned {
        cert,
        root_fingerprint: smith_api::tls::fingerprint(&root_der),
        tags: Some(e.resp.tags.to_string()),
        files: fresh_owned(paths, config, e, warnings)?,
    })
}

/// A refusal recorded for the previous enrollment no longer applies.
fn forget_refusal(paths: &HostPaths) {
    if let Some(mut st) = crate::state::load_sync_status(&paths.sync_status_file) {
        if st.ca_refusal.take().is_some() {
            let _ = crate::state::save_sync_status(&paths.sync_status_file, &st);
        }
    }
}

#[derive(Default)]
struct Services {
    actions: Vec<String>,
    next_steps: Vec<String>,
    warnings: Vec<String>,
}

/// Reloads sshd (when `reload_sshd`) and starts the daemon; with `--no-start`, says
/// how instead.
fn start_services(paths: &HostPaths, opts: &ActivateOptions, reload_sshd: bool) -> Services {
    let mut s = Services::default();
    if opts.no_start {
        s.next_steps.push(format!(
            "start the daemon: {}",
            service::hostd_command(paths)
        ));
        if service::use_systemd(paths) {
            s.next_steps
                .push("or under systemd: systemctl enable --now smith-hostd".into());
            s.next_steps
                .push("reload sshd: systemctl reload ssh".into());
        } else {
            s.next_steps.push(format!(
                "reload sshd: kill -HUP $(cat {})",
                paths.sshd_pid_file.display()
            ));
        }
        return s;
    }
    if reload_sshd {
        match service::reload_sshd(paths) {
            Ok(a) => s.actions.push(a),
            Err(e) => s.warnings.push(format!("sshd was not reloaded: {e}")),
        }
    }
    if service::running_pid(&paths.pid_file, "smith-hostd").is_some() {
        s.actions.push("smith-hostd is already running".into());
    } else {
        match service::start_daemon(paths) {
            Ok(a) => s.actions.push(a),
            Err(e) => s.warnings.push(e),
        }
    }
    s
}

fn dropin_planned(paths: &HostPaths, host_certs: &[PathBuf]) -> Planned {
    let text = edits::render_dropin(&edits::DropIn {
        user_ca_keys: &paths.user_ca_keys,
        revoked_keys: &paths.revoked_keys,
        principals_dir: &paths.principals_dir,
        host_certificates: host_certs,
    });
    Planned {
        path: paths.sshd_dropin.clone(),
        kind: Kind::Owned,
        bytes: text.into_bytes(),
        mode: 0o644,
        daemon_managed: false,
        role: Role::SshdConfig,
    }
}

fn owned(path: &Path, bytes: Vec<u8>, mode: u32, daemon_managed: bool) -> Planned {
    Planned {
        path: path.to_path_buf(),
        kind: Kind::Owned,
        bytes,
        mode,
        daemon_managed,
        role: Role::Other,
    }
}

/// The owned files for a fresh enrollment.
fn fresh_owned(
    paths: &HostPaths,
    config: &HostConfig,
    e: &Enrolled,
    warnings: &mut Vec<String>,
) -> Result<Vec<Planned>, ActivateError> {
    let mut plan = vec![
        owned(
            &paths.host_key,
            e.key_pem.clone().into_bytes(),
            identity::KEY_MODE,
            true,
        ),
        owned(
            &paths.host_cert,
            e.resp.client_cert_pem.clone().into_bytes(),
            identity::CERT_MODE,
            true,
        ),
        owned(
            &paths.ca_bundle,
            e.resp.root_pem.clone().into_bytes(),
            identity::CERT_MODE,
            false,
        ),
        owned(&paths.config, config.render().into_bytes(), 0o644, false),
    ];
    let (keys, refused) = crate::trust::render_user_ca_keys(&e.resp.user_ca_keys);
    for r in refused {
        warnings.push(format!("a user CA key from the CA was refused: {r}"));
    }
    if keys.is_empty() {
        warnings.push(
            "the CA sent no user CA key; no certificate can log in until a sync brings one".into(),
        );
    }
    plan.push(
        owned(
            &paths.user_ca_keys,
            keys.into_bytes(),
            crate::trust::TRUST_MODE,
            true,
        )
        .role(Role::SshdConfig),
    );
    let krl = fsutil::read_optional(&paths.revoked_keys)
        .ok()
        .flatten()
        .unwrap_or_default();
    plan.push(owned(
        &paths.revoked_keys,
        krl,
        crate::trust::TRUST_MODE,
        true,
    ));
    let mut host_certs = Vec::new();
    for (i, cert) in e.resp.ssh_host_certs.iter().enumerate() {
        let Some((key_path, _)) = e.host_keys.get(i) else {
            warnings.push(
                "the CA returned more host certificates than keys sent; extra ignored".into(),
            );
            break;
        };
        let line = cert.trim();
        let parsed = line
            .split_whitespace()
            .nth(1)
            .and_then(|b64| smith_proto::sshcert::parse_cert_base64(b64).ok());
        if parsed.is_none_or(|c| c.cert_type != 2) || line.contains('\n') {
            warnings.push(format!(
                "the host certificate for {} is not a valid OpenSSH host certificate; skipped",
                key_path.display()
            ));
            continue;
        }
        let cert_path = host_cert_path_for(key_path);
        // smith-hostd renews it: a change since activation is expected.
        plan.push(
            owned(
                &cert_path,
                format!("{line}\n").into_bytes(),
                crate::hostcerts::CERT_MODE,
                true,
            )
            .role(Role::SshHostCert),
        );
        host_certs.push(cert_path);
    }
    plan.push(dropin_planned(paths, &host_certs));
    // A host name the CA already has an audit chain for (re-enrollment): the new spool
    // continues that chain instead of starting a second one at seq 1.
    let acked = paths.spool_dir.join(crate::spool::ACKED_FILE);
    if let Some(head) = e.audit_head.as_ref().filter(|h| h.acked_through > 0) {
        if !acked.exists() && crate::spool::head_seq(&paths.spool_dir).unwrap_or(0) == 0 {
            let state = crate::spool::AckState {
                acked_through: head.acked_through,
                head_hash: head.head_hash.clone(),
            };
            if let Ok(b) = serde_json::to_vec(&state) {
                plan.push(owned(&acked, b, 0o600, true));
            }
        } else {
            warnings.push(format!(
                "the CA already has {} audit records for this host name and this host has its own spool; \
                 if the chains differ, hostd reports a fork",
                head.acked_through
            ));
        }
    }
    Ok(plan)
}

/// The owned files for an already enrolled host: keep key, certs and trust material
/// as they are (the daemon maintains them), re-assert config and drop-in.
fn reassert_owned(
    paths: &HostPaths,
    config: &HostConfig,
    manifest: Option<&Manifest>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Planned>, ActivateError> {
    let mut plan = Vec::new();
    let current = |p: &Path| fsutil::read_optional(p).ok().flatten();
    for (p, mode, managed) in [
        (&paths.host_key, identity::KEY_MODE, true),
        (&paths.host_cert, identity::CERT_MODE, true),
        (&paths.ca_bundle, identity::CERT_MODE, false),
    ] {
        if let Some(b) = current(p) {
            plan.push(owned(p, b, mode, managed));
        }
    }
    plan.push(owned(
        &paths.config,
        config.render().into_bytes(),
        0o644,
        false,
    ));
    let keys = match current(&paths.user_ca_keys) {
        Some(b) if !b.is_empty() => b,
        _ => match crate::state::load_state(&paths.state_file) {
            Ok(Some(s)) => crate::trust::render_user_ca_keys(&s.user_ca_keys)
                .0
                .into_bytes(),
            _ => {
                warnings.push(format!(
                    "{} is missing and no snapshot is stored; it stays empty until the daemon syncs",
                    paths.user_ca_keys.display()
                ));
                Vec::new()
            }
        },
    };
    plan.push(
        owned(&paths.user_ca_keys, keys, crate::trust::TRUST_MODE, true).role(Role::SshdConfig),
    );
    plan.push(owned(
        &paths.revoked_keys,
        current(&paths.revoked_keys).unwrap_or_default(),
        crate::trust::TRUST_MODE,
        true,
    ));
    // Host certificates written by a previous activation.
    let mut host_certs = Vec::new();
    for key in paths.ssh_host_public_keys() {
        let cert = host_cert_path_for(&key);
        let ours = manifest
            .and_then(|m| m.entry(&cert))
            .is_some_and(|e| e.kind == Kind::Owned);
        if ours {
            if let Some(b) = current(&cert) {
                plan.push(
                    owned(&cert, b, crate::hostcerts::CERT_MODE, true).role(Role::SshHostCert),
                );
                host_certs.push(cert);
            }
        }
    }
    plan.push(dropin_planned(paths, &host_certs));
    Ok(plan)
}

/// `/etc/sudoers.d/smith`, checked with `visudo -cf` before anything is written.
fn sudoers_planned(paths: &HostPaths) -> Result<Planned, ActivateError> {
    let text = crate::sudoers::render(&[]);
    crate::sudoers::check(&text).map_err(ActivateError::Local)?;
    Ok(owned(
        &paths.sudoers,
        text.into_bytes(),
        crate::sudoers::MODE,
        false,
    ))
}

/// Writes the planned files that differ from what is on disk, recording originals in
/// the manifest first; rolls everything back if a write fails.
/// Returns (changed files, unchanged effective paths).
fn apply_plan(
    paths: &HostPaths,
    plan: Vec<Planned>,
    manifest: Option<Manifest>,
    host_name: &str,
) -> Result<(Vec<Planned>, Vec<PathBuf>), ActivateError> {
    let write_err = |what: String| ActivateError::Write(what);
    let mut unchanged = Vec::new();
    let mut changes: Vec<(Planned, Option<Vec<u8>>, Option<u32>)> = Vec::new();
    for p in plan {
        let cur = fsutil::read_optional(&p.path)
            .map_err(|e| ActivateError::Local(format!("cannot read {}: {e}", p.path.display())))?;
        let cur_mode = fsutil::mode_of(&p.path);
        if cur.as_deref() == Some(&p.bytes[..]) && cur_mode == Some(p.mode) {
            unchanged.push(p.path);
        } else {
            changes.push((p, cur, cur_mode));
        }
    }
    if changes.is_empty() {
        return Ok((Vec::new(), unchanged));
    }
    let prev_manifest_bytes = fsutil::read_optional(&paths.manifest).ok().flatten();
    let mut manifest = manifest.unwrap_or_else(|| Manifest::new(host_name));

    // Directories (recorded so deactivate can remove them).
    let mut created = Vec::new();
    let mut dirs: Vec<(PathBuf, u32)> = vec![
        (paths.state_dir.clone(), 0o755),
        (paths.backup_dir.clone(), 0o700),
    ];
    for (c, _, _) in &changes {
        if let Some(d) = c.path.parent() {
            dirs.push((d.to_path_buf(), 0o755));
        }
    }
    for (d, mode) in dirs {
        match fsutil::create_dirs(&d, mode) {
            Ok(made) => created.extend(made),
            Err(e) => {
                remove_dirs(&created);
                return Err(write_err(format!(
                    "cannot create {}: {e}; nothing was changed",
                    d.display()
                )));
            }
        }
    }

    // Originals into the backup directory and the manifest.
    let mut new_backups = Vec::new();
    for (p, cur, cur_mode) in &changes {
        if manifest.entry(&p.path).is_none() {
            let mut entry = FileEntry {
                path: p.path.clone(),
                kind: p.kind,
                existed: cur.is_some(),
                original_mode: *cur_mode,
                original_sha256: cur.as_deref().map(sha256_hex),
                backup: None,
                written_sha256: String::new(),
                written_mode: p.mode,
                daemon_managed: p.daemon_managed,
            };
            if let Some(orig) = cur {
                let name = backup_name(&p.path);
                let bpath = paths.backup_dir.join(&name);
                if let Err(e) = fsutil::atomic_write(&bpath, orig, 0o600) {
                    for b in &new_backups {
                        let _ = std::fs::remove_file(b);
                    }
                    remove_dirs(&created);
                    return Err(write_err(format!(
                        "cannot back up {} to {}: {e}; nothing was changed",
                        p.path.display(),
                        bpath.display()
                    )));
                }
                new_backups.push(bpath);
                entry.backup = Some(name);
            }
            manifest.files.push(entry);
        }
        if let Some(e) = manifest.entry_mut(&p.path) {
            e.written_sha256 = sha256_hex(&p.bytes);
            e.written_mode = p.mode;
        }
    }
    for d in &created {
        if !manifest.dirs_created.contains(d) {
            manifest.dirs_created.push(d.clone());
        }
    }
    if let Err(e) = manifest.save(&paths.manifest) {
        for b in &new_backups {
            let _ = std::fs::remove_file(b);
        }
        remove_dirs(&created);
        return Err(write_err(format!(
            "cannot write {}: {e}; nothing was changed",
            paths.manifest.display()
        )));
    }

    // The files themselves.
    for (i, (p, _, _)) in changes.iter().enumerate() {
        if let Err(e) = fsutil::atomic_write(&p.path, &p.bytes, p.mode) {
            // Roll back this run: earlier files, manifest, backups, directories.
            for (q, orig, mode) in changes[..i].iter().rev() {
                let _ = match orig {
                    Some(b) => fsutil::atomic_write(&q.path, b, mode.unwrap_or(0o644)),
                    None => std::fs::remove_file(&q.path),
                };
            }
            let _ = match &prev_manifest_bytes {
                Some(b) => fsutil::atomic_write(&paths.manifest, b, 0o600),
                None => std::fs::remove_file(&paths.manifest),
            };
            for b in &new_backups {
                let _ = std::fs::remove_file(b);
            }
            remove_dirs(&created);
            return Err(write_err(format!(
                "cannot write {}: {e}; every change of this run was rolled back",
                p.path.display()
            )));
        }
    }
    Ok((changes.into_iter().map(|(p, _, _)| p).collect(), unchanged))
}

/// Removes directories (innermost first) if they are empty.
fn remove_dirs(dirs: &[PathBuf]) {
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeactivateOptions {
    /// Do not stop the daemon nor reload sshd (print how instead).
    pub no_stop: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeactivateReport {
    pub was_active: bool,
    #[serde(flatten)]
    pub undo: Undo,
    pub actions: Vec<String>,
    pub next_steps: Vec<String>,
}

/// Undoes `activate`. See the module doc.
pub fn deactivate(
    paths: &HostPaths,
    opts: &DeactivateOptions,
) -> Result<DeactivateReport, ActivateError> {
    let Some(manifest) = Manifest::load(&paths.manifest).map_err(ActivateError::Local)? else {
        return Ok(DeactivateReport {
            was_active: false,
            undo: Undo::default(),
            actions: Vec::new(),
            next_steps: Vec::new(),
        });
    };
    let mut undo = Undo::default();
    let mut actions = Vec::new();
    let mut next_steps = Vec::new();

    stop_daemon(paths, opts, &mut undo, &mut actions);
    for entry in manifest.files.iter().rev() {
        restore(paths, entry, &mut undo);
    }
    remove_daemon_files(paths, &mut undo);
    remove_spool(paths, &mut undo);
    remove_manifest(paths, &manifest, &mut undo);
    if opts.no_stop {
        next_steps.push(if service::use_systemd(paths) {
            "reload sshd: systemctl reload ssh".into()
        } else {
            format!(
                "reload sshd: kill -HUP $(cat {})",
                paths.sshd_pid_file.display()
            )
        });
    } else {
        match service::reload_sshd(paths) {
            Ok(a) => actions.push(a),
            Err(e) => undo.warnings.push(format!("sshd was not reloaded: {e}")),
        }
    }
    Ok(DeactivateReport {
        was_active: true,
        undo,
        actions,
        next_steps,
    })
}

fn show(paths: &HostPaths, p: &Path) -> String {
    paths.logical(p).display().to_string()
}

/// Stops smith-hostd (with `--no-stop`, warns if it runs: it may rewrite its files).
fn stop_daemon(
    paths: &HostPaths,
    opts: &DeactivateOptions,
    undo: &mut Undo,
    actions: &mut Vec<String>,
) {
    if opts.no_stop {
        if service::running_pid(&paths.pid_file, "smith-hostd").is_some() {
            undo.warnings
                .push("smith-hostd is still running and may rewrite its files; stop it".into());
        }
        return;
    }
    match service::stop_daemon(paths) {
        Ok(Some(a)) => actions.push(a),
        Ok(None) => {}
        Err(e) => undo.warnings.push(e),
    }
}

/// Puts one file of the manifest back: as it was (from its backup) or absent when
/// Smith wrote it untouched since, or Smith owns it; else (an edited file the admin
/// changed since) removes only Smith's lines.
fn restore(paths: &HostPaths, entry: &FileEntry, undo: &mut Undo) {
    let cur = match fsutil::read_optional(&entry.path) {
        Ok(c) => c,
        Err(e) => {
            undo.warnings.push(format!(
                "cannot read {}: {e}; left alone",
                entry.path.display()
            ));
            return;
        }
    };
    let untouched =
        cur.as_deref().map(sha256_hex).as_deref() == Some(entry.written_sha256.as_str());
    if untouched || entry.kind == Kind::Owned {
        if !untouched && cur.is_some() && !entry.daemon_managed {
            undo.warnings.push(format!(
                "{} was changed since activation; Smith owns it, so it was restored anyway",
                show(paths, &entry.path)
            ));
        }
        if entry.existed {
            restore_original(paths, entry, undo);
        } else {
            match std::fs::remove_file(&entry.path) {
                Ok(()) => undo.removed.push(show(paths, &entry.path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => undo
                    .warnings
                    .push(format!("cannot remove {}: {e}", show(paths, &entry.path))),
            }
        }
        return;
    }
    match cur {
        Some(cur) => remove_smith_lines(paths, entry, &cur, undo),
        None => undo.warnings.push(format!(
            "{} was deleted since activation; left alone",
            show(paths, &entry.path)
        )),
    }
}

/// Writes back the original of a file that existed before activation, if its backup is
/// intact.
fn restore_original(paths: &HostPaths, entry: &FileEntry, undo: &mut Undo) {
    let shown = show(paths, &entry.path);
    let Some(name) = &entry.backup else {
        undo.warnings
            .push(format!("no backup of {shown} recorded; left alone"));
        return;
    };
    let backup = paths.backup_dir.join(name);
    let bytes = match std::fs::read(&backup) {
        Ok(b) if Some(sha256_hex(&b)) == entry.original_sha256 => b,
        Ok(_) => {
            undo.warnings.push(format!(
                "the backup {} does not match its recorded hash; {shown} left alone",
                backup.display(),
            ));
            return;
        }
        Err(e) => {
            undo.warnings.push(format!(
                "cannot read the backup {}: {e}; {shown} left alone",
                backup.display(),
            ));
            return;
        }
    };
    match fsutil::atomic_write(&entry.path, &bytes, entry.original_mode.unwrap_or(0o644)) {
        Ok(()) => undo.restored.push(shown),
        Err(e) => undo.warnings.push(format!("cannot restore {shown}: {e}")),
    }
}

/// An edited file the admin changed since activation: removes only Smith's part.
fn remove_smith_lines(paths: &HostPaths, entry: &FileEntry, cur: &[u8], undo: &mut Undo) {
    let shown = show(paths, &entry.path);
    let text = String::from_utf8_lossy(cur).into_owned();
    let cleaned = if entry.path == paths.nsswitch {
        edits::nss_remove(&text)
    } else if entry.path == paths.sudo_conf {
        edits::sudo_conf_remove(&text)
    } else {
        edits::remove_marked_lines(&text)
    };
    if cleaned.as_bytes() == cur {
        undo.warnings.push(format!(
            "{shown} was changed since activation and holds no Smith lines; left alone"
        ));
        return;
    }
    let mode = fsutil::mode_of(&entry.path).unwrap_or(0o644);
    match fsutil::atomic_write(&entry.path, cleaned.as_bytes(), mode) {
        Ok(()) => {
            undo.cleaned.push(shown.clone());
            undo.warnings.push(format!(
                "{shown} was changed since activation: only Smith's lines were removed, the rest was kept"
            ));
        }
        Err(e) => undo.warnings.push(format!("cannot clean {shown}: {e}")),
    }
}

/// The files the daemon created (not in the manifest).
fn remove_daemon_files(paths: &HostPaths, undo: &mut Undo) {
    // The principals files (sshd no longer reads them once the drop-in is gone), and
    // pam_smith's session records.
    for dir in [&paths.principals_dir, &paths.run_dir.join("sessions")] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => undo.removed.push(show(paths, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => undo
                .warnings
                .push(format!("cannot remove {}: {e}", show(paths, dir))),
        }
    }
    for p in [
        &paths.cache_file,
        &paths.state_file,
        &paths.sync_status_file,
    ] {
        match std::fs::remove_file(p) {
            Ok(()) => undo.removed.push(show(paths, p)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => undo
                .warnings
                .push(format!("cannot remove {}: {e}", show(paths, p))),
        }
    }
}

/// The audit spool: removed when the CA has every record, else kept.
fn remove_spool(paths: &HostPaths, undo: &mut Undo) {
    let unacked = crate::spool::head_seq(&paths.spool_dir)
        .unwrap_or(0)
        .saturating_sub(
            crate::spool::load_acked(&paths.spool_dir)
                .map(|a| a.acked_through)
                .unwrap_or(0),
        );
    if unacked == 0 {
        if let Ok(segs) = crate::spool::segments(&paths.spool_dir) {
            for (_, p) in segs {
                let _ = std::fs::remove_file(p);
            }
        }
        let _ = std::fs::remove_file(paths.spool_dir.join(crate::spool::ACKED_FILE));
    } else {
        undo.warnings.push(format!(
            "{unacked} audit records were not uploaded to the CA yet; they are kept in {}",
            show(paths, &paths.spool_dir)
        ));
    }
    for p in [
        &paths.audit_status_file,
        &paths.sessions_file,
        &paths.sshd_log_position,
    ] {
        let _ = std::fs::remove_file(p);
    }
    for d in [
        &paths.spool_dir,
        &paths.pending_dir.join("bad"),
        &paths.pending_dir,
    ] {
        if d.exists() && std::fs::remove_dir(d).is_err() {
            undo.warnings.push(format!(
                "kept audit data in {} (not yet uploaded); remove it by hand once it is no longer needed",
                show(paths, d)
            ));
        }
    }
}

/// The backups, the manifest and the directories activation created.
fn remove_manifest(paths: &HostPaths, manifest: &Manifest, undo: &mut Undo) {
    for entry in &manifest.files {
        if let Some(name) = &entry.backup {
            let _ = std::fs::remove_file(paths.backup_dir.join(name));
        }
    }
    if let Err(e) = std::fs::remove_file(&paths.manifest) {
        undo.warnings.push(format!(
            "cannot remove {}: {e}",
            show(paths, &paths.manifest)
        ));
    }
    let _ = std::fs::remove_dir(&paths.backup_dir);
    let _ = std::fs::remove_dir(&paths.run_dir);
    remove_dirs(&manifest.dirs_created);
}
