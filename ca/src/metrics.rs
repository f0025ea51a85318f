//! The CA's metrics, in the Prometheus text exposition format (version 0.0.4), served on
//! `--metrics-listen` (plain HTTP, off by default; see `server::metrics`).
//!
//! Hand-written rather than a crate: a handful of counters, gauges and histograms over
//! atomics, rendered in ~100 lines, no registry, no dependency to keep up.
//!
//! Process-wide ([`METRICS`]): one `smith-ca serve` per process in production; tests
//! that start several CAs in one process see their sums.
//!
//! Must never: carry a user name, host name, token or key in a label or a value (labels
//! are fixed words: outcomes), or block (every update is one atomic operation).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A monotonic counter.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// A value that goes up and down.
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Gauge::new()
    }
}

/// A latency histogram over [`BUCKETS`].
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// Every metric of the CA.
pub struct Metrics {
    pub issuance_allowed: Counter,
    pub issuance_denied: Counter,
    /// Issuance requests that failed for another reason (authentication, rate limit,
    /// a store error).
    pub issuance_failed: Counter,
    /// Time from the request to the answer of allowed issuances.
    pub issuance_seconds: Histogram,
    /// Hosts waiting in a sync long poll now.
    pub sync_waiters: Gauge,
    /// Syncs answered (a snapshot or "nothing changed").
    pub syncs: Counter,
    /// Store transactions (issuance batches, audit uploads, changes): time to commit.
    pub store_commit_seconds: Histogram,
    pub audit_batches_accepted: Counter,
    pub audit_batches_rejected: Counter,
    pub audit_records_accepted: Counter,
    /// How far this replica's model is behind the database, in milliseconds (set by a
    /// store that follows other replicas; 0 on the embedded store).
    pub replica_lag_millis: Gauge,
}

/// The process's metrics.
pub static METRICS: Metrics = Metrics {
    issuance_allowed: Counter::new(),
    issuance_denied: Counter::new(),
    issuance_failed: Counter::new(),
    issuance_seconds: Histogram::new(),
    sync_waiters: Gauge::new(),
    syncs: Counter::new(),
    store_commit_seconds: Histogram::new(),
    audit_batches_accepted: Counter::new(),
    audit_batches_rejected: Counter::new(),
    audit_records_accepted: Counter::new(),
    replica_lag_millis: Gauge::new(),
};

/// Counts a long-polling host while it lives.
pub struct Waiting(());

impl Waiting {
    pub fn start() -> Waiting {
        METRICS.sync_waiters.add(1);
        Waiting(())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        METRICS.sync_waiters.add(-1);
    }
}

/// Values read from the authority at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    pub policy_version: u64,
    pub ready: bool,
    pub rejected_credentials: u64,
    pub users: u64,
    pub hosts: u64,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    header(out, name, "histogram", help);
    let mut cumulative = 0;
    for (i, b) in BUCKETS.iter().enumerate() {
        cumulative += h.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
    }
    let count = h.count();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn render(&self, live: &Live) -> String {
        let mut o = String::with_capacity(4096);
        header(
            &mut o,
            "smith_ca_issuance_total",
            "counter",
            "Certificate requests by outcome: allowed, denied (by policy, recorded as a decision), failed (authentication, rate limit, store).",
        );
        for (outcome, c) in [
            ("allowed", &self.issuance_allowed),
            ("denied", &self.issuance_denied),
            ("failed", &self.issuance_failed),
        ] {
            let _ = writeln!(
                o,
                "smith_ca_issuance_total{{outcome=\"{outcome}\"}} {}",
                c.get()
            );
        }
        histogram(
            &mut o,
            "smith_ca_issuance_seconds",
            "Time to answer an allowed certificate request, its record durable.",
            &self.issuance_seconds,
        );
        header(
            &mut o,
            "smith_ca_sync_waiters",
            "gauge",
            "Hosts waiting in a sync long poll.",
        );
        let _ = writeln!(o, "smith_ca_sync_waiters {}", self.sync_waiters.get());
        header(
            &mut o,
            "smith_ca_syncs_total",
            "counter",
            "Host syncs answered (a snapshot, or nothing changed).",
        );
        let _ = writeln!(o, "smith_ca_syncs_total {}", self.syncs.get());
        histogram(
            &mut o,
            "smith_ca_store_commit_seconds",
            "Time to commit one store transaction (a group of issuance records, audit uploads, a change).",
            &self.store_commit_seconds,
        );
        header(
            &mut o,
            "smith_ca_audit_uploads_total",
            "counter",
            "Host audit batches by outcome.",
        );
        for (outcome, c) in [
            ("accepted", &self.audit_batches_accepted),
            ("rejected", &self.audit_batches_rejected),
        ] {
            let _ = writeln!(
                o,
                "smith_ca_audit_uploads_total{{outcome=\"{outcome}\"}} {}",
                c.get()
            );
        }
        header(
            &mut o,
            "smith_ca_audit_records_total",
            "counter",
            "Host audit records stored.",
        );
        let _ = writeln!(
            o,
            "smith_ca_audit_records_total {}",
            self.audit_records_accepted.get()
        );
        header(
            &mut o,
            "smith_ca_replica_lag_seconds",
            "gauge",
            "How far this replica's model is behind the shared database (0 on the embedded store).",
        );
        let _ = writeln!(
            o,
            "smith_ca_replica_lag_seconds {}",
            self.replica_lag_millis.get().max(0) as f64 / 1000.0
        );
        header(
            &mut o,
            "smith_ca_policy_version",
            "gauge",
            "The policy version hosts sync to.",
        );
        let _ = writeln!(o, "smith_ca_policy_version {}", live.policy_version);
        header(
            &mut o,
            "smith_ca_ready",
            "gauge",
            "1 when this replica is ready (GET /v1/health/ready answers 200).",
        );
        let _ = writeln!(o, "smith_ca_ready {}", u8::from(live.ready));
        header(
            &mut o,
            "smith_ca_rejected_credentials_total",
            "counter",
            "Credentials refused before authentication (forged, replayed, expired).",
        );
        let _ = writeln!(
            o,
            "smith_ca_rejected_credentials_total {}",
            live.rejected_credentials
        );
        header(&mut o, "smith_ca_users", "gauge", "Users in the model.");
        let _ = writeln!(o, "smith_ca_users {}", live.users);
        header(&mut o, "smith_ca_hosts", "gauge", "Enrolled hosts.");
        let _ = writeln!(o, "smith_ca_hosts {}", live.hosts);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_the_text_is_well_formed() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(9));
        let mut o = String::new();
        histogram(&mut o, "x_seconds", "help", &h);
        assert!(o.contains("x_seconds_bucket{le=\"0.0005\"} 1\n"), "{o}");
        assert!(o.contains("x_seconds_bucket{le=\"0.005\"} 2\n"), "{o}");
        assert!(o.contains("x_seconds_bucket{le=\"5\"} 2\n"), "{o}");
        assert!(o.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{o}");
        assert!(o.contains("x_seconds_count 3\n"), "{o}");
        let text = METRICS.render(&Live::default());
        for line in text.lines() {
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP smith_ca_") || line.starts_with("# TYPE smith_ca_")
                );
                continue;
            }
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("smith_ca_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
