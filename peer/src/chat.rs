//! One end-to-end chat session with another peer.
//!
//! A chat runs on a pair of byte streams, a [`Transport`]: directly, one bidirectional
//! QUIC stream opened by the dialer on a connection whose mutual TLS handshake already
//! proved both identity keys (see [`crate::endpoint`]); or relayed, a relay stream on
//! each peer's directory connection, spliced by the directory. The protocol below is the
//! same on both; on a relayed path the key shares alone prove the identity keys (see
//! `handshake`), and both sides confirm the session key before the chat opens.
//!
//! ```text
//! dialer (initiate)                          acceptor (accept)
//!   Connect{version, initiator}        ->    looks the initiator up at the directory;
//!                                            checks name, key, address, then the pin
//!                                      <-    Accepted{user} | Refused{reason}
//!   KeyShare                          <->    KeyShare        (proto::session handshake)
//!   Sealed(Text{id, ..})              <->    Sealed(Ack{id}) ...
//!   Sealed(Bye)                        ->    (after this side's last acks)
//!                                      <-    Sealed(Bye)
//!   closes the connection (CODE_BYE)
//! ```
//!
//! Whoever reads the last byte closes the connection: the dialer after reading a refusal,
//! the side that said `Bye` first after reading the answering `Bye`. Closing a QUIC
//! connection may discard data the other side has not read yet, so the side that still
//! has something to say never closes first (it waits, bounded by [`CLOSE_TIMEOUT`]).
//!
//! # Layout
//! - this file: the API the app uses ([`initiate`], [`accept`], [`ChatHandle`],
//!   [`ChatEvents`]), events, errors and connection close codes.
//! - `handshake`: the connect request and the end-to-end key exchange, both sides, and
//!   the acceptor's pure decision [`verify_initiator`].
//! - `session`: a running chat: one reader task (frames off the stream) and one driver
//!   task (sealing, acks, ids, the end of the chat) per chat.
//! - [`transport`]: what carries a chat ([`Transport`], [`Path`]) and how it is ended.
//!
//! # Guarantees
//! - Every chat has its own tasks and bounded queues; nothing is shared between chats, so
//!   one peer's failure or slowness never blocks another chat.
//! - Message ids count up from 1 per direction. [`ChatEvent::Delivered`] means the other
//!   side's program took the message into its event queue.
//! - The last event of every chat is exactly one [`ChatEvent::Ended`], which lists the ids
//!   of our messages the other side never acknowledged.
//! - A peer that stops reading is disconnected after [`STALL_TIMEOUT`]; one that vanishes,
//!   after the endpoint's idle timeout ([`crate::endpoint::IDLE_TIMEOUT`]).

mod handshake;
mod session;
pub mod transport;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::PublicKey;
use proto::message::{ConnectRefusal, RoomTag};
use proto::names::NameError;
use proto::names::UserName;
use proto::session::{Role, SessionError};
use quinn::VarInt;
use tokio::sync::{mpsc, watch};

pub use handshake::{
    CONFIRMATION, accept, accept_over, initiate, initiate_over, initiate_with, refuse, refuse_over,
    verify_initiator, verify_relayed_initiator,
};
pub use transport::{Path, RelayStream, Transport};

/// Longest wait for each step of the connect request and the key exchange (including the
/// acceptor's directory lookup).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the other side's goodbye (or close) once a chat is ending.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// A write that cannot make progress for this long means the other side stopped reading;
/// the chat is then ended rather than buffered forever.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Most of our messages that may wait for an acknowledgement at once; [`ChatHandle::send`]
/// refuses more with [`ChatError::Backlog`].
pub const MAX_UNACKED: usize = 256;
/// Capacity of a chat's event queue. When the app does not read events, the chat stops
/// reading the stream and QUIC flow control pushes back on the sender.
pub const EVENT_QUEUE: usize = 64;
/// How many of our messages may wait to be sent (beyond [`MAX_UNACKED`] in flight).
pub const COMMAND_QUEUE: usize = 256;

/// Connection close code: the chat ended normally (both said goodbye). Also what QUIC
/// sends when a program drops a connection without closing it.
pub const CODE_BYE: VarInt = VarInt::from_u32(0);
/// Connection close code: the acceptor refused the chat (the reason went in a frame).
pub const CODE_REFUSED: VarInt = VarInt::from_u32(1);
/// Connection close code: the other side broke the protocol (tampered, replayed or
/// malformed frame, unexpected message). The close reason says what.
pub const CODE_VIOLATION: VarInt = VarInt::from_u32(2);
/// Connection close code: a handshake step timed out, or the other side stopped reading.
pub const CODE_TIMEOUT: VarInt = VarInt::from_u32(3);
/// Connection close code: the chat was abandoned for a local reason (the connection
/// failed, a close did not complete in time).
pub const CODE_ABORT: VarInt = VarInt::from_u32(4);
/// Connection close code: a connection made while looking for a path to a peer was not
/// needed (another path won). Nothing went wrong; the other side says nothing about it.
pub const CODE_DUPLICATE: VarInt = VarInt::from_u32(5);

/// Something that happened in a chat, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    /// The other side sent a message (already acknowledged to them).
    Message {
        id: u64,
        text: String,
        /// The sender's clock, milliseconds since the Unix epoch (informational only).
        sent_at_ms: u64,
        /// The room it was sent to, if it is a room message.
        room: Option<RoomTag>,
    },
    /// The other side acknowledged our message `id`.
    Delivered { id: u64 },
    /// The chat is over; always the last event. `undelivered` lists, in order, the ids of
    /// our messages the other side never acknowledged.
    Ended {
        reason: EndReason,
        undelivered: Vec<u64>,
    },
}

/// Why a chat ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The other side said goodbye.
    ClosedByPeer,
    /// We said goodbye ([`ChatHandle::close`], or every handle or the events were dropped).
    ClosedByUs,
    /// The connection broke: the other side vanished (idle timeout), stopped reading, or
    /// went away without saying goodbye.
    ConnectionLost(String),
    /// The other side broke the protocol (a tampered, replayed, reordered or malformed
    /// frame, a bad message id...). We closed the connection with [`CODE_VIOLATION`].
    Violation(String),
    /// The other side ended the connection with an error, e.g. because it saw a
    /// violation from us. Holds its stated reason.
    AbortedByPeer(String),
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::ClosedByPeer => f.write_str("closed by the other side"),
            EndReason::ClosedByUs => f.write_str("closed by you"),
            EndReason::ConnectionLost(why) => write!(f, "connection lost: {why}"),
            EndReason::Violation(why) => write!(f, "the other side broke the protocol: {why}"),
            EndReason::AbortedByPeer(why) => write!(f, "the other side aborted the chat: {why}"),
        }
    }
}

/// Why a chat could not be set up, or a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The acceptor refused our chat; print it as "bianca refused: {reason}".
    #[error("refused: {0}")]
    Refused(ConnectRefusal),
    /// We (the acceptor) refused an incoming chat; the dialer was told why.
    #[error("refused a chat from \"{claimed}\": {reason}")]
    RefusedIncoming {
        /// The name the dialer claimed (made printable and cut short).
        claimed: String,
        reason: ConnectRefusal,
    },
    /// The acceptor's TLS stack aborted the connection: it did not accept our certificate.
    #[error("the other side rejected our certificate ({0})")]
    TlsRejected(String),
    /// The connection's proven key is not the key we looked up (should not happen with a
    /// connection from [`crate::endpoint::dial_peer`]).
    #[error("the other side's key is not the key the directory gave for them")]
    WrongKey,
    /// A handshake step took longer than [`HANDSHAKE_TIMEOUT`].
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The connection failed or was closed during the handshake.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The other side sent something the protocol does not allow at this point.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The end-to-end key exchange failed (forged or weak key share).
    #[error("end-to-end handshake failed: {0}")]
    Handshake(#[from] SessionError),
    /// The message cannot be sent as it is (too long).
    #[error(transparent)]
    Message(#[from] NameError),
    /// Too many of our messages wait for acknowledgement; try again when some are delivered.
    #[error("{0} messages still wait for the other side to acknowledge them; try again shortly")]
    Backlog(usize),
    /// The chat is over.
    #[error("the chat has ended: {0}")]
    Ended(EndReason),
}

impl ChatError {
    /// The name the dialer claimed, when we refused an incoming chat.
    pub fn claimed(&self) -> Option<&str> {
        match self {
            ChatError::RefusedIncoming { claimed, .. } => Some(claimed),
            _ => None,
        }
    }

    /// The reason the other side gave, when it refused our chat.
    pub fn refusal(&self) -> Option<&ConnectRefusal> {
        match self {
            ChatError::Refused(reason) => Some(reason),
            _ => None,
        }
    }
}

/// What a handle asks the chat's driver task to do.
enum Command {
    /// Send message `id` (ids are given out by the handle, in queue order).
    Send {
        id: u64,
        text: String,
        room: Option<RoomTag>,
    },
}

/// State every clone of a [`ChatHandle`] shares (one per chat, never across chats).
struct Shared {
    peer: UserName,
    peer_key: PublicKey,
    role: Role,
    background: bool,
    session_id: [u8; 32],
    path: Path,
    carrier: transport::Carrier,
    commands: mpsc::Sender<Command>,
    /// Id of the last message queued; the lock makes "next id, then queue" one step, so
    /// ids reach the driver in order.
    last_queued: std::sync::Mutex<u64>,
    /// Set to `true` by [`ChatHandle::close`]; dropped with the last handle, which the
    /// driver also takes as a request to close.
    close: watch::Sender<bool>,
    /// Set by the driver when the chat has ended.
    ended: watch::Receiver<Option<EndReason>>,
}

/// The sending side of a chat. Cheap to clone; every clone talks to the same chat.
/// Dropping the last clone closes the chat (as [`ChatHandle::close`] would).
#[derive(Clone)]
pub struct ChatHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for ChatHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatHandle")
            .field("peer", &self.shared.peer)
            .field("peer_key", &self.shared.peer_key)
            .field("role", &self.shared.role)
            .finish_non_exhaustive()
    }
}

impl ChatHandle {
    /// The other side's user name (as verified: looked up by us or checked by us).
    pub fn peer(&self) -> &UserName {
        &self.shared.peer
    }

    /// The other side's identity key, proven in the TLS handshake and in the key exchange.
    pub fn peer_key(&self) -> PublicKey {
        self.shared.peer_key
    }

    /// Whether we dialed ([`Role::Initiator`]) or accepted ([`Role::Acceptor`]).
    pub fn role(&self) -> Role {
        self.shared.role
    }

    /// Whether the session was opened for room messages or a quick message rather than
    /// as a chat (see [`initiate_with`]).
    pub fn background(&self) -> bool {
        self.shared.background
    }

    /// A value both sides of this chat share and nobody else can predict; two users who
    /// compare it (or a few digits of it) know that no one sits between them in this chat.
    pub fn session_id(&self) -> [u8; 32] {
        self.shared.session_id
    }

    /// The other side's address, as this connection sees it; on a relayed path, the
    /// directory's.
    pub fn remote_address(&self) -> SocketAddr {
        match self.shared.path {
            Path::Direct { remote, .. } => remote,
            Path::Relayed { via } => via,
        }
    }

    /// How the chat travels: directly, or relayed through the directory.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Why the chat ended, once it has.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.shared.ended.borrow().clone()
    }

    /// Queues a message and returns its id at once: it never waits for the network or
    /// for the other side, so a caller that also reads this chat's events cannot
    /// deadlock with it. Delivery is reported later by [`ChatEvent::Delivered`] (or, if
    /// it never comes, in [`ChatEvent::Ended`]'s `undelivered`). When the queue is full
    /// (the other side is not keeping up) the message is refused with
    /// [`ChatError::Backlog`].
    pub async fn send(&self, text: &str) -> Result<u64, ChatError> {
        self.send_tagged(text, None).await
    }

    /// Sends a message that belongs to a room (see [`RoomTag`]); otherwise like
    /// [`ChatHandle::send`].
    pub async fn send_tagged(&self, text: &str, room: Option<RoomTag>) -> Result<u64, ChatError> {
        proto::names::check_message(text)?;
        if let Some(reason) = self.end_reason() {
            return Err(ChatError::Ended(reason));
        }
        let mut last = self
            .shared
            .last_queued
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let id = *last + 1;
        let command = Command::Send {
            id,
            text: text.to_owned(),
            room,
        };
        match self.shared.commands.try_send(command) {
            Ok(()) => {
                *last = id;
                Ok(id)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(ChatError::Backlog(COMMAND_QUEUE)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(self.ended_error()),
        }
    }

    /// Ends the chat: says goodbye, waits (bounded) for the other side's goodbye and its
    /// last acknowledgements, then closes the connection. Returns when the chat is over;
    /// the [`ChatEvent::Ended`] event follows on the events side.
    pub async fn close(&self) {
        self.shared.close.send_replace(true);
        let mut ended = self.shared.ended.clone();
        // The driver may be stuck writing to a peer that stopped reading: after a grace
        // period, closing the connection under it makes that write fail at once.
        let grace = CLOSE_TIMEOUT * 2;
        if tokio::time::timeout(grace, ended.wait_for(Option::is_some))
            .await
            .is_err()
        {
            self.shared.carrier.close(CODE_ABORT, b"close timed out");
            let _ = tokio::time::timeout(grace, ended.wait_for(Option::is_some)).await;
        }
    }

    fn ended_error(&self) -> ChatError {
        ChatError::Ended(
            self.end_reason()
                .unwrap_or_else(|| EndReason::ConnectionLost("the chat task stopped".into())),
        )
    }
}

/// The receiving side of a chat: events in order, ending with [`ChatEvent::Ended`].
/// Dropping it closes the chat (nobody would see the messages we acknowledge).
#[derive(Debug)]
pub struct ChatEvents {
    events: mpsc::Receiver<ChatEvent>,
}

impl ChatEvents {
    /// The next event; `None` after [`ChatEvent::Ended`] has been returned.
    pub async fn next(&mut self) -> Option<ChatEvent> {
        self.events.recv().await
    }
}

/// Cuts a connection close reason to a size that always fits in one packet.
fn close_reason_bytes(reason: &str) -> &[u8] {
    const MAX: usize = 200;
    if reason.len() <= MAX {
        return reason.as_bytes();
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason.as_bytes()[..end]
}

/// The other side's stated reason in an application close, for people to read.
fn application_close_text(close: &quinn::ApplicationClose) -> String {
    if close.reason.is_empty() {
        format!("close code {}", close.error_code)
    } else {
        String::from_utf8_lossy(&close.reason).into_owned()
    }
}
