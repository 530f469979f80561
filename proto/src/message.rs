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
//!   Login{user, password, key, sig(nonce, directory key, TLS exporter)} ->
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
//! **Reachability.** A dialer asks for [`Request::Rendezvous`] instead of a lookup; the
//! target hears [`Event::Incoming`] at the same time, and both dial each other (hole
//! punching). When no direct path works, both open a relay stream on their directory
//! connection ([`RelayMsg`]), which the directory splices; the peer-to-peer protocol
//! above then runs over it unchanged, plus a sealed key confirmation after the key
//! shares (there is no TLS between the peers on that path).
//!
//! Every user and room name (but the one a `Register` proposes) is a
//! [`UserName`]/[`RoomName`], so a frame carrying a name that breaks the rules does not
//! decode: it is refused like any other malformed frame.
//!
//! Enum variants are only ever appended, never reordered: bincode encodes the index.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::identity::{PublicKey, Signature, transcript};
use crate::names::{RoomName, UserName};
use crate::sealed::SignedPrekey;
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
    /// Creates an account (when the directory allows open registration). The one name
    /// on the wire that is not a [`UserName`]: it is a proposal, which the directory checks
    /// and answers with `Refused{Invalid}` (a clear answer to a typo) rather than a decode
    /// error. The `Registered` reply carries it as a `UserName`.
    Register {
        user: String,
        password: String,
        identity: PublicKey,
    },
    /// Password login, proven with a signature by the identity key over
    /// [`login_transcript`] (which includes this connection's fresh nonce, the directory's
    /// key and the TLS session's [`ChannelBinding`]).
    Login {
        user: UserName,
        password: String,
        identity: PublicKey,
        signature: Signature,
        /// Addresses the peer listens on as it sees them (LAN addresses).
        addresses: Vec<SocketAddr>,
    },
    /// Password-less re-login with a ticket from an earlier `Granted`, proven with a
    /// signature over [`resume_transcript`].
    Resume {
        user: UserName,
        ticket: Vec<u8>,
        signature: Signature,
        addresses: Vec<SocketAddr>,
    },
    /// Where is `user`, and what is their key? Only for logged-in requesters.
    Lookup { user: UserName },
    /// Who is online?
    Who,
    /// Ends the directory session, and its ticket with it (a later login needs the
    /// password).
    Logout,
    /// Joins a room (creating it if nobody is in it). Membership lasts until `LeaveRoom`.
    JoinRoom { room: RoomName },
    /// Leaves a room.
    LeaveRoom { room: RoomName },
    /// Lists the rooms that have members.
    ListRooms,
    /// Asks for `Event::Presence` about these users (replacing an earlier list), or about
    /// everyone. Room-mates are always reported.
    Watch {
        users: Vec<UserName>,
        everyone: bool,
    },
    /// An administrator's action (see [`AdminRequest`]). Refused with
    /// `Error{NotPermitted}` unless the logged-in user is an administrator.
    Admin(AdminRequest),
    /// Publishes our prekey for sealed mail (see [`crate::sealed`]); the directory checks
    /// its signature against the account's identity key and keeps the newest one.
    PublishPrekey { prekey: SignedPrekey },
    /// The identity key and prekey of `user`, online or not, for sealing mail to them or
    /// checking who sealed mail to us. `Reply::Prekey`, or `NotFound`.
    FetchPrekey { user: UserName },
    /// Stores a sealed message for `to` (at most [`crate::sealed::MAX_BLOB`] bytes).
    /// `Reply::Queued`, `NotFound`, or `Error{MailboxFull}`.
    Deposit { to: UserName, blob: Vec<u8> },
    /// Mail waiting for us, oldest first, as much as fits one reply. `Reply::Mail`.
    FetchMail,
    /// We have the mail with these ids: delete it (the senders get a receipt).
    /// `Reply::MailAcked`.
    AckMail { ids: Vec<u64> },
    /// What became of mail we deposited: delivered or expired since we last asked (each
    /// outcome is reported once). `Reply::Receipts`.
    MailReceipts,
    /// We are about to connect to `user`: like `Lookup`, but the directory also tells
    /// them (`Event::Incoming`) who is coming from where, so both sides send packets at
    /// once (hole punching). `Reply::Rendezvous`, or `NotFound`.
    Rendezvous { user: UserName },
    /// Directory instance → directory instance (several instances on one database): "I
    /// am instance `instance` of this service", proven with a signature by the
    /// directory's own key (which every instance holds) over [`instance_transcript`].
    /// After `Reply::Done`, each further stream the instance opens carries one relayed
    /// session ([`RelayMsg::Forward`]).
    InstanceAuth {
        instance: String,
        signature: Signature,
    },
    /// Changes the logged-in user's password. `old` is checked like a login's (a wrong
    /// one counts towards the lockout: `Refused{BadCredentials|LockedOut}`); `new` must
    /// pass [`crate::names::check_new_password`] (`Refused{Invalid}`). `Reply::Done`.
    /// Every other ticket of the user dies (this session's stays).
    ChangePassword { old: String, new: String },
}

/// Why a login or registration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// Unknown user or wrong password (deliberately indistinguishable).
    BadCredentials,
    /// Too many failures: the account or the source address is locked for a while.
    LockedOut,
    /// The identity key differs from the one registered for this account. (Not sent for
    /// a login any more: there a wrong key answers like a wrong password,
    /// `BadCredentials`, so that it does not tell a guesser the password was right.)
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
    /// Too many registrations or failed logins from this network address (not the
    /// account's lockout: another address is not affected).
    SourceBlocked,
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
            Refusal::SourceBlocked => {
                "too many registrations or failed logins from your network address"
            }
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
    /// The request needs an administrator (the attempt is audited).
    NotPermitted,
    /// The recipient's mailbox is full (too many messages or bytes waiting).
    MailboxFull,
}

/// One online user, as listed by `Who`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineUser {
    pub user: UserName,
    /// Seconds since they logged in.
    pub online_secs: u64,
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMember {
    pub user: UserName,
    pub online: bool,
}

/// A room and how many members it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub room: RoomName,
    pub members: u32,
}

/// Most users one `Watch` may name.
pub const MAX_WATCH: usize = 1024;

/// What the directory knows about a logged-in user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub user: UserName,
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
        user: UserName,
    },
    Granted {
        user: UserName,
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
        user: UserName,
    },
    Online {
        users: Vec<OnlineUser>,
    },
    LoggedOut,
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Answer to `JoinRoom`, and to `LeaveRoom` (with the remaining members).
    RoomMembers {
        room: RoomName,
        members: Vec<RoomMember>,
    },
    /// Answer to `ListRooms`.
    Rooms {
        rooms: Vec<RoomInfo>,
    },
    /// Answer to `Watch`.
    Watching,
    /// Answer to `Admin(ListUsers)`: every account, sorted by name.
    Users(Vec<AccountInfo>),
    /// Answer to an administrator's action that succeeded, in words for the user.
    Done {
        message: String,
    },
    /// Answer to `PublishPrekey`.
    PrekeyPublished,
    /// Answer to `FetchPrekey`: the account's identity key, and its prekey if it has
    /// published one.
    Prekey {
        user: UserName,
        identity: PublicKey,
        prekey: Option<SignedPrekey>,
    },
    /// Answer to `Deposit`: stored, with this id, until delivered or expired.
    Queued {
        id: u64,
        expires_in_secs: u64,
    },
    /// Answer to `FetchMail`: waiting mail, oldest first; `more` when not all of it fit.
    Mail {
        items: Vec<MailItem>,
        more: bool,
    },
    /// Answer to `AckMail`: how many of the ids were ours and are now deleted.
    MailAcked {
        count: u32,
    },
    /// Answer to `MailReceipts`.
    Receipts {
        receipts: Vec<MailReceipt>,
    },
    /// Answer to `Rendezvous`: where the user is, and the token naming this connection
    /// attempt on a relay stream ([`RelayMsg::Open`]).
    Rendezvous {
        peer: PeerInfo,
        token: RelayToken,
        /// Whether to try a direct path at all (`false`: go straight to the relay).
        direct: bool,
        /// Whether this directory relays (the operator may have turned it off).
        relay: bool,
    },
}

/// One sealed message waiting for its recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailItem {
    pub id: u64,
    /// Unix time it was deposited.
    pub deposited_at: i64,
    /// The sealed blob, opaque to the directory.
    pub blob: Vec<u8>,
}

/// What became of one message we deposited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailReceipt {
    pub id: u64,
    pub to: UserName,
    /// `true`: the recipient took it; `false`: it expired undelivered.
    pub delivered: bool,
}

/// Something the directory tells a peer without being asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The directory is shutting down; the connection will close.
    Shutdown { reason: String },
    /// An operator ended this user's directory session.
    ForcedLogout { reason: String },
    /// Someone joined or left a room we are in.
    RoomChanged {
        room: RoomName,
        user: UserName,
        joined: bool,
    },
    /// A user we watch (or a room-mate) came online or went offline.
    Presence { user: UserName, online: bool },
    /// Sealed mail for us was just deposited: fetch it.
    MailWaiting,
    /// Mail we deposited was delivered (or expired): ask for `MailReceipts`.
    MailReceiptsWaiting,
    /// `from` is about to connect to us (their `Rendezvous`): send packets toward their
    /// addresses now, from the socket we use for the directory (hole punching), unless
    /// `direct` is `false`.
    Incoming {
        from: PeerInfo,
        token: RelayToken,
        direct: bool,
    },
    /// `from` found no direct path and waits on the relay: open a relay stream with
    /// [`RelayMsg::Open`] and this token to take the call.
    RelayCall { from: UserName, token: RelayToken },
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
    /// Dialer → acceptor, first frame: who I claim to be. `background` marks a session
    /// opened to carry room messages or a quick message, which the acceptor should not
    /// turn into its current chat.
    Connect {
        version: u32,
        initiator: UserName,
        background: bool,
    },
    /// Acceptor → dialer: accepted, with the acceptor's name.
    Accepted { user: UserName },
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
    /// A chat message. Ids count up from 1 per direction. A room message carries the
    /// room and its place in the sender's sequence for that room, so members notice what
    /// they missed.
    Text {
        id: u64,
        text: String,
        sent_at_ms: u64,
        room: Option<RoomTag>,
    },
    /// The receiver got message `id`.
    Ack { id: u64 },
    /// The sender ends the session.
    Bye,
}

/// Marks a chat message as belonging to a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomTag {
    pub room: RoomName,
    /// Counts up from 1 per sender and room (for this sender's current login).
    pub seq: u64,
}

/// What an administrator may ask the directory to do (inside [`Request::Admin`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Creates an account (its identity key is registered on its first login).
    AddUser {
        name: UserName,
        password: String,
        admin: bool,
    },
    /// Lists every account, online or not, locked or not.
    ListUsers,
    /// Ends that user's directory session now; their peer is told why.
    LogoutUser { name: UserName },
    /// Locks the account until an administrator unlocks it (and ends its session).
    Lock { name: UserName },
    /// Lifts a lock, by an administrator or after failed logins.
    Unlock { name: UserName },
    /// Tells every peer, stops accepting, flushes storage and exits.
    Shutdown,
}

impl AdminRequest {
    /// The action's name, for logs and the audit trail (never its password).
    pub fn action(&self) -> &'static str {
        match self {
            AdminRequest::AddUser { .. } => "add_user",
            AdminRequest::ListUsers => "list_users",
            AdminRequest::LogoutUser { .. } => "logout_user",
            AdminRequest::Lock { .. } => "lock",
            AdminRequest::Unlock { .. } => "unlock",
            AdminRequest::Shutdown => "shutdown",
        }
    }

    /// The account acted on, if any.
    pub fn target(&self) -> Option<&str> {
        match self {
            AdminRequest::AddUser { name, .. }
            | AdminRequest::LogoutUser { name }
            | AdminRequest::Lock { name }
            | AdminRequest::Unlock { name } => Some(name),
            AdminRequest::ListUsers | AdminRequest::Shutdown => None,
        }
    }
}

/// Written by hand so that a password never reaches a log through `{:?}`.
impl std::fmt::Debug for AdminRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminRequest::AddUser { name, admin, .. } => f
                .debug_struct("AddUser")
                .field("name", name)
                .field("password", &"<redacted>")
                .field("admin", admin)
                .finish(),
            AdminRequest::ListUsers => f.write_str("ListUsers"),
            AdminRequest::LogoutUser { name } => {
                f.debug_struct("LogoutUser").field("name", name).finish()
            }
            AdminRequest::Lock { name } => f.debug_struct("Lock").field("name", name).finish(),
            AdminRequest::Unlock { name } => f.debug_struct("Unlock").field("name", name).finish(),
            AdminRequest::Shutdown => f.write_str("Shutdown"),
        }
    }
}

/// One account, as an administrator's `ListUsers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    pub name: UserName,
    pub admin: bool,
    /// Logged in right now.
    pub online: bool,
    /// Locked by an administrator (until unlocked).
    pub locked_by_admin: bool,
    /// Seconds until a lockout after failed logins lifts, when locked that way.
    pub locked_for_secs: Option<u64>,
    /// Wrong passwords since the last successful login.
    pub failed_attempts: u32,
    /// The registered identity key (none until the first login).
    pub identity: Option<PublicKey>,
    /// Unix time the account was created.
    pub created_at: i64,
}

/// Label of the TLS keying-material exporter (RFC 5705, RFC 8446 section 7.5) whose output
/// binds a peer's signatures for the directory to the connection they travel on. The
/// exporter's context is empty.
pub const CHANNEL_EXPORTER_LABEL: &[u8] = b"EXPORTER-natter directory login v2";
/// Bytes taken from that exporter.
pub const CHANNEL_EXPORTER_LEN: usize = 32;

/// What every signature a peer makes for the directory is bound to besides its own
/// content: the directory it is meant for and the TLS session it travels on. Both sides
/// compute it, each from its own end: the directory from its own key and its side of the
/// connection, the peer from the directory key it pinned (or just accepted) and its side.
/// A directory that relays a peer's proof to another directory has neither that
/// directory's key nor the TLS session the proof was made in, so the proof does not
/// verify there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelBinding {
    /// The directory's identity key.
    pub directory: PublicKey,
    /// [`CHANNEL_EXPORTER_LABEL`] exported from this connection's TLS session.
    pub exporter: [u8; CHANNEL_EXPORTER_LEN],
}

/// Bytes signed for a password login: binds the signature to this connection's nonce,
/// the user name and the key, and to the directory and the TLS session (`channel`), so
/// it cannot be replayed elsewhere nor relayed to another directory.
pub fn login_transcript(
    channel: &ChannelBinding,
    nonce: &[u8; 32],
    user: &str,
    identity: &PublicKey,
) -> Vec<u8> {
    transcript(
        "natter-login-v2",
        &[
            &channel.directory.0,
            &channel.exporter,
            nonce,
            user.as_bytes(),
            &identity.0,
        ],
    )
}

/// Bytes a directory instance signs, with the directory's key, to open a link to another
/// instance of the same service (`Request::InstanceAuth`).
pub fn instance_transcript(nonce: &[u8; 32], instance: &str) -> Vec<u8> {
    transcript("natter-instance-v1", &[nonce, instance.as_bytes()])
}

/// Bytes signed for a ticket login, bound like [`login_transcript`].
pub fn resume_transcript(
    channel: &ChannelBinding,
    nonce: &[u8; 32],
    user: &str,
    ticket: &[u8],
) -> Vec<u8> {
    transcript(
        "natter-resume-v2",
        &[
            &channel.directory.0,
            &channel.exporter,
            nonce,
            user.as_bytes(),
            ticket,
        ],
    )
}

/// Names one connection attempt on the relay; made by the directory at `Rendezvous` and
/// known only to the two peers it was given to.
pub type RelayToken = [u8; 16];

/// Frames on a relay stream: a new bidirectional stream a logged-in peer opens on its
/// directory connection. After `Ready` the stream carries the chat's own frames
/// ([`PeerMsg`]), spliced to the other peer's relay stream byte for byte; the directory
/// never sees anything but the end-to-end sealed session.
///
/// ```text
/// peer                                directory
///   Open{token}                 ->    matches both sides of `token`
///                               <-    Ready{peer} | Refused{reason}
///   (chat frames, both ways, spliced to the other peer)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayMsg {
    /// Peer → directory, the stream's first frame: join the relay session of `token`.
    Open { token: RelayToken },
    /// Directory → peer: the other side (logged in as `peer`) is there; from now on the
    /// stream carries the chat.
    Ready { peer: UserName },
    /// Directory → peer: no relay for this stream; it ends.
    Refused { reason: RelayRefusal },
    /// Instance → instance, the first frame of a stream on an instance link: the stream
    /// is `user`'s relay stream for `token`, which the receiving instance issued; the
    /// sending instance copies bytes between it and `user`'s own stream.
    Forward { token: RelayToken, user: UserName },
}

/// Stream error code the relay resets a peer's relay stream with when the other peer's
/// side broke without a code of its own (its directory connection was lost, or it stopped
/// reading for too long). Codes the peers reset their streams with are passed on as they
/// are.
pub const RELAY_PEER_LOST: u32 = 0x10;

/// Why the directory did not relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayRefusal {
    /// The operator turned the relay off.
    Disabled,
    /// Relay streams are for logged-in users only.
    NotLoggedIn,
    /// The token is unknown, expired, used, or not ours.
    UnknownToken,
    /// We (or the relay as a whole) have as many relay sessions open as allowed.
    TooManySessions,
    /// The other side did not come to the relay in time.
    NoAnswer,
    /// The session lives on another instance of the directory, which cannot be reached.
    InstanceUnreachable,
}

impl std::fmt::Display for RelayRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RelayRefusal::Disabled => "the directory does not relay (turned off by its operator)",
            RelayRefusal::NotLoggedIn => "not logged in",
            RelayRefusal::UnknownToken => "unknown or expired relay token",
            RelayRefusal::TooManySessions => "too many relay sessions open",
            RelayRefusal::NoAnswer => "the other side did not come to the relay",
            RelayRefusal::InstanceUnreachable => {
                "the other side's directory instance cannot be reached"
            }
        })
    }
}
