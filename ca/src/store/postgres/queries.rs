//! The PostgreSQL store's reads: certificates, decisions, host certificates and the
//! audit chains, with the same answers as the SQLite store's (the conformance suite
//! checks both).

use super::{big, pg_error};
use crate::audit::{ChainVerifier, Entry, Filter, RejectionInfo, StoredRecord, VerifyReport};
use crate::store::{
    CertQuery, HostCertQuery, HostCertSelector, HostPlan, OobInputs, Plan, Selector, StoreError,
};
use ::postgres::types::ToSql;
use ::postgres::{Client, Row};
use smith_api::chain::{self, AuditRecord, GENESIS};
use smith_api::{Decision, HostCertInfo, IssuedCert, RevocationInfo};
use smith_proto::UserName;
use std::collections::HashMap;

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

const CERT_COLUMNS: &str = "c.serial, c.key_id, c.user_name, c.principals, c.scope,
     c.valid_after, c.valid_before, c.issued_at, r.revoked_at, r.reason, r.via";

fn cert_row(r: &Row) -> IssuedCert {
    let revoked_at: Option<i64> = r.get(8);
    IssuedCert {
        serial: u(r.get(0)),
        key_id: r.get(1),
        user: r.get(2),
        principals: split_list(&r.get::<_, String>(3)),
        scope: r.get(4),
        valid_after: u(r.get(5)),
        valid_before: u(r.get(6)),
        issued_at: u(r.get(7)),
        revoked: revoked_at.map(|at| RevocationInfo {
            revoked_at: u(at),
            reason: r.get(9),
            via: r.get(10),
        }),
    }
}

fn select_certs(
    c: &mut Client,
    tail: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Vec<IssuedCert>, StoreError> {
    let sql = format!(
        "SELECT {CERT_COLUMNS} FROM certificates c LEFT JOIN revocations r ON r.serial = c.serial
         {tail}"
    );
    Ok(c.query(&sql, args)
        .map_err(pg_error)?
        .iter()
        .map(cert_row)
        .collect())
}

pub(super) fn certs(c: &mut Client, q: &CertQuery) -> Result<Vec<IssuedCert>, StoreError> {
    let user = q.user.as_ref().map(|u| u.as_str().to_string());
    select_certs(
        c,
        "WHERE ($1::text IS NULL OR c.user_name = $1)
           AND (NOT $2 OR (c.valid_before > $3 AND r.serial IS NULL))
         ORDER BY c.serial DESC LIMIT $4",
        &[&user, &q.valid_only, &big(q.now), &i64::from(q.limit)],
    )
}

pub(super) fn cert_plan(
    c: &mut Client,
    sel: &Selector,
    now: u64,
) -> Result<Option<Plan>, StoreError> {
    let certs = match sel {
        Selector::Serial(s) => {
            if *s > i64::MAX as u64 {
                return Ok(None);
            }
            select_certs(c, "WHERE c.serial = $1 ORDER BY c.serial", &[&(*s as i64)])?
        }
        Selector::KeyId(k) => match k.rsplit_once(':') {
            Some((_, rid)) => select_certs(
                c,
                "WHERE c.request_id = $1 AND c.key_id = $2 ORDER BY c.serial",
                &[&rid, &k.as_str()],
            )?,
            None => return Ok(None),
        },
        Selector::User(user) => select_certs(
            c,
            "WHERE c.user_name = $1 ORDER BY c.serial",
            &[&user.as_str()],
        )?,
    };
    Ok(Plan::of(certs, now))
}

pub(super) fn valid_certs_of(
    c: &mut Client,
    user: &UserName,
    now: u64,
) -> Result<Vec<IssuedCert>, StoreError> {
    select_certs(
        c,
        "WHERE c.valid_before > $2 AND c.user_name = $1 AND r.serial IS NULL ORDER BY c.serial",
        &[&user.as_str(), &big(now)],
    )
}

pub(super) fn decisions(
    c: &mut Client,
    limit: u32,
    user: Option<&UserName>,
) -> Result<Vec<Decision>, StoreError> {
    let user = user.map(|u| u.as_str().to_string());
    let rows = c
        .query(
            "SELECT id, at, user_name, allowed, reason, scope, requested_ttl_secs, serial,
                    key_id, source_ip FROM (
                 SELECT * FROM decisions WHERE ($1::text IS NULL OR user_name = $1)
                 ORDER BY id DESC LIMIT $2) d ORDER BY id",
            &[&user, &i64::from(limit)],
        )
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|r| Decision {
            id: u(r.get(0)),
            at: u(r.get(1)),
            user: r.get(2),
            allowed: r.get(3),
            reason: r.get(4),
            scope: r.get(5),
            requested_ttl_secs: u(r.get(6)),
            serial: r.get::<_, Option<i64>>(7).map(u),
            key_id: r.get(8),
            source: r.get(9),
        })
        .collect())
}

fn host_cert_row(r: &Row) -> Result<HostCertInfo, StoreError> {
    let revoked_at: Option<i64> = r.get(9);
    Ok(HostCertInfo {
        serial: u(r.get(0)),
        host: smith_proto::HostName::new(&r.get::<_, String>(1))
            .map_err(|e| StoreError::Corrupt(format!("host certificate: {e}")))?,
        key_id: r.get(2),
        principals: split_list(&r.get::<_, String>(3)),
        key_fingerprint: r.get(4),
        valid_after: u(r.get(5)),
        valid_before: u(r.get(6)),
        issued_at: u(r.get(7)),
        revoked: revoked_at.map(|at| RevocationInfo {
            revoked_at: u(at),
            reason: r.get(10),
            via: r.get(11),
        }),
    })
}

const HOST_CERT_SELECT: &str = "SELECT h.serial, h.host, h.key_id, h.principals,
        h.key_fingerprint, h.valid_after, h.valid_before, h.issued_at, h.host_id,
        r.revoked_at, r.reason, r.via
     FROM host_ssh_certs h LEFT JOIN host_cert_revocations r ON r.serial = h.serial";

pub(super) fn host_certs(
    c: &mut Client,
    q: &HostCertQuery,
) -> Result<Vec<HostCertInfo>, StoreError> {
    let host = q.host.as_ref().map(|h| h.as_str().to_string());
    let rows = c
        .query(
            &format!(
                "{HOST_CERT_SELECT}
                 WHERE ($1::text IS NULL OR h.host = $1)
                   AND (NOT $2 OR (h.valid_before > $3 AND r.serial IS NULL))
                 ORDER BY h.issued_at DESC, h.serial DESC LIMIT $4"
            ),
            &[&host, &q.valid_only, &big(q.now), &i64::from(q.limit)],
        )
        .map_err(pg_error)?;
    rows.iter().map(host_cert_row).collect()
}

pub(super) fn host_cert_plan(
    c: &mut Client,
    sel: HostCertSelector,
    now: u64,
) -> Result<Option<HostPlan>, StoreError> {
    let (clause, arg) = match sel {
        HostCertSelector::Serial(s) => ("h.serial = $1", big(s)),
        HostCertSelector::Host(h) => ("h.host_id = $1", big(h)),
    };
    let rows = c
        .query(
            &format!("{HOST_CERT_SELECT} WHERE {clause} ORDER BY h.serial"),
            &[&arg],
        )
        .map_err(pg_error)?;
    let certs = rows
        .iter()
        .map(host_cert_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HostPlan::of(certs, now))
}

pub(super) fn audit_head(c: &mut Client, host: &str) -> Result<(u64, [u8; 32]), StoreError> {
    let row = c
        .query_opt(
            "SELECT seq, hash FROM audit_heads WHERE host = $1",
            &[&host],
        )
        .map_err(pg_error)?;
    Ok(match row {
        Some(r) => (
            u(r.get(0)),
            chain::parse_hash(&r.get::<_, String>(1)).unwrap_or(GENESIS),
        ),
        None => (0, GENESIS),
    })
}

pub(super) fn audit_list(c: &mut Client, f: &Filter) -> Result<Vec<Entry>, StoreError> {
    let rows = c
        .query(
            "SELECT host, seq, kind, user_name, at_unix, received_at, hash, event FROM (
                 SELECT * FROM audit_records
                 WHERE ($1::text IS NULL OR host = $1) AND ($2::text IS NULL OR user_name = $2)
                   AND ($3::bigint IS NULL OR at_unix >= $3) AND ($5::text IS NULL OR kind = $5)
                 ORDER BY received_at DESC, host DESC, seq DESC LIMIT $4) a
             ORDER BY host, seq",
            &[
                &f.host,
                &f.user,
                &f.since.map(big),
                &i64::from(f.limit.max(1)),
                &f.kind,
            ],
        )
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|r| {
            let event: String = r.get(7);
            Entry {
                host: r.get(0),
                seq: u(r.get(1)),
                kind: r.get(2),
                user: r.get(3),
                at_unix: u(r.get(4)),
                received_at: u(r.get(5)),
                hash: r.get(6),
                event: serde_json::from_str(&event).unwrap_or(serde_json::Value::String(event)),
            }
        })
        .collect())
}

pub(super) fn audit_verify(c: &mut Client) -> Result<VerifyReport, StoreError> {
    let rows = c
        .query(
            "SELECT host, seq, prev_hash, hash, event, kind, user_name, at_unix
             FROM audit_records ORDER BY host, seq",
            &[],
        )
        .map_err(pg_error)?;
    let mut v = ChainVerifier::default();
    for r in rows {
        v.push(StoredRecord {
            host: r.get(0),
            record: AuditRecord {
                seq: u(r.get(1)),
                prev_hash: r.get(2),
                hash: r.get(3),
                event: r.get(4),
            },
            columns: (r.get(5), r.get(6), r.get(7)),
        });
    }
    Ok(v.finish())
}

pub(super) fn audit_rejections(
    c: &mut Client,
    limit: u32,
) -> Result<Vec<RejectionInfo>, StoreError> {
    let rows = c
        .query(
            "SELECT id, host, seq, code, reason, at, first_seq, last_seq, records FROM (
                 SELECT * FROM audit_rejections ORDER BY id DESC LIMIT $1) a ORDER BY id",
            &[&i64::from(limit.max(1))],
        )
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|r| RejectionInfo {
            id: u(r.get(0)),
            host: r.get(1),
            seq: u(r.get(2)),
            code: r.get(3),
            reason: r.get(4),
            at: u(r.get(5)),
            first_seq: u(r.get(6)),
            last_seq: u(r.get(7)),
            records: u(r.get(8)),
        })
        .collect())
}

pub(super) fn oob_inputs(c: &mut Client) -> Result<OobInputs, StoreError> {
    let sshd_events: Vec<(String, u64, String)> = c
        .query(
            "SELECT host, seq, event FROM audit_records WHERE kind = 'sshd' ORDER BY host, seq",
            &[],
        )
        .map_err(pg_error)?
        .iter()
        .map(|r| (r.get(0), u(r.get(1)), r.get(2)))
        .collect();
    let serials: Vec<i64> = sshd_events
        .iter()
        .filter_map(|(_, _, e)| {
            serde_json::from_str::<serde_json::Value>(e)
                .ok()?
                .get("serial")?
                .as_u64()
        })
        .filter(|s| *s <= i64::MAX as u64)
        .map(|s| s as i64)
        .collect();
    let mut issued = HashMap::new();
    for r in c
        .query(
            "SELECT serial, user_name, key_id, principals FROM certificates
             WHERE serial = ANY($1)",
            &[&serials],
        )
        .map_err(pg_error)?
    {
        issued.insert(
            u(r.get(0)),
            crate::audit::oob::Issued {
                user: r.get(1),
                key_id: r.get(2),
                principals: r.get::<_, String>(3).split(',').map(String::from).collect(),
            },
        );
    }
    let disabled = c
        .query("SELECT name, at FROM disabled_users", &[])
        .map_err(pg_error)?
        .iter()
        .map(|r| (r.get::<_, String>(0), u(r.get(1))))
        .collect();
    Ok(OobInputs {
        sshd_events,
        issued,
        disabled,
    })
}
