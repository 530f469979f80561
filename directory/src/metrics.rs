//! What the directory has done, counted: the numbers behind the status page and
//! `/metrics`.
//!
//! Counters are plain atomics, fed from the audit trail: [`Metrics`] is the trail's
//! [`AuditObserver`], so every [`AuditEvent`] (each login, failure, lookup and
//! administrator action) passes through [`Metrics::observe`] and no request handler needs
//! to know about metrics. This module imports the audit trail's event type; the audit
//! trail does not know this module. Recent activity ("logins in
//! the last hour", "lookups per second") comes from [`Window`]s: rings of time slots,
//! also atomic, so counting never takes a lock on the lookup path.
//!
//! The relay counters are fed by the relay itself ([`crate::relay`]), which counts bytes
//! as it copies them, not through the audit trail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::audit::{AuditEvent, AuditObserver};
use crate::clock::unix_now;

/// Counts over a sliding window of `N` slots of `slot_secs` seconds each.
///
/// A slot remembers which period it holds; a stale slot is reset by the first count of a
/// new period. Two threads crossing a slot boundary at the same instant may lose one
/// count: this is a display figure, not an account.
#[derive(Debug)]
pub struct Window<const N: usize> {
    slot_secs: u64,
    periods: [AtomicU64; N],
    counts: [AtomicU64; N],
}

impl<const N: usize> Window<N> {
    /// An empty window of `N` slots of `slot_secs` seconds.
    pub fn new(slot_secs: u64) -> Self {
        Self {
            slot_secs: slot_secs.max(1),
            // Period u64::MAX is never current: every slot starts stale.
            periods: std::array::from_fn(|_| AtomicU64::new(u64::MAX)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts one event at `secs` (seconds on the owner's clock).
    pub fn add(&self, secs: u64) {
        let period = secs / self.slot_secs;
        let i = (period % N as u64) as usize;
        let seen = self.periods[i].load(Ordering::Acquire);
        if seen != period
            && self.periods[i]
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.counts[i].store(0, Ordering::Release);
        }
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Events in the `slots` whole slots before the one holding `secs` (at most `N - 1`,
    /// so the current, still-filling slot is left out and a rate does not dip at the
    /// start of each slot).
    pub fn recent(&self, secs: u64, slots: usize) -> u64 {
        let now = secs / self.slot_secs;
        let slots = slots.min(N - 1) as u64;
        (1..=slots)
            .filter_map(|back| now.checked_sub(back))
            .map(|period| {
                let i = (period % N as u64) as usize;
                if self.periods[i].load(Ordering::Acquire) == period {
                    self.counts[i].load(Ordering::Relaxed)
                } else {
                    0
                }
            })
            .sum()
    }

    /// Events in the last `slots` slots including the current one.
    pub fn recent_including_now(&self, secs: u64, slots: usize) -> u64 {
        let now = secs / self.slot_secs;
        let i = (now % N as u64) as usize;
        let current = if self.periods[i].load(Ordering::Acquire) == now {
            self.counts[i].load(Ordering::Relaxed)
        } else {
            0
        };
        current + self.recent(secs, slots.saturating_sub(1))
    }
}

/// Seconds over which "lookups per second" is averaged.
pub const RATE_SECS: usize = 10;

/// The directory's counters. One per running directory, shared.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    started_unix: i64,
    /// Password logins that succeeded.
    pub logins: AtomicU64,
    /// Password logins refused (wrong password, locked, unknown user, bad signature...).
    pub login_failures: AtomicU64,
    /// Ticket logins that succeeded.
    pub resumes: AtomicU64,
    /// Ticket logins refused.
    pub resume_failures: AtomicU64,
    /// Accounts created by peers (open registration).
    pub registrations: AtomicU64,
    /// Accounts locked after failed logins.
    pub lockouts: AtomicU64,
    /// Lookups answered (found or not).
    pub lookups: AtomicU64,
    /// Lookups that found the user online.
    pub lookups_found: AtomicU64,
    /// Administrator requests carried out (from peers).
    pub admin_requests: AtomicU64,
    /// Administrator requests refused (not an administrator, not logged in).
    pub admin_refused: AtomicU64,
    /// Requests refused (or answered with nothing) because the connection was not logged
    /// in: counted here (by [`crate::connection`]) instead of written to the audit log one
    /// by one.
    pub anonymous_refused: AtomicU64,
    /// Relay sessions open now (both sides spliced).
    pub relay_sessions: AtomicU64,
    /// Bytes the relay copied in total (both directions).
    pub relay_bytes: AtomicU64,
    /// Logins (password and ticket) per minute, over the last hour.
    logins_window: Window<61>,
    /// Failed logins per minute, over the last hour.
    failures_window: Window<61>,
    /// Lookups per second, over the last minute.
    lookups_window: Window<61>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All zero, started now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            started_unix: unix_now(),
            logins: AtomicU64::new(0),
            login_failures: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            resume_failures: AtomicU64::new(0),
            registrations: AtomicU64::new(0),
            lockouts: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
            lookups_found: AtomicU64::new(0),
            admin_requests: AtomicU64::new(0),
            admin_refused: AtomicU64::new(0),
            anonymous_refused: AtomicU64::new(0),
            relay_sessions: AtomicU64::new(0),
            relay_bytes: AtomicU64::new(0),
            logins_window: Window::new(60),
            failures_window: Window::new(60),
            lookups_window: Window::new(1),
        }
    }

    /// Unix time the directory started.
    pub fn started_unix(&self) -> i64 {
        self.started_unix
    }

    /// Seconds since the directory started.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Logins (password and ticket) in the last hour.
    pub fn logins_last_hour(&self) -> u64 {
        self.logins_window
            .recent_including_now(self.uptime_secs(), 60)
    }

    /// Failed logins (password and ticket) in the last hour.
    pub fn failures_last_hour(&self) -> u64 {
        self.failures_window
            .recent_including_now(self.uptime_secs(), 60)
    }

    /// Lookups per second, averaged over the last [`RATE_SECS`] whole seconds.
    pub fn lookups_per_sec(&self) -> f64 {
        let secs = self.uptime_secs();
        // In the first seconds there are fewer whole seconds to average over.
        let span = (secs as usize).clamp(1, RATE_SECS);
        self.lookups_window.recent(secs, span) as f64 / span as f64
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl AuditObserver for Metrics {
    /// Counts one audited event.
    fn observe(&self, event: &AuditEvent) {
        let now = self.uptime_secs();
        let bump = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        match event {
            AuditEvent::LoginOk { .. } => {
                bump(&self.logins);
                self.logins_window.add(now);
            }
            AuditEvent::Resumed { .. } => {
                bump(&self.resumes);
                self.logins_window.add(now);
            }
            AuditEvent::LoginFailed { .. } => {
                bump(&self.login_failures);
                self.failures_window.add(now);
            }
            AuditEvent::ResumeFailed { .. } => {
                bump(&self.resume_failures);
                self.failures_window.add(now);
            }
            AuditEvent::Registered { .. } => bump(&self.registrations),
            AuditEvent::AccountLocked { .. } => bump(&self.lockouts),
            AuditEvent::Lookup { found, .. } => {
                bump(&self.lookups);
                if *found {
                    bump(&self.lookups_found);
                }
                self.lookups_window.add(now);
            }
            AuditEvent::AdminRequested { .. } => bump(&self.admin_requests),
            AuditEvent::AdminRefused { .. } => bump(&self.admin_refused),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_recent_slots_and_forgets_old_ones() {
        let w: Window<5> = Window::new(10);
        w.add(0);
        w.add(5);
        w.add(12);
        w.add(25);
        // At t=25 the whole slots before are [10,20) with 1 and [0,10) with 2.
        assert_eq!(w.recent(25, 4), 3);
        assert_eq!(w.recent(25, 1), 1);
        assert_eq!(w.recent_including_now(25, 2), 2);
        // Much later, the same ring slots hold new periods: old counts are gone.
        w.add(50); // period 5 takes ring index 0, where period 0 was
        assert_eq!(w.recent(55, 4), 2); // periods 4..1: one each in 2 and 1
        assert_eq!(w.recent(55, 3), 1);
        assert_eq!(w.recent_including_now(55, 1), 1);
        assert_eq!(w.recent(61, 1), 1);
        // Stale slots from older turns of the ring count nothing.
        assert_eq!(w.recent(100, 4), 0);
    }

    #[test]
    fn events_move_the_counters() {
        let m = Metrics::new();
        let ip = "192.0.2.1".parse().unwrap();
        m.observe(&AuditEvent::LoginFailed {
            user: "ali".into(),
            ip,
            reason: "bad_password",
        });
        m.observe(&AuditEvent::Lookup {
            requester: Some("ali".into()),
            target: "bianca".into(),
            found: true,
        });
        m.observe(&AuditEvent::Lookup {
            requester: Some("ali".into()),
            target: "nobody".into(),
            found: false,
        });
        assert_eq!(Metrics::get(&m.login_failures), 1);
        assert_eq!(Metrics::get(&m.lookups), 2);
        assert_eq!(Metrics::get(&m.lookups_found), 1);
        assert_eq!(m.failures_last_hour(), 1);
        assert_eq!(m.logins_last_hour(), 0);
    }
}
