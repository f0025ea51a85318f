//! `smith-ca init`: creates a new CA in a data directory (keys, TLS root and server
//! certificate, database, bootstrap admin token).
//!
//! Must never: overwrite any existing file (it refuses and names the file), leave a
//! half-made CA behind on failure (files it created are removed), or store the admin
//! token in clear.

use crate::auth::{hash_token, new_token};
use crate::datadir::{create_new, ensure_private_dir, DataDir};
use crate::model::TokenKind;
use crate::sshca::CaAlgorithm;
use crate::store::sqlite::SqliteStore;
use crate::store::{InitMeta, Store};
use anyhow::Context;
use smith_proto::IdRange;
use std::path::PathBuf;

pub struct InitArgs {
    pub data_dir: PathBuf,
    pub user_ca_algorithm: String,
    pub sans: Vec<String>,
    /// The URL hosts and engineers will use (`https://ca.example.com:8443`): its host is
    /// named in the server certificate and the printed exports use it.
    pub url: Option<String>,
    pub id_range: String,
    pub json: bool,
    /// Life of the bootstrap admin token (at most a day; `None`: a day).
    pub bootstrap_ttl: Option<std::time::Duration>,
    /// A PostgreSQL database to create the CA in (`None`: the embedded `D/ca.db`).
    pub database: crate::database::DatabaseArgs,
    /// The user CA key in a PKCS#11 token (`pkcs11:...`), used if it exists, else
    /// generated there; `None`: a key file in the data directory.
    pub user_ca: Option<String>,
    /// The host CA key in a PKCS#11 token, likewise.
    pub host_ca: Option<String>,
}

/// The CA's URL as given to `--url`: https, a host, an optional port, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaUrl {
    /// Without a trailing slash.
    pub text: String,
    /// The host as a certificate names it (an IPv6 address without brackets).
    pub host: String,
    pub port: u16,
}

pub fn parse_ca_url(s: &str) -> anyhow::Result<CaUrl> {
    let u = url::Url::parse(s).with_context(|| {
        format!(
            "--url '{}' is not a URL (e.g. https://ca.example.com:8443)",
            s.escape_debug()
        )
    })?;
    if u.scheme() != "https" {
        anyhow::bail!("--url must start with https:// (the CA serves only HTTPS)");
    }
    if !u.username().is_empty()
        || u.password().is_some()
        || u.query().is_some()
        || u.fragment().is_some()
        || u.path() != "/"
    {
        anyhow::bail!(
            "--url names the CA only: https://HOST[:PORT], without a path, user or query"
        );
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => anyhow::bail!("--url has no host"),
    };
    let port = u.port_or_known_default().unwrap_or(443);
    Ok(CaUrl {
        text: s.trim_end_matches('/').to_string(),
        host,
        port,
    })
}

pub fn parse_id_range(s: &str) -> anyhow::Result<IdRange> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| anyhow::anyhow!("id range '{s}' must look like 200000-299999"))?;
    let a: u32 = a
        .trim()
        .parse()
        .with_context(|| format!("'{a}' is not a number"))?;
    let b: u32 = b
        .trim()
        .parse()
        .with_context(|| format!("'{b}' is not a number"))?;
    let r = IdRange::new(a, b).map_err(anyhow::Error::msg)?;
    if r.end - r.start < 10 {
        anyhow::bail!("id range {s} is too small; give at least 10 ids");
    }
    Ok(r)
}

fn machine_hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim().to_ascii_lowercase();
    (!h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    .then_some(h)
}

/// What a new CA hands its operator once (`--json` prints it as is).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Created {
    pub root_fingerprint: String,
    pub admin_token: String,
    pub data_dir: String,
    pub user_ca_public_key: String,
    /// The names and IPs in the HTTPS server certificate.
    /// `--url`, as hosts and engineers will use it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip)]
    pub sans: Vec<String>,
    #[serde(skip)]
    pub port: Option<u16>,
    #[serde(skip)]
    pub user_ca_algorithm: &'static str,
    #[serde(skip)]
    pub id_range: IdRange,
}

/// Creates the CA (see the module doc) and returns what the operator must keep.
pub fn create(args: &InitArgs) -> anyhow::Result<Created> {
    let alg = CaAlgorithm::parse(&args.user_ca_algorithm).map_err(anyhow::Error::msg)?;
    let range = parse_id_range(&args.id_range)?;
    let url = args.url.as_deref().map(parse_ca_url).transpose()?;
    let mut sans = args.sans.clone();
    if sans.is_empty() {
        sans = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if let Some(h) = machine_hostname() {
            if !sans.contains(&h) {
                sans.push(h);
            }
        }
    }
    if let Some(u) = &url {
        if !sans.contains(&u.host) {
            sans.push(u.host.clone());
        }
    }
    for s in &sans {
        let ok = s.parse::<std::net::IpAddr>().is_ok()
            || (!s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if !ok {
            anyhow::bail!(
                "--san '{}' is neither an IP address nor a DNS name",
                s.escape_debug()
            );
        }
    }
    // CA keys in a token: P-256 unless the user CA asks for Ed25519 (and the token
    // offers it); a file host CA stays Ed25519.
    let host_alg = if args.host_ca.is_some() {
        CaAlgorithm::EcdsaP256
    } else {
        CaAlgorithm::Ed25519
    };
    let keys_toml = crate::hsm::keys_toml(args.user_ca.as_deref(), args.host_ca.as_deref())?;
    // Replicas copy the data directory: it says where the database is (top-level keys
    // first, before the [keys] table).
    let db_toml = args.database.database.as_ref().map(|url| {
        crate::database::settings_lines(url, args.database.database_password_file.as_deref())
    });
    let settings_toml = match (db_toml, keys_toml) {
        (None, None) => None,
        (d, k) => Some(format!(
            "{}{}",
            d.unwrap_or_default(),
            k.unwrap_or_default()
        )),
    };
    let dd = DataDir::new(&args.data_dir);
    let settings = dd.root.join("ca.toml");
    if settings_toml.is_some() && settings.exists() {
        anyhow::bail!(
            "refusing to overwrite an existing CA: {} exists\nhint: use another --data-dir",
            settings.display()
        );
    }
    for f in dd.all_files() {
        if f.exists() {
            anyhow::bail!(
                "refusing to overwrite an existing CA: {} exists\nhint: use another --data-dir, or \
                 move the old CA away if you really mean to start over",
                f.display()
            );
        }
    }
    ensure_private_dir(&dd.root)
        .with_context(|| format!("cannot create the data directory {}", dd.root.display()))?;

    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| -> anyhow::Result<Created> {
        let now = crate::authority::now();
        let mut files: Vec<(PathBuf, String, u32)> = Vec::new();
        let (user_priv, user_pub) =
            crate::hsm::ca_key("user CA", "smith-user-ca", alg, args.user_ca.as_deref())?;
        let (host_priv, host_pub) = crate::hsm::ca_key(
            "host CA",
            "smith-host-ca",
            host_alg,
            args.host_ca.as_deref(),
        )?;
        if let Some(text) = user_priv {
            files.push((dd.user_ca(), text, 0o600));
        }
        files.push((dd.user_ca_pub(), format!("{user_pub}\n"), 0o644));
        if let Some(text) = host_priv {
            files.push((dd.host_ca(), text, 0o600));
        }
        files.push((dd.host_ca_pub(), format!("{host_pub}\n"), 0o644));
        if let Some(toml) = &settings_toml {
            files.push((dd.root.join("ca.toml"), toml.clone(), 0o600));
        }
        let tls = crate::tlsca::generate(&sans, now)?;
        files.extend([
            (dd.tls_root_key(), tls.root_key_pem.clone(), 0o600),
            (dd.tls_root_cert(), tls.root_cert_pem.clone(), 0o644),
            (dd.tls_server_key(), tls.server_key_pem.clone(), 0o600),
            (dd.tls_server_cert(), tls.server_cert_pem.clone(), 0o644),
        ]);
        for (path, text, mode) in &files {
            create_new(path, text.as_bytes(), *mode)
                .with_context(|| format!("cannot create {}", path.display()))?;
            created.push(path.clone());
        }
        let token = new_token(TokenKind::Bootstrap);
        let store: Box<dyn Store> = match &args.database.database {
            Some(url) => {
                let connector = crate::store::postgres::Connector::new(
                    url,
                    args.database.database_password_file.as_deref(),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                let store = crate::store::postgres::PgStore::open(connector, true)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| format!("cannot open the database {url}"))?;
                Box::new(store)
            }
            None => {
                // The database file is created 0600 first so that SQLite's -wal/-shm
                // inherit it.
                create_new(&dd.db(), b"", 0o600)
                    .with_context(|| format!("cannot create {}", dd.db().display()))?;
                created.push(dd.db());
                Box::new(SqliteStore::open(&dd.db())?)
            }
        };
        store.initialize(&InitMeta {
            id_range: range,
            user_ca_algorithm: alg.as_str(),
            admin_token_hash: &hash_token(&token),
            now,
            epoch: &crate::store::new_epoch(),
            bootstrap_ttl: args
                .bootstrap_ttl
                .map(|d| d.as_secs())
                .unwrap_or(crate::store::BOOTSTRAP_TTL_SECS),
        })?;
        store.shutdown();
        drop(store);
        for extra in ["ca.db-wal", "ca.db-shm"] {
            created.push(dd.root.join(extra));
        }
        Ok(Created {
            root_fingerprint: smith_api::tls::fingerprint(&tls.root_der),
            admin_token: token,
            data_dir: dd.root.display().to_string(),
            user_ca_public_key: user_pub,
            url: url.as_ref().map(|u| u.text.clone()),
            port: url.as_ref().map(|u| u.port),
            sans: sans.clone(),
            user_ca_algorithm: alg.as_str(),
            id_range: range,
        })
    })();
    match result {
        Ok(o) => Ok(o),
        Err(e) => {
            for f in &created {
                let _ = std::fs::remove_file(f);
            }
            Err(e.context("smith-ca init failed; nothing was left behind"))
        }
    }
}

/// `smith-ca init`: [`create`], then tell the operator what to do next.
pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let out = create(&args)?;
    let (sans, range) = (&out.sans, out.id_range);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("Created a Smith CA in {}", out.data_dir);
        println!();
        println!(
            "  user CA key ({}):  {}",
            out.user_ca_algorithm, out.user_ca_public_key
        );
        for (what, uri) in [("user CA", &args.user_ca), ("host CA", &args.host_ca)] {
            if let Some(u) = uri {
                println!("  {what} key in the token: {u} (no key file; check it with `smith-ca hsm selftest`)");
            }
        }
        println!("  TLS root fingerprint: {}", out.root_fingerprint);
        println!("  server certificate names: {}", sans.join(", "));
        println!(
            "  uid/gid range: {}-{} (gid {} reserved for smith-sudo)",
            range.start, range.end, range.start
        );
        println!();
        println!("Bootstrap admin token (shown only now, keep it secret):");
        println!("  {}", out.admin_token);
        println!(
            "It works for 24 hours and stops as soon as a named admin exists \
             (`smith-ca admin login`, or `smith-ca admin token create --name NAME`)."
        );
        println!();
        let (listen, url) = match (&out.url, out.port) {
            (Some(u), Some(p)) => (format!("0.0.0.0:{p}"), u.clone()),
            _ => (
                "127.0.0.1:8443".to_string(),
                "https://127.0.0.1:8443".to_string(),
            ),
        };
        println!("Next:");
        println!(
            "  smith-ca serve --data-dir {} --listen {listen}",
            out.data_dir
        );
        println!(
            "  # in the admin's shell (an environment variable, never a command-line argument):"
        );
        println!(
            "  export SMITH_CA_URL={url} SMITH_CA_FINGERPRINT={} SMITH_TOKEN={}",
            out.root_fingerprint, out.admin_token
        );
        println!("  smith-ca admin group add dev");
        println!("  smith-ca admin user add alice --groups dev");
        println!("  smith-ca admin grant add --group dev --tags env=dev --level ssh --max-ttl 8h");
        println!("  smith-ca admin user token alice");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_url_names_a_host_and_a_port() {
        let u = parse_ca_url("https://ca.example.com:8443/").unwrap();
        assert_eq!(
            (u.text.as_str(), u.host.as_str(), u.port),
            ("https://ca.example.com:8443", "ca.example.com", 8443)
        );
        assert_eq!(parse_ca_url("https://10.0.0.5").unwrap().port, 443);
        assert_eq!(parse_ca_url("https://[::1]:9000").unwrap().host, "::1");
        for bad in [
            "http://ca.example.com",
            "ca.example.com:8443",
            "https://ca.example.com/v1",
            "https://u:p@ca.example.com",
            "https://ca.example.com/?x=1",
        ] {
            assert!(parse_ca_url(bad).is_err(), "{bad}");
        }
    }
}
