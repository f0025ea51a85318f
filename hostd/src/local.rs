//! The host's local accounts, read directly from `/etc/passwd` and `/etc/group`.
//!
//! Owns: the set of local user names/uids and group names/gids that Smith must never
//! shadow. Must never: resolve through NSS (that would ask nss_smith, i.e. ourselves,
//! and could not tell local from Smith entries).

use std::collections::HashSet;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalAccounts {
    pub user_names: HashSet<String>,
    pub uids: HashSet<u32>,
    pub group_names: HashSet<String>,
    pub gids: HashSet<u32>,
}

/// Parses `name:x:ID:...` lines, returning (name, id) pairs. `id_field` is the index of
/// the numeric id (2 for both passwd and group). Comments, NIS `+`/`-` lines and
/// malformed lines are skipped (a malformed line still reserves its name).
fn parse_colon_file(text: &str, names: &mut HashSet<String>, ids: &mut HashSet<u32>) {
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split(':');
        let name = fields.next().unwrap_or("");
        let name = name.trim_start_matches(['+', '-']);
        if !name.is_empty() {
            names.insert(name.to_string());
        }
        if let Some(id) = fields.nth(1).and_then(|f| f.trim().parse::<u32>().ok()) {
            ids.insert(id);
        }
    }
}

impl LocalAccounts {
    pub fn parse(passwd: &str, group: &str) -> LocalAccounts {
        let mut la = LocalAccounts::default();
        parse_colon_file(passwd, &mut la.user_names, &mut la.uids);
        parse_colon_file(group, &mut la.group_names, &mut la.gids);
        la
    }

    /// Reads both files. A missing file counts as empty (logged by the caller through
    /// the returned warnings); any other read error is returned.
    pub fn load(passwd: &Path, group: &Path) -> std::io::Result<(LocalAccounts, Vec<String>)> {
        let mut warnings = Vec::new();
        let mut read = |p: &Path| -> std::io::Result<String> {
            match std::fs::read(p) {
                Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    warnings.push(format!(
                        "{} does not exist; treating it as empty",
                        p.display()
                    ));
                    Ok(String::new())
                }
                Err(e) => Err(e),
            }
        };
        let pw = read(passwd)?;
        let gr = read(group)?;
        Ok((LocalAccounts::parse(&pw, &gr), warnings))
    }

    pub fn has_user(&self, name: &str) -> bool {
        self.user_names.contains(name)
    }
}

/// Whether `name` is a local user in the passwd file at `passwd` (read directly).
/// Unreadable file → `true` (on doubt, treat as local: Smith must not act on it).
pub fn is_local_user(passwd: &Path, name: &str) -> bool {
    match std::fs::read(passwd) {
        Ok(b) => {
            let text = String::from_utf8_lossy(&b);
            text.lines().any(|l| {
                l.split(':')
                    .next()
                    .is_some_and(|n| n.trim_start_matches(['+', '-']) == name)
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_ids() {
        let la = LocalAccounts::parse(
            "root:x:0:0:root:/root:/bin/bash\n# c\nbob:x:200005:200005::/home/bob:/bin/sh\nbroken\n+nis\n",
            "root:x:0:\nops:x:1500:bob\n",
        );
        assert!(la.has_user("bob"));
        assert!(la.has_user("broken"));
        assert!(la.has_user("nis"));
        assert!(la.uids.contains(&200005));
        assert!(la.group_names.contains("ops"));
        assert!(la.gids.contains(&1500));
        assert!(!la.uids.contains(&1500));
    }
}
