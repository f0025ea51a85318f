//! `smith cert`: get a short-lived certificate for a fresh in-memory Ed25519 key and put
//! both into the ssh-agent with a lifetime equal to the certificate's remaining validity.
//!
//! Must never: write the private key to disk unless `--out PATH` asks for it (then 0600,
//! created fresh), or continue silently when neither an agent nor `--out` can receive the
//! key.

use crate::agent::Agent;
use crate::config::{Credential, Effective};
use anyhow::Context;
use rand::rngs::OsRng;
use smith_api::{CertRequest, CertResponse, ClientError, ErrorCode, HostCertRequest};
use smith_api::{HostCertResponse, ReachableHost};
use smith_proto::{Tags, UserName};
use ssh_key::{Certificate, LineEnding, PrivateKey};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct CertArgs {
    pub scope: Tags,
    /// A certificate for one host (`--host`) instead of `scope`.
    pub host: Option<HostAsk>,
    pub ttl: Duration,
    pub reason: Option<String>,
    pub out: Option<PathBuf>,
    pub json: bool,
    /// Print nothing on success (`--ensure --quiet`).
    pub quiet: bool,
}

/// `smith cert --host HOST [--login LOGIN]`: a certificate for exactly the grants that
/// fit the host (`POST /v1/certs/host`).
#[derive(Debug, Clone)]
pub struct HostAsk {
    /// As typed, or as `smith` resolved it.
    pub host: String,
    pub login: Option<UserName>,
}

/// Exit code for a refusal by the CA (as opposed to 1 for other errors).
pub const EXIT_DENIED: i32 = 3;

/// The CA refused (a 4xx answer): its code and its sentence.
#[derive(Debug, thiserror::Error)]
#[error("the CA refused ({}): {message}", .code_text)]
pub struct Denied {
    pub code: ErrorCode,
    /// The code as sent (also one this build does not know).
    pub code_text: String,
    pub message: String,
}

/// A client error as `smith` reports it: a refusal of the CA as [`Denied`] (exit code
/// [`EXIT_DENIED`]), anything else as it is.
/// [`refusal`], except that a kept sign-in the CA finds over says "sign in again".
fn refused(cfg: &Effective, cred: &Credential, e: ClientError) -> anyhow::Error {
    crate::login::sign_in_refused(cfg, cred, &e).unwrap_or_else(|| refusal(e))
}

pub fn refusal(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Status {
            status,
            code,
            wire_code,
            message,
            ..
        } if (400..500).contains(&status) => Denied {
            code,
            code_text: wire_code,
            message,
        }
        .into(),
        e => e.into(),
    }
}

#[derive(serde::Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    cert: &'a CertResponse,
    /// For `--host`: the host, how the name matched, the login.
    #[serde(flatten)]
    host: Option<HostOutput<'a>>,
    agent: Option<String>,
    files: Vec<String>,
}

#[derive(serde::Serialize)]
struct HostOutput<'a> {
    host: &'a ReachableHost,
    matched: smith_api::reach::Matched,
    login: &'a UserName,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn write_new(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    // Replace an older file of ours atomically: write a fresh temp file, then rename.
    let tmp = suffixed(path, &format!(".tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn run(cfg: &Effective, args: CertArgs, cred: &Credential) -> anyhow::Result<()> {
    issue(cfg, args, cred).map(|_| ())
}

/// [`run`], returning the CA's answer about the host for a certificate for one host.
pub fn issue(
    cfg: &Effective,
    args: CertArgs,
    cred: &Credential,
) -> anyhow::Result<Option<HostCertResponse>> {
    if cfg.ssh_auth_sock.is_none() && args.out.is_none() {
        anyhow::bail!(
            "no ssh-agent: SSH_AUTH_SOCK is not set, and without --out the key has nowhere to go\n\
             hint: start an agent with `eval $(ssh-agent)`, or pass --out PATH to write key files"
        );
    }
    let client = cfg.client_with(Some(cred.bearer().to_string()))?;
    let key = PrivateKey::random(&mut OsRng, ssh_key::Algorithm::Ed25519)
        .context("cannot generate a key")?;
    let public = key.public_key().to_openssh()?;
    let (resp, for_host): (CertResponse, Option<HostCertResponse>) = match &args.host {
        None => {
            let r = client
                .issue_cert(&CertRequest {
                    public_key: public,
                    scope: args.scope.clone(),
                    ttl_secs: args.ttl.as_secs(),
                    reason: args.reason.clone(),
                    oidc_nonce: cred.nonce(),
                })
                .map_err(|e| refused(cfg, cred, e))?;
            (r, None)
        }
        Some(h) => {
            let r = client
                .issue_host_cert(&HostCertRequest {
                    public_key: public,
                    host: h.host.clone(),
                    login: h.login.clone(),
                    ttl_secs: args.ttl.as_secs(),
                    reason: args.reason.clone(),
                    oidc_nonce: cred.nonce(),
                })
                .map_err(|e| match e {
                    ClientError::Status {
                        code: ErrorCode::NotFound,
                        ..
                    } => anyhow::anyhow!(
                        "this CA does not issue certificates for a host (it predates them): \
                         upgrade it, or ask with --scope"
                    ),
                    e => refused(cfg, cred, e),
                })?;
            (r.cert.clone(), Some(r))
        }
    };
    let cert = Certificate::from_openssh(&resp.certificate)
        .context("the CA sent a certificate this client cannot read")?;
    let mut files = Vec::new();
    let lifetime = resp.valid_before.saturating_sub(now());
    let agent_used = deliver(cfg, &args, &key, &cert, &resp, lifetime, &mut files)?;
    match &for_host {
        // A certificate for a host: its entry in the host list is now the CA's latest.
        Some(r) => remember_host(cfg, &cert, &resp, r.host.clone()),
        None => remember_request(cfg, &args, &cert),
    }
    if !args.quiet {
        print(&args, &resp, for_host.as_ref(), agent_used, files, lifetime)?;
    }
    Ok(for_host)
}

/// Updates `host`'s entry in the profile's host list (creating one that holds only it).
fn remember_host(cfg: &Effective, cert: &Certificate, resp: &CertResponse, host: ReachableHost) {
    let (Ok(url), Some(user)) = (
        cfg.ca_url(),
        resp.principals.first().and_then(|p| UserName::new(p).ok()),
    ) else {
        return;
    };
    let profile = cfg.profile();
    let mut list = crate::hostlist::HostList::load(profile, &url)
        .filter(|l| l.user == user)
        .unwrap_or_else(|| crate::hostlist::HostList {
            ca_url: url,
            user,
            fetched_at: 0,
            user_ca_keys: ca_key_lines(cert),
            hosts: vec![],
        });
    list.upsert(host);
    // A user CA key rotation: the key that signed it is this CA's too.
    if !list.ca_keys().contains(cert.signature_key()) {
        list.user_ca_keys.extend(ca_key_lines(cert));
    }
    let _ = list.save(profile);
}

fn ca_key_lines(cert: &Certificate) -> Vec<String> {
    ssh_key::PublicKey::new(cert.signature_key().clone(), "")
        .to_openssh()
        .map(|k| vec![k])
        .unwrap_or_default()
}

/// Remembers a scope request for `smith cert --ensure` (no secrets: no token, no key).
fn remember_request(cfg: &Effective, args: &CertArgs, cert: &Certificate) {
    let Ok(ca_url) = cfg.ca_url() else {
        return;
    };
    let last = crate::ensure::LastCert {
        ca_url,
        scope: args.scope.to_string(),
        ttl_secs: args.ttl.as_secs(),
        reason: args.reason.clone(),
        user_ca_keys: ca_key_lines(cert),
        updated_at: now(),
    };
    if let Err(e) = crate::ensure::save_last(cfg.profile(), &last) {
        if !args.quiet {
            eprintln!("warning: cannot remember this request for `smith cert --ensure`: {e:#}");
        }
    }
}

/// Puts the key and certificate where they go: `--out` files, and the agent (where the
/// certificates of this CA for the same scope it replaces are removed). Returns the
/// agent's socket when it took them.
fn deliver(
    cfg: &Effective,
    args: &CertArgs,
    key: &PrivateKey,
    cert: &Certificate,
    resp: &CertResponse,
    lifetime: u64,
    files: &mut Vec<String>,
) -> anyhow::Result<Option<String>> {
    if let Some(out) = &args.out {
        let mut k = key.clone();
        k.set_comment(resp.key_id.clone());
        let text = k.to_openssh(LineEnding::LF)?;
        write_new(out, text.as_bytes(), 0o600)?;
        let pub_path = suffixed(out, ".pub");
        write_new(
            &pub_path,
            format!("{}\n", k.public_key().to_openssh()?).as_bytes(),
            0o644,
        )?;
        let cert_path = suffixed(out, "-cert.pub");
        write_new(
            &cert_path,
            format!("{}\n", cert.to_openssh()?).as_bytes(),
            0o644,
        )?;
        *files = vec![
            out.display().to_string(),
            pub_path.display().to_string(),
            cert_path.display().to_string(),
        ];
    }

    let mut agent_used = None;
    if let Some(sock) = &cfg.ssh_auth_sock {
        let keypair = key
            .key_data()
            .ed25519()
            .context("generated key is not Ed25519")?;
        let added = Agent::connect(Path::new(sock)).and_then(|mut a| {
            a.add_certificate(
                keypair,
                cert,
                &resp.key_id,
                lifetime.clamp(1, u32::MAX as u64) as u32,
            )?;
            // None duplicated: the certificates this one replaces go.
            a.remove_replaced(cert)
        });
        match added {
            Ok(()) => agent_used = Some(sock.clone()),
            Err(e) if args.out.is_some() => {
                eprintln!("warning: {e}; the key is only in the --out files");
            }
            Err(e) => {
                return Err(e)
                    .context("the certificate was issued but could not be added to the agent")
            }
        }
    }
    Ok(agent_used)
}

fn print(
    args: &CertArgs,
    resp: &CertResponse,
    for_host: Option<&HostCertResponse>,
    agent_used: Option<String>,
    files: Vec<String>,
    lifetime: u64,
) -> anyhow::Result<()> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Output {
                cert: resp,
                host: for_host.map(|r| HostOutput {
                    host: &r.host,
                    matched: r.matched,
                    login: &r.login,
                }),
                agent: agent_used,
                files,
            })?
        );
        return Ok(());
    }
    let until =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(resp.valid_before));
    let left = humantime::format_duration(Duration::from_secs(lifetime));
    println!("Certificate issued:");
    if let Some(r) = for_host {
        println!(
            "  host:        {} ({}, matched by {}), as {}",
            r.host.name,
            r.host.tags,
            r.matched.as_str(),
            r.login
        );
    }
    let logins: Vec<&str> = resp
        .principals
        .iter()
        .map(|p| p.as_str())
        .filter(|p| !p.starts_with("smith-"))
        .collect();
    println!("  logins:      {}", logins.join(", "));
    let grants: Vec<String> = resp
        .principals
        .iter()
        .filter_map(|p| smith_proto::grants::parse_grant_principal(p))
        .map(|g| format!("#{} ({})", g.id, g.level))
        .collect();
    println!("  grants:      {}", grants.join(", "));
    println!(
        "  scope:       {}",
        if resp.scope.is_empty() {
            "(any host where you have a grant)".to_string()
        } else {
            resp.scope.to_string()
        }
    );
    println!("  serial:      {}", resp.serial);
    println!("  key ID:      {}", resp.key_id);
    println!("  valid until: {until} (in {left})");
    if let Some(c) = resp.clipped_to_secs {
        println!(
            "  note:        you asked for {}, policy allows {}: clipped",
            humantime::format_duration(args.ttl),
            humantime::format_duration(Duration::from_secs(c))
        );
    }
    if let Some(sock) = agent_used {
        println!("Added to the ssh-agent at {sock}; it forgets the key in {left}.");
    }
    for f in files {
        println!("Wrote {f}");
    }
    Ok(())
}
