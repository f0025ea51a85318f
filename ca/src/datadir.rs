//! The data directory layout and careful file writing (modes, no overwrite).
//!
//! ```text
//! D/                 0700
//!   user_ca          0600  OpenSSH private key of the user CA
//!   user_ca.pub            its public key (what hosts put in TrustedUserCAKeys)
//!   host_ca          0600  OpenSSH private key of the host CA (Ed25519)
//!   host_ca.pub
//!   tls-root.key     0600  TLS root private key (PKCS#8 PEM, ECDSA P-256)
//!   tls-root.crt           TLS root certificate (what clients pin by fingerprint)
//!   tls-server.key   0600  HTTPS server key
//!   tls-server.crt         HTTPS server certificate, signed by the root
//!   ca.db            0600  SQLite store (plus ca.db-wal, ca.db-shm)
//! ```
//!
//! Must never: overwrite an existing file, or create a secret readable by anyone but the
//! owner.

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

    /// Takes the data directory's exclusive lock (`D/ca.lock`) for as long as the
    /// returned guard lives: two servers on one directory would each keep their own
    /// model and split the CA.
    pub fn lock(&self) -> anyhow::Result<nix::fcntl::Flock<fs::File>> {
        let path = self.root.join("ca.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            anyhow::anyhow!(
                "another smith-ca is serving {} ({} is locked: {e}); stop it first: two \
                 servers on one data directory would each keep their own copy of the CA",
                self.root.display(),
                path.display()
            )
        })
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

/// Creates the directory (and parents) or tightens an existing one to 0700.
pub fn ensure_private_dir(path: &Path) -> std::io::Result<()> {
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}
