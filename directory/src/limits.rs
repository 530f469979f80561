//! Connection limits: how many connections at once, in total and per source address, how
//! many new connections (handshakes) per second per source address, and how many
//! requests per second on one connection.
//!
//! Connections come in two kinds with separate budgets. A new connection is *anonymous*
//! until it logs in (or proves to be another instance of this directory); anonymous
//! connections are capped in total (`max_anonymous`) and per source
//! (`max_anonymous_per_ip`), and must log in within `login_timeout` of `Welcome` (see
//! [`crate::connection`]). A connection that logs in moves to the *user* budget
//! (`max_connections` in total), which anonymous connections can never consume. Both
//! kinds together are capped per source (`max_connections_per_ip`).
//!
//! When the anonymous budget is full, a newcomer from a source holding fewer anonymous
//! connections than the busiest source takes the place of the busiest source's oldest
//! anonymous connection (which is told through [`ConnSlot::evicted`] and closes). So a
//! flood of strangers from a few addresses cannot keep anybody else from reaching the
//! login: it would need as many source addresses as there are anonymous slots.
//!
//! The accept loop asks [`HandshakeLimits`] and takes a [`ConnSlot`] for every incoming
//! connection before doing any work for it (no handshake, no task), and refuses the
//! connection if either says no. The slot is given back when the connection's task ends,
//! whatever the reason.
//!
//! Each connection also has a [`RequestBudget`] (a token bucket): requests beyond it are
//! answered `Error{RateLimited}` without being processed.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::Config;
use crate::ratelimit::source_key;

/// How many connections of each kind one source holds.
#[derive(Debug, Default)]
struct Source {
    /// Logged-in connections.
    users: usize,
    /// Anonymous connections, oldest first, with their eviction signals.
    anonymous: VecDeque<(u64, Arc<Notify>)>,
}

impl Source {
    fn total(&self) -> usize {
        self.users + self.anonymous.len()
    }
}

#[derive(Debug, Default)]
struct Counts {
    users: usize,
    anonymous: usize,
    next_id: u64,
    per_source: HashMap<IpAddr, Source>,
}

impl Counts {
    fn forget_if_empty(&mut self, key: IpAddr) {
        if self.per_source.get(&key).is_some_and(|s| s.total() == 0) {
            self.per_source.remove(&key);
        }
    }

    /// Evicts the oldest anonymous connection of the source holding the most, if that
    /// source holds more than `than` + 1 (so the eviction makes the share fairer).
    fn evict_from_busiest(&mut self, than: usize) -> bool {
        let busiest = self
            .per_source
            .iter()
            .map(|(key, s)| (s.anonymous.len(), *key))
            .max();
        let Some((held, key)) = busiest else {
            return false;
        };
        if held <= than + 1 {
            return false;
        }
        let source = self.per_source.get_mut(&key).expect("just found");
        let Some((_, notify)) = source.anonymous.pop_front() else {
            return false;
        };
        notify.notify_one();
        self.anonymous -= 1;
        self.forget_if_empty(key);
        true
    }
}

/// The caps [`ConnLimits`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnCaps {
    /// Logged-in connections in total.
    pub users: usize,
    /// Connections of both kinds from one source.
    pub per_source: usize,
    /// Anonymous connections in total.
    pub anonymous: usize,
    /// Anonymous connections from one source.
    pub anonymous_per_source: usize,
}

impl ConnCaps {
    /// The caps `config` sets.
    pub fn of(config: &Config) -> Self {
        Self {
            users: config.max_connections,
            per_source: config.max_connections_per_ip,
            anonymous: config.max_anonymous,
            anonymous_per_source: config.max_anonymous_per_ip,
        }
    }
}

/// Counts open connections against the configured limits. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    caps: ConnCaps,
    counts: Arc<Mutex<Counts>>,
}

impl ConnLimits {
    /// Limits of `caps` (a source is an IPv4 address or an IPv6 /64).
    pub fn new(caps: ConnCaps) -> Self {
        Self {
            caps,
            counts: Arc::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An anonymous slot for a new connection from `ip`, or `None` if a limit is reached
    /// (possibly evicting another source's oldest anonymous connection, see the module
    /// docs).
    pub fn try_acquire(&self, ip: IpAddr) -> Option<ConnSlot> {
        let key = source_key(ip);
        let mut counts = self.counts();
        let (total, anonymous) = counts
            .per_source
            .get(&key)
            .map_or((0, 0), |s| (s.total(), s.anonymous.len()));
        if total >= self.caps.per_source || anonymous >= self.caps.anonymous_per_source {
            return None;
        }
        if counts.anonymous >= self.caps.anonymous && !counts.evict_from_busiest(anonymous) {
            return None;
        }
        let id = counts.next_id;
        counts.next_id += 1;
        counts.anonymous += 1;
        let evicted = Arc::new(Notify::new());
        counts
            .per_source
            .entry(key)
            .or_default()
            .anonymous
            .push_back((id, evicted.clone()));
        Some(ConnSlot {
            limits: self.clone(),
            key,
            id,
            user: false,
            evicted,
        })
    }

    /// Connections currently holding a slot (both kinds).
    pub fn open(&self) -> usize {
        let counts = self.counts();
        counts.users + counts.anonymous
    }

    /// Anonymous connections (not logged in yet) currently holding a slot.
    pub fn anonymous(&self) -> usize {
        self.counts().anonymous
    }
}

/// One connection's share of the limits; released on drop.
#[derive(Debug)]
pub struct ConnSlot {
    limits: ConnLimits,
    key: IpAddr,
    id: u64,
    /// Whether the slot moved to the user budget.
    user: bool,
    evicted: Arc<Notify>,
}

impl ConnSlot {
    /// Moves this connection to the user budget (on login). `false`, and nothing
    /// changes, when the user budget is full or this slot was evicted meanwhile.
    pub fn promote(&mut self) -> bool {
        if self.user {
            return true;
        }
        let mut counts = self.limits.counts();
        if counts.users >= self.limits.caps.users {
            return false;
        }
        let Some(source) = counts.per_source.get_mut(&self.key) else {
            return false;
        };
        let Some(at) = source.anonymous.iter().position(|(id, _)| *id == self.id) else {
            return false;
        };
        source.anonymous.remove(at);
        source.users += 1;
        counts.anonymous -= 1;
        counts.users += 1;
        self.user = true;
        true
    }

    /// Whether this connection is logged in (holds a user slot).
    pub fn is_user(&self) -> bool {
        self.user
    }

    /// Completes when this anonymous connection has lost its slot to a newcomer (see
    /// the module docs); it should close then. Never completes once promoted.
    pub async fn evicted(&self) {
        if self.user {
            return std::future::pending().await;
        }
        self.evicted.notified().await
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts();
        let Some(source) = counts.per_source.get_mut(&self.key) else {
            return;
        };
        if self.user {
            source.users = source.users.saturating_sub(1);
            counts.users = counts.users.saturating_sub(1);
        } else if let Some(at) = source.anonymous.iter().position(|(id, _)| *id == self.id) {
            source.anonymous.remove(at);
            counts.anonymous = counts.anonymous.saturating_sub(1);
        }
        counts.forget_if_empty(self.key);
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

    fn caps(
        users: usize,
        per_source: usize,
        anonymous: usize,
        anonymous_per_source: usize,
    ) -> ConnCaps {
        ConnCaps {
            users,
            per_source,
            anonymous,
            anonymous_per_source,
        }
    }

    #[test]
    fn per_source_and_total_limits() {
        let l = ConnLimits::new(caps(3, 2, 3, 2));
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
    fn logged_in_connections_leave_the_anonymous_budget() {
        let l = ConnLimits::new(caps(2, 10, 2, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mut a1 = l.try_acquire(a).unwrap();
        let mut a2 = l.try_acquire(a).unwrap();
        assert!(l.try_acquire(a).is_none(), "anonymous per-source limit");
        assert!(a1.promote() && a1.is_user());
        assert_eq!((l.open(), l.anonymous()), (2, 1));
        let mut a3 = l.try_acquire(a).unwrap();
        assert!(a2.promote());
        assert!(!a3.promote(), "the user budget is full");
        assert_eq!((l.open(), l.anonymous()), (3, 1));
        drop((a1, a2, a3));
        assert_eq!(l.open(), 0);
    }

    #[tokio::test]
    async fn a_newcomer_evicts_the_busiest_sources_oldest_stranger() {
        let l = ConnLimits::new(caps(10, 10, 3, 3));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let flood: Vec<_> = (0..3).map(|_| l.try_acquire(a).unwrap()).collect();
        assert!(
            l.try_acquire(a).is_none(),
            "the busiest source gets no more"
        );
        let mut b1 = l.try_acquire(b).expect("another source gets in");
        tokio::time::timeout(Duration::from_secs(1), flood[0].evicted())
            .await
            .expect("the oldest stranger is told to go");
        assert!(!flood.iter().any(|s| s.is_user()));
        assert_eq!(l.anonymous(), 3);
        // b taking a second one would be no fairer than a keeping it.
        assert!(l.try_acquire(b).is_none(), "no eviction that is not fairer");
        // A newcomer from c evicts again (a holds 2); then every source holds one.
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let _c1 = l.try_acquire(c).unwrap();
        let d: IpAddr = "192.0.2.4".parse().unwrap();
        assert!(l.try_acquire(d).is_none(), "all shares equal: refused");
        assert!(b1.promote());
        drop(flood);
        assert_eq!((l.open(), l.anonymous()), (2, 1));
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
