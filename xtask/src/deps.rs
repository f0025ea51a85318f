//! Debian packages the suite and the demo need, installed when missing.

use anyhow::{bail, Context, Result};
use std::process::Command;

/// Packages and why.
pub const PACKAGES: &[(&str, &str)] = &[
    ("openssh-server", "real sshd on every test host"),
    ("openssh-client", "ssh, ssh-agent, ssh-keygen"),
    ("sudo", "sudo by grant"),
    ("curl", "the KRL fetch of trust-only hosts"),
    ("pamtester", "PAM stacks driven directly"),
    ("iproute2", "network namespaces for the fleet"),
    ("util-linux", "unshare and nsenter"),
    ("libpam0g-dev", "linking pam_smith against libpam"),
    ("python3", "multi-threaded resolver stress"),
    (
        "python3-paramiko",
        "an ssh client that is not OpenSSH, logging in after `smith cert --host`",
    ),
    ("rsync", "rsync over ssh with host-aware certificates"),
    (
        "debootstrap",
        "a fresh Debian root for the package install test",
    ),
    ("debhelper", "building the .deb packages"),
    ("dpkg-dev", "building the .deb packages"),
    ("help2man", "man pages for the packages"),
    ("lintian", "checking the .deb packages"),
    ("rpm", "building and checking the RPM packages"),
    ("ruby", "syntax check of the Vagrantfile"),
    ("gcc", "the NSS benchmark and C resolver stress"),
    (
        "postgresql",
        "the CA's PostgreSQL store and replicas (tests start their own server)",
    ),
    (
        "libnss-extrausers",
        "a second NSS source for the name-collision scenario",
    ),
    (
        "softhsm2",
        "a real PKCS#11 token for CA keys that never touch disk",
    ),
    ("opensc", "pkcs11-tool, to inspect the token's keys"),
    (
        "libpython3.11-testsuite",
        "CPython's test_pwd and test_grp on a fleet host",
    ),
    (
        "libfaketime",
        "a skewed clock for a host's daemons in the fault matrix",
    ),
];

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Node.js and npm run the test OpenID Provider (npm `oidc-provider`). They are
/// checked as commands, not packages: an image may carry another distribution's build
/// (e.g. NodeSource's, which bundles npm and conflicts with Debian's `npm`).
fn node_present() -> bool {
    ["node", "npm"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

pub fn missing() -> Vec<&'static str> {
    let mut m: Vec<&'static str> = PACKAGES
        .iter()
        .filter(|(p, _)| !installed(p))
        .map(|(p, _)| *p)
        .collect();
    if !node_present() {
        m.extend(["nodejs", "npm"]);
    }
    m
}

/// Installs the missing packages with apt-get (needs root).
pub fn ensure() -> Result<()> {
    let missing = missing();
    if missing.is_empty() {
        println!("xtask: prerequisites present ({} packages)", PACKAGES.len());
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}; run as root (sudo) so that they can be installed",
            missing.join(" ")
        );
    }
    println!("xtask: installing {}", missing.join(" "));
    let st = Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get update")?;
    if !st.success() {
        bail!("apt-get update failed");
    }
    let st = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if !st.success() {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}
