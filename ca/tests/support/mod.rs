//! Test harness shared by the CA's and the CLI's integration tests (the CLI includes this
//! file with `#[path]`): start a real `smith-ca` (init + serve on 127.0.0.1:<free port>),
//! run `smith-ca admin ...`, make raw API calls, and run a real `sshd` in a private mount
//! namespace.
//!
//! How a CA is started (reusable by the fleet suite):
//! 1. `smith-ca init --data-dir D --json` → `root_fingerprint`, `admin_token`;
//! 2. `smith-ca serve --data-dir D --listen 127.0.0.1:0`, read the first stdout line
//!    `smith-ca listening on 127.0.0.1:PORT`;
//! 3. export `SMITH_CA_URL=https://127.0.0.1:PORT`, `SMITH_CA_FINGERPRINT`, `SMITH_TOKEN`.
//!    Stop with SIGTERM.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Path of a workspace binary, building it first when this test crate does not depend on
/// it (so `cargo test -p smith-cli` works alone).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let path = dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let direct = match name {
            "smith-ca" => option_env!("CARGO_BIN_EXE_smith-ca"),
            "smith" => option_env!("CARGO_BIN_EXE_smith"),
            _ => None,
        };
        if direct.is_none() && !fresh(&path, name) {
            let package = match name {
                "smith-ca" => "smith-ca",
                "smith" => "smith-cli",
                other => other,
            };
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet", "-p", package, "--bin", name]);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build");
            assert!(st.success(), "cargo build of {name} failed");
        }
        built.push(name.to_string());
    }
    path
}

/// Whether `path` is newer than every source file it is built from (so a workspace-wide
/// `cargo test`, which built it already, does not wait on the build lock again).
fn fresh(path: &Path, name: &str) -> bool {
    let Ok(built) = std::fs::metadata(path).and_then(|m| m.modified()) else {
        return false;
    };
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let crate_dir = if name == "smith" { "cli" } else { "ca" };
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    let mut stack: Vec<PathBuf> = vec![
        ws.join(crate_dir).join("src"),
        ws.join("api/src"),
        ws.join("proto/src"),
    ];
    while let Some(p) = stack.pop() {
        if p.ends_with("tests") {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if let Ok(m) = meta.modified() {
            newest = newest.max(m);
        }
    }
    built >= newest
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether tests needing root, namespaces and sshd may run; in CI
/// (`SMITH_E2E_REQUIRED=1`) a missing prerequisite fails instead of skipping.
pub fn e2e_available(what: &str) -> bool {
    let required = std::env::var("SMITH_E2E_REQUIRED").is_ok_and(|v| v == "1");
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root".to_string());
    }
    for tool in [
        "/usr/sbin/sshd",
        "/usr/bin/ssh",
        "/usr/bin/ssh-keygen",
        "/usr/bin/ssh-agent",
        "/usr/bin/unshare",
    ] {
        if !Path::new(tool).exists() {
            missing.push(tool.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    if required {
        panic!(
            "{what}: SMITH_E2E_REQUIRED=1 but missing: {}",
            missing.join(", ")
        );
    }
    eprintln!("SKIP {what}: missing {}", missing.join(", "));
    false
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct InitJson {
    pub root_fingerprint: String,
    pub admin_token: String,
}

pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub url: String,
    pub fingerprint: String,
    pub admin_token: String,
    child: Option<Child>,
    serve_args: Vec<String>,
    /// A command `smith-ca serve` runs under (e.g. `prlimit --nofile=N:N --`).
    wrapper: Vec<String>,
}

impl TestCa {
    pub fn start() -> TestCa {
        TestCa::start_with(&[], &[])
    }

    /// `init_args` go to `smith-ca init`, `serve_args` to `smith-ca serve`.
    pub fn start_with(init_args: &[&str], serve_args: &[&str]) -> TestCa {
        TestCa::start_wrapped(init_args, serve_args, &[])
    }

    /// [`TestCa::start_with`], `smith-ca serve` run under `wrapper` (a command that
    /// runs its arguments).
    pub fn start_wrapped(init_args: &[&str], serve_args: &[&str], wrapper: &[&str]) -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("ca");
        // These tests were written against the range 200000-299999 (the default until
        // issue 14 moved it clear of subordinate id ranges); a test that cares passes its own.
        let range: &[&str] = if init_args.contains(&"--id-range") {
            &[]
        } else {
            &["--id-range", "200000-299999"]
        };
        let out = run(Command::new(bin("smith-ca"))
            .args(["init", "--json", "--data-dir"])
            .arg(&data_dir)
            .args(range)
            .args(init_args));
        assert!(out.status.success(), "init failed: {}", text(&out.stderr));
        let init: InitJson = serde_json::from_slice(&out.stdout).expect("init --json");
        let mut ca = TestCa {
            dir,
            data_dir,
            url: String::new(),
            fingerprint: init.root_fingerprint,
            admin_token: init.admin_token,
            child: None,
            serve_args: serve_args.iter().map(|s| s.to_string()).collect(),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
        };
        ca.serve("127.0.0.1:0");
        ca
    }

    fn serve(&mut self, listen: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .expect("log");
        let mut cmd = match self.wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(bin("smith-ca"));
                c
            }
            None => Command::new(bin("smith-ca")),
        };
        let mut child = cmd
            .args(["serve", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen", listen])
            .args(&self.serve_args)
            .env("SMITH_LOG", "info,smith_ca=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn smith-ca serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read");
        let addr = line
            .trim()
            .strip_prefix("smith-ca listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; log: {}", self.log()))
            .to_string();
        self.url = format!("https://{addr}");
        self.child = Some(child);
    }

    pub fn addr(&self) -> String {
        self.url.trim_start_matches("https://").to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// SIGTERM and wait; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        match self.child.take() {
            Some(mut c) => {
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    if let Ok(Some(st)) = c.try_wait() {
                        return st.success();
                    }
                    if Instant::now() > deadline {
                        let _ = c.kill();
                        let _ = c.wait();
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            None => true,
        }
    }

    /// Stops and starts again on the same port.
    pub fn restart(&mut self) {
        let addr = self.addr();
        assert!(self.stop(), "smith-ca did not stop cleanly: {}", self.log());
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(&addr).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.serve(&addr);
    }

    /// A `smith-ca admin` command with the CA's URL, fingerprint and admin token.
    pub fn admin_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("smith-ca"));
        c.arg("admin")
            .args(args)
            .env("SMITH_CA_URL", &self.url)
            .env("SMITH_CA_FINGERPRINT", &self.fingerprint)
            .env("SMITH_TOKEN", &self.admin_token);
        c
    }

    pub fn admin(&self, args: &[&str]) -> Output {
        run(&mut self.admin_cmd(args))
    }

    /// Runs an admin command that must succeed; returns stdout.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(
            out.status.success(),
            "smith-ca admin {args:?} failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs an admin command that must fail; returns stderr.
    pub fn admin_err(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(
            !out.status.success(),
            "smith-ca admin {args:?} should have failed: {}",
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    pub fn user_token(&self, user: &str) -> String {
        self.admin_ok(&["user", "token", user]).trim().to_string()
    }

    /// A pinned HTTPS client (optionally with an mTLS identity), for raw API calls.
    /// `grant add --group GROUP --tags TAGS --level LEVEL --max-ttl 1h`.
    pub fn grant(&self, group: &str, tags: &str, level: &str) {
        self.admin_ok(&[
            "grant",
            "add",
            "--group",
            group,
            "--tags",
            tags,
            "--level",
            level,
            "--max-ttl",
            "1h",
        ]);
    }

    /// `POST /v1/certs/user` for a fresh key with `bearer` (a user token or an ID token)
    /// and scope, 10 minutes: (status, body).
    pub fn request_cert(
        &self,
        bearer: &str,
        scope: &str,
        nonce: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut body =
            serde_json::json!({"public_key": public_key(), "scope": scope, "ttl_secs": 600});
        if let Some(n) = nonce {
            body["oidc_nonce"] = serde_json::json!(n);
        }
        let r = self
            .http(None)
            .post(format!("{}{}", self.url, smith_api::endpoints::CERTS_USER))
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .expect("certificate request");
        let s = r.status().as_u16();
        (s, r.json().unwrap_or(serde_json::Value::Null))
    }

    pub fn http(&self, identity: Option<&smith_api::Identity>) -> reqwest::blocking::Client {
        let tls = smith_api::tls::client_config(
            &smith_api::Trust::Fingerprint(self.fingerprint.clone()),
            identity,
        )
        .expect("tls config");
        reqwest::blocking::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(90))
            .build()
            .expect("client")
    }

    /// The typed API client, pinned to this CA, with an optional bearer token and mTLS
    /// identity.
    pub fn client(
        &self,
        token: Option<&str>,
        identity: Option<&smith_api::Identity>,
    ) -> smith_api::Client {
        smith_api::Client::new(smith_api::ClientOptions {
            token: token.map(str::to_string),
            identity: identity.cloned(),
            timeout: Duration::from_secs(90),
            ..smith_api::ClientOptions::new(
                &self.url,
                smith_api::Trust::Fingerprint(self.fingerprint.clone()),
            )
        })
        .expect("client")
    }

    /// Enrolls a host through the API (a fresh token with `tags`, a fresh key); returns
    /// its mTLS identity.
    pub fn enroll_host(&self, name: &str, tags: &str) -> smith_api::Identity {
        self.enroll_host_with(name, tags, &[]).0
    }

    /// [`TestCa::enroll_host`] with SSH host public keys (OpenSSH lines) to certify; also
    /// returns the CA's answer.
    pub fn enroll_host_with(
        &self,
        name: &str,
        tags: &str,
        ssh_host_keys: &[String],
    ) -> (smith_api::Identity, smith_api::EnrollResponse) {
        let token = self
            .admin_ok(&[
                "host", "token", "--tags", tags, "--ttl", "1h", "--name", name,
            ])
            .trim()
            .to_string();
        let key = rcgen::KeyPair::generate().expect("key");
        let csr = rcgen::CertificateParams::new(vec!["ignored.example".to_string()])
            .and_then(|p| p.serialize_request(&key))
            .and_then(|c| c.pem())
            .expect("csr");
        let resp = self
            .client(None, None)
            .enroll(&smith_api::EnrollRequestNamed {
                request: smith_api::EnrollRequest {
                    token,
                    host_name: smith_proto::HostName::new(name).expect("host name"),
                    csr_pem: csr,
                    ssh_host_keys: ssh_host_keys.to_vec(),
                },
                ssh_names: vec![],
            })
            .expect("enrollment");
        let identity = smith_api::Identity {
            cert_pem: resp.client_cert_pem.clone().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        };
        (identity, resp)
    }

    /// A full snapshot for the host with `identity`.
    pub fn sync_full(&self, identity: &smith_api::Identity) -> smith_proto::snapshot::SyncResponse {
        self.client(None, Some(identity))
            .sync(&smith_api::SyncQuery::default())
            .expect("sync")
            .expect("a full snapshot, not 204")
    }

    /// The typed API client with the admin token.
    pub fn admin_client(&self) -> smith_api::Client {
        self.client(Some(&self.admin_token), None)
    }

    pub fn user_ca_pub(&self) -> PathBuf {
        self.data_dir.join("user_ca.pub")
    }

    pub fn user_ca_key(&self) -> PathBuf {
        self.data_dir.join("user_ca")
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The typed code of an error body `{code, error}` (unknown codes: `Unrecognized`).
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

pub fn code_of(body: &serde_json::Value) -> smith_api::ErrorCode {
    smith_api::ErrorCode::parse(body["code"].as_str().unwrap_or(""))
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
