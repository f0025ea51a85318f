//! Issue 4's scenarios through real sudo, sshd and the CA: sudo by grant, the trail in
//! order with key IDs, outages, crashes, tampering, replays, and out-of-band logins.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use smith_tests::cmd::{outcome, wait_for};
use smith_tests::{e2e_available, Client, Fleet};
use std::process::Command;
use std::time::{Duration, Instant};

fn json(o: &smith_tests::Outcome) -> Result<Value> {
    serde_json::from_str(o.out()).with_context(|| format!("not JSON: {o}"))
}

/// A fresh certificate in the agent; returns its key ID.
fn cert(c: &Client, scope: &str) -> Result<String> {
    c.run(&["ssh-add", "-D"])?;
    let o = c
        .smith(&[
            "cert",
            "--scope",
            scope,
            "--ttl",
            "30m",
            "--reason",
            "audit-e2e",
            "--json",
        ])?
        .ok()?;
    Ok(json(&o)?["key_id"].as_str().context("key_id")?.to_string())
}

/// The CA's trail for one host, in chain order.
fn trail(fleet: &Fleet, host: &str) -> Result<Vec<Value>> {
    fleet.trail(host)
}

fn kind(r: &Value) -> &str {
    r["kind"].as_str().unwrap_or("")
}

fn ev<'a>(r: &'a Value, field: &str) -> &'a Value {
    &r["event"][field]
}

/// Sudo records whose command starts with `prefix`, in chain order.
fn sudo_commands(records: &[Value], prefix: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| kind(r) == "sudo")
        .filter_map(|r| ev(r, "command").as_str())
        .filter(|c| c.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn audit_fleet(label: &str) -> Result<Fleet> {
    let mut fleet = Fleet::new(label)?;
    fleet.start_ca()?;
    for args in [
        vec!["group", "add", "dev"],
        vec!["group", "add", "ops"],
        vec!["group", "add", "prodssh"],
        vec!["user", "add", "alice", "--groups", "dev"],
        vec!["user", "add", "oscar", "--groups", "ops,prodssh"],
        vec![
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
        ],
        vec![
            "grant",
            "add",
            "--group",
            "ops",
            "--tags",
            "env=prod",
            "--level",
            "sudo",
            "--max-ttl",
            "8h",
        ],
        // oscar keeps ssh on prod after losing sudo: the refusal is sudo's.
        vec![
            "grant",
            "add",
            "--group",
            "prodssh",
            "--tags",
            "env=prod",
            "--level",
            "ssh",
            "--max-ttl",
            "8h",
        ],
    ] {
        fleet.admin_ok(&args)?;
    }
    fleet.add_host("web-1", "env=prod,role=web")?;
    fleet.add_host("db-1", "env=dev,role=db")?;
    Ok(fleet)
}

#[test]
fn sudo_follows_grants_and_the_trail_shows_it_in_order() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let fleet = audit_fleet("audit")?;
    let web = fleet.host("web-1");
    let db = fleet.host("db-1");
    let oscar = fleet.engineer("oscar")?;
    let alice = fleet.engineer("alice")?;

    // oscar (sudo on prod) → 0 on web-1; alice (ssh on dev) is refused on db-1.
    let oscar_key = cert(&oscar, "env=prod")?;
    let o = oscar.ssh("oscar", web, "sudo -n id -u")?.ok()?;
    ensure!(o.out() == "0", "oscar's sudo on web-1: {o}");
    let alice_key = cert(&alice, "env=dev")?;
    let o = alice.ssh("alice", db, "sudo -n id -u")?;
    ensure!(
        !o.success() && o.stdout.trim().is_empty(),
        "alice got sudo on db-1: {o}"
    );
    // sudoers refused her before PAM ran (no sudo rule for her): sudo's audit plugin
    // records it all the same, with her command and her session's key ID (issue 17).
    let refused = wait_for(
        "alice's refused sudo in db-1's trail",
        Duration::from_secs(20),
        || {
            Ok(trail(&fleet, "db-1")?
                .into_iter()
                .find(|r| kind(r) == "sudo" && ev(r, "user") == "alice"))
        },
    )?;
    let e = &refused["event"];
    ensure!(
        e["allowed"] == false
            && e["command"] == "id -u"
            && e["reason"].as_str().is_some_and(|r| r.contains("sudoers"))
            && e["key_id"] == alice_key.as_str(),
        "alice's refused sudo: {e}"
    );
    let sudoers = web.exec(&["cat", "/etc/sudoers.d/smith"])?.ok()?;
    ensure!(sudoers.stdout.contains("%smith-sudo"), "{sudoers}");
    let members = web.exec(&["getent", "group", "smith-sudo"])?.ok()?;
    ensure!(
        members.out().ends_with(":oscar"),
        "smith-sudo members on web-1: {members}"
    );

    // The CA's trail for web-1: session open, the sudo with its command line and key
    // ID, session close, in this order.
    let records = wait_for(
        "web-1's session close at the CA",
        Duration::from_secs(15),
        || {
            let r = trail(&fleet, "web-1")?;
            let closed = r.iter().any(|r| {
                kind(r) == "session_close"
                    && ev(r, "user") == "oscar"
                    && ev(r, "key_id") == oscar_key.as_str()
            });
            Ok(closed.then_some(r))
        },
    )?;
    let pos = |pred: &dyn Fn(&Value) -> bool| records.iter().position(pred);
    let open = pos(&|r| {
        kind(r) == "session_open"
            && ev(r, "user") == "oscar"
            && ev(r, "key_id") == oscar_key.as_str()
    })
    .context("no session open for oscar with his key ID")?;
    let sudo = pos(&|r| {
        kind(r) == "sudo" && ev(r, "user") == "oscar" && ev(r, "command") == "/usr/bin/id -u"
    })
    .context("no sudo record with command `/usr/bin/id -u`")?;
    let close = pos(&|r| {
        kind(r) == "session_close"
            && ev(r, "user") == "oscar"
            && ev(r, "key_id") == oscar_key.as_str()
    })
    .context("no session close")?;
    ensure!(
        open < sudo && sudo < close,
        "trail out of order: open {open}, sudo {sudo}, close {close}"
    );
    let s = &records[sudo]["event"];
    ensure!(
        s["allowed"] == true && s["target"] == "root",
        "sudo record: {s}"
    );
    ensure!(
        s["key_id"] == oscar_key.as_str(),
        "sudo record without the session's key ID: {s}"
    );
    ensure!(
        !s["tty"].is_null() && !s["cwd"].as_str().unwrap_or("").is_empty(),
        "sudo record lacks cwd/tty: {s}"
    );
    ensure!(
        records[close]["event"]["duration_secs"].is_u64(),
        "session close without a duration: {}",
        records[close]
    );
    // Issuance decisions are in the same trail (the CA's own chain).
    let ca_chain = trail(&fleet, "@ca")?;
    ensure!(
        ca_chain
            .iter()
            .any(|r| kind(r) == "cert_decision" && ev(r, "key_id") == oscar_key.as_str()),
        "oscar's issuance is not in the @ca chain"
    );
    fleet.admin_ok(&["audit", "verify"])?;

    // Removing oscar from ops: within 5 s his sudo fails, while he can still log in.
    fleet.admin_ok(&["group", "remove-member", "ops", "oscar"])?;
    let t = Instant::now();
    wait_for("oscar's sudo to be refused", Duration::from_secs(5), || {
        let o = oscar.ssh("oscar", web, "sudo -n id -u")?;
        Ok((!o.success()).then_some(()))
    })?;
    eprintln!("oscar's sudo refused {:?} after remove-member", t.elapsed());
    oscar
        .ssh("oscar", web, "true")?
        .ok()
        .context("oscar should still log in (prodssh)")?;
    let members = web.exec(&["getent", "group", "smith-sudo"])?.ok()?;
    ensure!(
        !members.out().contains("oscar"),
        "oscar still in smith-sudo: {members}"
    );

    // root with authorized_keys shows up as out-of-band; oscar's certificate logins don't.
    let (admin_key, _) = fleet.admin_key()?;
    let ops = fleet.client("operator")?;
    ops.ssh_with("root", web, "true", &["-i", &admin_key.to_string_lossy()])?
        .ok()?;
    let findings = wait_for(
        "root's login among the out-of-band findings",
        Duration::from_secs(15),
        || {
            let o = fleet.admin_ok(&["audit", "out-of-band", "--json"])?;
            let v = json(&o)?;
            let list = v.as_array().cloned().unwrap_or_default();
            let root = list
                .iter()
                .any(|f| f["host"] == "web-1" && f["user"] == "root");
            Ok(root.then_some(list))
        },
    )?;
    ensure!(
        !findings.iter().any(|f| f["user"] == "oscar"),
        "oscar's certificate login flagged as out-of-band: {findings:?}"
    );
    Ok(())
}

/// `curl` inside a host with its mTLS identity.
fn host_post(
    fleet: &Fleet,
    host: &str,
    path: &str,
    body_file: &str,
) -> Result<smith_tests::Outcome> {
    let url = format!("{}{path}", fleet.ca().url);
    fleet.host(host).exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        "/etc/smith/ca.crt",
        "--cert",
        "/etc/smith/host.crt",
        "--key",
        "/etc/smith/host.key",
        "-H",
        "content-type: application/json",
        "--data-binary",
        &format!("@{body_file}"),
        "-w",
        "\n%{http_code}",
        &url,
    ])
}

fn spool_lines(fleet: &Fleet, host: &str) -> Result<Vec<String>> {
    let dir = fleet.host(host).dir.join("var.upper/lib/smith/spool");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for f in files {
        lines.extend(std::fs::read_to_string(f)?.lines().map(str::to_string));
    }
    Ok(lines)
}

#[test]
fn the_trail_survives_outages_and_crashes_and_refuses_tampering_and_replays() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    let mut fleet = audit_fleet("audit-outage")?;
    let oscar = fleet.engineer("oscar")?;
    cert(&oscar, "env=prod")?;
    oscar.ssh("oscar", fleet.host("web-1"), "true")?.ok()?;

    // CA down: 50 sudo commands on web-1 keep working.
    fleet.stop_ca();
    let o = oscar
        .ssh(
            "oscar",
            fleet.host("web-1"),
            "for i in $(seq 1 50); do sudo -n echo n$i >/dev/null || exit 1; done; echo done",
        )?
        .ok()?;
    ensure!(o.out() == "done", "{o}");
    // Keep a copy of what is spooled now, to replay later.
    let queued: Vec<Value> = spool_lines(&fleet, "web-1")?
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    ensure!(
        queued.len() >= 50,
        "only {} records spooled while the CA was down",
        queued.len()
    );

    // The CA returns: all 50 arrive, in order, chain intact.
    fleet.restart_ca()?;
    let want: Vec<String> = (1..=50).map(|i| format!("/usr/bin/echo n{i}")).collect();
    wait_for(
        "the 50 sudo records at the CA",
        Duration::from_secs(30),
        || Ok((sudo_commands(&trail(&fleet, "web-1")?, "/usr/bin/echo n") == want).then_some(())),
    )?;
    fleet.admin_ok(&["audit", "verify"])?;

    // hostd killed during uploads: nothing lost or duplicated.
    fleet.stop_ca();
    let o = oscar
        .ssh(
            "oscar",
            fleet.host("web-1"),
            "for i in $(seq 1 150); do sudo -n echo m$i >/dev/null || exit 1; done; echo done",
        )?
        .ok()?;
    ensure!(o.out() == "done", "{o}");
    fleet.restart_ca()?;
    for delay in [30u64, 80, 150, 250] {
        std::thread::sleep(Duration::from_millis(delay));
        let h = fleet.host_mut("web-1");
        h.kill_hostd();
        h.start_hostd()?;
    }
    let want: Vec<String> = (1..=150).map(|i| format!("/usr/bin/echo m{i}")).collect();
    wait_for(
        "the 150 sudo records, once each, in order",
        Duration::from_secs(40),
        || Ok((sudo_commands(&trail(&fleet, "web-1")?, "/usr/bin/echo m") == want).then_some(())),
    )?;
    fleet.admin_ok(&["audit", "verify"])?;

    // hostd frozen while a session with a sudo runs: pam_smith's Ack for the session
    // open never comes within its budget, so it is also left as a pending file, and
    // the events after it (the sudo) are queued without asking (the quiet file); hostd,
    // thawed, reads the socket request it had not answered and the pending copies. Each
    // event is in the trail once (the close may be sent after the thaw).
    let pid = fleet.host("web-1").hostd_pid()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
    ensure!(comm.trim() == "smith-hostd", "pid {pid} is {comm}");
    let before = trail(&fleet, "web-1")?.len();
    let log_path = fleet.host("web-1").dir.join("hostd.log");
    let log_before = std::fs::metadata(&log_path)?.len() as usize;
    let repeats_logged = || -> Result<usize> {
        let log = std::fs::read(&log_path)?;
        let after = String::from_utf8_lossy(log.get(log_before..).unwrap_or_default());
        Ok(after.matches("not recorded twice").count())
    };
    // The restarts above may have left pam_smith's quiet file (events queued without
    // asking hostd for 5 s): without it, the session open is asked over the socket
    // first, so that both copies exist.
    fleet
        .host("web-1")
        .exec(&["rm", "-f", "/run/smith/hostd-quiet"])?
        .ok()?;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let o = oscar.ssh("oscar", fleet.host("web-1"), "sudo -n echo frozen");
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    o?.ok()?;
    let pending = fleet.host("web-1").dir.join("var.upper/lib/smith/pending");
    let pending_left = || {
        std::fs::read_dir(&pending)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".evt"))
                    .count()
            })
            .unwrap_or(0)
    };
    // Every record since the freeze is of that session (hostd thawed may take the
    // requests in any order). `Some` once each event is in once and both copies of the
    // open have reached hostd; an error as soon as anything is in twice.
    let count = |records: &[Value], k: &str| records.iter().filter(|r| kind(r) == k).count();
    let settled = || -> Result<Option<()>> {
        // In this order: no pending file left, so all are spooled; nothing left
        // unacknowledged, so all are at the CA; then the CA's trail.
        if pending_left() > 0 {
            return Ok(None);
        }
        let st = json(
            &fleet
                .host("web-1")
                .exec(&["smith-host", "status", "--json"])?,
        )?;
        if st["audit"]["pending"].as_u64() != Some(0) {
            return Ok(None);
        }
        let since = trail(&fleet, "web-1")?.split_off(before);
        let sudo = sudo_commands(&since, "/usr/bin/echo frozen");
        let (opens, closes) = (
            count(&since, "session_open"),
            count(&since, "session_close"),
        );
        ensure!(
            sudo.len() <= 1 && opens <= 1 && closes <= 1,
            "recorded twice: sudo {sudo:?}, {opens} session opens, {closes} closes"
        );
        let done = sudo.len() == 1 && opens == 1 && closes == 1 && repeats_logged()? >= 1;
        Ok(done.then_some(()))
    };
    wait_for(
        "the frozen session once at the CA, both copies of its events taken",
        Duration::from_secs(30),
        settled,
    )?;
    // A copy sent just before the thaw is picked up within one pending scan (3 s).
    std::thread::sleep(Duration::from_secs(4));
    ensure!(
        settled()?.is_some(),
        "the frozen session's records changed after settling"
    );
    fleet.admin_ok(&["audit", "verify"])?;

    // Replaying an old batch is rejected and reported, and stores nothing twice.
    let batch = serde_json::json!({ "records": queued.iter().take(5).map(|r| serde_json::json!({
        "seq": r["seq"], "prev_hash": r["prev_hash"], "hash": r["hash"], "event": r["event"],
    })).collect::<Vec<_>>() });
    let batch_file = fleet.host("web-1").dir.join("tmp/replay.json");
    std::fs::write(&batch_file, serde_json::to_vec(&batch)?)?;
    let before = trail(&fleet, "web-1")?.len();
    let o = host_post(&fleet, "web-1", "/v1/host/audit", "/tmp/replay.json")?;
    ensure!(
        o.out().ends_with("409") && o.stdout.contains("audit_replay"),
        "replay not refused: {o}"
    );
    ensure!(
        trail(&fleet, "web-1")?.len() == before,
        "the replay stored records"
    );

    // One byte edited in a spooled record before upload: rejected and reported.
    fleet.stop_ca();
    oscar
        .ssh("oscar", fleet.host("web-1"), "sudo -n echo tamper-me")?
        .ok()?;
    let dir = fleet.host("web-1").dir.join("var.upper/lib/smith/spool");
    let mut edited = false;
    for e in std::fs::read_dir(&dir)? {
        let p = e?.path();
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        if text.contains("echo tamper-me") {
            std::fs::write(&p, text.replacen("echo tamper-me", "echo tamper-ne", 1))?;
            edited = true;
        }
    }
    ensure!(edited, "the sudo record never reached web-1's spool");
    fleet.restart_ca()?;
    let rejections = wait_for(
        "the CA to reject the altered record",
        Duration::from_secs(30),
        || {
            let v = json(&fleet.admin_ok(&["audit", "rejections", "--json"])?)?;
            let list = v.as_array().cloned().unwrap_or_default();
            let hit = list
                .iter()
                .any(|r| r["host"] == "web-1" && r["code"] == "audit_chain_broken");
            Ok(hit.then_some(list))
        },
    )?;
    ensure!(
        rejections
            .iter()
            .any(|r| r["host"] == "web-1" && r["code"] == "audit_replay"),
        "the replay is not among the reported rejections: {rejections:?}"
    );
    ensure!(
        sudo_commands(&trail(&fleet, "web-1")?, "echo tamper").is_empty(),
        "the altered record was stored"
    );
    let status = fleet.host("web-1").exec(&["smith-host", "status"])?;
    ensure!(
        status.stdout.to_lowercase().contains("reject"),
        "smith-host status does not report the rejected upload: {status}"
    );

    // A tampered CA database: the offline verifier names the record.
    let data_dir = fleet.ca().data_dir.clone();
    fleet.stop_ca();
    let db = data_dir.join("ca.db");
    let script = format!(
        r#"import sqlite3
c = sqlite3.connect({db:?})
c.execute("DROP TRIGGER audit_records_no_update")
c.execute("UPDATE audit_records SET event = replace(event, 'echo n7', 'echo n8') WHERE host = ? AND event LIKE ?", ("web-1", '%echo n7"%'))
print(c.total_changes)
c.commit()
"#,
        db = db.to_string_lossy()
    );
    let mut py = Command::new("python3");
    py.args(["-c", &script]);
    let o = outcome(py, Duration::from_secs(30))?.ok()?;
    ensure!(o.out() == "1", "tampering changed {} rows", o.out());
    let mut verify = Command::new(fleet.bins.path("smith-ca"));
    verify
        .args(["audit", "verify", "--data-dir"])
        .arg(&data_dir);
    let o = outcome(verify, Duration::from_secs(30))?.failed()?;
    let text = format!("{}{}", o.stdout, o.stderr);
    ensure!(text.contains("web-1"), "verify does not name the host: {o}");
    Ok(())
}
