//! Who may log in as which name on this host, as the principals files sshd reads
//! (`AuthorizedPrincipalsFile <principals dir>/%u`) and pam_smith's sudo check reads.
//!
//! One file per login name, listing the grant principals (see
//! [`smith_proto::grants`]) that may log in as it now:
//! - a Smith user this host serves (in the NSS cache, so not shadowed by a local
//!   account): one line per grant in the snapshot whose group they are in;
//! - a shared local account (in `/etc/passwd`, not a Smith user served here) that a
//!   grant in the snapshot allows (`--login deploy`): one line per served member of
//!   that grant's group, so the certificate says who the person behind the login is.
//!
//! Nothing else gets a file: local accounts are never reached with a Smith certificate
//! unless a grant names them, and a Smith user's name is never anyone else's login.
//!
//! Files are replaced atomically (0644: sshd reads them as the logging-in user), only
//! when their contents change; names no longer allowed lose their file. Must never:
//! leave a name's file in place once nothing allows it, or write outside the directory.

use smith_proto::grants::grant_principal;
use smith_proto::snapshot::HostState;
use smith_proto::UserName;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};

/// The first line of every file (sshd skips `#` lines).
const HEADER: &str =
    "# Written by smith-hostd from the CA's grants; rewritten at every sync. Do not edit.\n";

/// login name → its principal lines.
pub type Wanted = BTreeMap<String, BTreeSet<String>>;

/// What each login name's file should hold, given the snapshot, the Smith users this
/// host serves (after every collision rule) and the local account names.
pub fn wanted(state: &HostState, served: &BTreeSet<&str>, local_users: &HashSet<String>) -> Wanted {
    let mut out = Wanted::new();
    for name in served {
        let Some(u) = UserName::new(name).ok().and_then(|n| state.users.get(&n)) else {
            continue;
        };
        let lines: BTreeSet<String> = state
            .grants
            .iter()
            .filter(|g| u.groups.contains(&g.group))
            .map(|g| grant_principal(g.id, g.level, name))
            .collect();
        if !lines.is_empty() {
            out.insert(name.to_string(), lines);
        }
    }
    for g in &state.grants {
        for login in &g.logins {
            let l = login.as_str();
            if served.contains(l) || state.users.contains_key(login) || !local_users.contains(l) {
                continue;
            }
            for person in served {
                let member = UserName::new(person)
                    .ok()
                    .and_then(|n| state.users.get(&n))
                    .is_some_and(|u| u.groups.contains(&g.group));
                if member {
                    out.entry(l.to_string())
                        .or_default()
                        .insert(grant_principal(g.id, g.level, person));
                }
            }
        }
    }
    out
}

fn render(lines: &BTreeSet<String>) -> String {
    let mut s = String::from(HEADER);
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// The directory of principals files and what was last written there.
pub struct PrincipalsDir {
    dir: PathBuf,
    /// name → file contents, as written (None until the directory was read once).
    written: Option<BTreeMap<String, String>>,
}

impl PrincipalsDir {
    pub fn new(dir: &Path) -> PrincipalsDir {
        PrincipalsDir {
            dir: dir.to_path_buf(),
            written: None,
        }
    }

    /// What is on disk now (names that are valid login names; temporary files skipped).
    fn read_dir(&self) -> io::Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            out.insert(name, text);
        }
        Ok(out)
    }

    /// Brings the directory to `want`; returns how many files changed.
    pub fn sync(&mut self, want: &Wanted) -> io::Result<usize> {
        if self.written.is_none() {
            crate::fsutil::create_dirs(&self.dir, 0o755)?;
            self.written = Some(self.read_dir()?);
        }
        let written = self.written.get_or_insert_with(BTreeMap::new);
        let mut changed = 0;
        for (name, lines) in want {
            let text = render(lines);
            if written.get(name) == Some(&text) {
                continue;
            }
            crate::fsutil::atomic_write_with(
                &self.dir.join(name),
                text.as_bytes(),
                0o644,
                crate::fsutil::Durability::AtomicOnly,
            )?;
            written.insert(name.clone(), text);
            changed += 1;
        }
        let stale: Vec<String> = written
            .keys()
            .filter(|n| !want.contains_key(*n))
            .cloned()
            .collect();
        for name in stale {
            match std::fs::remove_file(self.dir.join(&name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            written.remove(&name);
            changed += 1;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::tests::{state, user};
    use smith_proto::snapshot::SnapshotGrant;
    use smith_proto::{GroupName, Level, Tags};

    fn grant(id: u64, group: &str, level: Level, logins: &[&str]) -> SnapshotGrant {
        SnapshotGrant {
            id,
            group: GroupName::new(group).unwrap(),
            selector: Tags::parse("env=prod").unwrap(),
            level,
            logins: logins.iter().map(|l| UserName::new(l).unwrap()).collect(),
            sudo: Default::default(),
        }
    }

    #[test]
    fn files_list_the_grants_people_hold_and_shared_accounts_name_the_person() {
        let mut s = state();
        s.users.clear();
        for u in [
            user("alice", 200001, Level::Sudo, &["ops"]),
            user("oscar", 200002, Level::Ssh, &["deployers"]),
            user("mallory", 200003, Level::Ssh, &["dev"]),
        ] {
            s.users.insert(u.name.clone(), u);
        }
        s.grants = vec![
            grant(1, "ops", Level::Sudo, &[]),
            grant(2, "deployers", Level::Ssh, &["deploy", "alice", "ghost"]),
            grant(3, "dev", Level::Ssh, &[]),
        ];
        let served: BTreeSet<&str> = ["alice", "oscar"].into();
        let local: HashSet<String> = ["root", "deploy", "ghost-not"].map(String::from).into();
        let w = wanted(&s, &served, &local);
        let names: Vec<&str> = w.keys().map(|k| k.as_str()).collect();
        // mallory is not served here (a collision): no file. "alice" as a shared login
        // of grant 2 is a Smith user: never Oscar's. "ghost" is not a local account.
        assert_eq!(names, vec!["alice", "deploy", "oscar"]);
        assert_eq!(
            w["alice"].iter().collect::<Vec<_>>(),
            vec!["smith-grant:1:sudo:alice"]
        );
        assert_eq!(
            w["deploy"].iter().collect::<Vec<_>>(),
            vec!["smith-grant:2:ssh:oscar"]
        );

        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("principals");
        let mut d = PrincipalsDir::new(&pdir);
        assert_eq!(d.sync(&w).unwrap(), 3);
        assert_eq!(
            d.sync(&w).unwrap(),
            0,
            "unchanged contents are not rewritten"
        );
        let text = std::fs::read_to_string(pdir.join("deploy")).unwrap();
        assert!(text.ends_with("smith-grant:2:ssh:oscar\n"), "{text}");
        // Oscar leaves the group: his login and the shared account lose their lines.
        let mut w2 = w.clone();
        w2.remove("oscar");
        w2.remove("deploy");
        std::fs::write(pdir.join("planted"), "alice\n").unwrap();
        // A new writer (a restarted hostd) reads what is there and removes what is stale.
        let mut d2 = PrincipalsDir::new(&pdir);
        assert_eq!(d2.sync(&w2).unwrap(), 3);
        let mut left: Vec<String> = std::fs::read_dir(&pdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["alice"]);
    }
}
