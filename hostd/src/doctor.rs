//! `smith-host doctor [--json]`: checks every piece a working Smith host needs and
//! says, for each failure, what to do.
//!
//! Owns: the list of checks, one function each (files and modes, sshd drop-in and its
//! inclusion, the principals command's ownership, nsswitch order, PAM lines, modules
//! installed, cache, Smith entries not served because of collisions, daemon, CA, audit).
//! Must never: change anything.

use crate::activate::edits;
use crate::config::{HostConfig, Resolved};
use crate::fsutil::mode_of;
use crate::identity::HostCredentials;
use crate::paths::{relocate, HostPaths};
use serde::Serialize;
use smith_proto::cache::CacheView;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub level: Level,
    pub detail: String,
    /// What to do (empty when ok).
    pub hint: String,
}

struct Checks(Vec<Check>);

impl Checks {
    fn push(
        &mut self,
        name: &str,
        level: Level,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.0.push(Check {
            name: name.into(),
            level,
            detail: detail.into(),
            hint: if level == Level::Ok {
                String::new()
            } else {
                hint.into()
            },
        });
    }
    fn ok(&mut self, name: &str, detail: impl Into<String>) {
        self.push(name, Level::Ok, detail, "");
    }
}

const REACTIVATE: &str = "run `smith-host activate` again (no token needed while enrolled)";

fn check_file(c: &mut Checks, name: &str, p: &Path, want_mode: Option<u32>, hint: &str) -> bool {
    match mode_of(p) {
        None => {
            c.push(
                name,
                Level::Fail,
                format!("{} is missing", p.display()),
                hint,
            );
            false
        }
        Some(m) => {
            if let Some(w) = want_mode {
                if m != w {
                    c.push(
                        name,
                        Level::Fail,
                        format!("{} has mode {m:04o}, expected {w:04o}", p.display()),
                        format!("chmod {w:04o} {}", p.display()),
                    );
                    return false;
                }
            } else if m & 0o022 != 0 {
                c.push(
                    name,
                    Level::Fail,
                    format!("{} is writable by group or others ({m:04o})", p.display()),
                    format!("chmod go-w {}", p.display()),
                );
                return false;
            }
            c.ok(name, format!("{} ({m:04o})", p.display()));
            true
        }
    }
}

/// Candidate install locations of the modules (Debian multiarch, RPM lib64).
pub(crate) fn module_candidates(root: &Path, name: &str) -> Vec<std::path::PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu",
        "/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/lib64",
        "/usr/lib",
    ]
    .iter()
    .map(|d| relocate(root, format!("{d}/{name}")))
    .collect()
}

pub fn run(r: &Resolved) -> Vec<Check> {
    let p: &HostPaths = &r.paths;
    let mut c = Checks(Vec::new());
    let Some(cfg) = check_config(&mut c, r) else {
        return c.0;
    };
    let creds = crate::identity::load_credentials(&p.ca_bundle, &p.host_cert, &p.host_key);
    check_credentials(&mut c, p, cfg, &creds);
    check_user_ca_keys(&mut c, p);
    check_krl(&mut c, p);
    check_sshd(&mut c, p);
    check_nsswitch(&mut c, p);
    check_pam(&mut c, p);
    check_modules(&mut c, p);
    check_cache(&mut c, p);
    check_collisions(&mut c, p);
    check_held_removals(&mut c, p);
    check_snapshot(&mut c, p);
    check_daemon(&mut c, p);
    if let Ok(cr) = &creds {
        check_ca(&mut c, p, cfg, cr);
    }
    check_ca_enrollment(&mut c, p);
    check_host_certs(&mut c, p);
    check_audit(&mut c, p);
    check_spool_quota(&mut c, p);
    check_sudoers(&mut c, p);
    check_sudo_plugins(&mut c, p);
    check_certificate_only(&mut c, p);
    c.0
}

/// `host.toml`: without it the host is not enrolled and nothing else is checked.
fn check_config<'a>(c: &mut Checks, r: &'a Resolved) -> Option<&'a HostConfig> {
    let p = &r.paths;
    let Some(cfg) = &r.config else {
        c.push(
            "config",
            Level::Fail,
            format!(
                "{} is missing: this host is not enrolled",
                p.config.display()
            ),
            "smith-host activate --ca URL --token T --ca-fingerprint SHA256:...",
        );
        return None;
    };
    c.ok(
        "config",
        format!(
            "{} (host {}, CA {})",
            p.config.display(),
            cfg.host_name,
            cfg.ca_urls().join(", ")
        ),
    );
    Some(cfg)
}

/// The host key, the mTLS client certificate (validity, name, key match, renewal) and
/// the pinned CA root.
fn check_credentials(
    c: &mut Checks,
    p: &HostPaths,
    cfg: &HostConfig,
    creds: &Result<HostCredentials, String>,
) {
    check_file(c, "host key", &p.host_key, Some(0o600), REACTIVATE);
    match creds {
        Err(e) => c.push("client certificate", Level::Fail, e.clone(), REACTIVATE),
        Ok(cr) => {
            let now = crate::now_unix();
            let key_ok = String::from_utf8(cr.identity.key_pem.clone())
                .ok()
                .and_then(|k| crate::identity::key_matches_cert(&k, &cr.identity.cert_pem).ok())
                .unwrap_or(false);
            if cr.cert.not_after <= now {
                c.push(
                "client certificate",
                Level::Fail,
                format!(
                    "{} (expired {})",
                    crate::refusal::EXPIRED_ADVICE,
                    crate::status::when(cr.cert.not_after)
                ),
                "ask the admin for a token (smith-ca admin host token --tags ...), then smith-host activate --token T",
            );
            } else if !cr.cert.is_valid_at(now) {
                c.push(
                    "client certificate",
                    Level::Fail,
                    format!(
                        "not valid yet (valid from {}): is this host's clock right?",
                        crate::status::when(cr.cert.not_before)
                    ),
                    "fix the clock (timedatectl / chrony), then smith-host doctor",
                );
            } else if cr.cert.common_name.as_deref() != Some(cfg.host_name.as_str()) {
                c.push(
                    "client certificate",
                    Level::Fail,
                    format!("names {:?}, not {}", cr.cert.common_name, cfg.host_name),
                    REACTIVATE,
                );
            } else if !key_ok {
                c.push(
                    "client certificate",
                    Level::Fail,
                    "host.key does not match host.crt",
                    "re-enroll with a new token",
                );
            } else if now >= cr.cert.renew_at() {
                c.push(
                    "client certificate",
                    Level::Warn,
                    format!(
                        "past its renewal time; expires {}",
                        crate::status::when(cr.cert.not_after)
                    ),
                    "check that smith-hostd runs and that the CA offers renewal",
                );
            } else {
                c.ok(
                    "client certificate",
                    format!("valid until {}", crate::status::when(cr.cert.not_after)),
                );
            }
            match &cfg.ca_fingerprint {
                Some(fp)
                    if smith_api::tls::parse_fingerprint(fp).ok()
                        != smith_api::tls::parse_fingerprint(&cr.root_fingerprint).ok() =>
                {
                    c.push(
                        "CA root",
                        Level::Fail,
                        format!(
                            "{} has fingerprint {}, host.toml pins {fp}",
                            p.ca_bundle.display(),
                            cr.root_fingerprint
                        ),
                        REACTIVATE,
                    )
                }
                _ => c.ok(
                    "CA root",
                    format!("{} ({})", p.ca_bundle.display(), cr.root_fingerprint),
                ),
            }
        }
    }
}

/// sshd's `TrustedUserCAKeys` file: present, root's, with at least one valid key.
fn check_user_ca_keys(c: &mut Checks, p: &HostPaths) {
    if check_file(c, "user CA keys", &p.user_ca_keys, None, REACTIVATE) {
        let text = std::fs::read_to_string(&p.user_ca_keys).unwrap_or_default();
        let keys: Vec<String> = text.lines().map(str::to_string).collect();
        let (valid, refused) = crate::trust::render_user_ca_keys(&keys);
        if valid.is_empty() {
            c.push(
                "user CA keys content",
                Level::Fail,
                "no valid key: no certificate can log in",
                "check that smith-hostd syncs (smith-host status)",
            );
        } else if !refused.is_empty() {
            c.push(
                "user CA keys content",
                Level::Warn,
                format!("invalid lines: {}", refused.join("; ")),
                "let smith-hostd rewrite it (smith-host sync)",
            );
        }
    }
}

/// sshd's `RevokedKeys` file.
fn check_krl(c: &mut Checks, p: &HostPaths) {
    check_file(c, "KRL", &p.revoked_keys, None, "sshd refuses every public key login when its RevokedKeys file is missing: run `smith-host activate` again");
}

/// The principals files sshd reads as the logging-in user: the directory must be
/// root-owned, not writable by others, and readable by everyone.
fn check_principals_dir(c: &mut Checks, p: &HostPaths) {
    use std::os::unix::fs::MetadataExt;
    let dir = &p.principals_dir;
    match std::fs::metadata(dir) {
        Ok(m) if m.uid() == 0 && m.mode() & 0o022 == 0 && m.mode() & 0o005 == 0o005 => {
            let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
            c.ok(
                "principals files",
                format!("{} ({n} login names)", dir.display()),
            )
        }
        Ok(m) => c.push(
            "principals files",
            Level::Fail,
            format!(
                "{} is mode {:o}, owner uid {}: sshd refuses principals files another user can \
                 write, and cannot read them when others cannot",
                dir.display(),
                m.mode() & 0o7777,
                m.uid()
            ),
            format!("chown root {0} && chmod 0755 {0}", dir.display()),
        ),
        Err(e) => c.push(
            "principals files",
            Level::Warn,
            format!("{}: {e}", dir.display()),
            "smith-hostd writes them at its first sync; check `smith-host status`",
        ),
    }
}

/// The drop-in, its inclusion in sshd_config, and the principals files.
fn check_sshd(c: &mut Checks, p: &HostPaths) {
    let dropin = std::fs::read_to_string(&p.sshd_dropin).unwrap_or_default();
    if check_file(c, "sshd drop-in", &p.sshd_dropin, None, REACTIVATE) {
        for kw in [
            "TrustedUserCAKeys",
            "RevokedKeys",
            "AuthorizedPrincipalsFile ",
            "Match Group smith-users",
        ] {
            if !dropin.lines().any(|l| l.starts_with(kw)) {
                c.push(
                    "sshd drop-in content",
                    Level::Fail,
                    format!("{} has no {kw} line", p.sshd_dropin.display()),
                    REACTIVATE,
                );
            }
        }
        match std::fs::read_to_string(&p.sshd_config) {
            Ok(t) if edits::sshd_includes(&t, &p.logical(&p.sshd_dropin), &p.sshd_dropin) => {
                c.ok("sshd includes drop-in", p.sshd_config.display().to_string())
            }
            Ok(_) => c.push(
                "sshd includes drop-in",
                Level::Fail,
                format!(
                    "{} does not include {}",
                    p.sshd_config.display(),
                    p.sshd_dropin.display()
                ),
                REACTIVATE,
            ),
            Err(e) => c.push(
                "sshd includes drop-in",
                Level::Fail,
                format!("cannot read {}: {e}", p.sshd_config.display()),
                "is openssh-server installed?",
            ),
        }
        check_principals_dir(c, p);
    }
}

/// `passwd:` and `group:` list smith after files.
fn check_nsswitch(c: &mut Checks, p: &HostPaths) {
    match std::fs::read_to_string(&p.nsswitch) {
        Ok(t) if edits::nss_is_configured(&t) => {
            c.ok("nsswitch", "passwd and group list smith after files")
        }
        Ok(_) => c.push(
            "nsswitch",
            Level::Fail,
            format!(
                "{} does not list smith after files for passwd and group",
                p.nsswitch.display()
            ),
            REACTIVATE,
        ),
        Err(e) => c.push(
            "nsswitch",
            Level::Fail,
            format!("cannot read {}: {e}", p.nsswitch.display()),
            REACTIVATE,
        ),
    }
}

/// The pam_smith lines in sshd's and sudo's stacks.
fn check_pam(c: &mut Checks, p: &HostPaths) {
    for (name, path, lines, required) in [
        ("PAM sshd", &p.pam_sshd, edits::pam_lines_sshd(), true),
        ("PAM sudo", &p.pam_sudo, edits::pam_lines_sudo(), false),
    ] {
        match std::fs::read_to_string(path) {
            Ok(t) if edits::pam_is_configured(&t, &lines) => {
                c.ok(name, format!("{} has the pam_smith lines", path.display()))
            }
            Ok(_) => c.push(
                name,
                Level::Fail,
                format!("{} lacks pam_smith account/session lines", path.display()),
                REACTIVATE,
            ),
            Err(_) if !required => c.push(
                name,
                Level::Warn,
                format!("{} is missing (sudo not installed?)", path.display()),
                "install sudo, then run `smith-host activate` again",
            ),
            Err(e) => c.push(
                name,
                Level::Fail,
                format!("cannot read {}: {e}", path.display()),
                "is openssh-server installed?",
            ),
        }
    }
}

/// The two modules are installed where glibc and libpam look.
fn check_modules(c: &mut Checks, p: &HostPaths) {
    for (name, file, hint) in [
        (
            "NSS module",
            "libnss_smith.so.2",
            "install libnss_smith.so.2 in the system library directory (package smith-host)",
        ),
        (
            "PAM module",
            "security/pam_smith.so",
            "install pam_smith.so in the PAM module directory (package smith-host)",
        ),
    ] {
        let found = module_candidates(&p.root, file)
            .into_iter()
            .find(|c| c.exists());
        match found {
            Some(f) => c.ok(name, f.display().to_string()),
            None => c.push(
                name,
                Level::Warn,
                format!("{file} not found in the usual library directories"),
                hint,
            ),
        }
    }
}

/// The NSS cache file.
fn check_cache(c: &mut Checks, p: &HostPaths) {
    match crate::cachefile::read_valid(&p.cache_file) {
        Ok(Some(b)) => {
            let v = CacheView::parse(&b).ok();
            let mode_ok = mode_of(&p.cache_file) == Some(0o644);
            match v {
                Some(v) if mode_ok => c.ok(
                    "cache",
                    format!(
                        "{} (version {}, {} users, written {})",
                        p.cache_file.display(),
                        v.snapshot_version(),
                        v.n_users(),
                        crate::status::when(v.written_at())
                    ),
                ),
                _ => c.push(
                    "cache",
                    Level::Fail,
                    format!(
                        "{} is not mode 0644: processes cannot read it",
                        p.cache_file.display()
                    ),
                    format!("chmod 0644 {}", p.cache_file.display()),
                ),
            }
        }
        Ok(None) => c.push(
            "cache",
            Level::Fail,
            format!(
                "{} is missing: Smith users cannot be resolved",
                p.cache_file.display()
            ),
            "start smith-hostd and check that it syncs (smith-host status)",
        ),
        Err(e) => c.push(
            "cache",
            Level::Fail,
            e,
            "restart smith-hostd; it rewrites the cache from its last snapshot",
        ),
    }
}

/// Smith users and groups not served because they collide with this host's own ids or
/// names (local accounts, subordinate id ranges, other NSS sources), each with what to do.
fn check_collisions(c: &mut Checks, p: &HostPaths) {
    let skipped = crate::status::skipped(p);
    if skipped.is_empty() {
        c.ok(
            "collisions",
            "no Smith user or group collides with this host's ids or names",
        );
        return;
    }
    for k in &skipped {
        c.push(
            "collisions",
            Level::Warn,
            format!("Smith {} '{}' is not served here", k.kind, k.name),
            k.reason.clone(),
        );
    }
}

/// sudo.conf loads Smith's audit and approval plugins from a file that exists (a
/// Plugin line whose file is missing stops sudo for everyone).
fn check_sudo_plugins(c: &mut Checks, p: &HostPaths) {
    let Ok(text) = std::fs::read_to_string(&p.sudo_conf) else {
        c.push(
            "sudo plugins",
            Level::Warn,
            format!("{} is missing", p.sudo_conf.display()),
            "sudo decisions PAM does not see are not recorded; reinstall sudo, then run smith-host activate",
        );
        return;
    };
    let mut found = Vec::new();
    for (name, file) in crate::activate::edits::sudo_conf_plugins(&text) {
        if !matches!(name, "smith_audit" | "smith_approval") {
            continue;
        }
        if !crate::paths::relocate(&p.root, file).is_file() {
            c.push(
                "sudo plugins",
                Level::Fail,
                format!(
                    "{} loads {name} from {file}, which does not exist: sudo cannot run",
                    p.sudo_conf.display()
                ),
                "reinstall smith-host (pam_smith.so), or run smith-host deactivate",
            );
            return;
        }
        found.push(name);
    }
    if found.contains(&"smith_audit") && found.contains(&"smith_approval") {
        c.ok(
            "sudo plugins",
            "smith_audit and smith_approval are loaded by sudo",
        );
    } else {
        c.push(
            "sudo plugins",
            Level::Warn,
            format!("{} does not load smith_audit and smith_approval", p.sudo_conf.display()),
            "sudoers' own refusals are not recorded and sudo rules are not checked per certificate; run smith-host activate",
        );
    }
}

/// Losses of access hostd held rather than ended (new CA epoch, mass removal).
fn check_held_removals(c: &mut Checks, p: &HostPaths) {
    let held = crate::state::load_sync_status(&p.sync_status_file)
        .map(|s| s.held_removals)
        .unwrap_or_default();
    let mut any = false;
    for h in &held {
        let running = crate::removal::held_running(&p.proc_root, h);
        if running == 0 {
            continue;
        }
        any = true;
        c.push(
            "removals",
            Level::Warn,
            format!(
                "{} lost access but {running} of their processes still run (held: {})",
                h.user, h.reason
            ),
            format!(
                "check the CA (a restored backup?); end them with `smith-host terminate {}`",
                h.user
            ),
        );
    }
    if !any {
        c.ok(
            "removals",
            "no process runs for a user who lost access here",
        );
    }
}

/// The stored snapshot.
fn check_snapshot(c: &mut Checks, p: &HostPaths) {
    match crate::state::load_state(&p.state_file) {
        Ok(Some(s)) => c.ok(
            "snapshot",
            format!("version {}, {} users", s.version, s.users.len()),
        ),
        Ok(None) => c.push(
            "snapshot",
            Level::Warn,
            "no snapshot stored yet",
            "start smith-hostd; it stores one after its first sync",
        ),
        Err(e) => c.push(
            "snapshot",
            Level::Fail,
            e.to_string(),
            "smith-hostd resyncs on start; check its logs",
        ),
    }
}

/// smith-hostd answers on its socket.
fn check_daemon(c: &mut Checks, p: &HostPaths) {
    match crate::localclient::ping(&p.socket) {
        Ok((v, users, _)) => c.ok(
            "daemon",
            format!(
                "answering on {} (version {v}, {users} users)",
                p.socket.display()
            ),
        ),
        Err(e) => c.push(
            "daemon",
            Level::Fail,
            e,
            format!(
                "start it: {} (or systemctl start smith-hostd)",
                crate::service::hostd_command(p)
            ),
        ),
    }
}

/// The CA accepts this host, over mTLS, as the daemon talks to it: each replica of
/// `ca_urls` asked on its own (one that does not answer is a warning while another
/// does), and which one the daemon uses (from `sync-status.json`).
fn check_ca(c: &mut Checks, p: &HostPaths, cfg: &HostConfig, cr: &HostCredentials) {
    let version = crate::state::load_state(&p.state_file)
        .ok()
        .flatten()
        .map(|s| s.version)
        .unwrap_or(0);
    let urls = cfg.ca_urls();
    let several = urls.len() > 1;
    let mut answering = 0;
    let mut failures = Vec::new();
    for url in &urls {
        let client = smith_api::Client::new(smith_api::ClientOptions {
            identity: Some(cr.identity.clone()),
            timeout: std::time::Duration::from_secs(10),
            unreachable_hint: Some(smith_api::client::CLI_UNREACHABLE_HINT),
            ..smith_api::ClientOptions::new(url.clone(), cr.trust.clone())
        });
        let result = client.and_then(|cl| {
            cl.sync(&crate::syncclient::sync_query(
                version.max(1),
                0,
                &cfg.host_name,
                None,
            ))
        });
        let name = if several {
            format!("CA {url}")
        } else {
            "CA".to_string()
        };
        match result {
            Ok(_) => {
                answering += 1;
                c.ok(&name, format!("{url} accepts this host (mTLS sync)"));
            }
            Err(e) => match crate::refusal::classify_api(&e) {
                Some(kind) => c.push(
                    &name,
                    Level::Fail,
                    format!("{} (the CA said: {e})", kind.advice()),
                    match kind {
                        crate::refusal::RefusalKind::HostRemoved => "smith-host deactivate, or smith-host activate --token T with a new token from `smith-ca admin host token`",
                        crate::refusal::RefusalKind::ClientCertExpired
                        | crate::refusal::RefusalKind::ClientCertSuperseded
                        | crate::refusal::RefusalKind::HostIdentityForked => "smith-host activate --token T with a new token from `smith-ca admin host token`",
                    },
                ),
                None => failures.push((name, e.to_string())),
            },
        }
    }
    for (name, e) in failures {
        if answering > 0 {
            c.push(&name, Level::Warn, format!("this replica does not answer ({e}); smith-hostd uses the others"), "check that replica (`smith-ca serve` running, GET /v1/health/ready) and the network path to it");
        } else {
            c.push(&name, Level::Fail, e, "check the network path to the CA and that the host was not removed (smith-ca admin host list)");
        }
    }
    if several {
        if let Some(st) = crate::state::load_sync_status(&p.sync_status_file) {
            if let Some(u) = st.ca_url_in_use {
                c.ok(
                    "CA replica",
                    format!(
                        "smith-hostd uses {u} ({} failovers since it started)",
                        st.ca_failovers
                    ),
                );
            }
        }
    }
}

/// What hostd last heard from the CA (also when the CA is not reachable now).
fn check_ca_enrollment(c: &mut Checks, p: &HostPaths) {
    if let Some(r) = crate::state::load_sync_status(&p.sync_status_file).and_then(|s| s.ca_refusal)
    {
        c.push(
            "CA enrollment",
            Level::Fail,
            format!(
                "{} (smith-hostd was refused since {}: {} {})",
                r.kind.advice(),
                crate::status::when(r.since),
                r.code,
                r.message
            ),
            "smith-host deactivate, or smith-host activate --token T with a new token",
        );
    }
}

/// SSH host certificates (sshd's HostCertificate), renewed by smith-hostd.
fn check_host_certs(c: &mut Checks, p: &HostPaths) {
    for h in crate::status::host_certs(p, crate::now_unix()) {
        let name = "SSH host certificate";
        match (h.state.as_str(), h.valid_before) {
        ("valid", Some(t)) => c.ok(name, format!("{}: valid until {}", h.path, crate::status::when(t))),
        ("due", Some(t)) => c.push(
            name,
            Level::Warn,
            format!("{}: past 2/3 of its lifetime, valid until {}", h.path, crate::status::when(t)),
            "smith-hostd renews it with its client certificate; check that it runs and reaches the CA",
        ),
        (st, _) => c.push(
            name,
            Level::Fail,
            format!("{}: {st}; ssh clients trusting the host CA cannot verify this host", h.path),
            "smith-hostd gets a new one at its next renewal; check that it runs and reaches the CA (smith-host status)",
        ),
    }
    }
}

/// The audit trail: chain agreement, rejections, backlog.
fn check_audit(c: &mut Checks, p: &HostPaths) {
    let (pending, acked, up) = crate::daemon::upload::summarize(p);
    let up = up.unwrap_or_default();
    if let Some(f) = &up.fork {
        c.push(
        "audit",
        Level::Fail,
        format!("this host's audit chain and the CA's disagree: {f}"),
        "uploading is stopped and the spool is kept; compare the spool with `smith-ca admin audit list --host` before changing anything",
    );
    } else if let Some(r) = &up.rejection {
        c.push(
        "audit",
        Level::Fail,
        format!(
            "the CA rejected audit record {} ({}): {}; {pending} record(s) wait in the spool",
            r.seq, r.code, r.message
        ),
        "a spooled record was altered or lost; the spool is kept as evidence: inspect it and `smith-ca admin audit rejections`",
    );
    } else if pending > 1000 {
        c.push(
            "audit",
            Level::Warn,
            format!(
                "{pending} audit record(s) not yet uploaded (acknowledged through {}){}",
                acked.acked_through,
                up.last_error
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ),
            "check that the CA is reachable; records are kept until it acknowledges them",
        );
    } else {
        c.ok(
            "audit",
            format!(
                "{pending} record(s) waiting, acknowledged through {}",
                acked.acked_through
            ),
        );
    }
}

/// Events from sshd's log dropped because the spool was over its quota.
fn check_spool_quota(c: &mut Checks, p: &HostPaths) {
    let q = crate::daemon::events::load_quota(p);
    if q.dropped > 0 {
        c.push(
            "audit spool quota",
            Level::Warn,
            format!(
                "{} event(s) from sshd's log were dropped (last {}): the spool was over its {} MiB quota",
                q.dropped,
                q.last_dropped_unix.map(crate::status::when).unwrap_or_default(),
                q.quota_bytes >> 20
            ),
            "check why the CA does not acknowledge the backlog (smith-host status); a flood of log lines means a local user writes to sshd's log: use sshd_log = \"journal\"",
        );
    }
}

/// `/etc/sudoers.d/smith` passes visudo.
fn check_sudoers(c: &mut Checks, p: &HostPaths) {
    if p.sudoers.exists() {
        match crate::sudoers::visudo() {
            Some(v) => {
                let ok = std::process::Command::new(v)
                    .arg("-cf")
                    .arg(&p.sudoers)
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    c.ok("sudoers", p.sudoers.display().to_string());
                } else {
                    c.push(
                        "sudoers",
                        Level::Fail,
                        format!("visudo refuses {}", p.sudoers.display()),
                        REACTIVATE,
                    );
                }
            }
            None => c.push("sudoers", Level::Warn, "visudo not found", "install sudo"),
        }
    }
}

/// What sshd's effective settings for a Smith user must be: nothing but a certificate.
const CERTIFICATE_ONLY: &[(&str, &str)] = &[
    ("authorizedkeysfile", "none"),
    ("authenticationmethods", "publickey"),
    ("passwordauthentication", "no"),
    ("kbdinteractiveauthentication", "no"),
    ("gssapiauthentication", "no"),
    ("hostbasedauthentication", "no"),
];

/// The settings in `sshd -T` output that let a Smith user around the certificate.
pub fn certificate_only_problems(sshd_t: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (key, want) in CERTIFICATE_ONLY {
        let got = sshd_t
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
            .map(str::trim);
        match got {
            Some(v) if v.eq_ignore_ascii_case(want) => {}
            // Not printed by this sshd (e.g. no GSSAPI support built in): nothing to open.
            None if *key == "gssapiauthentication" => {}
            other => out.push(format!("{key} {}", other.unwrap_or("(unset)"))),
        }
    }
    out
}

/// sshd's effective configuration for one Smith user of this host (`sshd -T -C`): a Smith
/// user must reach the host with a certificate only. Skipped while no Smith user is served
/// or without sshd.
fn check_certificate_only(c: &mut Checks, p: &HostPaths) {
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.exists() || p.is_relocated() {
        return;
    }
    let Some(user) = crate::cachefile::read_valid(&p.cache_file)
        .ok()
        .flatten()
        .and_then(|b| {
            let v = CacheView::parse(&b).ok()?;
            let u = v.user(0).ok()?;
            String::from_utf8(u.name.to_vec()).ok()
        })
    else {
        return;
    };
    let out = std::process::Command::new(sshd)
        .arg("-T")
        .arg("-f")
        .arg(&p.sshd_config)
        .arg("-C")
        .arg(format!("user={user},host=localhost,addr=127.0.0.1"))
        .output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            return c.push(
                "certificate only",
                Level::Warn,
                format!(
                    "sshd -T -C user={user} failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                "check the sshd configuration with `sshd -t`",
            )
        }
        Err(e) => {
            return c.push(
                "certificate only",
                Level::Warn,
                format!("cannot run sshd -T: {e}"),
                "check the sshd configuration with `sshd -t`",
            )
        }
    };
    let problems = certificate_only_problems(&text);
    if problems.is_empty() {
        c.ok(
            "certificate only",
            format!("sshd lets Smith users ({user}, ...) in with a certificate only"),
        );
    } else {
        c.push(
            "certificate only",
            Level::Fail,
            format!(
                "sshd lets Smith users (e.g. {user}) around the certificate: {}",
                problems.join(", ")
            ),
            "a setting for them comes before Smith's drop-in (sshd uses the first value it \
             reads): remove it, or run `smith-host activate` again so the drop-in is included \
             first",
        );
    }
}

pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for ch in checks {
        let tag = match ch.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        out.push_str(&format!("[{tag}] {}: {}\n", ch.name, ch.detail));
        if !ch.hint.is_empty() {
            out.push_str(&format!("       -> {}\n", ch.hint));
        }
    }
    let fails = checks.iter().filter(|c| c.level == Level::Fail).count();
    out.push_str(&if fails == 0 {
        "All checks passed.\n".to_string()
    } else {
        format!("{fails} check(s) failed.\n")
    });
    out
}
