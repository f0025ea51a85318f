//! The text edits `activate` makes to files it does not own (`nsswitch.conf`,
//! `pam.d/sshd`, `pam.d/sudo`, `sshd_config`) and their inverses, plus the sshd
//! drop-in it owns.
//!
//! Owns: idempotent, minimal edits that keep everything else byte for byte (an edit
//! applied twice changes nothing; removing it from an edited file gives back the
//! original). Every line Smith inserts ends with [`MARK`]. Must never: put `smith`
//! before `files` in nsswitch.conf, duplicate a line, or touch a line it did not write
//! when removing. Pure functions: no file access.

use std::path::Path;

/// Trailing marker of every line Smith inserts.
pub const MARK: &str = "# smith";

fn ensure_newline(out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

// --- nsswitch.conf ----------------------------------------------------------------------

/// Databases that get `smith`.
pub const NSS_DATABASES: [&str; 2] = ["passwd", "group"];

/// Byte spans of the whitespace-separated tokens of `s`.
fn tokens(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(st)) => {
                out.push((st, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(st) = start {
        out.push((st, s.len()));
    }
    out
}

/// Splits a database line into (`db:` part end, services part, comment).
fn nss_line_parts(line: &str) -> Option<(&str, usize)> {
    let t = line.trim_start();
    if t.starts_with('#') {
        return None;
    }
    let colon = line.find(':')?;
    let db = line[..colon].trim();
    if db.is_empty() || db.contains(char::is_whitespace) {
        return None;
    }
    Some((db, colon + 1))
}

/// The services of a database line (without actions), or `None` if `db` is absent.
pub fn nss_services(text: &str, db: &str) -> Option<Vec<String>> {
    for line in text.lines() {
        if let Some((d, after)) = nss_line_parts(line) {
            if d == db {
                let body = &line[after..];
                let body = body.split('#').next().unwrap_or("");
                return Some(
                    tokens(body)
                        .into_iter()
                        .map(|(a, b)| body[a..b].to_string())
                        .filter(|t| !t.starts_with('['))
                        .collect(),
                );
            }
        }
    }
    None
}

/// Whether `passwd` and `group` list `smith`, after `files` (or `compat`).
pub fn nss_is_configured(text: &str) -> bool {
    NSS_DATABASES.iter().all(|db| {
        nss_services(text, db).is_some_and(|s| {
            let smith = s.iter().position(|t| t == "smith");
            let files = s.iter().position(|t| t == "files" || t == "compat");
            match (smith, files) {
                (Some(sm), Some(f)) => sm > f,
                (Some(_), None) => true,
                _ => false,
            }
        })
    })
}

fn nss_line_add(line: &str, after: usize) -> String {
    let body_end = line[after..]
        .find('#')
        .map(|i| after + i)
        .unwrap_or(line.len());
    let body = &line[after..body_end];
    let toks: Vec<(usize, usize)> = tokens(body)
        .into_iter()
        .map(|(a, b)| (a + after, b + after))
        .collect();
    let word = |(a, b): (usize, usize)| &line[a..b];
    let smith_at = toks.iter().position(|t| word(*t) == "smith");
    let files_at = toks
        .iter()
        .position(|t| word(*t) == "files" || word(*t) == "compat");
    match (smith_at, files_at) {
        (Some(s), Some(f)) if s > f => return line.to_string(),
        (Some(_), None) => return line.to_string(),
        _ => {}
    }
    // Remove a misplaced `smith` (before files) first.
    let line = match smith_at {
        Some(_) => nss_line_remove(line, after),
        None => line.to_string(),
    };
    let body_end = line[after..]
        .find('#')
        .map(|i| after + i)
        .unwrap_or(line.len());
    let body = &line[after..body_end];
    let toks: Vec<(usize, usize)> = tokens(body)
        .into_iter()
        .map(|(a, b)| (a + after, b + after))
        .collect();
    let files_at = toks
        .iter()
        .position(|&(a, b)| &line[a..b] == "files" || &line[a..b] == "compat");
    let insert_at = match files_at {
        Some(f) => {
            // Skip an action block like `[NOTFOUND=return]` right after files.
            let mut end = toks[f].1;
            if let Some(&(a, b)) = toks.get(f + 1) {
                if line[a..b].starts_with('[') {
                    end = b;
                }
            }
            end
        }
        None => toks.last().map(|t| t.1).unwrap_or(line.len()),
    };
    format!("{} smith{}", &line[..insert_at], &line[insert_at..])
}

fn nss_line_remove(line: &str, after: usize) -> String {
    let body_end = line[after..]
        .find('#')
        .map(|i| after + i)
        .unwrap_or(line.len());
    let body = &line[after..body_end];
    let mut out = line.to_string();
    let toks: Vec<(usize, usize)> = tokens(body)
        .into_iter()
        .map(|(a, b)| (a + after, b + after))
        .collect();
    for &(a, b) in toks.iter().rev() {
        if &line[a..b] == "smith" {
            // Remove the token and the whitespace before it.
            let start = line[..a].trim_end().len().max(after);
            out.replace_range(start..b, "");
        }
    }
    out
}

fn map_nss_lines(text: &str, f: impl Fn(&str, usize) -> String) -> (String, Vec<&'static str>) {
    let mut out = String::with_capacity(text.len() + 16);
    let mut seen = Vec::new();
    for piece in text.split_inclusive('\n') {
        let (line, nl) = match piece.strip_suffix('\n') {
            Some(l) => (l, "\n"),
            None => (piece, ""),
        };
        match nss_line_parts(line) {
            Some((db, after)) if !seen.contains(&db) => {
                if let Some(d) = NSS_DATABASES.iter().find(|d| **d == db) {
                    seen.push(*d);
                    out.push_str(&f(line, after));
                    out.push_str(nl);
                    continue;
                }
                out.push_str(piece);
            }
            _ => out.push_str(piece),
        }
    }
    (out, seen)
}

/// Adds `smith` after `files` on the `passwd:` and `group:` lines (adding the lines
/// if missing). Idempotent.
pub fn nss_add(text: &str) -> String {
    let (mut out, seen) = map_nss_lines(text, nss_line_add);
    for db in NSS_DATABASES {
        if !seen.contains(&db) {
            ensure_newline(&mut out);
            out.push_str(&format!("{db}: files smith {MARK}\n"));
        }
    }
    out
}

/// Removes `smith` from the `passwd:` and `group:` lines (and drops lines Smith added).
pub fn nss_remove(text: &str) -> String {
    let without_ours = remove_marked_lines(text);
    map_nss_lines(&without_ours, nss_line_remove).0
}

// --- PAM ----------------------------------------------------------------------------------

/// One PAM line Smith needs in a service file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PamLine {
    /// `account` or `session`.
    pub kind: &'static str,
    /// The line without the mark, e.g. `account required pam_smith.so level=sudo`.
    pub line: String,
}

/// The lines for `/etc/pam.d/sshd`.
pub fn pam_lines_sshd() -> Vec<PamLine> {
    vec![
        PamLine {
            kind: "account",
            line: "account required pam_smith.so".into(),
        },
        PamLine {
            kind: "session",
            line: "session required pam_smith.so".into(),
        },
    ]
}

/// The lines for `/etc/pam.d/sudo`.
pub fn pam_lines_sudo() -> Vec<PamLine> {
    vec![
        PamLine {
            kind: "account",
            line: "account required pam_smith.so level=sudo".into(),
        },
        PamLine {
            kind: "session",
            line: "session optional pam_smith.so".into(),
        },
    ]
}

fn pam_type(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.starts_with('#') {
        return None;
    }
    let first = t.split_whitespace().next()?;
    Some(first.trim_start_matches('-'))
}

fn has_pam_smith(text: &str, kind: &str) -> bool {
    text.lines().any(|l| {
        pam_type(l) == Some(kind)
            && l.split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .any(|w| w.ends_with("pam_smith.so"))
    })
}

/// Whether every line of `wanted` (by type and module) is present.
pub fn pam_is_configured(text: &str, wanted: &[PamLine]) -> bool {
    wanted.iter().all(|w| has_pam_smith(text, w.kind))
}

/// Inserts each missing line of `wanted`: `account` after the last
/// `@include common-account` (else after the last account line), `session` after the
/// last `@include common-session*` (else after the last session line); at the end if
/// neither exists. Idempotent: a type that already has a pam_smith line is left alone.
pub fn pam_add(text: &str, wanted: &[PamLine]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for w in wanted {
        if has_pam_smith(&lines.join("\n"), w.kind) {
            continue;
        }
        let include = format!("@include common-{}", w.kind);
        let after_include = lines
            .iter()
            .rposition(|l| l.trim_start().starts_with(&include));
        let after_type = lines.iter().rposition(|l| pam_type(l) == Some(w.kind));
        let new_line = format!("{} {MARK}", w.line);
        match after_include.or(after_type) {
            Some(i) => lines.insert(i + 1, new_line),
            None => lines.push(new_line),
        }
    }
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// Removes every line that ends with [`MARK`].
pub fn remove_marked_lines(text: &str) -> String {
    text.split_inclusive('\n')
        .filter(|piece| !piece.trim_end().ends_with(MARK))
        .collect()
}

// --- sudo.conf ----------------------------------------------------------------------------

/// First line of Smith's block in `/etc/sudo.conf` (sudo.conf has no trailing comments:
/// words after a `Plugin` line are the plugin's options, so the block is fenced).
pub const SUDO_CONF_BEGIN: &str =
    "# smith: begin (added by smith-host activate; deactivate removes it)";
pub const SUDO_CONF_END: &str = "# smith: end";

fn active_plugin_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.split_whitespace().next() == Some("Plugin"))
}

/// The plugins sudo.conf loads: (symbol, file; empty when the line names none).
pub fn sudo_conf_plugins(text: &str) -> impl Iterator<Item = (&str, &str)> {
    active_plugin_lines(text).map(|l| {
        let mut w = l.split_whitespace().skip(1);
        (w.next().unwrap_or(""), w.next().unwrap_or(""))
    })
}

/// Whether sudo.conf loads `smith_audit` from some file.
pub fn sudo_conf_has_audit(text: &str) -> bool {
    sudo_conf_plugins(text).any(|(name, _)| name == "smith_audit")
}

/// Adds Smith's audit and approval plugins (`module`: the installed pam_smith.so). A sudo.conf with no
/// `Plugin` line means sudoers' three default plugins; naming any plugin turns the
/// defaults off, so they are named first then. Idempotent.
pub fn sudo_conf_add(text: &str, module: &Path) -> String {
    if sudo_conf_has_audit(text) {
        return text.to_string();
    }
    let mut out = text.to_string();
    ensure_newline(&mut out);
    out.push_str(SUDO_CONF_BEGIN);
    out.push('\n');
    if active_plugin_lines(text).next().is_none() {
        for p in ["sudoers_policy", "sudoers_io", "sudoers_audit"] {
            out.push_str(&format!("Plugin {p} sudoers.so\n"));
        }
    }
    out.push_str(&format!(
        "Plugin smith_audit {} with_approval\n",
        module.display()
    ));
    out.push_str(&format!("Plugin smith_approval {}\n", module.display()));
    out.push_str(SUDO_CONF_END);
    out.push('\n');
    out
}

/// Removes Smith's block.
pub fn sudo_conf_remove(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for piece in text.split_inclusive('\n') {
        let line = piece.trim_end();
        if line == SUDO_CONF_BEGIN {
            inside = true;
        } else if inside && line == SUDO_CONF_END {
            inside = false;
        } else if !inside {
            out.push_str(piece);
        }
    }
    out
}

// --- sshd_config --------------------------------------------------------------------------

/// `fnmatch`-style match where `*` and `?` do not cross `/`.
fn glob_match(pattern: &str, path: &str) -> bool {
    fn rec(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                rec(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && rec(p, &s[1..]))
            }
            (Some(b'?'), Some(c)) if *c != b'/' => rec(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => rec(&p[1..], &s[1..]),
            _ => false,
        }
    }
    rec(pattern.as_bytes(), path.as_bytes())
}

/// Whether `sshd_config` includes the drop-in before any `Match` block. Relative
/// patterns are relative to `/etc/ssh` (logical) or to the effective ssh directory.
pub fn sshd_includes(text: &str, dropin_logical: &Path, dropin_effective: &Path) -> bool {
    let logical = dropin_logical.to_string_lossy();
    let effective = dropin_effective.to_string_lossy();
    let eff_ssh_dir = dropin_effective
        .parent()
        .and_then(Path::parent)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/etc/ssh".into());
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(kw) = words.next() else { continue };
        if kw.starts_with('#') {
            continue;
        }
        if kw.eq_ignore_ascii_case("match") {
            return false;
        }
        if !kw.eq_ignore_ascii_case("include") {
            continue;
        }
        for pat in words {
            if pat.starts_with('#') {
                break;
            }
            let pat = pat.trim_matches('"');
            let candidates = if pat.starts_with('/') {
                vec![pat.to_string()]
            } else {
                vec![format!("/etc/ssh/{pat}"), format!("{eff_ssh_dir}/{pat}")]
            };
            if candidates
                .iter()
                .any(|c| glob_match(c, &logical) || glob_match(c, &effective))
            {
                return true;
            }
        }
    }
    false
}

/// Adds an `Include` of the drop-in at the top of `sshd_config` (sshd uses the first
/// value it reads, so the drop-in must come before the main settings).
pub fn sshd_add_include(text: &str, dropin: &Path) -> String {
    format!("Include {} {MARK}\n{text}", dropin.to_string_lossy())
}

/// What the sshd drop-in says.
pub struct DropIn<'a> {
    pub user_ca_keys: &'a Path,
    pub revoked_keys: &'a Path,
    /// The directory of principals files hostd keeps (one per login name).
    pub principals_dir: &'a Path,
    pub host_certificates: &'a [std::path::PathBuf],
}

/// Renders `50-smith.conf`. sshd decides from files smith-hostd keeps current (no
/// command per login): `%u`'s file lists the grant principals that may log in as `%u`
/// here now (see `crate::logins`).
pub fn render_dropin(d: &DropIn<'_>) -> String {
    let mut s = String::new();
    s.push_str("# Smith: written by `smith-host activate`, removed by `smith-host deactivate`.\n");
    s.push_str("# Accept certificates from the Smith user CA, as a login name only under\n");
    s.push_str("# the grants smith-hostd lists for that name on this host.\n");
    s.push_str(&format!("TrustedUserCAKeys {}\n", d.user_ca_keys.display()));
    s.push_str(&format!("RevokedKeys {}\n", d.revoked_keys.display()));
    s.push_str(&format!(
        "AuthorizedPrincipalsFile {}/%u\n",
        d.principals_dir.display()
    ));
    for c in d.host_certificates {
        s.push_str(&format!("HostCertificate {}\n", c.display()));
    }
    s.push_str(CERTIFICATE_ONLY);
    s
}

/// The end of the drop-in: Smith users (the NSS group of every Smith user hostd serves)
/// log in with a certificate only. A `Match` in an included file ends with that file, and
/// the drop-in is included first, so these values win over later ones for them; local
/// users are untouched.
pub const CERTIFICATE_ONLY: &str = "\
# Smith users log in with a Smith certificate only: no authorized_keys, password,
# keyboard-interactive, GSSAPI or host-based login.
Match Group smith-users
\tAuthorizedKeysFile none
\tAuthenticationMethods publickey
\tPasswordAuthentication no
\tKbdInteractiveAuthentication no
\tGSSAPIAuthentication no
\tHostbasedAuthentication no
";

#[cfg(test)]
mod tests {
    use super::*;

    const NSS: &str = "# /etc/nsswitch.conf\n\npasswd:         files systemd\ngroup:          files systemd\nshadow:         files systemd\n\nhosts:          files dns\n";

    #[test]
    fn nss_add_is_idempotent_and_reversible() {
        let once = nss_add(NSS);
        assert!(once.contains("passwd:         files smith systemd\n"));
        assert!(once.contains("group:          files smith systemd\n"));
        assert!(once.contains("shadow:         files systemd\n"));
        assert_eq!(nss_add(&once), once);
        assert!(nss_is_configured(&once));
        assert!(!nss_is_configured(NSS));
        assert_eq!(nss_remove(&once), NSS);
    }

    #[test]
    fn nss_edge_cases() {
        // smith before files is moved after it.
        let t = "passwd: smith files\ngroup: files [NOTFOUND=return] db\n";
        let out = nss_add(t);
        assert_eq!(
            out,
            "passwd: files smith\ngroup: files [NOTFOUND=return] smith db\n"
        );
        // Missing lines are added, marked.
        let out = nss_add("hosts: files\n");
        assert_eq!(
            out,
            "hosts: files\npasswd: files smith # smith\ngroup: files smith # smith\n"
        );
        assert_eq!(nss_remove(&out), "hosts: files\n");
        // compat counts as files; comments are kept.
        assert_eq!(
            nss_add("passwd: compat # local\ngroup: compat\n"),
            "passwd: compat smith # local\ngroup: compat smith\n"
        );
        // No newline at the end.
        assert_eq!(
            nss_add("passwd: files"),
            "passwd: files smith\ngroup: files smith # smith\n"
        );
    }

    const PAM_SSHD: &str = "@include common-auth\naccount    required     pam_nologin.so\n@include common-account\nsession    required     pam_loginuid.so\n@include common-session\nsession    optional     pam_motd.so\n@include common-password\n";
    const PAM_SUDO: &str = "#%PAM-1.0\nsession    required   pam_limits.so\n@include common-auth\n@include common-account\n@include common-session-noninteractive\n";

    #[test]
    fn pam_lines_go_after_the_includes() {
        let out = pam_add(PAM_SSHD, &pam_lines_sshd());
        assert_eq!(
            out,
            "@include common-auth\naccount    required     pam_nologin.so\n@include common-account\naccount required pam_smith.so # smith\nsession    required     pam_loginuid.so\n@include common-session\nsession required pam_smith.so # smith\nsession    optional     pam_motd.so\n@include common-password\n"
        );
        assert_eq!(pam_add(&out, &pam_lines_sshd()), out);
        assert!(pam_is_configured(&out, &pam_lines_sshd()));
        assert_eq!(remove_marked_lines(&out), PAM_SSHD);

        let out = pam_add(PAM_SUDO, &pam_lines_sudo());
        assert!(out.ends_with(
            "@include common-account\naccount required pam_smith.so level=sudo # smith\n@include common-session-noninteractive\nsession optional pam_smith.so # smith\n"
        ));
        assert_eq!(remove_marked_lines(&out), PAM_SUDO);
    }

    #[test]
    fn pam_without_includes() {
        let t = "auth required pam_unix.so\naccount required pam_unix.so\n";
        let out = pam_add(t, &pam_lines_sshd());
        assert_eq!(
            out,
            "auth required pam_unix.so\naccount required pam_unix.so\naccount required pam_smith.so # smith\nsession required pam_smith.so # smith\n"
        );
        // An admin's own pam_smith line is respected (no duplicate).
        let own = "account required /lib/security/pam_smith.so debug\n";
        assert!(pam_add(own, &pam_lines_sshd()).matches("account").count() == 1);
    }

    #[test]
    fn sshd_include_detection() {
        let l = Path::new("/etc/ssh/sshd_config.d/50-smith.conf");
        let e = Path::new("/tmp/r/etc/ssh/sshd_config.d/50-smith.conf");
        assert!(sshd_includes(
            "Include /etc/ssh/sshd_config.d/*.conf\nPort 22\n",
            l,
            e
        ));
        assert!(sshd_includes("include sshd_config.d/*.conf\n", l, e));
        assert!(sshd_includes(
            "Include /tmp/r/etc/ssh/sshd_config.d/50-smith.conf\n",
            l,
            e
        ));
        assert!(!sshd_includes(
            "#Include /etc/ssh/sshd_config.d/*.conf\n",
            l,
            e
        ));
        assert!(!sshd_includes(
            "Match User x\nInclude /etc/ssh/sshd_config.d/*.conf\n",
            l,
            e
        ));
        assert!(!sshd_includes("Include /etc/ssh/other/*.conf\n", l, e));
        let added = sshd_add_include("Port 22\n", e);
        assert!(sshd_includes(&added, l, e));
        assert_eq!(remove_marked_lines(&added), "Port 22\n");
    }

    #[test]
    fn dropin_names_the_principals_files() {
        let d = render_dropin(&DropIn {
            user_ca_keys: Path::new("/etc/ssh/smith_user_ca.pub"),
            revoked_keys: Path::new("/etc/ssh/smith_revoked.krl"),
            principals_dir: Path::new("/var/lib/smith/principals"),
            host_certificates: &["/etc/ssh/ssh_host_ed25519_key-cert.pub".into()],
        });
        assert!(d.contains("AuthorizedPrincipalsFile /var/lib/smith/principals/%u\n"));
        // The Match block comes last: nothing after it would be global.
        assert!(d.ends_with(CERTIFICATE_ONLY), "{d}");
        assert!(d.contains("Match Group smith-users\n\tAuthorizedKeysFile none\n"));
        assert!(!d.contains("AuthorizedPrincipalsCommand"));
        assert!(d.contains("HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub\n"));
        assert!(d.contains("TrustedUserCAKeys /etc/ssh/smith_user_ca.pub\n"));
        assert!(d.contains("RevokedKeys /etc/ssh/smith_revoked.krl\n"));
    }

    #[test]
    fn sudo_conf_gets_the_audit_plugin_after_the_defaults_and_loses_it_again() {
        let debian = "# sudo.conf\n#Plugin sudoers_policy sudoers.so\nSet disable_coredump false\n";
        let m = Path::new("/usr/lib/x86_64-linux-gnu/security/pam_smith.so");
        let added = sudo_conf_add(debian, m);
        let plugins: Vec<&str> = active_plugin_lines(&added).collect();
        assert_eq!(
            plugins,
            [
                "Plugin sudoers_policy sudoers.so",
                "Plugin sudoers_io sudoers.so",
                "Plugin sudoers_audit sudoers.so",
                "Plugin smith_audit /usr/lib/x86_64-linux-gnu/security/pam_smith.so with_approval",
                "Plugin smith_approval /usr/lib/x86_64-linux-gnu/security/pam_smith.so",
            ]
        );
        assert_eq!(sudo_conf_add(&added, m), added);
        assert_eq!(sudo_conf_remove(&added), debian);
        // An admin's own plugins stay, and the defaults are not added on top.
        let custom = "Plugin sudoers_policy sudoers.so\nPlugin other /x.so\n";
        let added = sudo_conf_add(custom, m);
        assert_eq!(active_plugin_lines(&added).count(), 4);
        assert_eq!(sudo_conf_remove(&added), custom);
    }
}
