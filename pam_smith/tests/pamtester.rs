//! pam_smith.so through real libpam with `pamtester`, inside a private mount namespace
//! (see `support`). Needs root; skips otherwise, fails when `SMITH_E2E_REQUIRED=1`.
//!
//! Fall-through is observed with a `pam_exec` line after pam_smith: the control
//! `[success=done ignore=ignore default=die]` makes SUCCESS end the stack (no marker),
//! IGNORE reach pam_exec (marker written), and any failure fail the stack.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use smith_proto::cache::{CacheContents, CacheGroup, CacheUser};
use smith_proto::event::{HostEvent, SessionPhase};
use smith_proto::Level;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use support::{describe, ready, FakeHostd, Sandbox};

fn contents() -> CacheContents {
    let user = |name: &str, uid: u32, level, gids: Vec<u32>| CacheUser {
        name: name.into(),
        uid,
        gid: uid,
        gecos: String::new(),
        dir: format!("/home/{name}"),
        shell: "/bin/bash".into(),
        level,
        gids,
    };
    CacheContents {
        host_name: "web-1".into(),
        host_tags: "env=prod,role=web".into(),
        generation: 1,
        snapshot_version: 1,
        written_at: 0,
        sudo_gid: 200_000,
        users: vec![
            user("alice", 200_001, Level::Ssh, vec![]),
            user("oscar", 200_002, Level::Sudo, vec![200_000]),
            // Same name as a local account: must never matter.
            user("deploy", 200_003, Level::Ssh, vec![]),
            user("mallory", 200_004, Level::Ssh, vec![]),
        ],
        groups: vec![CacheGroup {
            name: "smith-sudo".into(),
            gid: 200_000,
            members: vec!["oscar".into()],
        }],
    }
}

fn sandbox(label: &str) -> Sandbox {
    let sb = Sandbox::new(label);
    sb.append("etc/passwd", "deploy:x:1500:1500::/home/deploy:/bin/sh\n");
    sb
}

fn ok(o: &std::process::Output) -> bool {
    o.status.success()
}

/// A real OpenSSH user certificate from ssh-keygen, as sshd puts it in
/// `SSH_AUTH_INFO_0`.
fn auth_info(
    dir: &Path,
    principals: &[&str],
    key_id: &str,
    serial: u64,
    scope: Option<&str>,
    validity: &str,
) -> String {
    let d = dir.join(format!("cert-{serial}"));
    std::fs::create_dir_all(&d).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new("ssh-keygen")
            .args(args)
            .current_dir(&d)
            .output()
            .unwrap();
        assert!(o.status.success(), "ssh-keygen {args:?}: {}", describe(&o));
    };
    run(&["-q", "-t", "ed25519", "-N", "", "-f", "ca"]);
    run(&["-q", "-t", "ed25519", "-N", "", "-f", "user"]);
    let serial_s = serial.to_string();
    let principal = principals.join(",");
    let principal = principal.as_str();
    let ext;
    let mut args = vec![
        "-q", "-s", "ca", "-I", key_id, "-n", principal, "-z", &serial_s, "-V", validity,
    ];
    if let Some(s) = scope {
        ext = format!("extension:scope@smith={s}");
        args.extend(["-O", &ext]);
    }
    args.push("user.pub");
    run(&args);
    let cert = std::fs::read_to_string(d.join("user-cert.pub")).unwrap();
    let mut it = cert.split_whitespace();
    let (ty, b64) = (it.next().unwrap(), it.next().unwrap());
    format!("publickey {ty} {b64}")
}

fn sudo_events(evs: &[HostEvent]) -> Vec<smith_proto::event::SudoEvent> {
    evs.iter()
        .filter_map(|e| match e {
            HostEvent::Sudo(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn account_phase() {
    if !ready() {
        return;
    }
    let sb = sandbox("pam-account");
    let acct = |level: &str| {
        format!(
            "account [success=done ignore=ignore default=die] pam_smith.so {level}\n{}",
            sb.fell_line("account")
        )
    };
    sb.service("smith-acct", &acct(""));
    sb.service("smith-sudo", &acct("level=sudo"));
    sb.service("smith-badargs", &acct("levle=sudo"));
    sb.write_cache(&contents());

    // A Smith user with an ssh grant: allowed by pam_smith itself (no fall-through).
    let o = sb.pamtester(&["smith-acct", "alice", "acct_mgmt"]);
    assert!(ok(&o), "{}", describe(&o));
    assert!(!sb.fellthrough().contains("alice"), "{}", sb.fellthrough());

    // ... but not for sudo: denied, the reason logged (LOG_AUTHPRIV|LOG_NOTICE = <85>),
    // and a sudo record with allowed=false queued (no hostd running).
    let o = sb.pamtester(&["-I", "tty=/dev/pts/7", "smith-sudo", "alice", "acct_mgmt"]);
    assert!(!ok(&o), "{}", describe(&o));
    let logged = sb.syslog.find("access denied for alice");
    assert_eq!(logged.len(), 1, "{:?}", sb.syslog.lines());
    assert!(logged[0].starts_with("<85>"), "{}", logged[0]);
    assert!(
        logged[0].contains("alice has 'ssh' access on this host, 'sudo' is needed"),
        "{}",
        logged[0]
    );
    let s = sudo_events(&sb.pending_events());
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(
        (s[0].user.as_str(), s[0].allowed, s[0].tty.as_str()),
        ("alice", false, "/dev/pts/7")
    );
    assert!(s[0].reason.contains("'sudo' is needed"));

    // oscar holds a sudo grant here, but sudo is granted per certificate: outside a
    // session of one, refused and recorded.
    sb.clear_pending();
    let o = sb.pamtester(&["smith-sudo", "oscar", "acct_mgmt"]);
    assert!(!ok(&o), "{}", describe(&o));
    let s = sudo_events(&sb.pending_events());
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(
        !s[0].allowed && s[0].reason.contains("SSH session"),
        "{s:?}"
    );

    // In a session (opened by this same process, as sshd's session process does) of a
    // certificate issued under the sudo grant this host lists for oscar: allowed, and
    // the invocation recorded (argv of the PAM process) with the grant.
    sb.write_principals("oscar", &["smith-grant:2:sudo:oscar"]);
    sb.service(
        "smith-sudo-session",
        "session required pam_smith.so nohome\naccount required pam_smith.so level=sudo\n",
    );
    let in_session = |principals: &[&str], serial: u64| {
        let info = auth_info(
            &sb.dir,
            principals,
            "smith:oscar:s",
            serial,
            None,
            "-5m:+1h",
        );
        sb.pamtester(&[
            "-E",
            &format!("SSH_AUTH_INFO_0={info}"),
            "smith-sudo-session",
            "oscar",
            "open_session",
            "acct_mgmt",
            "close_session",
        ])
    };
    sb.clear_pending();
    let o = in_session(&["oscar", "smith-grant:2:sudo:oscar"], 60);
    assert!(ok(&o), "{}", describe(&o));
    let s = sudo_events(&sb.pending_events());
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(
        (s[0].user.as_str(), s[0].target.as_str(), s[0].allowed),
        ("oscar", "root", true)
    );
    assert!(s[0].reason.contains("under grant 2"), "{s:?}");
    assert!(
        s[0].command
            .ends_with("' smith-sudo-session oscar open_session acct_mgmt close_session"),
        "pamtester's own argv, parsed as sudo's: {}",
        s[0].command
    );
    assert!(s[0].pid > 0 && !s[0].cwd.is_empty());
    // A certificate issued under an ssh grant: the sudo grant oscar holds is not its.
    sb.write_principals(
        "oscar",
        &["smith-grant:2:sudo:oscar", "smith-grant:5:ssh:oscar"],
    );
    sb.clear_pending();
    let o = in_session(&["oscar", "smith-grant:5:ssh:oscar"], 61);
    assert!(!ok(&o), "{}", describe(&o));
    let s = sudo_events(&sb.pending_events());
    assert!(
        s.len() == 1 && !s[0].allowed && s[0].reason.contains("none gives sudo"),
        "{s:?}"
    );

    // Unknown to Smith, and local accounts (even one whose name is also in the cache,
    // with a level below what is needed): PAM_IGNORE, the stack goes on.
    for (svc, user) in [
        ("smith-acct", "bob"),
        ("smith-sudo", "deploy"),
        ("smith-sudo", "root"),
    ] {
        let o = sb.pamtester(&[svc, user, "acct_mgmt"]);
        assert!(ok(&o), "{svc} {user}: {}", describe(&o));
        assert!(
            sb.fellthrough().contains(&format!("{user} account")),
            "{user}: {}",
            sb.fellthrough()
        );
    }

    // Bad module arguments: non-local users are refused (and told why in the log),
    // local users are untouched.
    let o = sb.pamtester(&["smith-badargs", "alice", "acct_mgmt"]);
    assert!(!ok(&o));
    assert_eq!(sb.syslog.find("bad module arguments").len(), 1);
    let o = sb.pamtester(&["smith-badargs", "root", "acct_mgmt"]);
    assert!(ok(&o), "{}", describe(&o));

    // No cache: non-local users refused (AUTHINFO_UNAVAIL, <83> = AUTHPRIV|ERR) with a
    // Denied record; local users still fall through.
    sb.remove_cache();
    sb.clear_pending();
    std::fs::remove_file(sb.path("fellthrough")).unwrap();
    let o = sb.pamtester(&["-I", "rhost=10.1.2.3", "smith-acct", "alice", "acct_mgmt"]);
    assert!(!ok(&o), "{}", describe(&o));
    assert!(!sb.fellthrough().contains("alice"));
    let logged = sb.syslog.find("cache is unavailable");
    assert_eq!(logged.len(), 1, "{:?}", sb.syslog.lines());
    assert!(logged[0].starts_with("<83>"), "{}", logged[0]);
    match sb.pending_events().as_slice() {
        [HostEvent::Denied(d)] => {
            assert_eq!(
                (d.user.as_str(), d.service.as_str(), d.rhost.as_str()),
                ("alice", "smith-acct", "10.1.2.3")
            );
            assert!(d.reason.contains("unavailable"));
        }
        other => panic!("{other:?}"),
    }
    let o = sb.pamtester(&["smith-acct", "bob", "acct_mgmt"]);
    assert!(
        !ok(&o),
        "unknown non-local user with no cache: cannot tell, refused"
    );
    for user in ["deploy", "root"] {
        let o = sb.pamtester(&["smith-acct", user, "acct_mgmt"]);
        assert!(ok(&o), "{user}: {}", describe(&o));
    }
}

fn session_events(evs: &[HostEvent]) -> Vec<smith_proto::event::SessionEvent> {
    evs.iter()
        .filter_map(|e| match e {
            HostEvent::Session(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn session_phase() {
    if !ready() {
        return;
    }
    let sb = sandbox("pam-session");
    sb.service(
        "smith-session",
        &format!(
            "session [success=done ignore=ignore default=die] pam_smith.so\n{}",
            sb.fell_line("session")
        ),
    );
    sb.write_cache(&contents());
    sb.write_principals("alice", &["smith-grant:1:ssh:alice"]);
    let good = auth_info(
        &sb.dir,
        &["alice", "smith-grant:1:ssh:alice"],
        "smith:alice:req-1",
        42,
        Some("env=prod"),
        "-5m:+1h",
    );
    let env = format!("SSH_AUTH_INFO_0={good}");

    // Open + close, hostd down: home from skel, both records queued.
    let o = sb.pamtester(&[
        "-I",
        "rhost=10.9.8.7",
        "-I",
        "tty=ssh",
        "-E",
        &env,
        "smith-session",
        "alice",
        "open_session",
        "close_session",
    ]);
    assert!(ok(&o), "{}", describe(&o));
    let home = sb.path("home/alice");
    let md = std::fs::symlink_metadata(&home).unwrap();
    assert!(md.is_dir());
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o700, 200_001, 200_001)
    );
    let rc = std::fs::symlink_metadata(home.join(".bashrc")).unwrap();
    assert_eq!((rc.uid(), rc.gid()), (200_001, 200_001));
    assert_eq!(
        std::fs::read_to_string(home.join(".bashrc")).unwrap(),
        "# skel bashrc\n"
    );
    assert_eq!(
        std::fs::symlink_metadata(home.join(".config"))
            .unwrap()
            .uid(),
        200_001
    );
    assert!(home.join(".config/app.conf").exists());
    assert!(
        std::fs::symlink_metadata(home.join("shadow-link")).is_err(),
        "skel symlink not copied"
    );
    assert_eq!(
        sb.syslog.find("created home /home/alice").len(),
        1,
        "{:?}",
        sb.syslog.lines()
    );
    let s = session_events(&sb.pending_events());
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[0].phase, SessionPhase::Open);
    assert_eq!(
        (
            s[0].user.as_str(),
            s[0].service.as_str(),
            s[0].rhost.as_str(),
            s[0].tty.as_str()
        ),
        ("alice", "smith-session", "10.9.8.7", "ssh")
    );
    assert_eq!(
        (s[0].key_id.as_str(), s[0].serial, s[0].duration_secs),
        ("smith:alice:req-1", Some(42), None)
    );
    assert_eq!(s[1].phase, SessionPhase::Close);
    assert_eq!(
        (s[1].key_id.as_str(), s[1].serial),
        ("smith:alice:req-1", Some(42))
    );
    assert!(s[1].duration_secs.is_some_and(|d| d <= 5), "{:?}", s[1]);
    assert!(s[0].pid > 0 && s[0].pid == s[1].pid);
    assert!(
        sb.syslog.find("queued as").len() >= 2,
        "hostd unreachable is logged"
    );

    // hostd up: the records go over the socket, nothing queued; the home is kept.
    sb.clear_pending();
    std::fs::write(home.join("mine"), "keep").unwrap();
    let hostd = FakeHostd::start(&sb.socket_path(), &contents());
    let o = sb.pamtester(&[
        "-E",
        &env,
        "smith-session",
        "alice",
        "open_session",
        "close_session",
    ]);
    assert!(ok(&o), "{}", describe(&o));
    let s = session_events(&hostd.events());
    assert_eq!(
        s.iter().map(|e| e.phase).collect::<Vec<_>>(),
        [SessionPhase::Open, SessionPhase::Close]
    );
    assert_eq!(s[0].key_id, "smith:alice:req-1");
    assert!(sb.pending_events().is_empty());
    assert_eq!(std::fs::read_to_string(home.join("mine")).unwrap(), "keep");
    assert_eq!(
        sb.syslog.find("created home /home/alice").len(),
        1,
        "not created twice"
    );

    // Certificates the policy refuses: issued under a grant this host does not list
    // for alice (whatever scope it asked), someone else's, expired. Each refuses the
    // session, is logged and reported with the key ID.
    let cases = [
        (
            "another grant",
            auth_info(
                &sb.dir,
                &["alice", "smith-grant:9:ssh:alice"],
                "smith:alice:dev",
                43,
                Some("env=prod"),
                "-5m:+1h",
            ),
            "issued under (9)",
        ),
        (
            "principal",
            auth_info(
                &sb.dir,
                &["bob", "smith-grant:1:ssh:bob"],
                "smith:bob:x",
                44,
                None,
                "-5m:+1h",
            ),
            "issued under (1)",
        ),
        (
            "expired",
            auth_info(
                &sb.dir,
                &["alice", "smith-grant:1:ssh:alice"],
                "smith:alice:old",
                45,
                None,
                "-2h:-1h",
            ),
            "not valid now",
        ),
    ];
    for (what, info, reason) in &cases {
        let o = sb.pamtester(&[
            "-E",
            &format!("SSH_AUTH_INFO_0={info}"),
            "smith-session",
            "alice",
            "open_session",
        ]);
        assert!(!ok(&o), "{what}: {}", describe(&o));
        let logged = sb.syslog.find(reason);
        assert!(!logged.is_empty(), "{what}: {:?}", sb.syslog.lines());
        assert!(logged
            .iter()
            .any(|l| l.contains("session refused for alice")));
    }
    let denied: Vec<_> = hostd
        .events()
        .into_iter()
        .filter_map(|e| match e {
            HostEvent::Denied(d) => Some(d.key_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        denied,
        ["smith:alice:dev", "smith:bob:x", "smith:alice:old"]
    );

    // No certificate (su, console, password): no check, the record has no key ID.
    let o = sb.pamtester(&["smith-session", "oscar", "open_session"]);
    assert!(ok(&o), "{}", describe(&o));
    assert_eq!(
        std::fs::symlink_metadata(sb.path("home/oscar"))
            .unwrap()
            .uid(),
        200_002
    );
    let last = session_events(&hostd.events()).pop().unwrap();
    assert_eq!(
        (last.user.as_str(), last.key_id.as_str(), last.serial),
        ("oscar", "", None)
    );

    // A symlink planted at the home path: refused, nothing written through it.
    let victim = sb.path("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, sb.path("home/mallory")).unwrap();
    let o = sb.pamtester(&["smith-session", "mallory", "open_session"]);
    assert!(!ok(&o), "{}", describe(&o));
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
    assert_eq!(
        std::fs::metadata(&victim).unwrap().uid(),
        0,
        "victim not chowned"
    );
    assert_eq!(
        sb.syslog.find("symlink").len(),
        1,
        "{:?}",
        sb.syslog.lines()
    );

    // Local users: untouched (no home, no record), the stack goes on.
    let before = hostd.events().len();
    let o = sb.pamtester(&["smith-session", "deploy", "open_session", "close_session"]);
    assert!(ok(&o), "{}", describe(&o));
    assert!(
        sb.fellthrough().contains("deploy open_session"),
        "{}",
        sb.fellthrough()
    );
    assert!(!sb.path("home/deploy").exists());
    assert_eq!(hostd.events().len(), before);
}

/// `nm -D --defined-only`: exactly the PAM service functions and sudo's plugin struct.
#[test]
fn exports_exactly_the_pam_symbols() {
    if !Path::new("/usr/bin/nm").exists() {
        assert_ne!(
            std::env::var("SMITH_E2E_REQUIRED").as_deref(),
            Ok("1"),
            "nm (binutils) missing"
        );
        eprintln!("SKIPPED: nm missing");
        return;
    }
    let so = support::built_module("libpam_smith.so");
    let o = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    let mut syms: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    syms.sort();
    assert_eq!(
        syms,
        [
            "pam_sm_acct_mgmt",
            "pam_sm_authenticate",
            "pam_sm_close_session",
            "pam_sm_open_session",
            "pam_sm_setcred",
            "smith_approval",
            "smith_audit",
        ]
    );
}
