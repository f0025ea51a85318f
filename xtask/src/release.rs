//! What makes a package directory a release: the reproducible build environment, the
//! `SHA256SUMS` over packages and SBOMs, and its OpenSSH signature.
//!
//! - **Build environment** ([`build_env`]): `SOURCE_DATE_EPOCH` (the date of the newest
//!   `debian/changelog` entry, so one commit always builds with one date), and path
//!   remapping for rustc (`--remap-path-prefix`) and C compilers (`-ffile-prefix-map`):
//!   the source tree becomes `/usr/src/smith-VERSION` and `CARGO_HOME` becomes
//!   `/usr/src/cargo`, so no directory of the build machine ends up in a binary.
//! - **`SHA256SUMS`** ([`write_sums`]): `sha256sum` format (`HEX  NAME`), one line per
//!   package and SBOM, sorted by name; `sha256sum -c SHA256SUMS` checks it.
//! - **Signature** ([`sign`]): `ssh-keygen -Y sign -n smith-release` over `SHA256SUMS`
//!   gives `SHA256SUMS.sig`; operators check it with `ssh-keygen -Y verify` against the
//!   project's published `allowed_signers` (README, "Verify before installing").
//!
//! Owns: `SHA256SUMS` and `SHA256SUMS.sig` in a package directory. Must never: hold,
//! generate or copy a signing key (the operator gives a path, or a public key whose
//! private half is in ssh-agent), or sign a `SHA256SUMS` it did not just write.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `ssh-keygen -Y` namespace of Smith's release signatures: a signature made for
/// another purpose (`git`, `file`) with the same key does not verify as a release.
pub const NAMESPACE: &str = "smith-release";
/// The signer identity the README's `allowed_signers` line and verify command use.
pub const IDENTITY: &str = "release@smith";
pub const SUMS: &str = "SHA256SUMS";
pub const SIG: &str = "SHA256SUMS.sig";

/// `SOURCE_DATE_EPOCH`: the caller's if set, else the date of the newest entry of
/// `debian/changelog` (what dpkg-buildpackage itself would use), so that every build of
/// one commit stamps the same time into packages, man pages and SBOMs.
pub fn source_date_epoch(root: &Path) -> Result<i64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"));
    }
    let changelog = std::fs::read_to_string(root.join("debian/changelog"))
        .context("reading debian/changelog")?;
    // The trailer line: ` -- Name <mail>  Tue, 25 Nov 2025 12:00:00 +0000`.
    let date = changelog
        .lines()
        .find_map(|l| l.strip_prefix(" -- "))
        .and_then(|l| l.split_once(">  "))
        .map(|(_, d)| d.trim())
        .context("debian/changelog has no trailer line (` -- Name <mail>  DATE`)")?;
    let t = chrono::DateTime::parse_from_rfc2822(date)
        .with_context(|| format!("debian/changelog date {date:?} is not RFC 2822"))?;
    Ok(t.timestamp())
}

/// RFC 3339 form of an epoch (SBOM timestamps).
pub fn rfc3339(epoch: i64) -> Result<String> {
    let t = chrono::DateTime::from_timestamp(epoch, 0)
        .with_context(|| format!("epoch {epoch} out of range"))?;
    Ok(t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn cargo_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cargo")
}

/// The environment every release build runs in (cargo inside debian/rules and the RPM
/// spec inherits it): `SOURCE_DATE_EPOCH`, and the caller's `RUSTFLAGS`/`CFLAGS` with
/// the path remapping appended.
pub fn build_env(root: &Path, version: &str) -> Result<Vec<(String, String)>> {
    let root = std::path::absolute(root).context("resolving the source root")?;
    let src = format!("/usr/src/smith-{version}");
    let home = cargo_home();
    let remap = |flag: &str| {
        format!(
            "{flag}{}={src} {flag}{}=/usr/src/cargo",
            root.display(),
            home.display()
        )
    };
    let append = |var: &str, extra: String| {
        let old = std::env::var(var).unwrap_or_default();
        let old = old.trim();
        if old.is_empty() {
            extra
        } else {
            format!("{old} {extra}")
        }
    };
    Ok(vec![
        (
            "SOURCE_DATE_EPOCH".into(),
            source_date_epoch(&root)?.to_string(),
        ),
        (
            "RUSTFLAGS".into(),
            append("RUSTFLAGS", remap("--remap-path-prefix=")),
        ),
        (
            "CFLAGS".into(),
            append("CFLAGS", remap("-ffile-prefix-map=")),
        ),
        (
            "CXXFLAGS".into(),
            append("CXXFLAGS", remap("-ffile-prefix-map=")),
        ),
    ])
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Writes `DIR/SHA256SUMS` over `files` (all directly in `dir`), sorted by name, and
/// removes a stale `SHA256SUMS.sig`. Returns its path.
pub fn write_sums(dir: &Path, files: &[PathBuf]) -> Result<PathBuf> {
    let mut lines = Vec::new();
    for f in files {
        if f.parent() != Some(dir) {
            bail!("{} is not directly in {}", f.display(), dir.display());
        }
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no UTF-8 file name", f.display()))?;
        if name.contains(char::is_whitespace) || name.contains('\\') {
            bail!("{name:?}: a file name sha256sum -c would misread");
        }
        lines.push((name.to_string(), sha256_file(f)?));
    }
    lines.sort();
    let text: String = lines
        .iter()
        .map(|(name, hash)| format!("{hash}  {name}\n"))
        .collect();
    let sums = dir.join(SUMS);
    std::fs::write(&sums, text).with_context(|| format!("writing {}", sums.display()))?;
    let _ = std::fs::remove_file(dir.join(SIG));
    Ok(sums)
}

/// Signs `sums` with `key` (a private key file, or a `.pub` whose private half is in
/// ssh-agent), checks the signature it made, and returns the `allowed_signers` line
/// for the key when its public half is readable.
pub fn sign(sums: &Path, key: &Path) -> Result<Option<String>> {
    if !key.exists() {
        bail!(
            "signing key {} does not exist (give --sign-key PATH or SMITH_SIGNING_KEY: a private key, or a .pub whose private key is in ssh-agent)",
            key.display()
        );
    }
    let sig = sums.with_file_name(SIG);
    let _ = std::fs::remove_file(&sig);
    // stdin stays the terminal's: ssh-keygen asks there for a passphrase if it needs one.
    let out = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", NAMESPACE, "-f"])
        .arg(key)
        .arg(sums)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .context("running ssh-keygen -Y sign (install openssh-client)")?;
    if !out.status.success() || !sig.exists() {
        bail!(
            "ssh-keygen -Y sign with {} failed: {}",
            key.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // A signature that does not verify must not leave this function.
    let check = Command::new("ssh-keygen")
        .args(["-Y", "check-novalidate", "-n", NAMESPACE, "-s"])
        .arg(&sig)
        .stdin(std::fs::File::open(sums)?)
        .output()
        .context("running ssh-keygen -Y check-novalidate")?;
    if !check.status.success() {
        let _ = std::fs::remove_file(&sig);
        bail!(
            "the signature ssh-keygen made does not check: {}",
            String::from_utf8_lossy(&check.stderr).trim()
        );
    }
    let public = if key.extension().is_some_and(|e| e == "pub") {
        std::fs::read_to_string(key).ok()
    } else {
        std::fs::read_to_string(key.with_extension("pub"))
            .or_else(|_| std::fs::read_to_string(format!("{}.pub", key.display())))
            .ok()
    };
    Ok(public.and_then(|p| {
        let mut words = p.split_whitespace();
        let (kind, blob) = (words.next()?, words.next()?);
        Some(format!(
            "{IDENTITY} namespaces=\"{NAMESPACE}\" {kind} {blob}"
        ))
    }))
}
