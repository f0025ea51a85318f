//! The one client of the CA's API, with one typed method per endpoint, for every caller:
//! `smith`, `smith-ca admin`, `smith-host` and smith-hostd, xtask and the tests.
//!
//! Two faces over the same code: [`Client`] (blocking, for CLIs) and [`AsyncClient`]
//! (for hostd and other async callers). A method builds a [`Call`] (method, path from
//! [`crate::endpoints`], JSON body, timeout, largest answer accepted, how to decode),
//! one async executor sends it and maps the answer; the blocking face runs that same
//! future on a private single-threaded runtime. Every refusal of the CA becomes
//! [`ClientError::Status`] with a typed [`ErrorCode`]; a failure to reach it keeps the
//! typed transport error ([`ClientError::tls_error`] tells a TLS alert apart).
//!
//! Authentication: a bearer token (people, the admin) and/or an mTLS identity (hosts),
//! both fixed when the client is built; the server is trusted only through
//! [`crate::tls`] (the pinned root).
//!
//! Replicas ([`crate::replicas`]): a client may be given several URLs of one CA. Each
//! request goes to the replica in use; when that one does not answer (connection refused
//! or reset, no TLS handshake within [`FAILOVER_CONNECT_TIMEOUT`], no answer in time, a
//! 502/503) the clients move to the next URL, and the request is sent there too when
//! that cannot do it twice: it never left (connect phase), it is a `GET`, or the replica
//! refused it unprocessed (502/503). Requests still waiting on a replica found failed by
//! another request give up ([`ClientError::Unresponsive`]). A long poll
//! ([`ApiClient::sync`] with `beat`) is told from a hung replica by the CA's heartbeat:
//! a byte every `beat` seconds while it waits; none within [`beat_deadline`] is a hung
//! replica.
//!
//! Owns: request building, timeouts, response size bounds, and the mapping of HTTP
//! answers to [`ClientError`]. Must never: trust anything but the pinned root, accept an
//! unbounded response body, print a bearer token, or be used (blocking face) from inside
//! an async runtime.

use crate::chain::{AuditAck, AuditBatch};
use crate::endpoints as ep;
use crate::error::ErrorCode;
use crate::people::*;
use crate::replicas::Replicas;
use crate::types::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use smith_proto::snapshot::SyncResponse;
use smith_proto::{GroupName, HostName, UserName};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use crate::tls::{Identity, Trust};

/// Largest answer accepted from most endpoints.
pub const MAX_BODY: usize = 1 << 20;
/// Largest sync answer or listing accepted (a 10,000-user snapshot is a few MB).
pub const MAX_LARGE_BODY: usize = 64 << 20;
/// Most bytes of an error answer read.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Most characters of a non-JSON error answer kept as its message.
const MAX_ERROR_TEXT: usize = 500;
/// An audit upload may take longer than other calls (up to 1 MiB of records, fsync).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// A long poll may take this much longer than its `wait` (at most the client's timeout).
const LONG_POLL_GRACE: Duration = Duration::from_secs(20);
/// With several replicas, a connection (TCP and TLS handshake) must be up within this;
/// else the next replica is tried (a stopped process still completes TCP handshakes
/// from the kernel's backlog, but never TLS).
pub const FAILOVER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A replica tried again while another is in use (see [`crate::replicas`]) must answer
/// within this (a long poll: its headers within [`beat_deadline`] when it was seen
/// beating), so that a preferred replica that still hangs costs little.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// The response header a CA sends on a long poll with a heartbeat: its period, seconds.
pub const BEAT_HEADER: &str = "smith-beat";
/// Heartbeat period hostd asks of the CA's long polls (`SyncQuery::beat`).
pub const SYNC_BEAT_SECS: u64 = 3;

/// How long a long poll with a heartbeat of `beat` seconds may stay silent before the
/// replica counts as hung.
pub fn beat_deadline(beat: u64) -> Duration {
    Duration::from_secs(beat.clamp(1, 30) * 2 + 4)
}

/// What the CLIs add to "cannot reach the Smith CA" ([`ClientOptions::unreachable_hint`]).
pub const CLI_UNREACHABLE_HINT: &str = "check the CA URL (--ca-url or SMITH_CA_URL), the pinned \
     fingerprint (--ca-fingerprint or SMITH_CA_FINGERPRINT) and that `smith-ca serve` is running";

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// e.g. `https://ca.example.com:8443`
    pub base_url: String,
    pub trust: Trust,
    /// Bearer token (admin, user, or OIDC ID token).
    pub token: Option<String>,
    /// mTLS identity (hosts).
    pub identity: Option<Identity>,
    /// Per request (a long poll gets its `wait` on top; an audit upload at least 60 s).
    pub timeout: Duration,
    /// Said after "cannot reach the Smith CA ..." (what the user should check).
    pub unreachable_hint: Option<&'static str>,
    /// Several URLs of this CA, shared with other clients (see [`crate::replicas`]);
    /// `None`: `base_url` alone.
    pub replicas: Option<Arc<Replicas>>,
}

impl ClientOptions {
    /// No credentials, 30 s timeout, no hint.
    pub fn new(base_url: impl Into<String>, trust: Trust) -> ClientOptions {
        ClientOptions {
            base_url: base_url.into(),
            trust,
            token: None,
            identity: None,
            timeout: Duration::from_secs(30),
            unreachable_hint: None,
            replicas: None,
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Bad local configuration (URL, fingerprint, PEM files).
    #[error("{0}")]
    Config(String),
    /// The CA could not be reached, the TLS handshake failed or the connection broke.
    /// `cause` is the typed error (its chain is in the message; it is not `source()`,
    /// so that chains of errors do not print it twice).
    #[error("cannot reach the Smith CA at {url}: {}{}", error_chain(cause), transport_hint(url, cause, *hint))]
    Transport {
        url: String,
        cause: reqwest::Error,
        hint: Option<&'static str>,
    },
    /// The CA answered with an error. `wire_code` is the code as sent (also for codes
    /// this build does not know, `code` then being [`ErrorCode::Unrecognized`]; and
    /// `http_error` for an answer that is not an error body).
    #[error("the CA refused the request ({status} {wire_code}): {message}")]
    Status {
        status: u16,
        code: ErrorCode,
        wire_code: String,
        message: String,
    },
    /// The CA answered something this client does not understand, or too much.
    #[error("unexpected answer from the CA: {0}")]
    Decode(String),
    /// The request body could not be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(serde_json::Error),
    /// The replica stopped answering: no heartbeat of a long poll in time, or another
    /// request found it failed meanwhile (the clients moved to another replica).
    #[error("the Smith CA at {url} stopped answering: {why}")]
    Unresponsive { url: String, why: String },
}

/// What to do about a transport error: a server certificate that does not name the
/// URL's host gets its own advice (the pinned root is right, the name is not), anything
/// else the caller's hint.
fn transport_hint(url: &str, cause: &reqwest::Error, hint: Option<&'static str>) -> String {
    use rustls::CertificateError as C;
    if let Some(rustls::Error::InvalidCertificate(
        C::NotValidForName | C::NotValidForNameContext { .. },
    )) = tls_error_in(cause)
    {
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| url.to_string());
        return format!(
            "\nhint: the CA's server certificate does not name '{host}' (the fingerprint is right, \
             the name is not): use a URL with a name the certificate lists (smith-ca init printed \
             them as 'server certificate names'), or create the CA with \
             `smith-ca init --url https://{host}:PORT` (or --san {host})"
        );
    }
    hint.map(|h| format!("\nhint: {h}")).unwrap_or_default()
}

/// The TLS error somewhere in `cause`'s chain.
fn tls_error_in<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(cause);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        // io::Error::source() skips the error it wraps; look inside.
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => e.source(),
        };
    }
    None
}

impl ClientError {
    /// HTTP status of a refusal, if that is what this is.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The CA's error code, if it refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The TLS error that broke the connection, if any (e.g. the server's alert
    /// `rustls::Error::AlertReceived(AlertDescription::CertificateExpired)`).
    pub fn tls_error(&self) -> Option<&rustls::Error> {
        let ClientError::Transport { cause, .. } = self else {
            return None;
        };
        tls_error_in(cause)
    }
}

/// The whole chain of causes of an error, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

// --- one request, described ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Delete,
}

#[derive(Debug, Clone, Copy)]
enum Wait {
    /// The client's timeout.
    Default,
    /// A long poll of this many seconds.
    LongPoll(u64),
    /// At least this long.
    AtLeast(Duration),
}

/// One request to the CA and how to read its answer: everything both faces share.
struct Call<T> {
    method: Method,
    /// Path and query, e.g. `/v1/host/sync?since=3&wait=25`.
    path: String,
    body: Option<Result<Vec<u8>, serde_json::Error>>,
    wait: Wait,
    /// Largest successful answer accepted.
    limit: usize,
    /// `None`: 204 No Content.
    decode: fn(Option<&[u8]>) -> Result<T, String>,
    /// A bearer for this call instead of the client's (an enrollment token, sent as a
    /// header too so that the CA checks it before reading the body).
    bearer: Option<String>,
}

fn required<T: DeserializeOwned>(body: Option<&[u8]>) -> Result<T, String> {
    match body {
        Some(b) => serde_json::from_slice(b).map_err(|e| e.to_string()),
        None => Err("empty response".into()),
    }
}

/// 204, or (a long poll with a heartbeat) a body of whitespace and `null`: `None`.
fn optional<T: DeserializeOwned>(body: Option<&[u8]>) -> Result<Option<T>, String> {
    match body {
        Some(b) if b.trim_ascii().is_empty() => Ok(None),
        Some(b) => serde_json::from_slice::<Option<T>>(b).map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

impl<T: DeserializeOwned> Call<T> {
    fn new(method: Method, path: impl Into<String>) -> Call<T> {
        Call {
            method,
            path: path.into(),
            body: None,
            wait: Wait::Default,
            limit: MAX_BODY,
            decode: required::<T>,
            bearer: None,
        }
    }
    fn get(path: impl Into<String>) -> Call<T> {
        Call::new(Method::Get, path)
    }
    fn delete(path: impl Into<String>) -> Call<T> {
        Call::new(Method::Delete, path)
    }
    fn post<B: Serialize + ?Sized>(path: impl Into<String>, body: &B) -> Call<T> {
        let mut c = Call::new(Method::Post, path);
        c.body = Some(serde_json::to_vec(body));
        c
    }
    /// A listing or snapshot: up to [`MAX_LARGE_BODY`].
    fn large(mut self) -> Call<T> {
        self.limit = MAX_LARGE_BODY;
        self
    }
}

/// `path?query` (just `path` when every parameter is absent).
fn with_query<Q: Serialize>(path: &str, q: &Q) -> String {
    match serde_urlencoded::to_string(q) {
        Ok(s) if s.is_empty() => path.to_string(),
        Ok(s) => format!("{path}?{s}"),
        // Every query type is a flat struct of scalars, which always encodes.
        Err(_) => path.to_string(),
    }
}

/// What an answer (status and body) means: the decoded value, or the CA's refusal.
fn map_answer<T>(
    status: u16,
    body: &[u8],
    path: &str,
    decode: fn(Option<&[u8]>) -> Result<T, String>,
) -> Result<T, ClientError> {
    let route = path.split('?').next().unwrap_or(path);
    match status {
        204 => decode(None).map_err(|e| ClientError::Decode(format!("{route}: {e}"))),
        200..=299 => decode(Some(body)).map_err(|e| ClientError::Decode(format!("{route}: {e}"))),
        _ => Err(refusal(status, body)),
    }
}

/// A non-2xx answer as [`ClientError::Status`].
fn refusal(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ClientError::Status {
            status,
            code: ErrorCode::parse(&b.code),
            wire_code: b.code,
            message: b.error,
        },
        Err(_) => ClientError::Status {
            status,
            code: ErrorCode::Unrecognized,
            wire_code: "http_error".into(),
            message: String::from_utf8_lossy(body)
                .chars()
                .take(MAX_ERROR_TEXT)
                .collect(),
        },
    }
}

// --- the executor (async; the blocking face runs it to completion) ------------------------

#[derive(Clone)]
struct Core {
    http: reqwest::Client,
    replicas: Arc<Replicas>,
    token: Option<String>,
    timeout: Duration,
    hint: Option<&'static str>,
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
    /// No heartbeat in time.
    Silent(Duration),
}

/// Whether an error says the replica is not answering, and if so whether the request
/// may have been processed (`Some(true)`).
fn not_answering(e: &ClientError) -> Option<bool> {
    match e {
        ClientError::Transport { cause, .. } => Some(!cause.is_connect()),
        ClientError::Unresponsive { .. } => Some(true),
        ClientError::Status {
            status: 502 | 503, ..
        } => Some(false),
        ClientError::Status { status: 504, .. } => Some(true),
        _ => None,
    }
}

impl Core {
    fn new(opts: ClientOptions) -> Result<Core, ClientError> {
        let replicas = match opts.replicas {
            Some(r) => r,
            None => Arc::new(
                Replicas::new(vec![opts.base_url.trim_end_matches('/').to_string()])
                    .map_err(ClientError::Config)?,
            ),
        };
        let tls = crate::tls::client_config(&opts.trust, opts.identity.as_ref())
            .map_err(ClientError::Config)?;
        let mut connect = opts.timeout.min(Duration::from_secs(10));
        if replicas.len() > 1 {
            connect = connect.min(FAILOVER_CONNECT_TIMEOUT);
        }
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(connect)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ClientError::Config(error_chain(&e)))?;
        Ok(Core {
            http,
            replicas,
            token: opts.token,
            timeout: opts.timeout,
            hint: opts.unreachable_hint,
        })
    }

    fn timeout(&self, wait: Wait) -> Duration {
        match wait {
            Wait::Default => self.timeout,
            Wait::LongPoll(s) => Duration::from_secs(s) + self.timeout.min(LONG_POLL_GRACE),
            Wait::AtLeast(d) => self.timeout.max(d),
        }
    }

    fn transport(&self, url: &str, cause: reqwest::Error) -> ClientError {
        ClientError::Transport {
            url: url.to_string(),
            cause,
            hint: self.hint,
        }
    }

    /// Reads at most `limit` bytes of the body; with a heartbeat, each piece must come
    /// within `silence`.
    async fn body(
        resp: &mut reqwest::Response,
        limit: usize,
        silence: Option<Duration>,
    ) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        loop {
            let next = match silence {
                Some(d) => tokio::time::timeout(d, resp.chunk())
                    .await
                    .map_err(|_| BodyError::Silent(d))?,
                None => resp.chunk().await,
            };
            let Some(c) = next.map_err(BodyError::Transport)? else {
                break;
            };
            if out.len() + c.len() > limit {
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    /// The start of an error answer (enough to explain it; the rest, or a broken
    /// connection, does not matter).
    async fn error_body(resp: &mut reqwest::Response) -> Vec<u8> {
        let mut out = Vec::new();
        while let Ok(Some(c)) = resp.chunk().await {
            let room = MAX_ERROR_BODY - out.len();
            out.extend_from_slice(&c[..c.len().min(room)]);
            if out.len() == MAX_ERROR_BODY {
                break;
            }
        }
        out
    }

    /// Sends `call` to the replica in use, and on to the others as the module doc says.
    async fn execute<T>(&self, mut call: Call<T>) -> Result<T, ClientError> {
        let body = call.body.take().transpose().map_err(ClientError::Encode)?;
        let several = self.replicas.len() > 1;
        let mut last = None;
        for i in self.replicas.attempt_order() {
            let failures = self.replicas.failure_count(i);
            let base = self.replicas.url(i).to_string();
            let probe = self.replicas.current_index() != i;
            let attempt = self.attempt(&call, i, &base, body.clone(), probe);
            let r = if several {
                tokio::select! {
                    r = attempt => r,
                    _ = self.replicas.failed_since(i, failures) => Err(ClientError::Unresponsive {
                        url: base.clone(),
                        why: "another request found it failed; moving to another replica".into(),
                    }),
                }
            } else {
                attempt.await
            };
            let Err(e) = r else {
                self.replicas.answered(i);
                return r;
            };
            let Some(maybe_done) = not_answering(&e) else {
                self.replicas.answered(i);
                return Err(e);
            };
            if !several {
                return Err(e);
            }
            self.replicas.failed(i, &error_chain(&e));
            if maybe_done && call.method != Method::Get {
                return Err(e);
            }
            last = Some(e);
        }
        Err(last.unwrap_or_else(|| ClientError::Config("no CA URL".into())))
    }

    /// One try of `call` at replica `i` (`base`); `probe`: not the replica in use.
    async fn attempt<T>(
        &self,
        call: &Call<T>,
        i: usize,
        base: &str,
        body: Option<Vec<u8>>,
        probe: bool,
    ) -> Result<T, ClientError> {
        let url = format!("{base}{}", call.path);
        let method = match call.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut req = self
            .http
            .request(method, &url)
            .timeout(self.timeout(call.wait));
        if let Some(t) = call.bearer.as_ref().or(self.token.as_ref()) {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        // How long the headers may take: a replica known to beat answers a long poll's
        // at once; a replica tried while another is in use must answer soon.
        let headers_within = match call.wait {
            Wait::LongPoll(_) => self.replicas.beat(i).map(beat_deadline),
            _ => probe.then_some(PROBE_DEADLINE),
        };
        let sent = req.send();
        let sent = match headers_within {
            Some(d) => match tokio::time::timeout(d, sent).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(ClientError::Unresponsive {
                        url,
                        why: format!("no answer within {} s", d.as_secs()),
                    })
                }
            },
            None => sent.await,
        };
        let mut resp = sent.map_err(|e| self.transport(&url, e))?;
        let status = resp.status().as_u16();
        // A long poll with a heartbeat: silence means a hung replica.
        let beat = resp
            .headers()
            .get(BEAT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| matches!(call.wait, Wait::LongPoll(_)));
        if let Some(b) = beat {
            self.replicas.saw_beat(i, b);
        }
        let silence = beat.map(beat_deadline);
        let body = if resp.status().is_success() {
            match Self::body(&mut resp, call.limit, silence).await {
                Ok(b) => b,
                Err(BodyError::TooLarge) => {
                    return Err(ClientError::Decode(format!(
                        "the answer from {url} is larger than {} bytes",
                        call.limit
                    )))
                }
                Err(BodyError::Transport(e)) => return Err(self.transport(&url, e)),
                Err(BodyError::Silent(d)) => {
                    return Err(ClientError::Unresponsive {
                        url,
                        why: format!("no heartbeat of the long poll for {} s", d.as_secs()),
                    })
                }
            }
        } else {
            Self::error_body(&mut resp).await
        };
        map_answer(status, &body, &call.path, call.decode)
    }
}

// --- the two faces ---------------------------------------------------------------------------

/// A boxed future, as the async face returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

mod sealed {
    pub trait Sealed {}
}

/// How a client's methods deliver their result: [`Blocking`] or [`Async`].
pub trait Face: sealed::Sealed + Send + Sync + 'static {
    /// What a method returns for a call answering `T`.
    type Output<'a, T: 'a>;
    #[doc(hidden)]
    fn run<'a, T: 'a>(&'a self, call: BoxFuture<'a, Result<T, ClientError>>)
        -> Self::Output<'a, T>;
}

/// Methods return `Result`s; each call runs on the client's own single-threaded
/// runtime. Never use it (nor drop it) inside an async runtime.
pub struct Blocking {
    rt: tokio::runtime::Runtime,
}

/// Methods return futures (`Send`).
pub struct Async(());

impl sealed::Sealed for Blocking {}
impl sealed::Sealed for Async {}

impl Face for Blocking {
    type Output<'a, T: 'a> = Result<T, ClientError>;
    fn run<'a, T: 'a>(
        &'a self,
        call: BoxFuture<'a, Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        self.rt.block_on(call)
    }
}

impl Face for Async {
    type Output<'a, T: 'a> = BoxFuture<'a, Result<T, ClientError>>;
    fn run<'a, T: 'a>(
        &'a self,
        call: BoxFuture<'a, Result<T, ClientError>>,
    ) -> BoxFuture<'a, Result<T, ClientError>> {
        call
    }
}

/// A client of the CA's API; see the module doc. Use [`Client`] or [`AsyncClient`].
pub struct ApiClient<F: Face> {
    core: Core,
    face: F,
}

/// A copy shares the connection pool.
impl Clone for ApiClient<Async> {
    fn clone(&self) -> Self {
        ApiClient {
            core: self.core.clone(),
            face: Async(()),
        }
    }
}

/// The blocking client (CLIs).
pub type Client = ApiClient<Blocking>;
/// The async client (hostd, xtask).
pub type AsyncClient = ApiClient<Async>;

impl ApiClient<Blocking> {
    pub fn new(opts: ClientOptions) -> Result<Client, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Config(format!("cannot start the HTTPS client: {e}")))?;
        Ok(ApiClient {
            core: Core::new(opts)?,
            face: Blocking { rt },
        })
    }
}

impl ApiClient<Async> {
    pub fn new(opts: ClientOptions) -> Result<AsyncClient, ClientError> {
        Ok(ApiClient {
            core: Core::new(opts)?,
            face: Async(()),
        })
    }
}

/// `{}`: the body of a POST that takes no parameters.
#[derive(Serialize)]
struct Empty {}

impl<F: Face> ApiClient<F> {
    /// The URL of the CA replica in use, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.core.replicas.current().to_string()
    }

    /// The replicas this client uses (one when it was given one URL).
    pub fn replicas(&self) -> &Arc<Replicas> {
        &self.core.replicas
    }

    fn call<T: Send + 'static>(&self, call: Call<T>) -> F::Output<'_, T> {
        self.face.run(Box::pin(self.core.execute(call)))
    }

    // --- public ---

    /// `GET /v1/health`.
    pub fn health(&self) -> F::Output<'_, Health> {
        self.call(Call::get(ep::HEALTH))
    }

    /// `GET /v1/ca/user-keys`: the user CA keys (OpenSSH lines).
    pub fn user_ca_keys(&self) -> F::Output<'_, CaKeys> {
        self.call(Call::get(ep::CA_USER_KEYS))
    }

    /// `GET /v1/ca/host-keys`: the host CA keys, for `@cert-authority`.
    pub fn host_ca_keys(&self) -> F::Output<'_, CaKeys> {
        self.call(Call::get(ep::CA_HOST_KEYS))
    }

    /// The KRL of revoked SSH host certificates (public), for ssh clients'
    /// `RevokedHostKeys`.
    pub fn host_krl(&self) -> F::Output<'_, HostKrl> {
        self.call(Call::get(ep::CA_HOST_KRL).large())
    }

    /// `GET /v1/ca/tls-root`: the CA's TLS root (over the pinned connection).
    pub fn tls_root(&self) -> F::Output<'_, TlsRoot> {
        self.call(Call::get(ep::CA_TLS_ROOT))
    }

    /// `GET /v1/auth/config`: the OpenID Provider `smith login` uses (404
    /// [`ErrorCode::OidcNotConfigured`] without one).
    pub fn auth_config(&self) -> F::Output<'_, AuthConfig> {
        self.call(Call::get(ep::AUTH_CONFIG))
    }

    // --- people ---

    /// `POST /v1/certs/user` (user token or OIDC ID token).
    pub fn issue_cert(&self, req: &CertRequest) -> F::Output<'_, CertResponse> {
        self.call(Call::post(ep::CERTS_USER, req))
    }

    /// `POST /v1/certs/host`: a certificate for one host as one login.
    pub fn issue_host_cert(&self, req: &HostCertRequest) -> F::Output<'_, HostCertResponse> {
        self.call(Call::post(ep::CERTS_HOST, req))
    }

    /// `POST /v1/user/hosts`: the hosts the caller may reach.
    pub fn user_hosts(&self, req: &HostsRequest) -> F::Output<'_, HostsResponse> {
        self.call(Call::post(ep::USER_HOSTS, req).large())
    }

    // --- admin ---

    pub fn list_users(&self) -> F::Output<'_, Vec<UserInfo>> {
        self.call(Call::get(ep::ADMIN_USERS).large())
    }

    pub fn add_user(&self, req: &UserAdd) -> F::Output<'_, UserInfo> {
        self.call(Call::post(ep::ADMIN_USERS, req))
    }

    /// Also revokes the user's still-valid certificates.
    pub fn disable_user(&self, name: &UserName) -> F::Output<'_, UserInfo> {
        self.call(Call::post(ep::admin_user_disable(name), &Empty {}))
    }

    pub fn user_token(&self, name: &UserName, req: &TokenRequest) -> F::Output<'_, TokenResponse> {
        self.call(Call::post(ep::admin_user_token(name), req))
    }

    pub fn list_groups(&self) -> F::Output<'_, Vec<GroupInfo>> {
        self.call(Call::get(ep::ADMIN_GROUPS).large())
    }

    pub fn add_group(&self, req: &GroupAdd) -> F::Output<'_, GroupInfo> {
        self.call(Call::post(ep::ADMIN_GROUPS, req))
    }

    pub fn add_member(&self, group: &GroupName, user: &UserName) -> F::Output<'_, GroupInfo> {
        let body = MemberChange { user: user.clone() };
        self.call(Call::post(ep::admin_group_members(group), &body))
    }

    pub fn remove_member(&self, group: &GroupName, user: &UserName) -> F::Output<'_, GroupInfo> {
        self.call(Call::delete(ep::admin_group_member(group, user)))
    }

    pub fn list_grants(&self) -> F::Output<'_, Vec<GrantInfo>> {
        self.call(Call::get(ep::ADMIN_GRANTS).large())
    }

    pub fn add_grant(&self, req: &GrantAdd) -> F::Output<'_, GrantInfo> {
        self.call(Call::post(ep::ADMIN_GRANTS, req))
    }

    pub fn remove_grant(&self, id: u64) -> F::Output<'_, GrantInfo> {
        self.call(Call::delete(ep::admin_grant(id)))
    }

    /// A single-use enrollment token (a request without `ssh_names` is what older CAs
    /// take).
    pub fn host_token(&self, req: &HostTokenRequestNamed) -> F::Output<'_, TokenResponse> {
        self.call(Call::post(ep::ADMIN_HOST_TOKENS, req))
    }

    pub fn list_hosts(&self) -> F::Output<'_, Vec<HostInfo>> {
        self.call(Call::get(ep::ADMIN_HOSTS).large())
    }

    pub fn remove_host(&self, name: &HostName) -> F::Output<'_, HostInfo> {
        self.call(Call::delete(ep::admin_host(name)))
    }

    /// Replaces a host's tags; its next sync selects by them.
    pub fn set_host_tags(&self, name: &HostName, req: &HostTagsRequest) -> F::Output<'_, HostInfo> {
        self.call(Call::post(ep::admin_host_tags(name), req))
    }

    /// SSH host certificates, newest first.
    pub fn host_certs(&self, q: &HostCertQuery) -> F::Output<'_, Vec<HostCertInfo>> {
        self.call(Call::get(with_query(ep::ADMIN_HOST_CERTS, q)).large())
    }

    /// Revokes SSH host certificates by serial or every valid one of a host.
    pub fn revoke_host_certs(
        &self,
        req: &HostCertRevokeRequest,
    ) -> F::Output<'_, HostCertRevokeResponse> {
        self.call(Call::post(ep::ADMIN_HOST_CERTS_REVOKE, req).large())
    }

    // --- people and credentials ---

    /// Every token (never its text).
    pub fn list_tokens(&self) -> F::Output<'_, Vec<TokenInfo>> {
        self.call(Call::get(ep::ADMIN_TOKENS).large())
    }

    /// A named admin token (for automation).
    pub fn mint_admin_token(&self, req: &AdminTokenRequest) -> F::Output<'_, TokenResponse> {
        self.call(Call::post(ep::ADMIN_TOKENS, req))
    }

    /// Revokes the token with public id `id`.
    pub fn revoke_token(&self, id: &str) -> F::Output<'_, TokenInfo> {
        self.call(Call::delete(ep::admin_token(id)))
    }

    /// A replacement for the token with public id `id` (which is revoked).
    pub fn rotate_token(&self, id: &str, req: &TokenRotateRequest) -> F::Output<'_, TokenResponse> {
        self.call(Call::post(ep::admin_token_rotate(id), req))
    }

    /// An admin's IdP sign-in (no bearer: the ID token is the credential).
    pub fn admin_login(&self, req: &AdminLoginRequest) -> F::Output<'_, TokenResponse> {
        self.call(Call::post(ep::ADMIN_LOGIN, req))
    }

    pub fn enable_user(&self, name: &UserName) -> F::Output<'_, UserInfo> {
        self.call(Call::post(
            ep::admin_user_enable(name),
            &serde_json::json!({}),
        ))
    }

    /// Binds a user to an IdP identity (issuer and subject).
    pub fn bind_user(&self, name: &UserName, req: &BindRequest) -> F::Output<'_, UserInfo> {
        self.call(Call::post(ep::admin_user_binding(name), req))
    }

    pub fn unbind_user(&self, name: &UserName) -> F::Output<'_, UserInfo> {
        self.call(Call::delete(ep::admin_user_binding(name)))
    }

    /// Every IdP group mapping.
    pub fn group_mappings(&self) -> F::Output<'_, Vec<GroupMapping>> {
        self.call(Call::get(ep::ADMIN_GROUP_MAPPINGS_ALL).large())
    }

    /// Maps an IdP group to `group`; answers every mapping.
    pub fn map_group(
        &self,
        group: &GroupName,
        req: &MappingRequest,
    ) -> F::Output<'_, Vec<GroupMapping>> {
        self.call(Call::post(ep::admin_group_mappings(group), req).large())
    }

    /// Removes a mapping; answers every mapping left.
    pub fn unmap_group(
        &self,
        group: &GroupName,
        idp_group: &str,
    ) -> F::Output<'_, Vec<GroupMapping>> {
        self.call(Call::delete(ep::admin_group_mapping(group, idp_group)).large())
    }

    /// The record of changes, newest first.
    pub fn changes(&self, q: &ChangeQuery) -> F::Output<'_, Vec<ChangeInfo>> {
        self.call(Call::get(with_query(ep::ADMIN_CHANGES, q)).large())
    }

    /// A SCIM bearer token.
    pub fn scim_token(&self, req: &TokenRequest) -> F::Output<'_, TokenResponse> {
        self.call(Call::post(ep::ADMIN_SCIM_TOKEN, req))
    }

    /// Where the rotation of the `role` (`user` or `host`) CA stands (`GET
    /// /v1/admin/ca/rotation`; the CA's `RotationStatus` as JSON).
    pub fn ca_rotation(&self, role: &str) -> F::Output<'_, serde_json::Value> {
        self.call(Call::get(format!("{}?role={role}", ep::ADMIN_CA_ROTATION)))
    }

    /// Starts a CA key rotation or forces its pending step (`POST /v1/admin/ca/rotate`
    /// with `{role, force, to, grace_secs}`).
    pub fn ca_rotate(&self, req: &serde_json::Value) -> F::Output<'_, serde_json::Value> {
        self.call(Call::post(ep::ADMIN_CA_ROTATE, req))
    }

    /// Issuance decisions, oldest first.
    pub fn decisions(&self, q: &DecisionQuery) -> F::Output<'_, Vec<Decision>> {
        self.call(Call::get(with_query(ep::ADMIN_DECISIONS, q)).large())
    }

    /// Issued certificates, newest first.
    pub fn list_certs(&self, q: &CertQuery) -> F::Output<'_, Vec<IssuedCert>> {
        self.call(Call::get(with_query(ep::ADMIN_CERTS, q)).large())
    }

    pub fn revoke(&self, req: &RevokeRequest) -> F::Output<'_, RevokeResponse> {
        self.call(Call::post(ep::ADMIN_CERTS_REVOKE, req).large())
    }

    /// Audit records in chain order per host.
    pub fn audit_list(&self, q: &AuditQuery) -> F::Output<'_, Vec<AuditEntry>> {
        self.call(Call::get(with_query(ep::ADMIN_AUDIT, q)).large())
    }

    /// Every audit chain recomputed from the CA's database.
    pub fn audit_verify(&self) -> F::Output<'_, AuditVerifyReport> {
        self.call(Call::get(ep::ADMIN_AUDIT_VERIFY).large())
    }

    pub fn audit_rejections(&self, q: &RejectionQuery) -> F::Output<'_, Vec<AuditRejection>> {
        self.call(Call::get(with_query(ep::ADMIN_AUDIT_REJECTIONS, q)).large())
    }

    pub fn audit_out_of_band(&self, q: &OutOfBandQuery) -> F::Output<'_, Vec<OutOfBandFinding>> {
        self.call(Call::get(with_query(ep::ADMIN_AUDIT_OUT_OF_BAND, q)).large())
    }

    // --- hosts ---

    /// Enrollment (the token is in the body, and in the Authorization header so that the
    /// CA refuses a wrong one before reading the body; a request without `ssh_names` is what
    /// older CAs take).
    pub fn enroll(&self, req: &EnrollRequestNamed) -> F::Output<'_, EnrollResponse> {
        let mut c = Call::post(ep::HOSTS_ENROLL, req);
        c.bearer = Some(req.request.token.clone());
        self.call(c)
    }

    /// A new client certificate for the CSR, SSH host certificates for the keys (mTLS).
    pub fn renew(&self, req: &RenewRequest) -> F::Output<'_, EnrollResponse> {
        self.call(Call::post(ep::HOST_RENEW, req))
    }

    /// One long poll (mTLS). `None`: nothing changed within `q.wait` seconds (204).
    pub fn sync(&self, q: &SyncQuery) -> F::Output<'_, Option<SyncResponse>> {
        let mut c = Call::<Option<SyncResponse>>::get(with_query(ep::HOST_SYNC, q)).large();
        c.decode = optional::<SyncResponse>;
        c.wait = Wait::LongPoll(q.wait);
        self.call(c)
    }

    /// The CA's head of this host's audit chain (mTLS).
    pub fn audit_head(&self) -> F::Output<'_, AuditAck> {
        self.call(Call::get(ep::HOST_AUDIT_HEAD))
    }

    /// Uploads audit records in chain order; the CA answers its new head (mTLS).
    pub fn audit_upload(&self, batch: &AuditBatch) -> F::Output<'_, AuditAck> {
        let mut c = Call::post(ep::HOST_AUDIT, batch);
        c.wait = Wait::AtLeast(UPLOAD_TIMEOUT);
        self.call(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_maps_to_its_typed_code() {
        for code in ErrorCode::ALL {
            let body = serde_json::to_vec(&ErrorBody {
                code: code.as_str().into(),
                error: "why".into(),
            })
            .unwrap();
            let e = map_answer(403, &body, "/v1/x", required::<Health>).unwrap_err();
            assert_eq!(e.code(), Some(*code));
            assert_eq!(e.status(), Some(403));
            assert!(e.to_string().contains(&format!("(403 {code}): why")), "{e}");
        }
        // From a newer CA: typed as unrecognized, the wire code kept for people.
        let body = br#"{"code":"from_the_future","error":"later"}"#;
        let e = map_answer(409, body, "/v1/x", required::<Health>).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Unrecognized));
        assert!(
            e.to_string().contains("(409 from_the_future): later"),
            "{e}"
        );
        // Not an error body (a proxy's page): the text, bounded.
        let page = "<html>".repeat(1000);
        let e = map_answer(502, page.as_bytes(), "/v1/x", required::<Health>).unwrap_err();
        match e {
            ClientError::Status {
                status: 502,
                code: ErrorCode::Unrecognized,
                wire_code,
                message,
            } => {
                assert_eq!(wire_code, "http_error");
                assert_eq!(message.chars().count(), MAX_ERROR_TEXT);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_content_is_none_only_where_expected() {
        assert_eq!(
            map_answer(204, b"", "/v1/host/sync?since=1", optional::<Health>).unwrap(),
            None
        );
        let e = map_answer(204, b"", "/v1/health", required::<Health>).unwrap_err();
        assert!(matches!(e, ClientError::Decode(m) if m == "/v1/health: empty response"));
        let e = map_answer(200, b"{", "/v1/health?x=1", required::<Health>).unwrap_err();
        assert!(matches!(e, ClientError::Decode(m) if m.starts_with("/v1/health: ")));
    }

    #[test]
    fn queries_carry_only_what_is_set() {
        assert_eq!(
            with_query(ep::ADMIN_CERTS, &CertQuery::default()),
            "/v1/admin/certs"
        );
        let q = CertQuery {
            limit: Some(5),
            user: Some(UserName::new("alice").unwrap()),
            valid: true,
        };
        assert_eq!(
            with_query(ep::ADMIN_CERTS, &q),
            "/v1/admin/certs?limit=5&user=alice&valid=true"
        );
        let q = SyncQuery {
            since: 7,
            wait: 25,
            host: Some(HostName::new("web-1").unwrap()),
            epoch: None,
            beat: None,
        };
        assert_eq!(
            with_query(ep::HOST_SYNC, &q),
            "/v1/host/sync?since=7&wait=25&host=web-1"
        );
        // Free text is escaped.
        let q = AuditQuery {
            host: Some("@ca".into()),
            user: Some("a&b=c d".into()),
            ..AuditQuery::default()
        };
        assert_eq!(
            with_query(ep::ADMIN_AUDIT, &q),
            "/v1/admin/audit?user=a%26b%3Dc+d&host=%40ca"
        );
    }

    #[test]
    fn timeouts() {
        let core = Core::new(ClientOptions::new(
            "https://ca.invalid",
            Trust::Fingerprint(crate::tls::fingerprint(b"x")),
        ))
        .unwrap();
        assert_eq!(core.timeout(Wait::Default), Duration::from_secs(30));
        assert_eq!(core.timeout(Wait::LongPoll(25)), Duration::from_secs(45));
        assert_eq!(core.timeout(Wait::AtLeast(UPLOAD_TIMEOUT)), UPLOAD_TIMEOUT);
        assert!(matches!(
            Core::new(ClientOptions::new(
                "http://ca.invalid",
                Trust::Fingerprint(crate::tls::fingerprint(b"x")),
            )),
            Err(ClientError::Config(_))
        ));
    }
}
