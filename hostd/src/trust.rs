//! The trust material sshd reads: the user CA keys file (`TrustedUserCAKeys`) and the
//! KRL (`RevokedKeys`).
//!
//! Owns: rendering both from a snapshot and replacing them only when they change.
//! Must never: write a line sshd cannot parse (invalid key lines are dropped and
//! reported), or remove the KRL file (sshd refuses every public key login when the
//! `RevokedKeys` file is missing; "no revocations" is an empty file).

use crate::fsutil;
use base64::Engine;
use std::path::Path;

pub const TRUST_MODE: u32 = 0o644;

/// The user CA keys file contents: one valid OpenSSH public key per line. Returns the
/// text and the lines that were refused (with the reason).
pub fn render_user_ca_keys(keys: &[String]) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut refused = Vec::new();
    for k in keys {
        let line = k.trim();
        if line.is_empty() {
            continue;
        }
        match ssh_key::PublicKey::from_openssh(line) {
            Ok(_) if !line.contains('\n') => {
                out.push_str(line);
                out.push('\n');
            }
            Ok(_) => refused.push("key line contains a newline".to_string()),
            Err(e) => refused.push(format!(
                "'{}': {e}",
                line.chars().take(40).collect::<String>().escape_debug()
            )),
        }
    }
    (out, refused)
}

/// The KRL bytes: decoded from base64, or empty when there is none.
pub fn render_krl(krl_base64: Option<&str>) -> Result<Vec<u8>, String> {
    match krl_base64 {
        None => Ok(Vec::new()),
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|e| format!("the KRL from the CA is not valid base64: {e}")),
    }
}

/// Replaces `path` with `bytes` if its contents differ. Returns whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<bool> {
    if fsutil::read_optional(path)?.as_deref() == Some(bytes) && fsutil::mode_of(path) == Some(mode)
    {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        fsutil::create_dirs(dir, 0o755)?;
    }
    fsutil::atomic_write(path, bytes, mode)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHjqjsaOMPYetZJUc7f8p9W3SsuWjmqOMC6xDsIzKw0r smith-user-ca";

    #[test]
    fn keys_are_validated() {
        let (text, refused) =
            render_user_ca_keys(&[KEY.to_string(), "garbage".into(), "  ".into()]);
        assert_eq!(text, format!("{KEY}\n"));
        assert_eq!(refused.len(), 1);
    }

    #[test]
    fn krl_empty_or_decoded() {
        assert!(render_krl(None).unwrap().is_empty());
        assert_eq!(render_krl(Some("U1NIS1JM")).unwrap(), b"SSHKRL");
        assert!(render_krl(Some("@@")).is_err());
    }

    #[test]
    fn writes_only_on_change() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        assert!(write_if_changed(&p, b"a", 0o644).unwrap());
        assert!(!write_if_changed(&p, b"a", 0o644).unwrap());
        assert!(write_if_changed(&p, b"b", 0o644).unwrap());
    }
}
