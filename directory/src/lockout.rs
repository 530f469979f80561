//! Account lockout policy: how many wrong passwords, and for how long an account locks.
//!
//! Pure functions over a [`LockState`] and a Unix time, so the policy is tested without a
//! clock or a database. The store applies [`LockoutPolicy::after_failure`] inside one
//! transaction, so concurrent failures from several connections all count.

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

/// How failures turn into lockouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Wrong passwords in a row that lock the account.
    pub max_failures: u32,
    /// Length of the first lock.
    pub base: Duration,
    /// Longest lock; later locks double up to this.
    pub max: Duration,
}

impl Default for LockoutPolicy {
    /// 3 failures; locks of 30 s, 60 s, 120 s, ... capped at 1 h.
    fn default() -> Self {
        Self {
            max_failures: 3,
            base: Duration::from_secs(30),
            max: Duration::from_secs(60 * 60),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
