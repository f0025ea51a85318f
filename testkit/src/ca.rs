//! The real CA for tests, in-process or as the `smith-ca` binary.
//!
//! In-process ([`TestCa::in_process`]): `smith_ca::init::create` makes the data directory
//! and `smith_ca::server::start` serves it on a tokio runtime the kit owns; its log goes to
//! `serve.log` beside the data directory, like the binary's. Starting takes a few
//! milliseconds, and a test may restart it with another configuration
//! ([`TestCa::restart_with`]), e.g. short certificate lifetimes.
//!
//! As the binary ([`TestCa::start`], reusable by any harness):
//! 1. `smith-ca init --data-dir D --json` → `root_fingerprint`, `admin_token`;
//! 2. `smith-ca serve --data-dir D --listen 127.0.0.1:0`, read the first stdout line
//!    `smith-ca listening on 127.0.0.1:PORT`;
//! 3. export `SMITH_CA_URL=https://127.0.0.1:PORT`, `SMITH_CA_FINGERPRINT`, `SMITH_TOKEN`.
//!    Stop with SIGTERM.
//!
//! Both use the uid/gid range 200000-299999 unless the test gives `--id-range`: the
//! tests were written against it (the default until issue 14 moved it clear of
//! subordinate id ranges); its first id, 200000, is the smith-sudo gid.

use crate::{bin, run, text};
use smith_ca::server::{Running, ServeConfig};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ID_RANGE: &str = "200000-299999";

#[derive(Debug, Clone, serde::Deserialize)]
pub struct InitJson {
    pub root_fingerprint: String,
    pub admin_token: String,
}

/// A real CA on 127.0.0.1, stopped when dropped.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub url: String,
    pub fingerprint: String,
    pub admin_token: String,
    server: Server,
}

enum Server {
    /// `smith-ca serve` (under `wrapper`, a command that runs its arguments, if any).
    Process {
        child: Option<Child>,
        serve_args: Vec<String>,
        wrapper: Vec<String>,
        /// Extra environment of `init` and `serve` (e.g. SOFTHSM2_CONF).
        env: Vec<(String, String)>,
    },
    /// `smith_ca::server::start` on the kit's runtime.
    InProcess {
        rt: tokio::runtime::Runtime,
        cfg: Box<ServeConfig>,
        running: Option<Running>,
    },
}

/// What `smith-ca serve` runs with when given no flags (its clap defaults).
pub fn default_serve_config() -> ServeConfig {
    const DAY: u64 = 86400;
    ServeConfig {
        listen: "127.0.0.1:0".into(),
        max_cert_ttl: Duration::from_secs(DAY),
        host_cert_ttl: Duration::from_secs(DAY),
        host_ssh_cert_ttl: Duration::from_secs(90 * DAY),
        default_user_token_ttl: Duration::from_secs(7 * DAY),
        host_cert_overlap: Duration::from_secs(600),
        trusted_proxies: Vec::new(),
        max_connections_per_source: smith_ca::server::DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
        max_connections: smith_ca::server::DEFAULT_MAX_CONNECTIONS,
        oidc: None,
        admin_session_ttl: Duration::from_secs(12 * 3600),
        issuance_rate: smith_ca::authority::RateLimit::parse("60/10m")
            .expect("the default issuance rate"),
        retention: smith_ca::authority::Retention {
            decisions_secs: Some(400 * DAY),
            certificates_secs: Some(400 * DAY),
        },
        database: Default::default(),
        replica: Default::default(),
    }
}

/// A dispatcher writing the in-process CA's log to `path` (`SMITH_LOG` filters it, as
/// for the binary; default `info,smith_ca=debug`).
fn file_log(path: &std::path::Path) -> tracing::Dispatch {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("the CA's log file");
    let filter = tracing_subscriber::EnvFilter::try_from_env("SMITH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,smith_ca=debug"));
    tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .finish(),
    )
}

impl TestCa {
    /// The real CA, in-process, with `smith-ca serve`'s default settings.
    pub fn in_process() -> TestCa {
        TestCa::in_process_with(|_| {})
    }

    /// [`TestCa::in_process`] with settings changed by `configure` (any
    /// `smith-ca serve` flag, and values its flags refuse, e.g. a host certificate of a
    /// minute).
    pub fn in_process_with(configure: impl FnOnce(&mut ServeConfig)) -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("ca");
        let created = smith_ca::init::create(&smith_ca::init::InitArgs {
            data_dir: data_dir.clone(),
            user_ca_algorithm: "ed25519".into(),
            sans: Vec::new(),
            url: None,
            id_range: ID_RANGE.into(),
            json: true,
            bootstrap_ttl: None,
            database: Default::default(),
            user_ca: None,
            host_ca: None,
        })
        .expect("smith-ca init");
        let log = file_log(&dir.path().join("serve.log"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || {
                // Each of the runtime's threads logs to this CA's file for its life.
                std::mem::forget(tracing::dispatcher::set_default(&log));
            })
            .build()
            .expect("a runtime for the CA");
        let mut cfg = default_serve_config();
        configure(&mut cfg);
        let mut ca = TestCa {
            dir,
            data_dir,
            url: String::new(),
            fingerprint: created.root_fingerprint,
            admin_token: created.admin_token,
            server: Server::InProcess {
                rt,
                cfg: Box::new(cfg),
                running: None,
            },
        };
        ca.serve("127.0.0.1:0");
        ca
    }

    /// The `smith-ca` binary (init + serve), with default flags.
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
        TestCa::start_env(init_args, serve_args, wrapper, &[])
    }

    /// [`TestCa::start_wrapped`], `init` and `serve` with `env` added to their
    /// environment (e.g. `SOFTHSM2_CONF` of a [`crate::SoftHsm`]).
    pub fn start_env(
        init_args: &[&str],
        serve_args: &[&str],
        wrapper: &[&str],
        env: &[(String, String)],
    ) -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("ca");
        let range: &[&str] = if init_args.contains(&"--id-range") {
            &[]
        } else {
            &["--id-range", ID_RANGE]
        };
        let out = run(Command::new(bin("smith-ca"))
            .args(["init", "--json", "--data-dir"])
            .arg(&data_dir)
            .args(range)
            .args(init_args)
            .envs(env.iter().map(|(k, v)| (k, v))));
        assert!(out.status.success(), "init failed: {}", text(&out.stderr));
        let init: InitJson = serde_json::from_slice(&out.stdout).expect("init --json");
        let mut ca = TestCa {
            dir,
            data_dir,
            url: String::new(),
            fingerprint: init.root_fingerprint,
            admin_token: init.admin_token,
            server: Server::Process {
                child: None,
                serve_args: serve_args.iter().map(|s| s.to_string()).collect(),
                wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
                env: env.to_vec(),
            },
        };
        ca.serve("127.0.0.1:0");
        ca
    }

    fn serve(&mut self, listen: &str) {
        let log_path = self.dir.path().join("serve.log");
        let data_dir = self.data_dir.clone();
        let addr = match &mut self.server {
            Server::InProcess { rt, cfg, running } => {
                cfg.listen = listen.to_string();
                let r = rt
                    .block_on(smith_ca::server::start(
                        smith_ca::datadir::DataDir::new(&data_dir),
                        (**cfg).clone(),
                    ))
                    .unwrap_or_else(|e| panic!("starting the CA on {listen}: {e:#}"));
                let addr = r.addr.to_string();
                *running = Some(r);
                addr
            }
            Server::Process {
                child: slot,
                serve_args,
                wrapper,
                env,
            } => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .expect("log");
                let mut cmd = match wrapper.split_first() {
                    Some((prog, args)) => {
                        let mut c = Command::new(prog);
                        c.args(args).arg(bin("smith-ca"));
                        c
                    }
                    None => Command::new(bin("smith-ca")),
                };
                let mut child = cmd
                    .args(["serve", "--data-dir"])
                    .arg(&data_dir)
                    .args(["--listen", listen])
                    .args(serve_args.iter())
                    .env("SMITH_LOG", "info,smith_ca=debug")
                    .envs(env.iter().map(|(k, v)| (k, v)))
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
                    .map(str::to_string);
                *slot = Some(child);
                addr.unwrap_or_else(|| {
                    panic!("unexpected first line {line:?}; log: {}", self.log())
                })
            }
        };
        self.url = format!("https://{addr}");
    }

    pub fn addr(&self) -> String {
        self.url.trim_start_matches("https://").to_string()
    }

    /// The CA's log (`serve.log`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Stops serving (SIGTERM to the binary; the in-process server stops the same way:
    /// long polls end, connections drain, the store flushes). Returns whether it stopped
    /// cleanly. The CA is then unreachable until [`TestCa::restart`].
    pub fn stop(&mut self) -> bool {
        match &mut self.server {
            Server::InProcess { rt, running, .. } => {
                if let Some(r) = running.take() {
                    rt.block_on(r.stop());
                }
                true
            }
            Server::Process { child, .. } => match child.take() {
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
            },
        }
    }

    /// Another `smith-ca serve` over a copy of this CA's data directory, as an operator
    /// makes a replica on another machine: on a shared PostgreSQL database it serves the
    /// same CA. Binary CAs only.
    pub fn replica(&self) -> TestCa {
        let (serve_args, wrapper, env) = match &self.server {
            Server::Process {
                serve_args,
                wrapper,
                env,
                ..
            } => (serve_args.clone(), wrapper.clone(), env.clone()),
            Server::InProcess { .. } => panic!("replica() is for binary CAs"),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("ca");
        let out = run(Command::new("cp")
            .args(["-a"])
            .arg(&self.data_dir)
            .arg(&data_dir));
        assert!(
            out.status.success(),
            "copying the data directory: {}",
            text(&out.stderr)
        );
        let _ = std::fs::remove_file(data_dir.join("ca.lock"));
        let mut ca = TestCa {
            dir,
            data_dir,
            url: String::new(),
            fingerprint: self.fingerprint.clone(),
            admin_token: self.admin_token.clone(),
            server: Server::Process {
                child: None,
                serve_args,
                wrapper,
                env,
            },
        };
        ca.serve("127.0.0.1:0");
        ca
    }

    /// `kill -9` of a binary CA (no drain, no flush). [`TestCa::restart`] brings it back.
    pub fn kill(&mut self) {
        if let Server::Process { child, .. } = &mut self.server {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Starts serving again on `addr` after [`TestCa::kill`] or [`TestCa::stop`].
    pub fn serve_on(&mut self, addr: &str) {
        self.serve(addr);
    }

    /// Stops (if serving) and starts again on the same port.
    pub fn restart(&mut self) {
        let addr = self.addr();
        assert!(self.stop(), "smith-ca did not stop cleanly: {}", self.log());
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(&addr).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.serve(&addr);
    }

    /// In-process only: stops, changes the settings with `configure`, and starts again on
    /// the same port (as an operator restarts `smith-ca serve` with other flags).
    pub fn restart_with(&mut self, configure: impl FnOnce(&mut ServeConfig)) {
        match &mut self.server {
            Server::InProcess { cfg, .. } => configure(cfg),
            Server::Process { .. } => panic!("restart_with is for in-process CAs"),
        }
        self.restart();
    }

    /// In-process only: the version of the CA's policy (what a host that synced now has).
    pub fn version(&self) -> u64 {
        match &self.server {
            Server::InProcess {
                running: Some(r), ..
            } => r.ca.authority.model().version(),
            _ => panic!("version() is for a serving in-process CA"),
        }
    }

    // --- files in the data directory ---------------------------------------------------

    /// The TLS root certificate (PEM), as hosts store it in `ca.crt`.
    pub fn root_pem(&self) -> String {
        self.read_data_file(&self.datadir().tls_root_cert())
    }

    /// The HTTPS server's certificate chain file and key file.
    pub fn tls_server_files(&self) -> (PathBuf, PathBuf) {
        let dd = self.datadir();
        (dd.tls_server_cert(), dd.tls_server_key())
    }

    /// The TLS root's certificate and key files (to forge client certificates).
    pub fn tls_root_files(&self) -> (PathBuf, PathBuf) {
        let dd = self.datadir();
        (dd.tls_root_cert(), dd.tls_root_key())
    }

    /// The user CA's public key line, without its newline.
    pub fn user_ca_public(&self) -> String {
        self.read_data_file(&self.user_ca_pub()).trim().to_string()
    }

    pub fn user_ca_pub(&self) -> PathBuf {
        self.datadir().user_ca_pub()
    }

    pub fn user_ca_key(&self) -> PathBuf {
        self.datadir().user_ca()
    }

    fn datadir(&self) -> smith_ca::datadir::DataDir {
        smith_ca::datadir::DataDir::new(&self.data_dir)
    }

    fn read_data_file(&self, p: &std::path::Path) -> String {
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    // --- the admin CLI (`smith-ca admin`, the binary) -----------------------------------

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

    // --- the admin API (typed; no binary needed) ----------------------------------------

    /// `group add NAME [--gid GID]`.
    pub fn add_group(&self, name: &str, gid: Option<u64>) -> smith_api::GroupInfo {
        self.admin_client()
            .add_group(&smith_api::GroupAdd {
                name: group_name(name),
                gid: gid.map(posix_id),
            })
            .unwrap_or_else(|e| panic!("group add {name}: {e}"))
    }

    /// `user add NAME --groups G,.. [--uid UID]` (the groups must exist).
    pub fn add_user(&self, name: &str, groups: &[&str], uid: Option<u64>) -> smith_api::UserInfo {
        self.admin_client()
            .add_user(&smith_api::UserAdd {
                name: user_name(name),
                groups: groups.iter().map(|g| group_name(g)).collect(),
                uid: uid.map(posix_id),
                gecos: None,
                shell: None,
                create_groups: false,
                reuse_uid: false,
                oidc_subject: None,
            })
            .unwrap_or_else(|e| panic!("user add {name}: {e}"))
    }

    pub fn add_member(&self, group: &str, user: &str) {
        self.admin_client()
            .add_member(&group_name(group), &user_name(user))
            .unwrap_or_else(|e| panic!("group add-member {group} {user}: {e}"));
    }

    pub fn remove_member(&self, group: &str, user: &str) {
        self.admin_client()
            .remove_member(&group_name(group), &user_name(user))
            .unwrap_or_else(|e| panic!("group remove-member {group} {user}: {e}"));
    }

    /// `grant add --group GROUP --tags TAGS --level LEVEL --max-ttl 1h`.
    pub fn grant(&self, group: &str, tags: &str, level: &str) {
        self.admin_client()
            .add_grant(&smith_api::GrantAdd {
                group: group_name(group),
                selector: smith_proto::Tags::parse(tags).expect("tags"),
                level: level.parse().expect("a level"),
                max_ttl_secs: 3600,
                source_cidrs: Vec::new(),
                require_reason: false,
                time_windows: Vec::new(),
                logins: Vec::new(),
                permits: Default::default(),
                force_command: None,
                sudo_commands: Vec::new(),
                sudo_as: Vec::new(),
            })
            .unwrap_or_else(|e| panic!("grant add {group} {tags} {level}: {e}"));
    }

    /// A single-use enrollment token for host `name` with `tags`, valid an hour.
    pub fn host_token(&self, tags: &str, name: &str) -> String {
        self.host_token_for(tags, name, 3600).token
    }

    /// [`TestCa::host_token`] valid `ttl_secs`; the whole answer (the token's id too).
    pub fn host_token_for(
        &self,
        tags: &str,
        name: &str,
        ttl_secs: u64,
    ) -> smith_api::TokenResponse {
        self.admin_client()
            .host_token(&smith_api::HostTokenRequestNamed {
                request: smith_api::HostTokenRequest {
                    tags: smith_proto::Tags::parse(tags).expect("tags"),
                    ttl_secs,
                },
                ssh_names: Vec::new(),
                names: vec![smith_proto::HostPattern::parse(name).expect("a host name")],
                uses: None,
            })
            .unwrap_or_else(|e| panic!("host token {tags} {name}: {e}"))
    }

    /// The SSH host certificates the CA issued to `host`, oldest first.
    pub fn host_ssh_certs(&self, host: &str) -> Vec<smith_api::HostCertInfo> {
        let mut certs = self
            .admin_client()
            .host_certs(&smith_api::HostCertQuery {
                host: Some(smith_proto::HostName::new(host).expect("a host name")),
                valid: false,
                limit: None,
            })
            .unwrap_or_else(|e| panic!("host certs {host}: {e}"));
        certs.sort_by_key(|c| (c.issued_at, c.serial));
        certs
    }

    /// The CA's audit records of `host` (at most 100,000), as JSON objects.
    pub fn audit_trail(&self, host: &str) -> Vec<serde_json::Value> {
        let entries = self
            .admin_client()
            .audit_list(&smith_api::AuditQuery {
                limit: Some(100_000),
                user: None,
                host: Some(host.to_string()),
                since: None,
            })
            .unwrap_or_else(|e| panic!("audit list --host {host}: {e}"));
        entries
            .into_iter()
            .map(|e| serde_json::to_value(e).expect("JSON"))
            .collect()
    }

    /// A pinned HTTPS client (optionally with an mTLS identity), for raw API calls.
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

    /// `GET path` without credentials: (status, body as JSON, or null).
    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http(None)
            .get(format!("{}{path}", self.url))
            .send()
            .expect("GET");
        (
            r.status().as_u16(),
            r.json().unwrap_or(serde_json::Value::Null),
        )
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
            serde_json::json!({"public_key": crate::public_key(), "scope": scope, "ttl_secs": 600});
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

    /// The typed API client with the admin token.
    pub fn admin_client(&self) -> smith_api::Client {
        self.client(Some(&self.admin_token), None)
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
        let token = self.host_token(tags, name);
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
}

impl Drop for TestCa {
    fn drop(&mut self) {
        self.stop();
    }
}

fn group_name(s: &str) -> smith_proto::GroupName {
    smith_proto::GroupName::new(s).expect("a group name")
}

fn user_name(s: &str) -> smith_proto::UserName {
    smith_proto::UserName::new(s).expect("a user name")
}

fn posix_id(id: u64) -> smith_proto::PosixId {
    smith_proto::PosixId::new(id).expect("a uid/gid")
}
