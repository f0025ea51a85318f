//! The trust material sshd reads: the user CA keys file (`TrustedUserCAKeys`) and the
//! KRL (`RevokedKeys`).
//!
//! Owns: rendering both from a snapshot, validating the KRL's structure before it
//! replaces the previous one (issue 14, L6: sshd refuses *every* public key login, root's
//! break-glass keys included, when it cannot parse its `RevokedKeys` file), and replacing
//! them only when they change.
//! Must never: write a line sshd cannot parse (invalid key lines are dropped and
//! reported), install a KRL that fails [`validate_krl`] (the previous file stays), or
//! remove the KRL file (sshd refuses every public key login when the `RevokedKeys` file
//! is missing; "no revocations" is an empty file).

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

/// A cursor over KRL bytes (OpenSSH's `sshbuf` rules: big-endian, `string` = u32 length
/// then bytes).
struct Krl<'a>(&'a [u8]);

impl<'a> Krl<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("truncated {what}"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn string(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a valid KRL holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KrlSummary {
    pub version: u64,
    pub ca_sections: usize,
    pub serials: usize,
    pub key_ids: usize,
    pub keys: usize,
}

/// Checks `bytes` against OpenSSH's KRL format (PROTOCOL.krl) as sshd parses it: the
/// magic and format version, the header, then sections until the end, each of a known
/// type and exactly consumed (certificate subsections: serial lists of whole u64s,
/// ranges with min <= max, bitmaps, key IDs; explicit keys; SHA-1 and SHA-256
/// fingerprints of the right size). Signature sections are refused (OpenSSH 9.4+
/// refuses signed KRLs; Smith's CA never signs them). An empty file ("no revocations")
/// is valid.
pub fn validate_krl(bytes: &[u8]) -> Result<KrlSummary, String> {
    let mut sum = KrlSummary::default();
    if bytes.is_empty() {
        return Ok(sum);
    }
    let mut r = Krl(bytes);
    if r.take(8, "magic")? != b"SSHKRL\n\0" {
        return Err("not a KRL (bad magic)".into());
    }
    let format = r.u32("format version")?;
    if format != 1 {
        return Err(format!("unsupported KRL format version {format}"));
    }
    sum.version = r.u64("krl version")?;
    r.u64("generated date")?;
    r.u64("flags")?;
    r.string("reserved")?;
    r.string("comment")?;
    while !r.done() {
        let kind = r.u8("section type")?;
        let mut sec = Krl(r.string("section")?);
        match kind {
            1 => {
                sum.ca_sections += 1;
                let ca = sec.string("CA key")?;
                ssh_key::PublicKey::from_bytes(ca)
                    .map_err(|e| format!("certificate section: unreadable CA key: {e}"))?;
                sec.string("reserved")?;
                while !sec.done() {
                    let sub = sec.u8("subsection type")?;
                    let mut d = Krl(sec.string("subsection")?);
                    match sub {
                        0x20 => {
                            if d.0.len() % 8 != 0 {
                                return Err("serial list is not whole u64s".into());
                            }
                            sum.serials += d.0.len() / 8;
                            d.0 = &[];
                        }
                        0x21 => {
                            let (lo, hi) = (d.u64("range")?, d.u64("range")?);
                            if lo > hi {
                                return Err(format!("serial range {lo}-{hi} is reversed"));
                            }
                            sum.serials += 1;
                        }
                        0x22 => {
                            d.u64("bitmap offset")?;
                            d.string("bitmap")?;
                            sum.serials += 1;
                        }
                        0x23 => {
                            while !d.done() {
                                d.string("key ID")?;
                                sum.key_ids += 1;
                            }
                        }
                        t => return Err(format!("unknown certificate subsection 0x{t:02x}")),
                    }
                    if !d.done() {
                        return Err(format!("trailing bytes in subsection 0x{sub:02x}"));
                    }
                }
            }
            2 => {
                while !sec.done() {
                    let k = sec.string("revoked key")?;
                    ssh_key::PublicKey::from_bytes(k)
                        .map_err(|e| format!("explicit key section: unreadable key: {e}"))?;
                    sum.keys += 1;
                }
            }
            3 | 5 => {
                let size = if kind == 3 { 20 } else { 32 };
                while !sec.done() {
                    if sec.string("fingerprint")?.len() != size {
                        return Err(format!("fingerprint of the wrong size in section {kind}"));
                    }
                    sum.keys += 1;
                }
            }
            4 => return Err("signed KRL (OpenSSH 9.4+ refuses them)".into()),
            t => return Err(format!("unknown section type {t}")),
        }
        if !sec.done() {
            return Err(format!("trailing bytes in section {kind}"));
        }
    }
    Ok(sum)
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

    /// A real KRL from `ssh-keygen -k` (serials, a key ID, an explicit key) passes; every
    /// truncation and the damage a CA bug could do is refused.
    #[test]
    fn krl_structure_is_validated() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca");
        let key = d.path().join("key");
        for (p, c) in [(&ca, "ca"), (&key, "k")] {
            let o = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", c, "-f"])
                .arg(p)
                .output();
            let Ok(o) = o else {
                eprintln!("SKIPPED: ssh-keygen missing");
                return;
            };
            assert!(o.status.success());
        }
        let spec = d.path().join("spec");
        let key_pub = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        std::fs::write(
            &spec,
            format!("serial: 1-5\nserial: 9\nid: smith:alice:1\n{key_pub}"),
        )
        .unwrap();
        let krl = d.path().join("krl");
        let o = std::process::Command::new("ssh-keygen")
            .args(["-k", "-f"])
            .arg(&krl)
            .arg("-s")
            .arg(ca.with_extension("pub"))
            .arg(&spec)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let bytes = std::fs::read(&krl).unwrap();
        let sum = validate_krl(&bytes).unwrap();
        assert_eq!((sum.ca_sections, sum.key_ids), (1, 1));
        assert!(sum.serials >= 1 && sum.keys == 1, "{sum:?}");
        assert!(validate_krl(&[]).is_ok());
        // Every truncation is refused, except at a section boundary (a shorter KRL).
        let whole = sum.ca_sections + usize::from(sum.keys > 0);
        let boundaries = (1..bytes.len())
            .filter(|n| validate_krl(&bytes[..*n]).is_ok())
            .count();
        assert!(boundaries <= whole, "{boundaries} valid prefixes");
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(validate_krl(&bad).is_err());
        let mut trailing = bytes.clone();
        trailing.push(7);
        assert!(validate_krl(&trailing).is_err());
        assert!(validate_krl(b"this is not a KRL at all").is_err());
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
