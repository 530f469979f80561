//! One client connection: the protocol state machine behind its control stream.
//!
//! ```text
//! accept_bi ──> AwaitHello ──Hello(v=ours)──> Ready ──Login/Resume ok──> Ready + Session
//!                  │  other / wrong version           │  Logout: session dropped
//!                  └──> Error reply, close           └─ Lookup, Who, Register, ...
//! ```
//!
//! A connection starts anonymous, in the anonymous budget of [`crate::limits`]: it must
//! log in (or prove to be another instance) within `login_timeout` of `Welcome`, or it is
//! closed with [`close::TIMEOUT`], however many keep-alives or requests it sends
//! meanwhile. A login moves its slot to the user budget; a `Logout` starts the deadline
//! again. An anonymous connection whose slot a newcomer took (see [`ConnSlot::evicted`])
//! is closed with [`close::BUSY`].
//!
//! Requests are read and answered one at a time, so a connection never has more than one
//! request in flight and nothing queues without bound; a per-connection token bucket
//! answers floods with `Error{RateLimited}`. Between requests the task also listens for
//! the shutdown signal and for events from presence (a forced logout); either is sent as
//! an `Event` and ends the connection.
//!
//! A frame that is too large, truncated or not a valid `Request` gets `Error{BadFrame}`
//! and the connection is closed with [`close::BAD_FRAME`]; nothing from the network can
//! make this task panic or allocate beyond one frame. The stream mechanics (deadlines,
//! writing, closing so the last message arrives) live in [`crate::control`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use proto::Signature;
use proto::frame::{self, FrameError};
use proto::message::{
    ChannelBinding, ErrorCode, Event, Refusal, Reply, Request, ServerMsg, instance_transcript,
};
use quinn::VarInt;
use tokio::sync::mpsc;
use tokio::time::timeout;
use zeroize::Zeroizing;

use crate::admin_requests;
use crate::audit::AuditEvent;
use crate::auth::{self, Origin};
use crate::control::{ControlStream, ReadFailure, WriteFailure};
use crate::limits::{ConnSlot, RequestBudget};
use crate::lookup;
use crate::mailbox;
use crate::presence::{ConnHandle, Session};
use crate::relay;
use crate::rendezvous;
use crate::rooms;
use crate::shutdown::Shutdown;
use crate::state::Shared;

/// Application error codes the directory closes connections with (QUIC
/// `CONNECTION_CLOSE`); the reason phrase says the same in words.
pub mod close {
    /// The client finished its stream; nothing went wrong.
    pub const NORMAL: u32 = 0;
    /// The client broke the protocol (no `Hello` first, a second `Hello`, wrong version).
    pub const PROTOCOL: u32 = 1;
    /// A frame could not be decoded or was too large.
    pub const BAD_FRAME: u32 = 2;
    /// The session ended: logged in elsewhere, or the operator removed the account.
    pub const FORCED_LOGOUT: u32 = 3;
    /// The directory is shutting down.
    pub const SHUTDOWN: u32 = 4;
    /// The client was too slow (no stream, no `Hello`, no login in time, not reading
    /// replies).
    pub const TIMEOUT: u32 = 5;
    /// The connection had not logged in and its slot went to a newcomer from a less busy
    /// source (see [`crate::limits`]).
    pub const BUSY: u32 = 6;
}

/// How a connection ends.
#[derive(Debug)]
enum End {
    /// Close with `code`/`reason`, after sending `last` if there is one.
    Close {
        last: Option<ServerMsg>,
        code: u32,
        reason: String,
    },
    /// The connection is gone already (idle timeout, reset, client closed).
    Lost(String),
}

impl End {
    fn close(code: u32, reason: &str) -> Self {
        End::Close {
            last: None,
            code,
            reason: reason.into(),
        }
    }

    fn bad_frame(err: &FrameError) -> Self {
        End::Close {
            last: Some(ServerMsg::Reply(Reply::Error {
                code: ErrorCode::BadFrame,
                message: err.to_string(),
            })),
            code: close::BAD_FRAME,
            reason: "bad frame".into(),
        }
    }

    fn event(event: Event) -> Self {
        let (code, reason) = match &event {
            Event::Shutdown { reason } => (close::SHUTDOWN, reason.clone()),
            Event::ForcedLogout { reason } => (close::FORCED_LOGOUT, reason.clone()),
            // Notifications never end a connection; they arrive on their own queue.
            Event::RoomChanged { .. }
            | Event::Presence { .. }
            | Event::MailWaiting
            | Event::MailReceiptsWaiting
            | Event::Incoming { .. }
            | Event::RelayCall { .. } => (close::NORMAL, String::new()),
        };
        End::Close {
            last: Some(ServerMsg::Event(event)),
            code,
            reason,
        }
    }
}

/// What one request leads to: a reply, and maybe the end of the connection after it.
struct Step {
    reply: Reply,
    then_close: Option<(u32, &'static str)>,
}

impl Step {
    fn reply(reply: Reply) -> Self {
        Self {
            reply,
            then_close: None,
        }
    }

    fn fatal(code: ErrorCode, message: String, close_code: u32, reason: &'static str) -> Self {
        Self {
            reply: Reply::Error { code, message },
            then_close: Some((close_code, reason)),
        }
    }
}

/// The per-connection protocol state.
struct State {
    shared: Arc<Shared>,
    remote: SocketAddr,
    conn: ConnHandle,
    /// `None` until `Hello`; then this connection's login nonce.
    nonce: Option<[u8; 32]>,
    /// What login proofs on this connection are bound to (our key, the TLS session).
    channel: ChannelBinding,
    /// The logged-in user, if any. Dropping it removes them from presence.
    session: Option<Session>,
    /// The hash of the ticket this session was granted: a logout deletes it, a password
    /// change keeps only it.
    ticket: Option<[u8; 32]>,
    /// Set when the other end proved to be another instance of this directory
    /// (`InstanceAuth`): its further streams are forwarded relay streams.
    instance: Option<String>,
    /// The QUIC connection (to open it to more streams for an instance link).
    quic: quinn::Connection,
    /// This connection's place in the connection limits: anonymous until a login.
    slot: ConnSlot,
    /// When an anonymous connection (after `Welcome`, or after a `Logout`) must have
    /// logged in by; `None` before `Hello` and while logged in.
    login_deadline: Option<Instant>,
}

/// Serves one established connection until it ends. `id` is unique in this process;
/// the caller runs this inside a span naming the connection.
pub(crate) async fn run(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    id: u64,
    slot: ConnSlot,
    mut shutdown: Shutdown,
) {
    let remote = proto::addr::canonical(conn.remote_address());
    let hello_timeout = shared.config.hello_timeout;
    let Some(channel) = crate::tls::channel_binding(&conn, shared.directory_key) else {
        tracing::warn!("the TLS session exports no keying material; closing");
        conn.close(VarInt::from_u32(close::PROTOCOL), b"no channel binding");
        return;
    };

    // The client opens the control stream and sends `Hello` at once.
    let opened = tokio::select! {
        r = timeout(hello_timeout, conn.accept_bi()) => r,
        () = slot.evicted() => {
            conn.close(VarInt::from_u32(close::BUSY), b"busy");
            return;
        }
        reason = shutdown.recv() => {
            conn.close(VarInt::from_u32(close::SHUTDOWN), reason.as_bytes());
            return;
        }
    };
    let control = match opened {
        Ok(Ok((send, recv))) => ControlStream::new(send, recv)
            .with_timeouts(shared.config.frame_timeout, shared.config.write_timeout),
        Ok(Err(e)) => {
            tracing::debug!("connection ended before opening a stream: {e}");
            return;
        }
        Err(_) => {
            tracing::info!("no control stream within {hello_timeout:?}; closing");
            conn.close(VarInt::from_u32(close::TIMEOUT), b"no control stream");
            return;
        }
    };
    tracing::debug!("control stream open");

    let (events_tx, events_rx) = mpsc::channel(1);
    // Notifications (presence, rooms) waiting to be written; past this the connection is
    // disconnected as too slow (see [`crate::presence`]).
    let (notify_tx, notify_rx) = mpsc::channel(shared.config.notify_queue.max(1));
    let state = State {
        shared,
        remote,
        conn: ConnHandle {
            id,
            events: events_tx,
            notify: notify_tx,
        },
        nonce: None,
        channel,
        session: None,
        ticket: None,
        instance: None,
        quic: conn.clone(),
        slot,
        login_deadline: None,
    };
    serve(state, &conn, control, (events_rx, notify_rx), shutdown).await;
}

async fn serve(
    mut state: State,
    conn: &quinn::Connection,
    mut control: ControlStream,
    (mut events, mut notes): (mpsc::Receiver<Event>, mpsc::Receiver<Event>),
    mut shutdown: Shutdown,
) {
    let config = &state.shared.config;
    let mut budget = RequestBudget::new(
        config.requests_per_sec,
        config.request_burst,
        Instant::now(),
    );
    let hello_timeout = config.hello_timeout;
    let end = loop {
        // Until `Hello`, the client gets a deadline for each request; after it, one
        // deadline to log in by (no lingering anonymous connections).
        let deadline = match (state.nonce, state.login_deadline) {
            (None, _) => Some(hello_timeout),
            (Some(_), Some(by)) => {
                let left = by.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    tracing::info!("not logged in in time; closing the connection");
                    break End::close(close::TIMEOUT, "log in sooner");
                }
                Some(left)
            }
            (Some(_), None) => None,
        };
        let read = tokio::select! {
            biased;
            reason = shutdown.recv() => break End::event(Event::Shutdown { reason }),
            () = state.slot.evicted() => {
                tracing::info!("anonymous connection evicted for a newcomer");
                break End::close(close::BUSY, "busy");
            }
            Some(event) = events.recv() => {
                if let (Event::ForcedLogout { reason }, Some(session)) = (&event, &state.session) {
                    state.shared.audit.record(AuditEvent::ForcedLogout {
                        user: session.user().to_string(),
                        reason: reason.clone(),
                    });
                }
                break End::event(event);
            }
            Some(note) = notes.recv() => {
                match control.write(&ServerMsg::Event(note)).await {
                    Ok(()) => continue,
                    Err(WriteFailure::Lost(why)) => break End::Lost(why),
                    Err(WriteFailure::TimedOut) => break End::close(close::TIMEOUT, "not reading"),
                }
            }
            // Further streams of a logged-in user are relay streams (see `crate::relay`),
            // and so are those of another instance's link, forwarded for its users;
            // before either, extra streams are never read.
            stream = conn.accept_bi(), if state.session.is_some() || state.instance.is_some() => {
                match (stream, &state.session) {
                    (Ok((send, recv)), Some(session)) => {
                        relay::accept_stream(&state.shared, session.user().clone(), send, recv);
                        continue;
                    }
                    (Ok((send, recv)), None) => {
                        relay::forward::accept_link_stream(state.shared.relay.clone(), send, recv);
                        continue;
                    }
                    (Err(e), _) => break End::Lost(e.to_string()),
                }
            }
            r = control.read_payload(deadline) => r,
        };
        let payload = match read {
            Ok(Some(payload)) => payload,
            Ok(None) => break End::close(close::NORMAL, "bye"),
            Err(ReadFailure::TimedOut) if state.login_deadline.is_some() => {
                tracing::info!("not logged in in time; closing the connection");
                break End::close(close::TIMEOUT, "log in sooner");
            }
            Err(ReadFailure::TimedOut) => {
                tracing::info!("client too slow to send a request; closing the connection");
                break End::close(close::TIMEOUT, "too slow");
            }
            Err(ReadFailure::Lost(why)) => break End::Lost(why),
            Err(ReadFailure::Frame(e)) => {
                tracing::warn!("bad frame: {e}; closing the connection");
                break End::bad_frame(&e);
            }
        };
        let request: Request = match frame::decode(&payload) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!("bad frame: {e}; closing the connection");
                break End::bad_frame(&e);
            }
        };
        drop(payload);
        let step = if budget.try_take(Instant::now()) {
            state.handle(request).await
        } else {
            Step::reply(Reply::Error {
                code: ErrorCode::RateLimited,
                message: "too many requests; slow down".into(),
            })
        };
        match control.write(&ServerMsg::Reply(step.reply)).await {
            Ok(()) => {}
            Err(WriteFailure::Lost(why)) => break End::Lost(why),
            Err(WriteFailure::TimedOut) => break End::close(close::TIMEOUT, "not reading replies"),
        }
        if let Some((code, reason)) = step.then_close {
            break End::close(code, reason);
        }
    };

    // Leave presence before anything else: a vanished peer must stop being listed now.
    drop(state.session.take());
    match end {
        End::Lost(why) => tracing::debug!("connection lost: {why}"),
        End::Close { last, code, reason } => {
            tracing::debug!(code, reason, "closing the connection");
            control.close(conn, last, code, &reason).await;
        }
    }
}

impl State {
    async fn handle(&mut self, request: Request) -> Step {
        let Some(nonce) = self.nonce else {
            return self.hello(request);
        };
        let origin = Origin {
            remote: self.remote,
            nonce: &nonce,
            channel: &self.channel,
            conn: &self.conn,
        };
        let shared = &*self.shared;
        if self.session.is_none() && needs_login(&request) {
            // Counted, not audited one by one: a stranger must not flush the audit log.
            shared
                .metrics
                .anonymous_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        match request {
            Request::Hello { .. } => Step::fatal(
                ErrorCode::ProtocolViolation,
                "Hello sent twice".into(),
                close::PROTOCOL,
                "protocol violation",
            ),
            Request::InstanceAuth {
                instance,
                signature,
            } => self.instance_auth(&nonce, instance, &signature),
            Request::ChangePassword { old, new } => {
                let (old, new) = (Zeroizing::new(old), Zeroizing::new(new));
                Step::reply(match &self.session {
                    Some(session) => {
                        auth::change_password(
                            shared,
                            origin,
                            session.user(),
                            &old,
                            &new,
                            self.ticket,
                        )
                        .await
                    }
                    None => Reply::Error {
                        code: ErrorCode::NotLoggedIn,
                        message: "log in first".into(),
                    },
                })
            }
            Request::Register {
                user,
                password,
                identity,
            } => {
                let password = Zeroizing::new(password);
                Step::reply(auth::register(shared, origin, &user, &password, identity).await)
            }
            Request::Login {
                user,
                password,
                identity,
                signature,
                addresses,
            } => {
                let password = Zeroizing::new(password);
                if self.session.is_some() {
                    return Step::reply(already_logged_in());
                }
                let (reply, session) = auth::login(
                    shared, origin, &user, &password, identity, &signature, addresses,
                )
                .await;
                self.logged_in(reply, session)
            }
            Request::Resume {
                user,
                ticket,
                signature,
                addresses,
            } => {
                let ticket = Zeroizing::new(ticket);
                if self.session.is_some() {
                    return Step::reply(already_logged_in());
                }
                let (reply, session) =
                    auth::resume(shared, origin, &user, &ticket, &signature, addresses).await;
                self.logged_in(reply, session)
            }
            Request::Lookup { user } => Step::reply(lookup::lookup(
                shared,
                self.session.as_ref().map(Session::user),
                &user,
            )),
            Request::Rendezvous { user } => Step::reply(rendezvous::rendezvous(
                shared,
                self.session.as_ref().map(Session::user),
                &user,
            )),
            Request::Who => Step::reply(lookup::who(
                shared,
                self.session.as_ref().map(Session::user),
            )),
            Request::JoinRoom { room } => Step::reply(
                rooms::join(shared, self.session.as_ref().map(Session::user), &room).await,
            ),
            Request::LeaveRoom { room } => Step::reply(
                rooms::leave(shared, self.session.as_ref().map(Session::user), &room).await,
            ),
            Request::ListRooms => Step::reply(rooms::list(
                shared,
                self.session.as_ref().map(Session::user),
            )),
            Request::Watch { users, everyone } => Step::reply(match &self.session {
                None => Reply::Error {
                    code: ErrorCode::NotLoggedIn,
                    message: "log in first".into(),
                },
                Some(session) => {
                    let users = users.into_iter().take(proto::message::MAX_WATCH).collect();
                    shared.presence.set_watch(session.user(), users, everyone);
                    Reply::Watching
                }
            }),
            Request::Admin(request) => Step::reply(
                admin_requests::handle(
                    shared,
                    self.session.as_ref().map(Session::user),
                    self.remote.ip(),
                    request,
                )
                .await,
            ),
            Request::PublishPrekey { prekey } => Step::reply(
                mailbox::publish_prekey(shared, self.session.as_ref().map(Session::user), prekey)
                    .await,
            ),
            Request::FetchPrekey { user } => Step::reply(
                mailbox::fetch_prekey(shared, self.session.as_ref().map(Session::user), &user)
                    .await,
            ),
            Request::Deposit { to, blob } => Step::reply(
                mailbox::deposit(shared, self.session.as_ref().map(Session::user), &to, blob).await,
            ),
            Request::FetchMail => {
                Step::reply(mailbox::fetch(shared, self.session.as_ref().map(Session::user)).await)
            }
            Request::AckMail { ids } => Step::reply(
                mailbox::ack(shared, self.session.as_ref().map(Session::user), ids).await,
            ),
            Request::MailReceipts => Step::reply(
                mailbox::receipts(shared, self.session.as_ref().map(Session::user)).await,
            ),
            Request::Logout => {
                if let Some(session) = self.session.take() {
                    shared.audit.record(AuditEvent::LoggedOut {
                        user: session.user().to_string(),
                    });
                    self.login_deadline = Some(Instant::now() + shared.config.login_timeout);
                }
                // The session's ticket dies with it: a logout is meant to last.
                if let Some(ticket) = self.ticket.take()
                    && let Err(e) = shared.store.delete_ticket(ticket).await
                {
                    return Step::reply(auth::internal(e));
                }
                Step::reply(Reply::LoggedOut)
            }
        }
    }

    /// After a login or resume: a session moves the connection to the user budget and
    /// lifts the login deadline. With the user budget full (or this connection's
    /// anonymous slot taken by a newcomer while the login ran) the session is dropped
    /// again and the client told to come back later.
    fn logged_in(&mut self, reply: Reply, session: Option<Session>) -> Step {
        let Some(session) = session else {
            return Step::reply(reply);
        };
        if !self.slot.promote() {
            tracing::warn!(
                "logged-in connection limit ({}) reached; login of {} dropped",
                self.shared.config.max_connections,
                session.user()
            );
            drop(session);
            return Step::reply(Reply::Error {
                code: ErrorCode::RateLimited,
                message: "the directory is busy; try again later".into(),
            });
        }
        self.session = Some(session);
        self.ticket = granted_ticket(&reply);
        self.login_deadline = None;
        Step::reply(reply)
    }

    /// Another instance of this directory links to us to relay its users' streams (see
    /// [`crate::relay::forward`]): it must sign with the directory's own key.
    fn instance_auth(&mut self, nonce: &[u8; 32], instance: String, signature: &Signature) -> Step {
        let transcript = instance_transcript(nonce, &instance);
        let linked = match (self.shared.relay.links(), &self.session, &self.instance) {
            (Some(links), None, None) => {
                links.directory_key().verify(&transcript, signature).is_ok()
            }
            _ => false,
        };
        let linked = linked && self.slot.promote();
        if !linked {
            tracing::warn!(remote = %self.remote, "instance link refused: not proven with the directory's key");
            return Step::fatal(
                ErrorCode::NotPermitted,
                "not an instance of this directory".into(),
                close::PROTOCOL,
                "not an instance",
            );
        }
        let instance: String = instance.chars().take(32).collect();
        tracing::info!(%instance, remote = %self.remote, "relay link from another instance");
        let streams = self
            .shared
            .relay
            .policy()
            .max_sessions
            .min(u32::MAX as usize) as u32;
        self.quic
            .set_max_concurrent_bi_streams(VarInt::from_u32(streams));
        self.instance = Some(instance);
        self.login_deadline = None;
        Step::reply(Reply::Done {
            message: "linked".into(),
        })
    }

    /// The first request: it must be `Hello` with our protocol version.
    fn hello(&mut self, request: Request) -> Step {
        match request {
            Request::Hello { version, software } if version == proto::PROTOCOL_VERSION => {
                let software: String = software
                    .chars()
                    .take(64)
                    .filter(|c| !c.is_control())
                    .collect();
                tracing::debug!(software, "hello");
                let nonce: [u8; 32] = rand::random();
                self.nonce = Some(nonce);
                self.login_deadline = Some(Instant::now() + self.shared.config.login_timeout);
                Step::reply(Reply::Welcome {
                    version: proto::PROTOCOL_VERSION,
                    nonce,
                    open_registration: self.shared.config.open_registration,
                })
            }
            Request::Hello { version, .. } => {
                tracing::info!(version, "client speaks another protocol version");
                Step::fatal(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "this directory speaks protocol version {}, the client sent version {version}",
                        proto::PROTOCOL_VERSION
                    ),
                    close::PROTOCOL,
                    "unsupported protocol version",
                )
            }
            other => {
                let kind = request_kind(&other);
                tracing::info!(kind, "request before Hello");
                Step::fatal(
                    ErrorCode::ProtocolViolation,
                    format!("the first request must be Hello, not {kind}"),
                    close::PROTOCOL,
                    "protocol violation",
                )
            }
        }
    }
}

/// The hash of the ticket in a `Granted` reply.
fn granted_ticket(reply: &Reply) -> Option<[u8; 32]> {
    match reply {
        Reply::Granted { ticket, .. } => Some(crate::ticket::hash(ticket)),
        _ => None,
    }
}

fn already_logged_in() -> Reply {
    Reply::Refused {
        reason: Refusal::AlreadyLoggedIn,
        attempts_left: None,
        retry_after_secs: None,
    }
}

/// A request's name for logs (never its contents: a login carries a password).
fn request_kind(request: &Request) -> &'static str {
    match request {
        Request::Hello { .. } => "Hello",
        Request::Register { .. } => "Register",
        Request::Login { .. } => "Login",
        Request::Resume { .. } => "Resume",
        Request::Lookup { .. } => "Lookup",
        Request::Who => "Who",
        Request::Logout => "Logout",
        Request::Admin(_) => "Admin",
        Request::JoinRoom { .. } => "JoinRoom",
        Request::LeaveRoom { .. } => "LeaveRoom",
        Request::ListRooms => "ListRooms",
        Request::Watch { .. } => "Watch",
        Request::PublishPrekey { .. } => "PublishPrekey",
        Request::FetchPrekey { .. } => "FetchPrekey",
        Request::Deposit { .. } => "Deposit",
        Request::FetchMail => "FetchMail",
        Request::AckMail { .. } => "AckMail",
        Request::MailReceipts => "MailReceipts",
        Request::Rendezvous { .. } => "Rendezvous",
        Request::InstanceAuth { .. } => "InstanceAuth",
        Request::ChangePassword { .. } => "ChangePassword",
    }
}

/// Whether `request` is refused (or answered with nothing) without a logged-in user.
fn needs_login(request: &Request) -> bool {
    !matches!(
        request,
        Request::Hello { .. }
            | Request::Register { .. }
            | Request::Login { .. }
            | Request::Resume { .. }
            | Request::InstanceAuth { .. }
            | Request::Logout
    )
}
