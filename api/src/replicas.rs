//! Several URLs of one CA (its replicas: copies of one data directory serving one
//! database) and which of them a client uses now.
//!
//! A [`Replicas`] is shared by every client built with it (hostd's sync, audit uploads
//! and renewals move together; a CLI's requests too). The client ([`crate::client`])
//! asks it where to send each request ([`Replicas::attempt_order`]), and tells it what
//! happened: an answer ([`Replicas::answered`]) or a replica that does not answer
//! ([`Replicas::failed`]: connection refused or reset, a TLS handshake or an answer that
//! does not come in time, a 502/503). A failure of the replica in use moves every client
//! to the next URL in the list (a *failover*, counted and reported through the
//! `on_failover` callback); requests still waiting on the failed replica are abandoned
//! ([`Replicas::failed_since`]). While a later URL is in use, the earlier ones are
//! tried again every [`Replicas::retry_preferred`] (default
//! [`DEFAULT_RETRY_PREFERRED`]): the first request after that goes to the first URL,
//! so a recovered replica gets its clients back.
//!
//! Owns: the list (validated: `https://`, no duplicates, at least one), the current
//! index and the failover count. Must never: reorder the list (the first URL is the
//! preferred one), or block (its lock is held for a few instructions).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Default time after which a client on a later URL tries the earlier ones again.
pub const DEFAULT_RETRY_PREFERRED: Duration = Duration::from_secs(30);

/// A move of the clients from one replica to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub from: String,
    pub to: String,
    /// Why `from` was left (the error), or `preferred replica answers again`.
    pub reason: String,
    /// Failovers so far (returns to a preferred replica not counted).
    pub count: u64,
    /// `true`: back to an earlier URL that answers again; `false`: away from a replica
    /// that failed.
    pub returned: bool,
}

/// What a status report shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaStatus {
    /// The URL in use.
    pub url: String,
    /// Every URL, preferred first.
    pub urls: Vec<String>,
    /// Times the clients moved away from a replica that failed.
    pub failovers: u64,
}

/// What a [`Replicas`] calls at each move.
pub type OnFailover = Box<dyn Fn(&Failover) + Send + Sync>;

struct State {
    current: usize,
    failovers: u64,
    /// When the earlier URLs were last tried (or left).
    last_probe: Instant,
}

/// See the module doc.
pub struct Replicas {
    urls: Vec<String>,
    state: Mutex<State>,
    /// Per URL, how many times it was found failed (requests on it watch this).
    failures: watch::Sender<Vec<u64>>,
    /// Per URL, the heartbeat period its long polls were last seen with (0: none seen).
    beats: Vec<AtomicU64>,
    retry_preferred: Duration,
    on_failover: Option<OnFailover>,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas")
            .field("urls", &self.urls)
            .field("current", &self.lock().current)
            .finish()
    }
}

/// Splits a list of URLs as people write it (`SMITH_CA_URL=URL1,URL2`, or several
/// flags, each possibly a list): commas and whitespace separate.
pub fn split_urls<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    items
        .iter()
        .flat_map(|s| {
            s.as_ref()
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|u| !u.is_empty())
                .map(|u| u.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Replicas {
    /// The replicas at `urls` (preferred first). Refused: none, one not `https://`, or
    /// the same URL twice.
    pub fn new(urls: Vec<String>) -> Result<Replicas, String> {
        Replicas::with(urls, DEFAULT_RETRY_PREFERRED, None)
    }

    /// [`Replicas::new`] retrying earlier URLs every `retry_preferred` and calling
    /// `on_failover` at each move (from whichever task noticed; keep it short).
    pub fn with(
        urls: Vec<String>,
        retry_preferred: Duration,
        on_failover: Option<OnFailover>,
    ) -> Result<Replicas, String> {
        let urls: Vec<String> = urls
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        if urls.is_empty() {
            return Err("no CA URL given".into());
        }
        for (i, u) in urls.iter().enumerate() {
            let rest = u
                .strip_prefix("https://")
                .ok_or_else(|| format!("CA URL '{u}' must start with https://"))?;
            if rest.is_empty() || rest.starts_with('/') {
                return Err(format!("CA URL '{u}' has no host"));
            }
            if urls[..i].contains(u) {
                return Err(format!("CA URL '{u}' is given twice"));
            }
        }
        let n = urls.len();
        Ok(Replicas {
            urls,
            state: Mutex::new(State {
                current: 0,
                failovers: 0,
                last_probe: Instant::now(),
            }),
            failures: watch::channel(vec![0; n]).0,
            beats: (0..n).map(|_| AtomicU64::new(0)).collect(),
            retry_preferred,
            on_failover,
        })
    }

    /// A shared handle (what [`crate::ClientOptions::replicas`] takes).
    pub fn shared(self) -> Arc<Replicas> {
        Arc::new(self)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    pub fn url(&self, i: usize) -> &str {
        &self.urls[i % self.urls.len()]
    }

    /// The URL in use.
    pub fn current(&self) -> &str {
        self.url(self.lock().current)
    }

    /// The index of the URL in use.
    pub fn current_index(&self) -> usize {
        self.lock().current
    }

    /// Replica `i` answered a long poll with a heartbeat of `secs` seconds.
    pub fn saw_beat(&self, i: usize, secs: u64) {
        if let Some(b) = self.beats.get(i) {
            b.store(secs, Ordering::Relaxed);
        }
    }

    /// The heartbeat period replica `i`'s long polls were last seen with: such a
    /// replica answers a long poll's headers at once.
    pub fn beat(&self, i: usize) -> Option<u64> {
        self.beats
            .get(i)
            .map(|b| b.load(Ordering::Relaxed))
            .filter(|b| *b > 0)
    }

    pub fn failovers(&self) -> u64 {
        self.lock().failovers
    }

    pub fn retry_preferred(&self) -> Duration {
        self.retry_preferred
    }

    pub fn status(&self) -> ReplicaStatus {
        let st = self.lock();
        ReplicaStatus {
            url: self.url(st.current).to_string(),
            urls: self.urls.clone(),
            failovers: st.failovers,
        }
    }

    /// The URLs to try for one request, in order: the one in use, then the others
    /// (wrapping); from the first URL instead when a later one is in use and the earlier
    /// ones were last tried [`Replicas::retry_preferred`] ago.
    pub fn attempt_order(&self) -> Vec<usize> {
        let n = self.urls.len();
        let mut st = self.lock();
        let start = if st.current != 0 && st.last_probe.elapsed() >= self.retry_preferred {
            st.last_probe = Instant::now();
            0
        } else {
            st.current
        };
        (0..n).map(|k| (start + k) % n).collect()
    }

    /// How many times replica `i` was found failed so far (give it to
    /// [`Replicas::failed_since`]).
    pub fn failure_count(&self, i: usize) -> u64 {
        self.failures.borrow().get(i).copied().unwrap_or(0)
    }

    /// Resolves once replica `i` is found failed after `count`
    /// ([`Replicas::failure_count`]): a request waiting on it gives up.
    pub async fn failed_since(&self, i: usize, count: u64) {
        let mut rx = self.failures.subscribe();
        let _ = rx
            .wait_for(|v| v.get(i).copied().unwrap_or(0) > count)
            .await;
    }

    /// Replica `i` answered (an error answer too): it becomes the one in use.
    pub fn answered(&self, i: usize) {
        let event = {
            let mut st = self.lock();
            if st.current == i {
                return;
            }
            let from = st.current;
            st.current = i;
            st.last_probe = Instant::now();
            Failover {
                from: self.url(from).to_string(),
                to: self.url(i).to_string(),
                reason: if i < from {
                    "an earlier (preferred) replica answers again".into()
                } else {
                    "the replica in use did not answer".into()
                },
                count: st.failovers,
                returned: i < from,
            }
        };
        if let Some(cb) = &self.on_failover {
            cb(&event);
        }
    }

    /// Replica `i` did not answer (`why`). If it is the one in use, the next URL
    /// becomes it (a failover); requests waiting on it give up either way.
    pub fn failed(&self, i: usize, why: &str) {
        self.failures.send_modify(|v| {
            if let Some(c) = v.get_mut(i) {
                *c += 1;
            }
        });
        if self.urls.len() < 2 {
            return;
        }
        let event = {
            let mut st = self.lock();
            if st.current != i {
                return;
            }
            st.current = (i + 1) % self.urls.len();
            st.failovers += 1;
            st.last_probe = Instant::now();
            Failover {
                from: self.url(i).to_string(),
                to: self.url(st.current).to_string(),
                reason: why.to_string(),
                count: st.failovers,
                returned: false,
            }
        };
        if let Some(cb) = &self.on_failover {
            cb(&event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("https://ca{i}:8443")).collect()
    }

    #[test]
    fn lists_are_validated_and_split_like_people_write_them() {
        assert!(Replicas::new(vec![]).is_err());
        assert!(Replicas::new(vec!["http://a".into()]).is_err());
        assert!(Replicas::new(vec!["https://".into()]).is_err());
        assert!(Replicas::new(vec!["https://a/".into(), "https://a".into()]).is_err());
        assert_eq!(
            split_urls(&["https://a:1/, https://b:2", "https://c:3"]),
            vec!["https://a:1", "https://b:2", "https://c:3"]
        );
    }

    #[test]
    fn a_failure_of_the_replica_in_use_moves_everyone_once_and_counts() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let r = Replicas::with(
            urls(3),
            Duration::from_secs(3600),
            Some(Box::new(move |f: &Failover| {
                s.lock().unwrap().push(f.clone())
            })),
        )
        .unwrap();
        assert_eq!(r.attempt_order(), vec![0, 1, 2]);
        r.failed(0, "connection refused");
        // A second request that failed on the same replica does not move again.
        r.failed(0, "connection refused");
        assert_eq!(r.current(), "https://ca1:8443");
        assert_eq!(r.failovers(), 1);
        assert_eq!(r.attempt_order(), vec![1, 2, 0]);
        assert_eq!(r.failure_count(0), 2);
        let f = seen.lock().unwrap().clone();
        assert_eq!(f.len(), 1);
        assert_eq!(
            (
                f[0].from.as_str(),
                f[0].to.as_str(),
                f[0].count,
                f[0].returned
            ),
            ("https://ca0:8443", "https://ca1:8443", 1, false)
        );
        // An answer from another replica makes it the one in use.
        r.answered(2);
        assert_eq!(r.current(), "https://ca2:8443");
        assert_eq!(r.status().failovers, 1);
    }

    #[test]
    fn earlier_urls_are_tried_again_after_the_retry_period() {
        let r = Replicas::with(urls(2), Duration::from_millis(50), None).unwrap();
        r.failed(0, "reset");
        assert_eq!(r.attempt_order(), vec![1, 0]);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(r.attempt_order(), vec![0, 1], "the preferred one first");
        // Only once per period.
        assert_eq!(r.attempt_order(), vec![1, 0]);
        r.answered(0);
        assert_eq!(r.current(), "https://ca0:8443");
        assert_eq!(r.failovers(), 1, "a return is not a failover");
    }

    #[tokio::test]
    async fn requests_waiting_on_a_failed_replica_give_up() {
        let r = Arc::new(Replicas::new(urls(2)).unwrap());
        let c = r.failure_count(0);
        let r2 = r.clone();
        let waiter = tokio::spawn(async move { r2.failed_since(0, c).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        r.failed(1, "not the one waited on");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        r.failed(0, "timeout");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
