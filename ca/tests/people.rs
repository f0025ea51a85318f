//! Issue 13's attacks, written as the attacker would try them, through the real
//! `smith-ca` binaries (init, serve, admin) and a REAL OpenID Provider (npm
//! `oidc-provider`, tests/oidc) on loopback:
//!
//! - identity: a second IdP account presenting an existing user's `preferred_username`
//!   cannot take the account; an IdP group named like a CA group grants nothing without
//!   a mapping keyed by the IdP's group id;
//! - SCIM owns only what SCIM created: an admin's disable is sticky, SCIM deleting a group
//!   leaves the admin's grants, SCIM cannot pick uid 1000 or an earlier user's uid, nor
//!   join an admin's group;
//! - credentials: the bootstrap token past its life is refused, and retired once a named
//!   admin exists; `smith-ca admin login` signs in admins of the IdP admin group (and only
//!   them); a revoked admin token is refused at once; a disable kills the user's tokens;
//!   every token kind is listed, revocable and rotatable; `--token` warns;
//! - attribution: a named admin's action shows in `admin changes` and in the `@ca` chain;
//!   `audit verify` passes over changes by an admin, SCIM and an OIDC sign-in, and fails
//!   after one changed row;
//! - hygiene: a per-principal issuance rate limit, a maximum ID-token age;
//! - backup and restore: a consistent online copy; a restore gets a new epoch (a host of
//!   the old epoch gets a full snapshot although it had seen higher versions), serials
//!   never go back, and the restore is in the record of changes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use smith_testkit::oidc;

use oidc::{drive_sign_in, id_token, Account, Browser, Provider, ProviderOptions};
use serde_json::{json, Value};
use smith_api::endpoints;
use smith_proto::snapshot::SyncResponse;
use std::process::{Command, Output};
use std::time::Duration;
use support::{bin, run, text, TestCa};

const DEV_ID: &str = "0f1e5c2a-dev0-4c1b-8f00-000000000d01";
const OPS_ID: &str = "9a8b7c6d-ops0-4c1b-8f00-000000000a02";
const ADMINS_ID: &str = "5e5e5e5e-adm0-4c1b-8f00-0000000000ad";

fn provider(accounts: Vec<Account>, ttl: Option<u64>) -> Option<Provider> {
    if !oidc::available("issue 13 tests") {
        return None;
    }
    Some(
        Provider::start(&ProviderOptions {
            accounts,
            id_token_ttl: ttl,
            ..Default::default()
        })
        .expect("start the OpenID Provider"),
    )
}

fn oidc_args<'a>(op: &'a Provider, more: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--oidc-issuer",
        op.issuer.as_str(),
        "--oidc-client-id",
        "smith",
        "--oidc-allow-http",
        "--oidc-leeway",
        "1s",
    ];
    v.extend_from_slice(more);
    v
}

fn code(v: &(u16, Value)) -> (u16, Option<&str>) {
    (v.0, v.1["code"].as_str())
}

fn users(ca: &TestCa) -> Vec<smith_api::UserInfo> {
    serde_json::from_str(&ca.admin_ok(&["user", "list", "--json"])).unwrap()
}

fn user(ca: &TestCa, name: &str) -> Option<smith_api::UserInfo> {
    users(ca).into_iter().find(|u| u.name.as_str() == name)
}

/// A SCIM call: (status, body).
fn scim(ca: &TestCa, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = ca
        .http(None)
        .request(method.parse().unwrap(), format!("{}/scim/v2{path}", ca.url))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/scim+json")
            .body(b.to_string());
    }
    let r = req.send().unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

fn patch(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

/// `smith-ca admin ARGS` with `token` as SMITH_TOKEN (or none).
fn admin_as(ca: &TestCa, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(bin("smith-ca"));
    c.arg("admin")
        .args(args)
        .env("SMITH_CA_URL", &ca.url)
        .env("SMITH_CA_FINGERPRINT", &ca.fingerprint)
        .env_remove("SMITH_TOKEN")
        .env_remove("SMITH_TOKEN_FILE");
    if let Some(t) = token {
        c.env("SMITH_TOKEN", t);
    }
    run(&mut c)
}

fn changes(ca: &TestCa) -> Vec<smith_api::ChangeInfo> {
    serde_json::from_str(&ca.admin_ok(&["changes", "--json", "--limit", "1000"])).unwrap()
}

#[test]
fn a_second_idp_account_cannot_take_an_account_and_group_names_grant_nothing() {
    let Some(op) = provider(
        vec![
            Account::new("alice-0001", "alice", &[DEV_ID]),
            // The attacker edited their preferred_username to the victim's login name.
            Account::new("mallory-0666", "alice", &[DEV_ID]),
            Account::new("bob-0002", "bob", &[]),
            Account::new("mal2-0777", "bob", &[]),
            // An IdP group the attacker created and named like the CA's sudo group.
            Account::new("carol-0003", "carol", &["ops"]),
            Account::new("oscar-0004", "oscar", &[OPS_ID]),
        ],
        None,
    ) else {
        return;
    };
    let ca = TestCa::start_with(&[], &oidc_args(&op, &[]));
    ca.admin_ok(&["group", "add", "dev"]);
    ca.admin_ok(&["group", "add", "ops"]);
    grant(&ca, "dev", "env=dev", "ssh");
    grant(&ca, "ops", "env=prod", "sudo");
    ca.admin_ok(&["group", "map", "dev", DEV_ID]);
    ca.admin_ok(&["group", "map", "ops", OPS_ID]);
    let mappings = ca.admin_ok(&["group", "mappings"]);
    assert!(mappings.contains(OPS_ID), "{mappings}");

    // The admin made alice's account; it is bound to nobody yet.
    ca.admin_ok(&["user", "add", "alice", "--groups", "dev"]);
    let alice_uid = user(&ca, "alice").unwrap().uid;
    let mallory = id_token(&op, "smith", "mallory-0666", Some("n")).unwrap();
    let r = cert(&ca, &mallory, "env=dev", Some("n"));
    assert_eq!(code(&r), (403, Some("oidc_not_bound")), "{}", r.1);
    // Not even the real alice takes it by a first sign-in.
    let real = id_token(&op, "smith", "alice-0001", Some("n")).unwrap();
    assert_eq!(
        code(&cert(&ca, &real, "env=dev", Some("n"))).1,
        Some("oidc_not_bound")
    );
    let a = user(&ca, "alice").unwrap();
    assert_eq!(
        (a.oidc_subject, a.uid),
        (None, alice_uid),
        "nothing was bound"
    );
    // The admin binds it to alice's immutable identity: alice in, mallory still out.
    ca.admin_ok(&["user", "bind", "alice", "--oidc-subject", "alice-0001"]);
    let r = cert(&ca, &real, "env=dev", Some("n"));
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["principals"][0], json!("alice"));
    let r = cert(&ca, &mallory, "env=dev", Some("n"));
    assert_eq!(code(&r), (403, Some("oidc_subject_mismatch")), "{}", r.1);

    // SCIM's externalId is a binding too: bob's first sign-in carries his IdP id (the
    // `sub` here; Entra: `--oidc-external-id-claim oid`), an impostor's does not.
    let st = ca.admin_ok(&["scim", "token"]).trim().to_string();
    let (s, _) = scim(
        &ca,
        &st,
        "POST",
        "/Users",
        Some(json!({"userName": "bob", "externalId": "bob-0002"})),
    );
    assert_eq!(s, 201);
    ca.admin_ok(&["group", "add-member", "dev", "bob"]);
    let imp = id_token(&op, "smith", "mal2-0777", Some("n")).unwrap();
    assert_eq!(
        code(&cert(&ca, &imp, "env=dev", Some("n"))).1,
        Some("oidc_not_bound")
    );
    let bob = id_token(&op, "smith", "bob-0002", Some("n")).unwrap();
    let r = cert(&ca, &bob, "env=dev", Some("n"));
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(
        user(&ca, "bob").unwrap().oidc_subject.as_deref(),
        Some("bob-0002")
    );
    assert_eq!(
        code(&cert(&ca, &imp, "env=dev", Some("n"))).1,
        Some("oidc_subject_mismatch")
    );

    // An IdP group *named* ops grants nothing; the mapped id does.
    let carol = id_token(&op, "smith", "carol-0003", Some("n")).unwrap();
    let r = cert(&ca, &carol, "env=prod", Some("n"));
    assert_eq!(code(&r), (403, Some("no_matching_grant")), "{}", r.1);
    assert!(user(&ca, "carol").unwrap().groups.is_empty());
    let oscar = id_token(&op, "smith", "oscar-0004", Some("n")).unwrap();
    let r = cert(&ca, &oscar, "env=prod", Some("n"));
    assert_eq!(r.0, 200, "{}", r.1);
    // Unmapping takes back what sign-ins gave through the mapping.
    ca.admin_ok(&["group", "unmap", "ops", OPS_ID]);
    assert!(user(&ca, "oscar").unwrap().groups.is_empty());
    let r = cert(&ca, &oscar, "env=prod", Some("n"));
    assert_eq!(code(&r).1, Some("no_matching_grant"), "{}", r.1);

    // Every refusal is a recorded decision.
    let d: Vec<smith_api::Decision> =
        serde_json::from_str(&ca.admin_ok(&["decisions", "--json", "--limit", "1000"])).unwrap();
    assert!(d
        .iter()
        .any(|x| !x.allowed && x.user == "alice" && x.reason.contains("not bound")));
}

#[test]
fn scim_changes_only_what_scim_created() {
    let ca = TestCa::start();
    ca.admin_ok(&["group", "add", "oncall"]);
    grant(&ca, "oncall", "env=prod", "sudo");
    let st = ca.admin_ok(&["scim", "token"]).trim().to_string();
    let (s, v) = scim(
        &ca,
        &st,
        "POST",
        "/Users",
        Some(json!({"userName": "sam", "externalId": "00u-sam"})),
    );
    assert_eq!(s, 201, "{v}");

    // An admin disables sam during an incident; the IdP pushes active:true again.
    ca.admin_ok(&["user", "disable", "sam"]);
    let (s, v) = scim(
        &ca,
        &st,
        "PATCH",
        "/Users/sam",
        Some(patch(json!([{"op": "replace", "value": {"active": true}}]))),
    );
    assert_eq!(s, 403, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("disabled by an admin"),
        "{v}"
    );
    let (s, _) = scim(
        &ca,
        &st,
        "PUT",
        "/Users/sam",
        Some(json!({"userName": "sam", "active": true})),
    );
    assert_eq!(s, 403);
    let sam = user(&ca, "sam").unwrap();
    assert_eq!(
        (sam.disabled, sam.disabled_by.as_deref()),
        (true, Some("admin"))
    );
    // The admin's enable works (and its revoked tokens stay revoked: see the token test).
    ca.admin_ok(&["user", "enable", "sam"]);

    // SCIM may not join the admin's group, nor touch the admin's users.
    let (s, v) = scim(
        &ca,
        &st,
        "PATCH",
        "/Groups/oncall",
        Some(patch(
            json!([{"op": "add", "path": "members", "value": [{"value": "sam"}]}]),
        )),
    );
    assert_eq!(s, 403, "{v}");
    ca.admin_ok(&["user", "add", "root-ops"]);
    let (s, _) = scim(
        &ca,
        &st,
        "PATCH",
        "/Users/root-ops",
        Some(patch(
            json!([{"op": "replace", "value": {"active": false}}]),
        )),
    );
    assert_eq!(s, 403);
    let (s, _) = scim(&ca, &st, "DELETE", "/Users/root-ops", None);
    assert_eq!(s, 403);
    assert!(user(&ca, "root-ops").is_some_and(|u| !u.disabled));

    // SCIM deleting its group leaves the admin's grant on it.
    let (s, _) = scim(
        &ca,
        &st,
        "POST",
        "/Groups",
        Some(json!({"displayName": "eng", "members": [{"value": "sam"}]})),
    );
    assert_eq!(s, 201);
    grant(&ca, "eng", "env=dev", "ssh");
    let (s, _) = scim(&ca, &st, "DELETE", "/Groups/eng", None);
    assert_eq!(s, 204);
    let grants: Vec<smith_api::GrantInfo> =
        serde_json::from_str(&ca.admin_ok(&["grant", "list", "--json"])).unwrap();
    assert!(
        grants.iter().any(|g| g.group.as_str() == "eng"),
        "the admin's grant on eng survives SCIM's delete: {grants:?}"
    );

    // SCIM asks for uid 1000 (a local account's id on many hosts): refused, nothing made.
    let (s, v) = scim(
        &ca,
        &st,
        "POST",
        "/Users",
        Some(json!({"userName": "mallory", "uidNumber": 1000})),
    );
    assert_eq!(
        (s, v["scimType"].as_str()),
        (400, Some("invalidValue")),
        "{v}"
    );
    assert!(user(&ca, "mallory").is_none());

    // A recycled login name: a new uid, unless an admin says it is the same person.
    let (_, v) = scim(
        &ca,
        &st,
        "POST",
        "/Users",
        Some(json!({"userName": "rita"})),
    );
    let rita_uid = v["urn:ietf:params:scim:schemas:extension:smith:2.0:User"]["uidNumber"]
        .as_u64()
        .unwrap();
    assert_eq!(scim(&ca, &st, "DELETE", "/Users/rita", None).0, 204);
    let (_, v) = scim(
        &ca,
        &st,
        "POST",
        "/Users",
        Some(json!({"userName": "rita"})),
    );
    let again = v["urn:ietf:params:scim:schemas:extension:smith:2.0:User"]["uidNumber"]
        .as_u64()
        .unwrap();
    assert_ne!(
        again, rita_uid,
        "a new rita never owns the old rita's files"
    );
    assert_eq!(scim(&ca, &st, "DELETE", "/Users/rita", None).0, 204);
    ca.admin_ok(&["user", "add", "rita", "--reuse-uid"]);
    assert_eq!(user(&ca, "rita").unwrap().uid.get() as u64, again);
}

/// Runs `smith-ca admin login --no-browser` and signs in as `account` through the
/// provider's pages with a scripted browser.
fn admin_login(ca: &TestCa, account: &str) -> Output {
    let mut cmd = Command::new(bin("smith-ca"));
    cmd.args(["admin", "login", "--no-browser", "--timeout", "60s"])
        .env("SMITH_CA_URL", &ca.url)
        .env("SMITH_CA_FINGERPRINT", &ca.fingerprint)
        .env_remove("SMITH_TOKEN")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY");
    drive_sign_in(&mut cmd, &Browser::new(), account, false).expect("admin sign-in")
}

#[test]
fn the_bootstrap_token_dies_after_its_life() {
    let ca = TestCa::start_with(&["--bootstrap-ttl", "2s"], &[]);
    assert!(admin_as(&ca, Some(&ca.admin_token), &["user", "list"])
        .status
        .success());
    std::thread::sleep(Duration::from_millis(3200));
    let out = admin_as(&ca, Some(&ca.admin_token), &["user", "list"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("token_expired"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn named_admins_sign_in_tokens_have_a_lifecycle_and_changes_name_who() {
    let Some(op) = provider(
        vec![
            Account::new("ada-0009", "ada", &[ADMINS_ID, DEV_ID]),
            Account::new("alice-0001", "alice", &[DEV_ID]),
        ],
        None,
    ) else {
        return;
    };
    let ca = TestCa::start_with(&[], &oidc_args(&op, &["--oidc-admin-group", ADMINS_ID]));
    let boot = ca.admin_token.clone();
    let list: Vec<smith_api::TokenInfo> =
        serde_json::from_str(&ca.admin_ok(&["token", "list", "--json"])).unwrap();
    assert_eq!(
        list.iter().map(|t| t.kind.as_str()).collect::<Vec<_>>(),
        vec!["bootstrap"]
    );

    // alice is not in the admins' IdP group: no admin token for her.
    let out = admin_login(&ca, "alice-0001");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("oidc_not_admin"),
        "{}",
        text(&out.stderr)
    );
    // ada is: the same flow as `smith login`, the admin token kept in the kernel keyring.
    let out = admin_login(&ca, "ada-0009");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("Signed in as admin ada"),
        "{}",
        text(&out.stdout)
    );
    assert!(!text(&out.stdout).contains("smith_admin_"), "never printed");
    // Her commands need no secret anywhere: the session is found in the keyring.
    let out = admin_as(&ca, None, &["group", "add", "from-ada"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A named admin exists: the bootstrap token is retired at once.
    let out = admin_as(&ca, Some(&boot), &["user", "list"]);
    assert!(
        text(&out.stderr).contains("token_revoked"),
        "{}",
        text(&out.stderr)
    );

    // Her action is hers: in `admin changes` and in the CA's chain.
    let ch: Vec<smith_api::ChangeInfo> = serde_json::from_slice(
        &admin_as(&ca, None, &["changes", "--json", "--actor", "ada"]).stdout,
    )
    .unwrap();
    let mine = ch.iter().find(|c| c.what == "group add from-ada").unwrap();
    assert_eq!(
        (mine.origin.as_str(), mine.source.as_deref()),
        ("admin", Some("127.0.0.1"))
    );
    assert!(mine.token_id.is_some());
    let login = ch.iter().len();
    assert!(login >= 1);
    let chain: Vec<Value> = serde_json::from_slice(
        &admin_as(
            &ca,
            None,
            &["audit", "list", "--host", "@ca", "--user", "ada", "--json"],
        )
        .stdout,
    )
    .unwrap();
    assert!(chain
        .iter()
        .any(|e| e["kind"] == "change" && e["event"]["what"] == "group add from-ada"));
    let human = text(&admin_as(&ca, None, &["changes"]).stdout);
    assert!(
        human.contains("admin login ada") && human.contains("ada"),
        "{human}"
    );

    // A named admin token for automation, read from a file (no secret on a command line).
    let out = admin_as(
        &ca,
        None,
        &["token", "create", "--name", "ci-bot", "--json"],
    );
    let ci: smith_api::TokenResponse = serde_json::from_slice(&out.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ci-token");
    std::fs::write(&file, format!("{}\n", ci.token)).unwrap();
    let out = run(Command::new(bin("smith-ca"))
        .args(["admin", "group", "add", "from-ci", "--token-file"])
        .arg(&file)
        .env("SMITH_CA_URL", &ca.url)
        .env("SMITH_CA_FINGERPRINT", &ca.fingerprint)
        .env_remove("SMITH_TOKEN"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    // On a command line it works, with a warning.
    let out = run(Command::new(bin("smith-ca"))
        .args(["admin", "user", "list", "--token", &ci.token])
        .env("SMITH_CA_URL", &ca.url)
        .env("SMITH_CA_FINGERPRINT", &ca.fingerprint));
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("warning: --token"),
        "{}",
        text(&out.stderr)
    );
    // Revoked by ada: refused at once.
    let id = ci.id.clone().unwrap();
    assert!(admin_as(&ca, None, &["token", "revoke", &id])
        .status
        .success());
    let out = admin_as(&ca, Some(&ci.token), &["user", "list"]);
    assert!(
        text(&out.stderr).contains("token_revoked"),
        "{}",
        text(&out.stderr)
    );
    let who: Vec<smith_api::ChangeInfo> = serde_json::from_slice(
        &admin_as(&ca, None, &["changes", "--json", "--actor", "ci-bot"]).stdout,
    )
    .unwrap();
    assert_eq!(
        who.iter().map(|c| c.what.as_str()).collect::<Vec<_>>(),
        vec!["group add from-ci"]
    );

    // User tokens: listed, rotated (the old one dies), killed by a disable and not back
    // with an enable.
    assert!(
        admin_as(&ca, None, &["user", "add", "bob", "--groups", "dev"])
            .status
            .success()
    );
    // (as ada: the bootstrap token is retired)
    let out = admin_as(
        &ca,
        None,
        &[
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
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bob: smith_api::TokenResponse =
        serde_json::from_slice(&admin_as(&ca, None, &["user", "token", "bob", "--json"]).stdout)
            .unwrap();
    assert_eq!(cert(&ca, &bob.token, "env=dev", None).0, 200);
    let rotated: smith_api::TokenResponse = serde_json::from_slice(
        &admin_as(
            &ca,
            None,
            &["token", "rotate", bob.id.as_deref().unwrap(), "--json"],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(
        code(&cert(&ca, &bob.token, "env=dev", None)),
        (401, Some("token_revoked"))
    );
    assert_eq!(cert(&ca, &rotated.token, "env=dev", None).0, 200);
    let scim_tok = text(&admin_as(&ca, None, &["scim", "token"]).stdout);
    let kinds: Vec<smith_api::TokenInfo> =
        serde_json::from_slice(&admin_as(&ca, None, &["token", "list", "--all", "--json"]).stdout)
            .unwrap();
    for k in ["bootstrap", "admin", "user", "scim"] {
        assert!(kinds.iter().any(|t| t.kind == k), "{k} listed: {kinds:?}");
    }
    assert!(kinds.iter().all(|t| t.expires_at > 0));
    assert!(!scim_tok.trim().is_empty());
    assert!(admin_as(&ca, None, &["user", "disable", "bob"])
        .status
        .success());
    assert!(admin_as(&ca, None, &["user", "enable", "bob"])
        .status
        .success());
    assert_eq!(
        code(&cert(&ca, &rotated.token, "env=dev", None)),
        (401, Some("token_revoked")),
        "a disable killed the token; the enable did not bring it back"
    );
    assert!(admin_as(&ca, None, &["logout"]).status.success());
    let out = admin_as(&ca, None, &["user", "list"]);
    assert!(!out.status.success(), "signed out: no token at all");
}

#[test]
fn audit_verify_covers_every_change_and_fails_after_one_changed_row() {
    let Some(op) = provider(vec![Account::new("alice-0001", "alice", &[DEV_ID])], None) else {
        return;
    };
    let mut ca = TestCa::start_with(&[], &oidc_args(&op, &[]));
    // An admin's changes, SCIM's, an OIDC sign-in's.
    ca.admin_ok(&["group", "add", "dev"]);
    ca.admin_ok(&["group", "map", "dev", DEV_ID]);
    grant(&ca, "dev", "env=dev", "ssh");
    let st = ca.admin_ok(&["scim", "token"]).trim().to_string();
    assert_eq!(
        scim(&ca, &st, "POST", "/Users", Some(json!({"userName": "sam"}))).0,
        201
    );
    let t = id_token(&op, "smith", "alice-0001", Some("n")).unwrap();
    assert_eq!(cert(&ca, &t, "env=dev", Some("n")).0, 200);
    let ch = changes(&ca);
    for (origin, what) in [
        ("admin", "grant add dev env=dev ssh"),
        ("scim", "user add sam"),
        ("oidc", "oidc sign-in alice (sub alice-0001)"),
    ] {
        assert!(
            ch.iter().any(|c| c.origin == origin && c.what == what),
            "{origin} {what}: {ch:?}"
        );
    }
    let scim_change = ch.iter().find(|c| c.origin == "scim").unwrap();
    assert_eq!(scim_change.source.as_deref(), Some("127.0.0.1"));
    let v: Value = serde_json::from_str(&ca.admin_ok(&["audit", "verify", "--json"])).unwrap();
    assert_eq!(v["ok"], true, "{v}");

    // Someone with the database rewrites who made the grant (triggers dropped first).
    assert!(ca.stop());
    let db = ca.data_dir.join("ca.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("DROP TRIGGER audit_records_no_update")
            .unwrap();
        let n = c
            .execute(
                "UPDATE audit_records SET event = replace(event, '\"actor\":\"bootstrap\"', \
                 '\"actor\":\"scim\"') WHERE host = '@ca' AND kind = 'change' \
                 AND event LIKE '%grant add dev%'",
                [],
            )
            .unwrap();
        assert_eq!(n, 1, "the grant's change record");
    }
    let out = run(Command::new(bin("smith-ca"))
        .args(["audit", "verify", "--data-dir"])
        .arg(&ca.data_dir));
    assert!(!out.status.success(), "offline verify must fail");
    assert!(text(&out.stdout).contains("@ca"), "{}", text(&out.stdout));
    ca.restart();
    let out = ca.admin(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
}

#[test]
fn issuance_is_rate_limited_per_principal_and_old_id_tokens_are_refused() {
    let Some(op) = provider(
        vec![Account::new("alice-0001", "alice", &[DEV_ID])],
        Some(600),
    ) else {
        return;
    };
    let ca = TestCa::start_with(
        &[],
        &oidc_args(
            &op,
            &["--issuance-rate", "3/1h", "--oidc-max-token-age", "6s"],
        ),
    );
    ca.admin_ok(&["user", "add", "bob", "--groups", "dev"]);
    ca.admin_ok(&["user", "add", "carl", "--groups", "dev"]);
    ca.admin_ok(&["group", "map", "dev", DEV_ID]);
    grant(&ca, "dev", "env=dev", "ssh");
    let bob = ca.user_token("bob");
    for _ in 0..3 {
        assert_eq!(cert(&ca, &bob, "env=dev", None).0, 200);
    }
    let r = cert(&ca, &bob, "env=dev", None);
    assert_eq!(code(&r), (429, Some("rate_limited")), "{}", r.1);
    // Another principal is not held back; the flood is not recorded decision by decision.
    assert_eq!(cert(&ca, &ca.user_token("carl"), "env=dev", None).0, 200);
    let d: Vec<smith_api::Decision> =
        serde_json::from_str(&ca.admin_ok(&["decisions", "--json", "--user", "bob"])).unwrap();
    assert_eq!(d.len(), 3);

    // A leaked ID token stops working past the maximum age, though its IdP gave it 10 min.
    let t = id_token(&op, "smith", "alice-0001", Some("n")).unwrap();
    assert_eq!(cert(&ca, &t, "env=dev", Some("n")).0, 200);
    std::thread::sleep(Duration::from_secs(8));
    let r = cert(&ca, &t, "env=dev", Some("n"));
    assert_eq!(code(&r), (401, Some("oidc_token_too_old")), "{}", r.1);
}

fn enroll(ca: &TestCa, name: &str, tags: &str) -> smith_api::Identity {
    ca.enroll_host(name, tags)
}

fn sync(
    ca: &TestCa,
    id: &smith_api::Identity,
    since: u64,
    epoch: Option<&str>,
) -> (u16, Option<SyncResponse>) {
    let mut url = format!("{}{}?since={since}&wait=0", ca.url, endpoints::HOST_SYNC);
    if let Some(e) = epoch {
        url.push_str(&format!("&epoch={e}"));
    }
    let r = ca.http(Some(id)).get(url).send().unwrap();
    let s = r.status().as_u16();
    (s, (s == 200).then(|| r.json().unwrap()))
}

#[test]
fn backup_online_and_restore_with_a_new_epoch() {
    let mut ca = TestCa::start();
    ca.admin_ok(&["group", "add", "dev"]);
    grant(&ca, "dev", "env=dev", "ssh");
    ca.admin_ok(&["user", "add", "alice", "--groups", "dev"]);
    let host = enroll(&ca, "web-1", "env=dev");
    let alice = ca.user_token("alice");
    assert_eq!(cert(&ca, &alice, "env=dev", None).0, 200);
    let (_, first) = sync(&ca, &host, 0, None);
    let first = first.unwrap();
    let epoch = first.epoch.clone().expect("the CA says its epoch");

    // A consistent copy while the CA serves.
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("b1");
    let out = run(Command::new(bin("smith-ca"))
        .args(["backup", "--json", "--data-dir"])
        .arg(&ca.data_dir)
        .arg("--out")
        .arg(&backup));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["epoch"], json!(epoch));
    // A backup never goes over another.
    let again = run(Command::new(bin("smith-ca"))
        .args(["backup", "--data-dir"])
        .arg(&ca.data_dir)
        .arg("--out")
        .arg(&backup));
    assert!(!again.status.success());

    // Life goes on after the backup: versions rise, certificates are issued.
    ca.admin_ok(&["user", "add", "bob", "--groups", "dev"]);
    ca.admin_ok(&["group", "add", "ops"]);
    let (s, c) = cert(&ca, &alice, "env=dev", None);
    assert_eq!(s, 200);
    let last_serial = c["serial"].as_u64().unwrap();
    let (_, seen) = sync(&ca, &host, 0, Some(&epoch));
    let seen = seen.unwrap();
    assert!(seen.version > first.version);

    // A restore refuses to run under a serving CA.
    let busy = run(Command::new(bin("smith-ca"))
        .args(["restore", "--data-dir"])
        .arg(&ca.data_dir)
        .arg("--from")
        .arg(&backup));
    assert!(!busy.status.success());
    assert!(
        text(&busy.stderr).contains("another smith-ca"),
        "{}",
        text(&busy.stderr)
    );
    assert!(ca.stop());
    let out = run(Command::new(bin("smith-ca"))
        .args(["restore", "--json", "--data-dir"])
        .arg(&ca.data_dir)
        .arg("--from")
        .arg(&backup));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(r["epoch"], json!(epoch));
    assert_eq!(r["carried_over"], true);
    ca.restart();

    // The host had seen a higher version: from the old epoch it gets a full snapshot of
    // the restored state at once (bob, added after the backup, is not in it).
    let (s, full) = sync(&ca, &host, seen.version, Some(&epoch));
    assert_eq!(s, 200);
    let full = full.unwrap();
    assert_eq!(full.base_version, None);
    assert!(full.version < seen.version);
    assert_eq!(
        full.epoch.as_ref(),
        r["epoch"].as_str().map(str::to_string).as_ref()
    );
    assert_eq!(
        full.users
            .iter()
            .map(|u| u.name.as_str())
            .collect::<Vec<_>>(),
        vec!["alice"]
    );
    // Serials never go back; the restore is in the record of changes.
    let (s, c) = cert(&ca, &alice, "env=dev", None);
    assert_eq!(s, 200, "{c}");
    assert!(c["serial"].as_u64().unwrap() > last_serial);
    assert!(changes(&ca)
        .iter()
        .any(|c| c.origin == "local" && c.what.starts_with("restore of the backup")));
    let v: Value = serde_json::from_str(&ca.admin_ok(&["audit", "verify", "--json"])).unwrap();
    assert_eq!(v["ok"], true, "{v}");
}

/// POST /v1/certs/user with `bearer`: (status, body).
fn cert(ca: &TestCa, bearer: &str, scope: &str, nonce: Option<&str>) -> (u16, Value) {
    ca.request_cert(bearer, scope, nonce)
}

fn grant(ca: &TestCa, group: &str, tags: &str, level: &str) {
    ca.grant(group, tags, level)
}
