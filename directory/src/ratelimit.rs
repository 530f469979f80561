//! Failed-login rate limit per source address.
//!
//! Account lockout stops guessing one account's password; this stops one source from
//! guessing across many accounts (and from burning our CPU on argon2). Each source
//! (an IPv4 address, or an IPv6 /64, since one host usually owns a whole /64) gets a
//! window: `max_failures` failures within `window` block it for `block`, doubling per
//! block while it keeps failing, capped at `max_block` (settings: [`SourcePolicy`], the
//! `[source_limit]` table, declared in [`crate::config`]).
//!
//! The table is bounded by `max_sources`. When it is full, stale entries are purged; if
//! it is still full, new sources are not tracked (fail open, logged): failing closed would
//! let anyone with many addresses lock everybody out. Account lockout still applies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use crate::config::SourcePolicy;

#[derive(Debug)]
struct Entry {
    failures: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
    blocks: u32,
}

/// The per-source failure table.
#[derive(Debug)]
pub struct SourceLimiter {
    policy: SourcePolicy,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl SourceLimiter {
    /// An empty table under `policy`.
    pub fn new(policy: SourcePolicy) -> Self {
        Self {
            policy,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` when `ip` is blocked at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match table.get(&source_key(ip)).and_then(|e| e.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts one failure from `ip`. Returns `Some(block)` when this failure blocked it.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let key = source_key(ip);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&key) && table.len() >= self.policy.max_sources {
            purge(&mut table, &self.policy, now);
            if table.len() >= self.policy.max_sources {
                tracing::warn!(
                    "source rate-limit table full ({} sources); not tracking {key}",
                    table.len()
                );
                return None;
            }
        }
        let entry = table.entry(key).or_insert(Entry {
            failures: 0,
            window_start: now,
            blocked_until: None,
            blocks: 0,
        });
        if now.duration_since(entry.window_start) > self.policy.window {
            entry.failures = 0;
            entry.window_start = now;
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures < self.policy.max_failures.max(1) {
            return None;
        }
        let factor = 1u32.checked_shl(entry.blocks.min(31)).unwrap_or(u32::MAX);
        let block = self
            .policy
            .block
            .saturating_mul(factor)
            .min(self.policy.max_block);
        entry.blocked_until = Some(now + block);
        entry.blocks = entry.blocks.saturating_add(1);
        entry.failures = 0;
        entry.window_start = now;
        Some(block)
    }

    /// Forgets sources whose window and block have both run out.
    pub fn purge(&self, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        purge(&mut table, &self.policy, now);
    }

    /// Number of sources tracked.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn purge(table: &mut HashMap<IpAddr, Entry>, policy: &SourcePolicy, now: Instant) {
    table.retain(|_, e| {
        let blocked = e.blocked_until.is_some_and(|u| u > now);
        // Keep a recently blocked source a while longer so its back-off keeps growing.
        let recent = now.duration_since(e.window_start) <= policy.window.max(policy.max_block);
        blocked || recent
    });
}

/// The key a source is counted under: the IPv4 address, or the IPv6 /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SourcePolicy {
        SourcePolicy {
            max_failures: 3,
            window: Duration::from_secs(60),
            block: Duration::from_secs(10),
            max_block: Duration::from_secs(25),
            max_sources: 2,
        }
    }

    #[test]
    fn blocks_after_failures_with_growing_backoff() {
        let l = SourceLimiter::new(policy());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(l.record_failure(ip, t0), None);
        assert_eq!(l.record_failure(ip, t0), None);
        assert!(l.check(ip, t0).is_ok());
        assert_eq!(l.record_failure(ip, t0), Some(Duration::from_secs(10)));
        assert_eq!(l.check(ip, t0), Err(Duration::from_secs(10)));
        let t1 = t0 + Duration::from_secs(11);
        assert!(l.check(ip, t1).is_ok());
        for _ in 0..2 {
            l.record_failure(ip, t1);
        }
        assert_eq!(l.record_failure(ip, t1), Some(Duration::from_secs(20)));
        let t2 = t1 + Duration::from_secs(21);
        for _ in 0..2 {
            l.record_failure(ip, t2);
        }
        assert_eq!(l.record_failure(ip, t2), Some(Duration::from_secs(25)));
    }

    #[test]
    fn ipv6_counts_per_64_and_table_is_bounded() {
        let l = SourceLimiter::new(policy());
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        l.record_failure(a, t0);
        l.record_failure(b, t0);
        assert_eq!(l.len(), 1);
        l.record_failure("192.0.2.1".parse().unwrap(), t0);
        l.record_failure("192.0.2.2".parse().unwrap(), t0);
        assert_eq!(l.len(), 2, "table stays within max_sources");
        // Much later, stale entries make room again.
        let later = t0 + Duration::from_secs(3600);
        l.record_failure("192.0.2.3".parse().unwrap(), later);
        assert_eq!(l.len(), 1);
    }
}
