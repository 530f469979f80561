//! Every message on the wire.
//!
//! **Directory protocol.** A peer opens one QUIC connection to the directory and one
//! bidirectional stream on it. The client sends [`Request`]s; the directory sends
//! [`ServerMsg`]s: exactly one [`Reply`] per request, in order, interleaved with
//! [`Event`]s it pushes on its own (a forced logout, a shutdown notice).
//!
//! ```text
//! client                                  directory
//!   Hello{version}                 ->
//!                                  <-     Reply::Welcome{nonce}
//!   Login{user, password, key, sig(nonce)} ->
//!                                  <-     Reply::Granted{ticket} | Reply::Refused{..}
//!   Lookup{user} / Who / ...       ->
//!                                  <-     Reply::Found / NotFound / Online / ...
//! ```
//!
//! **Peer-to-peer protocol.** The dialer opens one bidirectional stream and sends
//! [`PeerMsg::Connect`]; the acceptor answers [`PeerMsg::Accepted`] or
//! [`PeerMsg::Refused`]; then both send a [`crate::session::KeyShare`] and from there on
//! only [`PeerMsg::Sealed`] frames, whose plaintext is a [`ChatPayload`].
//!
//! Enum variants are only ever appended, never reordered: bincode encodes the index.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::identity::{PublicKey, Signature, transcript};
use crate::session::{KeyShare, SealedFrame};

/// Longest session ticket accepted, in bytes.
pub const MAX_TICKET: usize = 64;
/// Most addresses a peer may report for itself.
pub const MAX_ADDRESSES: usize = 8;

/// A request from a peer to the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Must be the first request; anything else first is a protocol violation.
    Hello { version: u32, software: String },
    /// Creates an account (when the directory allows open registration).
    Register {
        user: String,
        password: String,
        identity: PublicKey,
    },
    /// Password login, proven with a signature by the identity key over
    /// [`login_transcript`] (which includes this connection's fresh nonce).
    Login {
        user: String,
        password: String,
        identity: PublicKey,
        signature: Signature,
        /// Addresses the peer listens on as it sees them (LAN addresses).
        addresses: Vec<SocketAddr>,
    },
    /// Password-less re-login with a ticket from an earlier `Granted`, proven with a
    /// signature over [`resume_transcript`].
    Resume {
        user: String,
        ticket: Vec<u8>,
        signature: Signature,
        addresses: Vec<SocketAddr>,
    },
    /// Where is `user`, and what is their key? Only for logged-in requesters.
    Lookup { user: String },
    /// Who is online?
    Who,
    /// Ends the directory session (the ticket stays valid for a later `Resume`).
    Logout,
}

/// Why a login or registration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// Unknown user or wrong password (deliberately indistinguishable).
    BadCredentials,
    /// Too many failures: the account or the source address is locked for a while.
    LockedOut,
    /// The identity key differs from the one registered for this account.
    KeyMismatch,
    /// The signature over the nonce does not verify.
    BadSignature,
    /// The ticket is unknown, expired, or not this user's.
    TicketInvalid,
    /// The directory does not allow registration from peers.
    RegistrationClosed,
    /// The user name is taken.
    UserExists,
    /// The user name or password does not meet the rules.
    Invalid,
    /// Already logged in on this connection.
    AlreadyLoggedIn,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::BadCredentials => "wrong user name or password",
            Refusal::LockedOut => "locked out after too many failed logins",
            Refusal::KeyMismatch => {
                "this account is registered with a different identity key (ask the operator to reset it)"
            }
            Refusal::BadSignature => "identity key signature does not verify",
            Refusal::TicketInvalid => "session ticket is invalid or expired",
            Refusal::RegistrationClosed => "registration is closed on this directory",
            Refusal::UserExists => "that user name is taken",
            Refusal::Invalid => "invalid user name or password",
            Refusal::AlreadyLoggedIn => "already logged in",
        })
    }
}

/// Protocol-level errors: the request could not be served at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The client speaks another protocol version.
    UnsupportedVersion,
    /// A request arrived out of order (e.g. before `Hello`).
    ProtocolViolation,
    /// The request needs a logged-in user.
    NotLoggedIn,
    /// A frame could not be decoded, or was too large.
    BadFrame,
    /// Too many requests or connections; try later.
    RateLimited,
    /// The directory failed internally (storage error); the request may be retried.
    Internal,
}

/// One online user, as listed by `Who`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineUser {
    pub user: String,
    /// Seconds since they logged in.
    pub online_secs: u64,
}

/// What the directory knows about a logged-in user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub user: String,
    pub identity: PublicKey,
    /// The address the directory observed for their connection (their public address).
    pub observed: SocketAddr,
    /// Addresses they reported (LAN addresses), possibly empty.
    pub addresses: Vec<SocketAddr>,
}

impl PeerInfo {
    /// Every address worth dialing: the observed one first, then reported ones.
    pub fn all_addresses(&self) -> Vec<SocketAddr> {
        let mut out = vec![self.observed];
        for a in &self.addresses {
            if !out.contains(a) {
                out.push(*a);
            }
        }
        out
    }
}

/// The directory's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to `Hello`: the nonce to sign for `Login`/`Resume`.
    Welcome {
        version: u32,
        nonce: [u8; 32],
        open_registration: bool,
    },
    Registered {
        user: String,
    },
    Granted {
        user: String,
        /// Ticket for a later password-less `Resume`.
        ticket: Vec<u8>,
        ticket_lifetime_secs: u64,
        /// The address the directory sees for this connection.
        observed: SocketAddr,
        admin: bool,
    },
    Refused {
        reason: Refusal,
        /// Password attempts left before a lockout, when that applies.
        attempts_left: Option<u32>,
        /// Seconds until the lockout lifts, when locked out.
        retry_after_secs: Option<u64>,
    },
    Found(PeerInfo),
    NotFound {
        user: String,
    },
    Online {
        users: Vec<OnlineUser>,
    },
    LoggedOut,
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// Something the directory tells a peer without being asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The directory is shutting down; the connection will close.
    Shutdown { reason: String },
    /// An operator ended this user's directory session.
    ForcedLogout { reason: String },
}

/// Everything the directory sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    Reply(Reply),
    Event(Event),
}

/// Why an acceptor refused a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectRefusal {
    /// The directory does not know the claimed initiator as logged in.
    UnknownInitiator,
    /// The key in the TLS handshake is not the directory's key for the claimed initiator.
    KeyMismatch,
    /// The connection comes from an address the directory does not list for the initiator.
    AddressMismatch,
    /// The initiator's key differs from the one pinned earlier.
    PinnedKeyChanged,
    /// The acceptor could not reach the directory to check.
    DirectoryUnavailable,
    /// Another protocol version.
    UnsupportedVersion,
    /// The acceptor is not taking chats (too many open, shutting down).
    Busy,
}

impl std::fmt::Display for ConnectRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectRefusal::UnknownInitiator => "the directory does not list you as logged in",
            ConnectRefusal::KeyMismatch => {
                "your key is not the directory's key for the name you claimed"
            }
            ConnectRefusal::AddressMismatch => {
                "your address is not the one the directory lists for you"
            }
            ConnectRefusal::PinnedKeyChanged => "your key differs from the one pinned earlier",
            ConnectRefusal::DirectoryUnavailable => "the acceptor could not reach the directory",
            ConnectRefusal::UnsupportedVersion => "unsupported protocol version",
            ConnectRefusal::Busy => "busy",
        })
    }
}

/// Frames on a peer-to-peer chat stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// Dialer → acceptor, first frame: who I claim to be.
    Connect { version: u32, initiator: String },
    /// Acceptor → dialer: accepted, with the acceptor's name.
    Accepted { user: String },
    /// Acceptor → dialer: refused, with why.
    Refused { reason: ConnectRefusal },
    /// Both ways, once, after `Accepted`: the end-to-end handshake.
    KeyShare(KeyShare),
    /// Both ways from then on: one end-to-end sealed [`ChatPayload`].
    Sealed(SealedFrame),
}

/// The plaintext inside a [`PeerMsg::Sealed`] frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatPayload {
    /// A chat message. Ids count up from 1 per direction.
    Text {
        id: u64,
        text: String,
        sent_at_ms: u64,
    },
    /// The receiver got message `id`.
    Ack { id: u64 },
    /// The sender ends the session.
    Bye,
}

/// Bytes signed for a password login: binds the signature to this connection's nonce,
/// the user name and the key, so it cannot be replayed elsewhere.
pub fn login_transcript(nonce: &[u8; 32], user: &str, identity: &PublicKey) -> Vec<u8> {
    transcript("natter-login-v1", &[nonce, user.as_bytes(), &identity.0])
}

/// Bytes signed for a ticket login.
pub fn resume_transcript(nonce: &[u8; 32], user: &str, ticket: &[u8]) -> Vec<u8> {
    transcript("natter-resume-v1", &[nonce, user.as_bytes(), ticket])
}
