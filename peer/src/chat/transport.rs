//! What carries a chat: two byte streams, and what they travel over.
//!
//! The chat layer (connect request, end-to-end key exchange, sealed frames) only needs a
//! pair of ordered byte streams and a way to end them. A [`Transport`] is that pair plus
//! a description of the [`Path`]:
//!
//! - **Direct**: a bidirectional stream on a QUIC connection between the two peers,
//!   whose mutual TLS handshake proved both identity keys. Ending the chat closes that
//!   connection with a code and a reason.
//! - **Relayed**: a relay stream on our own connection to the directory, which the
//!   directory splices to the other peer's relay stream (see `directory::relay`). There is
//!   no TLS between the peers and the directory connection must stay open, so ending the
//!   chat ends only the stream: finished when the end is graceful (goodbye, refusal),
//!   reset with the chat's close code otherwise; the directory passes both on.
//!
//! [`Carrier`] hides that difference from the chat code: it closes, waits for the end,
//! and says how the chat ended ([`CloseInfo`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use proto::PublicKey;
use proto::message::RELAY_PEER_LOST;
use proto::names::UserName;
use quinn::VarInt;
use tokio::sync::watch;

use super::{CODE_ABORT, CODE_BYE, CODE_DUPLICATE, CODE_REFUSED, CODE_TIMEOUT, CODE_VIOLATION};

/// How a chat's bytes travel between the two peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// A QUIC connection straight to the other peer at `remote`, whose TLS handshake
    /// proved `tls_key`.
    Direct {
        remote: SocketAddr,
        tls_key: PublicKey,
    },
    /// Relay streams through the directory at `via`, which sees only sealed frames.
    Relayed { via: SocketAddr },
}

impl Path {
    /// `"direct"` or `"relayed"`, as the user sees it.
    pub fn name(&self) -> &'static str {
        match self {
            Path::Direct { .. } => "direct",
            Path::Relayed { .. } => "relayed",
        }
    }

    /// Whether the chat goes through the directory's relay.
    pub fn is_relayed(&self) -> bool {
        matches!(self, Path::Relayed { .. })
    }
}

/// A relay stream the directory has paired with the other peer's (it answered
/// `RelayMsg::Ready`): from here on, what we write reaches them and what they write
/// reaches us.
pub struct RelayStream {
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
    directory: quinn::Connection,
    partner: UserName,
}

impl std::fmt::Debug for RelayStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayStream")
            .field("via", &self.directory.remote_address())
            .field("partner", &self.partner)
            .finish_non_exhaustive()
    }
}

impl RelayStream {
    /// Streams on `directory` (our directory connection) that the directory paired with
    /// the relay stream of the user it calls `partner`.
    pub fn new(
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        directory: quinn::Connection,
        partner: UserName,
    ) -> Self {
        Self {
            send,
            recv,
            directory,
            partner,
        }
    }

    /// Who the directory says is on the other end (a hint only: the chat handshake
    /// checks the other side's identity key itself).
    pub fn partner(&self) -> &UserName {
        &self.partner
    }

    /// The raw streams (tests and tools that speak the chat protocol by hand).
    pub fn into_streams(self) -> (quinn::SendStream, quinn::RecvStream) {
        (self.send, self.recv)
    }
}

/// The streams a chat runs on, and what they travel over.
pub struct Transport {
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
    pub(crate) carrier: Carrier,
    pub(crate) path: Path,
    /// For a relayed path: the user the directory paired us with.
    pub(crate) partner: Option<UserName>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport over a paired relay stream.
    pub fn relayed(stream: RelayStream) -> Self {
        let via = stream.directory.remote_address();
        let (state, _) = watch::channel(None);
        Self {
            send: stream.send,
            recv: stream.recv,
            carrier: Carrier::Relayed(Arc::new(RelayEnd {
                directory: stream.directory,
                state,
            })),
            path: Path::Relayed { via },
            partner: Some(stream.partner),
        }
    }

    /// The path this transport takes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ends the streams after `carrier.close(..)`: a relayed transport finishes its send
    /// stream when the end is graceful and resets it with the close code otherwise (a
    /// direct one was ended by closing its connection).
    pub(crate) fn end_streams(&mut self) {
        end_relay_send(&self.carrier, &mut self.send);
        if let Carrier::Relayed(_) = self.carrier {
            let _ = self.recv.stop(VarInt::from_u32(0));
        }
    }
}

/// For a relayed carrier: finish or reset `send` as the local close says.
pub(crate) fn end_relay_send(carrier: &Carrier, send: &mut quinn::SendStream) {
    let Carrier::Relayed(end) = carrier else {
        return;
    };
    match *end.state.borrow() {
        Some(Ended::Local { code }) if code != CODE_BYE && code != CODE_REFUSED => {
            let _ = send.reset(code);
        }
        _ => {
            let _ = send.finish();
        }
    }
}

/// How a relayed chat ended, as far as this side knows (the first one recorded wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// We closed it with this code.
    Local { code: VarInt },
    /// The other side reset its stream (or stopped reading ours) with this code.
    Remote { code: VarInt },
    /// The other side finished its stream.
    Finished,
}

/// A relayed chat's shared end state.
pub(crate) struct RelayEnd {
    directory: quinn::Connection,
    state: watch::Sender<Option<Ended>>,
}

impl RelayEnd {
    fn record(&self, ended: Ended) {
        self.state.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(ended);
                true
            } else {
                false
            }
        });
    }
}

/// How a chat ended, whatever carried it.
#[derive(Debug, Clone)]
pub(crate) enum CloseInfo {
    /// The direct QUIC connection closed.
    Quic(quinn::ConnectionError),
    /// We ended the relayed chat.
    RelayLocal,
    /// The other side finished its relay stream.
    RelayFinished,
    /// The other side reset its relay stream (or stopped reading ours) with this code.
    RelayReset(VarInt),
    /// Our directory connection, which carried the relay stream, broke.
    DirectoryLost(quinn::ConnectionError),
}

/// What a chat closes and asks about its end: the direct connection, or the relay
/// stream's shared end state. Cheap to clone.
#[derive(Clone)]
pub(crate) enum Carrier {
    Direct(quinn::Connection),
    Relayed(Arc<RelayEnd>),
}

impl Carrier {
    /// Ends the chat with `code`: closes a direct connection; for a relayed chat, records
    /// the code (the stream owners finish or reset their streams by it).
    pub(crate) fn close(&self, code: VarInt, reason: &[u8]) {
        match self {
            // Closing a closed connection would replace the other side's reason with
            // "locally closed" (quinn keeps the last one): keep theirs.
            Carrier::Direct(conn) if conn.close_reason().is_some() => {}
            Carrier::Direct(conn) => conn.close(code, reason),
            Carrier::Relayed(end) => end.record(Ended::Local { code }),
        }
    }

    /// How the chat ended, if it has.
    pub(crate) fn close_info(&self) -> Option<CloseInfo> {
        match self {
            Carrier::Direct(conn) => conn.close_reason().map(CloseInfo::Quic),
            Carrier::Relayed(end) => match *end.state.borrow() {
                Some(Ended::Local { .. }) => Some(CloseInfo::RelayLocal),
                Some(Ended::Finished) => Some(CloseInfo::RelayFinished),
                Some(Ended::Remote { code }) => Some(CloseInfo::RelayReset(code)),
                None => end.directory.close_reason().map(CloseInfo::DirectoryLost),
            },
        }
    }

    /// Completes once the chat has ended, whoever ended it.
    pub(crate) async fn closed(&self) {
        match self {
            Carrier::Direct(conn) => {
                conn.closed().await;
            }
            Carrier::Relayed(end) => {
                let mut state = end.state.subscribe();
                tokio::select! {
                    _ = state.wait_for(Option::is_some) => {}
                    _ = end.directory.closed() => {}
                }
            }
        }
    }

    /// Completes once we have ended the chat (or its carrier is gone): a write stuck on
    /// a peer that stopped reading gives up then.
    pub(crate) async fn closed_locally(&self) {
        match self {
            Carrier::Direct(conn) => {
                conn.closed().await;
            }
            Carrier::Relayed(end) => {
                let mut state = end.state.subscribe();
                tokio::select! {
                    _ = state.wait_for(|s| matches!(s, Some(Ended::Local { .. }))) => {}
                    _ = end.directory.closed() => {}
                }
            }
        }
    }

    /// Learns from a failed read or write how the other side ended a relayed chat.
    pub(crate) fn note_io_error(&self, e: &io::Error) {
        let Carrier::Relayed(end) = self else {
            return;
        };
        let inner = e.get_ref();
        let code = match (
            inner.and_then(|i| i.downcast_ref::<quinn::ReadError>()),
            inner.and_then(|i| i.downcast_ref::<quinn::WriteError>()),
        ) {
            (Some(quinn::ReadError::Reset(code)), _) => *code,
            (_, Some(quinn::WriteError::Stopped(code))) => *code,
            _ => return,
        };
        end.record(Ended::Remote { code });
    }

    /// Records that the other side finished its relay stream (no-op when direct).
    pub(crate) fn note_finished(&self) {
        if let Carrier::Relayed(end) = self {
            end.record(Ended::Finished);
        }
    }

    /// Whether closing should wait for the other side to read our last frame: closing a
    /// QUIC connection may discard what it has not read, finishing a stream does not.
    pub(crate) fn close_discards(&self) -> bool {
        matches!(self, Carrier::Direct(_))
    }
}

/// The other side's code on a relay stream, in words.
pub(crate) fn relay_code_text(code: VarInt) -> String {
    let c = u64::from(code);
    let known = [
        (CODE_BYE, "it left"),
        (CODE_REFUSED, "it refused the chat"),
        (CODE_VIOLATION, "it saw a protocol violation"),
        (CODE_TIMEOUT, "it timed out"),
        (CODE_ABORT, "it abandoned the chat"),
        (CODE_DUPLICATE, "another path won"),
    ];
    if c == u64::from(RELAY_PEER_LOST) {
        return "its connection to the directory broke".into();
    }
    known
        .iter()
        .find(|(k, _)| u64::from(*k) == c)
        .map(|(_, text)| (*text).to_string())
        .unwrap_or_else(|| format!("relay stream reset with code {c}"))
}
