//! The chat runtime: everything that happens after login.
//!
//! One task (the loop in [`App::run`]) owns the conversation state and turns input and
//! events into [`Note`]s for the UI. Everything slow happens in tasks of its own that
//! report back on one bounded channel: calls made and taken (the calls service,
//! [`crate::calls`], which owns the endpoint and hands the app opened sessions), each
//! session's events, the directory link, the mailbox. So a slow or dead peer never
//! stalls another chat, and the user can always type.
//!
//! The state, each part its own struct returning `Note`s:
//! - [`chats`]: the sessions open and being opened, the current chat, which session
//!   carries what we send to a peer, what waits for a session to open.
//! - [`rooms`]: the rooms we are in, their members, the message numbers.
//! - [`mail`]: the app's side of the sealed mailbox ([`crate::mailbox`]: a private
//!   message that cannot reach its recipient directly is sealed and queued at the
//!   directory, and what waited for us is shown at login) and the profile's encrypted
//!   history of private messages ([`crate::history`]).
//!
//! Besides, this file keeps what is the app's own: the prompt and which room is
//! current, commands, trust decisions, and quitting (one helper, `App::wait_until`,
//! waits for a condition or a deadline).

mod chats;
mod mail;
mod rooms;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::Identity;
use proto::message::{Event, RoomTag};
use proto::names::UserName;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::admin;
use crate::alerts::{Alert, Alerts, mentions};
use crate::calls::{CallEvent, Calls, ChangedKeys};
use crate::chat::ChatEvent;
use crate::history::{self, HistoryWriter};
use crate::joke;
use crate::link::{Link, LinkEvent};
use crate::login::Online;
use crate::mailbox::{MailContext, MailReport};
use crate::pins::Pins;
use crate::profile::PresenceScope;
use crate::reach::ReachOptions;
use crate::ui::command::{self, Command, Line};
use crate::ui::{Input, Note, Output};
use chats::Chats;
use mail::{Mail, MailNotes};
use rooms::Rooms;

/// Prompt when no chat is open.
pub const IDLE_PROMPT: &str = "Enter destination user ID: ";
/// Prompt inside a chat.
pub const CHAT_PROMPT: &str = "> ";
/// How long quitting waits for our last messages to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long quitting waits for a session still being opened when messages wait for it
/// (`echo hi | peer connect bianca`: stdin ends before the chat is open).
const QUEUED_DIAL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long quitting waits for the sessions it closed to report how they ended.
const ENDING_TIMEOUT: Duration = Duration::from_secs(2);

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
    Call(CallEvent),
    Chat { id: u64, event: ChatEvent },
    Link(LinkEvent),
    Mail(MailReport),
    Joke { to: JokeTarget, joke: joke::Joke },
}

/// Where a `/joke` goes: where plain lines went when it was asked for.
#[derive(Debug, Clone)]
enum JokeTarget {
    Room(String),
    Peer(String),
}

/// The running peer.
pub struct App {
    me: UserName,
    identity: Arc<Identity>,
    link: Arc<Link>,
    /// Calls we make and take.
    calls: Calls,
    pins: Arc<Mutex<Pins>>,
    out: Arc<dyn Output>,
    /// Whether a person is at a terminal (bare lines at the idle prompt name a user).
    interactive: bool,
    alerts: Alerts,
    presence_scope: PresenceScope,
    auto_join: Vec<String>,
    /// The sessions open and being opened, and the current chat.
    chats: Chats,
    /// The current room: plain lines go there (never both a chat and a room).
    room: Option<String>,
    /// The rooms we are in.
    rooms: Rooms,
    profile_dir: std::path::PathBuf,
    /// The terminal waits for the outcome of a dial before reading the next line.
    prompt_owed: bool,
    /// Whether the directory's key was pinned at this login (shown once at start).
    first_contact: bool,
    /// An `/adduser` whose password is the next input line (scripted mode).
    admin_password: Option<admin::PendingAddUser>,
    /// A `/trust NAME` waiting for the next line to confirm (`yes`) the key shown.
    trust_pending: Option<(UserName, proto::PublicKey)>,
    /// Changed keys seen when a chat was refused (not pinned), for `/fingerprint NAME`.
    changed_keys: ChangedKeys,
    /// Sealed mail for peers we cannot reach and from peers while we were away, and
    /// the history of private messages.
    mail: Mail,
    /// The joke API's URL.
    joke_api: String,
    tx: mpsc::Sender<Report>,
    rx: mpsc::Receiver<Report>,
    tasks: JoinSet<()>,
}

impl App {
    /// Builds the app for a logged-in peer.
    pub fn new(online: Online, out: Arc<dyn Output>, interactive: bool) -> Self {
        let (tx, rx) = mpsc::channel(256);
        let settings = &online.profile.settings;
        let pins = Arc::new(Mutex::new(online.profile.peers.clone()));
        let (mail_tx, mail_rx) = mpsc::channel(64);
        let mut tasks = JoinSet::new();
        forward(&mut tasks, mail_rx, &tx, Report::Mail);
        let mail = MailContext {
            link: online.link.clone(),
            identity: online.profile.identity().clone(),
            me: online.link.user().clone(),
            pins: pins.clone(),
            reports: mail_tx,
        };
        let changed_keys = ChangedKeys::default();
        let (calls, call_events) = Calls::new(
            online.link.clone(),
            online.endpoint,
            online.profile.identity().clone(),
            pins.clone(),
            changed_keys.clone(),
        );
        forward(&mut tasks, call_events, &tx, Report::Call);
        let history = online
            .profile
            .vault()
            .map(|v| HistoryWriter::start(online.profile.dir(), v.clone()));
        Self {
            mail: Mail::start(mail, online.profile.prekeys(), history, &mut tasks),
            joke_api: settings
                .joke_api
                .clone()
                .unwrap_or_else(|| joke::DEFAULT_API.to_string()),
            me: online.link.user().clone(),
            identity: online.profile.identity().clone(),
            alerts: settings.alerts.clone(),
            presence_scope: settings.presence,
            auto_join: settings.auto_join.clone(),
            pins,
            calls,
            rooms: Rooms::new(
                online.link.user().clone(),
                online.link.clone(),
                online.profile.dir(),
            ),
            link: online.link,
            out,
            interactive,
            chats: Chats::default(),
            room: None,
            profile_dir: online.profile.dir().to_path_buf(),
            prompt_owed: false,
            first_contact: online.first_contact,
            admin_password: None,
            trust_pending: None,
            changed_keys,
            tx,
            rx,
            tasks,
        }
    }

    /// Sets how long dials try direct paths before the relay (instead of the default or
    /// `PEER_DIRECT_TIMEOUT_MS`).
    pub fn with_reach(mut self, reach: ReachOptions) -> Self {
        self.calls.set_reach(reach);
        self
    }

    /// Runs until the user quits (or input ends). Ends every chat cleanly and logs out.
    pub async fn run(mut self, mut input: mpsc::Receiver<Input>, start: Start) {
        let client = self.link.client();
        self.show(Note::LoggedIn {
            user: self.me.to_string(),
            directory: client.addr(),
            directory_fingerprint: client.directory_key().fingerprint(),
            first_contact: self.first_contact,
        });
        if let Ok(addr) = self.calls.local_addr() {
            self.show(Note::Listening { addr });
        }
        self.calls.listen();
        let (link_tx, link_rx) = mpsc::channel(16);
        self.tasks.spawn(self.link.clone().keep_alive(link_tx));
        forward(&mut self.tasks, link_rx, &self.tx, Report::Link);
        self.watch_contacts().await;
        self.mail.open_inbox(&self.profile_dir, &mut self.tasks);
        for room in self.auto_join.clone() {
            self.join(room).await;
        }
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
                        if self.chats.current().is_some() {
                            self.chats.end_current();
                        } else if self.room.is_some() {
                            self.room = None;
                        } else {
                            break;
                        }
                        self.ready();
                    }
                    Some(Input::Eof) | None => break,
                },
                Some(report) = self.rx.recv() => self.report(report).await,
            }
        }
        self.quit().await;
    }

    fn prompt(&self) -> String {
        match (&self.room, self.chats.current()) {
            (Some(room), _) => format!("[{room}] > "),
            (None, Some(_)) => CHAT_PROMPT.to_string(),
            (None, None) => IDLE_PROMPT.to_string(),
        }
    }

    fn ready(&mut self) {
        self.prompt_owed = false;
        self.out.ready(&self.prompt());
    }

    fn show(&self, note: Note) {
        self.out.show(&note);
    }

    /// Rings the bell and runs the alert command, if the profile wants this kind.
    fn alert(&self, alert: Alert, from: &str) {
        if !self.alerts.wants(alert) {
            return;
        }
        if self.alerts.bell {
            self.out.alert();
        }
        self.alerts.run_command(alert, from);
    }

    /// Handles one line of input. Returns false to quit.
    async fn line(&mut self, line: &str) -> bool {
        if let Some((peer, key)) = self.trust_pending.take() {
            self.confirm_trust(peer, key, line);
            self.ready();
            return true;
        }
        if let Some(pending) = self.admin_password.take() {
            let note = admin::add_user(&self.link, pending, line).await;
            self.show(note);
            self.ready();
            return true;
        }
        match command::parse(line) {
            Line::Empty => {}
            Line::Text(text) => {
                if let Some(room) = self.room.clone() {
                    self.send_room(&room, text).await;
                } else if let Some(peer) = self.chats.current_peer() {
                    self.deliver(&peer, text, None).await;
                } else if let Some(peer) = self.chats.dialing_foreground() {
                    self.deliver(&peer, text, None).await;
                } else if self.interactive && proto::names::check_username(text.trim()).is_ok() {
                    self.connect(text.trim().to_string());
                    return true;
                } else if self.interactive {
                    self.show(Note::Error(
                        "no chat open: type the user name to call (or /help); your line was not sent"
                            .into(),
                    ));
                } else {
                    self.show(Note::Error(
                        "no chat open: /connect NAME, /join ROOM, or wait for a call".into(),
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
            Command::Switch(peer) => match self.chats.find(&peer) {
                Some(id) => {
                    self.make_current(id);
                    self.show(Note::Switched { peer });
                }
                None => self.show(Note::Error(format!("no open chat with {peer}"))),
            },
            Command::Join(room) => self.join(room).await,
            Command::Leave(room) => match room.or_else(|| self.room.clone()) {
                Some(room) => match self.rooms.leave(&room).await {
                    Ok(note) => {
                        if self.room.as_deref() == Some(room.as_str()) {
                            self.room = None;
                        }
                        self.show(note);
                    }
                    Err(note) => self.show(note),
                },
                None => self.show(Note::Error("no room to leave: /leave ROOM".into())),
            },
            Command::Rooms => {
                let note = self.rooms.list().await;
                self.show(note);
            }
            Command::Members(room) => match room.or_else(|| self.room.clone()) {
                Some(room) => self.show(self.rooms.members(&room)),
                None => self.show(Note::Error("which room? /members ROOM".into())),
            },
            Command::Msg(peer, text) => {
                if peer == self.me {
                    self.show(Note::Error("that is you".into()));
                } else {
                    self.deliver(&peer, text, None).await;
                }
            }
            Command::End => {
                if self.chats.current().is_some() {
                    self.chats.end_current();
                } else {
                    self.show(Note::Error("no chat open".into()));
                }
            }
            Command::Chats => self.show(self.chats.list()),
            Command::Who => {
                match tokio::time::timeout(Duration::from_secs(10), self.link.who()).await {
                    Ok(Ok(users)) => self.show(Note::Who { users }),
                    Ok(Err(e)) => self.show(Note::Error(e.to_string())),
                    Err(_) => self.show(Note::Error("the directory did not answer".into())),
                }
            }
            Command::Joke => self.joke(),
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
            Command::Admin(cmd) => {
                let outcome = admin::command(&self.link, cmd, self.interactive).await;
                self.admin_password = outcome.pending;
                self.show(outcome.note);
            }
            Command::Bad(msg) => self.show(Note::Error(msg)),
        }
        true
    }

    async fn report(&mut self, report: Report) {
        match report {
            Report::Call(CallEvent::Opened {
                handle,
                events,
                direction,
            }) => self.opened(handle, events, direction).await,
            Report::Call(CallEvent::DialFailed { peer, reason }) => {
                self.connect_failed(peer, reason)
            }
            Report::Call(CallEvent::Refused { peer, reason }) => {
                self.show(Note::IncomingRefused { peer, reason })
            }
            Report::Call(CallEvent::Refusals(s)) => self.show(Note::IncomingRefusals {
                count: s.count,
                secs: s.secs,
                by_reason: s.by_reason,
            }),
            Report::Chat { id, event } => self.chat_event(id, event),
            Report::Link(event) => self.link_event(event),
            Report::Mail(report) => self.mail_report(report),
            Report::Joke { to, joke } => {
                let text = joke.text();
                self.show(Note::Info(format!(
                    "joke ({}): {text}",
                    match joke.source {
                        joke::Source::Api => "from the joke API",
                        joke::Source::Bundled => "bundled",
                    }
                )));
                match to {
                    JokeTarget::Room(room) => self.send_room(&room, text).await,
                    JokeTarget::Peer(peer) => self.deliver(&peer, text, None).await,
                }
            }
        }
    }

    /// `/joke`: fetches a joke (in a task; the API may be slow) for the current chat.
    fn joke(&mut self) {
        let to = if let Some(room) = &self.room {
            JokeTarget::Room(room.clone())
        } else if let Some(peer) = self.chats.current_peer() {
            JokeTarget::Peer(peer)
        } else if let Some(peer) = self.chats.dialing_foreground() {
            JokeTarget::Peer(peer)
        } else {
            self.show(Note::Error(
                "no chat open: /joke sends a joke into the current chat or room".into(),
            ));
            return;
        };
        let (api, tx) = (self.joke_api.clone(), self.tx.clone());
        self.tasks.spawn(async move {
            let joke = joke::fetch(&api, joke::TIMEOUT).await;
            let _ = tx.send(Report::Joke { to, joke }).await;
        });
    }

    /// Hands a private message for `peer` to the outbox (sealed mail).
    fn mail(&mut self, peer: &str, text: String) {
        if let Some(note) = self.mail.send(peer, text) {
            self.show(note);
        }
    }

    /// Records a private message in the history.
    fn record(&self, peer: &str, direction: history::Direction, text: &str, at_ms: u64) {
        self.mail.record(peer, direction, text, at_ms);
    }

    fn mail_report(&mut self, report: MailReport) {
        let MailNotes { notes, shown } = self.mail.report(report);
        for note in notes {
            if let Note::OfflineMessage { peer, .. } = &note {
                self.alert(Alert::Private, peer);
            }
            self.show(note);
        }
        if let Some(shown) = shown {
            let _ = shown.send(());
        }
    }

    fn link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Lost { reason } => self.show(Note::Warning(format!(
                "lost the directory ({reason}); logging back in. Open chats go on."
            ))),
            LinkEvent::Restored { addr } => {
                self.show(Note::Info(format!(
                    "logged back in to the directory at {addr}"
                )));
                self.mail.wake();
            }
            LinkEvent::Directory(Event::MailWaiting | Event::MailReceiptsWaiting) => {
                self.mail.wake();
            }
            LinkEvent::GaveUp { reason } => self.show(Note::Error(format!(
                "logged out of the directory: {reason}. Open chats go on; restart to log in again."
            ))),
            LinkEvent::Directory(Event::Shutdown { reason }) => self.show(Note::Warning(format!(
                "the directory is shutting down: {reason}"
            ))),
            LinkEvent::Directory(Event::ForcedLogout { reason }) => self.show(Note::Warning(
                format!("the directory logged you out: {reason}"),
            )),
            LinkEvent::Directory(Event::RoomChanged { room, user, joined }) => {
                if let Some(note) = self.rooms.changed(room, user, joined) {
                    self.show(note);
                }
            }
            LinkEvent::Directory(Event::Presence { user, online }) => {
                self.alert(Alert::Presence, &user);
                let note = self.rooms.presence(user, online);
                self.show(note);
            }
            LinkEvent::Directory(Event::Incoming { from, direct, .. }) => {
                self.calls.incoming(from, direct)
            }
            LinkEvent::Directory(Event::RelayCall { from, token }) => {
                self.calls.relay_call(from, token)
            }
        }
    }

    fn fingerprint(&self, peer: Option<String>) {
        let mine = self.identity.public();
        let peer = match peer {
            None => None,
            Some(name) => {
                let live = self.chats.live_key(&name);
                let pinned = self.pins.lock().ok().and_then(|p| p.get(&name));
                let changed = self.changed_keys.get(&name).filter(|k| Some(*k) != pinned);
                match live.or(pinned) {
                    Some(key) => Some((name, key, pinned, changed)),
                    None => {
                        self.show(Note::Error(format!(
                            "no key known for {name}: chat with them first"
                        )));
                        return;
                    }
                }
            }
        };
        let changed = peer.as_ref().and_then(|(name, _, pinned, changed)| {
            changed.map(|pending| Note::PendingKey {
                peer: name.clone(),
                pinned: *pinned,
                pending,
                safety: proto::identity::safety_number(&mine, &pending),
                asking: false,
            })
        });
        self.show(Note::Fingerprint {
            user: self.me.to_string(),
            key: mine,
            peer: peer.map(|(name, key, _, _)| {
                let safety = proto::identity::safety_number(&mine, &key);
                (name, key, safety)
            }),
        });
        if let Some(note) = changed {
            self.show(note);
        }
    }

    /// `/trust NAME`: shows the directory's key for NAME and its safety number, and asks
    /// (the next line answers) before pinning it.
    async fn trust(&mut self, peer: String) {
        match self.link.lookup(&peer).await {
            Ok(Some(info)) => {
                let pinned = self.pins.lock().ok().and_then(|p| p.get(&peer));
                if pinned == Some(info.identity) {
                    self.show(Note::Info(format!(
                        "{peer}'s key {} is already trusted",
                        info.identity.fingerprint()
                    )));
                    return;
                }
                self.show(Note::PendingKey {
                    peer: peer.clone(),
                    pinned,
                    pending: info.identity,
                    safety: proto::identity::safety_number(&self.identity.public(), &info.identity),
                    asking: true,
                });
                self.trust_pending = Some((info.user, info.identity));
            }
            Ok(None) => self.show(Note::Error(format!(
                "{peer} is not online; their key can be trusted once they are"
            ))),
            Err(e) => self.show(Note::Error(e.to_string())),
        }
    }

    /// The answer to `/trust NAME`: `yes` pins exactly the key that was shown.
    fn confirm_trust(&mut self, peer: UserName, key: proto::PublicKey, answer: &str) {
        if !answer.trim().eq_ignore_ascii_case("yes") {
            self.show(Note::Info(format!(
                "not trusted: {peer}'s pinned key is unchanged"
            )));
            return;
        }
        let result = self
            .pins
            .lock()
            .map_err(|_| "pin store poisoned".to_string())
            .and_then(|mut p| p.pin(&peer, key).map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                self.changed_keys.forget(&peer);
                self.show(Note::Info(format!(
                    "now trusting {peer}'s key {} (safety number {})",
                    key.fingerprint(),
                    proto::identity::safety_number(&self.identity.public(), &key)
                )));
            }
            Err(e) => self.show(Note::Error(e)),
        }
    }

    /// `/join ROOM`: joins (or makes current) a room.
    async fn join(&mut self, room: String) {
        match self.rooms.join(&room).await {
            Ok(note) => {
                self.room = Some(room);
                self.chats.set_current(None);
                self.show(note);
            }
            Err(note) => self.show(note),
        }
    }

    /// Sends one line to every other online member of `room`.
    async fn send_room(&mut self, room: &str, text: String) {
        let Some(post) = self.rooms.post(room) else {
            return;
        };
        if let Some(note) = post.note {
            self.show(note);
        }
        for member in post.to {
            self.deliver(&member, text.clone(), Some(post.tag.clone()))
                .await;
        }
    }

    /// A room message arrived from `peer`.
    fn room_message(&mut self, peer: &str, tag: RoomTag, text: String) {
        let mention = mentions(&text, &self.me);
        if let Some(note) = self.rooms.message(peer, tag, text) {
            if mention {
                self.alert(Alert::Mention, peer);
            }
            self.show(note);
        }
    }

    /// Tells the directory whose presence we want, per the profile's `presence` scope.
    async fn watch_contacts(&mut self) {
        let (users, everyone) = match self.presence_scope {
            PresenceScope::None => return,
            PresenceScope::Everyone => (Vec::new(), true),
            PresenceScope::Contacts => match self.pins.lock() {
                Ok(p) => (p.names(), false),
                Err(_) => return,
            },
        };
        if let Err(e) = self.link.watch(users, everyone).await {
            tracing::warn!(error = %e, "could not set the presence watch");
        }
    }

    /// Handles reports until `done` holds or `within` has passed.
    async fn wait_until(&mut self, within: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(report)) => self.report(report).await,
                _ => break,
            }
        }
    }

    /// Waits (briefly) for sessions being opened when messages wait for them and for our
    /// last messages to be acknowledged, ends every session, logs out.
    async fn quit(mut self) {
        self.wait_until(QUEUED_DIAL_TIMEOUT, |app| !app.chats.waiting_for_dial())
            .await;
        self.wait_until(FLUSH_TIMEOUT, |app| !app.chats.unacked())
            .await;
        for handle in self.chats.handles() {
            handle.close().await;
        }
        // Let the sessions report how they ended (undelivered messages).
        self.wait_until(ENDING_TIMEOUT, |app| app.chats.is_empty())
            .await;
        for note in self.chats.abandon_waiting() {
            self.show(note);
        }
        // Messages on their way to the directory's mailbox: wait for each outcome.
        self.wait_until(crate::mailbox::RETRY_FOR + Duration::from_secs(5), |app| {
            !app.mail.is_pending()
        })
        .await;
        for note in self.mail.abandon() {
            self.show(note);
        }
        self.mail.flush().await;
        self.rooms.save_marks();
        self.link.logout().await;
        self.calls.close().await;
        self.tasks.abort_all();
    }
}

/// Forwards what comes on `rx` to the app's reports, wrapped by `wrap`, until either
/// side is gone.
fn forward<T: Send + 'static>(
    tasks: &mut JoinSet<()>,
    mut rx: mpsc::Receiver<T>,
    tx: &mpsc::Sender<Report>,
    wrap: fn(T) -> Report,
) {
    let tx = tx.clone();
    tasks.spawn(async move {
        while let Some(item) = rx.recv().await {
            if tx.send(wrap(item)).await.is_err() {
                return;
            }
        }
    });
}
