//! `smith config ssh`: trust the CA's host certificates and renew the user certificate
//! before connecting, in the engineer's own OpenSSH files.
//!
//! - `~/.ssh/known_hosts`: one `@cert-authority PATTERNS KEY smith-ca <CA URL>` line per
//!   host CA key (`GET /v1/ca/host-keys`, pinned TLS), so `ssh` verifies Smith hosts by
//!   their host certificates instead of asking to trust them on first use.
//! - `~/.ssh/config`: a block between `# BEGIN smith` and `# END smith`, appended at the
//!   end of the file:
//!   `Match host PATTERNS exec "/path/to/smith cert --ensure --quiet"` then `Host *`.
//!   Before it, `Match host PATTERNS` sets `RevokedHostKeys ~/.ssh/smith_revoked_host_keys`
//!   (see [`crate::hostkrl`]), outside the exec's Match so that it holds even when the
//!   exec fails. The exec's Match sets no option: its only effect is the `exec`, which ssh runs while
//!   reading its configuration (before it authenticates), so its place in the file does
//!   not matter for option precedence ("first obtained value wins"); the end is chosen so
//!   that it never captures the user's global options, and the trailing `Host *` ends it
//!   so lines added after it later stay global.
//!
//! - `~/.ssh/smith_revoked_host_keys`: the CA's list of revoked host certificates.
//!
//! The patterns are `--hosts`, else `ssh_hosts` from the config file, else the names the
//! CA certifies hosts for (`GET /v1/ca/host-keys`: enrolled hosts' names and what
//! enrollment tokens allow, e.g. `*.prod.example.com`), never `*` by default: a host CA
//! trusted for every name would let a host certificate speak for any server.
//!
//! Owns: those lines only. Idempotent (a second run changes nothing), `--remove` takes
//! them out again, `--dry-run` only shows. Must never: change a line outside its marked
//! lines, replace a symlinked file by a regular file (the link's target is written), or
//! loosen a file's mode (existing modes are kept; new files are 0600 in a 0700 `~/.ssh`).

use crate::config::Effective;
use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub const BEGIN: &str = "# BEGIN smith";
pub const END: &str = "# END smith";
/// The comment that marks our known_hosts lines: `smith-ca <url>`.
pub const MARK: &str = "smith-ca";

pub struct SshArgs {
    pub hosts: Vec<String>,
    pub dry_run: bool,
    pub remove: bool,
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct FileChange {
    pub path: String,
    pub changed: bool,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub remove: bool,
    pub ca_url: Option<String>,
    pub patterns: Vec<String>,
    pub known_hosts: FileChange,
    pub ssh_config: FileChange,
}

/// A host pattern as ssh_config(5) `PATTERNS` and known_hosts accept it.
fn check_pattern(p: &str) -> anyhow::Result<()> {
    let ok = !p.is_empty()
        && p.len() <= 255
        && p.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '*' | '?' | '.' | '-' | '_' | '!' | ':' | '[' | ']')
        });
    if !ok {
        anyhow::bail!(
            "host pattern '{}' is not valid: use names and wildcards like *.example.com, 10.0.0.* or !bastion (no spaces, commas or quotes)",
            p.escape_debug()
        );
    }
    Ok(())
}

/// Splits text into lines (without their `\n`), remembering whether it ended with one.
fn lines_of(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    text.strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .map(str::to_string)
        .collect()
}

fn join(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// Whether a known_hosts line is ours (for `url`, or for any Smith CA when `None`).
fn is_ours(line: &str, url: Option<&str>) -> bool {
    let t = line.trim();
    if !t.starts_with("@cert-authority") {
        return false;
    }
    let mut f = t.split_whitespace();
    // marker, patterns, key type, key, comment...
    let comment: Vec<&str> = f.by_ref().skip(4).collect();
    match (comment.as_slice(), url) {
        ([m, u], Some(url)) => *m == MARK && u.trim_end_matches('/') == url.trim_end_matches('/'),
        ([m, _], None) => *m == MARK,
        _ => false,
    }
}

/// The new known_hosts text: our lines replaced (where the first one was) or appended.
pub fn update_known_hosts(text: &str, url: Option<&str>, ours: &[String]) -> String {
    let mut out = Vec::new();
    let mut placed = false;
    for l in lines_of(text) {
        if is_ours(&l, url) {
            if !placed {
                out.extend(ours.iter().cloned());
                placed = true;
            }
            continue;
        }
        out.push(l);
    }
    if !placed {
        out.extend(ours.iter().cloned());
    }
    join(&out)
}

/// The new ssh config text: our block replaced in place, or appended (after a blank
/// line); removed when `block` is empty (with the blank line we put before it).
pub fn update_ssh_config(text: &str, block: &[String]) -> String {
    let lines = lines_of(text);
    let begin = lines.iter().position(|l| l.trim() == BEGIN);
    let end = begin.and_then(|b| {
        lines[b..]
            .iter()
            .position(|l| l.trim() == END)
            .map(|e| b + e)
    });
    let mut out: Vec<String>;
    match (begin, end) {
        (Some(b), Some(e)) => {
            out = lines[..b].to_vec();
            let at_end = e + 1 == lines.len();
            if block.is_empty() && at_end && out.last().is_some_and(|l| l.trim().is_empty()) {
                out.pop();
            }
            out.extend(block.iter().cloned());
            out.extend(lines[e + 1..].iter().cloned());
        }
        _ => {
            out = lines;
            if !block.is_empty() {
                if out.last().is_some_and(|l| !l.trim().is_empty()) {
                    out.push(String::new());
                }
                out.extend(block.iter().cloned());
            }
        }
    }
    join(&out)
}

/// Quotes a word for the shell ssh runs `exec` commands with, and escapes `%` (ssh
/// expands `%` tokens in `exec`).
fn shell_word(s: &str) -> anyhow::Result<String> {
    if s.contains('"') || s.contains('\n') {
        anyhow::bail!("'{}' cannot appear in ~/.ssh/config", s.escape_debug());
    }
    let plain = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | '=' | ':'));
    let w = if plain && !s.is_empty() {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    };
    Ok(w.replace('%', "%%"))
}

/// A path as one ssh_config argument: double-quoted when it holds a space, `%`
/// escaped (ssh expands `%` tokens in file options).
fn config_path_word(p: &Path) -> anyhow::Result<String> {
    let s = p.to_string_lossy();
    if s.contains('"') || s.contains('\n') || s.contains('\\') {
        anyhow::bail!("'{}' cannot appear in ~/.ssh/config", s.escape_debug());
    }
    let s = s.replace('%', "%%");
    Ok(if s.contains(' ') || s.contains('\t') {
        format!("\"{s}\"")
    } else {
        s
    })
}

/// Patterns that keep a name or login holding a character that could end the quoting
/// of `%h`/`%r` in the `exec` command (`'`, and `\` for shells such as fish that read
/// escapes inside single quotes) from ever reaching it: ssh skips the `exec` of a `Match`
/// whose earlier criterion failed, and a matching negated pattern fails the criterion.
const UNQUOTABLE: &str = "!*'*,!*\\*";

/// The `# BEGIN smith` ... `# END smith` block. `host_key_alias`: pass ssh's `%k` too
/// (OpenSSH 8.4 and later know it in `Match exec`; older ones stop at an unknown token).
pub fn render_block(
    patterns: &[String],
    smith: &Path,
    profile: Option<&str>,
    url: &str,
    revoked_host_keys: &Path,
    host_key_alias: bool,
) -> anyhow::Result<Vec<String>> {
    let mut cmd = shell_word(&smith.to_string_lossy())?;
    if let Some(p) = profile {
        cmd.push_str(&format!(" --profile {}", shell_word(p)?));
    }
    // %h and %r arrive unescaped from ssh (its command line, an included config): they
    // are single-quoted here, and the Match criteria before the exec let no value that
    // could end those quotes through.
    cmd.push_str(" cert --ensure --quiet --host='%h' --login='%r' --port=%p");
    if host_key_alias {
        cmd.push_str(" --host-key-alias='%k'");
    }
    Ok(vec![
        BEGIN.to_string(),
        format!("# Written by `smith config ssh` for the CA at {url}; `smith config ssh --remove` takes it out."),
        "# ssh refuses a host certificate the CA revoked (the list is at most a minute old).".to_string(),
        format!("Match host {}", patterns.join(",")),
        format!("    RevokedHostKeys {}", config_path_word(revoked_host_keys)?),
        "# Before ssh connects to these hosts, it makes sure the agent holds a Smith certificate that fits the host and login.".to_string(),
        format!(
            "Match host \"{},{UNQUOTABLE}\" user \"*,{UNQUOTABLE}\" exec \"{cmd}\"",
            patterns.join(",")
        ),
        "Host *".to_string(),
        END.to_string(),
    ])
}

/// Whether the ssh on the PATH knows `%k` in `Match exec` (OpenSSH 8.4 and later); false
/// when it cannot be told.
pub fn ssh_knows_host_key_alias_token() -> bool {
    let Ok(out) = std::process::Command::new("ssh")
        .arg("-V")
        .stdin(std::process::Stdio::null())
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stderr);
    openssh_at_least(&text, (8, 4))
}

/// Whether `ssh -V`'s text names OpenSSH `min` or later.
fn openssh_at_least(version: &str, min: (u32, u32)) -> bool {
    let Some(v) = version
        .split_whitespace()
        .find_map(|w| w.strip_prefix("OpenSSH_"))
    else {
        return false;
    };
    let digits = |s: &str| -> Option<u32> {
        s.chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .ok()
    };
    let mut parts = v.splitn(2, '.');
    match (parts.next().and_then(digits), parts.next().and_then(digits)) {
        (Some(major), Some(minor)) => (major, minor) >= min,
        _ => false,
    }
}

/// The known_hosts lines for the host CA keys.
pub fn render_known_hosts(
    patterns: &[String],
    keys: &[String],
    url: &str,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for k in keys {
        let key = ssh_key::PublicKey::from_openssh(k.trim()).with_context(|| {
            format!("the CA sent a host CA key that is not an OpenSSH public key: {k}")
        })?;
        let mut key = key.clone();
        key.set_comment("");
        let text = key.to_openssh()?;
        out.push(format!(
            "@cert-authority {} {} {MARK} {}",
            patterns.join(","),
            text.trim(),
            url.trim_end_matches('/')
        ));
    }
    if out.is_empty() {
        anyhow::bail!("the CA has no host CA key to trust");
    }
    Ok(out)
}

/// For `smith cert --ensure`: when `smith config ssh` wrote host CA lines for this CA
/// in `~/.ssh/known_hosts`, rewrite them with the CA's current host CA keys (during a
/// host CA rotation the CA publishes the new key beside the old one, and every engineer
/// running ssh picks it up before hosts switch to it), keeping their patterns. Returns
/// whether the file changed; never touches a known_hosts without our lines.
pub fn refresh_host_ca_keys(cfg: &Effective) -> anyhow::Result<bool> {
    let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
        return Ok(false);
    };
    let kh_path = PathBuf::from(home).join(".ssh").join("known_hosts");
    let Ok(old) = std::fs::read_to_string(&kh_path) else {
        return Ok(false);
    };
    let url = cfg.ca_url()?.trim_end_matches('/').to_string();
    let Some(patterns) = lines_of(&old)
        .iter()
        .find(|l| is_ours(l, Some(&url)))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
    else {
        return Ok(false);
    };
    let patterns: Vec<String> = patterns.split(',').map(str::to_string).collect();
    let keys = cfg
        .client_with_timeout(None, crate::hostkrl::FETCH_TIMEOUT)?
        .host_ca_keys()
        .context("cannot get the CA's host keys")?;
    let lines = render_known_hosts(&patterns, &keys.keys, &url)?;
    let new = update_known_hosts(&old, Some(&url), &lines);
    if new == old {
        return Ok(false);
    }
    write_keeping_mode(&kh_path, &new)?;
    Ok(true)
}

/// The file to write for `path`: a symlink's target (so the link stays).
fn real_target(path: &Path) -> PathBuf {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

/// Replaces `path` with `text` atomically, keeping its mode (0600 when new).
fn write_keeping_mode(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let target = real_target(path);
    let mode = std::fs::metadata(&target)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    crate::cert::write_new(&target, text.as_bytes(), 0o600)?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", target.display()))?;
    Ok(())
}

fn diff(old: &str, new: &str) -> (Vec<String>, Vec<String>) {
    let o = lines_of(old);
    let n = lines_of(new);
    let added = n.iter().filter(|l| !o.contains(l)).cloned().collect();
    let removed = o.iter().filter(|l| !n.contains(l)).cloned().collect();
    (added, removed)
}

pub fn run(cfg: &Effective, args: SshArgs) -> anyhow::Result<()> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("HOME is not set: cannot find ~/.ssh"))?;
    let ssh_dir = home.join(".ssh");
    let kh_path = ssh_dir.join("known_hosts");
    let cfg_path = ssh_dir.join("config");
    let krl_path = crate::hostkrl::path_in(&home);
    let explicit: Option<Vec<String>> = if !args.hosts.is_empty() {
        Some(
            args.hosts
                .iter()
                .flat_map(|h| h.split(',').map(str::to_string).collect::<Vec<_>>())
                .filter(|p| !p.is_empty())
                .collect(),
        )
    } else {
        cfg.ssh_hosts.clone()
    };
    if let Some(ps) = &explicit {
        for p in ps {
            check_pattern(p)?;
        }
        if ps.is_empty() {
            anyhow::bail!("no host patterns: pass --hosts PATTERN");
        }
    }
    let url = cfg
        .ca_url
        .value
        .clone()
        .map(|u| u.trim_end_matches('/').to_string());
    let read = |p: &Path| -> anyhow::Result<String> {
        match std::fs::read_to_string(p) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", p.display())),
        }
    };
    let kh_old = read(&kh_path)?;
    let cfg_old = read(&cfg_path)?;

    let (kh_new, cfg_new, patterns, krl) = if args.remove {
        (
            update_known_hosts(&kh_old, url.as_deref(), &[]),
            update_ssh_config(&cfg_old, &[]),
            explicit.unwrap_or_default(),
            None,
        )
    } else {
        let url = cfg.ca_url()?.trim_end_matches('/').to_string();
        let client = cfg.client_with(None)?;
        let keys = client
            .host_ca_keys()
            .context("cannot get the CA's host keys")?;
        let patterns = match explicit {
            Some(p) => p,
            None => {
                for p in &keys.patterns {
                    check_pattern(p).with_context(|| {
                        format!("the CA sent a host name pattern ssh cannot use: {p}")
                    })?;
                }
                if keys.patterns.is_empty() {
                    anyhow::bail!(
                        "the CA certifies no host names yet (no enrolled host, no enrollment \
                         token naming one): pass --hosts PATTERN (e.g. --hosts '*.prod.example.com') \
                         or set ssh_hosts in the config file"
                    );
                }
                keys.patterns.clone()
            }
        };
        let krl = crate::hostkrl::fetch(cfg)?;
        let lines = render_known_hosts(&patterns, &keys.keys, &url)?;
        let smith = std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .context("cannot find the path of this smith binary")?;
        let profile = (cfg.profile.source != "default").then(|| cfg.profile());
        let block = render_block(
            &patterns,
            &smith,
            profile,
            &url,
            &krl_path,
            ssh_knows_host_key_alias_token(),
        )?;
        (
            update_known_hosts(&kh_old, Some(&url), &lines),
            update_ssh_config(&cfg_old, &block),
            patterns,
            Some(krl),
        )
    };

    let change = |path: &Path, old: &str, new: &str| {
        let (added, removed) = diff(old, new);
        FileChange {
            path: path.display().to_string(),
            changed: old != new,
            added,
            removed,
        }
    };
    let report = Report {
        dry_run: args.dry_run,
        remove: args.remove,
        ca_url: url,
        patterns,
        known_hosts: change(&kh_path, &kh_old, &kh_new),
        ssh_config: change(&cfg_path, &cfg_old, &cfg_new),
    };
    if !args.dry_run {
        let any = report.known_hosts.changed || report.ssh_config.changed || krl.is_some();
        if any && !ssh_dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&ssh_dir)
                .with_context(|| format!("cannot create {}", ssh_dir.display()))?;
        }
        if report.known_hosts.changed {
            write_keeping_mode(&kh_path, &kh_new)?;
        }
        // The list before the block that names it: ssh refuses every host whose
        // RevokedHostKeys file is missing.
        match &krl {
            Some(k) => {
                crate::hostkrl::store(&krl_path, k)?;
            }
            None => {
                if !cfg_new.contains(BEGIN) {
                    let _ = std::fs::remove_file(&krl_path);
                }
            }
        }
        if report.ssh_config.changed {
            write_keeping_mode(&cfg_path, &cfg_new)?;
        }
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let verb = |c: &FileChange| match (c.changed, args.dry_run) {
        (false, _) => "unchanged",
        (true, true) => "would change",
        (true, false) => "updated",
    };
    for c in [&report.known_hosts, &report.ssh_config] {
        println!("{} {}", c.path, verb(c));
        for l in &c.removed {
            println!("  - {l}");
        }
        for l in &c.added {
            println!("  + {l}");
        }
    }
    if !args.remove && !args.dry_run {
        println!(
            "ssh now verifies hosts matching {} by their Smith host certificates (no TOFU prompt) and gets a fresh certificate before connecting when needed.",
            report.patterns.join(",")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ca";

    #[test]
    fn known_hosts_lines_are_replaced_in_place_and_removed_alone() {
        let pats = vec!["*.example.com".to_string(), "10.0.0.*".to_string()];
        let ours = render_known_hosts(&pats, &[KEY.to_string()], "https://ca:8443/").unwrap();
        assert_eq!(ours.len(), 1);
        assert!(ours[0].starts_with("@cert-authority *.example.com,10.0.0.* ssh-ed25519 AAAA"));
        assert!(ours[0].ends_with(" smith-ca https://ca:8443"));
        let orig =
            "github.com ssh-ed25519 AAAAx\n@cert-authority *.other ssh-ed25519 AAAAy other-ca\n";
        let once = update_known_hosts(orig, Some("https://ca:8443"), &ours);
        assert_eq!(once, format!("{orig}{}\n", ours[0]));
        assert_eq!(
            update_known_hosts(&once, Some("https://ca:8443"), &ours),
            once
        );
        // New patterns replace the line where it was.
        let moved = format!("{}\nlast.example ssh-ed25519 AAAAz\n", once.trim_end());
        let ours2 =
            render_known_hosts(&["*".into()], &[KEY.to_string()], "https://ca:8443").unwrap();
        let again = update_known_hosts(&moved, Some("https://ca:8443"), &ours2);
        assert_eq!(again.lines().nth(2), Some(ours2[0].as_str()));
        assert_eq!(again.lines().count(), 4);
        // Another CA's lines are not ours.
        assert_eq!(
            update_known_hosts(&once, Some("https://other:1"), &[]),
            once
        );
        assert_eq!(
            update_known_hosts(&once, Some("https://ca:8443"), &[]),
            orig
        );
        assert_eq!(update_known_hosts(&once, None, &[]), orig);
        assert!(render_known_hosts(&pats, &["garbage".into()], "https://ca").is_err());
    }

    #[test]
    fn ssh_config_block_is_appended_replaced_and_removed_byte_for_byte() {
        let block = render_block(
            &["*".into()],
            Path::new("/usr/bin/smith"),
            None,
            "https://ca",
            Path::new("/home/a/.ssh/smith_revoked_host_keys"),
            true,
        )
        .unwrap();
        assert!(
            block.contains(
                &"Match host \"*,!*'*,!*\\*\" user \"*,!*'*,!*\\*\" exec \"/usr/bin/smith cert --ensure --quiet --host='%h' --login='%r' --port=%p --host-key-alias='%k'\"".to_string()
            ),
            "{block:?}"
        );
        let krl_at = block
            .iter()
            .position(|l| l == "    RevokedHostKeys /home/a/.ssh/smith_revoked_host_keys")
            .unwrap();
        assert_eq!(
            block[krl_at - 1],
            "Match host *",
            "outside the exec's Match"
        );
        let orig = "Host *\n    ServerAliveInterval 30\n\nHost db\n    User admin\n";
        let once = update_ssh_config(orig, &block);
        assert!(once.starts_with(orig));
        assert!(once.ends_with("Host *\n# END smith\n"));
        assert_eq!(update_ssh_config(&once, &block), once);
        let removed = update_ssh_config(&once, &[]);
        assert_eq!(removed, orig);
        assert_eq!(update_ssh_config("", &block), join(&block));
        assert_eq!(update_ssh_config(&join(&block), &[]), "");
        // Replaced in place; lines after it are kept.
        let after = format!("{once}Host later\n    Port 2222\n");
        let block2 = render_block(
            &["*.example.com".into()],
            Path::new("/opt/my tools/smith%x"),
            Some("work"),
            "https://ca",
            Path::new("/home/my home/%x/.ssh/smith_revoked_host_keys"),
            false,
        )
        .unwrap();
        let replaced = update_ssh_config(&after, &block2);
        assert!(
            replaced.ends_with("# END smith\nHost later\n    Port 2222\n"),
            "{replaced}"
        );
        assert!(replaced.contains(
            "exec \"'/opt/my tools/smith%%x' --profile work cert --ensure --quiet --host='%h' --login='%r' --port=%p\"\n"
        ), "{replaced}");
        assert!(
            replaced.contains(
                "    RevokedHostKeys \"/home/my home/%%x/.ssh/smith_revoked_host_keys\"\n"
            ),
            "{replaced}"
        );
        let k = Path::new("/k");
        assert!(render_block(&["*".into()], Path::new("/a\"b"), None, "u", k, true).is_err());
        assert!(render_block(
            &["*".into()],
            Path::new("/a"),
            None,
            "u",
            Path::new("/a\"b"),
            true
        )
        .is_err());
    }

    #[test]
    fn the_host_key_alias_token_needs_openssh_8_4() {
        for (v, ok) in [
            (
                "OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026",
                true,
            ),
            ("OpenSSH_8.4p1, LibreSSL 3.3.6", true),
            ("OpenSSH_8.0p1, OpenSSL 1.1.1k  FIPS 25 Mar 2021", false),
            ("OpenSSH_10.0p2", true),
            ("Sun_SSH_1.5", false),
            ("", false),
        ] {
            assert_eq!(openssh_at_least(v, (8, 4)), ok, "{v}");
        }
    }

    #[test]
    fn patterns_are_checked() {
        for ok in ["*", "*.example.com", "10.0.0.*", "!bastion", "web-?"] {
            check_pattern(ok).unwrap();
        }
        for bad in ["", "a b", "a,b", "a\"b", "#x", "a\nb"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }
}
