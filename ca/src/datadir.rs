//! The data directory layout and careful file writing (modes, no overwrite).
//!
//! ```text
//! D/                 0700
//!   user_ca          0600  OpenSSH private key of the user CA
//!   user_ca.pub            its public key (what hosts put in TrustedUserCAKeys)
//!   host_ca          0600  OpenSSH private key of the host CA (Ed25519)
//!   host_ca.pub
//!   user_ca.<T>      0600  a user CA key added by a rotation at unix time T (host_ca.<T>
//!                          likewise); a key in a PKCS#11 token has no file at all
//!   ca.toml          0600  optional settings: [oidc], [keys] (CA keys in tokens)
//!   tls-root.key     0600  TLS root private key (PKCS#8 PEM, ECDSA P-256)
//!   tls-root.crt           TLS root certificate (what clients pin by fingerprint)
//!   tls-server.key   0600  HTTPS server key
//!   tls-server.crt         HTTPS server certificate, signed by the root
//!   ca.db            0600  SQLite store (plus ca.db-wal, ca.db-shm)
//!   ca.lock          0600  held (flock) by `serve`, `restore` and `bootstrap-token`: one
//!                          at a time on a data directory
//! ```
//!
//! Must never: overwrite an existing file, create a secret readable by anyone but the
//! owner, or let two processes that write the database run on one directory (but for
//! the fleet tests' replicas, `server::SHARED_SQLITE_FOR_TESTS`, never in production).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> DataDir {
        DataDir {
            root: root.to_path_buf(),
        }
    }
    pub fn user_ca(&self) -> PathBuf {
        self.root.join("user_ca")
    }
    pub fn user_ca_pub(&self) -> PathBuf {
        self.root.join("user_ca.pub")
    }
    pub fn host_ca(&self) -> PathBuf {
        self.root.join("host_ca")
    }
    pub fn host_ca_pub(&self) -> PathBuf {
        self.root.join("host_ca.pub")
    }
    pub fn tls_root_key(&self) -> PathBuf {
        self.root.join("tls-root.key")
    }
    pub fn tls_root_cert(&self) -> PathBuf {
        self.root.join("tls-root.crt")
    }
    pub fn tls_server_key(&self) -> PathBuf {
        self.root.join("tls-server.key")
    }
    pub fn tls_server_cert(&self) -> PathBuf {
        self.root.join("tls-server.crt")
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("ca.db")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("ca.lock")
    }

    /// Takes the data directory's exclusive lock (held until the guard is dropped):
    /// refused when another `smith-ca serve`, `restore` or `bootstrap-token` holds it.
    pub fn lock(&self, what: &str) -> anyhow::Result<DirLock> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.lock_file())
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", self.lock_file().display()))?;
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(DirLock(l)),
            Err((_, e)) => anyhow::bail!(
                "cannot {what}: another smith-ca process ({e}) is using {}; stop it first \
                 (`systemctl stop smith-ca`)",
                self.root.display()
            ),
        }
    }

    /// Every file `init` creates, in creation order.
    pub fn all_files(&self) -> Vec<PathBuf> {
        vec![
            self.user_ca(),
            self.user_ca_pub(),
            self.host_ca(),
            self.host_ca_pub(),
            self.tls_root_key(),
            self.tls_root_cert(),
            self.tls_server_key(),
            self.tls_server_cert(),
            self.db(),
        ]
    }

    /// Reads a secret file (a private key): refused when group or others may read it,
    /// and held in memory that is wiped when dropped.
    pub fn read_secret(&self, path: &Path) -> anyhow::Result<zeroize::Zeroizing<String>> {
        let meta = fs::metadata(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e}\nhint: is {} a data directory made by `smith-ca init`?",
                path.display(),
                self.root.display()
            )
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{} is readable by others than its owner (mode {mode:04o}): a CA key must be \
                 0600; run `chmod 600 {}` (and check who could have read it)",
                path.display(),
                path.display()
            );
        }
        Ok(zeroize::Zeroizing::new(self.read(path)?))
    }

    pub fn read(&self, path: &Path) -> anyhow::Result<String> {
        fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e}\nhint: is {} a data directory made by `smith-ca init`?",
                path.display(),
                self.root.display()
            )
        })
    }
}

/// The data directory's lock, released when dropped.
pub struct DirLock(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

/// The files of a CA besides its database (keys, certificates, settings), as they are
/// backed up and restored: (name, mode).
pub const KEY_FILES: &[(&str, u32)] = &[
    ("user_ca", 0o600),
    ("user_ca.pub", 0o644),
    ("host_ca", 0o600),
    ("host_ca.pub", 0o644),
    ("tls-root.key", 0o600),
    ("tls-root.crt", 0o644),
    ("tls-server.key", 0o600),
    ("tls-server.crt", 0o644),
];

/// Creates `path` with `mode`, failing if it exists; fsyncs the content.
pub fn create_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // The umask may have removed bits; set exactly what we want.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Replaces `path` atomically with `contents` (0600: a temporary file, fsynced, renamed
/// over it).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    create_new(&tmp, contents, 0o600)?;
    fs::rename(&tmp, path)
}

/// Creates the directory (and parents) or tightens an existing one to 0700.
pub fn ensure_private_dir(path: &Path) -> std::io::Result<()> {
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}
