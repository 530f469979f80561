//! The directory protocol from the peer's side.
//!
//! [`DirectoryClient::connect`] dials the directory from the peer's endpoint (so the
//! directory observes the address other peers can reach), checks the directory's key
//! against the pinned one *before sending anything*, and says `Hello`. Requests may be
//! issued from several tasks at once: they are written in order on the one control
//! stream and each caller gets its own reply (the directory answers in order). Events
//! the directory pushes (shutdown, forced logout) arrive on [`DirectoryClient::take_events`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::frame::{self, FrameError};
use proto::message::{
    AdminRequest, ChannelBinding, ErrorCode, Event, MailItem, MailReceipt, OnlineUser, PeerInfo,
    Refusal, Reply, Request, RoomInfo, RoomMember, ServerMsg, login_transcript, resume_transcript,
};
use proto::message::{RelayMsg, RelayRefusal, RelayToken};
use proto::names::{NameError, RoomName, UserName};
use proto::sealed::SignedPrekey;
use proto::{Fingerprint, Identity, PublicKey};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::chat::RelayStream;
use crate::endpoint::{self, EndpointError};

/// How long to wait for any one reply (argon2 on a busy directory can take a while).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a relay stream waits to be paired with the other side's (a little longer
/// than the directory keeps it waiting).
pub const RELAY_WAIT: Duration = Duration::from_secs(15);

/// What a rendezvous gives: where the peer is, and the relay token for this attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    pub peer: PeerInfo,
    pub token: RelayToken,
    /// Whether to try direct paths (`false`: the directory says go straight to the relay).
    pub direct: bool,
    /// Whether the directory relays.
    pub relay: bool,
}
/// How many pushed events may wait unread before further ones are dropped.
const EVENT_QUEUE: usize = 64;
/// With several directory addresses, how long one attempt runs alone before the next
/// address is tried beside it (as in "happy eyeballs", RFC 8305).
pub const FAILOVER_STAGGER: Duration = Duration::from_millis(750);

/// Why a directory operation failed. The `Display` text is meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the directory: {0}")]
    Unreachable(#[from] EndpointError),
    #[error(
        "the directory at {addr} presents a different key than the one pinned (pinned {pinned}, presented {presented}): \
         someone may be impersonating it; if its operator really replaced the key, pass --directory-fingerprint with the new one"
    )]
    FingerprintChanged {
        addr: SocketAddr,
        pinned: Fingerprint,
        presented: Fingerprint,
    },
    #[error(
        "the directory at {addr} presents the key {presented}, not {expected} as given with \
         --directory-fingerprint: check the fingerprint with the directory's operator \
         (someone may be impersonating it)"
    )]
    FingerprintMismatch {
        addr: SocketAddr,
        expected: Fingerprint,
        presented: Fingerprint,
    },
    #[error("{}", refusal_text(.reason, .attempts_left, .retry_after_secs))]
    Refused {
        reason: Refusal,
        attempts_left: Option<u32>,
        retry_after_secs: Option<u64>,
    },
    #[error("directory error ({code:?}): {message}")]
    Server { code: ErrorCode, message: String },
    #[error("connection to the directory lost: {0}")]
    Lost(String),
    #[error("the directory did not answer within {} s", REPLY_TIMEOUT.as_secs())]
    Timeout,
    #[error("the directory sent something unexpected: {0}")]
    Unexpected(String),
    #[error(transparent)]
    Invalid(#[from] NameError),
    #[error("protocol error: {0}")]
    Frame(#[from] FrameError),
    #[error("the directory did not relay: {0}")]
    Relay(RelayRefusal),
}

fn refusal_text(reason: &Refusal, attempts_left: &Option<u32>, retry: &Option<u64>) -> String {
    let mut s = format!("refused: {reason}");
    match (reason, attempts_left) {
        // A lockout already says so; counting attempts left would only confuse.
        (Refusal::LockedOut, _) | (_, None) => {}
        (_, Some(0)) => s.push_str(" (no attempts left: the account is now locked)"),
        (_, Some(n)) => s.push_str(&format!(
            " ({n} attempt{} left before lockout)",
            if *n == 1 { "" } else { "s" }
        )),
    }
    if let Some(secs) = retry {
        s.push_str(&format!(" (try again in {secs} s)"));
    }
    s
}

/// What a successful login gives.
#[derive(Clone)]
pub struct Grant {
    /// The user name logged in.
    pub user: UserName,
    /// Ticket for a later password-less [`DirectoryClient::resume`]. Kept in memory only.
    pub ticket: Zeroizing<Vec<u8>>,
    /// How long the ticket stays valid.
    pub ticket_lifetime: Duration,
    /// Our address as the directory sees it.
    pub observed: SocketAddr,
    /// Whether this account is an administrator.
    pub admin: bool,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("user", &self.user)
            .field("observed", &self.observed)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

type ReplySlot = oneshot::Sender<Result<Reply, ClientError>>;

/// Replies awaited, in request order; `closed` is set once the stream is gone.
#[derive(Default)]
struct Pending {
    waiting: VecDeque<ReplySlot>,
    closed: Option<String>,
}

/// A connection to the directory.
pub struct DirectoryClient {
    conn: quinn::Connection,
    writer: tokio::sync::Mutex<quinn::SendStream>,
    pending: Arc<Mutex<Pending>>,
    events: Mutex<Option<mpsc::Receiver<Event>>>,
    forced_out: Arc<std::sync::atomic::AtomicBool>,
    addr: SocketAddr,
    key: PublicKey,
    nonce: [u8; 32],
    channel: ChannelBinding,
    open_registration: bool,
}

impl DirectoryClient {
    /// Dials the first of `addrs` (instances of one directory service) that answers.
    ///
    /// The addresses are tried in order, each one [`FAILOVER_STAGGER`] after the previous
    /// one unless that one failed sooner, and the first connection made wins (the others
    /// are dropped). So a healthy first address is always the one used, and a dead one
    /// costs a fraction of a second instead of a whole handshake timeout. A directory
    /// presenting another key than `pinned` ends everything at once with
    /// [`ClientError::FingerprintChanged`]: that is an alarm, not a reason to try the
    /// next address.
    pub async fn connect_any(
        endpoint: &quinn::Endpoint,
        addrs: &[SocketAddr],
        pinned: Option<PublicKey>,
    ) -> Result<Self, ClientError> {
        let mut attempts = tokio::task::JoinSet::new();
        let mut next = addrs.iter().copied();
        let mut last_error = None;
        loop {
            let launched = match next.next() {
                Some(addr) => {
                    let endpoint = endpoint.clone();
                    attempts.spawn(async move { Self::connect(&endpoint, addr, pinned).await });
                    true
                }
                None => false,
            };
            // Wait for a result, or (if more addresses are left) for the stagger.
            let result = if launched && next.len() > 0 {
                match tokio::time::timeout(FAILOVER_STAGGER, attempts.join_next()).await {
                    Ok(result) => result,
                    Err(_) => continue,
                }
            } else {
                attempts.join_next().await
            };
            match result {
                Some(Ok(Ok(client))) => return Ok(client),
                Some(Ok(Err(e @ ClientError::FingerprintChanged { .. }))) => return Err(e),
                Some(Ok(Err(e))) => last_error = Some(e),
                Some(Err(join)) => last_error = Some(ClientError::Unexpected(join.to_string())),
                None if next.len() == 0 => {
                    return Err(last_error.unwrap_or_else(|| {
                        ClientError::Unexpected("no directory address".into())
                    }));
                }
                None => {}
            }
        }
    }

    /// Dials the directory at `addr` from `endpoint`. With `pinned`, a directory presenting
    /// any other key is refused before anything is sent; without, the caller should pin
    /// [`DirectoryClient::directory_key`] (trust on first use).
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        pinned: Option<PublicKey>,
    ) -> Result<Self, ClientError> {
        let config = endpoint::client_config(None, None, proto::ALPN_DIRECTORY)?;
        let conn = endpoint::dial(endpoint, config, addr).await?;
        let key = endpoint::remote_key(&conn)
            .ok_or_else(|| ClientError::Unexpected("no ed25519 certificate".into()))?;
        if let Some(pinned) = pinned
            && pinned != key
        {
            conn.close(1u32.into(), b"directory key changed");
            return Err(ClientError::FingerprintChanged {
                addr,
                pinned: pinned.fingerprint(),
                presented: key.fingerprint(),
            });
        }
        // Our login proofs are bound to the key we accepted and to this TLS session, so a
        // directory cannot relay them to another one.
        let Some(channel) = endpoint::channel_binding(&conn, key) else {
            conn.close(1u32.into(), b"no channel binding");
            return Err(ClientError::Unexpected(
                "the TLS session exports no keying material".into(),
            ));
        };
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Lost(e.to_string()))?;
        let hello = Request::Hello {
            version: proto::PROTOCOL_VERSION,
            software: format!("natter-peer/{}", env!("CARGO_PKG_VERSION")),
        };
        frame::write_frame(&mut send, &hello).await?;
        let welcome =
            tokio::time::timeout(REPLY_TIMEOUT, frame::read_frame::<_, ServerMsg>(&mut recv))
                .await
                .map_err(|_| ClientError::Timeout)??;
        let (nonce, open_registration) = match welcome {
            Some(ServerMsg::Reply(Reply::Welcome {
                nonce,
                open_registration,
                ..
            })) => (nonce, open_registration),
            Some(ServerMsg::Reply(Reply::Error { code, message })) => {
                return Err(ClientError::Server { code, message });
            }
            None => return Err(ClientError::Lost("directory closed the stream".into())),
            Some(other) => return Err(ClientError::Unexpected(format!("{other:?}"))),
        };
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let forced_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(read_loop(
            conn.clone(),
            recv,
            pending.clone(),
            events_tx,
            forced_out.clone(),
        ));
        Ok(Self {
            conn,
            writer: tokio::sync::Mutex::new(send),
            pending,
            events: Mutex::new(Some(events_rx)),
            forced_out,
            addr,
            key,
            nonce,
            channel,
            open_registration,
        })
    }

    /// The key the directory proved in the TLS handshake.
    pub fn directory_key(&self) -> PublicKey {
        self.key
    }

    /// The directory's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the directory lets peers register themselves.
    pub fn open_registration(&self) -> bool {
        self.open_registration
    }

    /// The events the directory pushes. Can be taken once.
    pub fn take_events(&self) -> Option<mpsc::Receiver<Event>> {
        self.events.lock().ok()?.take()
    }

    /// Waits until the connection to the directory is gone, and says why.
    pub async fn closed(&self) -> String {
        let err = self.conn.closed().await;
        // We closed it because of what the directory sent: say that, not just "closed".
        let ours = self.pending.lock().ok().and_then(|p| p.closed.clone());
        match (err, ours) {
            (quinn::ConnectionError::LocallyClosed, Some(reason)) => reason,
            (err, _) => err.to_string(),
        }
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Whether the directory ended our session on purpose (an operator's forced logout):
    /// logging back in automatically would be wrong then.
    pub fn forced_out(&self) -> bool {
        self.forced_out.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes the connection (after a logout, or on exit).
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"bye");
    }

    /// Creates an account (only where the directory allows open registration).
    pub async fn register(
        &self,
        user: &str,
        password: &str,
        identity: &PublicKey,
    ) -> Result<(), ClientError> {
        proto::names::check_username(user)?;
        proto::names::check_new_password(password)?;
        let reply = self
            .request(Request::Register {
                user: user.to_string(),
                password: password.to_string(),
                identity: *identity,
            })
            .await?;
        match reply {
            Reply::Registered { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Logs in with a password and a signature by `identity` over this connection's nonce,
    /// the directory's key and the TLS session.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        identity: &Identity,
        addresses: Vec<SocketAddr>,
    ) -> Result<Grant, ClientError> {
        proto::names::check_password_len(password)?;
        let key = identity.public();
        let signature = identity.sign(&login_transcript(&self.channel, &self.nonce, user, &key));
        let reply = self
            .request(Request::Login {
                user: UserName::parse(user)?,
                password: password.to_string(),
                identity: key,
                signature,
                addresses,
            })
            .await?;
        grant(reply)
    }

    /// Logs back in without the password, with a ticket from an earlier [`Grant`].
    pub async fn resume(
        &self,
        user: &str,
        ticket: &[u8],
        identity: &Identity,
        addresses: Vec<SocketAddr>,
    ) -> Result<Grant, ClientError> {
        let signature = identity.sign(&resume_transcript(&self.channel, &self.nonce, user, ticket));
        let reply = self
            .request(Request::Resume {
                user: UserName::parse(user)?,
                ticket: ticket.to_vec(),
                signature,
                addresses,
            })
            .await?;
        grant(reply)
    }

    /// Where is `user`, with which key? `None` when they are not online (or unknown).
    pub async fn lookup(&self, user: &str) -> Result<Option<PeerInfo>, ClientError> {
        match self
            .request(Request::Lookup {
                user: UserName::parse(user)?,
            })
            .await?
        {
            Reply::Found(info) if info.user == user => Ok(Some(info)),
            Reply::NotFound { .. } => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Like [`Self::lookup`], and the directory also tells `user` that we are coming, from
    /// where (so both sides punch through their NATs at once). `None` when they are not
    /// online.
    pub async fn rendezvous(&self, user: &str) -> Result<Option<Rendezvous>, ClientError> {
        match self
            .request(Request::Rendezvous {
                user: UserName::parse(user)?,
            })
            .await?
        {
            Reply::Rendezvous {
                peer,
                token,
                direct,
                relay,
            } if peer.user == user => Ok(Some(Rendezvous {
                peer,
                token,
                direct,
                relay,
            })),
            Reply::NotFound { .. } => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Opens a relay stream for `token` (from a rendezvous, ours or the other side's) on
    /// this connection and waits, at most [`RELAY_WAIT`], until the directory pairs it
    /// with the other side's.
    pub async fn open_relay(&self, token: RelayToken) -> Result<RelayStream, ClientError> {
        let (mut send, mut recv) = tokio::time::timeout(REPLY_TIMEOUT, self.conn.open_bi())
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|e| ClientError::Lost(e.to_string()))?;
        frame::write_frame(&mut send, &RelayMsg::Open { token }).await?;
        match tokio::time::timeout(RELAY_WAIT, frame::read_frame::<_, RelayMsg>(&mut recv)).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Ok(Some(RelayMsg::Ready { peer }))) => {
                Ok(RelayStream::new(send, recv, self.conn.clone(), peer))
            }
            Ok(Ok(Some(RelayMsg::Refused { reason }))) => Err(ClientError::Relay(reason)),
            Ok(Ok(Some(other))) => Err(ClientError::Unexpected(format!("{other:?}"))),
            Ok(Ok(None)) => Err(ClientError::Lost(
                "the directory ended the relay stream".into(),
            )),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Who is online.
    pub async fn who(&self) -> Result<Vec<OnlineUser>, ClientError> {
        match self.request(Request::Who).await? {
            Reply::Online { users } => Ok(users),
            other => Err(unexpected(other)),
        }
    }

    /// Joins `room`; returns its members.
    pub async fn join_room(&self, room: &str) -> Result<Vec<RoomMember>, ClientError> {
        match self
            .request(Request::JoinRoom {
                room: RoomName::parse(room)?,
            })
            .await?
        {
            Reply::RoomMembers { members, .. } => Ok(members),
            other => Err(unexpected(other)),
        }
    }

    /// Leaves `room`; returns the remaining members.
    pub async fn leave_room(&self, room: &str) -> Result<Vec<RoomMember>, ClientError> {
        match self
            .request(Request::LeaveRoom {
                room: RoomName::parse(room)?,
            })
            .await?
        {
            Reply::RoomMembers { members, .. } => Ok(members),
            other => Err(unexpected(other)),
        }
    }

    /// The rooms that have members.
    pub async fn rooms(&self) -> Result<Vec<RoomInfo>, ClientError> {
        match self.request(Request::ListRooms).await? {
            Reply::Rooms { rooms } => Ok(rooms),
            other => Err(unexpected(other)),
        }
    }

    /// Asks to be told when these users (or everyone) come online or go offline.
    pub async fn watch(&self, users: Vec<UserName>, everyone: bool) -> Result<(), ClientError> {
        match self.request(Request::Watch { users, everyone }).await? {
            Reply::Watching => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// An administrator's request. `Ok` with the directory's answer (`Done`, `Users`,
    /// `NotFound`); refusals (`NotPermitted`, a taken name) are `Err`.
    pub async fn admin(&self, request: AdminRequest) -> Result<Reply, ClientError> {
        self.request(Request::Admin(request)).await
    }

    /// Changes our password at the directory (logged in). A wrong `old` counts towards
    /// the lockout like a failed login; a weak `new` is refused.
    pub async fn change_password(&self, old: &str, new: &str) -> Result<(), ClientError> {
        let request = Request::ChangePassword {
            old: old.to_string(),
            new: new.to_string(),
        };
        match self.request(request).await? {
            Reply::Done { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Publishes our prekey for sealed mail.
    pub async fn publish_prekey(&self, prekey: SignedPrekey) -> Result<(), ClientError> {
        match self.request(Request::PublishPrekey { prekey }).await? {
            Reply::PrekeyPublished => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// `user`'s registered identity key and published prekey (online or not); `None`
    /// when there is no such account (or it has never logged in).
    pub async fn fetch_prekey(
        &self,
        user: &str,
    ) -> Result<Option<(PublicKey, Option<SignedPrekey>)>, ClientError> {
        match self
            .request(Request::FetchPrekey {
                user: UserName::parse(user)?,
            })
            .await?
        {
            Reply::Prekey {
                user: u,
                identity,
                prekey,
            } if u == user => Ok(Some((identity, prekey))),
            Reply::NotFound { .. } => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Deposits a sealed blob for `to`: `Some((id, lifetime))` once stored, `None` when
    /// there is no such user. A full mailbox is `Err(Server{MailboxFull, ..})`.
    pub async fn deposit(
        &self,
        to: &str,
        blob: Vec<u8>,
    ) -> Result<Option<(u64, Duration)>, ClientError> {
        match self
            .request(Request::Deposit {
                to: UserName::parse(to)?,
                blob,
            })
            .await?
        {
            Reply::Queued {
                id,
                expires_in_secs,
            } => Ok(Some((id, Duration::from_secs(expires_in_secs)))),
            Reply::NotFound { .. } => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Mail waiting for us, oldest first, and whether more waits.
    pub async fn fetch_mail(&self) -> Result<(Vec<MailItem>, bool), ClientError> {
        match self.request(Request::FetchMail).await? {
            Reply::Mail { items, more } => Ok((items, more)),
            other => Err(unexpected(other)),
        }
    }

    /// Acknowledges mail we have: the directory deletes it.
    pub async fn ack_mail(&self, ids: Vec<u64>) -> Result<u32, ClientError> {
        match self.request(Request::AckMail { ids }).await? {
            Reply::MailAcked { count } => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    /// What became of mail we deposited, since we last asked.
    pub async fn mail_receipts(&self) -> Result<Vec<MailReceipt>, ClientError> {
        match self.request(Request::MailReceipts).await? {
            Reply::Receipts { receipts } => Ok(receipts),
            other => Err(unexpected(other)),
        }
    }

    /// Ends the directory session; the connection stays open until [`Self::close`].
    pub async fn logout(&self) -> Result<(), ClientError> {
        match self.request(Request::Logout).await? {
            Reply::LoggedOut => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Sends one request and waits for its reply. Refusals and errors become `Err`.
    async fn request(&self, request: Request) -> Result<Reply, ClientError> {
        // Requests may carry a password: wipe the encoded copy once it is written.
        let bytes = Zeroizing::new(frame::encode(&request)?);
        drop(request);
        let (tx, rx) = oneshot::channel();
        {
            let mut writer = self.writer.lock().await;
            {
                let mut pending = self
                    .pending
                    .lock()
                    .map_err(|_| ClientError::Lost("poisoned".into()))?;
                if let Some(reason) = &pending.closed {
                    return Err(ClientError::Lost(reason.clone()));
                }
                pending.waiting.push_back(tx);
            }
            if let Err(e) = writer.write_all(&bytes).await {
                return Err(ClientError::Lost(e.to_string()));
            }
        }
        let reply = tokio::time::timeout(REPLY_TIMEOUT, rx)
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| ClientError::Lost("reply channel closed".into()))??;
        match reply {
            Reply::Refused {
                reason,
                attempts_left,
                retry_after_secs,
            } => Err(ClientError::Refused {
                reason,
                attempts_left,
                retry_after_secs,
            }),
            Reply::Error { code, message } => Err(ClientError::Server { code, message }),
            other => Ok(other),
        }
    }
}

impl Drop for DirectoryClient {
    fn drop(&mut self) {
        self.conn.close(0u32.into(), b"bye");
    }
}

fn grant(reply: Reply) -> Result<Grant, ClientError> {
    match reply {
        Reply::Granted {
            user,
            ticket,
            ticket_lifetime_secs,
            observed,
            admin,
        } => Ok(Grant {
            user,
            ticket: Zeroizing::new(ticket),
            ticket_lifetime: Duration::from_secs(ticket_lifetime_secs),
            observed,
            admin,
        }),
        other => Err(unexpected(other)),
    }
}

fn unexpected(reply: Reply) -> ClientError {
    ClientError::Unexpected(format!("{reply:?}"))
}

/// Close code when the directory sent a frame that does not decode (the directory's
/// own code for a bad frame).
pub const CLOSE_BAD_FRAME: u32 = 2;

/// Routes everything the directory sends: replies to their waiting callers, events to
/// the event queue. On the stream's end every waiting caller is told why. A frame that
/// does not decode (for example a name that breaks the rules, which no
/// [`proto::names::UserName`] can hold) closes the connection: nothing in it is used.
async fn read_loop(
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    pending: Arc<Mutex<Pending>>,
    events: mpsc::Sender<Event>,
    forced_out: Arc<std::sync::atomic::AtomicBool>,
) {
    let reason = loop {
        match frame::read_frame::<_, ServerMsg>(&mut recv).await {
            Ok(Some(ServerMsg::Reply(reply))) => {
                let slot = pending.lock().ok().and_then(|mut p| p.waiting.pop_front());
                match slot {
                    Some(slot) => {
                        let _ = slot.send(Ok(reply));
                    }
                    None => break format!("unsolicited reply {reply:?}"),
                }
            }
            Ok(Some(ServerMsg::Event(event))) => {
                if matches!(event, Event::ForcedLogout { .. }) {
                    forced_out.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if events.try_send(event).is_err() {
                    tracing::warn!("directory event dropped: event queue full or unread");
                }
            }
            Ok(None) => break "the directory closed the connection".to_string(),
            Err(
                e @ (FrameError::Malformed(_)
                | FrameError::Trailing(_)
                | FrameError::TooLarge { .. }),
            ) => {
                let reason = format!("refused a message from the directory: {e}");
                tracing::warn!(%reason, "closing the directory connection");
                if let Ok(mut p) = pending.lock() {
                    p.closed = Some(reason.clone());
                }
                conn.close(CLOSE_BAD_FRAME.into(), b"bad frame");
                break reason;
            }
            Err(e) => break e.to_string(),
        }
    };
    tracing::debug!(%reason, "directory stream ended");
    if let Ok(mut p) = pending.lock() {
        p.closed = Some(reason.clone());
        for slot in p.waiting.drain(..) {
            let _ = slot.send(Err(ClientError::Lost(reason.clone())));
        }
    }
}
