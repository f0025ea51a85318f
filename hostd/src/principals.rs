//! `smith-host principals USER CERT_B64 [KEY_ID] [SERIAL]`: sshd's
//! `AuthorizedPrincipalsCommand` (`%u %k %i %s`), run as an unprivileged user.
//!
//! Prints USER if the certificate may log in as USER on this host (the user is a Smith
//! user in the cache with a grant here, is not a local account, the certificate names
//! them, is valid now, and its scope matches this host's tags), and nothing otherwise.
//!
//! Owns: that decision's inputs (the cache file read directly, `/etc/passwd` read
//! directly) and the refusal log (syslog `LOG_AUTHPRIV`, and stderr). Must never: start
//! a runtime or threads, talk to the network or the daemon, print anything on doubt,
//! or exit non-zero (sshd treats an empty answer as "no principals").

use crate::paths::HostPaths;
use smith_proto::cache::CacheView;
use smith_proto::{policy, sshcert, Tags, UserName};
use std::ffi::CString;
use std::path::Path;

/// Why a login was refused (or the allowed name).
pub fn decide(
    cache_bytes: &[u8],
    passwd: &Path,
    user: &str,
    cert_b64: &str,
    now: u64,
) -> Result<String, String> {
    let name = UserName::new(user).map_err(|e| format!("user name refused: {e}"))?;
    let cert = sshcert::parse_cert_base64(cert_b64)
        .map_err(|e| format!("cannot read the certificate: {e}"))?;
    let view = CacheView::parse(cache_bytes).map_err(|e| format!("cache unusable: {e}"))?;
    let entry = view
        .user_by_name(name.as_str().as_bytes())
        .map_err(|e| format!("cache unusable: {e}"))?
        .ok_or_else(|| format!("{name} is not a Smith user with a grant on this host"))?;
    if crate::local::is_local_user(passwd, name.as_str()) {
        return Err(format!(
            "{name} is a local account; Smith certificates never log in as local accounts"
        ));
    }
    let tags_text = std::str::from_utf8(view.host_tags()).map_err(|_| "host tags unreadable")?;
    let tags = Tags::parse(tags_text).map_err(|e| format!("host tags unreadable: {e}"))?;
    policy::check_certificate(&cert, name.as_str(), entry.level, &tags, now).map_err(|r| {
        format!(
            "certificate {} (serial {}) refused for {name}: {r}",
            cert.key_id.escape_debug(),
            cert.serial
        )
    })?;
    Ok(name.into_string())
}

/// Logs a refusal to syslog (authpriv) and stderr.
fn log_refusal(msg: &str) {
    let clean: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    eprintln!("smith-host principals: {clean}");
    if let (Ok(ident), Ok(text)) = (
        CString::new("smith-host"),
        CString::new(clean.replace('\0', " ")),
    ) {
        // SAFETY: `ident` and `text` are valid NUL-terminated strings that outlive the
        // calls; the format string is a literal "%s" with exactly one string argument.
        // closelog() is called before `ident` is dropped, so syslog never keeps a
        // dangling ident pointer.
        unsafe {
            libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_AUTHPRIV);
            libc::syslog(libc::LOG_NOTICE, c"%s".as_ptr(), text.as_ptr());
            libc::closelog();
        }
    }
}

/// Runs the command: returns what to print (the user name) or `None`.
pub fn run(paths: &HostPaths, user: &str, cert_b64: &str) -> Option<String> {
    let bytes = match std::fs::read(&paths.cache_file) {
        Ok(b) => b,
        Err(e) => {
            log_refusal(&format!(
                "cannot read {}: {e}; refusing {}",
                paths.cache_file.display(),
                user.escape_debug()
            ));
            return None;
        }
    };
    match decide(&bytes, &paths.passwd, user, cert_b64, crate::now_unix()) {
        Ok(name) => Some(name),
        Err(why) => {
            log_refusal(&why);
            None
        }
    }
}
