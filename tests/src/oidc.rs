//! A real OpenID Provider for tests (`tests/oidc/provider.js`, the npm `oidc-provider`) and
//! a scripted browser that signs in through the provider's own login and consent pages.
//!
//! Std-only (plus `serde_json` and `libc`); the fleet suite uses it from here, the CA's and
//! the CLI's tests through the test kit (`smith_testkit::oidc`).
//!
//! How to use it:
//! ```ignore
//! let op = Provider::start(&ProviderOptions::default())?;   // alice-0001 (dev), oscar-0002 (ops)
//! // smith-ca serve ... --oidc-issuer op.issuer --oidc-client-id smith --oidc-allow-http
//! // spawn `smith login --no-browser`, read its stderr until login_url() finds the URL, then:
//! Browser::new().sign_in(&url, "alice-0001", true)?;        // smith's listener gets the code
//! // or, for `smith login --device`: device_prompt() on its stderr, then
//! Browser::new().device(&uri, &code, "alice-0001")?;
//! // an ID token directly (CA tests): id_token(&op, "smith", "alice-0001", Some("nonce"))
//! // what the provider saw (a renewal must not open the browser):
//! op.counts()?.authorization;
//! // the person disabled at the provider (renewals refused), a refresh token revoked:
//! op.disable("alice-0001")?; op.revoke(&refresh_token)?;
//! ```
//! The provider needs `node` (>= 20) and its npm packages: [`ensure_installed`] runs
//! `npm ci` in `tests/oidc` once (under a lock) when `node_modules` is missing. Requests
//! go to loopback only, through `curl` with a cookie jar.
//!
//! Must never: reach anything but 127.0.0.1, or leave a provider process running (Drop
//! stops it).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `program`, run inside network namespace `netns` when one is given (the fleet's LAN).
fn command_in(netns: &Option<String>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

/// `tests/oidc` of this workspace.
pub fn oidc_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ws = here.parent().unwrap_or(here);
    ws.join("tests").join("oidc")
}

fn tool_ok(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the provider can run here (node, npm, curl). With `SMITH_E2E_REQUIRED=1` a
/// missing tool is a failure, not a skip.
pub fn available(what: &str) -> bool {
    let missing: Vec<&str> = [
        ("node", "--version"),
        ("npm", "--version"),
        ("curl", "--version"),
    ]
    .iter()
    .filter(|(c, a)| !tool_ok(c, a))
    .map(|(c, _)| *c)
    .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("SMITH_E2E_REQUIRED").is_ok_and(|v| v == "1") {
        panic!(
            "{what}: SMITH_E2E_REQUIRED=1 but missing: {}",
            missing.join(", ")
        );
    }
    eprintln!("SKIP {what}: missing {}", missing.join(", "));
    false
}

/// Runs `npm ci` in `tests/oidc` when its `node_modules` lacks `oidc-provider` (one
/// process at a time: an flock on `tests/oidc/.install.lock`).
pub fn ensure_installed() -> Result<(), String> {
    let dir = oidc_dir();
    let marker = dir.join("node_modules/oidc-provider/package.json");
    if marker.exists() {
        return Ok(());
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".install.lock"))
        .map_err(|e| format!("cannot open the npm install lock: {e}"))?;
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    if rc != 0 {
        return Err("cannot lock the npm install lock".into());
    }
    if marker.exists() {
        return Ok(());
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run npm: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm ci in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "smith-oidc-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One account of the provider (sign in with its `sub`).
#[derive(Debug, Clone)]
pub struct Account {
    pub sub: String,
    pub preferred_username: String,
    pub name: String,
    pub groups: Vec<String>,
    /// Disabled at the provider: no sign-in, no renewal.
    pub disabled: bool,
}

impl Account {
    pub fn new(sub: &str, user: &str, groups: &[&str]) -> Account {
        Account {
            sub: sub.into(),
            preferred_username: user.into(),
            name: format!("{user} Example"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            disabled: false,
        }
    }
}

/// What the provider counted since it started (`GET /__test/counts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests to the authorization endpoint: browser sign-ins started.
    pub authorization: u64,
    /// Requests to its login and consent pages.
    pub interaction: u64,
    /// Token endpoint successes by grant type (`authorization_code`, `refresh_token`, ...).
    pub grants: std::collections::BTreeMap<String, u64>,
    /// Token endpoint refusals by grant type.
    pub grant_errors: std::collections::BTreeMap<String, u64>,
}

impl Counts {
    pub fn grants(&self, grant_type: &str) -> u64 {
        self.grants.get(grant_type).copied().unwrap_or(0)
    }
    pub fn grant_errors(&self, grant_type: &str) -> u64 {
        self.grant_errors.get(grant_type).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// `HOST:PORT` (port 0: a free one).
    pub listen: String,
    /// Empty: the provider's defaults (`alice-0001` alice in dev, `oscar-0002` oscar in ops).
    pub accounts: Vec<Account>,
    /// ID token lifetime in seconds (provider default 600).
    pub id_token_ttl: Option<u64>,
    /// Refresh token lifetime in seconds (provider default 86400). Refresh tokens are
    /// issued only when the client asks for the `offline_access` scope.
    pub refresh_token_ttl: Option<u64>,
    /// Run the provider inside this network namespace (the fleet's LAN).
    pub netns: Option<String>,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        ProviderOptions {
            listen: "127.0.0.1:0".into(),
            accounts: vec![],
            id_token_ttl: None,
            refresh_token_ttl: None,
            netns: None,
        }
    }
}

/// A running `provider.js`.
pub struct Provider {
    pub issuer: String,
    /// The key id that signs new ID tokens.
    pub kid: String,
    /// `host:port` it listens on.
    pub addr: String,
    opts: ProviderOptions,
    scratch: Scratch,
    child: Option<Child>,
}

impl Provider {
    pub fn start(opts: &ProviderOptions) -> Result<Provider, String> {
        ensure_installed()?;
        let scratch = Scratch::new("op");
        let mut p = Provider {
            issuer: String::new(),
            kid: String::new(),
            addr: String::new(),
            opts: opts.clone(),
            scratch,
            child: None,
        };
        let listen = opts.listen.clone();
        p.spawn(&listen, false)?;
        Ok(p)
    }

    fn accounts_json(&self) -> String {
        let list: Vec<serde_json::Value> = self
            .opts
            .accounts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "sub": a.sub, "preferred_username": a.preferred_username,
                    "name": a.name, "email": format!("{}@example.com", a.preferred_username),
                    "groups": a.groups, "disabled": a.disabled,
                })
            })
            .collect();
        serde_json::Value::Array(list).to_string()
    }

    fn spawn(&mut self, listen: &str, rotate: bool) -> Result<(), String> {
        let dir = self.scratch.0.clone();
        let mut cmd = command_in(&self.opts.netns, "node");
        cmd.arg(oidc_dir().join("provider.js"))
            .args(["--listen", listen])
            .arg("--keys")
            .arg(dir.join("keys.json"));
        if !self.opts.accounts.is_empty() {
            let f = dir.join("accounts.json");
            std::fs::write(&f, self.accounts_json()).map_err(|e| e.to_string())?;
            cmd.arg("--accounts").arg(f);
        }
        if let Some(t) = self.opts.id_token_ttl {
            cmd.args(["--id-token-ttl", &t.to_string()]);
        }
        if let Some(t) = self.opts.refresh_token_ttl {
            cmd.args(["--refresh-token-ttl", &t.to_string()]);
        }
        if rotate {
            cmd.arg("--rotate");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("provider.log"))
            .map_err(|e| e.to_string())?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start node: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the OpenID Provider did not start: {}", self.log()));
            }
        };
        let rest = match line.trim().strip_prefix("oidc-provider listening on ") {
            Some(r) => r.to_string(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "unexpected provider output {line:?}: {}",
                    self.log()
                ));
            }
        };
        let mut parts = rest.split_whitespace();
        let base = parts.next().unwrap_or_default().to_string();
        for p in parts {
            if let Some(i) = p.strip_prefix("issuer=") {
                self.issuer = i.to_string();
            } else if let Some(k) = p.strip_prefix("kid=") {
                self.kid = k.to_string();
            }
        }
        self.addr = base.trim_start_matches("http://").to_string();
        self.child = Some(child);
        Ok(())
    }

    /// Stops the provider and starts it again on the same address and keys; with
    /// `rotate`, a new signing key is put first (the old ones stay published).
    pub fn restart(&mut self, rotate: bool) -> Result<(), String> {
        self.stop();
        let addr = self.addr.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn(&addr, rotate) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline && e.contains("EADDRINUSE") => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.0.join("provider.log")).unwrap_or_default()
    }

    fn browser(&self) -> Browser {
        match &self.opts.netns {
            Some(ns) => Browser::in_netns(ns),
            None => Browser::new(),
        }
    }

    /// What the provider counted since it started: browser sign-ins, token grants.
    pub fn counts(&self) -> Result<Counts, String> {
        let a = self
            .browser()
            .request(&format!("http://{}/__test/counts", self.addr), &[])?;
        let v: serde_json::Value =
            serde_json::from_str(&a.body).map_err(|e| format!("{e}: {}", a.body))?;
        let map = |k: &str| {
            v[k].as_object()
                .map(|m| {
                    m.iter()
                        .map(|(g, n)| (g.clone(), n.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Counts {
            authorization: v["authorization"].as_u64().unwrap_or(0),
            interaction: v["interaction"].as_u64().unwrap_or(0),
            grants: map("grants"),
            grant_errors: map("grant_errors"),
        })
    }

    /// Disables the account `sub` at the provider (it reads its accounts file again): no
    /// more sign-ins, and its refresh tokens are refused. Needs explicit `accounts`.
    pub fn disable(&mut self, sub: &str) -> Result<(), String> {
        let acct = self
            .opts
            .accounts
            .iter_mut()
            .find(|a| a.sub == sub)
            .ok_or_else(|| format!("no account {sub} among the provider's explicit accounts"))?;
        acct.disabled = true;
        let f = self.scratch.0.join("accounts.json");
        // A new file renamed over the old one: the provider never reads half of it.
        let tmp = self.scratch.0.join("accounts.json.new");
        std::fs::write(&tmp, self.accounts_json()).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &f).map_err(|e| e.to_string())
    }

    /// Revokes a refresh token at the provider (RFC 7009, as client `smith`).
    pub fn revoke(&self, refresh_token: &str) -> Result<(), String> {
        let a = self.browser().request(
            &format!("{}/token/revocation", self.issuer),
            &[
                ("token", refresh_token),
                ("token_type_hint", "refresh_token"),
                ("client_id", "smith"),
            ],
        )?;
        if a.status != 200 {
            return Err(format!("revocation answered {}: {}", a.status, a.body));
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// A scripted browser: curl with a cookie jar, redirects followed by hand.
pub struct Browser {
    scratch: Scratch,
    netns: Option<String>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

fn origin(url: &str) -> String {
    let after = url.find("://").map(|i| i + 3).unwrap_or(0);
    let end = url[after..]
        .find('/')
        .map(|i| after + i)
        .unwrap_or(url.len());
    url[..end].to_string()
}

fn attr_after(body: &str, marker: &str) -> Option<String> {
    let i = body.find(marker)? + marker.len();
    let end = body[i..].find('"')? + i;
    Some(body[i..end].replace("&amp;", "&"))
}

/// The value of `<input ... name="NAME" value="V">`.
fn input_value(body: &str, name: &str) -> Option<String> {
    attr_after(body, &format!("name=\"{name}\" value=\""))
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            scratch: Scratch::new("browser"),
            netns: None,
        }
    }

    /// A browser on a machine of the fleet's LAN (network namespace `ns`).
    pub fn in_netns(ns: &str) -> Browser {
        Browser {
            scratch: Scratch::new("browser"),
            netns: Some(ns.to_string()),
        }
    }

    /// One request (GET, or POST of a urlencoded form), no redirect following.
    pub fn request(&self, url: &str, form: &[(&str, &str)]) -> Result<Answer, String> {
        let jar = self.scratch.0.join("cookies");
        let body_file = self.scratch.0.join("body");
        let _ = std::fs::remove_file(&body_file);
        let mut cmd = command_in(&self.netns, "curl");
        cmd.args(["-sS", "--max-time", "20", "-o"])
            .arg(&body_file)
            .args(["-w", "%{http_code} %{redirect_url}", "-c"])
            .arg(&jar)
            .arg("-b")
            .arg(&jar);
        for (k, v) in form {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        let out = cmd
            .arg(url)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run curl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "curl {url} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let w = String::from_utf8_lossy(&out.stdout).to_string();
        let (code, loc) = w.split_once(' ').unwrap_or((&w, ""));
        Ok(Answer {
            status: code.trim().parse().unwrap_or(0),
            location: Some(loc.trim().to_string()).filter(|l| !l.is_empty()),
            body: std::fs::read_to_string(&body_file).unwrap_or_default(),
        })
    }

    /// Walks the provider's pages from `start` until the browser leaves the provider (the
    /// redirect to the client, returned; GET it when `deliver`) or the provider says
    /// the device sign-in succeeded (returns its URL). Signs in as `login` (an account's
    /// `sub`) and consents on the way.
    fn walk(&self, start: &str, login: &str, deliver: bool) -> Result<String, String> {
        let provider = origin(start);
        let mut url = start.to_string();
        let mut form: Vec<(String, String)> = vec![];
        for _ in 0..30 {
            let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let a = self.request(&url, &f)?;
            form.clear();
            if (300..400).contains(&a.status) {
                let next = a
                    .location
                    .ok_or_else(|| format!("{} from {url} without a Location", a.status))?;
                if origin(&next) != provider {
                    if deliver {
                        let r = self.request(&next, &[])?;
                        if r.status != 200 {
                            return Err(format!(
                                "the client's redirect target {next} answered {}: {}",
                                r.status, r.body
                            ));
                        }
                    }
                    return Ok(next);
                }
                url = next;
                continue;
            }
            if a.status != 200 {
                return Err(format!(
                    "the provider answered {} at {url}: {}",
                    a.status,
                    a.body.chars().take(600).collect::<String>()
                ));
            }
            if a.body.contains("Sign-in Success") {
                return Ok(url);
            }
            let action = attr_after(&a.body, "action=\"").ok_or_else(|| {
                format!(
                    "no form at {url}: {}",
                    a.body.chars().take(600).collect::<String>()
                )
            })?;
            if a.body.contains("name=\"prompt\" value=\"login\"") {
                form = vec![
                    ("prompt".into(), "login".into()),
                    ("login".into(), login.into()),
                    ("password".into(), "test-password".into()),
                ];
            } else if a.body.contains("name=\"prompt\" value=\"consent\"") {
                form = vec![("prompt".into(), "consent".into())];
            } else if let Some(xsrf) = input_value(&a.body, "xsrf") {
                let code = input_value(&a.body, "user_code")
                    .ok_or_else(|| format!("a device page without the user code at {url}"))?;
                form = vec![
                    ("xsrf".into(), xsrf),
                    ("user_code".into(), code),
                    ("confirm".into(), "yes".into()),
                ];
            } else {
                return Err(format!(
                    "an unexpected page at {url}: {}",
                    a.body.chars().take(600).collect::<String>()
                ));
            }
            url = action;
        }
        Err(format!("too many steps signing in from {start}"))
    }

    /// Authorization code flow: from the authorization URL (`smith login --no-browser`
    /// prints it) through login and consent; with `deliver`, the final redirect is sent
    /// to the client's loopback listener. Returns that redirect URL.
    pub fn sign_in(&self, auth_url: &str, login: &str, deliver: bool) -> Result<String, String> {
        self.walk(auth_url, login, deliver)
    }

    /// Device flow: open the verification URI with the code, confirm, log in, consent.
    pub fn device(
        &self,
        verification_uri: &str,
        user_code: &str,
        login: &str,
    ) -> Result<(), String> {
        let sep = if verification_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        let start = format!("{verification_uri}{sep}user_code={user_code}");
        self.walk(&start, login, false).map(|_| ())
    }
}

/// The sign-in URL in `smith login --no-browser` output (a line `  http...`).
pub fn login_url(output: &str) -> Option<String> {
    output
        .lines()
        .map(str::trim)
        .find(|l| {
            (l.starts_with("http://") || l.starts_with("https://")) && l.contains("code_challenge=")
        })
        .map(str::to_string)
}

/// `(verification_uri, user_code)` from `smith login --device` output
/// (`To sign in, open URI and enter the code CODE`).
pub fn device_prompt(output: &str) -> Option<(String, String)> {
    output.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("To sign in, open ")?;
        let (uri, code) = rest.split_once(" and enter the code ")?;
        Some((uri.trim().to_string(), code.trim().to_string()))
    })
}

/// Runs an interactive sign-in command (`smith login`, `smith-ca admin login`) with
/// stdout and stderr piped, and signs in as `account` when it prints its prompt: the
/// sign-in URL, or with `device` the verification URI and code. Its output, once it
/// exits; an error when no prompt came within 30 s.
pub fn drive_sign_in(
    cmd: &mut Command,
    browser: &Browser,
    account: &str,
    device: bool,
) -> Result<std::process::Output, String> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the sign-in command: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let mut seen = String::new();
    let signed_in = loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            break Err(format!("no sign-in prompt printed: {seen}"));
        };
        seen.push_str(&line);
        seen.push('\n');
        if device {
            if let Some((uri, code)) = device_prompt(&seen) {
                break browser.device(&uri, &code, account).map(|_| ());
            }
        } else if let Some(url) = login_url(&seen) {
            break browser.sign_in(&url, account, true).map(|_| ());
        }
    };
    signed_in?;
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).map_err(|e| e.to_string())?;
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    Ok(std::process::Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: reader.join().unwrap_or_default().into_bytes(),
    })
}

/// base64url(SHA-256(s)), computed by node (already required).
fn s256(s: &str) -> Result<String, String> {
    let out = Command::new("node")
        .args([
            "-e",
            "process.stdout.write(require('crypto').createHash('sha256').update(process.argv[1]).digest('base64url'))",
            s,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An ID token for `client_id`, obtained through the real code flow (PKCE, login,
/// consent, code exchange) as `login`, with `nonce` in the authorization request.
pub fn id_token(
    p: &Provider,
    client_id: &str,
    login: &str,
    nonce: Option<&str>,
) -> Result<String, String> {
    let verifier = random_hex(32);
    let redirect = "http://127.0.0.1:9/callback";
    let state = random_hex(8);
    let mut url = format!(
        "{}/auth?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid%20profile%20groups&state={state}&code_challenge={}&code_challenge_method=S256",
        p.issuer,
        "http%3A%2F%2F127.0.0.1%3A9%2Fcallback",
        s256(&verifier)?
    );
    if let Some(n) = nonce {
        url.push_str(&format!("&nonce={n}"));
    }
    let b = Browser::new();
    let back = b.sign_in(&url, login, false)?;
    let code = back
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("code="))
        .ok_or_else(|| format!("no code in {back}"))?
        .to_string();
    let a = b.request(
        &format!("{}/token", p.issuer),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", client_id),
            ("code_verifier", &verifier),
        ],
    )?;
    let v: serde_json::Value =
        serde_json::from_str(&a.body).map_err(|e| format!("{e}: {}", a.body))?;
    v["id_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no id_token: {}", a.body))
}
