//! Session tickets: 32 random bytes handed out with `Granted`, redeemed by `Resume` for a new one.
//!
//! Only the SHA-256 of a ticket is stored, so a copy of the database does not let anyone
//! resume a session. A ticket is bound to the user and to the identity key that logged in,
//! and a `Resume` must carry a signature by that key, so a stolen ticket alone is useless.
//! Redeeming a ticket replaces it with a fresh one (see [`crate::store::Store::replace_ticket`]);
//! the old one still works for [`REDEEM_GRACE`], so that a client whose reply was lost (a
//! dropped packet, a directory that crashed right after answering) can simply try again;
//! a repeat replaces the successor it got before, so a ticket never has two live
//! successors.
//!
//! Tickets die with a logout (that session's), a password change (all but the session
//! that changed it), an operator's `reset-key` or `remove` (all of the user's), and at
//! expiry.

use proto::PublicKey;
use sha2::{Digest, Sha256};

/// Length of the tickets we issue, in bytes.
pub const TICKET_LEN: usize = 32;

/// How long a redeemed ticket still works: a `Resume` whose reply was lost can be
/// repeated. The ticket alone is useless without the identity key's signature, so this
/// adds nothing an attacker could use.
pub const REDEEM_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Most live tickets kept per user (one per device or login); older ones are dropped.
pub const MAX_TICKETS_PER_USER: usize = 16;

/// What the store keeps for one ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketRecord {
    /// SHA-256 of the ticket.
    pub hash: [u8; 32],
    /// The user it was issued to.
    pub user: String,
    /// The identity key that logged in; `Resume` must be signed by it.
    pub identity: PublicKey,
    /// Unix time after which it is no longer accepted.
    pub expires_at: i64,
}

impl TicketRecord {
    /// Whether the ticket has expired at `now`.
    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.expires_at
    }
}

/// A fresh random ticket.
pub fn generate() -> [u8; TICKET_LEN] {
    rand::random()
}

/// The key a ticket is stored under.
pub fn hash(ticket: &[u8]) -> [u8; 32] {
    Sha256::digest(ticket).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_random_and_hashed() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert_ne!(hash(&a).as_slice(), a.as_slice());
    }

    #[test]
    fn expiry() {
        let r = TicketRecord {
            hash: [0; 32],
            user: "ali".into(),
            identity: proto::Identity::generate().public(),
            expires_at: 100,
        };
        assert!(!r.is_expired(99));
        assert!(r.is_expired(100));
    }
}
