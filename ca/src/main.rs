//! `smith-ca`: the Smith CA and control plane.
//!
//! `init` creates a CA in a data directory, `serve` runs the HTTPS API, `admin` drives
//! that API for the admin. See ca/README.md.

#![forbid(unsafe_code)]

mod admin_cli;
mod admin_people;

use smith_ca::{audit, datadir, init, oidc, server};

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "smith-ca",
    version,
    about = "The Smith CA: short-lived OpenSSH certificates and the policy hosts sync",
    long_about = "The Smith CA holds users, groups, host tags and grants, signs short-lived \
OpenSSH user certificates, enrolls hosts and serves them the part of the policy that \
matches their tags.\n\nStart with `smith-ca init --data-dir DIR`, then `smith-ca serve`, \
then configure it with `smith-ca admin ...`."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{s}' is not an address or a network like 10.0.0.0/8"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("'{s}' is not a duration like 24h: {e}"))
}

/// A retention in seconds (`None`: forever).
#[derive(Debug, Clone, Copy)]
struct Keep(Option<u64>);

/// A retention: a duration of at least a day, or `forever`.
fn parse_retention(s: &str) -> Result<Keep, String> {
    if s == "forever" {
        return Ok(Keep(None));
    }
    let d = parse_duration(s)?;
    if d < Duration::from_secs(86400) {
        return Err("a retention is at least 1d (or forever)".into());
    }
    Ok(Keep(Some(d.as_secs())))
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once at start; boxing buys nothing
enum Cmd {
    /// Create a new CA: SSH user and host CA keys, TLS root and server certificate, the
    /// database and a bootstrap admin token (printed once).
    Init {
        /// Directory to create the CA in (made 0700). Refuses to overwrite an existing CA.
        #[arg(long)]
        data_dir: PathBuf,
        /// Algorithm of the user CA key: ecdsa-p256 (the default: OpenSSH verifies it with
        /// libcrypto, so a certificate login costs what a key login costs; the CA signs one
        /// in ~22 us), ed25519 (OpenSSH 9.2 checks its CA signatures with slower built-in
        /// code, ~3.5 ms each, several times per login), ecdsa-p384 or rsa (3072 bits,
        /// rsa-sha2-512 signatures).
        #[arg(long, default_value = "ecdsa-p256")]
        user_ca_algorithm: String,
        /// Names and IPs in the HTTPS server certificate (repeatable). Default: localhost,
        /// 127.0.0.1, ::1 and this machine's hostname.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// The URL hosts and engineers will reach the CA at, e.g.
        /// https://ca.example.com:8443: its host goes into the server certificate (beside
        /// --san or the defaults) and the printed next steps use it.
        #[arg(long)]
        url: Option<String>,
        /// uid/gid range to allocate from; its first id is the smith-sudo gid.
        #[arg(long, default_value = "2001000000-2001999999")]
        id_range: String,
        /// Print {"root_fingerprint", "admin_token", ...} as JSON.
        #[arg(long)]
        json: bool,
        /// Life of the bootstrap admin token (at most 1d). It also stops as soon as a
        /// named admin exists.
        #[arg(long, value_parser = parse_duration, default_value = "1d")]
        bootstrap_ttl: Duration,
        /// With --database, the CA lives in PostgreSQL (its schema is created there) and
        /// D/ca.toml records where: copies of D on other machines are replicas.
        #[command(flatten)]
        database: smith_ca::database::DatabaseArgs,
        /// Keep the user CA key in a PKCS#11 token (an HSM): an RFC 7512 URI such as
        /// pkcs11:token=smith;object=smith-user-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/smith/hsm-pin.
        /// The key the URI names is used if it exists, else generated in the token
        /// (ecdsa-p256, or ed25519 with --user-ca-algorithm ed25519 where the token
        /// offers CKM_EDDSA). The PIN comes from pin-source (a file, or
        /// credential:NAME for a systemd credential), never from a flag. Written to
        /// DATA_DIR/ca.toml [keys].
        #[arg(long, value_name = "PKCS11_URI")]
        user_ca: Option<String>,
        /// Keep the host CA key in a PKCS#11 token (ecdsa-p256), like --user-ca.
        #[arg(long, value_name = "PKCS11_URI")]
        host_ca: Option<String>,
    },
    /// Create or update the PostgreSQL schema (idempotent; also done by `init` and at
    /// `serve` when the role may). Run it as the database's owner before a rolling
    /// upgrade; migrations only add, so replicas of the previous release keep serving.
    Migrate {
        /// Reads the database from D/ca.toml (or give --database).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        database: smith_ca::database::DatabaseArgs,
        /// Grant this role what `smith-ca serve` needs and no more: SELECT and INSERT
        /// on the append-only tables (audit, revocations, host certificates, the change
        /// log), read and write on the rest. Serve as that role so that the CA itself
        /// cannot rewrite its audit trail.
        #[arg(long)]
        app_role: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The CA keys in PKCS#11 tokens (HSMs).
    #[command(subcommand)]
    Hsm(HsmCmd),
    /// Serve the HTTPS API until SIGTERM/SIGINT. Prints `smith-ca listening on ADDR` once
    /// ready (use port 0 to pick a free port). Logs go to journald if present, else
    /// stderr (filter with SMITH_LOG, e.g. SMITH_LOG=debug).
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:8443 or [::]:8443.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Longest certificate the CA signs, whatever the grants say.
        #[arg(long, value_parser = parse_duration, default_value = "24h")]
        max_cert_ttl: Duration,
        /// Lifetime of hosts' mTLS client certificates.
        #[arg(long, value_parser = parse_duration, default_value = "24h")]
        host_cert_ttl: Duration,
        /// Validity of the SSH host certificates the host CA signs at enrollment and at
        /// each renewal (`POST /v1/host/renew` with the host keys; hostd renews at 2/3 of
        /// it). Between 1h and 365d.
        #[arg(long, value_parser = parse_duration, default_value = "90d")]
        host_ssh_cert_ttl: Duration,
        /// Default lifetime of user tokens minted without --ttl.
        #[arg(long, value_parser = parse_duration, default_value = "7d")]
        user_token_ttl: Duration,
        /// How long a host's previous mTLS client certificate keeps working after the host
        /// renewed (requests in flight). After it, that certificate is refused
        /// (`client_cert_superseded`): one identity per host.
        #[arg(long, value_parser = parse_duration, default_value = "10m")]
        host_cert_overlap: Duration,
        /// A load balancer (address or CIDR, repeatable) whose connections start with a
        /// PROXY protocol header (v1 or v2, HAProxy's) naming the real client: its
        /// address then counts for the per-source connection cap and for grants' source
        /// networks. Connections from anywhere else never have their header read.
        #[arg(long = "trusted-proxy", value_parser = parse_net)]
        trusted_proxies: Vec<ipnet::IpNet>,
        /// Connections one client address may hold open at once, hosts' mTLS connections
        /// not counted (a fleet behind one NAT address is not capped); more are closed at
        /// once (slow or flooding clients cannot take the CA's connection budget). Raise
        /// it when many engineers share one address.
        #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS_PER_SOURCE)]
        max_connections_per_source: usize,
        /// Connections this replica serves at once; more wait in the kernel's accept
        /// queue. Every long-polling host holds one, so a replica that must carry more
        /// hosts than this (alone, after the others failed) needs it raised, with the
        /// unit's LimitNOFILE (65536 in the shipped unit) above it.
        #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// Lifetime of the named admin token `smith-ca admin login` gets.
        #[arg(long, value_parser = parse_duration, default_value = "12h")]
        admin_session_ttl: Duration,
        /// Certificate requests each principal may make: N/PERIOD, a burst of N refilled
        /// over PERIOD (e.g. 60/10m), or `off`. Requests beyond it get 429 and are not
        /// recorded.
        #[arg(long, value_parser = smith_ca::authority::RateLimit::parse, default_value = "60/10m")]
        issuance_rate: smith_ca::authority::RateLimit,
        /// Keep issuance decisions this long (`forever` keeps them all); their `@ca`
        /// audit records stay regardless. Applied at start and hourly.
        #[arg(long, value_parser = parse_retention, default_value = "400d")]
        retain_decisions: Keep,
        /// Keep certificates this long after they expired (`forever` keeps them all).
        #[arg(long, value_parser = parse_retention, default_value = "400d")]
        retain_certificates: Keep,
        #[command(flatten)]
        oidc: oidc::OidcArgs,
        #[command(flatten)]
        database: smith_ca::database::DatabaseArgs,
        #[command(flatten)]
        replica: server::ops::ReplicaArgs,
    },
    /// Administer a running CA over HTTPS (needs --ca-url, --ca-fingerprint and the admin
    /// --token, or SMITH_CA_URL, SMITH_CA_FINGERPRINT and SMITH_TOKEN).
    Admin {
        #[command(flatten)]
        conn: admin_cli::Conn,
        #[command(subcommand)]
        cmd: admin_cli::AdminCmd,
    },
    /// Offline audit tools working on the data directory (no running CA needed).
    #[command(subcommand)]
    Audit(audit::cli::OfflineCmd),
    /// Copy the CA consistently while it serves: its database, keys, certificates and
    /// ca.toml, into a new directory (0700; it holds the CA's private keys).
    Backup {
        #[arg(long)]
        data_dir: PathBuf,
        /// The directory to create.
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Bring a backup back (the CA must be stopped). The restored database gets a new
    /// epoch: hosts take its full snapshot whatever version they had seen (their
    /// sessions go on), and serials and ids issued since the backup are never reused.
    /// Everything done after the backup is lost: re-apply revocations and disables.
    Restore {
        #[arg(long)]
        data_dir: PathBuf,
        /// A directory made by `smith-ca backup`.
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Move the CA between databases.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Break-glass: mint a new bootstrap admin token (a day's life) on the CA's machine,
    /// with the CA stopped, when no admin can sign in. Recorded in the audit chain.
    BootstrapToken {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum StoreCmd {
    /// Copy an embedded CA (D/ca.db) into an empty PostgreSQL database, with nothing
    /// lost: the model, every certificate, decision, revocation and audit chain (they
    /// still verify), serials continue, hosts keep syncing without re-enrolling. Stop
    /// `smith-ca serve` first; D/ca.toml then names the database (ca.db is left as it
    /// was, a backup), and copies of D are replicas.
    Copy {
        /// The data directory of the embedded CA.
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL database (see `smith-ca init --help` for the URL form).
        #[arg(long)]
        to: String,
        /// A file holding the database password.
        #[arg(long)]
        database_password_file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum HsmCmd {
    /// Load each CA key as `serve` would (checking a token key is the published one),
    /// sign a test certificate with it, verify it against the published key, and print
    /// the public keys. Run it with the CA stopped or beside it.
    Selftest {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn store_copy(
    from: PathBuf,
    to: String,
    password_file: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let dd = datadir::DataDir::new(&from);
    let _lock = dd.lock("copy the CA's database")?;
    let file = oidc::read_ca_file(&from).map_err(anyhow::Error::msg)?;
    if let Some(db) = file.database {
        anyhow::bail!(
            "{} already serves from {db}; nothing to copy",
            from.display()
        );
    }
    let connector = smith_ca::store::postgres::Connector::new(&to, password_file.as_deref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut progress = |table: &str, n: u64| {
        if !json {
            eprintln!("copied {table}: {n} rows");
        }
    };
    let copied = smith_ca::store::copy::sqlite_to_postgres(
        &dd.db(),
        connector,
        smith_ca::authority::now(),
        &mut progress,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
    .context("the copy failed; nothing was written to the database")?;
    // D/ca.toml names the database: top-level keys go before any [table].
    let path = from.join("ca.toml");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut text = smith_ca::database::settings_lines(&to, password_file.as_deref());
    text.push_str(&old);
    datadir::write_private(&path, text.as_bytes())
        .with_context(|| format!("cannot update {}", path.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&copied)?);
    } else {
        println!(
            "copied {} into {to}: version {}, epoch {}, serials continue after {}",
            dd.db().display(),
            copied.version,
            copied.epoch,
            copied.last_serial
        );
        println!(
            "{} now names the database; start `smith-ca serve --data-dir {}` again (ca.db is kept as it was, as a backup)",
            path.display(),
            from.display()
        );
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Init {
            data_dir,
            user_ca_algorithm,
            sans,
            url,
            id_range,
            json,
            bootstrap_ttl,
            database,
            user_ca,
            host_ca,
        } => {
            if bootstrap_ttl < Duration::from_secs(1) || bootstrap_ttl > Duration::from_secs(86400)
            {
                anyhow::bail!("--bootstrap-ttl must be between 1s and 1d");
            }
            init::run(init::InitArgs {
                data_dir,
                user_ca_algorithm,
                sans,
                url,
                id_range,
                json,
                bootstrap_ttl: Some(bootstrap_ttl),
                database,
                user_ca,
                host_ca,
            })
        }
        Cmd::Migrate {
            data_dir,
            database,
            app_role,
            json,
        } => {
            let db = match &data_dir {
                Some(d) => {
                    smith_ca::database::Database::resolve(&datadir::DataDir::new(d), &database)?
                }
                None => match &database.database {
                    Some(url) => smith_ca::database::Database::Postgres(Box::new(
                        smith_ca::store::postgres::Connector::new(
                            url,
                            database.database_password_file.as_deref(),
                        )
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                    )),
                    None => {
                        anyhow::bail!("give --database URL (or --data-dir of a CA on PostgreSQL)")
                    }
                },
            };
            let smith_ca::database::Database::Postgres(c) = &db else {
                anyhow::bail!(
                    "{} is the embedded SQLite database: it migrates itself when smith-ca opens it",
                    db.shown()
                );
            };
            let mut client = c.connect().map_err(|e| anyhow::anyhow!("{e}"))?;
            let m = smith_ca::store::postgres::migrate(&mut client, app_role.as_deref())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"database": c.shown(), "from": m.from, "to": m.to, "app_role": app_role})
                );
            } else if m.from == m.to {
                println!("{}: schema already at version {}", c.shown(), m.to);
            } else {
                println!(
                    "{}: schema migrated from version {} to {}",
                    c.shown(),
                    m.from,
                    m.to
                );
            }
            if let Some(r) = &app_role {
                if !json {
                    println!(
                        "granted role {r} what serving needs (append-only on the audit tables)"
                    );
                }
            }
            Ok(())
        }
        Cmd::Serve {
            data_dir,
            listen,
            max_cert_ttl,
            host_cert_ttl,
            host_ssh_cert_ttl,
            user_token_ttl,
            host_cert_overlap,
            trusted_proxies,
            max_connections_per_source,
            max_connections,
            admin_session_ttl,
            issuance_rate,
            retain_decisions,
            retain_certificates,
            oidc,
            database,
            replica,
        } => {
            if admin_session_ttl < Duration::from_secs(300)
                || admin_session_ttl > Duration::from_secs(7 * 86400)
            {
                anyhow::bail!("--admin-session-ttl must be between 5m and 7d");
            }
            let file = oidc::read_ca_file(&data_dir).map_err(anyhow::Error::msg)?;
            if max_cert_ttl < Duration::from_secs(60) || host_cert_ttl < Duration::from_secs(300) {
                anyhow::bail!("--max-cert-ttl must be at least 1m and --host-cert-ttl at least 5m");
            }
            if host_ssh_cert_ttl < Duration::from_secs(3600)
                || host_ssh_cert_ttl > Duration::from_secs(365 * 86400)
            {
                anyhow::bail!("--host-ssh-cert-ttl must be between 1h and 365d");
            }
            server::init_logging();
            let oidc = oidc::resolve(&oidc, file.oidc.as_ref()).map_err(anyhow::Error::msg)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(server::serve(
                datadir::DataDir::new(&data_dir),
                server::ServeConfig {
                    listen,
                    max_cert_ttl,
                    host_cert_ttl,
                    host_ssh_cert_ttl,
                    default_user_token_ttl: user_token_ttl,
                    host_cert_overlap,
                    trusted_proxies,
                    max_connections_per_source,
                    max_connections,
                    oidc,
                    admin_session_ttl,
                    issuance_rate,
                    retention: smith_ca::store::Retention {
                        decisions_secs: retain_decisions.0,
                        certificates_secs: retain_certificates.0,
                    },
                    database,
                    replica,
                },
            ))
        }
        Cmd::Admin { conn, cmd } => admin_cli::run(&conn, cmd),
        Cmd::Store(StoreCmd::Copy {
            from,
            to,
            database_password_file,
            json,
        }) => store_copy(from, to, database_password_file, json),
        Cmd::Hsm(HsmCmd::Selftest { data_dir, json }) => {
            smith_ca::hsm::run_selftest(&data_dir, json)
        }
        Cmd::Audit(cmd) => audit::cli::run_offline(cmd),
        Cmd::Backup {
            data_dir,
            out,
            json,
        } => {
            let i = smith_ca::backup::backup(&datadir::DataDir::new(&data_dir), &out)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                println!(
                    "backed up {} to {} (version {}, epoch {}); it holds the CA's private keys: keep it as safe as the CA",
                    data_dir.display(),
                    out.display(),
                    i.version,
                    i.epoch
                );
            }
            Ok(())
        }
        Cmd::Restore {
            data_dir,
            from,
            json,
        } => {
            let r = smith_ca::backup::restore(&datadir::DataDir::new(&data_dir), &from)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "restored {} into {}: version {}, new epoch {} (hosts take a full snapshot at their next sync; no session ends)",
                    from.display(),
                    data_dir.display(),
                    r.version,
                    r.epoch
                );
                if !r.carried_over {
                    println!("warning: the replaced database could not be read: serials and ids issued after the backup may be issued again");
                }
                println!("Everything done after the backup is gone: re-apply revocations, disables and token revocations made since.");
            }
            Ok(())
        }
        Cmd::BootstrapToken { data_dir } => {
            let dd = datadir::DataDir::new(&data_dir);
            let _lock = dd.lock("mint a bootstrap token")?;
            let a = smith_ca::authority::Authority::open(&dd, Default::default())?;
            let t = a
                .mint_bootstrap_token(&smith_ca::origin::Origin::local("bootstrap-token"))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            a.shutdown();
            println!("{}", t.token);
            eprintln!(
                "bootstrap admin token {}, valid until {} (shown once; the previous bootstrap token is revoked)",
                t.id,
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_secs(t.expires_at)
                )
            );
            Ok(())
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("smith-ca: error: {e:#}");
        std::process::exit(1);
    }
}
