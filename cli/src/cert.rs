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
use smith_api::{CertRequest, CertResponse, ClientError};
use smith_proto::Tags;
use ssh_key::{Certificate, LineEnding, PrivateKey};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct CertArgs {
    pub scope: Tags,
    pub ttl: Duration,
    pub reason: Option<String>,
    pub out: Option<PathBuf>,
    pub json: bool,
    /// Print nothing on success (`--ensure --quiet`).
    pub quiet: bool,
}

/// Exit code for a refusal by the CA (as opposed to 1 for other errors).
pub const EXIT_DENIED: i32 = 3;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

#[derive(serde::Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    cert: &'a CertResponse,
    agent: Option<String>,
    files: Vec<String>,
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
    let resp: CertResponse = match client.issue_cert(&CertRequest {
        public_key: public,
        scope: args.scope.clone(),
        ttl_secs: args.ttl.as_secs(),
        reason: args.reason.clone(),
        oidc_nonce: cred.nonce(),
    }) {
        Ok(r) => r,
        // A kept sign-in the CA finds over: "sign in again", not a bare refusal.
        Err(e) => match crate::login::sign_in_refused(cfg, cred, &e) {
            Some(over) => return Err(over),
            None => match e {
                ClientError::Status {
                    status,
                    wire_code,
                    message,
                    ..
                } if (400..500).contains(&status) => {
                    return Err(Denied(format!("the CA refused ({wire_code}): {message}")).into());
                }
                e => return Err(e.into()),
            },
        },
    };
    let cert = Certificate::from_openssh(&resp.certificate)
        .context("the CA sent a certificate this client cannot read")?;
    // Remember the request for `smith cert --ensure` (no secrets: no token, no key).
    let last = crate::ensure::LastCert {
        ca_url: cfg.ca_url()?,
        scope: args.scope.to_string(),
        ttl_secs: args.ttl.as_secs(),
        reason: args.reason.clone(),
        user_ca_keys: ssh_key::PublicKey::new(cert.signature_key().clone(), "")
            .to_openssh()
            .map(|k| vec![k])
            .unwrap_or_default(),
        updated_at: now(),
    };
    if let Err(e) = crate::ensure::save_last(cfg.profile(), &last) {
        if !args.quiet {
            eprintln!("warning: cannot remember this request for `smith cert --ensure`: {e:#}");
        }
    }

    let mut files = Vec::new();
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
        files = vec![
            out.display().to_string(),
            pub_path.display().to_string(),
            cert_path.display().to_string(),
        ];
    }

    let lifetime = resp.valid_before.saturating_sub(now());
    let mut agent_used = None;
    if let Some(sock) = &cfg.ssh_auth_sock {
        let keypair = key
            .key_data()
            .ed25519()
            .context("generated key is not Ed25519")?;
        let added = Agent::connect(Path::new(sock)).and_then(|mut a| {
            a.add_certificate(
                keypair,
                &cert,
                &resp.key_id,
                lifetime.clamp(1, u32::MAX as u64) as u32,
            )
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

    if args.quiet {
        return Ok(());
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Output {
                cert: &resp,
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
