//! libnss_smith.so.2 through real glibc: `getent`, `id` and a 16-thread C program, each
//! run inside a private mount namespace (see `support`). Needs root; skips otherwise,
//! fails when `SMITH_E2E_REQUIRED=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use smith_proto::cache::{CacheContents, CacheGroup, CacheUser};
use smith_proto::Level;
use std::time::Duration;
use support::{describe, ready, stdout, Behaviour, FakeHostd, Sandbox};

fn user(name: &str, uid: u32, level: Level, gids: Vec<u32>) -> CacheUser {
    CacheUser {
        name: name.into(),
        uid,
        gid: uid,
        gecos: String::new(),
        dir: format!("/home/{name}"),
        shell: "/bin/bash".into(),
        level,
        gids,
    }
}

/// alice (ssh, in dev), oscar (sudo, in ops and smith-sudo), `localbob` (also a local
/// user: a shadowing attempt), and 300 users with long names in `big` (so glibc has to
/// grow its buffer several times for `getent group big`).
fn contents() -> CacheContents {
    let mut alice = user("alice", 200_001, Level::Ssh, vec![200_010]);
    alice.gecos = "Alice Liddell".into();
    let mut users = vec![
        alice,
        user("oscar", 200_002, Level::Sudo, vec![200_011, 200_000]),
        user("localbob", 200_050, Level::Ssh, vec![]),
    ];
    let mut big = Vec::new();
    for i in 0..300u32 {
        let name = format!("member-with-a-long-name-{i:04}");
        users.push(user(&name, 201_000 + i, Level::Ssh, vec![200_020]));
        big.push(name);
    }
    CacheContents {
        host_name: "web-1".into(),
        host_tags: "env=prod,role=web".into(),
        generation: 1,
        snapshot_version: 1,
        written_at: 1_700_000_000,
        sudo_gid: 200_000,
        users,
        groups: vec![
            CacheGroup {
                name: "dev".into(),
                gid: 200_010,
                members: vec!["alice".into()],
            },
            CacheGroup {
                name: "ops".into(),
                gid: 200_011,
                members: vec!["oscar".into()],
            },
            CacheGroup {
                name: "smith-sudo".into(),
                gid: 200_000,
                members: vec!["oscar".into()],
            },
            CacheGroup {
                name: "big".into(),
                gid: 200_020,
                members: big,
            },
        ],
    }
}

fn sandbox(label: &str) -> Sandbox {
    let sb = Sandbox::new(label);
    // A local account with the same name as a Smith user: files must win.
    sb.append(
        "etc/passwd",
        "localbob:x:1500:1500:local bob:/home/localbob:/bin/sh\n",
    );
    sb.append("etc/group", "localbob:x:1500:\n");
    sb
}

/// Runs one shell line per check and returns stdout + exit code of each, in one
/// namespace (so the whole list costs one setup).
fn checks(sb: &Sandbox, cmds: &[&str]) -> Vec<(String, i32)> {
    let mut script = String::new();
    for (i, c) in cmds.iter().enumerate() {
        script.push_str(&format!(
            "set +e; out=$({c} 2>&1); rc=$?; set -e; printf '%s\\n' \"@@{i} $rc\" \"$out\"\n"
        ));
    }
    let o = sb.run(&script);
    assert!(o.status.success(), "{}", describe(&o));
    let text = stdout(&o);
    let mut results = Vec::new();
    let mut cur: Option<(usize, i32, Vec<&str>)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("@@") {
            if let Some((i, rc, lines)) = cur.take() {
                assert_eq!(i, results.len());
                results.push((lines.join("\n"), rc));
            }
            let mut it = rest.split(' ');
            let i: usize = it.next().unwrap().parse().unwrap();
            let rc: i32 = it.next().unwrap().parse().unwrap();
            cur = Some((i, rc, Vec::new()));
        } else if let Some((_, _, lines)) = cur.as_mut() {
            lines.push(line);
        }
    }
    if let Some((_, rc, lines)) = cur {
        results.push((lines.join("\n"), rc));
    }
    assert_eq!(results.len(), cmds.len(), "{text}");
    results
}

#[test]
fn lookups_through_glibc() {
    if !ready(&[]) {
        return;
    }
    let sb = sandbox("nss-lookups");
    sb.write_cache(&contents());
    let cmds = [
        "getent passwd alice",
        "getent passwd 200001",
        "getent group dev",
        "getent group alice",
        "getent group 200002",
        "getent group smith-sudo",
        "id alice",
        "id oscar",
        "getent passwd nobody-here",
        "getent passwd 299999",
        "getent passwd localbob",
        "getent passwd root",
        "getent passwd Alice",
        "getent passwd 'a:b'",
        "getent passwd aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "getent group 0",
        "getent group big | tr , '\\n' | wc -l",
        "getent passwd | cut -d: -f1 | sort | uniq -d | wc -l",
        "getent passwd | grep -c -e '^alice:' -e '^oscar:' -e '^root:'",
        "getent passwd | grep -c '^member-with-a-long-name-'",
        "getent group | grep -c -e '^dev:' -e '^ops:' -e '^smith-sudo:' -e '^big:' -e '^alice:'",
        "getent initgroups oscar",
    ];
    let r = checks(&sb, &cmds);
    let ok = |i: usize, want: &str| {
        assert_eq!(r[i], (want.to_string(), 0), "`{}`", cmds[i]);
    };
    ok(
        0,
        "alice:*:200001:200001:Alice Liddell:/home/alice:/bin/bash",
    );
    ok(
        1,
        "alice:*:200001:200001:Alice Liddell:/home/alice:/bin/bash",
    );
    ok(2, "dev:*:200010:alice");
    ok(3, "alice:*:200001:");
    ok(4, "oscar:*:200002:");
    ok(5, "smith-sudo:*:200000:oscar");
    ok(
        6,
        "uid=200001(alice) gid=200001(alice) groups=200001(alice),200010(dev)",
    );
    assert!(
        r[7].0
            .starts_with("uid=200002(oscar) gid=200002(oscar) groups=200002(oscar),")
            && r[7].0.contains("200011(ops)")
            && r[7].0.contains("200000(smith-sudo)"),
        "{:?}",
        r[7]
    );
    // Misses: getent exits 2 ("not found") and prints nothing.
    for i in [8, 9, 12, 13, 14] {
        assert_eq!(r[i], (String::new(), 2), "`{}`", cmds[i]);
    }
    ok(10, "localbob:x:1500:1500:local bob:/home/localbob:/bin/sh");
    assert!(r[11].0.starts_with("root:x:0:0:"), "{:?}", r[11]);
    assert!(
        r[15].0.starts_with("root:x:0:"),
        "gid 0 stays the local root group"
    );
    ok(16, "300"); // every member of the big group, through glibc's ERANGE retries
    ok(17, "1"); // enumeration: the only duplicate name is localbob (files + smith)
    ok(18, "3");
    ok(19, "300");
    ok(20, "5");
    assert!(
        r[21].0.starts_with("oscar") && r[21].0.contains("200011"),
        "{:?}",
        r[21]
    );
}

#[test]
fn broken_or_missing_cache_is_unavailable_not_a_crash() {
    if !ready(&[]) {
        return;
    }
    let sb = sandbox("nss-broken");
    let bytes = smith_proto::cache::build(&contents()).unwrap();
    let probe = [
        "getent passwd alice",
        "getent group dev",
        "id alice",
        "getent passwd | grep -c '^alice:'",
    ];
    let expect_nothing = |what: &str| {
        let r = checks(&sb, &probe);
        assert_eq!(r[0], (String::new(), 2), "{what}: getent passwd");
        assert_eq!(r[1], (String::new(), 2), "{what}: getent group");
        assert_eq!(r[2].1, 1, "{what}: id fails: {:?}", r[2]);
        assert_eq!(r[3].0, "0", "{what}: not enumerated");
    };
    // Missing (and no daemon).
    expect_nothing("missing");
    // Truncated by one byte, and to half.
    sb.write_cache_bytes(&bytes[..bytes.len() - 1]);
    expect_nothing("truncated by one byte");
    sb.write_cache_bytes(&bytes[..bytes.len() / 2]);
    expect_nothing("truncated to half");
    // Garbage of the same length, and a corrupted header.
    sb.write_cache_bytes(&vec![0x5a; bytes.len()]);
    expect_nothing("garbage");
    let mut b = bytes.clone();
    b[20] ^= 0xff;
    sb.write_cache_bytes(&b);
    expect_nothing("bad checksum");
    // A cache file writable by others is not trusted.
    sb.write_cache_bytes(&bytes);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(sb.cache_path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    expect_nothing("world-writable");
    // And the valid file again works.
    sb.write_cache_bytes(&bytes);
    let r = checks(&sb, &probe);
    assert_eq!(r[0].1, 0, "{:?}", r[0]);
}

#[test]
fn socket_fallback_when_the_cache_is_missing() {
    if !ready(&[]) {
        return;
    }
    let sb = sandbox("nss-socket");
    let hostd = FakeHostd::start(&sb.socket_path(), &contents(), Behaviour::Answer);
    let r = checks(
        &sb,
        &[
            "getent passwd alice",
            "getent passwd 200002",
            "getent group dev",
            "id alice",
            "getent passwd nobody-here",
            "getent passwd root-ish-but-missing",
        ],
    );
    assert_eq!(
        r[0],
        (
            "alice:*:200001:200001:Alice Liddell:/home/alice:/bin/bash".into(),
            0
        )
    );
    assert_eq!(r[1].1, 0, "{:?}", r[1]);
    assert!(r[1].0.starts_with("oscar:*:200002:"));
    assert_eq!(r[2], ("dev:*:200010:alice".into(), 0));
    assert_eq!(
        r[3],
        (
            "uid=200001(alice) gid=200001(alice) groups=200001(alice),200010(dev)".into(),
            0
        )
    );
    assert_eq!(r[4], (String::new(), 2), "authoritative miss from hostd");
    assert!(hostd.connections.load(std::sync::atomic::Ordering::SeqCst) > 0);

    // The recursion guard: with the bypass variable set, the socket is never used.
    let before = hostd.requests.lock().unwrap().len();
    let o = sb.run_env(
        "getent passwd alice || echo rc=$?",
        &[("SMITH_NSS_BYPASS", "1")],
    );
    assert_eq!(stdout(&o).trim(), "rc=2", "{}", describe(&o));
    assert_eq!(
        hostd.requests.lock().unwrap().len(),
        before,
        "no request with the bypass set"
    );

    // A valid cache takes precedence over the socket: no request at all.
    sb.write_cache(&contents());
    let before = hostd.requests.lock().unwrap().len();
    let r = checks(&sb, &["getent passwd alice", "getent passwd nobody-here"]);
    assert_eq!(r[0].1, 0);
    assert_eq!(r[1].1, 2);
    assert_eq!(
        hostd.requests.lock().unwrap().len(),
        before,
        "cache answers alone"
    );
}

#[test]
fn hung_daemon_is_bounded() {
    if !ready(&[]) {
        return;
    }
    let sb = sandbox("nss-hung");
    let _hostd = FakeHostd::start(&sb.socket_path(), &contents(), Behaviour::Silent);
    // Time the lookup inside the namespace (setup excluded): it must wait for the
    // daemon (not fail instantly), then give up within the budget (~150-300 ms).
    let o = sb.run(
        "set +e; t0=$(date +%s%N); getent passwd alice; rc=$?; t1=$(date +%s%N); echo \"rc=$rc ms=$(( (t1 - t0) / 1000000 ))\"",
    );
    let out = stdout(&o);
    let line = out.lines().last().unwrap_or_default();
    assert!(line.starts_with("rc=2 "), "{}", describe(&o));
    let ms: u64 = line.rsplit("ms=").next().unwrap().trim().parse().unwrap();
    assert!(
        (100..3000).contains(&ms),
        "lookup against a silent daemon took {ms} ms"
    );
}

const THREADS_C: &str = r#"
#include <pwd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#define N 16
static volatile int stop;
struct stats { long hits, misses, errors; unsigned min, max; double worst_ms; };
static struct stats st[N];

static double now_ms(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *run(void *p) {
    struct stats *s = p;
    char buf[1024];
    struct passwd pw, *res;
    s->min = ~0u;
    while (!stop) {
        double t0 = now_ms();
        int rc = getpwnam_r("alice", &pw, buf, sizeof buf, &res);
        double dt = now_ms() - t0;
        if (dt > s->worst_ms) s->worst_ms = dt;
        if (rc != 0) s->errors++;
        else if (!res) s->misses++;
        else {
            s->hits++;
            if (pw.pw_uid < s->min) s->min = pw.pw_uid;
            if (pw.pw_uid > s->max) s->max = pw.pw_uid;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    pthread_t t[N];
    for (int i = 0; i < N; i++) pthread_create(&t[i], NULL, run, &st[i]);
    /* Run until the test says stop (a file appears), at most 60 s. */
    for (int i = 0; i < 6000 && access(argv[1], F_OK) != 0; i++) usleep(10000);
    usleep(200000);
    stop = 1;
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < N; i++)
        printf("thread %d hits %ld misses %ld errors %ld min %u max %u worst_ms %.3f\n", i,
               st[i].hits, st[i].misses, st[i].errors, st[i].min, st[i].max, st[i].worst_ms);
    /* fork safety: the child resolves with the inherited mapping state. */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        struct passwd *p = getpwnam("alice");
        printf("child %u\n", p ? p->pw_uid : 0);
        fflush(stdout);
        _exit(p ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    printf("child_status %d\n", status);
    return 0;
}
"#;

#[test]
fn cache_replaced_under_16_threads() {
    if !ready(&["/usr/bin/gcc"]) {
        return;
    }
    let sb = sandbox("nss-threads");
    let src = sb.path("threads.c");
    std::fs::write(&src, THREADS_C).unwrap();
    let exe = sb.path("threads");
    let o = std::process::Command::new("gcc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "gcc: {}", describe(&o));

    let mut c = contents();
    let set_uid = |c: &mut CacheContents, uid: u32| {
        c.users[0].uid = uid;
        c.users[0].gid = uid;
    };
    set_uid(&mut c, 210_000);
    sb.write_cache(&c);
    let stop_file = sb.path("stop");
    let child = sb.spawn(&format!("exec {} {}", exe.display(), stop_file.display()));
    std::thread::sleep(Duration::from_millis(300));
    const REPLACEMENTS: u32 = 150;
    for i in 1..=REPLACEMENTS {
        set_uid(&mut c, 210_000 + i);
        c.generation = i as u64 + 1;
        sb.write_cache(&c);
        std::thread::sleep(Duration::from_millis(5));
    }
    // Time for every thread to look up on the last file (a thread may be descheduled for
    // tens of ms on a busy machine) before they stop; a reader stuck on an older file
    // still fails below.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&stop_file, "").unwrap();
    let o = child.wait_with_output().unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "no crash: {}", describe(&o));
    let mut threads = 0;
    for line in out.lines().filter(|l| l.starts_with("thread ")) {
        threads += 1;
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |k: &str| -> f64 {
            let i = f.iter().position(|x| *x == k).unwrap();
            f[i + 1].parse().unwrap()
        };
        assert!(num("hits") > 0.0, "{line}");
        assert_eq!(
            num("misses"),
            0.0,
            "a valid file was always in place: {line}"
        );
        assert_eq!(num("errors"), 0.0, "{line}");
        assert_eq!(
            num("max") as u32,
            210_000 + REPLACEMENTS,
            "switched to the last file: {line}"
        );
        assert!(num("worst_ms") < 1000.0, "never blocked 1 s: {line}");
    }
    assert_eq!(threads, 16, "{out}");
    assert!(
        out.contains(&format!("child {}", 210_000 + REPLACEMENTS)),
        "{out}"
    );
    assert!(out.contains("child_status 0"), "{out}");
}

/// Issue 14, D1: the cache truncated (`> nss.cache`) and later rewritten *in place*
/// (the same inode, as `cp backup nss.cache` or a restore tool does) under 16 threads
/// that keep resolving. Before issue 14 the module mapped the file `MAP_SHARED` and the
/// process died of SIGBUS (exit 135) at its next lookup. Now it keeps answering from its
/// own copy, then reports "unavailable" (never "no such user") once it notices the empty
/// file, and serves the restored one.
#[test]
fn cache_truncated_in_place_under_16_threads() {
    if !ready(&["/usr/bin/gcc"]) {
        return;
    }
    let sb = sandbox("nss-truncate");
    let src = sb.path("threads.c");
    std::fs::write(&src, THREADS_C).unwrap();
    let exe = sb.path("threads");
    let o = std::process::Command::new("gcc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "gcc: {}", describe(&o));
    let mut c = contents();
    c.users[0].uid = 220_000;
    c.users[0].gid = 220_000;
    sb.write_cache(&c);
    let stop_file = sb.path("stop");
    let child = sb.spawn(&format!("exec {} {}", exe.display(), stop_file.display()));
    std::thread::sleep(Duration::from_millis(300));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(sb.cache_path())
        .unwrap();
    f.set_len(0).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    c.users[0].uid = 220_001;
    c.users[0].gid = 220_001;
    c.generation += 1;
    let bytes = smith_proto::cache::build(&c).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &bytes, 0).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    std::fs::write(&stop_file, "").unwrap();
    let o = child.wait_with_output().unwrap();
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "no crash (SIGBUS is exit 135): {}",
        describe(&o)
    );
    for line in out.lines().filter(|l| l.starts_with("thread ")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |k: &str| -> f64 {
            let i = f.iter().position(|x| *x == k).unwrap();
            f[i + 1].parse().unwrap()
        };
        assert!(num("hits") > 0.0, "{line}");
        assert_eq!(num("misses"), 0.0, "never 'no such user': {line}");
        assert_eq!(
            num("max") as u32,
            220_001,
            "the restored file is served: {line}"
        );
    }
    assert!(out.contains("child 220001"), "{out}");
}

/// `nm -D --defined-only`: exactly the NSS entry points, nothing else (no Rust symbols
/// leaking into every process that resolves a user).
#[test]
fn exports_exactly_the_nss_symbols() {
    if !std::path::Path::new("/usr/bin/nm").exists() {
        assert_ne!(
            std::env::var("SMITH_E2E_REQUIRED").as_deref(),
            Ok("1"),
            "nm (binutils) missing"
        );
        eprintln!("SKIPPED: nm missing");
        return;
    }
    let so = support::built_module("libnss_smith.so");
    let o = std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    let mut syms: Vec<String> = stdout(&o)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    syms.sort();
    let mut want = vec![
        "_nss_smith_getpwnam_r",
        "_nss_smith_getpwuid_r",
        "_nss_smith_setpwent",
        "_nss_smith_getpwent_r",
        "_nss_smith_endpwent",
        "_nss_smith_getgrnam_r",
        "_nss_smith_getgrgid_r",
        "_nss_smith_setgrent",
        "_nss_smith_getgrent_r",
        "_nss_smith_endgrent",
        "_nss_smith_initgroups_dyn",
    ];
    want.sort();
    assert_eq!(syms, want);
}
