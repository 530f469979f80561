//! The app's peer sessions: [`Chats`], the sessions open (calls we made or took, opened
//! by [`crate::calls`]), which one is current, which one carries what we send to a
//! peer, and what waits for one to open; then what the app does with them (sending,
//! what their events mean for the user).
//!
//! A session is either a chat the user is having, or a background session opened to
//! carry room messages and quick messages (`/msg`). Both kinds carry both. Messages to a
//! peer always go on the session first used for that peer (its *route*) until that
//! session ends: two peers who dial each other at once end up with two sessions, and
//! sticking to one keeps each sender's messages in order without closing anything that
//! may hold messages in flight.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proto::PublicKey;
use proto::message::RoomTag;
use proto::names::UserName;

use super::{App, Report};
use crate::alerts::Alert;
use crate::chat::{ChatEvent, ChatEvents, ChatHandle, EndReason};
use crate::pins::PinCheck;
use crate::ui::{Direction, Note};

/// How long one send may wait for a peer's session to take the message.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How many messages may wait for one peer's session to open.
const MAX_QUEUED_LINES: usize = 1000;

/// One open session with a peer.
struct OpenChat {
    handle: ChatHandle,
    /// Our messages not yet acknowledged: id → text as shown to the user.
    unacked: BTreeMap<u64, String>,
    /// We ended it and it is winding down: nothing new goes to it, and `/connect`
    /// opens a fresh chat instead of switching back to it.
    closing: bool,
}

/// A message waiting for a session to open.
pub(super) struct Outgoing {
    pub text: String,
    pub room: Option<RoomTag>,
}

impl Outgoing {
    /// The message as the user would recognise it (`[room] text` for room messages).
    fn display(&self) -> String {
        match &self.room {
            Some(tag) => format!("[{}] {}", tag.room, self.text),
            None => self.text.clone(),
        }
    }
}

/// The sessions open, and those being opened.
#[derive(Default)]
pub(super) struct Chats {
    /// Open sessions by local id.
    open: BTreeMap<u64, OpenChat>,
    next_id: u64,
    /// The current chat: plain lines go there.
    current: Option<u64>,
    /// Which session carries what we send to each peer.
    route: HashMap<String, u64>,
    /// Messages waiting for a session to a peer to open.
    waiting: HashMap<String, Vec<Outgoing>>,
    /// Peers being dialed, and whether at the user's request (`/connect`).
    dialing: HashMap<String, bool>,
}

impl Chats {
    /// An open session with `peer` that we are not closing, if any (the oldest).
    pub fn find(&self, peer: &str) -> Option<u64> {
        self.open
            .iter()
            .find(|(_, c)| c.handle.peer() == peer && !c.closing)
            .map(|(id, _)| *id)
    }

    /// The current chat, if any.
    pub fn current(&self) -> Option<u64> {
        self.current
    }

    /// Makes chat `id` the current one, or none.
    pub fn set_current(&mut self, id: Option<u64>) {
        self.current = id;
    }

    /// The peer of the current chat.
    pub fn current_peer(&self) -> Option<String> {
        let id = self.current?;
        Some(self.open.get(&id)?.handle.peer().to_string())
    }

    /// The peer key of an open session with `peer`.
    pub fn live_key(&self, peer: &str) -> Option<PublicKey> {
        let id = self.find(peer)?;
        Some(self.open[&id].handle.peer_key())
    }

    /// The peer a foreground dial is reaching, if any (lines typed meanwhile wait for it).
    pub fn dialing_foreground(&self) -> Option<String> {
        self.dialing
            .iter()
            .find(|(_, fg)| **fg)
            .map(|(p, _)| p.clone())
    }

    /// Whether a dial the user asked for is running.
    fn dialing_any_foreground(&self) -> bool {
        self.dialing.values().any(|fg| *fg)
    }

    /// Notes a dial to `peer`; true if one must start (none is running yet).
    fn dial(&mut self, peer: &str, foreground: bool) -> bool {
        if let Some(fg) = self.dialing.get_mut(peer) {
            *fg |= foreground;
            return false;
        }
        self.dialing.insert(peer.to_string(), foreground);
        true
    }

    /// The session that carries what we send to `peer`: the one used so far, else the
    /// oldest open one (which then stays the route).
    fn route_to(&mut self, peer: &str) -> Option<u64> {
        if let Some(id) = self.route.get(peer)
            && self.open.get(id).is_some_and(|c| !c.closing)
        {
            return Some(*id);
        }
        let id = self.find(peer)?;
        self.route.insert(peer.to_string(), id);
        Some(id)
    }

    /// Keeps `out` until a session to `peer` opens; if too much waits already, it is
    /// not kept and the note says so.
    fn queue(&mut self, peer: &str, out: Outgoing) -> Option<Note> {
        let queue = self.waiting.entry(peer.to_string()).or_default();
        if queue.len() >= MAX_QUEUED_LINES {
            return Some(Note::Undelivered {
                peer: peer.to_string(),
                text: out.display(),
                reason: "too many messages waiting for the session to open".into(),
            });
        }
        queue.push(out);
        None
    }

    /// Records a new session; returns its id.
    fn insert(&mut self, handle: ChatHandle) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.open.insert(
            id,
            OpenChat {
                handle,
                unacked: BTreeMap::new(),
                closing: false,
            },
        );
        id
    }

    /// Ends the current chat (Ctrl-C, `/end`). The goodbye runs in a task of its own
    /// (it may wait for the other side); the chat's `Ended` event follows.
    pub fn end_current(&mut self) {
        if let Some(id) = self.current.take()
            && let Some(chat) = self.open.get_mut(&id)
        {
            chat.closing = true;
            let handle = chat.handle.clone();
            tokio::spawn(async move { handle.close().await });
        }
    }

    /// `/chats`: the chats open (not the background sessions), the current one marked.
    pub fn list(&self) -> Note {
        let names: Vec<String> = self
            .open
            .iter()
            .filter(|(id, c)| Some(**id) == self.current || !c.handle.background())
            .map(|(id, c)| {
                let mark = if Some(*id) == self.current {
                    " (current)"
                } else {
                    ""
                };
                format!("{}{mark}", c.handle.peer())
            })
            .collect();
        Note::Info(if names.is_empty() {
            "no chats open".into()
        } else {
            format!("open chats: {}", names.join(", "))
        })
    }

    /// Whether messages wait for a session that is still being opened.
    pub fn waiting_for_dial(&self) -> bool {
        !self.waiting.is_empty() && !self.dialing.is_empty()
    }

    /// Whether any of our messages is not yet acknowledged.
    pub fn unacked(&self) -> bool {
        self.open.values().any(|c| !c.unacked.is_empty())
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Every open session.
    pub fn handles(&self) -> Vec<ChatHandle> {
        self.open.values().map(|c| c.handle.clone()).collect()
    }

    /// Gives up on what waits for sessions that never opened (quitting): one note each.
    pub fn abandon_waiting(&mut self) -> Vec<Note> {
        let mut notes = Vec::new();
        for (peer, waiting) in std::mem::take(&mut self.waiting) {
            for out in waiting {
                notes.push(Note::Undelivered {
                    peer: peer.clone(),
                    text: out.display(),
                    reason: "quit before the session opened".into(),
                });
            }
        }
        notes
    }

    /// Session `id` ended: what the user should hear of it, if anything.
    fn ended(&mut self, id: u64, reason: EndReason, undelivered: Vec<u64>) -> Option<Note> {
        let chat = self.open.remove(&id)?;
        let peer = chat.handle.peer().to_string();
        if self.route.get(&peer) == Some(&id) {
            self.route.remove(&peer);
        }
        let background = chat.handle.background();
        let mut texts = chat.unacked;
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
        (was_current || !background || !clean || !undelivered.is_empty()).then(|| Note::Ended {
            peer,
            reason: reason.to_string(),
            clean,
            undelivered,
        })
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
        if let Some(id) = self.chats.find(&peer) {
            self.make_current(id);
            self.show(Note::Switched { peer });
            self.ready();
            return;
        }
        self.show(Note::Connecting { peer: peer.clone() });
        self.prompt_owed = true;
        self.dial(peer, true);
    }

    /// Starts dialing `peer` (the outcome comes back as a call event), unless a dial to
    /// them is running already.
    fn dial(&mut self, peer: String, foreground: bool) {
        if self.chats.dial(&peer, foreground) {
            self.calls.dial(peer, !foreground);
        }
    }

    /// A dial failed: the user hears why, and what waited for that peer is undelivered.
    pub(super) fn connect_failed(&mut self, peer: String, reason: String) {
        let foreground = self.chats.dialing.remove(&peer).unwrap_or(false);
        let waiting = self.chats.waiting.remove(&peer).unwrap_or_default();
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
        if self.prompt_owed && !self.chats.dialing_any_foreground() {
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
            Direction::Outgoing => self.chats.dialing.remove(&peer).unwrap_or(false),
            Direction::Incoming => false,
        };
        let background = match direction {
            Direction::Outgoing => !foreground,
            Direction::Incoming => handle.background(),
        };
        self.pin_first_contact(handle.peer(), key).await;
        let id = self.chats.insert(handle);
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
        for out in self.chats.waiting.remove(&peer).unwrap_or_default() {
            self.deliver(&peer, out.text, out.room).await;
        }
        if self.prompt_owed && !self.chats.dialing_any_foreground() {
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
        if let Some(id) = self.chats.route_to(peer) {
            self.send_on(id, text, room).await;
            return;
        }
        match self.chats.queue(peer, Outgoing { text, room }) {
            None => self.dial(peer.to_string(), false),
            Some(note) => self.show(note),
        }
    }

    async fn send_on(&mut self, id: u64, text: String, room: Option<RoomTag>) {
        let Some(chat) = self.chats.open.get(&id) else {
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
                        crate::clock::now_ms(),
                    );
                }
                if let Some(chat) = self.chats.open.get_mut(&id) {
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

    /// What one session's event means to the user.
    pub(super) fn chat_event(&mut self, id: u64, event: ChatEvent) {
        let Some(chat) = self.chats.open.get_mut(&id) else {
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
                if self.chats.current() != Some(id) {
                    self.alert(Alert::Private, &peer);
                    if self.idle() {
                        self.make_current(id);
                        self.show(Note::Switched { peer: peer.clone() });
                    }
                }
                self.record(
                    &peer,
                    crate::history::Direction::In,
                    &text,
                    crate::clock::now_ms(),
                );
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
                if let Some(note) = self.chats.ended(id, reason, undelivered) {
                    self.show(note);
                }
            }
        }
    }

    /// Whether no chat or room is current.
    pub(super) fn idle(&self) -> bool {
        self.chats.current().is_none() && self.room.is_none()
    }

    /// Makes chat `id` the current one (plain lines go there).
    pub(super) fn make_current(&mut self, id: u64) {
        self.chats.set_current(Some(id));
        self.room = None;
    }
}
