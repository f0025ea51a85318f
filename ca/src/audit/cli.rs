//! `smith-ca admin audit ...` (over HTTPS, admin token) and the offline
//! `smith-ca audit verify --data-dir D` (reads the SQLite store read-only).
//!
//! Must never: write to the database (the offline verifier opens it read-only), or
//! exit 0 when a chain is broken.

use super::{Entry, VerifyReport};
use anyhow::Context;
use clap::Subcommand;
use smith_api::{AuditQuery, Client, OutOfBandQuery, RejectionQuery};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// The audit trail: every host's events (sessions, sudo, denials, sshd logins) and
    /// the CA's own issuance decisions (host `@ca`), in chain order per host.
    List {
        /// Only this user's records.
        #[arg(long)]
        user: Option<String>,
        /// Only this host's chain (`@ca` for issuance decisions).
        #[arg(long)]
        host: Option<String>,
        /// Only events at or after T: RFC 3339 (`2025-01-31T12:00:00Z`) or a duration
        /// ago (`1h`, `30m`, `7d`).
        #[arg(long, value_parser = parse_since)]
        since: Option<u64>,
        /// At most this many records (the most recently stored).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Print JSON (one array of records, each with its full event).
        #[arg(long)]
        json: bool,
    },
    /// Recompute every chain from the CA's database and name the first broken record
    /// (host, seq, reason). Exits 1 if any chain is broken.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Uploads the CA refused (altered records, gaps, replays), oldest first.
    Rejections {
        #[arg(long)]
        json: bool,
    },
    /// Logins sshd recorded that did not go through Smith: no certificate
    /// (authorized_keys, passwords), certificates this CA never issued, certificates used
    /// after their owner was disabled, principal mismatches, and hot spots of failed
    /// attempts.
    OutOfBand {
        /// Failed attempts within this window count towards a hot spot.
        #[arg(long, default_value = "10m", value_parser = parse_secs)]
        window: u64,
        /// Failures (one host and source, or one host and user) that make a hot spot.
        #[arg(long, default_value_t = 5)]
        threshold: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum OfflineCmd {
    /// Verify every audit chain in the CA's SQLite database without a running CA
    /// (read-only). Exits 1 and names the first broken record if any chain is broken.
    Verify {
        /// The CA's data directory (holds ca.db).
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse_secs(s: &str) -> Result<u64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_secs())
        .map_err(|e| format!("'{s}' is not a duration like 10m: {e}"))
}

/// RFC 3339 time or a duration ago → Unix seconds.
pub fn parse_since(s: &str) -> Result<u64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .map_err(|_| format!("'{s}' is before 1970"));
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(now().saturating_sub(d.as_secs())),
        Err(_) => Err(format!(
            "'{s}' is neither an RFC 3339 time (2025-01-31T12:00:00Z) nor a duration ago (1h, 7d)"
        )),
    }
}

fn time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints one line of text that holds fields from hosts and users, with control
/// characters shown as escapes (no forged lines, no terminal control).
pub fn say(line: String) {
    println!("{}", smith_proto::text::escape_controls(&line));
}

/// One line for a person.
pub fn describe(e: &Entry) -> String {
    let v = &e.event;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let key = |v: &serde_json::Value| {
        let k = v.get("key_id").and_then(|x| x.as_str()).unwrap_or("");
        if k.is_empty() {
            "no certificate".to_string()
        } else {
            format!("key ID {k}")
        }
    };
    let what = match e.kind.as_str() {
        "session_open" | "session_close" => format!(
            "session {} for {} via {} from {} tty {} pid {} ({}{}){}",
            s("phase"),
            s("user"),
            s("service"),
            s("rhost"),
            s("tty"),
            v.get("pid").and_then(|x| x.as_u64()).unwrap_or(0),
            key(v),
            v.get("serial")
                .and_then(|x| x.as_u64())
                .map(|n| format!(", serial {n}"))
                .unwrap_or_default(),
            v.get("duration_secs")
                .and_then(|x| x.as_u64())
                .map(|d| format!(", lasted {d} s"))
                .unwrap_or_default()
        ),
        "sudo" => format!(
            "sudo {} by {} as {} in {} on {}: {} ({}){}",
            if v.get("allowed").and_then(|x| x.as_bool()) == Some(true) {
                "ALLOWED"
            } else {
                "REFUSED"
            },
            s("user"),
            s("target"),
            s("cwd"),
            s("tty"),
            s("command"),
            key(v),
            Some(s("reason"))
                .filter(|r| !r.is_empty())
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        "denied" => format!(
            "DENIED {} via {} from {}: {}",
            s("user"),
            s("service"),
            s("rhost"),
            s("reason")
        ),
        "sshd" => format!(
            "sshd {} {} for {} from {} ({}{})",
            if v.get("accepted").and_then(|x| x.as_bool()) == Some(true) {
                "accepted"
            } else {
                "FAILED"
            },
            s("method"),
            s("user"),
            s("rhost"),
            key(v),
            Some(s("fingerprint"))
                .filter(|f| !f.is_empty())
                .map(|f| format!(", {} {f}", s("key_type")))
                .unwrap_or_default()
        ),
        "cert_decision" => format!(
            "certificate {} for {} scope {}: {}{}",
            if v.get("allowed").and_then(|x| x.as_bool()) == Some(true) {
                "ISSUED"
            } else {
                "DENIED"
            },
            s("user"),
            Some(s("scope"))
                .filter(|x| !x.is_empty())
                .unwrap_or_else(|| "(any)".into()),
            s("reason"),
            v.get("serial")
                .and_then(|x| x.as_u64())
                .map(|n| format!(" (serial {n}, {})", key(v)))
                .unwrap_or_default()
        ),
        other => format!("{other}: {v}"),
    };
    // Fields come from hosts and users (command lines, directories, reasons): one line,
    // no terminal control, whatever they hold.
    smith_proto::text::escape_controls(&format!(
        "{} {:<8} #{:<5} {}",
        time(e.at_unix),
        e.host,
        e.seq,
        what
    ))
    .into_owned()
}

fn print_verify(r: &VerifyReport, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        json(r)?;
    } else {
        for c in &r.chains {
            let broken = r.breaks.iter().find(|b| b.host == c.host);
            println!(
                "{:<16} {:>7} records, head {} {}",
                c.host,
                c.records,
                c.head_seq,
                match broken {
                    Some(b) => format!("BROKEN at record {}: {}", b.seq, b.reason),
                    None => "ok".into(),
                }
            );
        }
        if r.chains.is_empty() {
            println!("no audit records yet");
        }
    }
    match &r.first_break {
        Some(b) => anyhow::bail!(
            "audit chain broken: host {} record {}: {}",
            b.host,
            b.seq,
            b.reason
        ),
        None => {
            if !as_json {
                println!(
                    "all {} chains intact ({} records)",
                    r.chains.len(),
                    r.records
                );
            }
            Ok(())
        }
    }
}

pub fn run(c: &Client, cmd: AuditCmd) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::List {
            user,
            host,
            since,
            limit,
            json: as_json,
        } => {
            let es = c
                .audit_list(&AuditQuery {
                    limit: Some(limit),
                    user,
                    host,
                    since,
                })
                .context("cannot list the audit trail")?;
            if as_json {
                return json(&es);
            }
            for e in &es {
                println!("{}", describe(e));
            }
            if es.is_empty() {
                eprintln!("no audit records match");
            }
            Ok(())
        }
        AuditCmd::Verify { json: as_json } => {
            let r = c.audit_verify().context("cannot verify the audit trail")?;
            print_verify(&r, as_json)
        }
        AuditCmd::Rejections { json: as_json } => {
            let rs = c
                .audit_rejections(&RejectionQuery::default())
                .context("cannot list audit rejections")?;
            if as_json {
                return json(&rs);
            }
            for r in &rs {
                say(format!(
                    "{} {:<16} {} at record {} (batch {}..{}, {} records): {}",
                    time(r.at),
                    r.host,
                    r.code,
                    r.seq,
                    r.first_seq,
                    r.last_seq,
                    r.records,
                    r.reason
                ));
            }
            if rs.is_empty() {
                eprintln!("no upload was ever rejected");
            }
            Ok(())
        }
        AuditCmd::OutOfBand {
            window,
            threshold,
            json: as_json,
        } => {
            let fs = c
                .audit_out_of_band(&OutOfBandQuery {
                    window_secs: Some(window),
                    threshold: Some(threshold as u64),
                })
                .context("cannot compute out-of-band access")?;
            if as_json {
                return json(&fs);
            }
            for f in &fs {
                say(format!(
                    "{} {:<8} #{:<5} {:<20} {}",
                    time(f.at_unix),
                    f.host,
                    f.seq,
                    f.kind,
                    f.detail
                ));
            }
            if fs.is_empty() {
                eprintln!(
                    "nothing out of band: every recorded login used a certificate this CA issued"
                );
            }
            Ok(())
        }
    }
}

pub fn run_offline(cmd: OfflineCmd) -> anyhow::Result<()> {
    match cmd {
        OfflineCmd::Verify {
            data_dir,
            json: as_json,
        } => {
            let db = crate::datadir::DataDir::new(&data_dir).db();
            if !db.exists() {
                anyhow::bail!("{} does not exist; pass the CA's --data-dir", db.display());
            }
            let r = crate::store::sqlite::SqliteStore::verify_file(&db)
                .with_context(|| format!("cannot read the audit tables of {}", db.display()))?;
            print_verify(&r, as_json)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_rfc3339_and_relative() {
        assert_eq!(parse_since("2025-01-31T12:00:00Z").unwrap(), 1_738_324_800);
        let t = parse_since("1h").unwrap();
        assert!((now() - 3600).abs_diff(t) <= 2);
        assert!(parse_since("yesterday").is_err());
    }
}
