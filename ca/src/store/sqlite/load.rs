//! Loading the model from the database.

use crate::model::{
    CertRef, Disabler, Grant, Group, Host, IdKind, Model, OidcBinding, Restore, Settings, Source,
    Token, TokenKind, User,
};
use crate::store::{Loaded, StoreError};
use crate::timewin::Window;
use rusqlite::{Connection, OptionalExtension};
use smith_proto::{GroupName, HostName, HostPattern, IdRange, Level, PosixId, Tags, UserName};
use std::collections::HashMap;

pub(super) fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub(super) fn meta_u64(conn: &Connection, key: &str) -> Result<u64, StoreError> {
    let v = meta_get(conn, key)?
        .ok_or_else(|| StoreError::Corrupt(format!("meta key '{key}' is missing")))?;
    v.parse()
        .map_err(|_| StoreError::Corrupt(format!("meta key '{key}' is not a number: {v}")))
}

fn corrupt<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

/// How long a token stays in memory (listable) after it expired.
pub const TOKEN_HISTORY_SECS: u64 = 30 * 86400;

fn parse_source(s: &str) -> Result<Source, StoreError> {
    Source::parse(s).ok_or_else(|| StoreError::Corrupt(format!("source '{s}'")))
}

/// Host names stored comma-separated.
fn parse_names(s: &str) -> Result<Vec<HostName>, StoreError> {
    s.split(',')
        .filter(|n| !n.is_empty())
        .map(|n| HostName::new(n).map_err(corrupt("SSH host name")))
        .collect()
}

/// Highest certificate serial ever issued (meta high-water mark and table).
pub(super) fn last_serial(c: &Connection) -> Result<u64, StoreError> {
    let meta = meta_u64(c, "serial")?;
    let table: Option<i64> =
        c.query_row("SELECT MAX(serial) FROM certificates", [], |r| r.get(0))?;
    Ok(meta.max(table.unwrap_or(0).max(0) as u64))
}

/// Loads everything the model holds, the serial high-water mark and hosts' liveness.
pub(super) fn load(c: &Connection, now: u64) -> Result<Loaded, StoreError> {
    {
        let start = meta_u64(c, "id_range_start")?;
        let end = meta_u64(c, "id_range_end")?;
        let id_range = IdRange::new(start as u32, end as u32).map_err(StoreError::Corrupt)?;
        let sudo_gid = PosixId::new(meta_u64(c, "sudo_gid")?).map_err(corrupt("sudo_gid"))?;
        let users_gid = PosixId::new(meta_u64(c, "users_gid")?).map_err(corrupt("users_gid"))?;
        let mut m = Restore {
            settings: Settings {
                id_range,
                sudo_gid,
                users_gid,
            },
            version: meta_u64(c, "version")?,
            next_id: meta_u64(c, "next_id")? as u32,
            next_grant_id: meta_u64(c, "next_grant_id")?,
            next_host_id: meta_u64(c, "next_host_id")?,
            ids: Vec::new(),
            users: Vec::new(),
            groups: Vec::new(),
            memberships: Vec::new(),
            grants: Vec::new(),
            tokens: Vec::new(),
            hosts: Vec::new(),
            host_certs: Vec::new(),
            revocations: Vec::new(),
            host_revocations: Vec::new(),
            idp_groups: Vec::new(),
            epoch: meta_get(c, "epoch")?.unwrap_or_default(),
            ca_keys: Default::default(),
        };
        let mut liveness = HashMap::new();

        let mut st =
            c.prepare("SELECT id, kind, name FROM allocated_ids ORDER BY allocated_at, id")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (id, kind, name) = row?;
            let kind = match kind.as_str() {
                "user" => IdKind::User,
                _ => IdKind::Group,
            };
            m.ids.push((id as u32, kind, name));
        }

        let mut st = c.prepare(
            "SELECT name, gid, created_at, external_id, source FROM groups
             WHERE deleted_at IS NULL ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        for row in rows {
            let (name, gid, created_at, external_id, source) = row?;
            m.groups.push(Group {
                name: GroupName::new(&name).map_err(corrupt("group name"))?,
                gid: PosixId::new(gid as u64).map_err(corrupt("gid"))?,
                members: Default::default(),
                created_at: created_at as u64,
                external_id,
                source: parse_source(&source)?,
            });
        }

        let mut st = c.prepare(
            "SELECT name, uid, disabled, gecos, shell, created_at, external_id, oidc_subject,
                    oidc_issuer, source, disabled_by
             FROM users WHERE deleted_at IS NULL ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                (
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ),
                (
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, String>(9)?,
                    r.get::<_, Option<String>>(10)?,
                ),
            ))
        })?;
        for row in rows {
            let (
                (name, uid, disabled, gecos, shell, created_at),
                (external_id, oidc_subject, oidc_issuer, source, disabled_by),
            ) = row?;
            let disabled = match (disabled, disabled_by) {
                (false, _) => None,
                (true, None) => Some(Disabler::Admin),
                (true, Some(by)) => Some(
                    Disabler::parse(&by)
                        .ok_or_else(|| StoreError::Corrupt(format!("disabled_by '{by}'")))?,
                ),
            };
            m.users.push(User {
                name: UserName::new(&name).map_err(corrupt("user name"))?,
                uid: PosixId::new(uid as u64).map_err(corrupt("uid"))?,
                disabled,
                gecos,
                shell,
                created_at: created_at as u64,
                groups: Default::default(),
                external_id,
                oidc: oidc_subject.map(|subject| OidcBinding {
                    issuer: oidc_issuer,
                    subject,
                }),
                source: parse_source(&source)?,
            });
        }

        let mut st = c.prepare("SELECT group_name, user_name, source FROM memberships")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (g, u, source) = row?;
            m.memberships.push((
                GroupName::new(&g).map_err(corrupt("group name"))?,
                UserName::new(&u).map_err(corrupt("user name"))?,
                parse_source(&source)?,
            ));
        }

        let mut st = c.prepare(
            "SELECT role, public_key, source, state, added_at, added_version, signing_since,
                    switch_at, retire_at, stale_after
             FROM ca_keys ORDER BY role, added_at, public_key",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                crate::cakeys::CaKey {
                    public: r.get(1)?,
                    source: r.get(2)?,
                    state: match r.get::<_, String>(3)?.as_str() {
                        "next" => crate::cakeys::CaKeyState::Next,
                        "signing" => crate::cakeys::CaKeyState::Signing,
                        _ => crate::cakeys::CaKeyState::Retiring,
                    },
                    added_at: r.get::<_, i64>(4)? as u64,
                    added_version: r.get::<_, i64>(5)? as u64,
                    signing_since: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
                    switch_at: r.get::<_, Option<i64>>(7)?.map(|t| t as u64),
                    retire_at: r.get::<_, Option<i64>>(8)?.map(|t| t as u64),
                    stale_after: r.get::<_, Option<i64>>(9)?.map(|t| t as u64),
                },
            ))
        })?;
        for row in rows {
            let (role, key) = row?;
            let role = match role.as_str() {
                "user" => crate::cakeys::CaRole::User,
                _ => crate::cakeys::CaRole::Host,
            };
            m.ca_keys.entry(role).or_default().push(key);
        }

        let mut st = c.prepare("SELECT idp_group, group_name FROM idp_groups")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (idp, g) = row?;
            m.idp_groups
                .push((idp, GroupName::new(&g).map_err(corrupt("group name"))?));
        }

        let mut st = c.prepare(
            "SELECT id, group_name, selector, level, max_ttl_secs, source_cidrs, require_reason,
                    time_windows, created_at, cert_rules
             FROM grants WHERE removed_at IS NULL ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, bool>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, String>(9)?,
            ))
        })?;
        for row in rows {
            let (
                id,
                group,
                selector,
                level,
                max_ttl,
                cidrs,
                require_reason,
                windows,
                created,
                rules,
            ) = row?;
            let source_cidrs = cidrs
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse())
                .collect::<Result<Vec<_>, _>>()
                .map_err(corrupt("grant source CIDR"))?;
            let windows: Vec<String> =
                serde_json::from_str(&windows).map_err(corrupt("grant time windows"))?;
            m.grants.push(Grant {
                id: id as u64,
                group: GroupName::new(&group).map_err(corrupt("grant group"))?,
                selector: Tags::parse(&selector).map_err(corrupt("grant selector"))?,
                level: level.parse::<Level>().map_err(corrupt("grant level"))?,
                max_ttl_secs: max_ttl as u64,
                source_cidrs,
                require_reason,
                time_windows: windows
                    .iter()
                    .map(|w| Window::parse(w))
                    .collect::<Result<_, _>>()
                    .map_err(corrupt("grant time window"))?,
                created_at: created as u64,
                cert: serde_json::from_str(&rules).map_err(corrupt("grant certificate rules"))?,
            });
        }

        let mut st = c.prepare(
            "SELECT hash, kind, subject, tags, created_at, expires_at, used_at, ssh_names, names,
                    max_uses, uses, created_by, revoked_at
             FROM tokens WHERE expires_at > ?1",
        )?;
        // Tokens dead for more than TOKEN_HISTORY_SECS stay in the table, not in memory.
        let horizon = now.saturating_sub(TOKEN_HISTORY_SECS).min(i64::MAX as u64) as i64;
        let rows = st.query_map([horizon], |r| {
            Ok((
                (
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ),
                (
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, String>(7)?,
                ),
                (
                    r.get::<_, String>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, i64>(10)?,
                ),
                (r.get::<_, String>(11)?, r.get::<_, Option<i64>>(12)?),
            ))
        })?;
        for row in rows {
            let (
                (hash, kind, subject, tags),
                (created, expires, used, ssh_names),
                (names, max_uses, uses),
                (created_by, revoked),
            ) = row?;
            // Tokens of schema 5-7 listed extra SSH names only: they count as exact names.
            let mut patterns: Vec<HostPattern> = names
                .split(',')
                .filter(|n| !n.is_empty())
                .map(HostPattern::parse)
                .collect::<Result<_, _>>()
                .map_err(corrupt("token host names"))?;
            for n in parse_names(&ssh_names)? {
                let p = HostPattern::Exact(n);
                if !patterns.contains(&p) {
                    patterns.push(p);
                }
            }
            let kind = TokenKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("token kind '{kind}'")))?;
            let tags = match tags {
                Some(t) => Some(Tags::parse(&t).map_err(corrupt("token tags"))?),
                None => None,
            };
            m.tokens.push((
                hash,
                Token {
                    kind,
                    subject,
                    tags,
                    created_at: created as u64,
                    expires_at: expires.max(0) as u64,
                    used_at: used.map(|v| v as u64),
                    names: patterns,
                    max_uses: max_uses.clamp(0, u32::MAX as i64) as u32,
                    uses: uses.clamp(0, u32::MAX as i64) as u32,
                    created_by,
                    revoked_at: revoked.map(|v| v.max(0) as u64),
                },
            ));
        }

        let mut st = c.prepare(
            "SELECT id, name, tags, enrolled_at, last_seen, synced_version, removed, cert_serial,
                    cert_not_after, ssh_names FROM hosts ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ),
                (
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, bool>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, String>(9)?,
                ),
            ))
        })?;
        for row in rows {
            let ((id, name, tags, enrolled, seen), (synced, removed, serial, not_after, names)) =
                row?;
            liveness.insert(
                id as u64,
                (seen.map(|v| v as u64), synced.map(|v| v as u64)),
            );
            m.hosts.push(Host {
                id: id as u64,
                name: HostName::new(&name).map_err(corrupt("host name"))?,
                tags: Tags::parse(&tags).map_err(corrupt("host tags"))?,
                enrolled_at: enrolled as u64,
                removed,
                cert_serial: serial,
                cert_not_after: not_after as u64,
                ssh_names: parse_names(&names)?,
            });
        }
        let mut st =
            c.prepare("SELECT serial, host_id, issued_at, superseded_at FROM host_certs")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?;
        for row in rows {
            let (serial, host, issued, superseded) = row?;
            m.host_certs.push((
                serial,
                CertRef {
                    host_id: host as u64,
                    issued_at: issued.max(0) as u64,
                    superseded_at: superseded.map(|v| v.max(0) as u64),
                },
            ));
        }
        m.revocations = super::certs::load_unexpired(c, now)?;
        m.host_revocations = super::certs::load_unexpired_host_revocations(c, now)?;
        Ok(Loaded {
            model: Model::restore(m, now),
            last_serial: last_serial(c)?,
            liveness,
        })
    }
}
