//! A SoftHSM2 token of the test's own: a temporary directory holding `softhsm2.conf`,
//! the token directory and the PIN file; `SOFTHSM2_CONF` ([`SoftHsm::env`]) points a
//! process at it. Debian's `softhsm2` and `opensc` (installed by `cargo xtask test`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's SoftHSM2 PKCS#11 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

pub struct SoftHsm {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub tokens: PathBuf,
    pub pin_file: PathBuf,
    pub label: String,
    pub pin: String,
}

impl SoftHsm {
    /// Whether SoftHSM2 and opensc are installed; in CI (`SMITH_E2E_REQUIRED=1`) their
    /// absence fails the test instead of skipping it.
    pub fn available() -> bool {
        let ok = Path::new(SOFTHSM_MODULE).exists()
            && Command::new("pkcs11-tool")
                .arg("--version")
                .output()
                .is_ok()
            && Command::new("softhsm2-util")
                .arg("--version")
                .output()
                .is_ok();
        if !ok {
            if std::env::var("SMITH_E2E_REQUIRED").is_ok_and(|v| v == "1") {
                panic!("softhsm2 and opensc are required (apt-get install softhsm2 opensc; `cargo xtask test` installs them)");
            }
            eprintln!("skipping: softhsm2 / opensc are not installed");
        }
        ok
    }

    /// A new token labelled `label`, initialized with a random user PIN (kept in
    /// `pin_file`, 0400).
    pub fn new(label: &str) -> SoftHsm {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        let pin = format!("{:08}", rand::random::<u32>() % 100_000_000);
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label, "--so-pin"])
            .arg(format!("so{pin}"))
            .args(["--pin", &pin])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, format!("{pin}\n")).expect("pin file");
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        SoftHsm {
            dir,
            conf,
            tokens,
            pin_file,
            label: label.to_string(),
            pin,
        }
    }

    /// The RFC 7512 URI of the key labelled `object` on this token.
    pub fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={};object={object}?module-path={SOFTHSM_MODULE}&pin-source=file:{}",
            self.label,
            self.pin_file.display()
        )
    }

    /// The environment a process needs to see this token.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("SOFTHSM2_CONF".into(), self.conf.display().to_string())]
    }

    /// `pkcs11-tool` (opensc) on this token, logged in.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let out = Command::new("pkcs11-tool")
            .args(["--module", SOFTHSM_MODULE, "--token-label", &self.label])
            .args(["--login", "--pin", &self.pin])
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("pkcs11-tool");
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Hands the whole directory (token, PIN) to `user` (a CA running unprivileged).
    pub fn give_to(&self, user: &str) {
        let st = Command::new("chown")
            .args(["-R", &format!("{user}:")])
            .arg(self.dir.path())
            .status()
            .expect("chown");
        assert!(st.success());
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
}
