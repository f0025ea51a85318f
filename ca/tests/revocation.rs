//! Certificate revocation through the real `smith-ca`: `admin cert revoke` by serial, key
//! ID and user, `user disable` and SCIM deactivation/delete, `admin cert list`; the KRL
//! hosts get in their sync read back with `ssh-keygen -Q`; the `@ca` audit records; a
//! restart; and a real sshd with `RevokedKeys` refusing a still-valid revoked certificate
//! while a fresh one (and an empty RevokedKeys file) works.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use base64::Engine;
use serde_json::{json, Value};
use smith_api::{endpoints, ErrorCode};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{code_of, run, text, Sshd, TestCa};

fn keypair(dir: &Path, name: &str) -> PathBuf {
    let k = dir.join(name);
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&k));
    assert!(out.status.success(), "{}", text(&out.stderr));
    k
}

struct Cert {
    key: PathBuf,
    file: PathBuf,
    serial: u64,
    key_id: String,
}

/// A certificate for `token`'s user on a fresh key, saved as `<key>-cert.pub`.
fn issue(ca: &TestCa, dir: &Path, token: &str, name: &str) -> Cert {
    let key = keypair(dir, name);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let r = ca
        .http(None)
        .post(format!("{}{}", ca.url, endpoints::CERTS_USER))
        .bearer_auth(token)
        .json(&json!({"public_key": public.trim(), "scope": "env=dev", "ttl_secs": 3600}))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().unwrap();
    assert_eq!(status, 200, "{body}");
    let file = PathBuf::from(format!("{}-cert.pub", key.display()));
    std::fs::write(
        &file,
        format!("{}\n", body["certificate"].as_str().unwrap()),
    )
    .unwrap();
    Cert {
        key,
        file,
        serial: body["serial"].as_u64().unwrap(),
        key_id: body["key_id"].as_str().unwrap().to_string(),
    }
}

fn enroll(ca: &TestCa, name: &str, tags: &str) -> smith_api::Identity {
    ca.enroll_host(name, tags)
}

/// A full sync: (version, KRL bytes; empty when the CA sends none).
fn sync(ca: &TestCa, id: &smith_api::Identity) -> (u64, Vec<u8>) {
    let s = ca.sync_full(id);
    let krl = match s.krl_base64 {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .unwrap(),
        None => vec![],
    };
    (s.version, krl)
}

/// Writes the synced KRL like hostd does (an empty file when nothing is revoked).
fn write_krl(path: &Path, krl: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, krl).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `ssh-keygen -Q -f KRL CERT`: exit 1 and "REVOKED", or 0.
fn revoked(krl: &Path, cert: &Cert) -> bool {
    let o = run(Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(krl)
        .arg(&cert.file));
    let out = text(&o.stdout) + &text(&o.stderr);
    match o.status.code() {
        Some(0) => false,
        Some(1) if out.contains("REVOKED") => true,
        other => panic!("ssh-keygen -Q: {other:?}: {out}"),
    }
}

fn setup(ca: &TestCa) {
    ca.admin_ok(&["group", "add", "dev"]);
    for u in ["alice", "bob", "carol"] {
        ca.admin_ok(&["user", "add", u, "--groups", "dev"]);
    }
    // dave is SCIM's (SCIM deactivates only the users it provisioned).
    let scim = ca.admin_ok(&["scim", "token"]).trim().to_string();
    let r = ca
        .http(None)
        .post(format!("{}/scim/v2/Users", ca.url))
        .bearer_auth(&scim)
        .header("content-type", "application/scim+json")
        .body(json!({"userName": "dave"}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    ca.admin_ok(&["group", "add-member", "dev", "dave"]);
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
}

fn revoke(ca: &TestCa, args: &[&str]) -> Value {
    let mut a = vec!["cert", "revoke", "--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ca.admin_ok(&a)).unwrap()
}

fn serials(v: &Value) -> Vec<u64> {
    v["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_u64().unwrap())
        .collect()
}

fn list(ca: &TestCa, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["cert", "list", "--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ca.admin_ok(&a)).unwrap()
}

#[test]
fn revoke_by_serial_key_id_user_and_disable_reach_the_krl() {
    let mut ca = TestCa::start();
    setup(&ca);
    let host = enroll(&ca, "web-1", "env=dev");
    let dir = tempfile::tempdir().unwrap();
    let krl = dir.path().join("revoked.krl");
    let (v0, k) = sync(&ca, &host);
    assert!(k.is_empty(), "nothing revoked yet: no KRL");

    let alice = ca.user_token("alice");
    let bob = ca.user_token("bob");
    let carol = ca.user_token("carol");
    let dave = ca.user_token("dave");
    let a1 = issue(&ca, dir.path(), &alice, "a1");
    let a2 = issue(&ca, dir.path(), &alice, "a2");
    let a3 = issue(&ca, dir.path(), &alice, "a3");
    let b1 = issue(&ca, dir.path(), &bob, "b1");
    let b2 = issue(&ca, dir.path(), &bob, "b2");
    let c1 = issue(&ca, dir.path(), &carol, "c1");
    let d1 = issue(&ca, dir.path(), &dave, "d1");
    assert_eq!(list(&ca, &["--valid"]).len(), 7);
    assert_eq!(list(&ca, &["--user", "bob"]).len(), 2);

    // By serial: that certificate only; the version moves, the KRL says so.
    let r = revoke(
        &ca,
        &[
            "--serial",
            &a1.serial.to_string(),
            "--reason",
            "lost laptop",
        ],
    );
    assert_eq!(serials(&r), vec![a1.serial]);
    assert_eq!(r["revoked"][0]["revoked"]["reason"], "lost laptop");
    assert_eq!(r["revoked"][0]["revoked"]["via"], "serial");
    let (v1, k) = sync(&ca, &host);
    assert!(v1 > v0 && r["version"].as_u64() == Some(v1), "{r}");
    write_krl(&krl, &k);
    assert!(revoked(&krl, &a1));
    assert!(!revoked(&krl, &a2) && !revoked(&krl, &b1) && !revoked(&krl, &d1));

    // Again: nothing changes, and it says so.
    let r = revoke(&ca, &["--serial", &a1.serial.to_string()]);
    assert!(serials(&r).is_empty());
    assert_eq!(r["already_revoked"], json!([a1.serial]));
    assert_eq!(r["version"].as_u64(), Some(v1));
    // Unknown serial or key ID: refused with a pointer to `cert list`.
    let e = ca.admin_err(&["cert", "revoke", "--serial", "999999"]);
    assert!(
        e.contains("issued no certificate") && e.contains("cert list"),
        "{e}"
    );
    let e = ca.admin_err(&["cert", "revoke", "--key-id", "smith:nobody:0"]);
    assert!(e.contains("issued no certificate"), "{e}");
    // Exactly one selector (the CLI and the API both insist).
    let e = ca.admin_err(&["cert", "revoke"]);
    assert!(e.contains("--serial") && e.contains("--user"), "{e}");
    let r = ca
        .http(None)
        .post(format!("{}{}", ca.url, endpoints::ADMIN_CERTS_REVOKE))
        .bearer_auth(&ca.admin_token)
        .json(&json!({"serial": a2.serial, "user": "alice"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        code_of(&r.json::<Value>().unwrap()),
        ErrorCode::InvalidInput
    );
    // Not for users.
    let r = ca
        .http(None)
        .post(format!("{}{}", ca.url, endpoints::ADMIN_CERTS_REVOKE))
        .bearer_auth(&alice)
        .json(&json!({"serial": a2.serial}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // By key ID.
    let r = revoke(&ca, &["--key-id", &a2.key_id]);
    assert_eq!(serials(&r), vec![a2.serial]);
    // By user: every still-valid certificate of bob's; a fresh one afterwards is fine.
    let r = revoke(&ca, &["--user", "bob", "--reason", "offboarding"]);
    assert_eq!(serials(&r), vec![b1.serial, b2.serial]);
    let b3 = issue(&ca, dir.path(), &bob, "b3");
    // Disabling carol revokes hers; SCIM deactivation (dave) too.
    ca.admin_ok(&["user", "disable", "carol"]);
    let scim = ca.admin_ok(&["scim", "token"]).trim().to_string();
    let r = ca
        .http(None)
        .patch(format!("{}/scim/v2/Users/dave", ca.url))
        .bearer_auth(&scim)
        .header("content-type", "application/scim+json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "value": {"active": false}}]})
            .to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let (_, k) = sync(&ca, &host);
    write_krl(&krl, &k);
    for c in [&a1, &a2, &b1, &b2, &c1, &d1] {
        assert!(revoked(&krl, c), "serial {} should be revoked", c.serial);
    }
    assert!(!revoked(&krl, &a3) && !revoked(&krl, &b3));

    // The list says who revoked what, how; --valid leaves them out.
    let valid: Vec<u64> = list(&ca, &["--valid"])
        .iter()
        .map(|c| c["serial"].as_u64().unwrap())
        .collect();
    assert_eq!(valid, vec![b3.serial, a3.serial]);
    let carol_list = list(&ca, &["--user", "carol"]);
    assert_eq!(carol_list[0]["revoked"]["via"], "user_disabled");
    assert_eq!(
        list(&ca, &["--user", "dave"])[0]["revoked"]["via"],
        "scim_deactivated"
    );
    let human = ca.admin_ok(&["cert", "list", "--user", "bob"]);
    assert!(
        human.contains("REVOKED") && human.contains("offboarding"),
        "{human}"
    );

    // Each revocation is in the CA's audit chain, which still verifies.
    let audit: Vec<Value> =
        serde_json::from_str(&ca.admin_ok(&["audit", "list", "--host", "@ca", "--json"])).unwrap();
    let mut revs: Vec<u64> = audit
        .iter()
        .filter(|r| r["event"]["type"] == "cert_revocation")
        .map(|r| r["event"]["serial"].as_u64().unwrap())
        .collect();
    revs.sort();
    let mut want = vec![
        a1.serial, a2.serial, b1.serial, b2.serial, c1.serial, d1.serial,
    ];
    want.sort();
    assert_eq!(revs, want);
    let v: Value = serde_json::from_str(&ca.admin_ok(&["audit", "verify", "--json"])).unwrap();
    assert_eq!(v["ok"], true, "{v}");

    // After a restart the KRL is the same set (loaded from the append-only table).
    ca.restart();
    let (_, k) = sync(&ca, &host);
    write_krl(&krl, &k);
    for c in [&a1, &a2, &b1, &b2, &c1, &d1] {
        assert!(revoked(&krl, c));
    }
    assert!(!revoked(&krl, &a3) && !revoked(&krl, &b3));
    // Deleting a user through SCIM revokes too: SCIM enables dave again (it disabled
    // him), he gets a certificate with a new token, SCIM deletes him.
    let r = ca
        .http(None)
        .patch(format!("{}/scim/v2/Users/dave", ca.url))
        .bearer_auth(&scim)
        .header("content-type", "application/scim+json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "value": {"active": true}}]})
            .to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let d2 = issue(&ca, dir.path(), &ca.user_token("dave"), "d2");
    let r = ca
        .http(None)
        .delete(format!("{}/scim/v2/Users/dave", ca.url))
        .bearer_auth(&scim)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (_, k) = sync(&ca, &host);
    write_krl(&krl, &k);
    assert!(revoked(&krl, &d2) && !revoked(&krl, &a3) && !revoked(&krl, &b3));
    assert_eq!(
        list(&ca, &["--user", "dave"])[0]["revoked"]["via"],
        "scim_deleted"
    );
}

#[test]
fn real_sshd_refuses_a_revoked_certificate_still_valid() {
    if !support::e2e_available("real_sshd_refuses_a_revoked_certificate_still_valid") {
        return;
    }
    let ca = TestCa::start();
    setup(&ca);
    let host = enroll(&ca, "web-1", "env=dev");
    let dir = tempfile::tempdir().unwrap();
    // What hostd writes when nothing is revoked: an empty file.
    let krl = dir.path().join("smith_revoked.krl");
    let (_, k) = sync(&ca, &host);
    assert!(k.is_empty());
    write_krl(&krl, &k);
    let sshd = Sshd::start_with(
        "alice",
        &ca.user_ca_pub(),
        &format!("RevokedKeys {}\n", krl.display()),
    );
    let alice = ca.user_token("alice");
    let old = issue(&ca, dir.path(), &alice, "old");
    let other = issue(&ca, dir.path(), &alice, "other");
    let ok = |c: &Cert| {
        let out = sshd.login_with(&c.key, &c.file);
        text(&out.stdout).contains("smith-login-ok")
    };
    assert!(
        ok(&old),
        "an empty RevokedKeys file must be accepted: {}",
        sshd.log()
    );

    // Revoke one; the host writes the new KRL; sshd reads it at the next login (no
    // reload) and refuses that certificate, still valid and with alice's grant intact.
    revoke(&ca, &["--serial", &old.serial.to_string()]);
    let (_, k) = sync(&ca, &host);
    assert!(!k.is_empty());
    write_krl(&krl, &k);
    assert!(!ok(&old), "a revoked certificate logged in: {}", sshd.log());
    assert!(
        sshd.log().contains("revoked"),
        "sshd should say why: {}",
        sshd.log()
    );
    assert!(ok(&other), "an unrevoked certificate must still work");
    let fresh = issue(&ca, dir.path(), &alice, "fresh");
    assert!(ok(&fresh), "a fresh certificate must work: {}", sshd.log());

    // Revoking alice's every certificate leaves new ones working (no disable).
    revoke(&ca, &["--user", "alice"]);
    let (_, k) = sync(&ca, &host);
    write_krl(&krl, &k);
    assert!(!ok(&other) && !ok(&fresh));
    let newest = issue(&ca, dir.path(), &alice, "newest");
    assert!(ok(&newest));
}
