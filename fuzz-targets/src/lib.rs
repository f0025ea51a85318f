//! The bodies of Smith's fuzz targets: one function per parser that meets hostile input,
//! each walking everything the parser hands back the way its real caller would. Any
//! input must return; a panic, an abort or a hang is a bug (issue 18).
//!
//! Owns: [`TARGETS`] (name → body), the names `cargo xtask fuzz` and the corpus
//! directories (`fuzz/corpus/<name>/`) use. Must never: touch the machine or keep state
//! between calls.

use smith_proto::cache::CacheView;

/// Bounds the per-input work of loops driven by the input.
const MAX_WALK: u32 = 4096;

/// The NSS cache file as nss_smith and pam_smith read it: parse, verify, every record,
/// every lookup path, each with the names and ids the file itself holds.
pub fn nss_cache(data: &[u8]) {
    let Ok(v) = CacheView::parse(data) else {
        return;
    };
    let _ = v.verify_body();
    let _ = (v.host_name(), v.host_tags(), v.generation(), v.sudo_gid());
    for i in 0..v.n_users().min(MAX_WALK) {
        if let Ok(u) = v.user(i) {
            let _ = v.user_by_name(u.name);
            let _ = v.user_by_uid(u.uid);
            let _ = v.private_group(i);
            for g in u.gids.iter() {
                let _ = v.group_by_gid(g);
            }
        }
    }
    for i in 0..v.n_groups().min(MAX_WALK) {
        if let Ok(g) = v.group(i) {
            let _ = v.group_by_name(g.name);
            let _ = v.group_by_gid(g.gid);
            for m in g.members.iter().take(MAX_WALK as usize) {
                let _ = m;
            }
        }
    }
    for i in 0..v.n_groups_with_private().min(u64::from(MAX_WALK)) {
        let _ = v.group_enum(i);
    }
    let _ = v.user_by_name(b"root");
    let _ = v.user_by_uid(0);
}

/// hostd's local socket: requests (hostd's side), responses (the modules' side), and the
/// pending-event files.
pub fn wire(data: &[u8]) {
    use smith_proto::wire::{decode_event, pending_file_id, Request, Response};
    if let Ok(r) = Request::decode(data) {
        // What decodes must encode back to something that decodes the same.
        assert_eq!(Request::decode(&r.encode()).ok(), Some(r));
    }
    let _ = Response::decode(data);
    let _ = decode_event(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = pending_file_id(s);
    }
}

/// `SSH_AUTH_INFO_0` (pam_smith, in sshd) and the certificates in it, checked against
/// principals as the session check does.
pub fn auth_info(data: &[u8]) {
    let _ = smith_proto::sshcert::parse_cert(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(cert) = smith_proto::sshcert::cert_from_auth_info(text) {
        let listed: Vec<String> = cert.principals.iter().take(8).cloned().collect();
        let _ = smith_proto::policy::check_certificate(&cert, &listed, 0);
        let _ = cert.scope();
        let _ = smith_proto::grants::grants_of(&cert.principals, "alice").count();
    }
    let _ = smith_proto::sshcert::parse_cert_base64(text);
}

/// The KRL a CA sends, as hostd checks it before installing it.
pub fn krl(data: &[u8]) {
    let _ = smith_hostd::trust::validate_krl(data);
}

/// sshd's log lines (syslog files and journal messages) as hostd turns them into events.
pub fn sshd_log(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut p = smith_hostd::sshdlog::Parser::new();
    for line in text.lines().take(MAX_WALK as usize) {
        let _ = p.parse_line(line, 0);
    }
}

/// A SCIM `filter=` from an identity provider.
pub fn scim_filter(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ =
            smith_ca::scim::filter::parse_filter(text, &["userName", "displayName", "externalId"]);
    }
}

/// A host's audit upload: the JSON body, then the chain check the CA runs on it.
pub fn audit_upload(data: &[u8]) {
    let Ok(batch) = serde_json::from_slice::<smith_api::chain::AuditBatch>(data) else {
        return;
    };
    let _ = smith_ca::audit::check_batch((0, [0; 32]), "web-1", &batch.records);
    for r in batch.records.iter().take(MAX_WALK as usize) {
        let _ = smith_ca::audit::derived(&r.event);
        let _ = serde_json::from_str::<smith_proto::event::HostEvent>(&r.event);
    }
}

/// The CA's JSON request bodies, as its HTTP layer parses them.
pub fn ca_requests(data: &[u8]) {
    use smith_api as a;
    let _ = serde_json::from_slice::<a::CertRequest>(data);
    let _ = serde_json::from_slice::<a::EnrollRequest>(data);
    let _ = serde_json::from_slice::<a::RenewRequest>(data);
    let _ = serde_json::from_slice::<a::GrantAdd>(data);
    let _ = serde_json::from_slice::<a::UserAdd>(data);
    let _ = serde_json::from_slice::<a::GroupAdd>(data);
    let _ = serde_json::from_slice::<a::TokenRequest>(data);
    let _ = serde_json::from_slice::<a::HostTokenRequest>(data);
    let _ = serde_json::from_slice::<a::RevokeRequest>(data);
    if let Ok(g) = serde_json::from_slice::<a::GrantAdd>(data) {
        for c in g.sudo_commands.iter().take(64) {
            if let Ok(c) = smith_proto::sudorules::SudoCommand::parse(c) {
                // A command that parses renders as it parsed.
                assert_eq!(
                    smith_proto::sudorules::SudoCommand::parse(&c.to_string()).ok(),
                    Some(c)
                );
            }
        }
    }
}

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target: its name (corpus directory, `cargo fuzz` target) and body.
pub const TARGETS: &[(&str, Body)] = &[
    ("nss_cache", nss_cache),
    ("wire", wire),
    ("auth_info", auth_info),
    ("krl", krl),
    ("sshd_log", sshd_log),
    ("scim_filter", scim_filter),
    ("audit_upload", audit_upload),
    ("ca_requests", ca_requests),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every input the fuzzer ever kept (`fuzz/corpus/<target>/`), through its target:
    /// what crashed once stays fixed. Also every target on a few inputs of its own.
    #[test]
    fn the_corpus_replays_without_a_crash() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut replayed = 0;
        for (name, body) in TARGETS {
            for seed in [&b""[..], b"\0", b"{}", b"[]", &[0xff; 64]] {
                body(seed);
            }
            let dir = root.join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                panic!("no corpus for target {name} in {}", dir.display());
            };
            for e in entries {
                let path = e.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                body(&data);
                replayed += 1;
            }
        }
        assert!(replayed >= TARGETS.len(), "only {replayed} corpus inputs");
        eprintln!("replayed {replayed} corpus inputs");
    }

    /// cargo-fuzz's crate and `cargo xtask fuzz` know exactly these targets.
    #[test]
    fn every_target_is_a_fuzz_binary_and_an_xtask_target() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
        let xtask = std::fs::read_to_string(root.join("xtask/src/fuzz.rs")).unwrap();
        let bins = manifest.matches("[[bin]]").count();
        assert_eq!(bins, TARGETS.len(), "fuzz/Cargo.toml has {bins} binaries");
        for (name, _) in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{name}\"")),
                "{name} in fuzz/Cargo.toml"
            );
            assert!(
                root.join(format!("fuzz/fuzz_targets/{name}.rs")).is_file(),
                "{name}.rs"
            );
            assert!(
                xtask.contains(&format!("\"{name}\",")),
                "{name} in xtask/src/fuzz.rs"
            );
        }
    }

    /// Writes the starting corpus (valid inputs of each kind) into `fuzz/corpus/`:
    /// `cargo test -p smith-fuzz-targets -- --ignored write_seeds`. Run once; the
    /// fuzzer grows the corpus from there.
    #[test]
    #[ignore]
    fn write_seeds() {
        use smith_proto::cache::{build, CacheContents, CacheGroup, CacheUser};
        use smith_proto::wire::Request;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let put = |target: &str, name: &str, data: &[u8]| {
            let d = root.join(target);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("seed-{name}")), data).unwrap();
        };
        let user = |name: &str, uid: u32, gids: Vec<u32>| CacheUser {
            name: name.into(),
            uid,
            gid: uid,
            gecos: "A B".into(),
            dir: format!("/home/{name}"),
            shell: "/bin/bash".into(),
            level: smith_proto::Level::Sudo,
            gids,
        };
        let cache = build(&CacheContents {
            host_name: "web-1".into(),
            host_tags: "env=prod".into(),
            generation: 1,
            snapshot_version: 3,
            written_at: 1,
            sudo_gid: 2_001_000_000,
            users: vec![
                user("alice", 2_001_000_001, vec![2_001_000_000]),
                user("bob", 2_001_000_002, vec![]),
            ],
            groups: vec![CacheGroup {
                name: "smith-sudo".into(),
                gid: 2_001_000_000,
                members: vec!["alice".into()],
            }],
        })
        .unwrap();
        put("nss_cache", "two-users", &cache);
        put("wire", "ping", &Request::Ping.encode());
        put(
            "wire",
            "user-name",
            &Request::UserByName("alice".into()).encode(),
        );
        put("wire", "event", &smith_proto::wire::encode_event(&event()));
        // A real user certificate and KRL, from ssh-keygen.
        let tmp = std::env::temp_dir().join(format!("smith-seeds-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let sh = |script: &str| {
            let o = std::process::Command::new("sh")
                .arg("-ec")
                .arg(script)
                .current_dir(&tmp)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        sh("ssh-keygen -q -t ecdsa -N '' -f ca && ssh-keygen -q -t ed25519 -N '' -f user && \
            ssh-keygen -q -s ca -I smith:alice:1 -n alice,smith-grant:1:ssh:alice -z 7 -V +1h user.pub && \
            printf 'serial: 7\n' > spec && ssh-keygen -q -k -f krl -s ca.pub spec && \
            ssh-keygen -q -k -f empty.krl");
        let cert = std::fs::read_to_string(tmp.join("user-cert.pub")).unwrap();
        put(
            "auth_info",
            "cert-line",
            format!("publickey {cert}").as_bytes(),
        );
        let blob = cert.split_whitespace().nth(1).unwrap();
        put("auth_info", "cert-base64", blob.as_bytes());
        put(
            "krl",
            "one-serial",
            &std::fs::read(tmp.join("krl")).unwrap(),
        );
        put(
            "krl",
            "empty",
            &std::fs::read(tmp.join("empty.krl")).unwrap(),
        );
        let _ = std::fs::remove_dir_all(&tmp);
        put(
            "sshd_log",
            "syslog",
            b"2024-05-01T10:00:00.123456+00:00 web-1 sshd[812]: Accepted publickey for oscar from 10.1.2.3 port 5022 ssh2: ED25519-CERT SHA256:abc ID smith:oscar:9f (serial 7) CA ED25519 SHA256:def\n\
              2024-05-01T10:00:01.000000+00:00 web-1 sshd[813]: Failed password for root from 127.0.0.1 port 36992 ssh2\n",
        );
        put(
            "sshd_log",
            "journal",
            b"Accepted publickey for alice from 10.0.0.1 port 1 ssh2: ED25519 SHA256:x\n",
        );
        put("scim_filter", "eq", br#"userName eq "alice""#);
        put("scim_filter", "external", br#"externalId eq "a b \"c\"""#);
        let e = serde_json::to_string(&smith_proto::event::HostEvent::Sudo(match event() {
            smith_proto::event::HostEvent::Sudo(s) => s,
            _ => unreachable!(),
        }))
        .unwrap();
        let r1 = smith_api::chain::next_record("web-1", 0, &[0; 32], e.clone());
        let h1 = smith_api::chain::parse_hash(&r1.hash).unwrap();
        let r2 = smith_api::chain::next_record("web-1", r1.seq, &h1, e);
        let batch = smith_api::chain::AuditBatch {
            records: vec![r1, r2],
        };
        put("audit_upload", "two", &serde_json::to_vec(&batch).unwrap());
        put(
            "ca_requests",
            "grant",
            br#"{"group":"ops","selector":"env=prod","level":"sudo","max_ttl_secs":3600,"sudo_commands":["/usr/bin/systemctl restart nginx"],"sudo_as":["postgres"]}"#,
        );
        put(
            "ca_requests",
            "cert",
            br#"{"public_key":"ssh-ed25519 AAAA","ttl_secs":3600,"scope":"env=prod","reason":"x"}"#,
        );
        put(
            "ca_requests",
            "user",
            br#"{"name":"alice","groups":["dev"]}"#,
        );
    }

    fn event() -> smith_proto::event::HostEvent {
        smith_proto::event::HostEvent::Sudo(smith_proto::event::SudoEvent {
            user: "alice".into(),
            target: "root".into(),
            command: "/usr/bin/id -u".into(),
            cwd: "/home/alice".into(),
            tty: "pts/0".into(),
            allowed: true,
            reason: "grant 1".into(),
            pid: 42,
            key_id: "smith:alice:1".into(),
            at_unix: 1,
        })
    }
}
