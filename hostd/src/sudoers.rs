//! `/etc/sudoers.d/smith`: sudo for the NSS group `smith-sudo`, whose members (from
//! nss_smith) are exactly the users with a `sudo` grant without command rules on this
//! host, and one line per sudo grant with rules (issue 17) for its own group
//! `smith-sudo-<id>`: `%smith-sudo-7 ALL=(postgres) NOPASSWD: /usr/bin/systemctl restart
//! nginx`. activate writes the first version; hostd rewrites it when the rules change
//! (checked with `visudo -cf` first: a refused file is never installed, the previous one
//! stays), together with the rules file pam_smith's sudo approval reads.
//!
//! Revocation does not depend on this file: pam_smith in sudo's `account` stack
//! (`account required pam_smith.so level=sudo`) re-reads the cache at every sudo, so a
//! grant removed at the CA stops sudo within a sync even inside a session whose group
//! vector was fixed at login.
//!
//! Owns: the file's contents and the `visudo -cf` check. Must never: let a file that
//! visudo did not accept be installed (activate writes it only after [`check`] passed).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

pub const MODE: u32 = 0o440;

/// The file's contents: `rules` are the rule-limited grants' groups served here, with
/// their rules.
pub fn render(rules: &[(String, &smith_proto::sudorules::SudoRules)]) -> String {
    let mut s = format!(
        "# Written by `smith-host activate` and smith-hostd; restored by `smith-host deactivate`.\n\
         # Members of the NSS group {g} are exactly the Smith users with a sudo grant on\n\
         # this host (nss_smith); pam_smith re-checks the grant at every sudo.\n\
         %{g} ALL=(ALL:ALL) NOPASSWD: ALL\n",
        g = smith_proto::names::SUDO_GROUP
    );
    if !rules.is_empty() {
        s.push_str("# Sudo grants limited to commands: one group each (smith-sudo-<grant id>).\n");
    }
    for (group, r) in rules {
        s.push_str(&r.sudoers_line(group));
        s.push('\n');
    }
    s
}

/// The `visudo` binary, if installed.
pub fn visudo() -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin".into(), "/sbin".into(), "/usr/bin".into()]);
    dirs.into_iter()
        .map(|d| d.join("visudo"))
        .find(|p| p.is_file())
}

/// Checks `text` with `visudo -cf` on a private temporary file.
pub fn check(text: &str) -> Result<(), String> {
    let Some(visudo) = visudo() else {
        return Err(
            "visudo was not found, so /etc/sudoers.d/smith cannot be checked; install sudo \
             (e.g. `apt install sudo` or `dnf install sudo`) and run activate again; nothing was changed"
                .into(),
        );
    };
    let dir = std::env::temp_dir();
    let tmp = dir.join(format!(
        ".smith-sudoers-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| format!("cannot write a temporary file in {}: {e}", dir.display()))?;
        f.write_all(text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        drop(f);
        let out = Command::new(&visudo)
            .arg("-cf")
            .arg(&tmp)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", visudo.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "visudo refused the sudoers file Smith would install ({}): {}; nothing was changed",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_file_passes_visudo_and_garbage_does_not() {
        if visudo().is_none() {
            assert!(
                std::env::var("SMITH_E2E_REQUIRED").as_deref() != Ok("1"),
                "visudo is required"
            );
            return;
        }
        let t = render(&[]);
        assert!(t.contains("%smith-sudo ALL=(ALL:ALL) NOPASSWD: ALL\n"));
        check(&t).unwrap();
        let r = smith_proto::sudorules::SudoRules {
            commands: vec![
                smith_proto::sudorules::SudoCommand::parse("/usr/bin/systemctl restart nginx")
                    .unwrap(),
                smith_proto::sudorules::SudoCommand::parse("/usr/bin/id").unwrap(),
            ],
            run_as: vec![smith_proto::UserName::new("postgres").unwrap()],
            gid: Some(200_100),
        };
        let t = render(&[("smith-sudo-7".to_string(), &r)]);
        assert!(
            t.contains(
                "%smith-sudo-7 ALL=(postgres) NOPASSWD: /usr/bin/systemctl restart nginx, /usr/bin/id\n"
            ),
            "{t}"
        );
        check(&t).unwrap();
        let e = check("%smith-sudo ALL=(ALL:ALL NOPASSWD ALL\n").unwrap_err();
        assert!(e.contains("visudo refused"), "{e}");
    }
}
