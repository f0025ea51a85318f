//! OIDC ID tokens against a REAL OpenID Provider (npm `oidc-provider`, tests/oidc) on
//! loopback: tokens obtained through its real code flow (PKCE, login and consent pages)
//! are verified by the CA (signature from the discovered JWKS, iss, aud, exp, nonce);
//! tampered, expired, wrong-audience and wrong-issuer tokens are refused with their reason
//! and recorded; a key rotation at the provider is picked up through a JWKS refresh on the
//! unknown `kid`; the CA keeps serving tokens while the provider is down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use smith_api::{endpoints, ErrorCode};
use smith_testkit::oidc;

use oidc::{id_token, Account, Provider, ProviderOptions};
use serde_json::{json, Value};
use support::{code_of, TestCa};

fn accounts() -> Vec<Account> {
    vec![
        Account::new("alice-0001", "alice", &["dev", "Engineering Staff"]),
        Account::new("oscar-0002", "oscar", &["ops"]),
        Account::new("mallory-0003", "Mallory Q", &["dev"]),
    ]
}

fn provider(ttl: Option<u64>) -> Option<Provider> {
    if !oidc::available("OIDC tests") {
        return None;
    }
    Some(
        Provider::start(&ProviderOptions {
            accounts: accounts(),
            id_token_ttl: ttl,
            ..Default::default()
        })
        .expect("start the OpenID Provider"),
    )
}

fn ca_for(op_issuer: &str) -> TestCa {
    TestCa::start_with(
        &[],
        &[
            "--oidc-issuer",
            op_issuer,
            "--oidc-client-id",
            "smith",
            "--oidc-allow-http",
            "--oidc-leeway",
            "1s",
            "--oidc-jwks-min-refresh",
            "1s",
        ],
    )
}

fn policy(ca: &TestCa) {
    ca.admin_ok(&["group", "add", "dev"]);
    ca.admin_ok(&["group", "add", "ops"]);
    // The test provider's groups claim carries the groups' names as their ids.
    ca.admin_ok(&["group", "map", "dev", "dev"]);
    ca.admin_ok(&["group", "map", "ops", "ops"]);
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
        "1h",
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
    ]);
}

fn refused(ca: &TestCa, bearer: &str, nonce: Option<&str>, status: u16, code: ErrorCode) -> String {
    let (s, v) = cert(ca, bearer, "env=dev", nonce);
    assert_eq!((s, code_of(&v)), (status, code), "{v}");
    v["error"].as_str().unwrap().to_string()
}

fn users(ca: &TestCa) -> Vec<smith_api::UserInfo> {
    serde_json::from_str(&ca.admin_ok(&["user", "list", "--json"])).unwrap()
}

fn decisions(ca: &TestCa) -> Vec<smith_api::Decision> {
    serde_json::from_str(&ca.admin_ok(&["decisions", "--json", "--limit", "1000"])).unwrap()
}

/// Flips one character of the signature part.
fn flip_signature(t: &str) -> String {
    let (head, sig) = t.rsplit_once('.').unwrap();
    let mut s: Vec<char> = sig.chars().collect();
    s[10] = if s[10] == 'A' { 'B' } else { 'A' };
    format!("{head}.{}", s.into_iter().collect::<String>())
}

/// Replaces the payload with the same claims but another username (signature kept).
fn forge_claim(t: &str, user: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = t.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["preferred_username"] = json!(user);
    claims["groups"] = json!(["dev", "ops"]);
    format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    )
}

#[test]
fn real_provider_tokens_are_verified_mapped_and_refused_when_bad() {
    let Some(op) = provider(None) else { return };
    let other = Provider::start(&ProviderOptions {
        accounts: accounts(),
        ..Default::default()
    })
    .expect("second provider");
    assert_ne!(op.issuer, other.issuer);
    let ca = ca_for(&op.issuer);
    policy(&ca);

    // Public auth config for `smith login`.
    let r = ca
        .http(None)
        .get(format!("{}{}", ca.url, endpoints::AUTH_CONFIG))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ac: smith_api::AuthConfig = r.json().unwrap();
    assert_eq!(
        (ac.issuer.as_str(), ac.client_id.as_str()),
        (op.issuer.as_str(), "smith")
    );
    assert!(ac.scopes.iter().any(|s| s == "openid"));

    // alice's first sign-in provisions her with her IdP groups the CA knows.
    let tok = id_token(&op, "smith", "alice-0001", Some("nonce-1")).unwrap();
    let (s, v) = cert(&ca, &tok, "env=dev", Some("nonce-1"));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["principals"][0], json!("alice"));
    let alice = users(&ca)
        .into_iter()
        .find(|u| u.name.as_str() == "alice")
        .expect("provisioned");
    let groups: Vec<String> = alice.groups.iter().map(|g| g.to_string()).collect();
    assert_eq!(
        groups,
        vec!["dev"],
        "'Engineering Staff' is not a group name: ignored"
    );
    assert_eq!(alice.gecos, "alice Example");
    // Only what her IdP groups allow.
    let (s, v) = cert(&ca, &tok, "env=prod", Some("nonce-1"));
    assert_eq!((s, code_of(&v)), (403, ErrorCode::NoMatchingGrant), "{v}");

    // Sign-ins manage only the memberships sign-ins made: an admin's stays.
    ca.admin_ok(&["group", "add-member", "ops", "alice"]);
    let (s, _) = cert(&ca, &tok, "env=dev", Some("nonce-1"));
    assert_eq!(s, 200);
    let alice = users(&ca)
        .into_iter()
        .find(|u| u.name.as_str() == "alice")
        .unwrap();
    assert_eq!(
        alice.groups.len(),
        2,
        "the admin's ops membership stays: {:?}",
        alice.groups
    );
    ca.admin_ok(&["group", "remove-member", "ops", "alice"]);

    // Nonce rule.
    let why = refused(&ca, &tok, None, 401, ErrorCode::OidcNonceMismatch);
    assert!(why.contains("nonce"), "{why}");
    refused(
        &ca,
        &tok,
        Some("nonce-2"),
        401,
        ErrorCode::OidcNonceMismatch,
    );
    let no_nonce = id_token(&op, "smith", "alice-0001", None).unwrap();
    refused(
        &ca,
        &no_nonce,
        Some("nonce-1"),
        401,
        ErrorCode::OidcNonceMismatch,
    );
    assert_eq!(cert(&ca, &no_nonce, "env=dev", None).0, 200);

    // Tampered: a flipped signature byte, a changed claim.
    let why = refused(
        &ca,
        &flip_signature(&tok),
        Some("nonce-1"),
        401,
        ErrorCode::OidcBadSignature,
    );
    assert!(why.contains("signature"), "{why}");
    refused(
        &ca,
        &forge_claim(&tok, "oscar"),
        Some("nonce-1"),
        401,
        ErrorCode::OidcBadSignature,
    );
    // Wrong audience (the provider's second client), wrong issuer (another provider).
    let aud = id_token(&op, "smith-other", "alice-0001", Some("n")).unwrap();
    let why = refused(&ca, &aud, Some("n"), 401, ErrorCode::OidcWrongAudience);
    assert!(why.contains("smith"), "{why}");
    let iss = id_token(&other, "smith", "alice-0001", Some("n")).unwrap();
    let why = refused(&ca, &iss, Some("n"), 401, ErrorCode::OidcWrongIssuer);
    assert!(
        why.contains(&other.issuer) && why.contains(&op.issuer),
        "{why}"
    );
    // A login name that is not a valid Smith name.
    let bad = id_token(&op, "smith", "mallory-0003", Some("n")).unwrap();
    let why = refused(&ca, &bad, Some("n"), 403, ErrorCode::OidcInvalidUsername);
    assert!(why.contains("Mallory Q"), "{why}");

    // Unverified tokens (forged, replayed, for another audience or issuer, naming no
    // valid login) are refused and counted, never recorded: no decision says why one
    // did not verify, none is labelled with a forged token's claimed user.
    let d = decisions(&ca);
    assert!(
        d.iter().all(|x| !x.reason.starts_with("ID token refused")),
        "an unverified token was recorded: {d:#?}"
    );
    assert!(
        !d.iter().any(|x| x.user == "oscar" || x.user == "mallory"),
        "an unverified claim labels a decision: {d:#?}"
    );
    let health = ca.client(Some(&ca.admin_token), None).health().unwrap();
    assert!(health.rejected_credentials.unwrap_or(0) >= 8, "{health:?}");
    assert!(d
        .iter()
        .any(|x| x.allowed && x.user == "alice" && x.reason.contains("via OIDC (sub alice-0001")));

    // A disabled user gets nothing, even with a valid token.
    ca.admin_ok(&["user", "disable", "alice"]);
    let (s, v) = cert(&ca, &tok, "env=dev", Some("nonce-1"));
    assert_eq!((s, code_of(&v)), (403, ErrorCode::UserDisabled), "{v}");
}

#[test]
fn expired_tokens_are_refused() {
    let Some(op) = provider(Some(2)) else { return };
    let ca = ca_for(&op.issuer);
    policy(&ca);
    let tok = id_token(&op, "smith", "alice-0001", Some("n")).unwrap();
    assert_eq!(cert(&ca, &tok, "env=dev", Some("n")).0, 200);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let why = refused(&ca, &tok, Some("n"), 401, ErrorCode::OidcExpired);
    assert!(why.contains("smith login"), "{why}");
}

#[test]
fn a_key_rotation_at_the_provider_is_picked_up() {
    let Some(mut op) = provider(None) else { return };
    let ca = ca_for(&op.issuer);
    policy(&ca);
    let old_kid = op.kid.clone();
    let before = id_token(&op, "smith", "alice-0001", Some("n")).unwrap();
    assert_eq!(cert(&ca, &before, "env=dev", Some("n")).0, 200);
    op.restart(true).expect("rotate the provider's key");
    assert_ne!(op.kid, old_kid, "a new signing key");
    std::thread::sleep(std::time::Duration::from_millis(1200)); // past --oidc-jwks-min-refresh
    let after = id_token(&op, "smith", "alice-0001", Some("n")).unwrap();
    let (s, v) = cert(&ca, &after, "env=dev", Some("n"));
    assert_eq!(
        s,
        200,
        "new kid {} not picked up: {v}\n{}",
        op.kid,
        ca.log()
    );
    let log = ca.log();
    assert!(
        log.lines()
            .any(|l| l.contains("fetched the OpenID Provider's keys") && l.contains(&op.kid)),
        "the CA refreshed its keys on the unknown kid {}: {log}",
        op.kid
    );
    // The old key is still published: tokens it signed stay valid until they expire.
    assert_eq!(cert(&ca, &before, "env=dev", Some("n")).0, 200);
}

#[test]
fn the_ca_serves_tokens_while_the_provider_is_down() {
    let Some(mut op) = provider(None) else { return };
    let tok = id_token(&op, "smith", "alice-0001", Some("n")).unwrap();
    op.stop();
    let ca = ca_for(&op.issuer);
    policy(&ca);
    ca.admin_ok(&["user", "add", "bob", "--groups", "dev"]);
    let bob = ca.user_token("bob");
    assert_eq!(
        cert(&ca, &bob, "env=dev", None).0,
        200,
        "user tokens work without the IdP"
    );
    let why = refused(&ca, &tok, Some("n"), 503, ErrorCode::OidcUnavailable);
    assert!(why.contains("could not be fetched"), "{why}");
    // The provider comes back (same address and keys): sign-ins work again.
    op.restart(false).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let (s, v) = cert(&ca, &tok, "env=dev", Some("n"));
    assert_eq!(s, 200, "{v}");
}

/// POST /v1/certs/user with `bearer`: (status, body).
fn cert(ca: &TestCa, bearer: &str, scope: &str, nonce: Option<&str>) -> (u16, Value) {
    ca.request_cert(bearer, scope, nonce)
}
