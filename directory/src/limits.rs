//! Connection limits: how many connections at once, in total and per source address, and
//! how many requests per second on one connection.
//!
//! The accept loop takes a [`ConnSlot`] for every incoming connection before doing any
//! work for it (no handshake, no task) and refuses the connection if none is free. The
//! slot is given back when the connection's task ends, whatever the reason.
//!
//! Each connection also has a [`RequestBudget`] (a token bucket): requests beyond it are
//! answered `Error{RateLimited}` without being processed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
}
