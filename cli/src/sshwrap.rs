//! `smith ssh [-l LOGIN] [-p PORT] [-o OPTION]... [LOGIN@]HOST [COMMAND]...`: for people
//! who prefer a wrapper to `smith config ssh`. Asks ssh what it will do (`ssh -G`: the
//! host name after `HostName`, the login, the port, the `HostKeyAlias`), makes sure the
//! agent holds a certificate that fits that host as that login ([`crate::target`], the
//! same check as the `Match exec` block), then becomes `ssh` with the same arguments.
//! A host Smith does not manage: ssh runs untouched.
//!
//! Must never: pass anything to a shell, or run ssh after the CA refused (the refusal is
//! what the engineer needs to see).

use crate::config::Effective;
use crate::target::{EnsureHost, SshTarget};
use anyhow::Context;
use std::process::Command;
use std::time::Duration;

pub struct SshArgs {
    pub login: Option<String>,
    pub port: Option<u16>,
    pub options: Vec<String>,
    pub destination: String,
    pub command: Vec<String>,
}

/// The ssh options of `a` (without the destination and command).
fn ssh_options(a: &SshArgs) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(l) = &a.login {
        v.extend(["-l".to_string(), l.clone()]);
    }
    if let Some(p) = a.port {
        v.extend(["-p".to_string(), p.to_string()]);
    }
    for o in &a.options {
        v.extend(["-o".to_string(), o.clone()]);
    }
    v
}

/// What ssh will connect to: `ssh -G`'s `hostname`, `user`, `port` and `hostkeyalias`,
/// else what was typed.
fn resolve(a: &SshArgs) -> SshTarget {
    let (typed_login, typed_host) = match a.destination.rsplit_once('@') {
        Some((l, h)) => (Some(l.to_string()), h.to_string()),
        None => (None, a.destination.clone()),
    };
    let mut t = SshTarget {
        host: typed_host,
        login: a.login.clone().or(typed_login),
        port: a.port.map(|p| p.to_string()),
        host_key_alias: None,
    };
    let out = Command::new("ssh")
        .arg("-G")
        .args(ssh_options(a))
        .arg("--")
        .arg(&a.destination)
        .stdin(std::process::Stdio::null())
        .output();
    let Ok(out) = out else {
        return t;
    };
    if !out.status.success() {
        return t;
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.split_once(' ') {
            Some(("hostname", v)) => t.host = v.to_string(),
            Some(("user", v)) => t.login = Some(v.to_string()),
            Some(("port", v)) => t.port = Some(v.to_string()),
            Some(("hostkeyalias", v)) => t.host_key_alias = Some(v.to_string()),
            _ => {}
        }
    }
    t
}

pub fn run(cfg: &Effective, a: SshArgs) -> anyhow::Result<()> {
    let target = resolve(&a);
    crate::target::ensure(
        cfg,
        EnsureHost {
            target,
            min_valid: Duration::from_secs(300),
            quiet: true,
            ttl: None,
            reason: None,
        },
    )?;
    let mut ssh = Command::new("ssh");
    ssh.args(ssh_options(&a))
        .arg("--")
        .arg(&a.destination)
        .args(&a.command);
    use std::os::unix::process::CommandExt;
    let e = ssh.exec();
    Err(e).context("cannot run ssh")
}
