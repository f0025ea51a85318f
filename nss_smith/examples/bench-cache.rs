//! Writes the NSS benchmark data set (the shape of `shared/bench/nss/gen-users.py`) as a
//! Smith cache file, plus `names.txt` for `nssbench`:
//!
//! ```text
//! cargo run --release -p nss_smith --example bench-cache -- OUTDIR [NUSERS] [NGROUPS] [SEED]
//! ```
//!
//! Users `u00000`…, uid 200000+i with their private group (gid = uid, Smith's model);
//! groups `g0000`…, gid 300000+j, 50 distinct members each (deterministic), which become
//! the members' supplementary groups. Output: `OUTDIR/nss.cache` (mode 0644) and
//! `OUTDIR/names.txt` ("name uid gid" per user).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a measurement tool, not shipped

use smith_proto::cache::{build, CacheContents, CacheGroup, CacheUser};
use smith_proto::Level;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else {
        eprintln!("usage: bench-cache OUTDIR [NUSERS=10000] [NGROUPS=1000] [SEED=42]");
        std::process::exit(2);
    };
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (nusers, ngroups, mut seed) = (num(1, 10_000) as u32, num(2, 1_000) as u32, num(3, 42));
    let mut rng = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut users: Vec<CacheUser> = (0..nusers)
        .map(|i| CacheUser {
            name: format!("u{i:05}"),
            uid: 200_000 + i,
            gid: 200_000 + i,
            gecos: format!("Test user {}", 200_000 + i),
            dir: format!("/home/u{i:05}"),
            shell: "/bin/bash".into(),
            level: Level::Ssh,
            gids: Vec::new(),
        })
        .collect();
    let mut groups = Vec::new();
    for j in 0..ngroups {
        let mut members = std::collections::BTreeSet::new();
        while members.len() < 50.min(nusers as usize) {
            members.insert((rng() % nusers as u64) as usize);
        }
        for &m in &members {
            users[m].gids.push(300_000 + j);
        }
        groups.push(CacheGroup {
            name: format!("g{j:04}"),
            gid: 300_000 + j,
            members: members.iter().map(|&m| users[m].name.clone()).collect(),
        });
    }
    let c = CacheContents {
        host_name: "bench".into(),
        host_tags: "env=bench".into(),
        generation: 1,
        snapshot_version: 1,
        written_at: 0,
        sudo_gid: 0,
        users,
        groups,
    };
    let bytes = build(&c).expect("valid contents");
    std::fs::create_dir_all(out).expect("create OUTDIR");
    let path = std::path::Path::new(out).join("nss.cache");
    std::fs::write(&path, &bytes).expect("write cache");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut names = std::fs::File::create(std::path::Path::new(out).join("names.txt")).unwrap();
    for u in &c.users {
        writeln!(names, "{} {} {}", u.name, u.uid, u.gid).unwrap();
    }
    eprintln!(
        "{} ({} bytes), {} users, {} groups",
        path.display(),
        bytes.len(),
        nusers,
        ngroups
    );
}
