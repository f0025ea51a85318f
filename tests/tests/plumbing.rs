//! The fleet itself works: a host namespace with its own /etc and sshd, reachable from
//! the LAN, with local accounts logging in by authorized_keys, and the machine's /etc
//! untouched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_tests::{e2e_available, Fleet};

#[test]
fn a_bare_host_accepts_authorized_keys_logins_and_leaves_the_machine_alone() -> anyhow::Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let machine_passwd = std::fs::read("/etc/passwd")?;
    let mut fleet = Fleet::new("plumbing")?;
    let idx = fleet.create_host("plain-1", "")?;
    fleet.hosts[idx].start_sshd()?;
    let host = &fleet.hosts[idx];
    assert_eq!(host.exec(&["hostname"])?.ok()?.out(), "plain-1");
    assert!(host.exec(&["id", "deploy"])?.success());
    let (key, _) = fleet.admin_key()?;
    let client = fleet.client("ops")?;
    let key = key.to_string_lossy().to_string();
    let o = client
        .ssh_with("root", host, "id -u; hostname", &["-i", &key])?
        .ok()?;
    assert_eq!(o.out(), "0\nplain-1");
    let o = client
        .ssh_with("deploy", host, "whoami", &["-i", &key])?
        .ok()?;
    assert_eq!(o.out(), "deploy");
    // The machine's own accounts were not touched by the host's useradd.
    assert_eq!(std::fs::read("/etc/passwd")?, machine_passwd);
    assert!(
        std::process::Command::new("id")
            .arg("deploy")
            .output()?
            .status
            .code()
            != Some(0)
    );
    Ok(())
}
