//! Where the PostgreSQL store connects, and with which credentials.
//!
//! The database is named by a URL, `postgresql://USER@HOST[:PORT]/DB[?PARAMS]`
//! (`HOST` may be a socket directory, percent-encoded, or given as `?host=/dir`).
//! Parameters: `sslmode` (`disable` or `verify-full`; the default is `disable` over a
//! Unix socket and `verify-full` over TCP), `sslrootcert` (PEM roots for
//! `verify-full`; the system's roots without it), `passfile`, `host`, `port`, `user`,
//! `dbname`, `application_name`, `connect_timeout` (seconds, default 5). `require` and
//! `prefer` are refused: TLS that does not check the server stops no one who can
//! intercept the connection.
//!
//! Invariants:
//! - A password is never taken from the URL (it would sit in process listings, shell
//!   history and unit files): it comes from `--database-password-file` (or
//!   `SMITH_CA_DATABASE_PASSWORD_FILE`), else the systemd credential
//!   `smith-ca-database-password`, else a libpq password file (`passfile`,
//!   `PGPASSFILE`, `~/.pgpass`), else none (peer or certificate authentication).
//! - Every connection has a connect timeout and TCP keepalives, so a dead or cut
//!   database fails calls instead of hanging them.

use super::pg_error;
use crate::store::StoreError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The systemd credential holding the database password (`LoadCredential=`).
pub const PASSWORD_CREDENTIAL: &str = "smith-ca-database-password";

/// How to reach the database.
#[derive(Clone)]
pub struct Connector {
    config: ::postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The URL as given (it holds no password), for messages.
    shown: String,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

fn bad(msg: String) -> StoreError {
    StoreError::Database(msg)
}

impl Connector {
    /// Parses `url` (see the module doc); `password_file` is an explicit password file.
    pub fn new(url: &str, password_file: Option<&Path>) -> Result<Connector, StoreError> {
        let u = url::Url::parse(url).map_err(|e| bad(format!("invalid database URL: {e}")))?;
        if !matches!(u.scheme(), "postgres" | "postgresql") {
            return Err(bad(format!(
                "the database URL must start with postgresql:// (got {}://)",
                u.scheme()
            )));
        }
        if u.password().is_some() {
            return Err(bad(
                "the database URL carries a password, which would show in process listings \
                 and shell history; remove it and put the password in a file given by \
                 --database-password-file (or the systemd credential \
                 smith-ca-database-password, or PGPASSFILE)"
                    .into(),
            ));
        }
        let mut config = ::postgres::Config::new();
        let decode = |s: &str| {
            percent_decode(s).map_err(|_| bad(format!("invalid percent-encoding in '{s}'")))
        };
        let mut host: Option<String> = u
            .host_str()
            .filter(|h| !h.is_empty())
            .map(decode)
            .transpose()?;
        let mut port = u.port();
        let mut user = (!u.username().is_empty())
            .then(|| decode(u.username()))
            .transpose()?;
        let mut dbname = Some(u.path().trim_start_matches('/'))
            .filter(|p| !p.is_empty())
            .map(decode)
            .transpose()?;
        let mut sslmode: Option<String> = None;
        let mut rootcert: Option<PathBuf> = None;
        let mut passfile: Option<PathBuf> = None;
        let mut timeout = Duration::from_secs(5);
        for (k, v) in u.query_pairs() {
            let v = v.to_string();
            match k.as_ref() {
                "host" => host = Some(v),
                "port" => {
                    port = Some(
                        v.parse()
                            .map_err(|_| bad(format!("invalid port '{v}' in the database URL")))?,
                    )
                }
                "user" => user = Some(v),
                "dbname" => dbname = Some(v),
                "application_name" => {
                    config.application_name(&v);
                }
                "sslmode" => sslmode = Some(v),
                "sslrootcert" => rootcert = Some(PathBuf::from(v)),
                "passfile" => passfile = Some(PathBuf::from(v)),
                "connect_timeout" => {
                    let secs: u64 = v
                        .parse()
                        .map_err(|_| bad(format!("invalid connect_timeout '{v}'")))?;
                    timeout = Duration::from_secs(secs.clamp(1, 300));
                }
                other => {
                    return Err(bad(format!(
                        "unknown database URL parameter '{other}' (known: sslmode, sslrootcert, \
                         passfile, host, port, user, dbname, application_name, connect_timeout)"
                    )))
                }
            }
        }
        let host = host.unwrap_or_else(|| "/var/run/postgresql".into());
        let socket = host.starts_with('/');
        config.host(&host);
        let port = port.unwrap_or(5432);
        config.port(port);
        let user = match user {
            Some(u) => u,
            None => nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .ok_or_else(|| bad("the database URL names no user".into()))?,
        };
        config.user(&user);
        let dbname = dbname.unwrap_or_else(|| user.clone());
        config.dbname(&dbname);
        config.connect_timeout(timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.keepalives_interval(Duration::from_secs(5));
        config.keepalives_retries(3);
        if config.get_application_name().is_none() {
            config.application_name("smith-ca");
        }
        let tls = match sslmode
            .as_deref()
            .unwrap_or(if socket { "disable" } else { "verify-full" })
        {
            "disable" => None,
            "verify-full" => {
                config.ssl_mode(::postgres::config::SslMode::Require);
                Some(tls_config(rootcert.as_deref())?)
            }
            other => {
                return Err(bad(format!(
                    "sslmode={other} is not supported: use sslmode=verify-full (with \
                     sslrootcert=FILE for a private CA), or sslmode=disable over a Unix socket"
                )))
            }
        };
        if let Some(pw) = password(
            password_file,
            passfile.as_deref(),
            &host,
            port,
            &dbname,
            &user,
        )? {
            config.password(pw);
        }
        Ok(Connector {
            config,
            tls,
            shown: u.to_string(),
        })
    }

    /// A new connection.
    pub fn connect(&self) -> Result<::postgres::Client, StoreError> {
        let r = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(::postgres::NoTls),
        };
        r.map_err(|e| {
            // The server answered with a refusal (authentication, no such database): a
            // setting to fix. Anything else while connecting (refused, reset, timed out,
            // TLS) leaves the database unreachable for now.
            if e.as_db_error().is_some() {
                pg_error(e)
            } else {
                StoreError::Unavailable(format!("{}: {e}", self.shown))
            }
        })
    }

    /// The URL, without secrets, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

fn percent_decode(s: &str) -> Result<String, ()> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = b.get(i + 1..i + 3).ok_or(())?;
            let h = std::str::from_utf8(h).map_err(|_| ())?;
            out.push(u8::from_str_radix(h, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

fn tls_config(
    rootcert: Option<&Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    match rootcert {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| bad(format!("cannot read sslrootcert {}: {e}", path.display())))?;
            let mut any = false;
            use rustls_pki_types::pem::PemObject;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("{}: {e}", path.display())))?;
                any = true;
            }
            if !any {
                return Err(bad(format!("{} holds no certificate", path.display())));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(cfg))
}

/// The password, from the first source that has one (see the module doc).
fn password(
    explicit: Option<&Path>,
    passfile: Option<&Path>,
    host: &str,
    port: u16,
    db: &str,
    user: &str,
) -> Result<Option<String>, StoreError> {
    let explicit = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("SMITH_CA_DATABASE_PASSWORD_FILE").map(PathBuf::from));
    if let Some(p) = explicit {
        let text = std::fs::read_to_string(&p).map_err(|e| {
            bad(format!(
                "cannot read the password file {}: {e}",
                p.display()
            ))
        })?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let p = Path::new(&dir).join(PASSWORD_CREDENTIAL);
        if let Ok(text) = std::fs::read_to_string(&p) {
            return Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()));
        }
    }
    let pgpass = passfile
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PGPASSFILE").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")));
    let Some(pgpass) = pgpass else {
        return Ok(None);
    };
    let Ok(text) = std::fs::read_to_string(&pgpass) else {
        return Ok(None);
    };
    // libpq's host field for a socket is "localhost" (or the socket directory).
    let host_matches =
        |h: &str| h == "*" || h == host || (host.starts_with('/') && h == "localhost");
    Ok(pgpass_lookup(
        &text,
        &host_matches,
        &port.to_string(),
        db,
        user,
    ))
}

/// The password of the first `host:port:db:user:password` line of a libpq password
/// file that matches (`*` matches anything; `\:` and `\\` are escapes).
fn pgpass_lookup(
    text: &str,
    host_matches: &dyn Fn(&str) -> bool,
    port: &str,
    db: &str,
    user: &str,
) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let m = |f: &str, v: &str| f == "*" || f == v;
        if host_matches(&fields[0])
            && m(&fields[1], port)
            && m(&fields[2], db)
            && m(&fields[3], user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_refused_with_where_to_put_it() {
        let e = Connector::new("postgresql://smith:hunter2@db/smith", None).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("--database-password-file"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn unverified_tls_modes_are_refused() {
        for mode in ["require", "prefer", "allow", "verify-ca"] {
            let e = Connector::new(&format!("postgresql://smith@db/smith?sslmode={mode}"), None)
                .unwrap_err();
            assert!(e.to_string().contains("verify-full"), "{mode}: {e}");
        }
        assert!(Connector::new("postgresql://smith@db/smith?sslmode=verify-full", None).is_ok());
        assert!(Connector::new("postgresql://smith@%2Ftmp%2Fpg/smith", None).is_ok());
        assert!(Connector::new("postgresql://smith@db/smith?bogus=1", None).is_err());
    }

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        let text = "# comment\nother:5432:*:smith:nope\n*:5432:smith:smith:pa\\:ss\n";
        let any = |h: &str| h == "*" || h == "db";
        assert_eq!(
            pgpass_lookup(text, &any, "5432", "smith", "smith").as_deref(),
            Some("pa:ss")
        );
        assert_eq!(pgpass_lookup(text, &any, "5433", "smith", "smith"), None);
    }
}
