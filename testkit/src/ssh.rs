//! OpenSSH pieces for tests: a real sshd in a private mount namespace, a private
//! ssh-agent, fresh keys, and `ssh-keygen -L` parsed.

use crate::{run, text};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A fresh Ed25519 public key, as one OpenSSH line.
pub fn public_key() -> String {
    ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
        .and_then(|k| k.public_key().to_openssh())
        .expect("a fresh key")
}

/// A fresh SSH host key made by `ssh-keygen` at `dir/name`: its public key line.
pub fn ssh_host_key(dir: &Path, name: &str) -> String {
    let k = dir.join(name);
    assert!(run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&k))
    .status
    .success());
    std::fs::read_to_string(k.with_extension("pub"))
        .expect("the public key")
        .trim()
        .to_string()
}

/// Parsed `ssh-keygen -L` output.
#[derive(Debug, Default)]
pub struct KeygenL {
    pub key_id: String,
    pub serial: u64,
    pub valid: String,
    pub principals: Vec<String>,
    pub critical_options: Vec<String>,
    pub extensions: Vec<String>,
    pub signing_ca: String,
}

pub fn keygen_l(cert_file: &Path) -> KeygenL {
    let out = run(Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(cert_file));
    assert!(out.status.success(), "ssh-keygen -L: {}", text(&out.stderr));
    let t = text(&out.stdout);
    let mut r = KeygenL::default();
    let mut section = "";
    for line in t.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Key ID: ") {
            r.key_id = v.trim_matches('"').to_string();
        } else if let Some(v) = l.strip_prefix("Serial: ") {
            r.serial = v.parse().expect("serial");
        } else if let Some(v) = l.strip_prefix("Valid: ") {
            r.valid = v.to_string();
        } else if let Some(v) = l.strip_prefix("Signing CA: ") {
            r.signing_ca = v.to_string();
        } else if l.starts_with("Principals:") {
            section = "p";
        } else if l.starts_with("Critical Options:") {
            section = if l.contains("(none)") { "" } else { "c" };
        } else if l.starts_with("Extensions:") {
            section = if l.contains("(none)") { "" } else { "e" };
        } else if !l.is_empty() && line.starts_with("                ") {
            match section {
                "p" => r.principals.push(l.to_string()),
                "c" => r.critical_options.push(l.to_string()),
                "e" => r.extensions.push(l.to_string()),
                _ => {}
            }
        }
    }
    r
}

/// A real sshd on 127.0.0.1:<free port> in a private mount namespace where `/etc/passwd`
/// is a copy with an extra account `user` (home in a temp dir, shell /bin/sh), trusting
/// `user_ca_pub`, with `UsePAM no` and `AuthorizedKeysFile none`.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub user: String,
    child: Child,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Sshd {
    pub fn start(user: &str, user_ca_pub: &Path) -> Sshd {
        Sshd::start_with(user, user_ca_pub, "")
    }

    /// [`Sshd::start`] with more `sshd_config` lines (e.g. `RevokedKeys PATH`).
    pub fn start_with(user: &str, user_ca_pub: &Path, extra_config: &str) -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let home = d.join("home").join(user);
        std::fs::create_dir_all(&home).expect("home");
        let mut passwd = std::fs::read_to_string("/etc/passwd").expect("passwd");
        if !passwd.ends_with('\n') {
            passwd.push('\n');
        }
        passwd.push_str(&format!(
            "{user}:x:54321:54321:Smith test user:{}:/bin/sh\n",
            home.display()
        ));
        std::fs::write(d.join("passwd"), passwd).expect("write passwd");
        let hk = d.join("ssh_host_ed25519_key");
        let out = run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&hk));
        assert!(out.status.success());
        std::fs::copy(user_ca_pub, d.join("trusted_ca.pub")).expect("copy ca");
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nUsePAM no\n\
             AuthorizedKeysFile none\nTrustedUserCAKeys {}\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel VERBOSE\n\
             AllowUsers {user}\n{extra_config}",
            hk.display(),
            d.join("sshd.pid").display(),
            d.join("trusted_ca.pub").display()
        );
        std::fs::write(d.join("sshd_config"), config).expect("config");
        let script = format!(
            "set -e; mount --bind {passwd} /etc/passwd; mount -t tmpfs tmpfs /run; \
             mkdir -m 0755 /run/sshd; exec /usr/sbin/sshd -D -e -f {config}",
            passwd = d.join("passwd").display(),
            config = d.join("sshd_config").display()
        );
        let log = std::fs::File::create(d.join("sshd.log")).expect("log");
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        let s = Sshd {
            dir,
            port,
            user: user.to_string(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not start: {}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// `ssh ... user@127.0.0.1 -p PORT <remote>` with only the given options.
    pub fn ssh(&self, opts: &[&str], remote: &str) -> Output {
        let mut c = Command::new("ssh");
        c.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
        ])
        .args(["-o", "LogLevel=ERROR"])
        .args(opts)
        .args(["-p", &self.port.to_string()])
        .arg(format!("{}@127.0.0.1", self.user))
        .arg(remote);
        run(&mut c)
    }

    /// Logs in with a key file and its certificate file; returns whether it worked.
    pub fn login_with(&self, key: &Path, cert: &Path) -> Output {
        let k = key.display().to_string();
        let c = format!("CertificateFile={}", cert.display());
        self.ssh(
            &[
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-i",
                &k,
                "-o",
                &c,
            ],
            "echo smith-login-ok",
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private `ssh-agent -D -a SOCK`, killed on drop.
pub struct Agent {
    _dir: tempfile::TempDir,
    pub sock: PathBuf,
    child: std::process::Child,
}

impl Agent {
    pub fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent {
            _dir: dir,
            sock,
            child,
        }
    }

    /// `ssh-add -L`: every key line the agent holds.
    pub fn list(&self) -> String {
        let out = run(Command::new("ssh-add")
            .arg("-L")
            .env("SSH_AUTH_SOCK", &self.sock));
        text(&out.stdout)
    }

    /// The certificate lines the agent holds.
    pub fn certs(&self) -> Vec<String> {
        self.list()
            .lines()
            .filter(|l| l.contains("-cert-v01@openssh.com"))
            .map(str::to_string)
            .collect()
    }

    /// `ssh-add -D`.
    pub fn clear(&self) {
        let out = run(Command::new("ssh-add")
            .arg("-D")
            .env("SSH_AUTH_SOCK", &self.sock));
        assert!(out.status.success());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
