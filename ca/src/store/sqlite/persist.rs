//! Writing a [`Commit`] inside a transaction: every [`Change`] as rows, the allocation
//! counters, the bumped version and its `changes` line (what, and who asked).
//!
//! Must never: commit part of a change set (the caller owns the transaction and commits
//! it only when everything here succeeded), or overwrite a live user's or group's row.

use crate::model::{Change, Host, IdKind, Token};
use crate::store::{Commit, StoreError};
use rusqlite::{params, Transaction};
use smith_proto::HostName;

pub(super) fn ca_key_state(s: crate::cakeys::CaKeyState) -> &'static str {
    match s {
        crate::cakeys::CaKeyState::Next => "next",
        crate::cakeys::CaKeyState::Signing => "signing",
        crate::cakeys::CaKeyState::Retiring => "retiring",
    }
}

pub(super) fn meta_set(tx: &Transaction<'_>, key: &str, value: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Writes `c` (changes, counters, version and its `changes` line) in `tx`, which the
/// caller commits.
pub(super) fn write_commit(tx: &Transaction<'_>, c: &Commit) -> Result<(), StoreError> {
    for change in &c.changes {
        persist(tx, change, c.now)?;
    }
    let after = c.counters.after(&c.changes);
    meta_set(tx, "next_grant_id", &after.next_grant_id.to_string())?;
    meta_set(tx, "next_host_id", &after.next_host_id.to_string())?;
    meta_set(tx, "next_id", &after.next_id.to_string())?;
    if let Some(v) = c.new_version {
        meta_set(tx, "version", &v.to_string())?;
        tx.execute(
            "INSERT INTO changes (version, at, what, origin) VALUES (?1, ?2, ?3, ?4)",
            params![v as i64, c.now as i64, c.what, c.origin.to_string()],
        )?;
    }
    Ok(())
}

/// Host names stored comma-separated.
pub(super) fn join_names(v: &[HostName]) -> String {
    v.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(",")
}

fn allocate(
    tx: &Transaction<'_>,
    id: u32,
    kind: IdKind,
    name: &str,
    now: u64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO allocated_ids (id, kind, name, allocated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO NOTHING",
        params![id, kind.as_str(), name, now as i64],
    )?;
    // The id must now belong to exactly this name: anything else is a collision the
    // model should have caught, and the transaction is abandoned.
    let owner: (String, String) = tx.query_row(
        "SELECT kind, name FROM allocated_ids WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if owner != (kind.as_str().to_string(), name.to_string()) {
        return Err(StoreError::Conflict(format!(
            "id {id} is already allocated to {} '{}'",
            owner.0, owner.1
        )));
    }
    Ok(())
}

fn persist(tx: &Transaction<'_>, c: &Change, now: u64) -> Result<(), StoreError> {
    match c {
        Change::AddUser(u) => {
            allocate(tx, u.uid.get(), IdKind::User, u.name.as_str(), now)?;
            // A deleted user's row is reused when the name comes back (same uid).
            let n = tx.execute(
                "INSERT INTO users (name, uid, disabled, gecos, shell, created_at, external_id,
                                    oidc_subject, oidc_issuer, source, disabled_by,
                                    disabled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
                         CASE WHEN ?3 THEN ?6 END)
                 ON CONFLICT(name) DO UPDATE SET uid = excluded.uid,
                     disabled = excluded.disabled, gecos = excluded.gecos,
                     shell = excluded.shell, created_at = excluded.created_at,
                     external_id = excluded.external_id, oidc_subject = excluded.oidc_subject,
                     oidc_issuer = excluded.oidc_issuer, source = excluded.source,
                     disabled_by = excluded.disabled_by, disabled_at = excluded.disabled_at,
                     deleted_at = NULL
                 WHERE users.deleted_at IS NOT NULL",
                params![
                    u.name.as_str(),
                    u.uid.get(),
                    u.is_disabled(),
                    u.gecos,
                    u.shell,
                    u.created_at as i64,
                    u.external_id,
                    u.oidc.as_ref().map(|b| b.subject.as_str()),
                    u.oidc.as_ref().map(|b| b.issuer.as_str()).unwrap_or(""),
                    u.source.as_str(),
                    u.disabled.map(|d| d.as_str()),
                ],
            )?;
            if n != 1 {
                return Err(StoreError::Conflict(format!(
                    "user '{}' already exists in the database",
                    u.name
                )));
            }
            for g in &u.groups {
                tx.execute(
                    "INSERT INTO memberships (group_name, user_name, added_at, source)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![g.as_str(), u.name.as_str(), now as i64, u.source.as_str()],
                )?;
            }
        }
        Change::DisableUser { name, at, by } => {
            tx.execute(
                "UPDATE users SET disabled = 1, disabled_at = COALESCE(disabled_at, ?2),
                     disabled_by = ?3 WHERE name = ?1",
                params![name.as_str(), *at as i64, by.as_str()],
            )?;
        }
        Change::EnableUser { name } => {
            tx.execute(
                "UPDATE users SET disabled = 0, disabled_at = NULL, disabled_by = NULL
                 WHERE name = ?1",
                params![name.as_str()],
            )?;
        }
        Change::SetUserAttrs {
            name,
            gecos,
            external_id,
            oidc,
        } => {
            tx.execute(
                "UPDATE users SET gecos = ?2, external_id = ?3, oidc_subject = ?4, oidc_issuer = ?5
                 WHERE name = ?1",
                params![
                    name.as_str(),
                    gecos,
                    external_id,
                    oidc.as_ref().map(|b| b.subject.as_str()),
                    oidc.as_ref().map(|b| b.issuer.as_str()).unwrap_or("")
                ],
            )?;
        }
        Change::DeleteUser { name, at } => {
            tx.execute(
                "DELETE FROM memberships WHERE user_name = ?1",
                params![name.as_str()],
            )?;
            tx.execute(
                "DELETE FROM tokens WHERE kind = 'user' AND subject = ?1",
                params![name.as_str()],
            )?;
            tx.execute(
                "UPDATE users SET deleted_at = ?2, disabled = 1,
                     disabled_at = COALESCE(disabled_at, ?2) WHERE name = ?1",
                params![name.as_str(), *at as i64],
            )?;
        }
        Change::SetGroupExternalId { name, external_id } => {
            tx.execute(
                "UPDATE groups SET external_id = ?2 WHERE name = ?1",
                params![name.as_str(), external_id],
            )?;
        }
        Change::DeleteGroup { name, at } => {
            tx.execute(
                "DELETE FROM memberships WHERE group_name = ?1",
                params![name.as_str()],
            )?;
            tx.execute(
                "UPDATE groups SET deleted_at = ?2 WHERE name = ?1",
                params![name.as_str(), *at as i64],
            )?;
            tx.execute(
                "DELETE FROM idp_groups WHERE group_name = ?1",
                params![name.as_str()],
            )?;
        }
        Change::SetGroupSource { name, source } => {
            tx.execute(
                "UPDATE groups SET source = ?2 WHERE name = ?1",
                params![name.as_str(), source.as_str()],
            )?;
        }
        Change::MapGroup {
            idp_group,
            group,
            at,
        } => {
            tx.execute(
                "INSERT INTO idp_groups (idp_group, group_name, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                params![idp_group, group.as_str(), *at as i64],
            )?;
        }
        Change::UnmapGroup { idp_group, group } => {
            tx.execute(
                "DELETE FROM idp_groups WHERE idp_group = ?1 AND group_name = ?2",
                params![idp_group, group.as_str()],
            )?;
        }
        Change::RevokeTokens { hashes, at } => {
            for h in hashes {
                tx.execute(
                    "UPDATE tokens SET revoked_at = ?2 WHERE hash = ?1 AND revoked_at IS NULL",
                    params![h, *at as i64],
                )?;
            }
        }
        Change::AddGroup(g) => {
            allocate(tx, g.gid.get(), IdKind::Group, g.name.as_str(), now)?;
            let n = tx.execute(
                "INSERT INTO groups (name, gid, created_at, external_id, source)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(name) DO UPDATE SET gid = excluded.gid,
                     created_at = excluded.created_at, external_id = excluded.external_id,
                     source = excluded.source, deleted_at = NULL
                 WHERE groups.deleted_at IS NOT NULL",
                params![
                    g.name.as_str(),
                    g.gid.get(),
                    g.created_at as i64,
                    g.external_id,
                    g.source.as_str()
                ],
            )?;
            if n != 1 {
                return Err(StoreError::Conflict(format!(
                    "group '{}' already exists in the database",
                    g.name
                )));
            }
        }
        Change::AddMember {
            group,
            user,
            at,
            source,
        } => {
            tx.execute(
                "INSERT INTO memberships (group_name, user_name, added_at, source)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(group_name, user_name) DO UPDATE SET source = excluded.source",
                params![group.as_str(), user.as_str(), *at as i64, source.as_str()],
            )?;
        }
        Change::RemoveMember { group, user } => {
            tx.execute(
                "DELETE FROM memberships WHERE group_name = ?1 AND user_name = ?2",
                params![group.as_str(), user.as_str()],
            )?;
        }
        Change::AddGrant(g) => {
            if let Some(gid) = g.cert.sudo.gid {
                let name = smith_proto::sudorules::rule_group(g.id);
                allocate(tx, gid, IdKind::Group, &name, now)?;
            }
            let cidrs: Vec<String> = g.source_cidrs.iter().map(|c| c.to_string()).collect();
            tx.execute(
                "INSERT INTO grants (id, group_name, selector, level, max_ttl_secs, source_cidrs,
                                     require_reason, time_windows, created_at, cert_rules)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    g.id as i64,
                    g.group.as_str(),
                    g.selector.to_string(),
                    g.level.as_str(),
                    g.max_ttl_secs as i64,
                    cidrs.join(","),
                    g.require_reason,
                    serde_json::to_string(
                        &g.time_windows
                            .iter()
                            .map(|w| w.to_string())
                            .collect::<Vec<_>>()
                    )
                    .unwrap_or_else(|_| "[]".into()),
                    g.created_at as i64,
                    serde_json::to_string(&g.cert)
                        .map_err(|e| { rusqlite::Error::ToSqlConversionFailure(Box::new(e)) })?
                ],
            )?;
        }
        Change::RemoveGrant { id, at } => {
            tx.execute(
                "UPDATE grants SET removed_at = ?2 WHERE id = ?1 AND removed_at IS NULL",
                params![*id as i64, *at as i64],
            )?;
        }
        Change::AddToken { hash, token } => {
            insert_token(tx, hash, token)?;
        }
        Change::Enroll {
            token_hash,
            at,
            host,
            cert,
        } => {
            let n = tx.execute(
                "UPDATE tokens SET uses = uses + 1,
                     used_at = CASE WHEN uses + 1 >= max_uses THEN ?2 ELSE used_at END
                 WHERE hash = ?1 AND used_at IS NULL AND uses < max_uses",
                params![token_hash, *at as i64],
            )?;
            if n != 1 {
                return Err(StoreError::Conflict(
                    "enrollment token was used concurrently".into(),
                ));
            }
            insert_host(tx, host)?;
            tx.execute(
                "INSERT INTO host_certs (serial, host_id, not_after, issued_at) VALUES (?1, ?2, ?3, ?4)",
                params![cert.serial, host.id as i64, cert.not_after as i64, cert.issued_at as i64],
            )?;
        }
        Change::HostCert { host_id, cert } => {
            tx.execute(
                "UPDATE host_certs SET superseded_at = ?2
                 WHERE serial = (SELECT cert_serial FROM hosts WHERE id = ?1)
                   AND superseded_at IS NULL",
                params![*host_id as i64, cert.issued_at as i64],
            )?;
            tx.execute(
                "INSERT INTO host_certs (serial, host_id, not_after, issued_at) VALUES (?1, ?2, ?3, ?4)",
                params![cert.serial, *host_id as i64, cert.not_after as i64, cert.issued_at as i64],
            )?;
            tx.execute(
                "UPDATE hosts SET cert_serial = ?2, cert_not_after = ?3 WHERE id = ?1",
                params![*host_id as i64, cert.serial, cert.not_after as i64],
            )?;
        }
        Change::RemoveHost { host_id, at } => {
            tx.execute(
                "UPDATE hosts SET removed = 1, removed_at = ?2 WHERE id = ?1",
                params![*host_id as i64, *at as i64],
            )?;
        }
        Change::Revoke(list) => {
            for r in list {
                super::certs::insert_revocation(tx, r)?;
            }
        }
        Change::SetHostTags { host_id, tags } => {
            tx.execute(
                "UPDATE hosts SET tags = ?2 WHERE id = ?1",
                params![*host_id as i64, tags.to_string()],
            )?;
        }
        Change::HostSshCerts(list) => {
            for c in list {
                super::certs::insert_host_ssh_cert(tx, c)?;
            }
        }
        Change::RevokeHostCerts(list) => {
            for r in list {
                super::certs::insert_host_revocation(tx, r)?;
            }
        }
        // Recorded in the CA's audit chain only (the writer appends it).
        Change::Alert(_) => {}
        Change::SetEpoch { epoch } => {
            meta_set(tx, "epoch", epoch)?;
        }
        Change::SetCaKeys { role, keys } => {
            tx.execute(
                "DELETE FROM ca_keys WHERE role = ?1",
                params![role.as_str()],
            )?;
            for k in keys {
                tx.execute(
                    "INSERT INTO ca_keys (role, public_key, source, state, added_at, added_version,
                                          signing_since, switch_at, retire_at, stale_after)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        role.as_str(),
                        k.public,
                        k.source,
                        ca_key_state(k.state),
                        k.added_at as i64,
                        k.added_version as i64,
                        k.signing_since.map(|t| t as i64),
                        k.switch_at.map(|t| t as i64),
                        k.retire_at.map(|t| t as i64),
                        k.stale_after.map(|t| t as i64),
                    ],
                )?;
            }
        }
    }
    Ok(())
}

fn insert_token(tx: &Transaction<'_>, hash: &str, t: &Token) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO tokens (hash, kind, subject, tags, created_at, expires_at, used_at,
                             names, max_uses, uses, created_by, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            hash,
            t.kind.as_str(),
            t.subject,
            t.tags.as_ref().map(|t| t.to_string()),
            t.created_at as i64,
            t.expires_at.min(i64::MAX as u64) as i64,
            t.used_at.map(|v| v as i64),
            t.names
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
            t.max_uses,
            t.uses,
            t.created_by,
            t.revoked_at.map(|v| v as i64)
        ],
    )?;
    Ok(())
}

fn insert_host(tx: &Transaction<'_>, h: &Host) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO hosts (id, name, tags, enrolled_at, removed, cert_serial, cert_not_after,
                            ssh_names)
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7)",
        params![
            h.id as i64,
            h.name.as_str(),
            h.tags.to_string(),
            h.enrolled_at as i64,
            h.cert_serial,
            h.cert_not_after as i64,
            join_names(&h.ssh_names)
        ],
    )?;
    Ok(())
}
