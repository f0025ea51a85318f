//! CA keys in a PKCS#11 token (a real SoftHSM2 token of each test's own, Debian's
//! `softhsm2` and `opensc`): `smith-ca init --user-ca pkcs11:... --host-ca pkcs11:...`,
//! certificates signed inside the token read back by `ssh-keygen -L` and accepted by a
//! real sshd (user certificates) and a real ssh client with StrictHostKeyChecking=yes
//! (host certificates); no CA private key on disk; the token taken away from a CA
//! running unprivileged, then given back: 503 meanwhile, recovery without a restart,
//! nothing issued unrecorded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use serde_json::{json, Value};
use smith_api::{endpoints, ErrorCode};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{code_of, keygen_l, run, text, SoftHsm, Sshd, TestCa};

fn keypair(dir: &Path, name: &str) -> PathBuf {
    let k = dir.join(name);
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&k));
    assert!(out.status.success(), "{}", text(&out.stderr));
    k
}

fn request(ca: &TestCa, token: &str, key: &Path) -> (u16, Value) {
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let r = ca
        .http(None)
        .post(format!("{}{}", ca.url, endpoints::CERTS_USER))
        .bearer_auth(token)
        .json(&json!({"public_key": public.trim(), "scope": "env=dev", "ttl_secs": 600}))
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn health(ca: &TestCa) -> (u16, Value) {
    let r = ca
        .http(None)
        .get(format!("{}{}", ca.url, endpoints::HEALTH))
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn setup(ca: &TestCa) -> String {
    ca.admin_ok(&["group", "add", "dev"]);
    ca.admin_ok(&["user", "add", "alice", "--groups", "dev"]);
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
    ca.user_token("alice")
}

fn token_ca(hsm: &SoftHsm, wrapper: &[&str]) -> TestCa {
    let (u, h) = (hsm.uri("smith-user-ca"), hsm.uri("smith-host-ca"));
    TestCa::start_env(
        &[
            "--user-ca",
            &u,
            "--host-ca",
            &h,
            "--user-ca-algorithm",
            "ecdsa-p256",
        ],
        &[],
        wrapper,
        &hsm.env(),
    )
}

/// OpenSSH private keys and PEM private keys found in the files under `root` (the
/// token directory `skip` aside; at most `depth` levels down; files up to 64 MiB) whose
/// public key is one of `cas`.
fn ca_private_keys_under(
    root: &Path,
    skip: Option<&Path>,
    cas: &[ssh_key::PublicKey],
    depth: usize,
) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((d, level)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if skip.is_some_and(|s| p.starts_with(s)) {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if level < depth {
                    stack.push((p, level + 1));
                }
                continue;
            }
            if !ft.is_file() || e.metadata().map(|m| m.len() > 64 << 20).unwrap_or(true) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            let t = String::from_utf8_lossy(&bytes);
            // OpenSSH private keys: parse each and compare its public half.
            for block in t.split("-----BEGIN OPENSSH PRIVATE KEY-----").skip(1) {
                let Some((body, _)) = block.split_once("-----END OPENSSH PRIVATE KEY-----") else {
                    continue;
                };
                let pem = format!(
                    "-----BEGIN OPENSSH PRIVATE KEY-----{body}-----END OPENSSH PRIVATE KEY-----\n"
                );
                if let Ok(k) = ssh_key::PrivateKey::from_openssh(&pem) {
                    if cas
                        .iter()
                        .any(|c| c.key_data() == k.public_key().key_data())
                    {
                        found.push(format!("{}: OpenSSH private key of a CA", p.display()));
                    }
                }
            }
            // Any other private key (PKCS#8, SEC1): the CA keys' public points must not
            // appear beside one.
            if t.contains("PRIVATE KEY-----") {
                for c in cas {
                    if let ssh_key::public::KeyData::Ecdsa(e) = c.key_data() {
                        let point = e.as_sec1_bytes();
                        let der = pem_bodies(&t);
                        if der
                            .iter()
                            .any(|d| d.windows(point.len()).any(|w| w == point))
                        {
                            found.push(format!("{}: PEM private key of a CA", p.display()));
                        }
                    }
                }
            }
        }
    }
    found
}

fn pem_bodies(t: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let mut out = Vec::new();
    for block in t.split("-----BEGIN ").skip(1) {
        let Some((_, rest)) = block.split_once("-----") else {
            continue;
        };
        let Some((body, _)) = rest.split_once("-----END") else {
            continue;
        };
        let b64: String = body.split_whitespace().collect();
        if let Ok(d) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(d);
        }
    }
    out
}

#[test]
fn token_keys_sign_what_ssh_accepts_and_never_reach_the_disk() {
    if !support::e2e_available("token_keys_sign_what_ssh_accepts") || !SoftHsm::available() {
        return;
    }
    let hsm = SoftHsm::new("smith");
    let ca = token_ca(&hsm, &[]);
    let dd = smith_ca::datadir::DataDir::new(&ca.data_dir);
    assert!(
        !dd.user_ca().exists() && !dd.host_ca().exists(),
        "no CA key files"
    );
    let user_pub = std::fs::read_to_string(dd.user_ca_pub()).unwrap();
    let host_pub = std::fs::read_to_string(dd.host_ca_pub()).unwrap();
    let user_ca = ssh_key::PublicKey::from_openssh(user_pub.trim()).unwrap();
    let host_ca = ssh_key::PublicKey::from_openssh(host_pub.trim()).unwrap();
    assert!(user_pub.starts_with("ecdsa-sha2-nistp256 "), "{user_pub}");

    // opensc sees both keys in the token: sensitive, never extractable, signing only.
    let objects = hsm.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    for label in ["smith-user-ca", "smith-host-ca"] {
        let entry = objects
            .split("Private Key Object")
            .find(|o| o.contains(label))
            .unwrap_or_else(|| panic!("{label} not in the token: {objects}"));
        assert!(
            entry.contains("never extractable") && entry.contains("sensitive"),
            "{entry}"
        );
        assert!(entry.contains("Usage:      sign\n"), "{entry}");
    }

    // A second CA on the same token and URIs uses the keys that are there.
    let again = tempfile::tempdir().unwrap();
    let (u, h) = (hsm.uri("smith-user-ca"), hsm.uri("smith-host-ca"));
    let out = run(Command::new(support::bin("smith-ca"))
        .args(["init", "--json", "--data-dir"])
        .arg(again.path().join("ca"))
        .args(["--user-ca", &u, "--host-ca", &h])
        .envs(hsm.env()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in ["user_ca.pub", "host_ca.pub"] {
        let theirs = std::fs::read_to_string(again.path().join("ca").join(f)).unwrap();
        let ours = std::fs::read_to_string(ca.data_dir.join(f)).unwrap();
        assert_eq!(
            theirs.split_whitespace().nth(1),
            ours.split_whitespace().nth(1),
            "{f}"
        );
    }

    // The self-test signs and verifies with each key, as serve loads them.
    let out = run(Command::new(support::bin("smith-ca"))
        .args(["hsm", "selftest", "--json", "--data-dir"])
        .arg(&ca.data_dir)
        .envs(hsm.env()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let st: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st.len(), 2);
    assert_eq!(st[0]["public_key"], user_pub.trim());
    assert_eq!(st[1]["public_key"], host_pub.trim());
    assert!(st
        .iter()
        .all(|t| t["verified"] == true && t["source"].as_str().unwrap().starts_with("pkcs11:")));

    // A user certificate from the token: ssh-keygen -L names the token's key, a real
    // sshd trusting it lets alice in.
    let token = setup(&ca);
    let dir = tempfile::tempdir().unwrap();
    let key = keypair(dir.path(), "alice");
    let (status, body) = request(&ca, &token, &key);
    assert_eq!(status, 200, "{body}");
    let cert = PathBuf::from(format!("{}-cert.pub", key.display()));
    std::fs::write(
        &cert,
        format!("{}\n", body["certificate"].as_str().unwrap()),
    )
    .unwrap();
    let l = keygen_l(&cert);
    assert_eq!(
        l.signing_ca,
        format!(
            "ECDSA {} (using ecdsa-sha2-nistp256)",
            user_ca.fingerprint(ssh_key::HashAlg::Sha256)
        )
    );
    let sshd = Sshd::start("alice", &dd.user_ca_pub());
    let out = sshd.login_with(&key, &cert);
    assert!(
        text(&out.stdout).contains("smith-login-ok"),
        "login failed: {}\n{}",
        text(&out.stderr),
        sshd.log()
    );

    // A host certificate from the token: a real ssh client that trusts only the host CA
    // (StrictHostKeyChecking=yes) accepts the host.
    let hk = dir.path().join("host_key");
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&hk));
    assert!(out.status.success());
    let host_line = std::fs::read_to_string(hk.with_extension("pub")).unwrap();
    let (_, resp) = ca.enroll_host_with("web-1", "env=dev", &[host_line.trim().to_string()]);
    let host_cert = dir.path().join("host_key-cert.pub");
    std::fs::write(&host_cert, format!("{}\n", resp.ssh_host_certs[0])).unwrap();
    assert!(keygen_l(&host_cert)
        .signing_ca
        .contains(&host_ca.fingerprint(ssh_key::HashAlg::Sha256).to_string()));
    let sshd_h = Sshd::start_with(
        "alice",
        &dd.user_ca_pub(),
        &format!(
            "HostKey {}\nHostCertificate {}\n",
            hk.display(),
            host_cert.display()
        ),
    );
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, format!("@cert-authority web-1 {}", host_pub)).unwrap();
    let ssh_strict = |known: &Path| {
        run(Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .args([
                "-o",
                "HostKeyAlias=web-1",
                "-o",
                "HostKeyAlgorithms=ssh-ed25519-cert-v01@openssh.com",
            ])
            .args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-i"])
            .arg(&key)
            .arg("-o")
            .arg(format!("CertificateFile={}", cert.display()))
            .args([
                "-p",
                &sshd_h.port.to_string(),
                "alice@127.0.0.1",
                "echo smith-login-ok",
            ]))
    };
    let out = ssh_strict(&known);
    assert!(
        text(&out.stdout).contains("smith-login-ok"),
        "strict host check failed: {}\n{}",
        text(&out.stderr),
        sshd_h.log()
    );
    // The check can fail: trusting another host CA, the same host is refused.
    let other = dir.path().join("other_ca");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other));
    let known_other = dir.path().join("known_hosts_other");
    std::fs::write(
        &known_other,
        format!(
            "@cert-authority web-1 {}",
            std::fs::read_to_string(other.with_extension("pub")).unwrap()
        ),
    )
    .unwrap();
    assert!(!ssh_strict(&known_other).status.success());

    // No CA private key anywhere on disk outside the token: the CA's directory (data
    // directory, logs), the token's own directory but for the token itself, the test's
    // files, and the temp directory.
    let cas = [user_ca.clone(), host_ca.clone()];
    let mut found = ca_private_keys_under(ca.dir.path(), None, &cas, 16);
    found.extend(ca_private_keys_under(
        hsm.dir.path(),
        Some(&hsm.tokens),
        &cas,
        16,
    ));
    found.extend(ca_private_keys_under(dir.path(), None, &cas, 16));
    found.extend(ca_private_keys_under(
        &std::env::temp_dir(),
        Some(&hsm.tokens),
        &cas,
        3,
    ));
    assert!(found.is_empty(), "CA private keys on disk: {found:?}");

    // The scan finds keys where they are: a CA with key files.
    let file_ca = TestCa::in_process();
    let fdd = smith_ca::datadir::DataDir::new(&file_ca.data_dir);
    let fpub = ssh_key::PublicKey::from_openssh(file_ca.user_ca_public().trim()).unwrap();
    let hits = ca_private_keys_under(file_ca.dir.path(), None, &[fpub], 16);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(
        hits[0].contains(&fdd.user_ca().display().to_string()),
        "{hits:?}"
    );
}

#[test]
fn a_token_taken_away_answers_503_and_comes_back_without_a_restart() {
    if !support::e2e_available("a_token_taken_away") || !SoftHsm::available() {
        return;
    }
    let hsm = SoftHsm::new("smith");
    // The CA runs as nobody (root would read the token whatever its mode): its
    // directory and the token are handed to nobody just before `serve` starts.
    // The binary is copied beside the data directory: the build's own directory may
    // not be reachable by nobody (a checkout under /root).
    let script = format!(
        r#"set -e; d="$(dirname "$4")"; cp "$1" "$d/smith-ca"; shift
           chown -R nobody: "$d" {}
           exec setpriv --reuid=nobody --regid=nogroup --clear-groups "$d/smith-ca" "$@""#,
        hsm.dir.path().display()
    );
    let wrapper = ["sh", "-c", &script, "sh"];
    let ca = token_ca(&hsm, &wrapper);
    let token = setup(&ca);
    let dir = tempfile::tempdir().unwrap();
    let key = keypair(dir.path(), "alice");
    let mut issued = BTreeSet::new();
    let issue = |issued: &mut BTreeSet<u64>, want: u16| -> Value {
        let (status, body) = request(&ca, &token, &key);
        assert_eq!(status, want, "{body}");
        if status == 200 {
            issued.insert(body["serial"].as_u64().unwrap());
        }
        body
    };
    issue(&mut issued, 200);
    assert_eq!(health(&ca).0, 200);

    for (how, take, give) in [
        ("made unreadable", "chmod 000", "chmod 755"),
        ("moved away", "mv", "mv"),
    ] {
        // Take the token away from outside the CA's code.
        let away = hsm.dir.path().join("tokens.away");
        match take {
            "mv" => std::fs::rename(&hsm.tokens, &away).unwrap(),
            _ => std::fs::set_permissions(&hsm.tokens, std::fs::Permissions::from_mode(0o000))
                .unwrap(),
        }
        // Readiness probes sign at most once a second: give it that.
        std::thread::sleep(Duration::from_millis(1100));
        for _ in 0..3 {
            let body = issue(&mut issued, 503);
            assert_eq!(
                code_of(&body),
                ErrorCode::SignerUnavailable,
                "{how}: {body}"
            );
        }
        let (s, h) = health(&ca);
        assert_eq!(s, 503, "{how}: {h}");
        assert_eq!(h["status"], "signer_unavailable", "{h}");
        // Give it back: issuance works again within seconds, same process.
        match give {
            "mv" => std::fs::rename(&away, &hsm.tokens).unwrap(),
            _ => std::fs::set_permissions(&hsm.tokens, std::fs::Permissions::from_mode(0o755))
                .unwrap(),
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = request(&ca, &token, &key);
            if status == 200 {
                issued.insert(body["serial"].as_u64().unwrap());
                break;
            }
            assert_eq!(code_of(&body), ErrorCode::SignerUnavailable, "{body}");
            assert!(
                Instant::now() < deadline,
                "{how}: no recovery: {}",
                ca.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(health(&ca).0, 200, "{how}");
        issue(&mut issued, 200);
    }
    // Every certificate handed out is recorded, and only those.
    let recorded: BTreeSet<u64> =
        serde_json::from_str::<Vec<Value>>(&ca.admin_ok(&["cert", "list", "--json"]))
            .unwrap()
            .iter()
            .map(|c| c["serial"].as_u64().unwrap())
            .collect();
    assert_eq!(recorded, issued);
    let log = ca.log();
    assert!(
        log.contains("the CA key's token is unavailable")
            && log.contains("the CA key's token is back"),
        "{log}"
    );
}
