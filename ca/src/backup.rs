//! `smith-ca backup` and `smith-ca restore`: a consistent online copy of a CA, and
//! bringing one back.
//!
//! A backup is a directory (0700): the database copied consistently while the CA serves
//! (`VACUUM INTO`), the CA's keys and certificates, `ca.toml` if any, and
//! `backup.json` (when, version, epoch). A restore needs the CA stopped (it takes the data
//! directory's lock), checks that the keys match the data directory's (or brings them
//! back when they are gone), and swaps in a copy of the backup's database with a new
//! epoch, the never-repeating counters of the database it replaces carried over, and the
//! restore recorded in the `@ca` chain (see [`crate::store::sqlite::backup`]). Hosts then
//! take a full snapshot from the new epoch, whatever version they had seen, and no
//! session ends because of it.
//!
//! What was done after the backup is gone: revocations, disables, tokens. The restore
//! says so; re-apply them (`smith-ca admin changes` on a copy of the old database, or
//! your own records).
//!
//! Must never: overwrite a backup, restore under a running CA, leave a half-swapped
//! database, or mix keys of another CA with this database.

use crate::datadir::{create_new, ensure_private_dir, DataDir, KEY_FILES};
use crate::origin::Origin;
use crate::store::sqlite::backup::{self, BackupInfo, RestoreInfo};
use anyhow::Context;
use std::fs;
use std::path::Path;

const INFO: &str = "backup.json";

/// Key files of rotated CA keys in `dir` (`user_ca.<unix time>`, `host_ca.<unix time>`,
/// see `smith-ca admin ca rotate`), with their mode.
fn rotated_key_files(dir: &Path) -> anyhow::Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        let rotated = ["user_ca.", "host_ca."].iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        });
        if rotated {
            out.push((name, 0o600));
        }
    }
    out.sort();
    Ok(out)
}

/// Files a CA may lack: ca.toml, and the key files of CA keys kept in a token.
const OPTIONAL_FILES: &[&str] = &["ca.toml", "user_ca", "host_ca"];

/// `smith-ca backup --data-dir D --out DIR`.
pub fn backup(dd: &DataDir, out: &Path) -> anyhow::Result<BackupInfo> {
    if !dd.db().exists() {
        anyhow::bail!(
            "{} does not exist: not a CA data directory",
            dd.db().display()
        );
    }
    if out.exists() {
        anyhow::bail!(
            "{} exists; a backup goes to a new directory (never over another backup)",
            out.display()
        );
    }
    ensure_private_dir(out).with_context(|| format!("cannot create {}", out.display()))?;
    let result = (|| -> anyhow::Result<BackupInfo> {
        let rotated = rotated_key_files(&dd.root)?;
        let rotated = rotated.iter().map(|(n, m)| (n.as_str(), *m));
        for (name, mode) in KEY_FILES
            .iter()
            .copied()
            .chain([("ca.toml", 0o600)])
            .chain(rotated)
        {
            let from = dd.root.join(name);
            // No ca.toml, or a CA key that lives in a token (no key file).
            if OPTIONAL_FILES.contains(&name) && !from.exists() {
                continue;
            }
            let bytes =
                fs::read(&from).with_context(|| format!("cannot read {}", from.display()))?;
            create_new(&out.join(name), &bytes, mode)?;
        }
        let info = backup::backup(&dd.db(), &out.join("ca.db"), crate::authority::now())
            .context("cannot copy the database")?;
        create_new(
            &out.join(INFO),
            serde_json::to_string_pretty(&info)?.as_bytes(),
            0o600,
        )?;
        Ok(info)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(out);
    }
    result
}

/// `smith-ca restore --data-dir D --from DIR`.
pub fn restore(dd: &DataDir, from: &Path) -> anyhow::Result<RestoreInfo> {
    let info: BackupInfo =
        serde_json::from_slice(&fs::read(from.join(INFO)).with_context(|| {
            format!(
                "{} is not a backup made by `smith-ca backup`",
                from.display()
            )
        })?)
        .with_context(|| {
            format!(
                "{} is not a backup's description",
                from.join(INFO).display()
            )
        })?;
    ensure_private_dir(&dd.root)?;
    let _lock = dd.lock("restore")?;
    // Keys: the data directory's must be the backup's; missing ones come back.
    let rotated = rotated_key_files(from)?;
    let rotated = rotated.iter().map(|(n, m)| (n.as_str(), *m));
    for (name, mode) in KEY_FILES.iter().copied().chain(rotated) {
        if OPTIONAL_FILES.contains(&name) && !from.join(name).exists() {
            continue;
        }
        let theirs =
            fs::read(from.join(name)).with_context(|| format!("the backup lacks {name}"))?;
        let ours = dd.root.join(name);
        match fs::read(&ours) {
            Ok(b) if b == theirs => {}
            Ok(_) => anyhow::bail!(
                "{} differs from the backup's: the backup is of another CA (or the keys were \
                 replaced); restore into an empty data directory instead",
                ours.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_new(&ours, &theirs, mode)?;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", ours.display())),
        }
    }
    let work = dd.root.join("ca.db.restoring");
    let _ = fs::remove_file(&work);
    fs::copy(from.join("ca.db"), &work).context("cannot copy the backup's database")?;
    fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let epoch = crate::store::new_epoch();
    let now = crate::authority::now();
    let replaced = dd.db();
    let r = backup::restore(&work, Some(&replaced), &epoch, now, |r| {
        crate::audit::change_event_of(
            &Origin::local("restore"),
            &format!(
                "restore of the backup taken at {} (version {}, epoch {}) as epoch {}{}",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(info.taken_at)
                ),
                r.version,
                r.backup_epoch,
                r.epoch,
                if r.carried_over {
                    "; serials and ids carried over from the replaced database"
                } else {
                    ""
                }
            ),
            None,
            now,
        )
    });
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_file(&work);
            return Err(e).context("cannot prepare the restored database");
        }
    };
    // The replaced database's WAL must not be applied to the restored one.
    for stale in ["ca.db-wal", "ca.db-shm"] {
        match fs::remove_file(dd.root.join(stale)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {stale}")),
        }
    }
    fs::rename(&work, &replaced).context("cannot put the restored database in place")?;
    fs::File::open(&dd.root)?.sync_all()?;
    Ok(r)
}
