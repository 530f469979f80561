//! Connection limits: how many connections at once, in total and per source address, how
//! many new connections (handshakes) per second per source address, and how many
//! requests per second on one connection.
//!
//! The accept loop asks [`HandshakeLimits`] and takes a [`ConnSlot`] for every incoming
//! connection before doing any work for it (no handshake, no task), and refuses the
//! connection if either says no. The slot is given back when the connection's task ends,
//! whatever the reason.
//!
//! Each connection also has a [`RequestBudget`] (a token bucket): requests beyond it are
//! answered `Error{RateLimited}` without being processed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ratelimit::source_key;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// Counts open connections against the configured limits. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    max_total: usize,
    max_per_source: usize,
    counts: Arc<Mutex<Counts>>,
}

impl ConnLimits {
    /// Limits of `max_total` connections, `max_per_source` from one source (an IPv4
    /// address or an IPv6 /64).
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        Self {
            max_total,
            max_per_source,
            counts: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, or `None` if a limit is reached.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<ConnSlot> {
        let key = source_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max_total {
            return None;
        }
        let from_source = counts.per_source.get(&key).copied().unwrap_or(0);
        if from_source >= self.max_per_source {
            return None;
        }
        counts.total += 1;
        counts.per_source.insert(key, from_source + 1);
        Some(ConnSlot {
            limits: self.clone(),
            key,
        })
    }

    /// Connections currently holding a slot.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    fn release(&self, key: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_source.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_source.remove(&key);
            }
        }
    }
}

/// One connection's share of the limits; released on drop.
#[derive(Debug)]
pub struct ConnSlot {
    limits: ConnLimits,
    key: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.limits.release(self.key);
    }
}

/// A token bucket: `rate` requests per second on average, bursts of up to `burst`.
#[derive(Debug, Clone)]
pub struct RequestBudget {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RequestBudget {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now` (nothing to remember about it).
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }
}

/// What the accept loop does with a new connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go on with the handshake.
    Accept,
    /// Answer with a QUIC Retry first: the client must prove it owns its source address
    /// (one round trip, no state kept here), and comes back validated.
    Retry,
    /// Refuse before the handshake (QUIC `CONNECTION_REFUSED`).
    Refuse,
}

/// Handshakes per source address: a token bucket per source (an IPv4 address, or an
/// IPv6 /64), checked before any handshake work.
///
/// Each source has two buckets of the same size. Attempts from an address not yet proven
/// take from the first; when it is empty the client is sent a stateless Retry, and
/// attempts that come back with a valid Retry token (so the address is really theirs)
/// take from the second; when that is empty too, the attempt is refused. So a source
/// gets at most twice the burst, and a flood of packets with a forged source address,
/// which can only ever empty the first bucket, cannot lock the real owner of that
/// address out.
///
/// The table is bounded like [`crate::ratelimit::SourceLimiter`]'s: when it is full and
/// purging idle sources frees nothing, new sources are not limited (fail open, logged),
/// because failing closed would let anyone with many addresses keep everybody out; the
/// connection caps still apply.
#[derive(Debug)]
pub struct HandshakeLimits {
    rate: u32,
    burst: u32,
    max_sources: usize,
    table: Mutex<HashMap<IpAddr, [RequestBudget; 2]>>,
}

impl HandshakeLimits {
    /// `burst` handshakes at once per source, refilled at `rate` per second, tracking at
    /// most `max_sources` sources.
    pub fn new(rate: u32, burst: u32, max_sources: usize) -> Self {
        Self {
            rate,
            burst,
            max_sources,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Decides on an attempt from `ip` at `now`. `validated`: the client came back with a
    /// valid Retry token; `may_retry`: a Retry may still be sent.
    pub fn admit(&self, ip: IpAddr, validated: bool, may_retry: bool, now: Instant) -> Admission {
        let key = source_key(ip);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&key) && table.len() >= self.max_sources {
            purge_full(&mut table, now);
            if table.len() >= self.max_sources {
                tracing::warn!(
                    "handshake rate table full ({} sources); not limiting {key}",
                    table.len()
                );
                return Admission::Accept;
            }
        }
        let buckets = table.entry(key).or_insert_with(|| {
            let bucket = RequestBudget::new(self.rate, self.burst, now);
            [bucket.clone(), bucket]
        });
        if validated {
            return match buckets[1].try_take(now) {
                true => Admission::Accept,
                false => Admission::Refuse,
            };
        }
        match (buckets[0].try_take(now), may_retry) {
            (true, _) => Admission::Accept,
            (false, true) => Admission::Retry,
            (false, false) => Admission::Refuse,
        }
    }

    /// Forgets sources whose buckets have filled up again.
    pub fn purge(&self, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        purge_full(&mut table, now);
    }

    /// Number of sources tracked.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long a source's buckets take to fill up from empty (for purge intervals).
    pub fn refill_time(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst.max(1)) / f64::from(self.rate.max(1)))
    }
}

fn purge_full(table: &mut HashMap<IpAddr, [RequestBudget; 2]>, now: Instant) {
    table.retain(|_, b| !(b[0].is_full(now) && b[1].is_full(now)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn request_budget_refills() {
        let t0 = Instant::now();
        let mut b = RequestBudget::new(10, 3, t0);
        assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        assert!(!b.try_take(t0 + Duration::from_millis(100)));
        // Refill is capped at the burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.try_take(later)));
        assert!(!b.try_take(later));
    }

    #[test]
    fn per_source_and_total_limits() {
        let l = ConnLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = l.try_acquire(a).unwrap();
        let _a2 = l.try_acquire(a).unwrap();
        assert!(l.try_acquire(a).is_none(), "per-source limit");
        let _b1 = l.try_acquire(b).unwrap();
        assert!(l.try_acquire(b).is_none(), "total limit");
        drop(a1);
        assert_eq!(l.open(), 2);
        let _a3 = l.try_acquire(a).unwrap();
    }

    #[test]
    fn handshakes_per_source_retry_then_refuse() {
        let h = HandshakeLimits::new(1, 2, 2);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(h.admit(a, false, true, t0), Admission::Accept);
        assert_eq!(h.admit(a, false, true, t0), Admission::Accept);
        // Unproven bucket empty: prove the address first.
        assert_eq!(h.admit(a, false, true, t0), Admission::Retry);
        assert_eq!(h.admit(a, false, false, t0), Admission::Refuse);
        // Proven attempts have their own bucket, which a forged flood cannot empty.
        assert_eq!(h.admit(a, true, false, t0), Admission::Accept);
        assert_eq!(h.admit(a, true, false, t0), Admission::Accept);
        assert_eq!(h.admit(a, true, false, t0), Admission::Refuse);
        // Another source is not affected; a second later one more token each.
        assert_eq!(h.admit(b, false, true, t0), Admission::Accept);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(h.admit(a, false, true, t1), Admission::Accept);
        assert_eq!(h.admit(a, true, false, t1), Admission::Accept);
        // The table is bounded: a third source takes the place of one that refilled (b)
        // and, with both others busy, a fourth is let through untracked.
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(h.admit(c, false, true, t1), Admission::Accept);
        assert_eq!(h.len(), 2);
        let d: IpAddr = "192.0.2.4".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(h.admit(d, false, true, t1), Admission::Accept);
        }
        assert_eq!(h.len(), 2);
        h.purge(t1 + h.refill_time());
        assert!(h.is_empty());
    }
}
