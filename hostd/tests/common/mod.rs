//! Shared test support for hostd's integration tests: a small fake CA (HTTPS with a
//! test TLS root, optional mTLS, implementing enroll, long-poll sync with deltas and
//! renewal), host roots populated with copies of the machine's sshd/nsswitch/PAM files,
//! tree snapshots for byte-for-byte comparisons, and helpers to run the real binaries.
#![allow(dead_code)]

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use smith_api::{EnrollRequest, EnrollResponse, ErrorBody, RenewRequest};
use smith_proto::snapshot::{SnapshotGroup, SnapshotUser, SyncResponse};
use smith_proto::{GroupName, HostName, Level, PosixId, Tags, UserName};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn smith_host() -> &'static str {
    env!("CARGO_BIN_EXE_smith-host")
}
pub fn smith_hostd() -> &'static str {
    env!("CARGO_BIN_EXE_smith-hostd")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether tests that need root may run; with `SMITH_E2E_REQUIRED=1` a missing
/// prerequisite is a failure, not a skip.
pub fn root_available(what: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("SMITH_E2E_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{what} needs root (SMITH_E2E_REQUIRED=1)");
    }
    eprintln!("skipping {what}: needs root");
    false
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// --- a user CA and the host CA (ssh-keygen) ------------------------------------------------

/// An OpenSSH CA key made with ssh-keygen.
pub struct SshCa {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub public: String,
}

impl SshCa {
    pub fn new() -> SshCa {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "test-ca", "-f"])
                .arg(&key),
        );
        let public = std::fs::read_to_string(key.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string();
        SshCa { dir, key, public }
    }

    /// Signs `pubkey_line`; returns the certificate line. `extra` are ssh-keygen options.
    pub fn sign(
        &self,
        pubkey_line: &str,
        id: &str,
        principals: &str,
        host: bool,
        extra: &[&str],
    ) -> String {
        let n = rand_suffix();
        let p = self.dir.path().join(format!("k{n}.pub"));
        std::fs::write(&p, format!("{pubkey_line}\n")).unwrap();
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-s"])
            .arg(&self.key)
            .args(["-I", id, "-n", principals]);
        if host {
            c.arg("-h");
        }
        c.args(extra).arg(&p);
        run_ok(&mut c);
        let cert = self.dir.path().join(format!("k{n}-cert.pub"));
        std::fs::read_to_string(cert).unwrap().trim().to_string()
    }

    /// A fresh user key and a certificate for it; returns the certificate's base64 (%k).
    pub fn user_cert_b64(&self, principal: &str, validity: &str, scope: Option<&str>) -> String {
        let n = rand_suffix();
        let k = self.dir.path().join(format!("u{n}"));
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&k),
        );
        let pubkey = std::fs::read_to_string(k.with_extension("pub")).unwrap();
        let scope_opt = scope.map(|s| format!("extension:scope@smith={s}"));
        let mut extra = vec!["-V", validity];
        if let Some(s) = &scope_opt {
            extra.push("-O");
            extra.push(s);
        }
        let line = self.sign(
            pubkey.trim(),
            &format!("smith:{principal}:test{n}"),
            principal,
            false,
            &extra,
        );
        line.split_whitespace().nth(1).unwrap().to_string()
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst) * 1000 + std::process::id() as u64 % 1000
}

pub fn run_ok(c: &mut Command) -> Output {
    let o = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    assert!(
        o.status.success(),
        "{c:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

// --- the fake CA -------------------------------------------------------------------------

#[derive(Clone)]
pub struct Token {
    pub tags: Tags,
    pub used: bool,
    pub expires_at: u64,
}

/// What the fake CA holds; tests change it through [`FakeCa::update`].
pub struct CaData {
    pub tokens: HashMap<String, Token>,
    /// Enrolled hosts and their tags.
    pub hosts: HashMap<String, Tags>,
    pub version: u64,
    /// Snapshot contents by version (for deltas).
    pub history: BTreeMap<u64, Vec<SnapshotUser>>,
    pub users: Vec<SnapshotUser>,
    pub groups: Vec<SnapshotGroup>,
    pub sudo_gid: u32,
    pub user_ca_keys: Vec<String>,
    pub krl_base64: Option<String>,
    /// Client certificates: valid from now - backdate to now - backdate + lifetime.
    pub cert_backdate_secs: u64,
    pub cert_lifetime_secs: u64,
    pub renewals: u32,
    /// (host, since, wait) of every sync request.
    pub syncs: Vec<(String, u64, u64)>,
    pub offer_renewal: bool,
    /// `ssh-keygen -V` validity of SSH host certificates signed at enrollment and on
    /// renewal.
    pub host_cert_validity_enroll: String,
    pub host_cert_validity_renew: String,
    /// What renewal answers for `ssh_host_keys`.
    pub renew_host_certs: RenewHostCerts,
    /// The host keys sent with each renewal.
    pub renew_host_keys: Vec<Vec<String>>,
}

/// How the fake CA answers `ssh_host_keys` on renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewHostCerts {
    /// Certificates for the keys sent.
    Sign,
    /// None (an older CA).
    Omit,
    /// Certificates for other keys (a broken CA): the host must keep its own.
    WrongKey,
}

struct Shared {
    data: Mutex<CaData>,
    changed: tokio::sync::watch::Sender<u64>,
    root_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    host_ca: SshCa,
}

#[derive(Clone)]
struct PeerCn(Option<String>);

pub struct FakeCa {
    pub url: String,
    pub addr: SocketAddr,
    pub fingerprint: String,
    pub root_pem: String,
    pub user_ca: SshCa,
    shared: Arc<Shared>,
    server_config: Arc<rustls::ServerConfig>,
    rt: Option<tokio::runtime::Runtime>,
}

fn err(status: StatusCode, code: &str, msg: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            code: code.into(),
            error: msg.into(),
        }),
    )
        .into_response()
}

/// Sets a certificate's validity (Unix seconds) without naming the `time` crate.
fn set_validity(p: &mut rcgen::CertificateParams, from: u64, to: u64) {
    p.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(from);
    p.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(to);
}

pub fn user(name: &str, uid: u64, level: Level, groups: &[&str]) -> SnapshotUser {
    SnapshotUser {
        name: UserName::new(name).unwrap(),
        uid: PosixId::new(uid).unwrap(),
        gecos: format!("{name} (test)"),
        shell: "/bin/bash".into(),
        groups: groups.iter().map(|g| GroupName::new(g).unwrap()).collect(),
        level,
    }
}

pub fn group(name: &str, gid: u64) -> SnapshotGroup {
    SnapshotGroup {
        name: GroupName::new(name).unwrap(),
        gid: PosixId::new(gid).unwrap(),
    }
}

impl FakeCa {
    /// Starts a CA on 127.0.0.1:<free port> with alice (ssh, dev) and oscar (sudo, ops).
    pub fn start() -> FakeCa {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut root_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        root_params.distinguished_name = rcgen::DistinguishedName::new();
        root_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Fake Smith Root");
        root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        root_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let root_cert = root_params.self_signed(&root_key).unwrap();
        let root_pem = root_cert.pem();
        let root_der = root_cert.der().to_vec();
        let issuer = rcgen::Issuer::new(root_params, root_key);

        let server_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut sp =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        sp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = sp.signed_by(&server_key, &issuer).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root_der.clone().into()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .unwrap();
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone(), root_der.clone().into()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .unwrap();

        let user_ca = SshCa::new();
        let users = vec![
            user("alice", 200001, Level::Ssh, &["dev"]),
            user("oscar", 200002, Level::Sudo, &["ops"]),
        ];
        let mut history = BTreeMap::new();
        history.insert(1, users.clone());
        let data = CaData {
            tokens: HashMap::new(),
            hosts: HashMap::new(),
            version: 1,
            history,
            users,
            groups: vec![group("dev", 200010), group("ops", 200011)],
            sudo_gid: 200000,
            user_ca_keys: vec![user_ca.public.clone()],
            krl_base64: None,
            cert_backdate_secs: 60,
            cert_lifetime_secs: 86400,
            renewals: 0,
            syncs: Vec::new(),
            offer_renewal: true,
            host_cert_validity_enroll: "-1m:+90d".into(),
            host_cert_validity_renew: "-1m:+90d".into(),
            renew_host_certs: RenewHostCerts::Sign,
            renew_host_keys: Vec::new(),
        };
        let (tx, _) = tokio::sync::watch::channel(1);
        let shared = Arc::new(Shared {
            data: Mutex::new(data),
            changed: tx,
            root_pem: root_pem.clone(),
            issuer,
            host_ca: SshCa::new(),
        });
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let mut ca = FakeCa {
            url: format!("https://{addr}"),
            addr,
            fingerprint: smith_api::tls::fingerprint(&root_der),
            root_pem,
            user_ca,
            shared,
            server_config: Arc::new(server_config),
            rt: None,
        };
        ca.serve(std_listener);
        ca
    }

    fn serve(&mut self, std_listener: std::net::TcpListener) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shared = self.shared.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config.clone());
        std_listener.set_nonblocking(true).unwrap();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let app = Router::new()
                .route(
                    "/v1/health",
                    get(|| async { Json(serde_json::json!({"status": "ok", "version": "fake"})) }),
                )
                .route("/v1/hosts/enroll", post(enroll))
                .route("/v1/host/sync", get(sync))
                .route("/v1/host/renew", post(renew))
                .with_state(shared);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let cn = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| {
                            smith_hostd::identity::summarize_der(c.as_ref())
                                .ok()
                                .and_then(|s| s.common_name)
                        });
                    let svc = hyper_util::service::TowerToHyperService::new(
                        app.layer(Extension(PeerCn(cn))),
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
                });
            }
        });
        self.rt = Some(rt);
    }

    /// Stops serving (connections are dropped): the CA is "down".
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }

    /// Serves again on the same address.
    pub fn restart(&mut self) {
        self.stop();
        let l = wait_for("the CA port to be free", Duration::from_secs(10), || {
            std::net::TcpListener::bind(self.addr).ok()
        });
        self.serve(l);
    }

    /// A single-use enrollment token for `tags`, valid `ttl` seconds.
    pub fn token(&self, tags: &str, ttl: i64) -> String {
        let t = format!("enroll-{}", rand_suffix());
        self.shared.data.lock().unwrap().tokens.insert(
            t.clone(),
            Token {
                tags: Tags::parse(tags).unwrap(),
                used: false,
                expires_at: (now() as i64 + ttl) as u64,
            },
        );
        t
    }

    /// Changes the data and wakes long-polls (a new version).
    pub fn update(&self, f: impl FnOnce(&mut CaData)) {
        let v = {
            let mut d = self.shared.data.lock().unwrap();
            f(&mut d);
            d.version += 1;
            let (v, users) = (d.version, d.users.clone());
            d.history.insert(v, users);
            v
        };
        self.shared.changed.send_replace(v);
    }

    /// Reads the data.
    pub fn with<T>(&self, f: impl FnOnce(&CaData) -> T) -> T {
        f(&self.shared.data.lock().unwrap())
    }

    /// Signs an SSH host key with the fake host CA.
    pub fn host_ca_public(&self) -> String {
        self.shared.host_ca.public.clone()
    }
}

impl Drop for FakeCa {
    fn drop(&mut self) {
        self.stop();
    }
}

fn issue_client_cert(shared: &Shared, host: &str, csr_pem: &str) -> Result<(String, u64), String> {
    let mut csr =
        rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| e.to_string())?;
    let (from, life) = {
        let d = shared.data.lock().unwrap();
        (now() - d.cert_backdate_secs, d.cert_lifetime_secs)
    };
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, host);
    csr.params.distinguished_name = dn;
    csr.params.subject_alt_names = vec![rcgen::SanType::DnsName(
        host.to_string()
            .try_into()
            .map_err(|e: rcgen::Error| e.to_string())?,
    )];
    csr.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    csr.params.is_ca = rcgen::IsCa::NoCa;
    set_validity(&mut csr.params, from, from + life);
    let cert = csr.signed_by(&shared.issuer).map_err(|e| e.to_string())?;
    Ok((cert.pem(), from + life))
}

async fn enroll(State(sh): State<Arc<Shared>>, Json(req): Json<EnrollRequest>) -> Response {
    let tags = {
        let mut d = sh.data.lock().unwrap();
        let Some(t) = d.tokens.get_mut(&req.token) else {
            return err(
                StatusCode::UNAUTHORIZED,
                "bad_token",
                "unknown enrollment token",
            );
        };
        if t.used {
            return err(
                StatusCode::UNAUTHORIZED,
                "token_used",
                "enrollment token already used",
            );
        }
        if t.expires_at <= now() {
            return err(
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "enrollment token expired",
            );
        }
        if d.hosts.contains_key(req.host_name.as_str()) {
            return err(StatusCode::CONFLICT, "host_exists", "host already enrolled");
        }
        let t = d.tokens.get_mut(&req.token).unwrap();
        t.used = true;
        let tags = t.tags.clone();
        d.hosts.insert(req.host_name.to_string(), tags.clone());
        tags
    };
    let (client_cert_pem, not_after) =
        match issue_client_cert(&sh, req.host_name.as_str(), &req.csr_pem) {
            Ok(c) => c,
            Err(e) => return err(StatusCode::BAD_REQUEST, "bad_csr", &e),
        };
    let validity = sh.data.lock().unwrap().host_cert_validity_enroll.clone();
    let ssh_host_certs = req
        .ssh_host_keys
        .iter()
        .map(|k| {
            sh.host_ca.sign(
                k,
                &format!("host:{}", req.host_name),
                req.host_name.as_str(),
                true,
                &["-V", &validity],
            )
        })
        .collect();
    let user_ca_keys = sh.data.lock().unwrap().user_ca_keys.clone();
    Json(EnrollResponse {
        host_name: req.host_name,
        tags,
        client_cert_pem,
        root_pem: sh.root_pem.clone(),
        client_cert_not_after: not_after,
        user_ca_keys,
        ssh_host_certs,
    })
    .into_response()
}

async fn renew(
    State(sh): State<Arc<Shared>>,
    Extension(PeerCn(cn)): Extension<PeerCn>,
    Json(req): Json<RenewRequest>,
) -> Response {
    let Some(host) = cn else {
        return err(
            StatusCode::UNAUTHORIZED,
            "mtls_required",
            "client certificate required",
        );
    };
    if !sh.data.lock().unwrap().offer_renewal {
        return err(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    }
    if !sh.data.lock().unwrap().hosts.contains_key(&host) {
        return err(StatusCode::FORBIDDEN, "host_removed", "host was removed");
    }
    match issue_client_cert(&sh, &host, &req.csr_pem) {
        Ok((pem, not_after)) => {
            let (mode, validity) = {
                let mut d = sh.data.lock().unwrap();
                d.renewals += 1;
                d.renew_host_keys.push(req.ssh_host_keys.clone());
                (d.renew_host_certs, d.host_cert_validity_renew.clone())
            };
            let certs: Vec<String> = match mode {
                RenewHostCerts::Omit => Vec::new(),
                RenewHostCerts::Sign => req
                    .ssh_host_keys
                    .iter()
                    .map(|k| {
                        sh.host_ca
                            .sign(k, &format!("host:{host}"), &host, true, &["-V", &validity])
                    })
                    .collect(),
                RenewHostCerts::WrongKey => req
                    .ssh_host_keys
                    .iter()
                    .map(|_| {
                        let d = tempfile::tempdir().unwrap();
                        let k = d.path().join("k");
                        run_ok(
                            Command::new("ssh-keygen")
                                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                                .arg(&k),
                        );
                        let other = std::fs::read_to_string(k.with_extension("pub")).unwrap();
                        sh.host_ca.sign(
                            other.trim(),
                            &format!("host:{host}"),
                            &host,
                            true,
                            &["-V", &validity],
                        )
                    })
                    .collect(),
            };
            Json(serde_json::json!({
                "host_name": host,
                "tags": "",
                "client_cert_pem": pem,
                "root_pem": sh.root_pem,
                "client_cert_not_after": not_after,
                "user_ca_keys": [],
                "ssh_host_certs": certs,
            }))
            .into_response()
        }
        Err(e) => err(StatusCode::BAD_REQUEST, "bad_csr", &e),
    }
}

#[derive(serde::Deserialize)]
struct SyncQuery {
    since: u64,
    wait: u64,
    host: Option<String>,
}

async fn sync(
    State(sh): State<Arc<Shared>>,
    Extension(PeerCn(cn)): Extension<PeerCn>,
    Query(q): Query<SyncQuery>,
) -> Response {
    let Some(host) = cn else {
        return err(
            StatusCode::UNAUTHORIZED,
            "mtls_required",
            "client certificate required",
        );
    };
    if q.host.as_deref().is_some_and(|h| h != host) {
        return err(StatusCode::FORBIDDEN, "wrong_host", "host mismatch");
    }
    let mut rx = sh.changed.subscribe();
    {
        let mut d = sh.data.lock().unwrap();
        if !d.hosts.contains_key(&host) {
            return err(StatusCode::FORBIDDEN, "host_removed", "unknown host");
        }
        d.syncs.push((host.clone(), q.since, q.wait));
    }
    let current = sh.data.lock().unwrap().version;
    if q.since == current {
        let wait = Duration::from_secs(q.wait.min(60));
        let woke = tokio::time::timeout(wait, rx.wait_for(|v| *v > current)).await;
        if woke.is_err() {
            return StatusCode::NO_CONTENT.into_response();
        }
    }
    let d = sh.data.lock().unwrap();
    let tags = d.hosts.get(&host).cloned().unwrap_or_default();
    let (base_version, users, removed_users) = match d.history.get(&q.since) {
        Some(old) if q.since > 0 => {
            let upserts: Vec<SnapshotUser> = d
                .users
                .iter()
                .filter(|u| !old.contains(u))
                .cloned()
                .collect();
            let removed: Vec<UserName> = old
                .iter()
                .filter(|o| !d.users.iter().any(|u| u.name == o.name))
                .map(|o| o.name.clone())
                .collect();
            (Some(q.since), upserts, removed)
        }
        _ => (None, d.users.clone(), Vec::new()),
    };
    Json(SyncResponse {
        host: HostName::new(&host).unwrap(),
        tags,
        version: d.version,
        base_version,
        users,
        removed_users,
        groups: d.groups.clone(),
        grants: vec![],
        sudo_gid: PosixId::new(d.sudo_gid as u64).unwrap(),
        users_gid: None,
        user_ca_keys: d.user_ca_keys.clone(),
        krl_base64: d.krl_base64.as_deref().map(std::sync::Arc::from),
        epoch: None,
    })
    .into_response()
}

// --- host roots ----------------------------------------------------------------------------

/// A host's private file system under a temporary directory.
pub struct HostRoot {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
}

const SAMPLE_SSHD: &str = "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\nPrintMotd no\nAcceptEnv LANG LC_*\nSubsystem sftp /usr/lib/openssh/sftp-server\n";
const SAMPLE_NSS: &str = "passwd:         files systemd\ngroup:          files systemd\nshadow:         files systemd\ngshadow:        files systemd\n\nhosts:          files dns\n";
const SAMPLE_PAM_SSHD: &str = "@include common-auth\naccount    required     pam_nologin.so\n@include common-account\nsession    required     pam_loginuid.so\n@include common-session\nsession    optional     pam_motd.so  motd=/run/motd.dynamic\n@include common-password\n";
const SAMPLE_PAM_SUDO: &str = "#%PAM-1.0\nsession    required   pam_limits.so\n@include common-auth\n@include common-account\n@include common-session-noninteractive\n";

fn copy_or(src: &str, dst: &Path, sample: &str) {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    match std::fs::read(src) {
        Ok(b) => std::fs::write(dst, b).unwrap(),
        Err(_) => std::fs::write(dst, sample).unwrap(),
    }
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o644)).unwrap();
}

impl HostRoot {
    /// Copies of the machine's sshd_config, nsswitch.conf and pam.d/{sshd,sudo} (or
    /// Debian-like samples), fresh SSH host keys, and local accounts root, deploy
    /// (uid 1001), svc (uid 200050) and a local group `lab`.
    pub fn new() -> HostRoot {
        let tmp = tempfile::Builder::new()
            .prefix("smith-host-")
            .tempdir()
            .unwrap();
        // Let unprivileged users (sshd's principals user, `nobody` tests) traverse it.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let etc = root.join("etc");
        copy_or(
            "/etc/ssh/sshd_config",
            &etc.join("ssh/sshd_config"),
            SAMPLE_SSHD,
        );
        std::fs::create_dir_all(etc.join("ssh/sshd_config.d")).unwrap();
        copy_or("/etc/nsswitch.conf", &etc.join("nsswitch.conf"), SAMPLE_NSS);
        copy_or("/etc/pam.d/sshd", &etc.join("pam.d/sshd"), SAMPLE_PAM_SSHD);
        copy_or("/etc/pam.d/sudo", &etc.join("pam.d/sudo"), SAMPLE_PAM_SUDO);
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\ndeploy:x:1001:1001:Deploy:/home/deploy:/bin/bash\nsvc:x:200050:200050::/srv:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("group"),
            "root:x:0:\nnogroup:x:65534:\ndeploy:x:1001:\nlab:x:3000:deploy\n",
        )
        .unwrap();
        for t in ["ed25519", "ecdsa"] {
            let k = etc.join(format!("ssh/ssh_host_{t}_key"));
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", t, "-N", "", "-f"])
                    .arg(&k),
            );
        }
        HostRoot { tmp, root }
    }

    pub fn path(&self, logical: &str) -> PathBuf {
        self.root.join(logical.trim_start_matches('/'))
    }

    pub fn read(&self, logical: &str) -> String {
        std::fs::read_to_string(self.path(logical)).unwrap_or_else(|e| panic!("{logical}: {e}"))
    }

    /// `smith-host --root ROOT ARGS`.
    pub fn host_cmd(&self, args: &[&str]) -> Output {
        Command::new(smith_host())
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env_remove("SMITH_CA_URL")
            .env_remove("SMITH_CA_FINGERPRINT")
            .env_remove("SMITH_ENROLL_TOKEN")
            .output()
            .unwrap()
    }

    pub fn activate(&self, ca: &FakeCa, token: &str, name: &str) -> Output {
        self.host_cmd(&[
            "activate",
            "--ca",
            &ca.url,
            "--token",
            token,
            "--ca-fingerprint",
            &ca.fingerprint,
            "--name",
            name,
            "--no-start",
            "--json",
        ])
    }

    /// Activates as `name` with a fresh token for `tags`; panics on failure.
    pub fn activate_ok(&self, ca: &FakeCa, name: &str, tags: &str) -> serde_json::Value {
        let o = self.activate(ca, &ca.token(tags, 3600), name);
        assert!(
            o.status.success(),
            "activate failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Starts smith-hostd in the foreground, logging to `hostd.log` beside the root.
    pub fn start_daemon(&self) -> Daemon {
        let log = self.tmp.path().join("hostd.log");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(smith_hostd())
            .arg("--root")
            .arg(&self.root)
            .args(["--log", "stderr"])
            .env("SMITH_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        let d = Daemon { child, log };
        let sock = self.path("/run/smith/hostd.sock");
        wait_for("the daemon's socket", Duration::from_secs(20), || {
            smith_hostd::localclient::ping(&sock).ok()
        });
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.path("/run/smith/hostd.sock")
    }

    /// The cache file parsed back into contents.
    pub fn cache(&self) -> Option<smith_proto::cache::CacheContents> {
        let b = std::fs::read(self.path("/var/lib/smith/nss.cache")).ok()?;
        let v = smith_proto::cache::CacheView::parse(&b).ok()?;
        smith_hostd::view::contents_from_view(&v)
    }

    pub fn cache_users(&self) -> Vec<String> {
        self.cache()
            .map(|c| c.users.into_iter().map(|u| u.name).collect())
            .unwrap_or_default()
    }
}

pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }
    /// SIGTERM and wait; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "daemon did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// SIGKILL (no clean shutdown).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- tree snapshots ------------------------------------------------------------------------

/// Every entry under `dir`: relative path → (type, mode, bytes).
pub fn snapshot(dir: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (char, u32, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.is_dir() {
                out.insert(rel, ('d', mode, Vec::new()));
                walk(base, &p, out);
            } else if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    (
                        'l',
                        0,
                        std::fs::read_link(&p)
                            .unwrap()
                            .display()
                            .to_string()
                            .into_bytes(),
                    ),
                );
            } else if m.is_file() {
                out.insert(rel, ('f', mode, std::fs::read(&p).unwrap()));
            } else {
                out.insert(rel, ('s', mode, Vec::new()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Asserts two snapshots are equal, naming the differences.
pub fn assert_same_tree(
    a: &BTreeMap<String, (char, u32, Vec<u8>)>,
    b: &BTreeMap<String, (char, u32, Vec<u8>)>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => diffs.push(format!("{k} disappeared")),
            Some(w) if w != v => diffs.push(format!(
                "{k} differs: {:?} {:o} {:?} vs {:?} {:o} {:?}",
                v.0,
                v.1,
                String::from_utf8_lossy(&v.2)
                    .chars()
                    .take(200)
                    .collect::<String>(),
                w.0,
                w.1,
                String::from_utf8_lossy(&w.2)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            diffs.push(format!("{k} appeared"));
        }
    }
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
}

/// Runs `/usr/sbin/sshd ARGS` in a private mount namespace with a fresh `/run` (sshd
/// needs `/run/sshd`; the machine's own is never touched). `None` when sshd or root is
/// unavailable (a failure under SMITH_E2E_REQUIRED=1).
pub fn sshd_in_ns(args: &[&str]) -> Option<Output> {
    if !Path::new("/usr/sbin/sshd").exists() {
        assert!(
            !std::env::var("SMITH_E2E_REQUIRED").is_ok_and(|v| v == "1"),
            "/usr/sbin/sshd is required"
        );
        return None;
    }
    if !root_available("sshd checks") {
        return None;
    }
    Some(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd && exec /usr/sbin/sshd \"$@\"",
            )
            .arg("sh")
            .args(args)
            .output()
            .unwrap(),
    )
}
