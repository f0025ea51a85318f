//! The admin API and `smith-ca admin`, through real HTTPS: users, groups, grants,
//! tokens, hostile input, authentication, and nothing half-written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use serde_json::{json, Value};
use smith_api::{endpoints, ErrorCode};
use support::{code_of, text, TestCa};

fn users(ca: &TestCa) -> Value {
    serde_json::from_str(&ca.admin_ok(&["user", "list", "--json"])).unwrap()
}

#[test]
fn the_issue_example_order_works_and_lists_are_json() {
    let ca = TestCa::start();
    // `user add --groups dev` before `group add dev`: the group is created, said so.
    let out = ca.admin(&["user", "add", "alice", "--groups", "dev"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("group 'dev' did not exist; created it"));
    let out = ca.admin_ok(&["group", "add", "dev"]);
    assert!(out.contains("already exists"), "{out}");
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

    let u = users(&ca);
    assert_eq!(u[0]["name"], "alice");
    assert_eq!(u[0]["groups"], json!(["dev"]));
    assert_eq!(u[0]["disabled"], false);
    assert_eq!(u[0]["shell"], "/bin/bash");
    // sudo gid is the first id of the range (smith-users the last), then ids are
    // allocated in order and shared between users and groups.
    let groups: Value = serde_json::from_str(&ca.admin_ok(&["group", "list", "--json"])).unwrap();
    assert_eq!(groups[0]["gid"], 200001);
    assert_eq!(u[0]["uid"], 200002);
    assert_eq!(groups[0]["members"], json!(["alice"]));
    let grants: Value = serde_json::from_str(&ca.admin_ok(&["grant", "list", "--json"])).unwrap();
    assert_eq!(grants[0]["selector"], "env=dev");
    assert_eq!(grants[0]["level"], "ssh");
    assert_eq!(grants[0]["max_ttl_secs"], 28800);

    // --strict-groups refuses a missing group and names the command to run.
    let err = ca.admin_err(&["user", "add", "bob", "--groups", "ops", "--strict-groups"]);
    assert!(err.contains("smith-ca admin group add ops"), "{err}");
    assert_eq!(users(&ca).as_array().unwrap().len(), 1);

    // Members, removal, fixed ids, collisions.
    ca.admin_ok(&[
        "user", "add", "bob", "--uid", "5000", "--gecos", "Bob B", "--shell", "/bin/zsh",
    ]);
    ca.admin_ok(&["group", "add-member", "dev", "bob"]);
    let out = ca.admin_ok(&["group", "remove-member", "dev", "alice"]);
    assert!(out.contains("bob") && !out.contains("alice"), "{out}");
    let err = ca.admin_err(&["group", "remove-member", "dev", "alice"]);
    assert!(err.contains("not a member"), "{err}");
    let err = ca.admin_err(&["user", "add", "carol", "--uid", "5000"]);
    assert!(err.contains("409") && err.contains("5000"), "{err}");
    let err = ca.admin_err(&["group", "add", "ops", "--gid", "200000"]);
    assert!(
        err.contains("smith-sudo"),
        "the sudo gid is reserved: {err}"
    );
    let err = ca.admin_err(&["user", "add", "alice"]);
    assert!(err.contains("already exists"), "{err}");
    let err = ca.admin_err(&["group", "add", "alice"]);
    assert!(err.contains("private group"), "{err}");

    // Disable, token for a disabled user refused.
    ca.admin_ok(&["user", "disable", "bob"]);
    assert_eq!(users(&ca)[1]["disabled"], true);
    let err = ca.admin_err(&["user", "token", "bob"]);
    assert!(err.contains("disabled"), "{err}");

    // Grant removal.
    let out = ca.admin_ok(&["grant", "remove", "1"]);
    assert!(out.contains("removed grant"), "{out}");
    assert_eq!(ca.admin_ok(&["grant", "list", "--json"]).trim(), "[]");
    let err = ca.admin_err(&["grant", "remove", "1"]);
    assert!(err.contains("404"), "{err}");

    // Host tokens.
    let t: Value = serde_json::from_str(&ca.admin_ok(&[
        "host",
        "token",
        "--tags",
        "env=prod,role=web",
        "--ttl",
        "1h",
        "--name",
        "web-1.example.com",
        "--json",
    ]))
    .unwrap();
    assert!(t["token"].as_str().unwrap().starts_with("smith_enroll_"));
    // A token must say which hosts it is for.
    let err = ca.admin_err(&["host", "token", "--tags", "env=dev", "--ttl", "1h"]);
    assert!(err.contains("--name"), "{err}");
    assert_eq!(ca.admin_ok(&["host", "list", "--json"]).trim(), "[]");
}

#[test]
fn hostile_input_is_refused_with_clear_errors_and_nothing_written() {
    let ca = TestCa::start();
    let huge = "a".repeat(1 << 20);
    // Through the CLI: refused locally, before any request.
    for name in [
        "root",
        "../x",
        "a:b",
        "a\nb",
        "Alice",
        "nobody",
        "smith-sudo",
        &"a".repeat(33),
    ] {
        let err = ca.admin_err(&["user", "add", name]);
        assert!(err.contains("invalid value"), "{name:?}: {err}");
        let err = ca.admin_err(&["group", "add", name]);
        assert!(err.contains("invalid value"), "{name:?}: {err}");
    }
    for uid in ["0", "1", "999", "60000", "65534", "4294967296"] {
        let err = ca.admin_err(&["user", "add", "eve", "--uid", uid]);
        assert!(
            err.contains("not allowed") || err.contains("not a number"),
            "{uid}: {err}"
        );
    }
    // Through raw HTTP: the server refuses too.
    let http = ca.http(None);
    let post = |path: &str, body: Value| {
        let r = http
            .post(format!("{}{path}", ca.url))
            .bearer_auth(&ca.admin_token)
            .json(&body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().unwrap();
        (status, body)
    };
    for name in ["root", "../x", "a:b", "a\nb", "a\u{0}b", "", "x y"] {
        let (s, b) = post(endpoints::ADMIN_USERS, json!({"name": name}));
        assert_eq!(s, 400, "{name:?}: {b}");
        assert_eq!(code_of(&b), ErrorCode::InvalidInput, "{b}");
        assert!(b["error"].as_str().unwrap().contains("name"), "{b}");
        let (s, _) = post(endpoints::ADMIN_GROUPS, json!({"name": name}));
        assert_eq!(s, 400);
    }
    for uid in [0u64, 500, 60001, 65535, 1 << 33] {
        let (s, b) = post(endpoints::ADMIN_USERS, json!({"name": "eve", "uid": uid}));
        assert_eq!(s, 400, "{uid}: {b}");
        assert!(b["error"].as_str().unwrap().contains("not allowed"), "{b}");
    }
    // Just over the 64 KiB limit: a clean 413 (the body fits in the socket buffers).
    let (s, b) = post(
        endpoints::ADMIN_USERS,
        json!({"name": "a".repeat(70 * 1024)}),
    );
    assert_eq!(s, 413, "{b}");
    assert_eq!(code_of(&b), ErrorCode::TooLarge);
    // 1 MB: 413, or the server closes the connection before the client finished writing.
    let r = http
        .post(format!("{}{}", ca.url, endpoints::ADMIN_USERS))
        .bearer_auth(&ca.admin_token)
        .json(&json!({"name": huge}))
        .send();
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
    }
    assert!(ca.admin_ok(&["user", "list", "--json"]).trim() == "[]");
    let (s, b) = post(
        endpoints::ADMIN_USERS,
        json!({"name": "eve", "gecos": "a:b"}),
    );
    assert_eq!((s, code_of(&b)), (400, ErrorCode::InvalidGecos));
    let (s, b) = post(
        endpoints::ADMIN_USERS,
        json!({"name": "eve", "shell": "../../bin/sh"}),
    );
    assert_eq!((s, code_of(&b)), (400, ErrorCode::InvalidShell));
    let (s, b) = post(
        endpoints::ADMIN_GRANTS,
        json!({"group": "dev", "selector": "env=a b", "level": "ssh", "max_ttl_secs": 600}),
    );
    assert_eq!(s, 400, "{b}");
    let (s, b) = post(
        endpoints::ADMIN_GRANTS,
        json!({"group": "dev", "selector": "env=dev", "level": "root", "max_ttl_secs": 600}),
    );
    assert_eq!(s, 400, "{b}");
    // Path parameters are validated as well.
    let r = http
        .post(format!(
            "{}{}",
            ca.url,
            endpoints::ADMIN_USER_DISABLE.replace("{name}", "..%2Fx")
        ))
        .bearer_auth(&ca.admin_token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // Nothing half-written: a user whose uid collides, with a new group in the same
    // request, leaves neither behind.
    ca.admin_ok(&["user", "add", "alice", "--uid", "7000"]);
    let err = ca.admin_err(&[
        "user", "add", "bob", "--uid", "7000", "--groups", "newgroup",
    ]);
    assert!(err.contains("409"), "{err}");
    assert_eq!(ca.admin_ok(&["group", "list", "--json"]).trim(), "[]");
    assert_eq!(users(&ca).as_array().unwrap().len(), 1);
    // Grant validation: TTL bounds, CIDRs, unknown group, time windows not yet.
    ca.admin_ok(&["group", "add", "dev"]);
    for (args, needle) in [
        (vec!["--max-ttl", "30s"], "max TTL"),
        (vec!["--max-ttl", "2d"], "max TTL"),
        (
            vec!["--max-ttl", "1h", "--source-cidr", "10.0.0.300/8"],
            "CIDR",
        ),
    ] {
        let mut a = vec![
            "grant", "add", "--group", "dev", "--tags", "env=dev", "--level", "ssh",
        ];
        a.extend(args.iter());
        let err = ca.admin_err(&a);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let err = ca.admin_err(&[
        "grant",
        "add",
        "--group",
        "nope",
        "--tags",
        "env=dev",
        "--level",
        "ssh",
        "--max-ttl",
        "1h",
    ]);
    assert!(err.contains("smith-ca admin group add nope"), "{err}");
    let (s, b) = post(
        endpoints::ADMIN_GRANTS,
        json!({"group": "dev", "selector": "env=dev", "level": "ssh", "max_ttl_secs": 600,
               "time_windows": ["mon-fri 09:00-18:00 Europe/Atlantis"]}),
    );
    assert_eq!((s, code_of(&b)), (400, ErrorCode::InvalidTimeWindow), "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("unknown time zone"),
        "{b}"
    );
    let grant = [
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
    ];
    let err = ca.admin_err(&[&grant[..], &["--time-window", "weekdays 09:00-17:00"]].concat());
    assert!(err.contains("unknown day"), "{err}");
    assert_eq!(ca.admin_ok(&["grant", "list", "--json"]).trim(), "[]");
    let out = ca.admin_ok(&[&grant[..], &["--time-window", "mon-fri 09:00-18:00 UTC"]].concat());
    assert!(out.contains("during mon-fri 09:00-18:00 UTC"), "{out}");
}

#[test]
fn authentication_and_authorization() {
    let ca = TestCa::start();
    ca.admin_ok(&["user", "add", "alice"]);
    let user_token = ca.user_token("alice");
    let http = ca.http(None);
    let get = |token: Option<&str>| {
        let mut r = http.get(format!("{}{}", ca.url, endpoints::ADMIN_USERS));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().unwrap();
        let s = r.status().as_u16();
        (s, r.json::<Value>().unwrap())
    };
    let (s, b) = get(None);
    assert_eq!((s, code_of(&b)), (401, ErrorCode::MissingToken));
    let (s, b) = get(Some("smith_admin_forged"));
    assert_eq!((s, code_of(&b)), (401, ErrorCode::InvalidToken));
    let (s, b) = get(Some(&user_token));
    assert_eq!((s, code_of(&b)), (403, ErrorCode::AdminOnly));
    let (s, _) = get(Some(&ca.admin_token));
    assert_eq!(s, 200);
    // The CLI says the same.
    let out = support::run(
        ca.admin_cmd(&["user", "list"])
            .env("SMITH_TOKEN", &user_token),
    );
    assert!(
        text(&out.stderr).contains("admin_only"),
        "{}",
        text(&out.stderr)
    );
    // The admin token cannot get certificates.
    let r = http
        .post(format!("{}{}", ca.url, endpoints::CERTS_USER))
        .bearer_auth(&ca.admin_token)
        .json(&json!({"public_key": "x", "ttl_secs": 600}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // A wrong pinned fingerprint fails the TLS handshake.
    let out = support::run(ca.admin_cmd(&["user", "list"]).env(
        "SMITH_CA_FINGERPRINT",
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("pinned CA root"),
        "{}",
        text(&out.stderr)
    );
    // Public endpoints and the JSON 404.
    let keys: Value = http
        .get(format!("{}{}", ca.url, endpoints::CA_USER_KEYS))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let on_disk = std::fs::read_to_string(ca.user_ca_pub()).unwrap();
    assert_eq!(keys["keys"][0].as_str().unwrap(), on_disk.trim());
    let r = http.get(format!("{}/v1/nope", ca.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(code_of(&r.json::<Value>().unwrap()), ErrorCode::NotFound);
}
