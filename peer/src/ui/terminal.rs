//! The interactive front end: a line editor on a terminal.
//!
//! rustyline reads lines on a thread of its own; notes are printed through its external
//! printer, above the line being typed, so an incoming message never wrecks it. The
//! editor reads one line at a time, when the app says it is [`Output::ready`], so the
//! prompt always matches the state ("Enter destination user ID:" or "> ").
//!
//! Every note is laid out at the terminal's width by [`super::screen_lines`] before it is
//! printed, so the terminal never wraps a line itself and a wrapped line's continuation
//! is marked: another peer's text cannot make a line that looks like it starts a new
//! message.

use std::sync::Mutex;
use std::sync::mpsc as std_mpsc;

use rustyline::ExternalPrinter;
use rustyline::error::ReadlineError;
use tokio::sync::mpsc;

use super::{Direction, Input, Note, Output, printable, screen_lines};

/// Notes go through rustyline's printer; prompts go to the reading thread.
pub struct TerminalOutput {
    printer: Mutex<Box<dyn ExternalPrinter + Send>>,
    prompts: Mutex<std_mpsc::Sender<String>>,
}

/// Width assumed when the terminal cannot be measured.
const DEFAULT_WIDTH: usize = 80;

/// The terminal's width in columns now (it may have been resized since the last note), or
/// [`DEFAULT_WIDTH`] when it cannot be measured.
fn terminal_width() -> usize {
    crossterm::terminal::size()
        .map(|(cols, _)| usize::from(cols))
        .unwrap_or(DEFAULT_WIDTH)
}

/// Starts the line editor, which sends what the user types to `tx`.
pub fn start(tx: mpsc::Sender<Input>) -> Result<TerminalOutput, ReadlineError> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let printer = editor.create_external_printer()?;
    let (prompt_tx, prompt_rx) = std_mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("line-editor".into())
        .spawn(move || {
            while let Ok(prompt) = prompt_rx.recv() {
                let input = match editor.readline(&prompt) {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        Input::Line(line)
                    }
                    Err(ReadlineError::Interrupted) => Input::Interrupt,
                    Err(_) => Input::Eof,
                };
                let eof = input == Input::Eof;
                if tx.blocking_send(input).is_err() || eof {
                    return;
                }
            }
        })
        .map_err(ReadlineError::Io)?;
    Ok(TerminalOutput {
        printer: Mutex::new(Box::new(printer)),
        prompts: Mutex::new(prompt_tx),
    })
}

/// Renders a note for a person.
pub fn render(note: &Note) -> String {
    match note {
        Note::LoggedIn {
            user,
            directory_fingerprint,
            first_contact,
            ..
        } => {
            let mut s = format!("Login: {user} ... Logged in.");
            if *first_contact {
                s.push_str(&format!(
                    "\nFirst contact with this directory: pinned its key {directory_fingerprint}"
                ));
            }
            s
        }
        Note::Listening { addr } => format!("Listening for chats on {addr}"),
        Note::Connecting { peer } => format!("Connecting to {peer} ..."),
        Note::Connected {
            background: true, ..
        } => String::new(),
        Note::Connected {
            peer,
            key,
            direction: Direction::Outgoing,
            path,
            ..
        } => format!(
            "Connection established with {peer} (key {} ..., {}), type your messages",
            key.fingerprint().short(),
            path_text(path)
        ),
        Note::Connected {
            peer,
            key,
            direction: Direction::Incoming,
            current,
            path,
            ..
        } => {
            if *current {
                format!(
                    "Connection received from user {peer} (key {} ..., {}), type your messages",
                    key.fingerprint().short(),
                    path_text(path)
                )
            } else {
                format!(
                    "Connection received from user {peer} ({}); /switch {peer} to talk to them",
                    path_text(path)
                )
            }
        }
        Note::Switched { peer } => format!("Now chatting with {peer}"),
        Note::RoomJoined { room, members } => format!(
            "In room {room} (plain lines go to the room): {}",
            members
                .iter()
                .map(|m| if m.online {
                    m.user.to_string()
                } else {
                    format!("{} (offline)", m.user)
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Note::RoomLeft { room } => format!("Left room {room}"),
        Note::RoomChanged { room, user, joined } => {
            format!("{user} {} {room}", if *joined { "joined" } else { "left" })
        }
        Note::RoomMessage {
            room,
            peer,
            text,
            missed,
            ..
        } => {
            let mut s = String::new();
            if *missed > 0 {
                s.push_str(&format!(
                    "(you missed {missed} message{} from {peer} in {room} while away)\n",
                    if *missed == 1 { "" } else { "s" }
                ));
            }
            s.push_str(&format!("[{room}] {peer}: {}", printable(text)));
            s
        }
        Note::Rooms { rooms } => {
            if rooms.is_empty() {
                return "No rooms yet: /join NAME creates one.".into();
            }
            let list: Vec<String> = rooms
                .iter()
                .map(|r| format!("{} ({})", r.room, r.members))
                .collect();
            format!("Rooms: {}", list.join(", "))
        }
        Note::Members { room, members } => {
            let list: Vec<String> = members
                .iter()
                .map(|m| {
                    format!(
                        "{} ({})",
                        m.user,
                        if m.online { "online" } else { "offline" }
                    )
                })
                .collect();
            format!("Members of {room}: {}", list.join(", "))
        }
        Note::Presence { user, online } => {
            format!(
                "{user} {}",
                if *online { "is online" } else { "went offline" }
            )
        }
        Note::Undelivered { peer, text, reason } => {
            format!(
                "  \u{2717} not delivered to {peer} ({reason}): {}",
                printable(text)
            )
        }
        Note::Message { peer, text, .. } => format!("{peer}: {}", printable(text)),
        Note::Sent { .. } => String::new(),
        Note::Delivered { .. } => "  \u{2713} delivered".to_string(),
        Note::Ended {
            peer,
            reason,
            clean,
            undelivered,
        } => {
            let mut s = if *clean {
                format!("Connection ended ({peer})")
            } else {
                format!("Connection ended ({peer}): {}", printable(reason))
            };
            for (_, text) in undelivered {
                s.push_str(&format!("\n  \u{2717} not delivered: {text}"));
            }
            s
        }
        Note::ConnectFailed { peer, reason } => {
            format!("Could not connect to {peer}: {}", printable(reason))
        }
        Note::IncomingRefused { peer, reason } => match peer {
            Some(p) => format!(
                "Refused a connection claiming to be {p}: {}",
                printable(reason)
            ),
            None => format!("Refused a connection: {}", printable(reason)),
        },
        Note::Who { users } => {
            if users.is_empty() {
                return "Nobody is online.".to_string();
            }
            let mut s = format!("{} online:", users.len());
            for u in users {
                s.push_str(&format!(
                    "\n  {:<20} {}",
                    u.user,
                    human_duration(u.online_secs)
                ));
            }
            s
        }
        Note::Fingerprint { user, key, peer } => {
            let mut s = format!("Your key ({user}): {}", key.fingerprint());
            if let Some((name, their, safety)) = peer {
                s.push_str(&format!(
                    "\n{name}'s key:   {}\nSafety number: {safety}\nCompare it with {name} in person or by phone; it matches only if neither key was swapped.",
                    their.fingerprint()
                ));
            }
            s
        }
        Note::Accounts { users } => {
            if users.is_empty() {
                return "No accounts.".to_string();
            }
            let mut s = format!(
                "{} accounts:\n  {:<20} {:<6} {:<7} {:<22} KEY",
                users.len(),
                "NAME",
                "ADMIN",
                "ONLINE",
                "STATUS"
            );
            for u in users {
                let status = match (u.locked_by_admin, u.locked_for_secs) {
                    (true, _) => "locked by an admin".to_string(),
                    (false, Some(secs)) => format!("locked for {}", human_duration(secs)),
                    (false, None) if u.failed_attempts > 0 => {
                        format!("{} failed logins", u.failed_attempts)
                    }
                    (false, None) => "ok".to_string(),
                };
                s.push_str(&format!(
                    "\n  {:<20} {:<6} {:<7} {:<22} {}",
                    u.name,
                    if u.admin { "yes" } else { "no" },
                    if u.online { "yes" } else { "no" },
                    status,
                    u.identity
                        .map(|k| k.fingerprint().short())
                        .unwrap_or_else(|| "-".into())
                ));
            }
            s
        }
        Note::Queued { peer, .. } => format!(
            "  {peer} is offline: sealed and queued at the directory; delivered when {peer} logs in"
        ),
        Note::MailReceipt {
            peer,
            delivered: true,
            ..
        } => format!("  \u{2713} delivered to {peer} (offline message)"),
        Note::MailReceipt {
            peer,
            delivered: false,
            ..
        } => format!("Your offline message to {peer} expired before {peer} logged in"),
        Note::OfflineMessage {
            peer,
            sent_at_ms,
            text,
        } => format!(
            "{peer} [while you were away, {}]: {}",
            super::utc(*sent_at_ms),
            printable(text)
        ),
        Note::History {
            peer,
            entries,
            damaged,
        } => {
            if entries.is_empty() {
                return format!("No messages with {peer} yet.");
            }
            let mut lines: Vec<String> = entries
                .iter()
                .map(|e| {
                    let who = if e.direction.outgoing() { "you" } else { peer };
                    let offline = match e.direction {
                        crate::history::Direction::InOffline
                        | crate::history::Direction::OutOffline => " (offline)",
                        _ => "",
                    };
                    format!(
                        "[{}] {who}{offline}: {}",
                        super::utc(e.at_ms),
                        printable(&e.text)
                    )
                })
                .collect();
            if *damaged > 0 {
                lines.push(format!("({damaged} damaged records skipped)"));
            }
            lines.join("\n")
        }
        Note::Info(text) => text.clone(),
        Note::Warning(text) => format!("WARNING: {text}"),
        Note::Error(text) => format!("Error: {text}"),
        Note::PendingKey {
            peer,
            pinned,
            pending,
            safety,
            asking,
        } => {
            let mut s = match pinned {
                Some(old) => format!(
                    "{peer}'s key has CHANGED.\n  pinned key: {}\n  new key:    {}",
                    old.fingerprint(),
                    pending.fingerprint()
                ),
                None => format!("{peer}'s key: {} (not pinned yet)", pending.fingerprint()),
            };
            s.push_str(&format!("\nSafety number with the new key: {safety}"));
            if *asking {
                s.push_str(&format!(
                    "\nCompare it with {peer} in person or by phone. Type yes to trust this key, anything else to keep the pin as it is."
                ));
            } else {
                s.push_str(&format!(
                    "\nNot trusted: chats with this key are refused until you check it with {peer} and `/trust {peer}`."
                ));
            }
            s
        }
        Note::IncomingRefusals {
            count,
            secs,
            by_reason,
        } => {
            let reasons: Vec<String> = by_reason
                .iter()
                .map(|(why, n)| format!("{why}: {}", thousands(*n)))
                .collect();
            format!(
                "Refused {} incoming connections in the last {secs} s ({})",
                thousands(*count),
                reasons.join(", ")
            )
        }
    }
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

impl Output for TerminalOutput {
    fn show(&self, note: &Note) {
        let text = render(note);
        if text.is_empty() {
            return;
        }
        // Outside a read rustyline writes the text as is, and the next prompt would
        // overwrite a line without its end; in raw mode a bare LF does not return.
        // Measured for each note, so a resize between two prompts is followed at once.
        let text = screen_lines(&text, terminal_width());
        let text = format!("{}\r\n", text.replace('\n', "\r\n"));
        if let Ok(mut p) = self.printer.lock()
            && p.print(text.clone()).is_ok()
        {
            return;
        }
        print!("{text}");
    }

    fn alert(&self) {
        // BEL moves no cursor, so writing it past the line editor is harmless.
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b"\x07");
        let _ = err.flush();
    }

    fn ready(&self, prompt: &str) {
        if let Ok(tx) = self.prompts.lock() {
            let _ = tx.send(prompt.to_string());
        }
    }
}

/// How a chat travels, in words: "direct" or "relayed by the directory".
fn path_text(path: &super::Path) -> &'static str {
    match path {
        super::Path::Direct { .. } => "direct",
        super::Path::Relayed { .. } => "relayed by the directory",
    }
}

/// `1326` as `1,326`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
