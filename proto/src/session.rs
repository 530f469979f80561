//! The end-to-end session layer: what makes a chat private whatever carries it.
//!
//! Both sides make an ephemeral x25519 key and send it in a [`KeyShare`] signed by their
//! long-term identity key over both identities and their role. Each checks the other's
//! signature against the key it already verified (TLS handshake + directory + pin), runs
//! x25519, and derives two keys with HKDF-SHA256 (one per direction), salted with the
//! hash of the whole handshake transcript. Each message is then sealed with
//! ChaCha20-Poly1305 under a per-direction counter nonce.
//!
//! The receiver accepts only the next counter: a replayed, dropped, reordered or altered
//! frame is an error, and the caller ends the session. The transport (direct QUIC or a
//! relay through the directory) sees only ciphertext. Ephemeral keys are dropped after
//! the handshake, so a later theft of identity keys does not reveal past sessions.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::{EphemeralSecret, PublicKey as XPublic};
use zeroize::Zeroizing;

use crate::identity::{Identity, PublicKey, Signature, transcript};

/// Which end of the session we are: the one who dialed, or the one who accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Initiator => b"initiator",
            Role::Acceptor => b"acceptor",
        }
    }

    fn other(self) -> Role {
        match self {
            Role::Initiator => Role::Acceptor,
            Role::Acceptor => Role::Initiator,
        }
    }
}

/// One side's half of the handshake: an ephemeral x25519 key, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyShare {
    pub ephemeral: [u8; 32],
    pub signature: Signature,
}

/// One sealed message: counter and ciphertext (with its 16-byte tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedFrame {
    pub counter: u64,
    pub ciphertext: Vec<u8>,
}

/// Why the end-to-end layer refused something. Any of these ends the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the other side's key share is not signed by their identity key")]
    BadKeyShare,
    #[error("the other side's ephemeral key is weak")]
    WeakKey,
    #[error("replayed frame (counter {got}, expected {expected})")]
    Replayed { got: u64, expected: u64 },
    #[error("frame out of order or missing (counter {got}, expected {expected})")]
    OutOfOrder { got: u64, expected: u64 },
    #[error("frame failed authentication: altered, or sealed for another session")]
    Tampered,
    #[error("session exhausted its message counter")]
    Exhausted,
}

/// An end-to-end handshake in progress.
pub struct Handshake {
    role: Role,
    secret: EphemeralSecret,
    ours: [u8; 32],
    initiator: PublicKey,
    acceptor: PublicKey,
}

fn share_transcript(
    role: Role,
    initiator: &PublicKey,
    acceptor: &PublicKey,
    eph: &[u8; 32],
) -> Vec<u8> {
    transcript(
        "natter-e2e-keyshare-v1",
        &[role.label(), &initiator.0, &acceptor.0, eph],
    )
}

impl Handshake {
    /// Starts a handshake as `role` between us (`identity`) and `peer`, whose key has
    /// already been verified. Returns the share to send.
    pub fn start(identity: &Identity, role: Role, peer: PublicKey) -> (Self, KeyShare) {
        let secret = EphemeralSecret::random();
        let ours = XPublic::from(&secret).to_bytes();
        let (initiator, acceptor) = match role {
            Role::Initiator => (identity.public(), peer),
            Role::Acceptor => (peer, identity.public()),
        };
        let signature = identity.sign(&share_transcript(role, &initiator, &acceptor, &ours));
        let share = KeyShare {
            ephemeral: ours,
            signature,
        };
        (
            Self {
                role,
                secret,
                ours,
                initiator,
                acceptor,
            },
            share,
        )
    }

    /// Checks the other side's share and derives the session keys.
    pub fn finish(self, theirs: &KeyShare) -> Result<Session, SessionError> {
        let their_role = self.role.other();
        let their_key = match their_role {
            Role::Initiator => self.initiator,
            Role::Acceptor => self.acceptor,
        };
        their_key
            .verify(
                &share_transcript(
                    their_role,
                    &self.initiator,
                    &self.acceptor,
                    &theirs.ephemeral,
                ),
                &theirs.signature,
            )
            .map_err(|_| SessionError::BadKeyShare)?;
        let shared = self.secret.diffie_hellman(&XPublic::from(theirs.ephemeral));
        if !shared.was_contributory() {
            return Err(SessionError::WeakKey);
        }
        let (init_eph, acc_eph) = match self.role {
            Role::Initiator => (self.ours, theirs.ephemeral),
            Role::Acceptor => (theirs.ephemeral, self.ours),
        };
        let salt: [u8; 32] = Sha256::digest(transcript(
            "natter-e2e-v1",
            &[&self.initiator.0, &self.acceptor.0, &init_eph, &acc_eph],
        ))
        .into();
        let hk = Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes());
        let mut i2a = Zeroizing::new([0u8; 32]);
        let mut a2i = Zeroizing::new([0u8; 32]);
        hk.expand(b"natter initiator->acceptor", &mut *i2a)
            .expect("32 bytes is a valid HKDF output length");
        hk.expand(b"natter acceptor->initiator", &mut *a2i)
            .expect("32 bytes is a valid HKDF output length");
        let (send, recv) = match self.role {
            Role::Initiator => (i2a, a2i),
            Role::Acceptor => (a2i, i2a),
        };
        Ok(Session {
            sealer: Sealer::new(&send),
            opener: Opener::new(&recv),
            id: salt,
        })
    }
}

/// An established end-to-end session; split it to send and receive from separate tasks.
pub struct Session {
    pub sealer: Sealer,
    pub opener: Opener,
    id: [u8; 32],
}

impl Session {
    /// A value both sides share and nobody else can predict (hash of the handshake).
    pub fn id(&self) -> [u8; 32] {
        self.id
    }

    /// Splits into the sending and receiving halves.
    pub fn split(self) -> (Sealer, Opener) {
        (self.sealer, self.opener)
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(n)
}

/// The sending half: seals with the next counter.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    next: u64,
}

impl Sealer {
    fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(&Key::from(*key)),
            next: 0,
        }
    }

    /// Seals one plaintext.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<SealedFrame, SessionError> {
        let counter = self.next;
        self.next = counter.checked_add(1).ok_or(SessionError::Exhausted)?;
        let aad = counter.to_be_bytes();
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce(counter),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SessionError::Exhausted)?;
        Ok(SealedFrame {
            counter,
            ciphertext,
        })
    }
}

/// The receiving half: opens frames strictly in counter order.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    next: u64,
}

impl Opener {
    fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(&Key::from(*key)),
            next: 0,
        }
    }

    /// Opens the next frame. Anything but the next counter, or a failed tag, is an error.
    pub fn open(&mut self, frame: &SealedFrame) -> Result<Vec<u8>, SessionError> {
        let expected = self.next;
        if frame.counter < expected {
            return Err(SessionError::Replayed {
                got: frame.counter,
                expected,
            });
        }
        if frame.counter > expected {
            return Err(SessionError::OutOfOrder {
                got: frame.counter,
                expected,
            });
        }
        let aad = frame.counter.to_be_bytes();
        let plaintext = self
            .cipher
            .decrypt(
                &nonce(frame.counter),
                Payload {
                    msg: &frame.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SessionError::Tampered)?;
        self.next = expected.checked_add(1).ok_or(SessionError::Exhausted)?;
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        let ali = Identity::generate();
        let bianca = Identity::generate();
        let (hi, share_i) = Handshake::start(&ali, Role::Initiator, bianca.public());
        let (ha, share_a) = Handshake::start(&bianca, Role::Acceptor, ali.public());
        (hi.finish(&share_a).unwrap(), ha.finish(&share_i).unwrap())
    }

    #[test]
    fn both_directions_round_trip() {
        let (mut i, mut a) = pair();
        assert_eq!(i.id(), a.id());
        for n in 0..3 {
            let f = i.sealer.seal(format!("hello {n}").as_bytes()).unwrap();
            assert_eq!(a.opener.open(&f).unwrap(), format!("hello {n}").as_bytes());
            let g = a.sealer.seal(b"back").unwrap();
            assert_eq!(i.opener.open(&g).unwrap(), b"back");
        }
    }

    #[test]
    fn replay_reorder_and_tamper_are_refused() {
        let (mut i, mut a) = pair();
        let f0 = i.sealer.seal(b"zero").unwrap();
        let f1 = i.sealer.seal(b"one").unwrap();
        assert!(matches!(
            a.opener.open(&f1),
            Err(SessionError::OutOfOrder { .. })
        ));
        a.opener.open(&f0).unwrap();
        assert!(matches!(
            a.opener.open(&f0),
            Err(SessionError::Replayed { .. })
        ));
        let mut bad = f1.clone();
        bad.ciphertext[0] ^= 1;
        assert_eq!(a.opener.open(&bad), Err(SessionError::Tampered));
        // The tampered frame did not advance the counter: the genuine one still opens.
        assert_eq!(a.opener.open(&f1).unwrap(), b"one");
    }

    #[test]
    fn own_frames_do_not_open_as_the_other_direction() {
        let (mut i, _a) = pair();
        let f = i.sealer.seal(b"mirror").unwrap();
        assert_eq!(i.opener.open(&f), Err(SessionError::Tampered));
    }

    #[test]
    fn frame_from_another_session_is_refused() {
        let (mut i1, _a1) = pair();
        let (_i2, mut a2) = pair();
        let f = i1.sealer.seal(b"wrong session").unwrap();
        assert_eq!(a2.opener.open(&f), Err(SessionError::Tampered));
    }

    #[test]
    fn key_share_signed_by_someone_else_is_refused() {
        let ali = Identity::generate();
        let bianca = Identity::generate();
        let mallory = Identity::generate();
        // Mallory answers in bianca's place, signing with her own key.
        let (hi, _) = Handshake::start(&ali, Role::Initiator, bianca.public());
        let (_, forged) = Handshake::start(&mallory, Role::Acceptor, ali.public());
        assert_eq!(hi.finish(&forged).err(), Some(SessionError::BadKeyShare));
    }

    #[test]
    fn share_reflected_back_is_refused() {
        let ali = Identity::generate();
        let bianca = Identity::generate();
        let (hi, share_i) = Handshake::start(&ali, Role::Initiator, bianca.public());
        assert_eq!(hi.finish(&share_i).err(), Some(SessionError::BadKeyShare));
    }
}
