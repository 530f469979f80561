//! Admission of incoming calls: what a stranger can make a listening peer spend.
//!
//! Anyone can dial a peer's endpoint with a throwaway key. Each call costs a TLS
//! handshake and, once the dialer has said whom it claims to be, a directory lookup out
//! of the user's own request allowance at the directory. So, in order:
//!
//! 1. Connections being answered are bounded per source ([`MAX_IN_FLIGHT_PER_SOURCE`])
//!    and in total ([`MAX_IN_FLIGHT`]) by [`Gate::enter`]; beyond that a connection is
//!    refused at the QUIC level, before any TLS work.
//! 2. Before a lookup, attempts from one source are held to a token bucket
//!    ([`SOURCE_BURST`], [`SOURCE_RATE`]), and then lookups in total to another
//!    ([`LOOKUP_BURST`], [`LOOKUP_RATE`]): beyond either the caller is refused with
//!    `Busy` ([`Gate::admit_source`], [`Gate::admit_lookup`]). The total bucket is far
//!    below the directory's per-connection allowance, so the user's own requests
//!    (`/who`, calls) still get through while strangers flood.
//! 3. Lookups that found someone are remembered for [`CACHE_TTL`] ([`Gate::cached`]). A
//!    remembered record is used only when it accepts this very connection (same name,
//!    key and address, checked exactly as a fresh answer is), so at worst a stale record
//!    costs a fresh lookup; it never accepts someone the directory would not have.
//! 4. Refusals are summarised ([`Gate::refused`]): the first one after a quiet spell is
//!    shown as it happens, the others are counted and shown as one note per
//!    [`SUMMARY_INTERVAL`]. (The calls service summarises only direct calls, which anyone can
//!    make; a relayed call, which the directory paired and bounds, and a contact whose
//!    pinned key changed, who got past the directory's check, are always named.)
//!
//! A source is an IPv4 address or an IPv6 /64. Every table is bounded; when the source
//! table is full of active sources, a new source is not tracked (it still meets the
//! total bounds): failing closed would let anyone with many addresses shut everyone out.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use proto::message::{ConnectRefusal, PeerInfo};

/// Most incoming connections being answered at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Most incoming connections from one source being answered at once.
pub const MAX_IN_FLIGHT_PER_SOURCE: usize = 8;
/// Calls one source may make in a burst before it is held to [`SOURCE_RATE`].
pub const SOURCE_BURST: f64 = 16.0;
/// Calls per second one source may make on average.
pub const SOURCE_RATE: f64 = 2.0;
/// Directory lookups for incoming calls in a burst before they are held to
/// [`LOOKUP_RATE`].
pub const LOOKUP_BURST: f64 = 32.0;
/// Directory lookups per second for incoming calls on average.
pub const LOOKUP_RATE: f64 = 8.0;
/// How long a lookup's answer is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(3);
/// How often, at most, refusals are summarised on screen.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// Most lookup answers remembered.
const MAX_CACHED: usize = 256;
/// Most sources tracked.
const MAX_SOURCES: usize = 4096;

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }

    fn try_take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate >= burst
    }
}

/// What happens to one refusal on screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Show it now: the first after a quiet spell.
    Now,
    /// Counted; the summary is due at this instant and nobody has asked for it yet.
    SummaryDue(tokio::time::Instant),
    /// Counted; a summary is already on its way.
    Counted,
}

/// Refusals counted since the last one shown.
#[derive(Debug, Default)]
struct Tally {
    /// When the current interval started (the last refusal or summary shown).
    since: Option<Instant>,
    counts: BTreeMap<&'static str, u64>,
    summary_due: bool,
}

/// Refusals summarised over an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub count: u64,
    pub secs: u64,
    /// Count per kind of refusal, most frequent first.
    pub by_reason: Vec<(String, u64)>,
}

#[derive(Debug, Default)]
struct State {
    in_flight: HashMap<IpAddr, usize>,
    total: usize,
    sources: HashMap<IpAddr, Bucket>,
    lookups: Option<Bucket>,
    cache: HashMap<String, (PeerInfo, Instant)>,
    tally: Tally,
}

/// The listening peer's admission state (see the module docs). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<Mutex<State>>);

/// A connection being answered: holds its place in the in-flight bounds until dropped.
#[derive(Debug)]
pub struct Entered {
    gate: Gate,
    source: IpAddr,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.in_flight.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                s.in_flight.remove(&self.source);
            }
        }
    }
}

/// The source an address counts against: the IPv4 address, or the IPv6 /64.
pub fn source_of(addr: SocketAddr) -> IpAddr {
    match addr.ip().to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection from `source`: its place among those being answered, or `None`
    /// when there are too many (from that source, or in all).
    pub fn enter(&self, source: IpAddr) -> Option<Entered> {
        let mut s = self.lock();
        let from_source = s.in_flight.get(&source).copied().unwrap_or(0);
        if s.total >= MAX_IN_FLIGHT || from_source >= MAX_IN_FLIGHT_PER_SOURCE {
            return None;
        }
        s.total += 1;
        *s.in_flight.entry(source).or_insert(0) += 1;
        Some(Entered {
            gate: self.clone(),
            source,
        })
    }

    /// One call from `source` (`None`: through the directory's relay) asks to be
    /// checked: `Busy` when that source has called too often.
    pub fn admit_source(&self, source: Option<IpAddr>) -> Result<(), ConnectRefusal> {
        let Some(source) = source else {
            return Ok(());
        };
        let now = Instant::now();
        let mut s = self.lock();
        if !s.sources.contains_key(&source) && s.sources.len() >= MAX_SOURCES {
            s.sources
                .retain(|_, b| !b.is_full(SOURCE_RATE, SOURCE_BURST, now));
            if s.sources.len() >= MAX_SOURCES {
                tracing::debug!(%source, "too many callers to track; not rate-limiting this one");
                return Ok(());
            }
        }
        let bucket = s
            .sources
            .entry(source)
            .or_insert_with(|| Bucket::full(SOURCE_BURST, now));
        if bucket.try_take(SOURCE_RATE, SOURCE_BURST, now) {
            Ok(())
        } else {
            Err(ConnectRefusal::Busy)
        }
    }

    /// A directory lookup for an incoming call is about to be made: `Busy` when too
    /// many were made lately.
    pub fn admit_lookup(&self) -> Result<(), ConnectRefusal> {
        let now = Instant::now();
        let mut s = self.lock();
        let bucket = s
            .lookups
            .get_or_insert_with(|| Bucket::full(LOOKUP_BURST, now));
        if bucket.try_take(LOOKUP_RATE, LOOKUP_BURST, now) {
            Ok(())
        } else {
            Err(ConnectRefusal::Busy)
        }
    }

    /// What a lookup of `claimed` found within the last [`CACHE_TTL`], if anything. The
    /// caller must check it exactly as a fresh answer.
    pub fn cached(&self, claimed: &str) -> Option<PeerInfo> {
        let s = self.lock();
        let (info, at) = s.cache.get(claimed)?;
        (at.elapsed() < CACHE_TTL).then(|| info.clone())
    }

    /// Remembers what a lookup of `claimed` found (nothing found is not remembered: a
    /// user who just logged in must not be refused for a few seconds).
    pub fn remember(&self, claimed: &str, info: Option<&PeerInfo>) {
        let now = Instant::now();
        let mut s = self.lock();
        let Some(info) = info else {
            s.cache.remove(claimed);
            return;
        };
        if !s.cache.contains_key(claimed) && s.cache.len() >= MAX_CACHED {
            s.cache
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < CACHE_TTL);
            if s.cache.len() >= MAX_CACHED {
                return;
            }
        }
        s.cache.insert(claimed.to_string(), (info.clone(), now));
    }

    /// Counts a refusal of kind `kind` (see [`refusal_kind`]) and says whether to show
    /// it now or in the next summary.
    pub fn refused(&self, kind: &'static str) -> Shown {
        let now = Instant::now();
        let mut s = self.lock();
        let tally = &mut s.tally;
        match tally.since {
            Some(since) if now.saturating_duration_since(since) < SUMMARY_INTERVAL => {
                *tally.counts.entry(kind).or_insert(0) += 1;
                if tally.summary_due {
                    Shown::Counted
                } else {
                    tally.summary_due = true;
                    let wait =
                        SUMMARY_INTERVAL.saturating_sub(now.saturating_duration_since(since));
                    Shown::SummaryDue(tokio::time::Instant::now() + wait)
                }
            }
            _ => {
                tally.since = Some(now);
                Shown::Now
            }
        }
    }

    /// The refusals counted since the last one shown, if any; a new interval starts.
    pub fn summary(&self) -> Option<Summary> {
        let now = Instant::now();
        let mut s = self.lock();
        let tally = &mut s.tally;
        tally.summary_due = false;
        let counts = std::mem::take(&mut tally.counts);
        let count: u64 = counts.values().sum();
        if count == 0 {
            return None;
        }
        let secs = tally.since.map_or(0, |since| {
            now.saturating_duration_since(since).as_secs().max(1)
        });
        tally.since = Some(now);
        let mut by_reason: Vec<(String, u64)> = counts
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        by_reason.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Some(Summary {
            count,
            secs,
            by_reason,
        })
    }
}

/// A short name for a refusal's reason, as summaries count them (`None`: refused for
/// another reason than a [`ConnectRefusal`], such as a timeout or a protocol error).
pub fn refusal_kind(reason: Option<&ConnectRefusal>) -> &'static str {
    match reason {
        Some(ConnectRefusal::UnknownInitiator) => "unknown initiator",
        Some(ConnectRefusal::KeyMismatch) => "key mismatch",
        Some(ConnectRefusal::AddressMismatch) => "address mismatch",
        Some(ConnectRefusal::PinnedKeyChanged) => "pinned key changed",
        Some(ConnectRefusal::DirectoryUnavailable) => "directory unavailable",
        Some(ConnectRefusal::UnsupportedVersion) => "unsupported version",
        Some(ConnectRefusal::Busy) => "busy",
        None => "failed handshake",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn in_flight_is_bounded_per_source_and_in_total() {
        let gate = Gate::default();
        let held: Vec<Entered> = (0..MAX_IN_FLIGHT_PER_SOURCE)
            .map(|_| gate.enter(ip("192.0.2.1")).unwrap())
            .collect();
        assert!(gate.enter(ip("192.0.2.1")).is_none());
        drop(held);
        assert!(gate.enter(ip("192.0.2.1")).is_some());
        let mut all = Vec::new();
        for i in 0..MAX_IN_FLIGHT {
            all.push(
                gate.enter(ip(&format!("10.0.{}.{}", i / 200, i % 200)))
                    .unwrap(),
            );
        }
        assert!(gate.enter(ip("198.51.100.1")).is_none());
    }

    #[test]
    fn a_source_that_calls_too_often_is_busy_and_only_it() {
        let gate = Gate::default();
        let flood = Some(ip("192.0.2.1"));
        let mut admitted = 0;
        while gate.admit_source(flood).is_ok() {
            admitted += 1;
            assert!(admitted <= 100, "never limited");
        }
        assert!(admitted >= SOURCE_BURST as usize - 1);
        assert_eq!(gate.admit_source(flood), Err(ConnectRefusal::Busy));
        assert_eq!(gate.admit_source(Some(ip("192.0.2.2"))), Ok(()));
        // Relayed calls come through the directory, which bounds them.
        assert_eq!(gate.admit_source(None), Ok(()));
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        let a = source_of("[2001:db8:1:2::1]:4000".parse().unwrap());
        let b = source_of("[2001:db8:1:2:ffff::9]:5000".parse().unwrap());
        let c = source_of("[2001:db8:1:3::1]:4000".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = source_of("[::ffff:192.0.2.7]:1".parse().unwrap());
        assert_eq!(mapped, ip("192.0.2.7"));
    }

    #[test]
    fn lookups_are_bounded_in_total() {
        let gate = Gate::default();
        let mut admitted = 0;
        while gate.admit_lookup().is_ok() {
            admitted += 1;
            assert!(admitted <= 200, "never limited");
        }
        assert!(admitted >= LOOKUP_BURST as usize - 1);
    }

    #[test]
    fn only_found_users_are_cached() {
        let gate = Gate::default();
        let info = PeerInfo {
            user: "ali".parse().unwrap(),
            identity: proto::Identity::generate().public(),
            observed: "192.0.2.1:4000".parse().unwrap(),
            addresses: vec![],
        };
        gate.remember("ali", Some(&info));
        assert_eq!(gate.cached("ali"), Some(info));
        gate.remember("ali", None);
        assert_eq!(gate.cached("ali"), None);
        gate.remember("bob", None);
        assert_eq!(gate.cached("bob"), None);
    }

    #[test]
    fn refusals_are_shown_once_then_summarised() {
        let gate = Gate::default();
        assert_eq!(gate.refused("busy"), Shown::Now);
        assert!(matches!(gate.refused("busy"), Shown::SummaryDue(_)));
        assert_eq!(gate.refused("unknown initiator"), Shown::Counted);
        assert_eq!(gate.refused("busy"), Shown::Counted);
        let summary = gate.summary().unwrap();
        assert_eq!(summary.count, 3);
        assert_eq!(
            summary.by_reason,
            vec![
                ("busy".to_string(), 2),
                ("unknown initiator".to_string(), 1)
            ]
        );
        // Still within an interval: counted again, and another summary comes.
        assert!(matches!(gate.refused("busy"), Shown::SummaryDue(_)));
        assert!(gate.summary().is_some());
        assert!(gate.summary().is_none());
    }
}
