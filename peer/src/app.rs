//! The chat runtime: everything that happens after login.
//!
//! One task (the loop in [`App::run`]) owns the state: the open chats, which one is
//! current, and what each has not yet had acknowledged. Everything slow happens in
//! tasks of its own that report back on one bounded channel: accepting a call, dialing,
//! each chat's events, the directory link. So a slow or dead peer never stalls another
//! chat, and the user can always type.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::message::{ConnectRefusal, PeerInfo};
use proto::{Identity, PublicKey};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::chat::{self, ChatEvent, ChatEvents, ChatHandle, EndReason};
use crate::endpoint;
use crate::link::{Link, LinkEvent};
use crate::login::Online;
use crate::pins::{PinCheck, Pins};
use crate::ui::command::{self, Command, Line};
use crate::ui::{Direction, Input, Note, Output};

/// Prompt when no chat is open.
pub const IDLE_PROMPT: &str = "Enter destination user ID: ";
/// Prompt inside a chat.
pub const CHAT_PROMPT: &str = "> ";
/// How long quitting waits for our last messages to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How many lines typed while a chat is being opened are kept for it.
const MAX_QUEUED_LINES: usize = 1000;
/// How long quitting waits for a chat still being opened when lines wait for it
/// (`echo hi | peer connect bianca`: stdin ends before the chat is open).
const QUEUED_DIAL_TIMEOUT: Duration = Duration::from_secs(20);

/// What to do first.
#[derive(Debug, Clone)]
pub enum Start {
    /// Wait for calls (and, on a terminal, ask whom to call).
    Idle,
    /// Call this user.
    Connect(String),
}

/// Reports from the app's helper tasks.
enum Report {
    Opened {
        handle: ChatHandle,
        events: ChatEvents,
        direction: Direction,
    },
    ConnectFailed {
        peer: String,
        reason: String,
    },
    IncomingRefused {
        peer: Option<String>,
        reason: String,
    },
    Chat {
        id: u64,
        event: ChatEvent,
    },
    Link(LinkEvent),
}

struct OpenChat {
    handle: ChatHandle,
    /// Key of whoever dialed: decides which of two simultaneous chats survives.
    initiator: PublicKey,
    /// Our messages not yet acknowledged: id → text.
    unacked: BTreeMap<u64, String>,
}

/// The running peer.
pub struct App {
    me: String,
    identity: Arc<Identity>,
    endpoint: quinn::Endpoint,
    link: Arc<Link>,
    pins: Arc<Mutex<Pins>>,
    out: Arc<dyn Output>,
    /// Whether a person is at a terminal (bare lines at the idle prompt name a user).
    interactive: bool,
    chats: BTreeMap<u64, OpenChat>,
    next_id: u64,
    current: Option<u64>,
    /// Lines typed for a chat still being opened.
    queued: Vec<String>,
    /// Users being dialed.
    dialing: Vec<String>,
    /// The terminal waits for the outcome of a dial before reading the next line.
    prompt_owed: bool,
    /// Whether the directory's key was pinned at this login (shown once at start).
    first_contact: bool,
    tx: mpsc::Sender<Report>,
    rx: mpsc::Receiver<Report>,
    tasks: JoinSet<()>,
}

impl App {
    /// Builds the app for a logged-in peer.
    pub fn new(online: Online, out: Arc<dyn Output>, interactive: bool) -> Self {
        let (tx, rx) = mpsc::channel(256);
        let me = online.link.user().to_string();
        Self {
            me,
            identity: online.profile.identity().clone(),
            endpoint: online.endpoint,
            link: online.link,
            pins: Arc::new(Mutex::new(online.profile.peers.clone())),
            out,
            interactive,
            chats: BTreeMap::new(),
            next_id: 1,
            current: None,
            queued: Vec::new(),
            dialing: Vec::new(),
            prompt_owed: false,
            first_contact: online.first_contact,
            tx,
            rx,
            tasks: JoinSet::new(),
        }
    }

    /// Runs until the user quits (or input ends). Ends every chat cleanly and logs out.
    pub async fn run(mut self, mut input: mpsc::Receiver<Input>, start: Start) {
        let client = self.link.client();
        self.show(Note::LoggedIn {
            user: self.me.clone(),
            directory: client.addr(),
            directory_fingerprint: client.directory_key().fingerprint(),
            first_contact: self.first_contact,
        });
        if let Ok(addr) = self.endpoint.local_addr() {
            self.show(Note::Listening { addr });
        }
        self.spawn_accept_loop();
        let (link_tx, mut link_rx) = mpsc::channel(16);
        self.tasks.spawn(self.link.clone().keep_alive(link_tx));
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            while let Some(e) = link_rx.recv().await {
                if tx.send(Report::Link(e)).await.is_err() {
                    return;
                }
            }
        });
        match start {
            Start::Connect(peer) => self.connect(peer),
            Start::Idle => self.ready(),
        }
        loop {
            tokio::select! {
                i = input.recv() => match i {
                    Some(Input::Line(line)) => {
                        if !self.line(&line).await {
                            break;
                        }
                    }
                    Some(Input::Interrupt) => {
                        if self.current.is_some() {
                            self.end_current().await;
                            self.ready();
                        } else {
                            break;
                        }
                    }
                    Some(Input::Eof) | None => break,
                },
                Some(report) = self.rx.recv() => self.report(report).await,
            }
        }
        self.quit().await;
    }

    fn prompt(&self) -> &'static str {
        if self.current.is_some() {
            CHAT_PROMPT
        } else {
            IDLE_PROMPT
        }
    }

    fn ready(&mut self) {
        self.prompt_owed = false;
        self.out.ready(self.prompt());
    }

    fn show(&self, note: Note) {
        self.out.show(&note);
    }

    /// Handles one line of input. Returns false to quit.
    async fn line(&mut self, line: &str) -> bool {
        match command::parse(line) {
            Line::Empty => {}
            Line::Text(text) => {
                if self.current.is_some() {
                    self.send(text).await;
                } else if !self.dialing.is_empty() {
                    if self.queued.len() < MAX_QUEUED_LINES {
                        self.queued.push(text);
                    } else {
                        self.show(Note::Error(
                            "too many lines typed before the chat opened".into(),
                        ));
                    }
                } else if self.interactive && proto::names::check_username(text.trim()).is_ok() {
                    self.connect(text.trim().to_string());
                    return true;
                } else if self.interactive {
                    self.show(Note::Error(
                        "no chat open: type the user name to call (or /help); your line was not sent".into(),
                    ));
                } else {
                    self.show(Note::Error(
                        "no chat open: /connect NAME, or wait for a call".into(),
                    ));
                }
            }
            Line::Command(cmd) => {
                if !self.command(cmd).await {
                    return false;
                }
                if self.prompt_owed {
                    return true;
                }
            }
        }
        self.ready();
        true
    }

    async fn command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Connect(peer) => self.connect(peer),
            Command::Switch(peer) => match self.find(&peer) {
                Some(id) => {
                    self.current = Some(id);
                    self.show(Note::Switched { peer });
                }
                None => self.show(Note::Error(format!("no open chat with {peer}"))),
            },
            Command::End => {
                if self.current.is_some() {
                    self.end_current().await;
                } else {
                    self.show(Note::Error("no chat open".into()));
                }
            }
            Command::Chats => {
                let names: Vec<String> = self
                    .chats
                    .iter()
                    .map(|(id, c)| {
                        let mark = if Some(*id) == self.current {
                            " (current)"
                        } else {
                            ""
                        };
                        format!("{}{mark}", c.handle.peer())
                    })
                    .collect();
                self.show(Note::Info(if names.is_empty() {
                    "no chats open".into()
                } else {
                    format!("open chats: {}", names.join(", "))
                }));
            }
            Command::Who => {
                match tokio::time::timeout(Duration::from_secs(10), self.link.who()).await {
                    Ok(Ok(users)) => self.show(Note::Who { users }),
                    Ok(Err(e)) => self.show(Note::Error(e.to_string())),
                    Err(_) => self.show(Note::Error("the directory did not answer".into())),
                }
            }
            Command::Fingerprint(peer) => self.fingerprint(peer),
            Command::Trust(peer) => self.trust(peer).await,
            Command::Help => {
                let lines: Vec<String> = command::HELP
                    .iter()
                    .map(|(c, what)| format!("  {c:<22}{what}"))
                    .collect();
                self.show(Note::Info(format!("Commands:\n{}", lines.join("\n"))));
            }
            Command::Quit => return false,
            Command::Bad(msg) => self.show(Note::Error(msg)),
        }
        true
    }

    fn find(&self, peer: &str) -> Option<u64> {
        self.chats
            .iter()
            .find(|(_, c)| c.handle.peer() == peer)
            .map(|(id, _)| *id)
    }

    async fn send(&mut self, text: String) {
        let Some(id) = self.current else { return };
        let Some(chat) = self.chats.get(&id) else {
            return;
        };
        let handle = chat.handle.clone();
        let peer = handle.peer().to_string();
        match tokio::time::timeout(Duration::from_secs(5), handle.send(&text)).await {
            Ok(Ok(msg_id)) => {
                if let Some(chat) = self.chats.get_mut(&id) {
                    chat.unacked.insert(msg_id, text);
                }
                self.show(Note::Sent { peer, id: msg_id });
            }
            Ok(Err(e)) => self.show(Note::Error(format!("not sent to {peer}: {e}"))),
            Err(_) => self.show(Note::Error(format!("not sent: {peer} is not reading"))),
        }
    }

    async fn end_current(&mut self) {
        if let Some(id) = self.current.take()
            && let Some(chat) = self.chats.get(&id)
        {
            chat.handle.close().await;
        }
    }

    /// Starts calling `peer` in the background.
    fn connect(&mut self, peer: String) {
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
            self.current = Some(id);
            self.show(Note::Switched { peer });
            self.ready();
            return;
        }
        self.show(Note::Connecting { peer: peer.clone() });
        self.dialing.push(peer.clone());
        self.prompt_owed = true;
        let (link, endpoint, identity, pins, me, tx) = (
            self.link.clone(),
            self.endpoint.clone(),
            self.identity.clone(),
            self.pins.clone(),
            self.me.clone(),
            self.tx.clone(),
        );
        self.tasks.spawn(async move {
            let report = match dial(&link, &endpoint, &identity, &pins, &me, &peer).await {
                Ok((handle, events)) => Report::Opened {
                    handle,
                    events,
                    direction: Direction::Outgoing,
                },
                Err(reason) => Report::ConnectFailed { peer, reason },
            };
            let _ = tx.send(report).await;
        });
    }

    fn spawn_accept_loop(&mut self) {
        let (link, endpoint, identity, pins, me, tx) = (
            self.link.clone(),
            self.endpoint.clone(),
            self.identity.clone(),
            self.pins.clone(),
            self.me.clone(),
            self.tx.clone(),
        );
        self.tasks.spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let (link, identity, pins, me, tx) = (
                    link.clone(),
                    identity.clone(),
                    pins.clone(),
                    me.clone(),
                    tx.clone(),
                );
                tokio::spawn(async move {
                    let conn = match incoming.await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(error = %e, "incoming handshake failed");
                            return;
                        }
                    };
                    let lookup =
                        async |claimed: &str| link.lookup(claimed).await.map_err(|e| e.to_string());
                    let pin_check = |claimed: &str, key: &PublicKey| match pins
                        .lock()
                        .map(|p| p.check(claimed, key))
                    {
                        Ok(PinCheck::Changed { .. }) => Err(ConnectRefusal::PinnedKeyChanged),
                        _ => Ok(()),
                    };
                    let report = match chat::accept(conn, &identity, &me, lookup, pin_check).await {
                        Ok((handle, events)) => Report::Opened {
                            handle,
                            events,
                            direction: Direction::Incoming,
                        },
                        Err(e) => Report::IncomingRefused {
                            peer: e.claimed().map(str::to_string),
                            reason: e.to_string(),
                        },
                    };
                    let _ = tx.send(report).await;
                });
            }
        });
    }

    async fn report(&mut self, report: Report) {
        match report {
            Report::Opened {
                handle,
                events,
                direction,
            } => self.opened(handle, events, direction).await,
            Report::ConnectFailed { peer, reason } => {
                self.dialing.retain(|p| p != &peer);
                self.show(Note::ConnectFailed { peer, reason });
                if self.dialing.is_empty() {
                    self.queued.clear();
                }
                if self.prompt_owed && self.dialing.is_empty() {
                    self.ready();
                }
            }
            Report::IncomingRefused { peer, reason } => {
                self.show(Note::IncomingRefused { peer, reason })
            }
            Report::Chat { id, event } => self.chat_event(id, event),
            Report::Link(event) => self.link_event(event),
        }
    }

    async fn opened(&mut self, handle: ChatHandle, mut events: ChatEvents, direction: Direction) {
        let peer = handle.peer().to_string();
        let key = handle.peer_key();
        let initiator = match direction {
            Direction::Outgoing => self.identity.public(),
            Direction::Incoming => key,
        };
        self.dialing.retain(|p| p != &peer);
        // Two chats with one peer (both dialed at once): both sides keep the one whose
        // initiator has the smaller key, so they agree without talking about it.
        if let Some(old) = self.find(&peer) {
            let old_initiator = self.chats[&old].initiator;
            if old_initiator <= initiator {
                tokio::spawn(async move { handle.close().await });
                if self.prompt_owed && self.dialing.is_empty() {
                    self.current = Some(old);
                    self.ready();
                }
                return;
            }
            if let Some(c) = self.chats.remove(&old) {
                tokio::spawn(async move { c.handle.close().await });
            }
            if self.current == Some(old) {
                self.current = None;
            }
        }
        if let Ok(mut pins) = self.pins.lock()
            && pins.check(&peer, &key) == PinCheck::New
            && let Err(e) = pins.pin(&peer, key)
        {
            self.show(Note::Warning(format!("could not pin {peer}'s key: {e}")));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.chats.insert(
            id,
            OpenChat {
                handle,
                initiator,
                unacked: BTreeMap::new(),
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
        let current = direction == Direction::Outgoing || self.current.is_none();
        if current {
            self.current = Some(id);
        }
        self.show(Note::Connected {
            peer,
            key,
            direction,
            current,
        });
        if current {
            for text in std::mem::take(&mut self.queued) {
                self.send(text).await;
            }
        }
        if self.prompt_owed && self.dialing.is_empty() {
            self.ready();
        }
    }

    fn chat_event(&mut self, id: u64, event: ChatEvent) {
        let Some(chat) = self.chats.get_mut(&id) else {
            return;
        };
        let peer = chat.handle.peer().to_string();
        match event {
            ChatEvent::Message {
                id: msg_id, text, ..
            } => self.show(Note::Message {
                peer,
                id: msg_id,
                text,
            }),
            ChatEvent::Delivered { id: msg_id } => {
                chat.unacked.remove(&msg_id);
                self.show(Note::Delivered { peer, id: msg_id });
            }
            ChatEvent::Ended {
                reason,
                undelivered,
            } => {
                let chat = self.chats.remove(&id);
                let mut texts = chat.map(|c| c.unacked).unwrap_or_default();
                let undelivered = undelivered
                    .into_iter()
                    .map(|m| (m, texts.remove(&m).unwrap_or_default()))
                    .collect();
                let clean = matches!(reason, EndReason::ClosedByPeer | EndReason::ClosedByUs);
                if self.current == Some(id) {
                    self.current = None;
                }
                self.show(Note::Ended {
                    peer,
                    reason: reason.to_string(),
                    clean,
                    undelivered,
                });
            }
        }
    }

    fn link_event(&mut self, event: LinkEvent) {
        use proto::message::Event;
        match event {
            LinkEvent::Lost { reason } => self.show(Note::Warning(format!(
                "lost the directory ({reason}); logging back in. Open chats go on."
            ))),
            LinkEvent::Restored => self.show(Note::Info("logged back in to the directory".into())),
            LinkEvent::GaveUp { reason } => self.show(Note::Error(format!(
                "logged out of the directory: {reason}. Open chats go on; restart to log in again."
            ))),
            LinkEvent::Directory(Event::Shutdown { reason }) => self.show(Note::Warning(format!(
                "the directory is shutting down: {reason}"
            ))),
            LinkEvent::Directory(Event::ForcedLogout { reason }) => self.show(Note::Warning(
                format!("the directory logged you out: {reason}"),
            )),
        }
    }

    fn fingerprint(&self, peer: Option<String>) {
        let mine = self.identity.public();
        let peer = match peer {
            None => None,
            Some(name) => {
                let live = self.find(&name).map(|id| self.chats[&id].handle.peer_key());
                let pinned = self.pins.lock().ok().and_then(|p| p.get(&name));
                match live.or(pinned) {
                    Some(key) => Some((name, key, proto::identity::safety_number(&mine, &key))),
                    None => {
                        self.show(Note::Error(format!(
                            "no key known for {name}: chat with them first"
                        )));
                        return;
                    }
                }
            }
        };
        self.show(Note::Fingerprint {
            user: self.me.clone(),
            key: mine,
            peer,
        });
    }

    async fn trust(&mut self, peer: String) {
        match self.link.lookup(&peer).await {
            Ok(Some(info)) => {
                let result = self
                    .pins
                    .lock()
                    .map_err(|_| "pin store poisoned".to_string())
                    .and_then(|mut p| p.pin(&peer, info.identity).map_err(|e| e.to_string()));
                match result {
                    Ok(()) => self.show(Note::Info(format!(
                        "now trusting {peer}'s key {} (safety number {})",
                        info.identity.fingerprint(),
                        proto::identity::safety_number(&self.identity.public(), &info.identity)
                    ))),
                    Err(e) => self.show(Note::Error(e)),
                }
            }
            Ok(None) => self.show(Note::Error(format!(
                "{peer} is not online; their key can be trusted once they are"
            ))),
            Err(e) => self.show(Note::Error(e.to_string())),
        }
    }

    /// Waits (briefly) for a chat being opened when lines wait for it and for our last
    /// messages to be acknowledged, ends every chat, logs out.
    async fn quit(mut self) {
        // Lines typed for a chat still being opened are sent once it opens (or dropped,
        // with `connect-failed`, when it cannot).
        let deadline = tokio::time::Instant::now() + QUEUED_DIAL_TIMEOUT;
        while !self.queued.is_empty() && !self.dialing.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(report)) => self.report(report).await,
                _ => break,
            }
        }
        let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
        while self.chats.values().any(|c| !c.unacked.is_empty()) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(report)) => self.report(report).await,
                _ => break,
            }
        }
        let open: Vec<ChatHandle> = self.chats.values().map(|c| c.handle.clone()).collect();
        for handle in &open {
            handle.close().await;
        }
        // Let the chats report how they ended (undelivered messages).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.chats.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(report)) => self.report(report).await,
                _ => break,
            }
        }
        self.link.logout().await;
        self.endpoint.close(0u32.into(), b"bye");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        self.tasks.abort_all();
    }
}

/// Looks `peer` up, checks the pin, dials their addresses and opens the chat.
async fn dial(
    link: &Link,
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    pins: &Mutex<Pins>,
    me: &str,
    peer: &str,
) -> Result<(ChatHandle, ChatEvents), String> {
    let info: PeerInfo = match link.lookup(peer).await {
        Ok(Some(info)) => info,
        Ok(None) => return Err(format!("{peer} is not online")),
        Err(e) => return Err(e.to_string()),
    };
    let check = pins
        .lock()
        .map(|p| p.check(peer, &info.identity))
        .map_err(|_| "pin store poisoned".to_string())?;
    if let PinCheck::Changed { pinned } = check {
        return Err(format!(
            "{peer}'s key has CHANGED: pinned {}, the directory now gives {}. This may be an attack. \
             If {peer} really has a new key (ask them), run `/trust {peer}` and compare the safety number.",
            pinned.fingerprint().short(),
            info.identity.fingerprint().short()
        ));
    }
    let conn = dial_any(endpoint, identity, &info).await?;
    chat::initiate(conn, identity, me, &info)
        .await
        .map_err(|e| e.to_string())
}

/// Dials every address the directory gave for the peer at once; the first verified
/// handshake wins.
async fn dial_any(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    info: &PeerInfo,
) -> Result<quinn::Connection, String> {
    let mut attempts = JoinSet::new();
    for addr in info.all_addresses() {
        let (endpoint, config) = (
            endpoint.clone(),
            endpoint::client_config(Some(identity), Some(info.identity), proto::ALPN_PEER)
                .map_err(|e| e.to_string())?,
        );
        attempts.spawn(async move { endpoint::dial(&endpoint, config, addr).await });
    }
    let mut last = String::from("no address to dial");
    while let Some(result) = attempts.join_next().await {
        match result {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => last = e.to_string(),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}
