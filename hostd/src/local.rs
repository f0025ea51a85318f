//! The host's own identities that Smith must never collide with, read directly (never
//! through NSS, which would ask nss_smith, i.e. ourselves).
//!
//! Owns: the local user and group names and ids of `/etc/passwd` and `/etc/group`
//! (parsed by the shared `smith_proto::local`, the same rules as pam_smith and
//! nss_smith), and the subordinate uid/gid ranges of `/etc/subuid` and `/etc/subgid`
//! (issue 14, D3: the ids local users' rootless containers run as; Debian and Ubuntu
//! give the second and third local users 165536-231071 and 231072-296607).
//!
//! Must never: resolve through NSS, or treat an unreadable file as empty (the caller
//! keeps the previous cache until the files can be read).

use smith_proto::local::{entries, sub_ranges, SubRange};
use std::collections::{HashMap, HashSet};
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalAccounts {
    pub user_names: HashSet<String>,
    pub uids: HashSet<u32>,
    pub group_names: HashSet<String>,
    pub gids: HashSet<u32>,
    pub subuids: Vec<SubRange>,
    pub subgids: Vec<SubRange>,
    /// What the host's other NSS sources said about Smith's names and ids
    /// (`crate::nssprobe`; empty when `nsswitch.conf` lists none).
    pub other: OtherSources,
}

/// Smith's names and ids found in the host's other NSS sources (value: the source),
/// and those no source could vouch for (it did not answer) that were not served before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtherSources {
    pub user_names: HashMap<String, String>,
    pub uids: HashMap<u32, String>,
    pub group_names: HashMap<String, String>,
    pub gids: HashMap<u32, String>,
    pub unverified_users: HashMap<String, String>,
    pub unverified_groups: HashMap<String, String>,
}

fn collect(text: &[u8], names: &mut HashSet<String>, ids: &mut HashSet<u32>) {
    for e in entries(text) {
        names.insert(String::from_utf8_lossy(e.name).into_owned());
        if let Some(id) = e.id {
            ids.insert(id);
        }
    }
}

impl LocalAccounts {
    pub fn parse(passwd: &str, group: &str) -> LocalAccounts {
        let mut la = LocalAccounts::default();
        collect(passwd.as_bytes(), &mut la.user_names, &mut la.uids);
        collect(group.as_bytes(), &mut la.group_names, &mut la.gids);
        la
    }

    /// Reads the four files. A missing file counts as empty (reported in the returned
    /// warnings); any other read error is returned.
    pub fn load(
        passwd: &Path,
        group: &Path,
        subuid: &Path,
        subgid: &Path,
    ) -> std::io::Result<(LocalAccounts, Vec<String>)> {
        let mut warnings = Vec::new();
        let mut read = |p: &Path, quiet: bool| -> std::io::Result<Vec<u8>> {
            match smith_proto::local::read(p) {
                Ok(Some(b)) => Ok(b),
                Ok(None) => {
                    if !quiet {
                        warnings.push(format!(
                            "{} does not exist; treating it as empty",
                            p.display()
                        ));
                    }
                    Ok(Vec::new())
                }
                Err(errno) => Err(std::io::Error::from_raw_os_error(errno)),
            }
        };
        let pw = read(passwd, false)?;
        let gr = read(group, false)?;
        // Hosts without rootless containers have no subordinate files: not worth a warning.
        let su = read(subuid, true)?;
        let sg = read(subgid, true)?;
        let mut la = LocalAccounts::default();
        collect(&pw, &mut la.user_names, &mut la.uids);
        collect(&gr, &mut la.group_names, &mut la.gids);
        la.subuids = sub_ranges(&su);
        la.subgids = sub_ranges(&sg);
        Ok((la, warnings))
    }

    pub fn has_user(&self, name: &str) -> bool {
        self.user_names.contains(name)
    }

    /// The subordinate uid range holding `uid`, if any.
    pub fn subuid_range(&self, uid: u32) -> Option<&SubRange> {
        self.subuids.iter().find(|r| r.contains(uid))
    }

    /// The subordinate gid range holding `gid`, if any.
    pub fn subgid_range(&self, gid: u32) -> Option<&SubRange> {
        self.subgids.iter().find(|r| r.contains(gid))
    }
}

/// Whether `name` is a local user in the passwd file at `passwd` (read directly).
/// Unreadable file → `true` (on doubt, treat as local: Smith must not act on it).
pub fn is_local_user(passwd: &Path, name: &str) -> bool {
    smith_proto::local::find(passwd, name.as_bytes()).is_local()
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

    #[test]
    fn loads_subordinate_ranges() {
        let d = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| {
            std::fs::write(d.path().join(n), t).unwrap();
            d.path().join(n)
        };
        let (la, warnings) = LocalAccounts::load(
            &w("passwd", "deploy:x:1000:1000::/home/deploy:/bin/sh\n"),
            &w("group", "deploy:x:1000:\n"),
            &w("subuid", "deploy:100000:65536\nci:165536:65536\n"),
            &d.path().join("no-subgid"),
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            la.subuid_range(200_001).map(|r| r.owner.as_str()),
            Some("ci")
        );
        assert!(la.subuid_range(231_072).is_none());
        assert!(la.subgid_range(200_001).is_none());
    }
}
