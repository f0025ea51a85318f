//! The audit trail from a host to the real CA (the test kit's, in-process): events over the socket reach the
//! CA in chain order; sudo is attributed to its session's key ID; sshd's log is read
//! (position kept across restarts); with the CA down events accumulate and all arrive
//! later; a restart and a SIGKILL during uploads neither lose nor duplicate; a crash
//! between the CA's commit and the local acknowledgement is reconciled from the CA's
//! head; an altered spooled record is rejected by the CA, kept, and reported by
//! `status`; `/etc/sudoers.d/smith` is written (0440, visudo-checked) and removed by
//! deactivate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::*;
use smith_proto::event::{HostEvent, SessionEvent, SessionPhase, SudoEvent};
use smith_proto::wire::{Request, Response};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

fn sudo(user: &str, cmd: &str) -> HostEvent {
    HostEvent::Sudo(SudoEvent {
        user: user.into(),
        target: "root".into(),
        command: cmd.into(),
        cwd: "/root".into(),
        tty: "pts/1".into(),
        allowed: true,
        reason: String::new(),
        pid: std::process::id(),
        key_id: String::new(),
        at_unix: now(),
    })
}

/// A new event id for each event this test sends.
fn rand_id() -> u128 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ((std::process::id() as u128) << 64) | n as u128
}

fn send(h: &HostRoot, ev: HostEvent) -> u64 {
    match smith_hostd::localclient::request(
        &h.socket(),
        &Request::Event {
            id: Some(smith_proto::event::EventId(rand_id())),
            event: ev,
        },
        Duration::from_secs(5),
    )
    .unwrap()
    {
        Response::Ack(seq) => seq,
        r => panic!("event not acknowledged: {r:?}"),
    }
}

fn status(h: &HostRoot) -> serde_json::Value {
    let o = h.host_cmd(&["status", "--json"]);
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Seqs of the CA's trail for `host`, which must be 1..=n in order.
fn assert_contiguous(trail: &[serde_json::Value], n: usize) {
    let seqs: Vec<u64> = trail.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=n as u64).collect::<Vec<_>>(),
        "CA trail not 1..={n}"
    );
}

#[test]
fn events_reach_the_ca_in_order_through_outages_restarts_and_kills() {
    if !root_available("audit upload tests (the socket takes events from root only)") {
        return;
    }
    let mut ca = TestCa::in_process();
    let h = HostRoot::new();
    let token = ca.host_token("env=prod", "web-1");
    let o = h.host_cmd(&[
        "activate",
        "--ca",
        &ca.url,
        "--token",
        &token,
        "--ca-fingerprint",
        &ca.fingerprint,
        "--name",
        "web-1",
        "--no-start",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Sudo by grant: the sudoers file, checked by visudo, 0440.
    let sudoers = h.path("/etc/sudoers.d/smith");
    assert!(h
        .read("/etc/sudoers.d/smith")
        .contains("%smith-sudo ALL=(ALL:ALL) NOPASSWD: ALL\n"));
    assert_eq!(smith_hostd::fsutil::mode_of(&sudoers), Some(0o440));
    let vis = Command::new("visudo")
        .arg("-cf")
        .arg(&sudoers)
        .output()
        .unwrap();
    assert!(vis.status.success());
    assert!(h
        .read("/etc/pam.d/sudo")
        .contains("account required pam_smith.so level=sudo"));

    let d = h.start_daemon();
    // A session whose sshd process is our parent, then a sudo from this process: hostd
    // walks from the peer pid (us) to the session and fills in the key ID.
    let session_pid = nix::unistd::getppid().as_raw() as u32;
    let key = "smith:oscar:0123456789abcdef";
    let open = HostEvent::Session(SessionEvent {
        phase: SessionPhase::Open,
        user: "oscar".into(),
        service: "sshd".into(),
        rhost: "10.0.0.5".into(),
        tty: "ssh".into(),
        pid: session_pid,
        key_id: key.into(),
        serial: Some(3),
        at_unix: now(),
        duration_secs: None,
    });
    assert_eq!(send(&h, open.clone()), 1);
    assert_eq!(send(&h, sudo("oscar", "/usr/bin/id -u")), 2);
    let mut close = open.clone();
    if let HostEvent::Session(s) = &mut close {
        s.phase = SessionPhase::Close;
        s.duration_secs = Some(3);
    }
    assert_eq!(send(&h, close), 3);
    let trail = wait_for("3 records at the CA", Duration::from_secs(20), || {
        let t = ca.audit_trail("web-1");
        (t.len() == 3).then_some(t)
    });
    let kinds: Vec<&str> = trail.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["session_open", "sudo", "session_close"]);
    assert_eq!(trail[1]["event"]["command"], "/usr/bin/id -u");
    assert_eq!(
        trail[1]["event"]["key_id"], key,
        "sudo not attributed to the session"
    );

    // sshd's own log (auth.log under the root): an authorized_keys login by root.
    let auth = h.path("/var/log/auth.log");
    std::fs::create_dir_all(auth.parent().unwrap()).unwrap();
    let log_line = |l: &str| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&auth)
            .unwrap();
        writeln!(f, "{l}").unwrap();
    };
    log_line("Accepted publickey for root from 10.9.9.9 port 40418 ssh2: RSA SHA256:P0N5BL9Z+mdOzyL83G1T+4D8wz1FREaOPM3/imep/AM");
    wait_for("the sshd login at the CA", Duration::from_secs(20), || {
        (ca.audit_trail("web-1").len() == 4).then_some(())
    });
    let oob = ca
        .admin_client()
        .audit_out_of_band(&Default::default())
        .unwrap();
    assert!(
        oob.iter()
            .any(|f| f.kind == "no_certificate" && f.user == "root"),
        "{oob:?}"
    );

    // The CA goes down: 50 sudo commands accumulate in the spool.
    ca.stop();
    for i in 0..50 {
        send(&h, sudo("oscar", &format!("/usr/bin/echo {i}")));
    }
    let st = status(&h);
    assert!(st["audit"]["pending"].as_u64().unwrap() >= 50, "{st}");
    // hostd restarts meanwhile (clean stop): the spool's head survives.
    d.stop();
    let d = h.start_daemon();
    assert_eq!(send(&h, sudo("oscar", "/usr/bin/after-restart")), 55);
    // sshd log position survives the restart: one new line, one new event.
    log_line("Failed password for root from 10.9.9.9 port 40500 ssh2");
    ca.restart();
    let trail = wait_for("all 56 records at the CA", Duration::from_secs(60), || {
        let t = ca.audit_trail("web-1");
        (t.len() >= 56).then_some(t)
    });
    assert_contiguous(&trail, 56);
    let cmds: Vec<String> = trail[4..54]
        .iter()
        .map(|e| e["event"]["command"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        cmds,
        (0..50)
            .map(|i| format!("/usr/bin/echo {i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        trail.iter().filter(|e| e["kind"] == "sshd").count(),
        2,
        "sshd log lines repeated or skipped across the restart"
    );
    wait_for("status: nothing pending", Duration::from_secs(10), || {
        (status(&h)["audit"]["pending"] == 0).then_some(())
    });

    // SIGKILL during uploads: 600 events (two batches) spooled with the CA down, then killed while
    // uploading; restarted, the CA ends with each exactly once.
    ca.stop();
    for i in 0..600 {
        send(&h, sudo("oscar", &format!("/bin/burst {i}")));
    }
    ca.restart();
    wait_for("an upload to start", Duration::from_secs(60), || {
        (ca.audit_trail("web-1").len() > 56).then_some(())
    });
    d.kill();
    let d = h.start_daemon();
    let trail = wait_for("all 656 records", Duration::from_secs(60), || {
        let t = ca.audit_trail("web-1");
        (t.len() >= 656).then_some(t)
    });
    assert_contiguous(&trail, 656);

    // A crash between the CA's commit and acked.json: put acked.json back in time. The
    // restarted daemon reconciles from the CA's head and sends nothing twice.
    d.stop();
    let spool = h.path("/var/lib/smith/spool");
    let rec = smith_hostd::spool::record_at(&spool, 650)
        .unwrap()
        .expect("record 650 still spooled");
    std::fs::write(
        spool.join("acked.json"),
        serde_json::json!({"acked_through": 650, "head_hash": rec.hash}).to_string(),
    )
    .unwrap();
    let d = h.start_daemon();
    send(&h, sudo("oscar", "/bin/after-crash"));
    let trail = wait_for("657 records", Duration::from_secs(30), || {
        let t = ca.audit_trail("web-1");
        (t.len() >= 657).then_some(t)
    });
    assert_contiguous(&trail, 657);
    let rej = ca
        .admin_client()
        .audit_rejections(&Default::default())
        .unwrap();
    assert!(rej.is_empty(), "{rej:?}");

    // An altered spooled record: the CA rejects it, the spool keeps it, status says so.
    ca.stop();
    send(&h, sudo("oscar", "/bin/genuine-1"));
    send(&h, sudo("oscar", "/bin/genuine-2"));
    d.stop();
    let (_, seg) = smith_hostd::spool::segments(&spool).unwrap().pop().unwrap();
    let text = std::fs::read_to_string(&seg).unwrap();
    assert!(text.contains("/bin/genuine-2"));
    std::fs::write(&seg, text.replace("/bin/genuine-2", "/bin/genuine-X")).unwrap();
    ca.restart();
    let _d = h.start_daemon();
    let st = wait_for("the rejection in status", Duration::from_secs(30), || {
        let s = status(&h);
        (!s["audit"]["rejection"].is_null()).then_some(s)
    });
    assert_eq!(st["audit"]["rejection"]["seq"], 659, "{st}");
    assert_eq!(st["audit"]["rejection"]["code"], "audit_chain_broken");
    // At least the altered record waits (the one before it may already be uploaded).
    assert!(st["audit"]["pending"].as_u64().unwrap() >= 1, "{st}");
    let human = String::from_utf8_lossy(&h.host_cmd(&["status"]).stdout).to_string();
    assert!(human.contains("REJECTED"), "{human}");
    let o = h.host_cmd(&["doctor", "--json"]);
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let audit = checks.iter().find(|c| c["name"] == "audit").unwrap();
    assert_eq!(audit["level"], "fail", "{audit}");
    let rej = ca
        .admin_client()
        .audit_rejections(&Default::default())
        .unwrap();
    assert!(
        rej.iter().any(|r| r.host == "web-1" && r.seq == 659),
        "{rej:?}"
    );
    // The genuine record before it was stored, the altered one was not; the chain is
    // intact.
    wait_for(
        "the record before the altered one",
        Duration::from_secs(20),
        || (ca.audit_trail("web-1").len() == 658).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(ca.audit_trail("web-1").len(), 658);
    let verified = ca.admin_client().audit_verify().unwrap();
    assert!(verified.ok, "{verified:?}");
    let recs = smith_hostd::spool::read_all(&spool).unwrap();
    assert!(recs
        .iter()
        .any(|r| r.record.event.contains("/bin/genuine-X")));

    // Deactivate removes the sudoers file (it did not exist before).
    drop(_d);
    let o = h.host_cmd(&["deactivate", "--no-stop", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!sudoers.exists());
}
