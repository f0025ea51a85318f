//! Which database a CA uses: the embedded SQLite file of its data directory, or a
//! PostgreSQL database that several replicas (copies of the data directory on other
//! machines) serve together.
//!
//! Resolution, first that says: `--database URL`, `SMITH_CA_DATABASE`, `database =` in
//! `D/ca.toml`, else the embedded `D/ca.db`. The password file likewise:
//! `--database-password-file`, `SMITH_CA_DATABASE_PASSWORD_FILE`,
//! `database_password_file =` in `D/ca.toml` (then the systemd credential and
//! `PGPASSFILE`, see [`crate::store::postgres::Connector`]).
//!
//! Must never: accept a password inside the URL.

use crate::datadir::DataDir;
use crate::store::postgres::{Connector, PgStore};
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use anyhow::Context;
use std::path::PathBuf;

/// Where the CA's state lives.
#[derive(Debug, Clone)]
pub enum Database {
    /// `D/ca.db`.
    Embedded(PathBuf),
    /// A PostgreSQL database shared by every replica.
    Postgres(Box<Connector>),
}

/// What the command line says about the database (flags override the environment and
/// `D/ca.toml`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DatabaseArgs {
    /// The PostgreSQL database (postgresql://USER@HOST[:PORT]/DB[?sslmode=verify-full&
    /// sslrootcert=FILE]; a socket directory as HOST, percent-encoded, or ?host=/dir).
    /// Never put a password in it: see --database-password-file. Default:
    /// SMITH_CA_DATABASE, else `database` in D/ca.toml, else the embedded SQLite D/ca.db.
    #[arg(long, env = "SMITH_CA_DATABASE")]
    pub database: Option<String>,
    /// A file holding the database password (else the systemd credential
    /// smith-ca-database-password, else PGPASSFILE or ~/.pgpass).
    #[arg(long, env = "SMITH_CA_DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<PathBuf>,
}

/// The `D/ca.toml` lines that name the database (top-level keys: they go before any
/// `[table]` of the file), as `init` and `store copy` write them.
pub fn settings_lines(url: &str, password_file: Option<&std::path::Path>) -> String {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut t = format!("database = {}\n", quote(url));
    if let Some(p) = password_file {
        t.push_str(&format!(
            "database_password_file = {}\n",
            quote(&p.display().to_string())
        ));
    }
    t
}

impl Database {
    /// The database of data directory `dd`, as `args` and `D/ca.toml` say.
    pub fn resolve(dd: &DataDir, args: &DatabaseArgs) -> anyhow::Result<Database> {
        let file = crate::oidc::read_ca_file(&dd.root).map_err(anyhow::Error::msg)?;
        let url = args.database.clone().or(file.database);
        let password_file = args
            .database_password_file
            .clone()
            .or(file.database_password_file);
        match url {
            Some(url) if !url.trim().is_empty() => Ok(Database::Postgres(Box::new(
                Connector::new(url.trim(), password_file.as_deref())
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ))),
            _ => Ok(Database::Embedded(dd.db())),
        }
    }

    /// Opens the store (a PostgreSQL schema older than this binary is migrated when
    /// `migrate`; else refused with the command to run).
    pub fn open(&self, migrate: bool) -> anyhow::Result<Box<dyn Store>> {
        match self {
            Database::Embedded(path) => {
                if !path.exists() {
                    anyhow::bail!(
                        "{} does not exist\nhint: create the CA first with `smith-ca init --data-dir {}`",
                        path.display(),
                        path.parent().map(|p| p.display().to_string()).unwrap_or_default()
                    );
                }
                Ok(Box::new(
                    SqliteStore::open(path).context("cannot open the CA database")?,
                ))
            }
            Database::Postgres(c) => Ok(Box::new(
                PgStore::open((**c).clone(), migrate)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| format!("cannot open the CA database {}", c.shown()))?,
            )),
        }
    }

    /// Whether several replicas may serve it.
    pub fn is_shared(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }

    /// How to show it.
    pub fn shown(&self) -> String {
        match self {
            Database::Embedded(p) => p.display().to_string(),
            Database::Postgres(c) => c.shown().to_string(),
        }
    }
}
