//! Certificate issuance over HTTPS, read back with `ssh-keygen -L`; denials and the
//! decision log; restarts; and a real sshd accepting (and refusing) certificates.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use serde_json::{json, Value};
use smith_api::{endpoints, ErrorCode};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};
use support::{code_of, keygen_l, run, text, Sshd, TestCa};

struct Issued {
    status: u16,
    body: Value,
}

fn keypair(dir: &Path, name: &str) -> PathBuf {
    let k = dir.join(name);
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&k));
    assert!(out.status.success(), "{}", text(&out.stderr));
    k
}

fn request(
    ca: &TestCa,
    token: &str,
    key: &Path,
    scope: &str,
    ttl: u64,
    reason: Option<&str>,
) -> Issued {
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let r = ca
        .http(None)
        .post(format!("{}{}", ca.url, endpoints::CERTS_USER))
        .bearer_auth(token)
        .json(&json!({"public_key": public.trim(), "scope": scope, "ttl_secs": ttl, "reason": reason}))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    Issued {
        status,
        body: r.json().unwrap(),
    }
}

/// Writes the certificate next to the key as `<key>-cert.pub`.
fn save_cert(key: &Path, body: &Value) -> PathBuf {
    let p = PathBuf::from(format!("{}-cert.pub", key.display()));
    std::fs::write(&p, format!("{}\n", body["certificate"].as_str().unwrap())).unwrap();
    p
}

fn local(ts: u64) -> String {
    let s = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(ts)).to_string();
    s.trim_end_matches('Z').to_string()
}

fn setup(ca: &TestCa) -> String {
    ca.admin_ok(&["group", "add", "dev"]);
    ca.admin_ok(&["group", "add", "ops"]);
    ca.admin_ok(&["user", "add", "alice", "--groups", "dev,ops"]);
    ca.admin_ok(&[
        "grant",
        "add",
        "--group",
        "dev",
        "--tags",
        "env=dev",
        "--level",
        "ssh",
        "--max-ttl",
        "8h",
    ]);
    ca.admin_ok(&[
        "grant",
        "add",
        "--group",
        "ops",
        "--tags",
        "env=prod",
        "--level",
        "sudo",
        "--max-ttl",
        "1h",
        "--source-cidr",
        "127.0.0.0/8",
        "--source-cidr",
        "10.9.0.0/16",
        "--require-reason",
    ]);
    ca.user_token("alice")
}

#[test]
fn certificates_carry_what_policy_says() {
    let ca = TestCa::start();
    let token = setup(&ca);
    let dir = tempfile::tempdir().unwrap();
    let key = keypair(dir.path(), "k1");

    let r = request(
        &ca,
        &token,
        &key,
        "env=dev,role=db",
        10 * 3600,
        Some("INC-42"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let b = &r.body;
    // The login, then the grant it was issued under: for hosts with hostd, and for
    // hosts that only trust the CA.
    assert_eq!(
        b["principals"],
        json!([
            "alice",
            "smith-grant:1:ssh:alice",
            "smith-tags:env=dev:alice"
        ])
    );
    assert_eq!(b["clipped_to_secs"], 8 * 3600);
    assert_eq!(b["scope"], "env=dev,role=db");
    let key_id = b["key_id"].as_str().unwrap();
    let rid = key_id
        .strip_prefix("smith:alice:")
        .expect("key id names the user");
    assert!(
        rid.len() == 20 && rid.chars().all(|c| c.is_ascii_hexdigit()),
        "{key_id}"
    );
    // Time-ordered: the first 12 hex digits are the issuance time in milliseconds.
    let ms = u64::from_str_radix(&rid[..12], 16).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(ms <= now_ms && now_ms - ms < 60_000, "{key_id}");
    let (va, vb) = (
        b["valid_after"].as_u64().unwrap(),
        b["valid_before"].as_u64().unwrap(),
    );
    assert_eq!(
        vb - va,
        8 * 3600 + 300,
        "backdated 5 minutes for clock skew"
    );

    let cert = save_cert(&key, b);
    std::env::set_var("TZ", "UTC");
    let l = keygen_l(&cert);
    assert_eq!(l.key_id, key_id);
    assert_eq!(l.serial, b["serial"].as_u64().unwrap());
    assert_eq!(
        l.principals,
        vec![
            "alice",
            "smith-grant:1:ssh:alice",
            "smith-tags:env=dev:alice"
        ]
    );
    assert_eq!(l.valid, format!("from {} to {}", local(va), local(vb)));
    assert!(l.critical_options.is_empty(), "{:?}", l.critical_options);
    // The grant's defaults: a terminal and port forwarding, no agent forwarding.
    for e in ["permit-port-forwarding", "permit-pty"] {
        assert!(
            l.extensions.iter().any(|x| x == e),
            "{e} in {:?}",
            l.extensions
        );
    }
    assert!(
        !l.extensions.iter().any(|x| x == "permit-agent-forwarding"),
        "{:?}",
        l.extensions
    );
    assert!(
        l.extensions.iter().any(|x| x.starts_with("grants@smith")),
        "{:?}",
        l.extensions
    );
    // scope@smith holds the scope as an SSH string: u32 length + "env=dev,role=db".
    let scope = "env=dev,role=db";
    let hex: String = scope.bytes().map(|c| format!("{c:02x}")).collect();
    let want = format!("{:08x}{hex}", scope.len());
    assert!(
        l.extensions
            .iter()
            .any(|x| x.starts_with("scope@smith") && x.contains(&want)),
        "{:?}",
        l.extensions
    );
    // ... and the host-side reader finds it.
    let b64 = b["certificate"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    let info = smith_proto::sshcert::parse_cert_base64(b64).unwrap();
    assert_eq!(info.scope().as_deref(), Some("env=dev,role=db"));
    let on_disk = std::fs::read_to_string(ca.user_ca_pub()).unwrap();
    let ca_fp = run(Command::new("ssh-keygen")
        .args(["-l", "-f"])
        .arg(ca.user_ca_pub()));
    let ca_fp = text(&ca_fp.stdout);
    assert!(
        l.signing_ca
            .contains(ca_fp.split_whitespace().nth(1).unwrap()),
        "{} vs {on_disk}",
        l.signing_ca
    );

    // A grant with CIDRs puts them in source-address; TTL within the grant is not clipped.
    let key2 = keypair(dir.path(), "k2");
    let r = request(&ca, &token, &key2, "env=prod", 1800, Some("INC-43"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["clipped_to_secs"], Value::Null);
    let l = keygen_l(&save_cert(&key2, &r.body));
    assert_eq!(
        l.critical_options,
        vec!["source-address 10.9.0.0/16,127.0.0.0/8"]
    );
    assert!(r.body["serial"].as_u64() > b["serial"].as_u64());

    // Decisions record both, with the reason given.
    let ds: Value = serde_json::from_str(&ca.admin_ok(&["decisions", "--json"])).unwrap();
    let ds = ds.as_array().unwrap();
    assert_eq!(ds.len(), 2);
    assert!(ds
        .iter()
        .all(|d| d["allowed"] == true && d["source"] == "127.0.0.1"));
    assert_eq!(ds[0]["key_id"], key_id);
    assert!(ds[0]["reason"].as_str().unwrap().contains("INC-42"));
    assert!(ds[0]["reason"].as_str().unwrap().contains("clipped"));
}

#[test]
fn denials_say_why_and_are_recorded() {
    let ca = TestCa::start();
    let token = setup(&ca);
    ca.admin_ok(&["user", "add", "bob"]);
    let bob = ca.user_token("bob");
    ca.admin_ok(&["group", "add", "far"]);
    ca.admin_ok(&["user", "add", "carol", "--groups", "far"]);
    ca.admin_ok(&[
        "grant",
        "add",
        "--group",
        "far",
        "--tags",
        "env=far",
        "--level",
        "ssh",
        "--max-ttl",
        "1h",
        "--source-cidr",
        "10.1.0.0/16",
    ]);
    // A window that is never open now (the hour that ended two hours ago, every day),
    // and one that always is.
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let h = (now / 3600 + 22) % 24;
    let window = format!("daily {h:02}:00-{:02}:00", (h + 1) % 24);
    for (tags, w) in [
        ("env=night", window.as_str()),
        ("env=always", "daily 00:00-24:00"),
    ] {
        ca.admin_ok(&[
            "grant",
            "add",
            "--group",
            "far",
            "--tags",
            tags,
            "--level",
            "ssh",
            "--max-ttl",
            "1h",
            "--time-window",
            w,
        ]);
    }
    let carol = ca.user_token("carol");
    let dir = tempfile::tempdir().unwrap();
    let key = keypair(dir.path(), "k");

    // (token, scope, ttl, reason, status, code, text in the error)
    type Case<'a> = (
        &'a str,
        &'a str,
        u64,
        Option<&'a str>,
        u16,
        ErrorCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            &bob,
            "env=dev",
            600,
            None,
            403,
            ErrorCode::NoMatchingGrant,
            "you hold no grant",
        ),
        (
            &token,
            "env=staging",
            600,
            None,
            403,
            ErrorCode::NoMatchingGrant,
            "env=staging",
        ),
        (
            &token,
            "role=web",
            600,
            None,
            403,
            ErrorCode::NoMatchingGrant,
            "env=dev",
        ),
        (
            &token,
            "env=prod",
            600,
            None,
            403,
            ErrorCode::ConditionFailed,
            "requires a reason",
        ),
        (
            &carol,
            "env=far",
            600,
            None,
            403,
            ErrorCode::ConditionFailed,
            "127.0.0.1 is not in 10.1.0.0/16",
        ),
        (
            &carol,
            "env=night",
            600,
            None,
            403,
            ErrorCode::ConditionFailed,
            "outside its time windows",
        ),
        (
            &token,
            "env=dev",
            59,
            None,
            400,
            ErrorCode::InvalidTtl,
            "minimum",
        ),
        (
            &token,
            "env=dev",
            25 * 3600,
            None,
            400,
            ErrorCode::InvalidTtl,
            "maximum",
        ),
        (
            &token,
            "env=dev",
            600,
            Some("line\nbreak"),
            400,
            ErrorCode::InvalidReason,
            "control",
        ),
    ];
    for (tok, scope, ttl, reason, status, code, needle) in &cases {
        let r = request(&ca, tok, &key, scope, *ttl, *reason);
        assert_eq!(r.status, *status, "{scope}: {}", r.body);
        assert_eq!(code_of(&r.body), *code, "{}", r.body);
        assert!(
            r.body["error"].as_str().unwrap().contains(needle),
            "{needle}: {}",
            r.body
        );
    }
    assert_eq!(
        request(&ca, &carol, &key, "env=always", 600, None).status,
        200
    );
    // A bad public key, a certificate instead of a key.
    let r = ca
        .http(None)
        .post(format!("{}{}", ca.url, endpoints::CERTS_USER))
        .bearer_auth(&token)
        .json(&json!({"public_key": "ssh-ed25519 AAAAnotbase64", "ttl_secs": 600}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        code_of(&r.json::<Value>().unwrap()),
        ErrorCode::InvalidPublicKey
    );
    // Bad and missing tokens: 401, not recorded as anyone's decision.
    for t in ["smith_user_nope", ""] {
        let r = request(&ca, t, &key, "env=dev", 600, None);
        assert_eq!(r.status, 401, "{}", r.body);
    }
    // Disabled user: the disable revoked their token too.
    ca.admin_ok(&["user", "disable", "alice"]);
    let r = request(&ca, &token, &key, "env=dev", 600, None);
    assert_eq!((r.status, code_of(&r.body)), (401, ErrorCode::TokenRevoked));

    let ds: Value = serde_json::from_str(&ca.admin_ok(&["decisions", "--json"])).unwrap();
    let ds = ds.as_array().unwrap();
    // The revoked token of the disabled user is refused before any decision.
    assert_eq!(ds.len(), cases.len() + 2, "{ds:?}");
    assert_eq!(ds.iter().filter(|d| d["allowed"] == true).count(), 1);
    assert!(ds
        .iter()
        .all(|d| d["allowed"] == true || d["serial"].is_null()));
    let human = ca.admin_ok(&["decisions", "--user", "carol"]);
    assert!(
        human.contains("DENIED") && human.contains("10.1.0.0/16"),
        "{human}"
    );
}

#[test]
fn restart_keeps_state_and_serials_never_repeat() {
    let mut ca = TestCa::start();
    let token = setup(&ca);
    let dir = tempfile::tempdir().unwrap();
    let key = keypair(dir.path(), "k");
    let mut serials = Vec::new();
    for _ in 0..3 {
        let r = request(&ca, &token, &key, "env=dev", 600, None);
        assert_eq!(r.status, 200, "{}", r.body);
        serials.push(r.body["serial"].as_u64().unwrap());
    }
    let users_before = ca.admin_ok(&["user", "list", "--json"]);
    let grants_before = ca.admin_ok(&["grant", "list", "--json"]);
    ca.restart();
    assert_eq!(ca.admin_ok(&["user", "list", "--json"]), users_before);
    assert_eq!(ca.admin_ok(&["grant", "list", "--json"]), grants_before);
    // The user token still works; serials continue upwards.
    for _ in 0..3 {
        let r = request(&ca, &token, &key, "env=dev", 600, None);
        assert_eq!(r.status, 200, "{}", r.body);
        serials.push(r.body["serial"].as_u64().unwrap());
    }
    ca.restart();
    let r = request(&ca, &token, &key, "env=dev", 600, None);
    serials.push(r.body["serial"].as_u64().unwrap());
    assert!(serials.windows(2).all(|w| w[0] < w[1]), "{serials:?}");
    // Ids allocated after a restart continue after the old ones.
    ca.admin_ok(&["user", "add", "zed"]);
    let users: Value = serde_json::from_str(&ca.admin_ok(&["user", "list", "--json"])).unwrap();
    let uids: Vec<u64> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["uid"].as_u64().unwrap())
        .collect();
    assert!(uids[1] > uids[0], "{uids:?}");
    assert!(
        ca.log().contains("SIGTERM received"),
        "graceful shutdown logged"
    );
}

#[test]
fn real_sshd_accepts_ca_certificates_only() {
    if !support::e2e_available("real_sshd_accepts_ca_certificates_only") {
        return;
    }
    let ca = TestCa::start();
    let token = setup(&ca);
    let sshd = Sshd::start("alice", &ca.user_ca_pub());
    let dir = tempfile::tempdir().unwrap();

    // A certificate from the CA logs in.
    let key = keypair(dir.path(), "good");
    let r = request(&ca, &token, &key, "env=dev", 600, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let cert = save_cert(&key, &r.body);
    let out = sshd.login_with(&key, &cert);
    assert!(
        text(&out.stdout).contains("smith-login-ok"),
        "login failed: {}\n--- sshd log:\n{}",
        text(&out.stderr),
        sshd.log()
    );
    // So does one with source-address 127.0.0.0/8 (the prod grant).
    let key_p = keypair(dir.path(), "prod");
    let r = request(&ca, &token, &key_p, "env=prod", 600, Some("INC-1"));
    let cert_p = save_cert(&key_p, &r.body);
    assert!(text(&sshd.login_with(&key_p, &cert_p).stdout).contains("smith-login-ok"));

    // Expired: signed by the same CA key, validity in the past.
    let key_e = keypair(dir.path(), "expired");
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(ca.user_ca_key())
        .args([
            "-I",
            "smith:alice:expired",
            "-n",
            "alice",
            "-V",
            "20200101:20200102",
        ])
        .arg(key_e.with_extension("pub")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cert_e = PathBuf::from(format!("{}-cert.pub", key_e.display()));
    let out = sshd.login_with(&key_e, &cert_e);
    assert!(!out.status.success() && !text(&out.stdout).contains("smith-login-ok"));

    // Another CA.
    let other = keypair(dir.path(), "other_ca");
    let key_o = keypair(dir.path(), "foreign");
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&other)
        .args(["-I", "smith:alice:foreign", "-n", "alice", "-V", "-5m:+1h"])
        .arg(key_o.with_extension("pub")));
    assert!(out.status.success());
    let cert_o = PathBuf::from(format!("{}-cert.pub", key_o.display()));
    let out = sshd.login_with(&key_o, &cert_o);
    assert!(!out.status.success() && !text(&out.stdout).contains("smith-login-ok"));

    // A CA certificate naming another principal does not log in as alice.
    ca.admin_ok(&["user", "add", "mallory", "--groups", "dev"]);
    let m = ca.user_token("mallory");
    let key_m = keypair(dir.path(), "mallory");
    let r = request(&ca, &m, &key_m, "env=dev", 600, None);
    let cert_m = save_cert(&key_m, &r.body);
    assert!(!sshd.login_with(&key_m, &cert_m).status.success());
    // sshd logged the key ID and serial of the accepted certificate.
    let log = sshd.log();
    assert!(
        log.contains(r#"ID smith:alice:"#) && log.contains("CA ED25519"),
        "{log}"
    );
}

#[test]
fn concurrent_issuance_gives_unique_serials_all_recorded() {
    // 240 requests of one user: past the default per-principal rate limit.
    let ca = TestCa::start_with(&[], &["--issuance-rate", "off"]);
    let token = setup(&ca);
    let dir = tempfile::tempdir().unwrap();
    let key = keypair(dir.path(), "k");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let http = ca.http(None);
            let (url, token, public) = (ca.url.clone(), token.clone(), public.clone());
            std::thread::spawn(move || {
                (0..15)
                    .map(|_| {
                        let r = http
                            .post(format!("{url}{}", endpoints::CERTS_USER))
                            .bearer_auth(&token)
                            .json(&json!({"public_key": public.trim(), "scope": "env=dev", "ttl_secs": 600}))
                            .send()
                            .unwrap();
                        assert_eq!(r.status().as_u16(), 200);
                        r.json::<Value>().unwrap()["serial"].as_u64().unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut serials: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 16 * 15, "unique serials");
    let ds: Value =
        serde_json::from_str(&ca.admin_ok(&["decisions", "--json", "--limit", "1000"])).unwrap();
    assert_eq!(
        ds.as_array().unwrap().len(),
        16 * 15,
        "every issuance recorded before its answer"
    );
}

/// Per-grant certificate contents: shared logins, permits and a forced command come
/// from the grants a certificate is issued under, and only those; grants that cannot
/// share a certificate are refused with advice.
#[test]
fn grant_options_shape_the_certificate() {
    let ca = TestCa::start();
    let token = setup(&ca);
    ca.admin_ok(&["group", "add", "deployers"]);
    ca.admin_ok(&["group", "add-member", "deployers", "alice"]);
    let grant = |extra: &[&str]| {
        let mut a = vec![
            "grant",
            "add",
            "--group",
            "deployers",
            "--level",
            "ssh",
            "--max-ttl",
            "1h",
        ];
        a.extend_from_slice(extra);
        ca.admin_ok(&a)
    };
    grant(&[
        "--tags",
        "env=stage",
        "--login",
        "deploy",
        "--permit",
        "agent-forwarding",
        "--deny",
        "pty",
    ]);
    // A person's account is never a shared login, nor is root.
    let refused_login = |login: &str| {
        ca.admin_err(&[
            "grant",
            "add",
            "--group",
            "deployers",
            "--tags",
            "env=stage",
            "--level",
            "ssh",
            "--max-ttl",
            "1h",
            "--login",
            login,
        ])
    };
    let e = refused_login("alice");
    assert!(
        e.contains("invalid_grant_option") && e.contains("Smith user"),
        "{e}"
    );
    assert!(e.contains("(400"), "{e}");
    let e = refused_login("root");
    assert!(e.contains("reserved"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let key = keypair(dir.path(), "k");
    let r = request(&ca, &token, &key, "env=stage", 600, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let l = keygen_l(&save_cert(&key, &r.body));
    assert_eq!(
        l.principals,
        vec![
            "alice",
            "deploy",
            "smith-grant:3:ssh:alice",
            "smith-tags:env=stage:alice",
            "smith-tags:env=stage:deploy"
        ]
    );
    assert!(l.extensions.iter().any(|x| x == "permit-agent-forwarding"));
    assert!(
        !l.extensions.iter().any(|x| x == "permit-pty"),
        "{:?}",
        l.extensions
    );

    // Two grants forcing different commands on the same hosts: refused, said why.
    grant(&["--tags", "env=kiosk", "--force-command", "/usr/bin/uptime"]);
    grant(&["--tags", "env=kiosk", "--force-command", "/bin/date"]);
    let r = request(&ca, &token, &key, "env=kiosk", 600, None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(code_of(&r.body), ErrorCode::GrantsConflict, "{}", r.body);
}

/// Host-aware certificates (issue 20): "what may I have for this host as this login" is
/// answered with a certificate under exactly the grants that fit it, and the list of
/// hosts holds exactly the ones the caller's grants cover. Refusals (unknown, ambiguous,
/// not covered, login not granted, conditions) are recorded and issue nothing.
#[test]
fn a_certificate_for_a_host_carries_exactly_the_grants_that_fit_it() {
    let ca = TestCa::start();
    let token = setup(&ca);
    // Grant 3: the shared login deploy on databases.
    ca.admin_ok(&[
        "grant",
        "add",
        "--group",
        "dev",
        "--tags",
        "role=db",
        "--level",
        "ssh",
        "--max-ttl",
        "1h",
        "--login",
        "deploy",
    ]);
    for (name, tags) in [
        ("db-1", "env=dev,role=db"),
        ("web-1.prod.example", "env=prod,role=web"),
        ("ci-1", "env=ci"),
        ("db-2.a.example", "env=dev"),
        ("db-2.b.example", "env=dev"),
    ] {
        ca.enroll_host(name, tags);
    }
    let client = ca.client(Some(&token), None);
    let ask = |host: &str, login: Option<&str>, reason: Option<&str>| {
        client.issue_host_cert(&smith_api::HostCertRequest {
            public_key: support::public_key(),
            host: host.to_string(),
            login: login.map(|l| smith_proto::UserName::new(l).unwrap()),
            ttl_secs: 600,
            reason: reason.map(str::to_string),
            oidc_nonce: None,
        })
    };
    let code = |r: Result<smith_api::HostCertResponse, smith_api::ClientError>| match r {
        Err(smith_api::ClientError::Status { code, message, .. }) => (code, message),
        other => panic!("not refused: {other:?}"),
    };

    // The list: every host a grant covers, none other.
    let hosts = client
        .user_hosts(&smith_api::HostsRequest::default())
        .unwrap();
    assert_eq!(hosts.user.as_str(), "alice");
    let names: Vec<&str> = hosts.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "db-1",
            "db-2.a.example",
            "db-2.b.example",
            "web-1.prod.example"
        ]
    );
    assert_eq!(hosts.hosts[0].scope.to_string(), "env=dev,role=db");
    assert_eq!(hosts.hosts[3].level, smith_proto::Level::Sudo);
    assert!(!hosts.user_ca_keys.is_empty());

    // db-1: the dev and database grants, never the prod one, whatever the reason.
    let r = ask("db-1", None, Some("INC-1")).unwrap();
    assert_eq!(r.host.name.as_str(), "db-1");
    assert_eq!(r.matched, smith_api::reach::Matched::Name);
    assert_eq!(r.cert.scope.to_string(), "env=dev,role=db");
    let grants: Vec<&str> = r
        .cert
        .principals
        .iter()
        .filter(|p| p.starts_with("smith-grant:"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        grants,
        ["smith-grant:1:ssh:alice", "smith-grant:3:ssh:alice"]
    );
    // As deploy: only the grant that allows it.
    let r = ask("db-1", Some("deploy"), None).unwrap();
    assert_eq!(r.cert.scope.to_string(), "role=db");
    assert!(r.cert.principals.contains(&"deploy".to_string()));
    assert!(
        !r.cert.principals.iter().any(|p| p.contains(":1:")),
        "{:?}",
        r.cert.principals
    );
    // A unique short name.
    let r = ask("web-1", None, Some("INC-2")).unwrap();
    assert_eq!(r.host.name.as_str(), "web-1.prod.example");
    assert_eq!(r.matched, smith_api::reach::Matched::ShortName);
    assert_eq!(r.cert.scope.to_string(), "env=prod");
    assert!(r
        .cert
        .principals
        .contains(&"smith-grant:2:sudo:alice".to_string()));

    // Refusals, each with its code, none issuing anything.
    let issued_before = ca.admin_ok(&["cert", "list", "--json"]);
    let (c, m) = code(ask("web-1", None, None));
    assert_eq!(c, ErrorCode::ConditionFailed, "{m}");
    assert!(
        m.contains("web-1.prod.example") && m.contains("reason"),
        "{m}"
    );
    let (c, m) = code(ask("ci-1", None, None));
    assert_eq!(c, ErrorCode::NoMatchingGrant, "{m}");
    let (c, m) = code(ask("web-1", Some("deploy"), Some("x")));
    assert_eq!(c, ErrorCode::NoMatchingGrant, "{m}");
    assert!(m.contains("'deploy'"), "{m}");
    let (c, m) = code(ask("db-2", None, None));
    assert_eq!(c, ErrorCode::AmbiguousHost, "{m}");
    assert!(m.contains("db-2.a.example, db-2.b.example"), "{m}");
    for hostile in [
        "nosuch",
        "x';touch /tmp/p;'",
        "a\nb",
        &"a".repeat(50_000)[..],
    ] {
        let (c, m) = code(ask(hostile, None, None));
        assert_eq!(c, ErrorCode::NoSuchHost, "{hostile:?}: {m}");
        assert!(m.len() < 500, "the name is echoed unbounded: {}", m.len());
    }
    assert_eq!(
        ca.admin_ok(&["cert", "list", "--json"]),
        issued_before,
        "a refusal issued a certificate"
    );
    // Recorded, with the host.
    let ds = ca.admin_ok(&["decisions", "--json"]);
    assert!(ds.contains("for host 'db-1' as 'deploy'"), "{ds}");
    assert!(ds.contains("no enrolled host is named 'nosuch'"), "{ds}");
}
