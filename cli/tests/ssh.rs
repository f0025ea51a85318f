//! `smith config ssh` and `smith cert --ensure` with the real `smith` against a real
//! `smith-ca`, a private `ssh-agent` and, as root, a real `sshd` presenting a host
//! certificate the CA signed at enrollment, reached with real `ssh` and
//! `StrictHostKeyChecking=yes`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{bin, run, text, Agent, TestCa};

/// `smith ARGS` as an engineer whose HOME (and so ~/.ssh and ~/.config/smith) is `home`.
fn smith_cmd(ca_url: &str, fp: &str, token: &str, home: &Path, agent: Option<&Path>) -> Command {
    let mut c = Command::new(bin("smith"));
    c.env("HOME", home)
        .env("SMITH_CA_URL", ca_url)
        .env("SMITH_CA_FINGERPRINT", fp)
        .env("SMITH_TOKEN", token)
        .env_remove("SMITH_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("SMITH_PROFILE")
        .env_remove("SSH_AUTH_SOCK");
    if let Some(a) = agent {
        c.env("SSH_AUTH_SOCK", a);
    }
    c
}

fn smith(ca: &TestCa, token: &str, home: &Path, agent: Option<&Path>, args: &[&str]) -> Output {
    run(smith_cmd(&ca.url, &ca.fingerprint, token, home, agent).args(args))
}

fn setup(ca: &TestCa) -> String {
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

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn host_ca_key(ca: &TestCa) -> String {
    let t = std::fs::read_to_string(ca.data_dir.join("host_ca.pub")).unwrap();
    let f: Vec<&str> = t.split_whitespace().collect();
    format!("{} {}", f[0], f[1])
}

#[test]
fn config_ssh_writes_idempotently_dry_runs_and_removes() {
    let ca = TestCa::start();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // A CA that certifies no host name yet: no default pattern (never `*`).
    let out = smith(&ca, "unused", h, None, &["config", "ssh", "--dry-run"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("certifies no host names yet"),
        "{}",
        text(&out.stderr)
    );
    // The default patterns are the names the CA certifies hosts for.
    ca.admin_ok(&[
        "host",
        "token",
        "--tags",
        "env=dev",
        "--name",
        "*.dev.example",
        "--name",
        "db-1.example",
    ]);
    // Nothing in ~/.ssh yet: created 0700, files 0600.
    let out = smith(&ca, "unused", h, None, &["config", "ssh", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("would change"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("+ @cert-authority *.dev.example,db-1.example "),
        "{}",
        text(&out.stdout)
    );
    assert!(!h.join(".ssh").exists(), "--dry-run wrote something");

    let out = smith(&ca, "unused", h, None, &["config", "ssh"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ssh = h.join(".ssh");
    assert_eq!(mode(&ssh), 0o700);
    assert_eq!(mode(&ssh.join("known_hosts")), 0o600);
    assert_eq!(mode(&ssh.join("config")), 0o600);
    let kh = std::fs::read_to_string(ssh.join("known_hosts")).unwrap();
    assert_eq!(
        kh,
        format!(
            "@cert-authority *.dev.example,db-1.example {} smith-ca {}\n",
            host_ca_key(&ca),
            ca.url
        )
    );
    let cfg = std::fs::read_to_string(ssh.join("config")).unwrap();
    let smith_path = std::fs::canonicalize(bin("smith")).unwrap();
    assert!(cfg.starts_with("# BEGIN smith\n") && cfg.ends_with("Host *\n# END smith\n"));
    assert!(
        cfg.contains(&format!(
            "Match host \"*.dev.example,db-1.example,!*'*,!*\\*\" user \"*,!*'*,!*\\*\" exec \"{} cert --ensure --quiet --host='%h' --login='%r' --port=%p --host-key-alias='%k'\"\n",
            smith_path.display()
        )),
        "{cfg}"
    );
    // The revoked host certificates: nothing yet, an empty list ssh reads.
    let krl = ssh.join("smith_revoked_host_keys");
    assert!(
        cfg.contains(&format!("    RevokedHostKeys {}\n", krl.display())),
        "{cfg}"
    );
    assert_eq!(std::fs::read(&krl).unwrap(), b"");
    assert_eq!(mode(&krl), 0o644);
    // ssh itself accepts the file.
    let out = run(Command::new("ssh")
        .args(["-G", "-F"])
        .arg(ssh.join("config"))
        .args(["-o", "Hostname=127.0.0.1", "-o", "Port=1", "nohost.invalid"]));
    assert!(out.status.success(), "ssh -G: {}", text(&out.stderr));

    // Existing files of the user: other lines and modes are kept.
    let user_cfg = "Host *\n    ServerAliveInterval 30\n\nHost db\n    User admin\n";
    let user_kh = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n";
    std::fs::write(ssh.join("config"), user_cfg).unwrap();
    std::fs::set_permissions(ssh.join("config"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(ssh.join("known_hosts"), user_kh).unwrap();
    std::fs::set_permissions(
        ssh.join("known_hosts"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = smith(
        &ca,
        "unused",
        h,
        None,
        &["config", "ssh", "--hosts", "*.dev.example,10.9.*"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cfg1 = std::fs::read_to_string(ssh.join("config")).unwrap();
    let kh1 = std::fs::read_to_string(ssh.join("known_hosts")).unwrap();
    assert!(cfg1.starts_with(user_cfg), "{cfg1}");
    assert!(
        cfg1.contains("Match host \"*.dev.example,10.9.*,!*'*,!*\\*\" user"),
        "{cfg1}"
    );
    assert!(kh1.starts_with(user_kh));
    assert!(
        kh1.contains("@cert-authority *.dev.example,10.9.* "),
        "{kh1}"
    );
    assert_eq!(mode(&ssh.join("config")), 0o640);
    assert_eq!(mode(&ssh.join("known_hosts")), 0o644);

    // Again: nothing changes (bytes, and the JSON says so).
    let out = smith(
        &ca,
        "unused",
        h,
        None,
        &[
            "config",
            "ssh",
            "--hosts",
            "*.dev.example",
            "--hosts",
            "10.9.*",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["known_hosts"]["changed"], false, "{v}");
    assert_eq!(v["ssh_config"]["changed"], false, "{v}");
    assert_eq!(std::fs::read_to_string(ssh.join("config")).unwrap(), cfg1);
    assert_eq!(
        std::fs::read_to_string(ssh.join("known_hosts")).unwrap(),
        kh1
    );

    // The default patterns come from ssh_hosts in the config file.
    let conf = h.join("smith.toml");
    std::fs::write(&conf, "ssh_hosts = [\"*.lab\"]\n").unwrap();
    let out = run(smith_cmd(&ca.url, &ca.fingerprint, "unused", h, None)
        .env("SMITH_CONFIG", &conf)
        .args(["config", "ssh", "--dry-run", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["patterns"], serde_json::json!(["*.lab"]), "{v}");
    assert_eq!(std::fs::read_to_string(ssh.join("config")).unwrap(), cfg1);

    // --remove: the user's files exactly as they were (no network needed).
    let out = run(smith_cmd(&ca.url, &ca.fingerprint, "unused", h, None)
        .env("SMITH_CA_FINGERPRINT", "SHA256:bogus")
        .args(["config", "ssh", "--remove"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(ssh.join("config")).unwrap(),
        user_cfg
    );
    assert_eq!(
        std::fs::read_to_string(ssh.join("known_hosts")).unwrap(),
        user_kh
    );
    assert_eq!(mode(&ssh.join("config")), 0o640);
    assert!(!krl.exists(), "--remove leaves the revocation list behind");

    // A CA whose TLS root does not match the pin: refused, nothing written.
    let out = run(smith_cmd(
        &ca.url,
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "unused",
        h,
        None,
    )
    .args(["config", "ssh"]));
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read_to_string(ssh.join("config")).unwrap(),
        user_cfg
    );
}

/// An expired certificate from the CA's user key for a fresh key, added to the agent.
fn add_expired_cert(ca: &TestCa, agent: &Agent, dir: &Path) {
    let k = dir.join("old");
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&k));
    assert!(out.status.success());
    let out = run(Command::new("ssh-keygen")
        .arg("-s")
        .arg(ca.user_ca_key())
        .args([
            "-I",
            "smith:alice:old",
            "-n",
            "alice",
            "-V",
            "20200101:20200102",
        ])
        .args(["-O", "extension:scope@smith=env=dev"])
        .arg(k.with_extension("pub")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(Command::new("ssh-add")
        .arg(&k)
        .env("SSH_AUTH_SOCK", &agent.sock));
    assert!(out.status.success(), "ssh-add: {}", text(&out.stderr));
}

#[test]
fn cert_ensure_is_offline_when_valid_and_renews_otherwise() {
    let mut ca = TestCa::start();
    let token = setup(&ca);
    let agent = Agent::start();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let a = Some(agent.sock.as_path());

    // Nothing in the agent, nothing remembered: --ensure gets one (empty scope, 1h).
    let out = smith(&ca, &token, h, a, &["cert", "--ensure", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "quiet");
    assert_eq!(agent.certs().len(), 1);
    agent.clear();

    // A regular request is remembered (no secret in the file).
    let out = smith(
        &ca,
        &token,
        h,
        a,
        &[
            "cert", "--scope", "env=dev", "--ttl", "2h", "--reason", "INC-7",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let last = h.join(".config/smith/last-cert-default.json");
    assert_eq!(mode(&last), 0o600);
    assert_eq!(mode(&h.join(".config/smith")), 0o700);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&last).unwrap()).unwrap();
    assert_eq!(v["scope"], "env=dev");
    assert_eq!(v["ttl_secs"], 7200);
    assert_eq!(v["reason"], "INC-7");
    assert!(!std::fs::read_to_string(&last).unwrap().contains(&token));
    assert_eq!(agent.certs().len(), 1);

    // Valid for long enough: nothing to do, and no network needed (the CA is down).
    assert!(ca.stop());
    let out = smith(&ca, &token, h, a, &["cert", "--ensure", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    let out = smith(&ca, &token, h, a, &["cert", "--ensure"]);
    assert!(
        text(&out.stdout).contains("nothing to do"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(agent.certs().len(), 1);
    // Not valid long enough and the CA is down: a short error, non-zero.
    let out = smith(
        &ca,
        &token,
        h,
        a,
        &["cert", "--ensure", "--quiet", "--min-valid", "3h"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("smith: ") && err.lines().count() <= 3,
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // The CA is back: it renews, with the remembered scope and TTL.
    ca.restart();
    let out = smith(
        &ca,
        &token,
        h,
        a,
        &["cert", "--ensure", "--quiet", "--min-valid", "3h"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        agent.certs().len(),
        1,
        "the renewed certificate replaced the one of the same scope"
    );
    let ds = ca.admin_ok(&["decisions"]);
    assert_eq!(ds.matches("INC-7").count(), 2, "{ds}");

    agent.clear();
    let dir = tempfile::tempdir().unwrap();
    add_expired_cert(&ca, &agent, dir.path());
    assert_eq!(agent.certs().len(), 1);
    // Only an expired certificate from this CA: renewed, and the expired one (same
    // scope) leaves the agent.
    let out = smith(&ca, &token, h, a, &["cert", "--ensure", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let certs = agent.certs();
    assert_eq!(certs.len(), 1, "{certs:?}");
    assert!(
        certs[0].contains(" smith:alice:"),
        "not the CA's: {certs:?}"
    );
    let out = smith(&ca, &token, h, a, &["cert", "--ensure", "--quiet"]);
    assert!(out.status.success());
    assert_eq!(agent.certs().len(), 1, "the fresh one fits now");

    // No agent: a plain error.
    let out = smith(&ca, &token, h, None, &["cert", "--ensure", "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("SSH_AUTH_SOCK"));
}

// --- real ssh and sshd ------------------------------------------------------------------

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// sshd in a private mount namespace with `alice` in its passwd, trusting the CA's user
/// key, presenting `host_key` and (when given) `host_cert`.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Sshd {
    fn start(ca: &TestCa, host_key: &Path, host_cert: Option<&Path>) -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let home = d.join("home/alice");
        std::fs::create_dir_all(&home).unwrap();
        let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        passwd.push_str(&format!(
            "alice:x:54321:54321:alice:{}:/bin/sh\n",
            home.display()
        ));
        std::fs::write(d.join("passwd"), passwd).unwrap();
        let port = free_port();
        let mut config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nUsePAM no\n\
             AuthorizedKeysFile none\nTrustedUserCAKeys {}\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel VERBOSE\n\
             AllowUsers alice\n",
            host_key.display(),
            d.join("sshd.pid").display(),
            ca.user_ca_pub().display()
        );
        if let Some(c) = host_cert {
            config.push_str(&format!("HostCertificate {}\n", c.display()));
        }
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let script = format!(
            "set -e; mount --bind {} /etc/passwd; mount -t tmpfs tmpfs /run; \
             mkdir -m 0755 /run/sshd; exec /usr/sbin/sshd -D -e -f {}",
            d.join("passwd").display(),
            d.join("sshd_config").display()
        );
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let s = Sshd { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not start: {}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Enrolls a "host" named `name` through the API (as smith-host would) with the SSH host
/// key at `key`; writes the host certificate the CA returns next to it.
fn enroll_host_key(ca: &TestCa, name: &str, key: &Path) -> PathBuf {
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let (_, resp) = ca.enroll_host_with(name, "env=dev", &[pubkey.trim().to_string()]);
    let cert = &resp.ssh_host_certs[0];
    let path = PathBuf::from(format!("{}-cert.pub", key.display()));
    std::fs::write(&path, format!("{cert}\n")).unwrap();
    path
}

fn ssh_to(sshd: &Sshd, home: &Path, agent: &Agent, alias: &str, env: &[(&str, &str)]) -> Output {
    let ssh = home.join(".ssh");
    let mut c = Command::new("ssh");
    c.arg("-F")
        .arg(ssh.join("config"))
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            ssh.join("known_hosts").display()
        ))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
        ])
        .arg("-o")
        .arg(format!("HostKeyAlias={alias}"))
        .arg("-o")
        .arg(format!("IdentityAgent={}", agent.sock.display()))
        .args(["-o", "IdentitiesOnly=no", "-p", &sshd.port.to_string()])
        .args(["alice@127.0.0.1", "echo smith-ssh-ok"])
        .env("HOME", home)
        .env("SSH_AUTH_SOCK", &agent.sock)
        .env_remove("SMITH_CONFIG")
        .env_remove("XDG_CONFIG_HOME");
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c)
}

#[test]
fn ssh_trusts_the_host_certificate_and_the_match_block_renews_the_user_certificate() {
    if !support::e2e_available("ssh with @cert-authority and the Match exec block") {
        return;
    }
    let ca = TestCa::start();
    let token = setup(&ca);
    let agent = Agent::start();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("ssh_host_ed25519_key");
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key));
    assert!(out.status.success());
    let cert = enroll_host_key(&ca, "web-1", &key);
    let sshd = Sshd::start(&ca, &key, Some(&cert));

    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let out = smith(
        &ca,
        &token,
        h,
        None,
        &["config", "ssh", "--hosts", "web-*,127.0.0.1"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // known_hosts holds nothing but the @cert-authority line.
    let kh = std::fs::read_to_string(h.join(".ssh/known_hosts")).unwrap();
    assert_eq!(kh.lines().count(), 1);
    assert!(kh.starts_with("@cert-authority "));

    let env = [
        ("SMITH_CA_URL", ca.url.as_str()),
        ("SMITH_CA_FINGERPRINT", ca.fingerprint.as_str()),
        ("SMITH_TOKEN", token.as_str()),
    ];
    // The agent is empty: the Match exec block gets a certificate, the host
    // certificate is verified, the login works.
    assert!(agent.certs().is_empty());
    let out = ssh_to(&sshd, h, &agent, "web-1", &env);
    assert!(
        text(&out.stdout).contains("smith-ssh-ok"),
        "ssh failed: {}\n--- sshd:\n{}",
        text(&out.stderr),
        sshd.log()
    );
    assert_eq!(
        agent.certs().len(),
        1,
        "the Match exec block ran smith cert --ensure"
    );
    // Once more: the certificate is still good, no new one.
    let out = ssh_to(&sshd, h, &agent, "web-1", &env);
    assert!(text(&out.stdout).contains("smith-ssh-ok"));
    assert_eq!(agent.certs().len(), 1);
    // What that check costs with a fitting certificate (no network), beside starting
    // smith at all, in the same run.
    let per_run = |args: &[&str]| {
        let t = Instant::now();
        for _ in 0..20 {
            let out = smith(&ca, &token, h, Some(agent.sock.as_path()), args);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        t.elapsed() / 20
    };
    let start = per_run(&["--version"]);
    let check = per_run(&[
        "cert",
        "--ensure",
        "--quiet",
        "--host=127.0.0.1",
        "--login=alice",
        "--port=22",
        "--host-key-alias=web-1",
    ]);
    eprintln!("the check before a connection: {check:?} per run; starting smith: {start:?}");
    assert!(check < Duration::from_secs(1), "{check:?}");
    assert_eq!(agent.certs().len(), 1);

    // A wrong alias: the certificate does not name it, and nothing else is trusted.
    let out = ssh_to(&sshd, h, &agent, "web-2", &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Host key verification failed"),
        "{}",
        text(&out.stderr)
    );
    // A host whose key the CA did not certify: refused too.
    let plain = keys.path().join("plain_key");
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&plain));
    assert!(out.status.success());
    let uncertified = Sshd::start(&ca, &plain, None);
    let out = ssh_to(&uncertified, h, &agent, "web-1", &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Host key verification failed"),
        "{}",
        text(&out.stderr)
    );

    // The host certificate is revoked: the first connection's `smith cert --ensure`
    // (the Match exec) after the list's minute is over fetches it, and ssh refuses the
    // host. (Within the minute, connections ask the CA nothing: the list stands.)
    let krl = h.join(".ssh/smith_revoked_host_keys");
    assert_eq!(std::fs::read(&krl).unwrap(), b"", "nothing revoked yet");
    ca.admin_ok(&[
        "host", "cert", "revoke", "--host", "web-1", "--reason", "test",
    ]);
    let stamp = h.join(".config/smith/trust-checked");
    assert!(stamp.exists(), "the refresh is not stamped");
    let out = ssh_to(&sshd, h, &agent, "web-1", &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(&krl).unwrap(),
        b"",
        "fetched again within the minute"
    );
    // A minute later.
    std::fs::remove_file(&stamp).unwrap();
    let out = ssh_to(&sshd, h, &agent, "web-1", &env);
    assert!(
        !out.status.success(),
        "a revoked host certificate was accepted"
    );
    assert!(
        text(&out.stderr).contains("revoked"),
        "{}",
        text(&out.stderr)
    );
    assert!(!std::fs::read(&krl).unwrap().is_empty());
    // By hand too: `smith cert --ensure` refreshes the list (and changes nothing else).
    std::fs::write(&krl, b"").unwrap();
    std::fs::remove_file(&stamp).unwrap();
    let out = smith(
        &ca,
        &token,
        h,
        Some(agent.sock.as_path()),
        &["cert", "--ensure", "--quiet"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!std::fs::read(&krl).unwrap().is_empty());
    let out = ssh_to(&sshd, h, &agent, "web-1", &env);
    assert!(
        !out.status.success(),
        "a revoked host certificate was accepted"
    );
}
