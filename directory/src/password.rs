//! Password hashing with argon2id, always off the async runtime.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) that carry their own
//! parameters, so raising [`PasswordCost`] later only affects new hashes and old ones keep
//! verifying. Each hash runs in `spawn_blocking` and takes a permit from a semaphore:
//! with 19 MiB per hash, an unbounded number at once could exhaust memory. The cost is a
//! setting (`[password_cost]`), declared in [`crate::config`].
//!
//! Passwords are never logged or kept: they arrive in a request, are hashed or verified,
//! and the buffer is zeroed when the request is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

pub use crate::config::PasswordCost;

impl PasswordCost {
    fn hasher(&self) -> Result<Argon2<'static>, PasswordError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| PasswordError(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashing failed (bad parameters, or the blocking task was lost).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct PasswordError(String);

/// Hashes passwords and checks them against stored hashes, a bounded number at a time.
#[derive(Debug, Clone)]
pub struct PasswordHashing {
    cost: PasswordCost,
    slots: Arc<Semaphore>,
    /// Hash of a random password at `cost`, made on first use, for
    /// [`PasswordHashing::verify_dummy`].
    dummy: Arc<OnceLock<String>>,
    /// Password checks run so far, real and dummy alike (see [`Self::verifications`]).
    verified: Arc<AtomicU64>,
}

impl PasswordHashing {
    /// Hashing at `cost`, with at most `concurrent` hashes computed at once.
    pub fn new(cost: PasswordCost, concurrent: usize) -> Self {
        Self {
            cost,
            slots: Arc::new(Semaphore::new(concurrent.max(1))),
            dummy: Arc::new(OnceLock::new()),
            verified: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Hashes `password` with a fresh random salt; returns the PHC string.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let cost = self.cost;
        self.run(move || {
            let hash = cost
                .hasher()?
                .hash_password(&password)
                .map_err(|e| PasswordError(e.to_string()))?;
            Ok(hash.to_string())
        })
        .await
    }

    /// Whether `password` matches the PHC string `hash`. A malformed stored hash simply
    /// does not match (and is logged).
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, PasswordError> {
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let hash = hash.to_string();
        self.verified.fetch_add(1, Ordering::Relaxed);
        self.run(move || Ok(verify_blocking(&password, &hash)))
            .await
    }

    /// How many argon2 verifications have been started, real ([`Self::verify`]) and dummy
    /// ([`Self::verify_dummy`]) alike: the work an unknown name costs must be the work a
    /// real one costs, and this count is how tests check it without a stopwatch.
    pub fn verifications(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    /// Makes the dummy hash now, so that the first login of an unknown name does not take
    /// visibly longer than the others.
    pub async fn prepare(&self) -> Result<(), PasswordError> {
        self.verify_dummy("").await
    }

    /// Spends the same work as verifying against a real account, for a user name that
    /// does not exist, so response times do not tell which names are taken.
    pub async fn verify_dummy(&self, password: &str) -> Result<(), PasswordError> {
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let cost = self.cost;
        let dummy = self.dummy.clone();
        self.verified.fetch_add(1, Ordering::Relaxed);
        self.run(move || {
            let hash = dummy.get_or_init(|| {
                let random: [u8; 16] = rand::random();
                cost.hasher()
                    .ok()
                    .and_then(|h| h.hash_password(&random).ok())
                    .map(|h| h.to_string())
                    .unwrap_or_default()
            });
            let _ = verify_blocking(&password, hash);
            Ok(())
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| PasswordError("hashing stopped".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| PasswordError(e.to_string()))?
    }
}

fn verify_blocking(password: &[u8], hash: &str) -> bool {
    match Argon2::default().verify_password(password, hash) {
        Ok(()) => true,
        Err(argon2::password_hash::Error::PasswordInvalid) => false,
        Err(e) => {
            tracing::warn!("stored password hash cannot be used: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = PasswordHashing::new(PasswordCost::insecure_fast(), 2);
        let hash = h.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(h.verify("correct horse", &hash).await.unwrap());
        assert!(!h.verify("correct horsf", &hash).await.unwrap());
        assert!(!h.verify("correct horse", "not a phc string").await.unwrap());
        h.verify_dummy("anything").await.unwrap();
        // Two hashes of one password differ (random salt).
        assert_ne!(hash, h.hash("correct horse").await.unwrap());
    }

    #[test]
    fn default_cost_is_owasp() {
        let hash = PasswordCost::default()
            .hasher()
            .unwrap()
            .hash_password(b"pw")
            .unwrap()
            .to_string();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
    }
}
