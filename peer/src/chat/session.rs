//! A running chat: sealed messages, ids and acknowledgements, and the end of the chat.
//!
//! Two tasks per chat. The *reader* only reads frames off the stream (reading a frame is
//! not cancel-safe, so it gets a task of its own) and hands them over through a small
//! bounded queue. The *driver* owns everything else: the sealing and opening halves of
//! the session, the send stream, the ids, the set of unacknowledged messages and the
//! event queue. It waits on three things at once: frames, commands from handles, and a
//! request to close.
//!
//! Back-pressure: when the app does not read events, the driver waits, the frame queue
//! fills, the reader stops reading, and QUIC flow control stops the other side (through
//! the relay too: it copies only what the other side takes). A write that cannot
//! progress for [`STALL_TIMEOUT`] ends the chat.
//!
//! The chat ends through its [`Carrier`]: a direct connection is closed, a relay stream
//! finished or reset (see [`super::transport`]).

use std::collections::BTreeSet;

use proto::frame::{self, FrameError};
use proto::message::{ChatPayload, PeerMsg, RELAY_PEER_LOST};
use proto::session::{Opener, Sealer, SessionError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

use super::handshake::Established;
use super::transport::{Carrier, CloseInfo, Transport, end_relay_send, relay_code_text};
use super::{
    CLOSE_TIMEOUT, CODE_ABORT, CODE_BYE, CODE_TIMEOUT, CODE_VIOLATION, COMMAND_QUEUE, ChatEvent,
    ChatEvents, ChatHandle, Command, EVENT_QUEUE, EndReason, MAX_UNACKED, STALL_TIMEOUT, Shared,
    application_close_text, close_reason_bytes,
};
use crate::endpoint::IDLE_TIMEOUT;

/// Frames read ahead of the driver (each at most 64 KiB).
const FRAME_QUEUE: usize = 8;
/// One item from the reader: a frame, the clean end of the stream, or why reading failed.
type Incoming = Result<Option<PeerMsg>, FrameError>;

/// Starts the tasks of a chat that passed its handshake.
pub(super) fn start(transport: Transport, est: Established) -> (ChatHandle, ChatEvents) {
    let Transport {
        send,
        recv,
        carrier,
        path,
        ..
    } = transport;
    let session_id = est.session.id();
    let (sealer, opener) = est.session.split();
    let (frames_tx, frames) = mpsc::channel(FRAME_QUEUE);
    let reader = tokio::spawn(read_frames(recv, frames_tx, carrier.clone()));
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (close_tx, close_rx) = watch::channel(false);
    let (ended_tx, ended_rx) = watch::channel(None);

    let driver = Driver {
        carrier: carrier.clone(),
        send,
        sealer,
        opener,
        frames,
        reader,
        commands,
        close: close_rx,
        events,
        ended: ended_tx,
        last_sent: 0,
        last_received: 0,
        unacked: BTreeSet::new(),
    };
    tokio::spawn(driver.run());

    let shared = Shared {
        peer: est.peer,
        peer_key: est.peer_key,
        role: est.role,
        background: est.background,
        session_id,
        path,
        carrier,
        commands: commands_tx,
        last_queued: std::sync::Mutex::new(0),
        close: close_tx,
        ended: ended_rx,
    };
    let handle = ChatHandle {
        shared: std::sync::Arc::new(shared),
    };
    (handle, ChatEvents { events: events_rx })
}

/// The reader task: frames off the stream until it ends, fails, or the driver is gone.
/// How the stream ended is recorded in the carrier before the driver hears of it.
async fn read_frames(mut recv: quinn::RecvStream, out: mpsc::Sender<Incoming>, carrier: Carrier) {
    loop {
        let item = frame::read_frame::<_, PeerMsg>(&mut recv).await;
        match &item {
            Ok(None) => carrier.note_finished(),
            Err(FrameError::Io(e)) => carrier.note_io_error(e),
            _ => {}
        }
        let last = !matches!(item, Ok(Some(_)));
        if out.send(item).await.is_err() || last {
            break;
        }
    }
}

/// Why the driver's open phase stops.
enum Stop {
    /// We end the chat: say goodbye and wait for the answer.
    CloseByUs,
    /// The other side said goodbye: answer it.
    PeerBye,
    /// The chat is over already (the connection is closed or being closed).
    End(EndReason),
}

struct Driver {
    carrier: Carrier,
    send: quinn::SendStream,
    sealer: Sealer,
    opener: Opener,
    frames: mpsc::Receiver<Incoming>,
    reader: JoinHandle<()>,
    commands: mpsc::Receiver<Command>,
    close: watch::Receiver<bool>,
    events: mpsc::Sender<ChatEvent>,
    ended: watch::Sender<Option<EndReason>>,
    /// Id of our last message (0: none yet).
    last_sent: u64,
    /// Id of the other side's last message (0: none yet).
    last_received: u64,
    /// Our messages not yet acknowledged (at most [`MAX_UNACKED`]).
    unacked: BTreeSet<u64>,
}

impl Driver {
    async fn run(mut self) {
        let reason = match self.serve().await {
            Stop::CloseByUs => self.close_by_us().await,
            Stop::PeerBye => self.answer_bye().await,
            Stop::End(reason) => reason,
        };
        self.reader.abort();
        // A no-op when the chat is already closed (every path above that has a more
        // precise code used it).
        self.carrier
            .close(CODE_ABORT, close_reason_bytes(&reason.to_string()));
        end_relay_send(&self.carrier, &mut self.send);
        tracing::debug!(%reason, "chat ended");
        let mut undelivered: Vec<u64> = self.unacked.iter().copied().collect();
        // Messages still queued were never sent.
        while let Ok(Command::Send { id, .. }) = self.commands.try_recv() {
            undelivered.push(id);
        }
        // Tell the handles first, and drop the command queue, so no `send` waits on a
        // driver that is gone; then the last event, which may wait for the app.
        self.ended.send_replace(Some(reason.clone()));
        let events = self.events.clone();
        drop(self);
        let _ = events
            .send(ChatEvent::Ended {
                reason,
                undelivered,
            })
            .await;
    }

    /// The open phase: messages and acks both ways until someone ends the chat.
    async fn serve(&mut self) -> Stop {
        loop {
            let step = tokio::select! {
                // `Err` means every handle is gone: also a request to close.
                _ = self.close.changed() => Err(Stop::CloseByUs),
                // Nobody would see what we acknowledge.
                () = self.events.closed() => Err(Stop::CloseByUs),
                item = self.frames.recv() => self.on_frame(item).await,
                // At most MAX_UNACKED in flight: further messages wait in the queue.
                Some(command) = self.commands.recv(), if self.unacked.len() < MAX_UNACKED => {
                    self.on_command(command).await
                }
            };
            if let Err(stop) = step {
                return stop;
            }
        }
    }

    async fn on_command(&mut self, command: Command) -> Result<(), Stop> {
        let Command::Send { id, text, room } = command;
        debug_assert_eq!(id, self.last_sent + 1, "the handle gives out ids in order");
        // Counted as unacknowledged before the write: if the write fails, the message is
        // reported undelivered rather than forgotten.
        self.last_sent = id;
        self.unacked.insert(id);
        let payload = ChatPayload::Text {
            id,
            text,
            sent_at_ms: crate::clock::now_ms(),
            room,
        };
        self.send_payload(&payload).await.map_err(Stop::End)
    }

    async fn on_frame(&mut self, item: Option<Incoming>) -> Result<(), Stop> {
        let payload = match item {
            Some(Ok(Some(PeerMsg::Sealed(sealed)))) => match self.opener.open(&sealed) {
                Ok(plain) => match decode_payload(&plain) {
                    Ok(payload) => payload,
                    Err(e) => return Err(self.violation(format!("undecodable message: {e}"))),
                },
                Err(e) => return Err(self.violation(describe(&e))),
            },
            Some(Ok(Some(other))) => {
                return Err(
                    self.violation(format!("unexpected {} during the chat", frame_kind(&other)))
                );
            }
            Some(Ok(None)) => {
                return Err(Stop::End(self.lost(
                    "the other side ended the chat stream without saying goodbye",
                )));
            }
            Some(Err(FrameError::Io(e))) => return Err(Stop::End(self.lost(&e.to_string()))),
            Some(Err(e)) => return Err(self.violation(format!("bad frame: {e}"))),
            None => return Err(Stop::End(self.lost("the chat's reader stopped"))),
        };
        match payload {
            ChatPayload::Text {
                id,
                text,
                sent_at_ms,
                room,
            } => {
                let expected = self.last_received + 1;
                if id != expected {
                    return Err(self.violation(format!(
                        "message id {id} out of sequence (expected {expected})"
                    )));
                }
                if proto::names::check_message(&text).is_err() {
                    return Err(self.violation(format!("message {id} is too long")));
                }
                if let Some(tag) = &room
                    && proto::names::check_room(&tag.room).is_err()
                {
                    return Err(self.violation(format!("message {id} names an invalid room")));
                }
                self.last_received = id;
                self.emit(ChatEvent::Message {
                    id,
                    text,
                    sent_at_ms,
                    room,
                })
                .await?;
                self.send_payload(&ChatPayload::Ack { id })
                    .await
                    .map_err(Stop::End)
            }
            ChatPayload::Ack { id } => {
                if !self.unacked.remove(&id) {
                    let what = if id > self.last_sent {
                        "that was never sent"
                    } else {
                        "twice"
                    };
                    return Err(self.violation(format!("acknowledged message {id} {what}")));
                }
                self.emit(ChatEvent::Delivered { id }).await
            }
            ChatPayload::Bye => Err(Stop::PeerBye),
        }
    }

    /// Hands an event to the app, waiting while its queue is full, unless a close is
    /// requested meanwhile (then the message is not acknowledged: it was not delivered).
    async fn emit(&mut self, event: ChatEvent) -> Result<(), Stop> {
        tokio::select! {
            sent = self.events.send(event) => sent.map_err(|_| Stop::CloseByUs),
            _ = self.close.changed() => Err(Stop::CloseByUs),
        }
    }

    /// Seals and writes one payload. A write stuck for [`STALL_TIMEOUT`] ends the chat.
    async fn send_payload(&mut self, payload: &ChatPayload) -> Result<(), EndReason> {
        let plain = encode_payload(payload).map_err(|e| self.abort(&e.to_string()))?;
        let sealed = self
            .sealer
            .seal(&plain)
            .map_err(|e| self.abort(&e.to_string()))?;
        let bytes =
            frame::encode(&PeerMsg::Sealed(sealed)).map_err(|e| self.abort(&e.to_string()))?;
        // A close while the write is stuck (the other side stopped reading) ends it.
        let written = tokio::select! {
            written = timeout(STALL_TIMEOUT, self.send.write_all(&bytes)) => written,
            () = self.carrier.closed_locally() => return Err(self.lost("the chat was closed")),
        };
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.carrier.note_io_error(&e.clone().into());
                Err(self.lost(&e.to_string()))
            }
            Err(_) => {
                let why = format!(
                    "the other side stopped reading (nothing sent for {} s)",
                    STALL_TIMEOUT.as_secs()
                );
                self.carrier.close(CODE_TIMEOUT, close_reason_bytes(&why));
                Err(EndReason::ConnectionLost(why))
            }
        }
    }

    /// We end the chat: goodbye, then the other side's last acks and its goodbye (bounded
    /// by [`CLOSE_TIMEOUT`]), then we close the connection: we read the last byte.
    async fn close_by_us(&mut self) -> EndReason {
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        // Messages queued before the close go out first (they were given ids already).
        while let Ok(command) = self.commands.try_recv() {
            if !matches!(
                timeout_at(deadline, self.on_command(command)).await,
                Ok(Ok(()))
            ) {
                break;
            }
        }
        let said_bye = timeout_at(deadline, self.send_payload(&ChatPayload::Bye)).await;
        let _ = self.send.finish();
        if let Ok(Ok(())) = said_bye {
            let _ = timeout_at(deadline, self.drain_until_bye(deadline)).await;
        }
        self.carrier.close(CODE_BYE, b"bye");
        EndReason::ClosedByUs
    }

    /// After our goodbye: takes the other side's remaining acks until its goodbye (or
    /// anything else: the end is near either way). Messages arriving meanwhile are
    /// dropped unacknowledged, so their sender lists them as undelivered: the truth.
    async fn drain_until_bye(&mut self, deadline: Instant) {
        while let Some(Ok(Some(PeerMsg::Sealed(sealed)))) = self.frames.recv().await {
            match self
                .opener
                .open(&sealed)
                .map(|plain| decode_payload(&plain))
            {
                Ok(Ok(ChatPayload::Ack { id })) => {
                    if self.unacked.remove(&id) {
                        let delivered = ChatEvent::Delivered { id };
                        let _ = timeout_at(deadline, self.events.send(delivered)).await;
                    }
                }
                Ok(Ok(ChatPayload::Text { .. })) => {}
                _ => return,
            }
        }
    }

    /// The other side said goodbye: everything it sent has arrived and been acked. We
    /// answer with our goodbye and let it close the connection (it reads our last byte).
    async fn answer_bye(&mut self) -> EndReason {
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        if let Ok(Ok(())) = timeout_at(deadline, self.send_payload(&ChatPayload::Bye)).await {
            let _ = self.send.finish();
            let _ = timeout_at(deadline, self.carrier.closed()).await;
        }
        self.carrier.close(CODE_BYE, b"bye");
        EndReason::ClosedByPeer
    }

    /// The other side broke the protocol: close the connection saying why.
    fn violation(&self, why: String) -> Stop {
        tracing::warn!(%why, "chat protocol violation");
        self.carrier.close(CODE_VIOLATION, close_reason_bytes(&why));
        Stop::End(EndReason::Violation(why))
    }

    /// We cannot go on for a local reason (should not happen: message sizes are checked).
    fn abort(&self, why: &str) -> EndReason {
        self.carrier.close(CODE_ABORT, close_reason_bytes(why));
        EndReason::ConnectionLost(format!("cannot send: {why}"))
    }

    /// Reading or writing failed: how the transport ended says more than the I/O error.
    fn lost(&self, fallback: &str) -> EndReason {
        use quinn::ConnectionError as E;
        let Some(info) = self.carrier.close_info() else {
            return EndReason::ConnectionLost(fallback.to_owned());
        };
        match info {
            CloseInfo::Quic(E::LocallyClosed) | CloseInfo::RelayLocal => EndReason::ClosedByUs,
            CloseInfo::Quic(E::TimedOut) => EndReason::ConnectionLost(format!(
                "no answer from the other side for {} s",
                IDLE_TIMEOUT.as_secs()
            )),
            CloseInfo::Quic(E::Reset) => {
                EndReason::ConnectionLost("the other side restarted (connection reset)".into())
            }
            CloseInfo::Quic(E::ApplicationClosed(close)) if close.error_code == CODE_BYE => {
                EndReason::ConnectionLost("the other side left without saying goodbye".into())
            }
            CloseInfo::RelayFinished => {
                EndReason::ConnectionLost("the other side left without saying goodbye".into())
            }
            CloseInfo::RelayReset(code) if code == CODE_BYE => {
                EndReason::ConnectionLost("the other side left without saying goodbye".into())
            }
            CloseInfo::Quic(E::ApplicationClosed(close)) => {
                EndReason::AbortedByPeer(application_close_text(&close))
            }
            CloseInfo::RelayReset(code) if u64::from(code) == u64::from(RELAY_PEER_LOST) => {
                EndReason::ConnectionLost(format!("the other side: {}", relay_code_text(code)))
            }
            CloseInfo::RelayReset(code) => EndReason::AbortedByPeer(relay_code_text(code)),
            CloseInfo::DirectoryLost(e) => EndReason::ConnectionLost(format!(
                "lost the directory connection that carried this relayed chat: {e}"
            )),
            CloseInfo::Quic(other) => EndReason::ConnectionLost(other.to_string()),
        }
    }
}

/// The reason shown for an end-to-end failure: names what happened (tampering, replay,
/// reordering) in words a user can search for.
fn describe(e: &SessionError) -> String {
    match e {
        SessionError::Tampered => format!("tampered frame: {e}"),
        SessionError::Replayed { .. } => format!("replay: {e}"),
        SessionError::OutOfOrder { .. } => format!("reordered frame: {e}"),
        other => other.to_string(),
    }
}

fn frame_kind(msg: &PeerMsg) -> &'static str {
    match msg {
        PeerMsg::Connect { .. } => "connect request",
        PeerMsg::Accepted { .. } => "acceptance",
        PeerMsg::Refused { .. } => "refusal",
        PeerMsg::KeyShare(_) => "key share",
        PeerMsg::Sealed(_) => "sealed message",
    }
}

/// The plaintext of a sealed frame: a [`ChatPayload`] encoded like a frame's payload
/// (bincode, same size limit), without the length prefix.
fn encode_payload(payload: &ChatPayload) -> Result<Vec<u8>, FrameError> {
    let mut bytes = frame::encode(payload)?;
    bytes.drain(..frame::HEADER_LEN);
    Ok(bytes)
}

fn decode_payload(plain: &[u8]) -> Result<ChatPayload, FrameError> {
    frame::decode(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let p = ChatPayload::Text {
            id: 7,
            text: "héllo".into(),
            sent_at_ms: 1,
            room: Some(proto::message::RoomTag {
                room: "general".parse().unwrap(),
                seq: 3,
            }),
        };
        assert_eq!(decode_payload(&encode_payload(&p).unwrap()).unwrap(), p);
        assert!(decode_payload(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn session_errors_are_named() {
        assert!(describe(&SessionError::Tampered).contains("tamper"));
        assert!(
            describe(&SessionError::Replayed {
                got: 0,
                expected: 1
            })
            .contains("replay")
        );
        assert!(
            describe(&SessionError::OutOfOrder {
                got: 2,
                expected: 1
            })
            .contains("reordered")
        );
    }
}
