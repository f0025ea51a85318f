//! smith-hostd against the real CA (in-process): sync, cache, local collisions, CA outages, restarts,
//! the socket (lookups, event permissions, hostile clients), pending files, renewal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::*;
use smith_proto::event::{DeniedEvent, EventId, HostEvent, SessionEvent, SessionPhase};
use smith_proto::wire::{self, ErrorCode, Request, Response};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

fn ask(h: &HostRoot, req: Request) -> Response {
    smith_hostd::localclient::request(&h.socket(), &req, Duration::from_secs(3)).unwrap()
}

fn status(h: &HostRoot) -> serde_json::Value {
    let o = h.host_cmd(&["status", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn denied(user: &str) -> HostEvent {
    HostEvent::Denied(DeniedEvent {
        user: user.into(),
        service: "sshd".into(),
        rhost: "10.0.0.9".into(),
        reason: "no grant".into(),
        key_id: String::new(),
        at_unix: 1,
    })
}

#[test]
fn syncs_serves_and_keeps_serving_without_the_ca() {
    let mut ca = test_ca();
    // deploy collides with a local user's name, carol with a local uid, lab with a
    // local group.
    ca.add_user("deploy", &["dev"], Some(200003));
    ca.add_user("carol", &["dev"], Some(200050));
    ca.add_group("lab", Some(200012));
    ca.grant("lab", "env=prod", "ssh");
    let h = HostRoot::new();
    h.activate_ok(&ca, "web-1", "env=prod,role=web");
    let d = h.start_daemon();

    wait_for(
        "the first snapshot in the cache",
        Duration::from_secs(10),
        || (h.cache_users() == ["alice", "oscar"]).then_some(()),
    );
    let c = h.cache().unwrap();
    assert_eq!(c.host_name, "web-1");
    assert_eq!(c.host_tags, "env=prod,role=web");
    let groups: Vec<(&str, Vec<String>)> = c
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.members.clone()))
        .collect();
    assert_eq!(
        groups,
        vec![
            ("dev", vec!["alice".to_string()]),
            ("ops", vec!["oscar".to_string()]),
            // Every Smith user served here (sshd's Match Group for certificate only).
            (
                "smith-users",
                vec!["alice".to_string(), "oscar".to_string()]
            ),
            ("smith-sudo", vec!["oscar".to_string()]),
        ]
    );
    let oscar = c.users.iter().find(|u| u.name == "oscar").unwrap();
    assert_eq!(
        (oscar.uid, oscar.gid, oscar.dir.as_str()),
        (200002, 200002, "/home/oscar")
    );
    assert_eq!(oscar.gids, vec![200000, 200011, 299999]);
    assert_eq!(
        std::fs::metadata(h.path("/var/lib/smith/nss.cache"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    let log = d.log();
    assert!(
        log.contains("deploy") && log.contains("a local user has this name"),
        "{log}"
    );
    assert!(log.contains("carol") && log.contains("uid 200050"), "{log}");
    assert!(log.contains("lab"), "{log}");
    let version = ca.version();
    let state: smith_proto::snapshot::HostState =
        serde_json::from_slice(&std::fs::read(h.path("/var/lib/smith/state.json")).unwrap())
            .unwrap();
    assert_eq!(state.version, version);

    // Socket lookups give the cache's answers.
    match ask(&h, Request::UserByName("alice".into())) {
        Response::User(Some(u)) => assert_eq!((u.uid, u.level), (200001, 1)),
        r => panic!("{r:?}"),
    }
    assert_eq!(
        ask(&h, Request::UserByName("deploy".into())),
        Response::User(None)
    );
    assert_eq!(ask(&h, Request::UserByUid(200003)), Response::User(None));
    match ask(&h, Request::GroupByGid(200000)) {
        Response::Group(Some(g)) => assert_eq!(
            (g.name.as_str(), g.members),
            ("smith-sudo", vec!["oscar".to_string()])
        ),
        r => panic!("{r:?}"),
    }
    assert_eq!(
        ask(&h, Request::GroupsOfUser("oscar".into())),
        Response::Gids(Some(vec![200000, 200011, 299999]))
    );
    match ask(&h, Request::Ping) {
        Response::Pong {
            snapshot_version,
            users,
            last_sync_unix,
        } => {
            assert_eq!((snapshot_version, users), (version, 2));
            assert!(last_sync_unix >= now() - 60);
        }
        r => panic!("{r:?}"),
    }
    // A second daemon for the same host refuses to start.
    let o = Command::new(smith_hostd())
        .arg("--root")
        .arg(&h.root)
        .args(["--log", "stderr"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already running"),
        "{o:?}"
    );
    assert!(matches!(ask(&h, Request::Ping), Response::Pong { .. }));

    let s = status(&h);
    assert_eq!(s["enrolled"], true);
    assert_eq!(s["daemon_reachable"], true);
    assert_eq!(s["users_known"], 2);
    assert_eq!(s["snapshot_version"], version);
    assert_eq!(s["tags"], "env=prod,role=web");

    // A change at the CA reaches the cache within a few seconds (long-poll, delta).
    ca.remove_member("ops", "oscar");
    ca.add_user("bob", &["dev"], Some(200004));
    wait_for(
        "oscar removed and bob added",
        Duration::from_secs(5),
        || (h.cache_users() == ["alice", "bob"]).then_some(()),
    );
    // It had been waiting on a long poll from the version it had.
    assert!(
        sync_requests(&d.log())
            .iter()
            .any(|(since, wait)| *since == version && *wait > 0),
        "{}",
        d.log()
    );
    assert!(
        d.log().contains("full=false"),
        "a delta should have been applied"
    );
    let sudo = h
        .cache()
        .unwrap()
        .groups
        .into_iter()
        .find(|g| g.name == "smith-sudo")
        .unwrap();
    assert!(sudo.members.is_empty());

    // A new local account wins at once (within the housekeeping period).
    let mut passwd = h.read("/etc/passwd");
    passwd.push_str("bob:x:1002:1002::/home/bob:/bin/sh\n");
    std::fs::write(h.path("/etc/passwd"), passwd).unwrap();
    wait_for(
        "local bob to shadow Smith's bob",
        Duration::from_secs(10),
        || (h.cache_users() == ["alice"]).then_some(()),
    );

    // The CA goes down: the last snapshot keeps serving; status says why.
    let cache_bytes = std::fs::read(h.path("/var/lib/smith/nss.cache")).unwrap();
    ca.stop();
    wait_for(
        "the sync error to be recorded",
        Duration::from_secs(10),
        || {
            status(&h)["last_sync_error"]
                .as_str()
                .map(|s| s.contains("cannot reach"))
                .filter(|b| *b)
        },
    );
    assert_eq!(
        std::fs::read(h.path("/var/lib/smith/nss.cache")).unwrap(),
        cache_bytes
    );
    assert!(matches!(
        ask(&h, Request::UserByName("alice".into())),
        Response::User(Some(_))
    ));

    // Killed and restarted with the CA still down: still serves, cache untouched.
    d.kill();
    let d = h.start_daemon();
    assert!(matches!(
        ask(&h, Request::UserByName("alice".into())),
        Response::User(Some(_))
    ));
    assert_eq!(
        std::fs::read(h.path("/var/lib/smith/nss.cache")).unwrap(),
        cache_bytes
    );
    assert!(h.path("/run/smith/hostd.pid").exists());

    // A corrupt state.json: the cache file keeps logins working, the daemon resyncs.
    d.kill();
    std::fs::write(
        h.path("/var/lib/smith/state.json"),
        b"{\"host\": \"web-1\", \"tru",
    )
    .unwrap();
    let d = h.start_daemon();
    assert!(matches!(
        ask(&h, Request::UserByName("alice".into())),
        Response::User(Some(_))
    ));
    assert_eq!(
        std::fs::read(h.path("/var/lib/smith/nss.cache")).unwrap(),
        cache_bytes
    );
    assert!(
        d.log().contains("cannot load the last snapshot"),
        "{}",
        d.log()
    );

    // The CA returns: the daemon catches up (full snapshot) and follows changes.
    ca.restart();
    ca.add_user("dave", &["dev"], Some(200005));
    wait_for(
        "dave after the CA came back",
        Duration::from_secs(40),
        || (h.cache_users() == ["alice", "dave"]).then_some(()),
    );
    let state: smith_proto::snapshot::HostState =
        serde_json::from_slice(&std::fs::read(h.path("/var/lib/smith/state.json")).unwrap())
            .unwrap();
    assert_eq!(state.version, ca.version());

    // `smith-host sync` signals the daemon, which asks the CA at once (wait=0).
    let before = sync_requests(&d.log()).len();
    let o = h.host_cmd(&["sync", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["signalled_pid"], d.pid());
    wait_for("an immediate sync request", Duration::from_secs(5), || {
        sync_requests(&d.log())[before..]
            .iter()
            .any(|(_, wait)| *wait == 0)
            .then_some(())
    });

    // SIGTERM: clean stop, socket and pid file removed, cache kept.
    let st = d.stop();
    assert!(st.success(), "{st:?}");
    assert!(!h.socket().exists());
    assert!(!h.path("/run/smith/hostd.pid").exists());
    assert!(h.path("/var/lib/smith/nss.cache").exists());
    let s = status(&h);
    assert_eq!(s["daemon_reachable"], false);
    assert_eq!(s["users_known"], 2);
}

const PY_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
req = bytes.fromhex(sys.argv[2])
s.sendall(len(req).to_bytes(4, 'big') + req)
n = int.from_bytes(s.recv(4, socket.MSG_WAITALL), 'big')
data = b''
while len(data) < n:
    data += s.recv(n - len(data))
print(data.hex())
"#;

/// Sends `req` as the `nobody` user (setpriv) and returns the response.
fn ask_as_nobody(h: &HostRoot, req: &Request) -> Response {
    let o = run_ok(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                PY_CLIENT,
            ])
            .arg(h.socket())
            .arg(hex::encode(req.encode())),
    );
    let hexed = String::from_utf8_lossy(&o.stdout).trim().to_string();
    Response::decode(&hex::decode(hexed).unwrap()).unwrap()
}

/// A pending file as pam_smith names it, `<ns>-<pid>-<id>.evt`; returns the name.
fn write_evt(dir: &std::path::Path, ns: u64, id: u128, ev: &HostEvent) -> String {
    let name = format!("{ns:010}-1-{}.evt", EventId(id));
    std::fs::write(dir.join(&name), wire::encode_event(ev)).unwrap();
    name
}

fn event(id: u128, event: HostEvent) -> Request {
    Request::Event {
        id: Some(EventId(id)),
        event,
    }
}

#[test]
fn socket_rules_hostile_clients_and_pending_files() {
    if !root_available("socket permission tests") {
        return;
    }
    let ca = test_ca();
    let h = HostRoot::new();
    h.activate_ok(&ca, "db-1", "env=dev");

    // Events pam_smith left while hostd was down.
    let pending = h.path("/var/lib/smith/pending");
    std::fs::create_dir_all(&pending).unwrap();
    std::fs::set_permissions(&pending, std::fs::Permissions::from_mode(0o700)).unwrap();
    let open = HostEvent::Session(SessionEvent {
        phase: SessionPhase::Open,
        user: "alice".into(),
        service: "sshd".into(),
        rhost: "10.0.0.1".into(),
        tty: "ssh".into(),
        pid: 4242,
        key_id: "smith:alice:abc".into(),
        serial: Some(7),
        at_unix: 100,
        duration_secs: None,
    });
    let open_file = write_evt(&pending, 1, 1, &open);
    let mallory_file = write_evt(&pending, 2, 2, &denied("mallory"));
    std::fs::write(pending.join("0000000003-1-c.evt"), b"\x01\xee\x09garbage").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(120);
    std::fs::File::options()
        .write(true)
        .open(pending.join("0000000003-1-c.evt"))
        .unwrap()
        .set_modified(old)
        .unwrap();

    let d = h.start_daemon();
    let spool = h.path("/var/lib/smith/spool");
    wait_for(
        "the pending files to be ingested",
        Duration::from_secs(10),
        || (smith_hostd::spool::read_all(&spool).unwrap().len() == 2).then_some(()),
    );
    let recs = smith_hostd::spool::read_all(&spool).unwrap();
    assert_eq!((recs[0].seq, recs[0].via.as_str()), (1, "pending"));
    assert_eq!(recs[0].event, open);
    assert_eq!(recs[1].event, denied("mallory"));
    wait_for("the bad file moved aside", Duration::from_secs(10), || {
        pending
            .join("bad/0000000003-1-c.evt")
            .exists()
            .then_some(())
    });
    assert!(!pending.join(&open_file).exists() && !pending.join(&mallory_file).exists());
    assert!(d.log().contains("bad pending event file"), "{}", d.log());

    // The socket is open to everyone for lookups, root-only for events.
    let sock_mode = std::fs::symlink_metadata(h.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(sock_mode, 0o666);
    assert_eq!(
        std::fs::metadata(h.path("/run/smith"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    wait_for("the snapshot", Duration::from_secs(10), || {
        matches!(
            ask(&h, Request::UserByName("alice".into())),
            Response::User(Some(_))
        )
        .then_some(())
    });
    assert!(matches!(
        ask_as_nobody(&h, &Request::UserByName("alice".into())),
        Response::User(Some(_))
    ));
    match ask_as_nobody(&h, &event(3, denied("forged"))) {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::PermissionDenied),
        r => panic!("nobody recorded an event: {r:?}"),
    }
    assert_eq!(ask(&h, event(4, denied("eve"))), Response::Ack(3));
    let recs = smith_hostd::spool::read_all(&spool).unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!(
        (recs[2].via.as_str(), recs[2].event.user()),
        ("socket", "eve")
    );
    assert!(d
        .log()
        .contains("refused an audit event from a non-root client"));

    // Delivered twice (pam_smith's Ack came too late, so it also left a pending file;
    // or it retried the socket): recorded once, the repeat answered with the same seq.
    let repeats = || d.log().matches("not recorded twice").count();
    assert_eq!(repeats(), 0);
    assert_eq!(ask(&h, event(4, denied("eve"))), Response::Ack(3));
    assert_eq!(repeats(), 1);
    let eve_file = write_evt(&pending, 4, 4, &denied("eve"));
    wait_for("the repeated pending file", Duration::from_secs(10), || {
        (!pending.join(&eve_file).exists()).then_some(())
    });
    assert_eq!(smith_hostd::spool::read_all(&spool).unwrap().len(), 3);
    assert_eq!(
        repeats(),
        2,
        "the pending repeat is not logged: {}",
        d.log()
    );
    assert!(
        !pending.join("bad").join(&eve_file).exists(),
        "the repeat was moved aside, not recognised"
    );
    // The pending file of the first start had id 1 (alice's session open): after the
    // session closed, a late socket copy of the open is dropped and does not bring the
    // session back into the session table.
    let sessions = h.path("/var/lib/smith/sessions.json");
    let has_4242 = || {
        let t: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&sessions).unwrap_or_default())
                .unwrap_or_default();
        t.get("4242").is_some()
    };
    assert!(
        has_4242(),
        "the pending open did not reach the session table"
    );
    let mut close = open.clone();
    if let HostEvent::Session(s) = &mut close {
        s.phase = SessionPhase::Close;
        s.duration_secs = Some(5);
    }
    assert_eq!(ask(&h, event(5, close)), Response::Ack(4));
    assert!(!has_4242());
    assert_eq!(ask(&h, event(1, open.clone())), Response::Ack(1));
    assert!(!has_4242(), "a repeated open brought a closed session back");
    // A sender of an earlier version (no id) is still recorded, each time.
    let legacy = Request::Event {
        id: None,
        event: denied("old"),
    };
    assert_eq!(ask(&h, legacy.clone()), Response::Ack(5));
    assert_eq!(ask(&h, legacy), Response::Ack(6));

    // Slow clients: 60 connections that send half a length and stall.
    let mut slow = Vec::new();
    for _ in 0..60 {
        let mut s = UnixStream::connect(h.socket()).unwrap();
        s.write_all(&[0, 0]).unwrap();
        slow.push(s);
    }
    // Garbage and oversized frames get an error and a closed connection.
    let mut g = UnixStream::connect(h.socket()).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    g.write_all(b"\x00\x00\x00\x05hello").unwrap();
    match Response::decode(&wire::read_frame(&mut g).unwrap()).unwrap() {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::BadRequest),
        r => panic!("{r:?}"),
    }
    assert_eq!(
        g.read(&mut [0u8; 16]).unwrap(),
        0,
        "garbage client not disconnected"
    );
    let mut big = UnixStream::connect(h.socket()).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    big.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert!(matches!(
        Response::decode(&wire::read_frame(&mut big).unwrap()).unwrap(),
        Response::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    // Meanwhile a well-behaved client is answered at once.
    let t = Instant::now();
    for _ in 0..20 {
        assert!(matches!(
            ask(&h, Request::UserByUid(200001)),
            Response::User(Some(_))
        ));
    }
    // Stalled, they would wait for the slow clients' frame timeout (5 s).
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "lookups stalled: {:?}",
        t.elapsed()
    );
    // The stalled clients are cut off after the frame timeout.
    std::thread::sleep(Duration::from_secs(6));
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(s.read(&mut [0u8; 4]).unwrap_or(0), 0);
    }

    // Pending files keep being picked up while running.
    write_evt(&pending, 9, 9, &denied("late"));
    wait_for("a late pending file", Duration::from_secs(10), || {
        (smith_hostd::spool::read_all(&spool).unwrap().len() == 7).then_some(())
    });
    drop(d);
}

/// A client certificate of this lifetime is due for renewal when issued: the CA backdates
/// it 5 minutes, and hostd renews at 2/3 of its life.
const DUE_AT_ONCE: Duration = Duration::from_secs(120);

#[test]
fn renews_its_certificate_and_syncs_once_without_a_daemon() {
    // The enrollment certificate is already past 2/3 of its life...
    let mut ca = test_ca_with(|c| c.host_cert_ttl = DUE_AT_ONCE);
    let h = HostRoot::new();
    h.activate_ok(&ca, "web-9", "env=prod");
    let old_cert = h.read("/etc/smith/host.crt");
    // ... and the CA, restarted with the default lifetime, renews it for a day.
    ca.restart_with(|c| c.host_cert_ttl = Duration::from_secs(86400));

    let d = h.start_daemon();
    wait_for("the certificate renewal", Duration::from_secs(20), || {
        (renewals(&ca, "web-9") >= 1 && h.read("/etc/smith/host.crt") != old_cert).then_some(())
    });
    let key = h.read("/etc/smith/host.key");
    let cert = h.read("/etc/smith/host.crt");
    assert!(smith_hostd::identity::key_matches_cert(&key, cert.as_bytes()).unwrap());
    let s = smith_hostd::identity::summarize_pem(cert.as_bytes()).unwrap();
    assert!(s.not_after > now() + 80000);
    assert_eq!(s.common_name.as_deref(), Some("web-9"));
    // It keeps syncing with the new certificate.
    ca.add_user("frank", &["dev"], Some(200006));
    wait_for("frank", Duration::from_secs(10), || {
        h.cache_users().contains(&"frank".to_string()).then_some(())
    });
    assert!(
        d.log().contains("client certificate renewed"),
        "{}",
        d.log()
    );
    assert_eq!(renewals(&ca, "web-9"), 1, "renewed more than once");
    assert!(d.stop().success());

    // No daemon: `smith-host sync` syncs once in-process.
    ca.add_user("erin", &["dev"], Some(200007));
    let o = h.host_cmd(&["sync", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["signalled_pid"], serde_json::Value::Null);
    assert_eq!(r["to_version"], ca.version());
    assert!(h.cache_users().contains(&"erin".to_string()));

    // A CA without renewal (a proxy in front of the real CA answers renewal 404, as a CA
    // from before renewal did): the daemon says so and carries on.
    ca.restart_with(|c| c.host_cert_ttl = DUE_AT_ONCE);
    let h2 = HostRoot::new();
    let proxy = TamperingProxy::start(&ca, Some(h2.identity_files()), Tamper::NoRenewal);
    let o = h2.activate_at(
        &proxy.url,
        &ca.fingerprint,
        &ca.host_token("env=prod", "web-10"),
        "web-10",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d2 = h2.start_daemon();
    wait_for("the no-renewal notice", Duration::from_secs(10), || {
        d2.log()
            .contains("does not offer certificate renewal")
            .then_some(())
    });
    wait_for("a synced cache", Duration::from_secs(10), || {
        h2.cache().map(|_| ())
    });
    assert_eq!(renewals(&ca, "web-10"), 0);
    drop(d2);
}

#[test]
fn a_full_disk_keeps_the_old_files_and_retries() {
    if !root_available("the full-disk test (mount namespace)") {
        return;
    }
    let ca = test_ca();
    // 300 users in a group no grant names yet: nothing for any host until it gets one.
    ca.add_group("many", None);
    for i in 0..300u64 {
        ca.add_user(&format!("u{i:04}"), &["many"], Some(210_000 + i));
    }
    let h = HostRoot::new();
    h.activate_ok(&ca, "web-3", "env=prod");
    // The daemon runs in a private mount namespace where /var/lib/smith is a small
    // tmpfs (4 MiB: room for the 302 users' principals files, a page each, once space
    // comes back); the test reaches it through /proc/PID/root.
    let state_dir = h.path("/var/lib/smith");
    let log = h.tmp.path().join("hostd-full.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=4m,mode=0755 smith-test \"$0\" && exec \"$@\"")
        .arg(&state_dir)
        .arg(smith_hostd())
        .arg("--root")
        .arg(&h.root)
        .args(["--log", "stderr"])
        .env("SMITH_LOG", "debug")
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let inner =
        std::path::PathBuf::from(format!("/proc/{}/root{}", child.id(), state_dir.display()));
    let read_cache = || -> Option<smith_proto::cache::CacheContents> {
        let b = std::fs::read(inner.join("nss.cache")).ok()?;
        smith_hostd::view::contents_from_view(&smith_proto::cache::CacheView::parse(&b).ok()?)
    };
    let names = |c: &smith_proto::cache::CacheContents| {
        c.users.iter().map(|u| u.name.clone()).collect::<Vec<_>>()
    };
    wait_for(
        "the first cache in the tmpfs",
        Duration::from_secs(15),
        || {
            read_cache()
                .filter(|c| names(c) == ["alice", "oscar"])
                .map(|_| ())
        },
    );

    // Fill the file system.
    let filler = inner.join("filler");
    let mut fill = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while fill.write_all(&chunk).is_ok() {}
    drop(fill);
    ca.grant("many", "env=prod", "ssh");
    let logtext = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(
        "the write failure to be logged",
        Duration::from_secs(10),
        || {
            logtext()
                .contains("cannot write the cache file")
                .then_some(())
        },
    );
    // The old files are intact; the socket already answers with the new data.
    assert_eq!(names(&read_cache().unwrap()), ["alice", "oscar"]);
    let old_state: smith_proto::snapshot::HostState =
        serde_json::from_slice(&std::fs::read(inner.join("state.json")).unwrap()).unwrap();
    assert_eq!(old_state.users.len(), 2);
    assert!(matches!(
        ask(&h, Request::UserByName("u0007".into())),
        Response::User(Some(_))
    ));
    assert!(std::fs::read_dir(&inner).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("smith-tmp")));

    // Space comes back: the daemon retries and catches up without a new sync.
    std::fs::remove_file(&filler).unwrap();
    wait_for("the retried writes", Duration::from_secs(15), || {
        read_cache().filter(|c| c.users.len() == 302).map(|_| ())
    });
    let st: smith_proto::snapshot::HostState =
        serde_json::from_slice(&std::fs::read(inner.join("state.json")).unwrap()).unwrap();
    assert_eq!(st.version, ca.version());
    let _ = child.kill();
    let _ = child.wait();
}
