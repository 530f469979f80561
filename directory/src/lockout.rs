//! Account lockout policy: how many wrong passwords, and for how long an account locks.
//!
//! Pure functions over a [`LockState`] and a Unix time, so the policy is tested without a
//! clock or a database. The store applies [`LockoutPolicy::reserve`] inside one
//! transaction *before* the password is checked: every attempt counts as a failure until
//! it proves right (then the store clears the counters), so any number of concurrent
//! guesses, on any number of connections and instances, get at most `max_failures`
//! passwords evaluated per lock period. The policy's settings ([`LockoutPolicy`], the
//! `[lockout]` table) are declared in [`crate::config`]; what they do is here.
//!
//! Two more things live here:
//! - [`UnknownNames`]: names that have no account get the same counters, so that an
//!   unknown name answers exactly like a real one (attempts left, then locked) and costs
//!   the same (the store keeps them like an account's, in one of 4096 buckets).
//! - [`KnownSources`] (in memory, bounded): sources (an IPv4 address or an IPv6 /64) a user logged in from
//!   before. A password lockout, which any stranger can cause, does not stop the user
//!   from such a source: one attempt past the lock, and a wrong password there forgets
//!   the source. An administrator's lock stops everyone.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// The lockout counters stored with each account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockState {
    /// Wrong passwords since the last success or lockout.
    pub failed_attempts: u32,
    /// Unix time the current lock lifts, if the account is (or was) locked.
    pub locked_until: Option<i64>,
    /// Lockouts since the last successful login; each one doubles the next lock.
    pub lockout_count: u32,
}

impl LockState {
    /// Whether an administrator locked the account (a lock longer than any the policy
    /// sets, see [`crate::admin::ADMIN_LOCK_THRESHOLD`]) at `now`.
    pub fn locked_by_admin(&self, now: i64) -> bool {
        self.locked_until.is_some_and(|until| {
            until.saturating_sub(now) > crate::admin::ADMIN_LOCK_THRESHOLD as i64
        })
    }
}

/// The outcome of [`LockoutPolicy::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The attempt may check its password; it already counts as a failure in these
    /// counters (a right password clears them).
    Granted(LockState),
    /// Locked: the password must not be checked at all.
    Locked(LockState),
}

pub use crate::config::LockoutPolicy;

impl LockoutPolicy {
    /// Seconds until the lock lifts, when `state` is locked at `now`.
    pub fn locked_for(&self, state: &LockState, now: i64) -> Option<u64> {
        match state.locked_until {
            Some(until) if until > now => Some((until - now) as u64),
            _ => None,
        }
    }

    /// The state after one more wrong password at `now`. Reaching `max_failures` locks
    /// the account for `base * 2^lockout_count` (capped at `max`) and starts counting
    /// failures afresh.
    pub fn after_failure(&self, state: LockState, now: i64) -> LockState {
        let failed = state.failed_attempts.saturating_add(1);
        if failed < self.max_failures.max(1) {
            return LockState {
                failed_attempts: failed,
                ..state
            };
        }
        let lock = self.lock_length(state.lockout_count);
        LockState {
            failed_attempts: 0,
            locked_until: Some(now.saturating_add(lock.as_secs() as i64)),
            lockout_count: state.lockout_count.saturating_add(1),
        }
    }

    /// Reserves one password attempt on `state` at `now`: refused while locked (unless
    /// `past_lock`, which passes a lockout but never an administrator's lock), otherwise
    /// counted as a failure right away.
    pub fn reserve(&self, state: LockState, now: i64, past_lock: bool) -> Reservation {
        let locked = self.locked_for(&state, now).is_some();
        if locked && (!past_lock || state.locked_by_admin(now)) {
            return Reservation::Locked(state);
        }
        Reservation::Granted(self.after_failure(state, now))
    }

    /// Password attempts left before a lock, as told to the client after a failure.
    pub fn attempts_left(&self, state: &LockState) -> u32 {
        if state.failed_attempts == 0 && state.locked_until.is_some() {
            // This failure just locked the account.
            return 0;
        }
        self.max_failures.saturating_sub(state.failed_attempts)
    }

    /// Length of the lock after `previous` earlier lockouts.
    fn lock_length(&self, previous: u32) -> Duration {
        let factor = 1u32.checked_shl(previous.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Buckets of [`UnknownNames`].
pub const UNKNOWN_BUCKETS: u32 = 4096;

/// Where the lockout counters of a name without an account live: one of
/// [`UNKNOWN_BUCKETS`] rows the store keeps like accounts' counters
/// ([`crate::store::Store::reserve_unknown`]). Bounded whatever strangers send; two
/// unknown names share counters only by a collision nobody can aim for, since the hash
/// is keyed with a random key per process (so with several instances each has its own
/// buckets).
#[derive(Debug, Default)]
pub struct UnknownNames {
    hasher: std::collections::hash_map::RandomState,
}

impl UnknownNames {
    /// The bucket of `name`.
    pub fn bucket(&self, name: &str) -> u32 {
        (self.hasher.hash_one(name) % u64::from(UNKNOWN_BUCKETS)) as u32
    }
}

/// How long a source a user logged in from stays known.
pub const KNOWN_SOURCE_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Most (user, source) pairs remembered; past that, new ones are not (the user can
/// still resume with a ticket, which no password lockout blocks).
pub const MAX_KNOWN_SOURCES: usize = 100_000;

/// Sources each user logged in from successfully, with when that stops counting.
#[derive(Debug, Default)]
pub struct KnownSources {
    table: Mutex<HashMap<(String, IpAddr), i64>>,
}

impl KnownSources {
    /// Remembers that `user` logged in from `ip` at `now`.
    pub fn insert(&self, user: &str, ip: IpAddr, now: i64) {
        let key = (user.to_string(), crate::ratelimit::source_key(ip));
        let until = now.saturating_add(KNOWN_SOURCE_LIFETIME.as_secs() as i64);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&key) && table.len() >= MAX_KNOWN_SOURCES {
            table.retain(|_, until| *until > now);
            if table.len() >= MAX_KNOWN_SOURCES {
                return;
            }
        }
        table.insert(key, until);
    }

    /// Whether `user` logged in from `ip` before (and not too long ago). Takes the entry:
    /// the caller puts it back with [`KnownSources::insert`] when the password proves
    /// right, so concurrent attempts from one source get one pass, and a wrong password
    /// loses it.
    pub fn take(&self, user: &str, ip: IpAddr, now: i64) -> bool {
        let key = (user.to_string(), crate::ratelimit::source_key(ip));
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.remove(&key).is_some_and(|until| until > now)
    }

    /// Forgets every source of `user` (a password change, a removed account).
    pub fn forget_user(&self, user: &str) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.retain(|(name, _), _| name != user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_counts_first_and_refuses_while_locked() {
        let p = LockoutPolicy::default();
        let mut s = LockState::default();
        for left in [2, 1, 0] {
            match p.reserve(s, 1000, false) {
                Reservation::Granted(next) => s = next,
                other => panic!("{other:?}"),
            }
            assert_eq!(p.attempts_left(&s), left);
        }
        assert_eq!(p.reserve(s, 1000, false), Reservation::Locked(s));
        // A known source passes a lockout, and is counted.
        assert!(
            matches!(p.reserve(s, 1000, true), Reservation::Granted(n) if n.failed_attempts == 1)
        );
        // Never an administrator's lock.
        let admin = LockState {
            locked_until: Some(1000 + crate::admin::ADMIN_LOCK.as_secs() as i64),
            ..Default::default()
        };
        assert!(admin.locked_by_admin(1000) && !s.locked_by_admin(1000));
        assert_eq!(p.reserve(admin, 1000, true), Reservation::Locked(admin));
    }

    #[test]
    fn unknown_names_spread_over_the_buckets() {
        let names = UnknownNames::default();
        assert_eq!(names.bucket("nobody"), names.bucket("nobody"));
        let used: std::collections::HashSet<u32> = (0..1000)
            .map(|i| names.bucket(&format!("user{i}")))
            .collect();
        assert!(used.iter().all(|b| *b < UNKNOWN_BUCKETS));
        assert!(used.len() > 800, "{}", used.len());
    }

    #[test]
    fn known_sources_are_taken_once() {
        let known = KnownSources::default();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(!known.take("ali", ip, 0));
        known.insert("ali", ip, 0);
        // Same /64, another host: the same source.
        assert!(known.take("ali", "2001:db8::2".parse().unwrap(), 1));
        assert!(!known.take("ali", ip, 1));
        known.insert("ali", ip, 0);
        assert!(!known.take("bianca", ip, 1));
        assert!(!known.take("ali", ip, KNOWN_SOURCE_LIFETIME.as_secs() as i64 + 1));
        known.insert("ali", ip, 0);
        known.forget_user("ali");
        assert!(!known.take("ali", ip, 1));
    }

    #[test]
    fn three_failures_lock_with_doubling_backoff() {
        let p = LockoutPolicy::default();
        let mut s = LockState::default();
        let now = 1_000;
        s = p.after_failure(s, now);
        assert_eq!(p.attempts_left(&s), 2);
        assert_eq!(p.locked_for(&s, now), None);
        s = p.after_failure(s, now);
        assert_eq!(p.attempts_left(&s), 1);
        s = p.after_failure(s, now);
        assert_eq!(p.attempts_left(&s), 0);
        assert_eq!(p.locked_for(&s, now), Some(30));
        assert_eq!(p.locked_for(&s, now + 29), Some(1));
        assert_eq!(p.locked_for(&s, now + 30), None);

        // After the lock lifts, three more failures lock for twice as long.
        let later = now + 31;
        for _ in 0..3 {
            s = p.after_failure(s, later);
        }
        assert_eq!(p.locked_for(&s, later), Some(60));
        assert_eq!(s.lockout_count, 2);
    }

    #[test]
    fn lock_length_is_capped() {
        let p = LockoutPolicy::default();
        let s = LockState {
            failed_attempts: 2,
            locked_until: None,
            lockout_count: 40,
        };
        let s = p.after_failure(s, 0);
        assert_eq!(p.locked_for(&s, 0), Some(3600));
    }
}
