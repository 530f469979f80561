//! The app's peer sessions: opening them (calls we make, calls we take), choosing which
//! one carries what we send to a peer, and what their events mean for the user.
//!
//! A session is either a chat the user is having, or a background session opened to
//! carry room messages and quick messages (`/msg`). Both kinds carry both. Messages to a
//! peer always go on the session first used for that peer (its *route*) until that
//! session ends: two peers who dial each other at once end up with two sessions, and
//! sticking to one keeps each sender's messages in order without closing anything that
//! may hold messages in flight.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::Ordering;

use proto::message::{ConnectRefusal, PeerInfo, RelayToken, RoomTag};
use proto::names::UserName;
use proto::{Identity, PublicKey};
use tokio::sync::mpsc;

use super::gate::{self, Gate, Shown};
use super::{App, ChangedKeys, MAX_QUEUED_LINES, OpenChat, Outgoing, Report};
use crate::alerts::Alert;
use crate::chat::{self, ChatEvent, ChatEvents, ChatHandle, EndReason, Transport};
use crate::endpoint;
use crate::link::Link;
use crate::pins::{PinCheck, Pins};
use crate::reach::{self, Punches, ReachOptions};
use crate::ui::{Direction, Note};

/// How long one send may wait for a peer's session to take the message.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// What a task that opens sessions (dialing, or taking a call) needs from the app.
#[derive(Clone)]
struct Opener {
    link: Arc<Link>,
    endpoint: quinn::Endpoint,
    identity: Arc<Identity>,
    pins: Arc<Mutex<Pins>>,
    me: UserName,
    tx: mpsc::Sender<Report>,
    punches: Punches,
    reach: ReachOptions,
    gate: Gate,
    changed_keys: ChangedKeys,
}

/// A call to answer: a connection (one that called us, or one we made while punching
/// towards a dialer), or a paired relay stream.
enum Call {
    Direct(quinn::Connection),
    Relayed(Transport),
}

impl Opener {
    /// Answers a call: checks the caller (directory, pins, key), and reports the session
    /// or the refusal. A connection the dialer dropped because another path won is
    /// nothing to report.
    ///
    /// Before the directory is asked about the caller, the [`Gate`] holds the caller's
    /// source and all lookups to their bounds, and a recent answer that accepts this
    /// very connection is used instead of a new lookup.
    async fn take_call(&self, call: Call) {
        let (source, proven) = match &call {
            Call::Direct(conn) => (
                Some(gate::source_of(conn.remote_address())),
                endpoint::remote_key(conn).map(|key| (key, conn.remote_address())),
            ),
            Call::Relayed(_) => (None, None),
        };
        let lookup = async |claimed: &str| {
            self.gate.admit_source(source)?;
            if let (Some((key, remote)), Some(info)) = (proven, self.gate.cached(claimed))
                && chat::verify_initiator(claimed, &key, remote, Some(&info)).is_ok()
            {
                return Ok(Some(info));
            }
            self.gate.admit_lookup()?;
            match self.link.lookup(claimed).await {
                Ok(info) => {
                    self.gate.remember(claimed, info.as_ref());
                    Ok(info)
                }
                Err(e) => {
                    tracing::debug!(%e, "directory lookup for an incoming call failed");
                    Err(ConnectRefusal::DirectoryUnavailable)
                }
            }
        };
        let pin_check = |claimed: &str, key: &PublicKey| match self
            .pins
            .lock()
            .map(|p| p.check(claimed, key))
        {
            Ok(PinCheck::Changed { .. }) => {
                self.changed_keys.note(claimed, *key);
                Err(ConnectRefusal::PinnedKeyChanged)
            }
            _ => Ok(()),
        };
        let (result, duplicate) = match call {
            Call::Direct(conn) => {
                let watch = conn.clone();
                let result = chat::accept(conn, &self.identity, &self.me, lookup, pin_check).await;
                (result, reach::is_duplicate(&watch))
            }
            Call::Relayed(transport) => (
                chat::accept_over(transport, &self.identity, &self.me, lookup, pin_check).await,
                false,
            ),
        };
        let report = match result {
            Ok((handle, events)) => Report::Opened {
                handle,
                events,
                direction: Direction::Incoming,
            },
            Err(e) if duplicate && e.claimed().is_none() => {
                tracing::debug!(error = %e, "unused path closed by the dialer");
                return;
            }
            Err(e) => {
                let reason = match &e {
                    chat::ChatError::RefusedIncoming { reason, .. } => Some(reason),
                    _ => None,
                };
                // Only direct calls, which anyone can make, are summarised. A relayed
                // call comes from a logged-in user the directory paired us with (and
                // bounds), and a contact whose key changed got past the directory's
                // check: those are always named, never flood noise.
                let shown = match reason {
                    Some(ConnectRefusal::PinnedKeyChanged) => Shown::Now,
                    _ if source.is_none() => Shown::Now,
                    _ => self.gate.refused(gate::refusal_kind(reason)),
                };
                match shown {
                    Shown::Now => Report::IncomingRefused {
                        peer: e.claimed().map(str::to_string),
                        reason: e.to_string(),
                    },
                    Shown::SummaryDue(at) => {
                        self.summary_at(at);
                        return;
                    }
                    Shown::Counted => return,
                }
            }
        };
        let _ = self.tx.send(report).await;
    }

    /// A connection refused before it was even answered (too many at once): counted.
    fn refused_at_the_door(&self) {
        if let Shown::SummaryDue(at) = self
            .gate
            .refused(gate::refusal_kind(Some(&ConnectRefusal::Busy)))
        {
            self.summary_at(at);
        }
    }

    /// Asks the app to show the refusal summary at `at`.
    fn summary_at(&self, at: tokio::time::Instant) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let _ = tx.send(Report::RefusalSummary).await;
        });
    }
}

impl App {
    /// Opens a chat with `peer` at the user's request (it becomes the current chat).
    pub(super) fn connect(&mut self, peer: String) {
        if let Err(e) = proto::names::check_username(&peer) {
            self.show(Note::Error(format!("{peer:?}: {e}")));
            self.ready();
            return;
        }
        if peer == self.me {
            self.show(Note::Error("that is you".into()));
            self.ready();
            return;
        }
        if let Some(id) = self.find(&peer) {
            self.make_current(id);
            self.show(Note::Switched { peer });
            self.ready();
            return;
        }
        self.show(Note::Connecting { peer: peer.clone() });
        self.prompt_owed = true;
        self.dial(peer, true);
    }

    /// Starts dialing `peer` in a task of its own; the outcome comes back as a report.
    fn dial(&mut self, peer: String, foreground: bool) {
        if let Some(fg) = self.dialing.get_mut(&peer) {
            *fg |= foreground;
            return;
        }
        self.dialing.insert(peer.clone(), foreground);
        let o = self.opener();
        self.tasks.spawn(async move {
            let report = match dial(&o, &peer, !foreground).await {
                Ok((handle, events)) => Report::Opened {
                    handle,
                    events,
                    direction: Direction::Outgoing,
                },
                Err(reason) => Report::ConnectFailed { peer, reason },
            };
            let _ = o.tx.send(report).await;
        });
    }

    /// What a task that opens sessions needs from the app.
    fn opener(&self) -> Opener {
        Opener {
            link: self.link.clone(),
            endpoint: self.endpoint.clone(),
            identity: self.identity.clone(),
            pins: self.pins.clone(),
            me: self.me.clone(),
            tx: self.tx.clone(),
            punches: self.punches.clone(),
            reach: self.reach.clone(),
            gate: self.gate.clone(),
            changed_keys: self.changed_keys.clone(),
        }
    }

    /// Sets how long dials try direct paths before the relay (instead of the default or
    /// `PEER_DIRECT_TIMEOUT_MS`).
    pub fn with_reach(mut self, reach: ReachOptions) -> Self {
        self.reach = reach;
        self
    }

    /// The directory says `from` is about to connect to us: dial their addresses now
    /// (hole punching), and answer on whichever connection completes.
    pub(super) fn incoming(&mut self, from: PeerInfo, direct: bool) {
        if !direct || from.user == self.me {
            return;
        }
        let running = self.punching.fetch_add(1, Ordering::Relaxed);
        if running >= reach::MAX_PUNCHES {
            self.punching.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(from = %from.user, "too many punching attempts running; not punching");
            return;
        }
        let (o, punching) = (self.opener(), self.punching.clone());
        let near = self.link.client().addr().ip();
        self.tasks.spawn(async move {
            let conn = reach::punch(&o.endpoint, near, &o.identity, &from).await;
            punching.fetch_sub(1, Ordering::Relaxed);
            if let Some(conn) = conn {
                o.take_call(Call::Direct(conn)).await;
            }
        });
    }

    /// `from` found no direct path and waits on the relay: open our relay stream and
    /// answer the call on it.
    pub(super) fn relay_call(&mut self, from: UserName, token: RelayToken) {
        let o = self.opener();
        self.tasks.spawn(async move {
            match o.link.open_relay(token).await {
                Ok(stream) => o.take_call(Call::Relayed(Transport::relayed(stream))).await,
                Err(e) => {
                    let report = Report::IncomingRefused {
                        peer: Some(from.into_string()),
                        reason: format!("could not take the relayed call: {e}"),
                    };
                    let _ = o.tx.send(report).await;
                }
            }
        });
    }

    /// Takes every call that arrives on the endpoint, each in a task of its own. Beyond
    /// the [`Gate`]'s bounds on connections being answered, a connection is refused
    /// before any TLS work.
    pub(super) fn spawn_accept_loop(&mut self) {
        let opener = self.opener();
        self.tasks.spawn(async move {
            while let Some(incoming) = opener.endpoint.accept().await {
                let Some(entered) = opener
                    .gate
                    .enter(gate::source_of(incoming.remote_address()))
                else {
                    incoming.refuse();
                    opener.refused_at_the_door();
                    continue;
                };
                let o = opener.clone();
                tokio::spawn(async move {
                    let _entered = entered;
                    let conn = match incoming.await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(error = %e, "incoming handshake failed");
                            return;
                        }
                    };
                    if reach::is_punch(&conn) {
                        // Made by a peer we are dialing: it belongs to that dial.
                        o.punches.deliver(conn);
                        return;
                    }
                    o.take_call(Call::Direct(conn)).await;
                });
            }
        });
    }

    /// A dial failed: the user hears why, and what waited for that peer is undelivered.
    pub(super) fn connect_failed(&mut self, peer: String, reason: String) {
        let foreground = self.dialing.remove(&peer).unwrap_or(false);
        let waiting = self.outbox.remove(&peer).unwrap_or_default();
        if foreground {
            self.show(Note::ConnectFailed {
                peer: peer.clone(),
                reason: reason.clone(),
            });
        }
        // Private messages go to the peer's sealed mailbox at the directory instead (the
        // outbox reports each one queued or not sent); room messages are undelivered.
        for out in waiting {
            if out.room.is_none() {
                self.mail(&peer, out.text);
                continue;
            }
            self.show(Note::Undelivered {
                peer: peer.clone(),
                text: out.display(),
                reason: reason.clone(),
            });
        }
        if self.prompt_owed && !self.dialing.values().any(|fg| *fg) {
            self.ready();
        }
    }

    /// A session is open: record it, pin the key on first contact, maybe make it the
    /// current chat, and send what waited for it.
    pub(super) async fn opened(
        &mut self,
        handle: ChatHandle,
        mut events: ChatEvents,
        direction: Direction,
    ) {
        let peer = handle.peer().to_string();
        let key = handle.peer_key();
        let path = handle.path().clone();
        let foreground = match direction {
            Direction::Outgoing => self.dialing.remove(&peer).unwrap_or(false),
            Direction::Incoming => false,
        };
        let background = match direction {
            Direction::Outgoing => !foreground,
            Direction::Incoming => handle.background(),
        };
        self.pin_first_contact(handle.peer(), key).await;
        let id = self.next_id;
        self.next_id += 1;
        self.chats.insert(
            id,
            OpenChat {
                handle,
                unacked: BTreeMap::new(),
                closing: false,
            },
        );
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            while let Some(event) = events.next().await {
                if tx.send(Report::Chat { id, event }).await.is_err() {
                    return;
                }
            }
        });
        let current = foreground || (!background && self.idle());
        if current {
            self.make_current(id);
        }
        if direction == Direction::Incoming && !background {
            self.alert(Alert::Connect, &peer);
        }
        self.show(Note::Connected {
            peer: peer.clone(),
            key,
            direction,
            current,
            background,
            path,
        });
        for out in self.outbox.remove(&peer).unwrap_or_default() {
            self.deliver(&peer, out.text, out.room).await;
        }
        if self.prompt_owed && !self.dialing.values().any(|fg| *fg) {
            self.ready();
        }
    }

    /// Pins `peer`'s key if we had none (trust on first use); a new contact is then also
    /// watched for presence.
    async fn pin_first_contact(&mut self, peer: &UserName, key: PublicKey) {
        let pinned = match self.pins.lock() {
            Ok(mut pins) if pins.check(peer, &key) == PinCheck::New => Some(pins.pin(peer, key)),
            _ => None,
        };
        match pinned {
            Some(Ok(())) => self.watch_contacts().await,
            Some(Err(e)) => self.show(Note::Warning(format!("could not pin {peer}'s key: {e}"))),
            None => {}
        }
    }

    /// Sends `text` to `peer` (a room message with `room`), on the peer's route, or
    /// opens a background session first and sends once it is open.
    pub(super) async fn deliver(&mut self, peer: &str, text: String, room: Option<RoomTag>) {
        if let Some(id) = self.route_to(peer) {
            self.send_on(id, text, room).await;
            return;
        }
        let queue = self.outbox.entry(peer.to_string()).or_default();
        if queue.len() >= MAX_QUEUED_LINES {
            self.show(Note::Undelivered {
                peer: peer.to_string(),
                text: Outgoing { text, room }.display(),
                reason: "too many messages waiting for the session to open".into(),
            });
            return;
        }
        queue.push(Outgoing { text, room });
        self.dial(peer.to_string(), false);
    }

    /// The session that carries what we send to `peer`: the one used so far, else the
    /// oldest open one (which then stays the route).
    fn route_to(&mut self, peer: &str) -> Option<u64> {
        if let Some(id) = self.route.get(peer)
            && self.chats.get(id).is_some_and(|c| !c.closing)
        {
            return Some(*id);
        }
        let id = self.find(peer)?;
        self.route.insert(peer.to_string(), id);
        Some(id)
    }

    async fn send_on(&mut self, id: u64, text: String, room: Option<RoomTag>) {
        let Some(chat) = self.chats.get(&id) else {
            return;
        };
        let handle = chat.handle.clone();
        let peer = handle.peer().to_string();
        let display = Outgoing {
            text: text.clone(),
            room: room.clone(),
        }
        .display();
        let private = room.is_none();
        match tokio::time::timeout(SEND_TIMEOUT, handle.send_tagged(&text, room)).await {
            Ok(Ok(msg_id)) => {
                if private {
                    self.record(
                        &peer,
                        crate::history::Direction::Out,
                        &text,
                        super::now_ms(),
                    );
                }
                if let Some(chat) = self.chats.get_mut(&id) {
                    chat.unacked.insert(msg_id, display);
                }
                self.show(Note::Sent { peer, id: msg_id });
            }
            Ok(Err(e)) => self.show(Note::Undelivered {
                peer,
                text: display,
                reason: e.to_string(),
            }),
            Err(_) => self.show(Note::Undelivered {
                peer,
                text: display,
                reason: "the other side is not reading".into(),
            }),
        }
    }

    /// Ends the current chat (Ctrl-C, `/end`). The goodbye runs in a task of its own
    /// (it may wait for the other side); the chat's `Ended` event follows.
    pub(super) fn end_current(&mut self) {
        if let Some(id) = self.current.take()
            && let Some(chat) = self.chats.get_mut(&id)
        {
            chat.closing = true;
            let handle = chat.handle.clone();
            tokio::spawn(async move { handle.close().await });
        }
    }

    /// What one session's event means to the user.
    pub(super) fn chat_event(&mut self, id: u64, event: ChatEvent) {
        let Some(chat) = self.chats.get_mut(&id) else {
            return;
        };
        let peer = chat.handle.peer().to_string();
        match event {
            ChatEvent::Message {
                text,
                room: Some(tag),
                ..
            } => self.room_message(&peer, tag, text),
            ChatEvent::Message {
                id: msg_id,
                text,
                room: None,
                ..
            } => {
                if self.current != Some(id) {
                    self.alert(Alert::Private, &peer);
                    if self.idle() {
                        self.make_current(id);
                        self.show(Note::Switched { peer: peer.clone() });
                    }
                }
                self.record(&peer, crate::history::Direction::In, &text, super::now_ms());
                self.show(Note::Message {
                    peer,
                    id: msg_id,
                    text,
                });
            }
            ChatEvent::Delivered { id: msg_id } => {
                chat.unacked.remove(&msg_id);
                self.show(Note::Delivered { peer, id: msg_id });
            }
            ChatEvent::Ended {
                reason,
                undelivered,
            } => {
                let chat = self.chats.remove(&id);
                if self.route.get(&peer) == Some(&id) {
                    self.route.remove(&peer);
                }
                let background = chat.as_ref().is_some_and(|c| c.handle.background());
                let mut texts = chat.map(|c| c.unacked).unwrap_or_default();
                let undelivered: Vec<(u64, String)> = undelivered
                    .into_iter()
                    .map(|m| (m, texts.remove(&m).unwrap_or_default()))
                    .collect();
                let clean = matches!(reason, EndReason::ClosedByPeer | EndReason::ClosedByUs);
                let was_current = self.current == Some(id);
                if was_current {
                    self.current = None;
                }
                // A background session ending quietly is nothing to tell a person about.
                if was_current || !background || !clean || !undelivered.is_empty() {
                    self.show(Note::Ended {
                        peer,
                        reason: reason.to_string(),
                        clean,
                        undelivered,
                    });
                }
            }
        }
    }

    /// Whether no chat or room is current.
    pub(super) fn idle(&self) -> bool {
        self.current.is_none() && self.room.is_none()
    }

    /// Makes chat `id` the current one (plain lines go there).
    pub(super) fn make_current(&mut self, id: u64) {
        self.current = Some(id);
        self.room = None;
    }

    /// An open session with `peer` that we are not closing, if any (the oldest).
    pub(super) fn find(&self, peer: &str) -> Option<u64> {
        self.chats
            .iter()
            .find(|(_, c)| c.handle.peer() == peer && !c.closing)
            .map(|(id, _)| *id)
    }
}

/// Asks for a rendezvous with `peer`, checks the pin, and opens the session: direct if
/// a path completes in time, else relayed (see [`crate::reach`]).
async fn dial(
    o: &Opener,
    peer: &str,
    background: bool,
) -> Result<(ChatHandle, ChatEvents), String> {
    let rv = reach::rendezvous(&o.link, peer).await?;
    let info: &PeerInfo = &rv.peer;
    let check = o
        .pins
        .lock()
        .map(|p| p.check(peer, &info.identity))
        .map_err(|_| "pin store poisoned".to_string())?;
    if let PinCheck::Changed { pinned } = check {
        o.changed_keys.note(peer, info.identity);
        return Err(format!(
            "{peer}'s key has CHANGED: pinned {}, the directory now gives {}. This may be an attack. \
             If {peer} really has a new key (ask them), run `/trust {peer}` and compare the safety number.",
            pinned.fingerprint().short(),
            info.identity.fingerprint().short()
        ));
    }
    reach::open(
        &o.link,
        &o.endpoint,
        &o.identity,
        &o.me,
        &rv,
        background,
        &o.punches,
        &o.reach,
    )
    .await
}
