//! Per-principal rate limits: a token bucket per user name, in memory (a restart
//! refills them; the limit bounds floods, it is not an accounting).
//!
//! A request beyond the limit is answered 429 `rate_limited` with the wait, and is not
//! recorded as a decision (a flood must not grow the store); the CA logs a warning at
//! most once a minute per principal with how many were refused.
//!
//! Must never: block, or hold its lock while doing anything but arithmetic.

use std::collections::HashMap;
use std::sync::Mutex;

/// At most `count` requests per `period_secs` per principal, as a bucket of `count`
/// refilled at that rate (`count` 0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub period_secs: u64,
}

impl Default for RateLimit {
    /// 60 every 10 minutes: a burst of 60, then one every 10 s.
    fn default() -> RateLimit {
        RateLimit {
            count: 60,
            period_secs: 600,
        }
    }
}

impl RateLimit {
    pub const OFF: RateLimit = RateLimit {
        count: 0,
        period_secs: 1,
    };

    /// `N/PERIOD` (`60/10m`, `5/s`) or `off`.
    pub fn parse(s: &str) -> Result<RateLimit, String> {
        let s = s.trim();
        if s == "off" {
            return Ok(RateLimit::OFF);
        }
        let (n, p) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not a rate like 60/10m (or off)"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("'{n}' is not a count"))?;
        let p = p.trim();
        let p = if p.starts_with(|c: char| c.is_ascii_digit()) {
            p.to_string()
        } else {
            format!("1{p}")
        };
        let period = humantime::parse_duration(&p)
            .map_err(|e| format!("'{p}' is not a period like 10m: {e}"))?;
        if count == 0 || period.as_secs() == 0 {
            return Err("a rate needs a count and a period of at least 1 s (or off)".into());
        }
        Ok(RateLimit {
            count,
            period_secs: period.as_secs(),
        })
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return f.write_str("off");
        }
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(std::time::Duration::from_secs(self.period_secs))
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left, in millionths.
    level: u64,
    /// Last refill, in milliseconds.
    at_ms: u64,
    refused: u64,
    warned_ms: u64,
}

/// The buckets of one limit.
pub(super) struct Buckets {
    limit: RateLimit,
    map: Mutex<HashMap<String, Bucket>>,
}

const UNIT: u64 = 1_000_000;
/// Beyond this many principals, full buckets are dropped (they carry no state).
const MAX_TRACKED: usize = 100_000;

impl Buckets {
    pub fn new(limit: RateLimit) -> Buckets {
        Buckets {
            limit,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request for `key` at `now_ms`: `Err(seconds to wait)` when over.
    pub fn take(&self, key: &str, now_ms: u64) -> Result<(), u64> {
        let l = self.limit;
        if l.count == 0 {
            return Ok(());
        }
        let cap = l.count as u64 * UNIT;
        // Tokens (millionths) per millisecond.
        let rate = (cap as f64) / (l.period_secs as f64 * 1000.0);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > MAX_TRACKED {
            map.retain(|_, b| {
                let refill = (now_ms.saturating_sub(b.at_ms) as f64 * rate) as u64;
                b.level.saturating_add(refill) < cap
            });
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            level: cap,
            at_ms: now_ms,
            refused: 0,
            warned_ms: 0,
        });
        let refill = (now_ms.saturating_sub(b.at_ms) as f64 * rate) as u64;
        b.level = b.level.saturating_add(refill).min(cap);
        b.at_ms = now_ms;
        if b.level >= UNIT {
            b.level -= UNIT;
            return Ok(());
        }
        b.refused += 1;
        if now_ms.saturating_sub(b.warned_ms) >= 60_000 {
            tracing::warn!(principal = %key, refused = b.refused, limit = %l, "certificate requests over the per-principal rate limit refused (429)");
            b.warned_ms = now_ms;
            b.refused = 0;
        }
        let missing = (UNIT - b.level) as f64;
        Err(((missing / rate) / 1000.0).ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let b = Buckets::new(RateLimit::parse("3/1m").unwrap());
        for _ in 0..3 {
            assert!(b.take("alice", 0).is_ok());
        }
        let wait = b.take("alice", 0).unwrap_err();
        assert!((19..=20).contains(&wait), "{wait}");
        assert!(b.take("bob", 0).is_ok(), "per principal");
        assert!(b.take("alice", 20_000).is_ok(), "one token back after 20 s");
        assert!(b.take("alice", 20_001).is_err());
        let off = Buckets::new(RateLimit::OFF);
        assert!((0..1000).all(|_| off.take("x", 0).is_ok()));
        assert_eq!(RateLimit::parse("60/10m").unwrap(), RateLimit::default());
        assert_eq!(RateLimit::parse("5/s").unwrap().period_secs, 1);
        assert!(RateLimit::parse("0/s").is_err() && RateLimit::parse("x").is_err());
        assert_eq!(RateLimit::default().to_string(), "60/10m");
    }
}
