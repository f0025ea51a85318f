//! `smith-host principals USER CERT_B64 [KEY_ID] [SERIAL]`: the access decision for one
//! certificate, as sshd makes it from the principals files smith-hostd keeps
//! (`AuthorizedPrincipalsFile <dir>/%u`, see `crate::logins`). A diagnostic for
//! operators, and still correct as the `AuthorizedPrincipalsCommand` of a drop-in written
//! by an older `smith-host activate` (`%u %k %i %s`).
//!
//! Prints USER if the certificate carries a grant principal USER's principals file lists
//! (one of the grants it was issued under covers this host and counts its holder now),
//! and is a valid user certificate now; nothing otherwise.
//!
//! Owns: the refusal log (syslog `LOG_AUTHPRIV`, and stderr). Must never: start a runtime
//! or threads, talk to the network or the daemon, print anything on doubt, or exit
//! non-zero (sshd treats an empty answer as "no principals").

use crate::paths::HostPaths;
use smith_proto::grants::parse_principals_file;
use smith_proto::{policy, sshcert, UserName};
use std::ffi::CString;
use std::path::Path;

/// The allowed name, or why the certificate is refused.
pub fn decide(
    principals_dir: &Path,
    user: &str,
    cert_b64: &str,
    now: u64,
) -> Result<String, String> {
    let name = UserName::new(user).map_err(|e| format!("user name refused: {e}"))?;
    let cert = sshcert::parse_cert_base64(cert_b64)
        .map_err(|e| format!("cannot read the certificate: {e}"))?;
    let file = principals_dir.join(name.as_str());
    let listed = match std::fs::read_to_string(&file) {
        Ok(t) => parse_principals_file(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "no grant on this host allows logging in as {name} ({} does not exist)",
                file.display()
            ))
        }
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    policy::check_certificate(&cert, &listed, now).map_err(|r| {
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
    match decide(&paths.principals_dir, user, cert_b64, crate::now_unix()) {
        Ok(name) => Some(name),
        Err(why) => {
            log_refusal(&why);
            None
        }
    }
}
