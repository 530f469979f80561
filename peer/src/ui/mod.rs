//! The user interface: what the app tells the user ([`Note`]), what the user tells the
//! app ([`Input`]), and the two ways of doing it.
//!
//! - [`terminal`]: a line editor (rustyline) whose prompt survives incoming messages,
//!   which are printed above it; line history in memory only (never on disk: it would
//!   hold message plaintext).
//! - [`script`]: when stdin is not a terminal. Each stdin line is a message (or a slash
//!   command); each event is one line on stdout in the stable format documented in
//!   [`script`], so the program can be driven by scripts and tests.
//!
//! [`command`] parses slash commands; both front ends share it.

pub mod command;
pub mod script;
pub mod terminal;

use std::borrow::Cow;
use std::net::SocketAddr;

use proto::message::{AccountInfo, OnlineUser, RoomInfo, RoomMember};
use proto::{Fingerprint, PublicKey};

pub use crate::chat::Path;

/// What the user did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line: a message, or a slash command.
    Line(String),
    /// Ctrl-C: end the current chat, or quit when there is none.
    Interrupt,
    /// End of input (Ctrl-D, stdin closed): end every chat and quit.
    Eof,
}

/// Text from another peer (a message, a close reason), made safe to print on one line:
/// control characters other than tab (line breaks, terminal escapes) are shown escaped
/// (`\n`, `\u{1b}`), so a peer can neither forge lines of the scripted output nor drive
/// the terminal. Everything else, spaces and Unicode included, is left unchanged.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\t';
    if !text.contains(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Which way a chat was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outgoing,
    Incoming,
}

/// Everything the app reports to the user.
#[derive(Debug, Clone)]
pub enum Note {
    LoggedIn {
        user: String,
        directory: SocketAddr,
        directory_fingerprint: Fingerprint,
        first_contact: bool,
    },
    Listening {
        addr: SocketAddr,
    },
    Connecting {
        peer: String,
    },
    Connected {
        peer: String,
        key: PublicKey,
        direction: Direction,
        /// Whether this chat became the current one (else it waits for `/switch`).
        current: bool,
        /// Opened to carry room or quick messages, not as a chat (not announced on a
        /// terminal).
        background: bool,
        /// Direct, or relayed through the directory.
        path: Path,
    },
    Switched {
        peer: String,
    },
    Message {
        peer: String,
        id: u64,
        text: String,
    },
    Sent {
        peer: String,
        id: u64,
    },
    Delivered {
        peer: String,
        id: u64,
    },
    Ended {
        peer: String,
        reason: String,
        clean: bool,
        /// Messages of ours that were never acknowledged: id and text.
        undelivered: Vec<(u64, String)>,
    },
    ConnectFailed {
        peer: String,
        reason: String,
    },
    /// Someone tried to call and was refused (impersonation, changed key...).
    IncomingRefused {
        peer: Option<String>,
        reason: String,
    },
    Who {
        users: Vec<OnlineUser>,
    },
    Fingerprint {
        user: String,
        key: PublicKey,
        /// The other user, their pinned key and the safety number, when asked about one.
        peer: Option<(String, PublicKey, String)>,
    },
    /// We joined a room (or made it the current one again).
    RoomJoined {
        room: String,
        members: Vec<RoomMember>,
    },
    RoomLeft {
        room: String,
    },
    /// Someone else joined or left a room we are in.
    RoomChanged {
        room: String,
        user: String,
        joined: bool,
    },
    /// A room message; `missed` counts the sender's earlier room messages that never
    /// reached us (we were away).
    RoomMessage {
        room: String,
        peer: String,
        seq: u64,
        text: String,
        missed: u64,
    },
    Rooms {
        rooms: Vec<RoomInfo>,
    },
    Members {
        room: String,
        members: Vec<RoomMember>,
    },
    /// A contact or room-mate came online or went offline.
    Presence {
        user: String,
        online: bool,
    },
    /// A message that could not be delivered (the peer could not be reached).
    Undelivered {
        peer: String,
        text: String,
        reason: String,
    },
    /// Every account, as an administrator's `/listusers` shows it.
    Accounts {
        users: Vec<AccountInfo>,
    },
    /// A message for a user who is offline, sealed and queued at the directory (mail
    /// `mail_id`); delivered when they log in.
    Queued {
        peer: String,
        mail_id: u64,
        text: String,
    },
    /// What became of queued mail: delivered to `peer`, or expired undelivered.
    MailReceipt {
        peer: String,
        mail_id: u64,
        delivered: bool,
    },
    /// A message that waited at the directory while we were offline.
    OfflineMessage {
        peer: String,
        /// The sender's clock, milliseconds since the Unix epoch.
        sent_at_ms: u64,
        text: String,
    },
    /// A conversation's history (`peer history NAME`), oldest first.
    History {
        peer: String,
        entries: Vec<crate::history::Entry>,
        /// Records that could not be opened (damaged) and were skipped.
        damaged: usize,
    },
    Info(String),
    Warning(String),
    Error(String),
    /// Incoming connections refused since the last refusal shown (a flood is summarised
    /// instead of shown one line each): how many, over how many seconds, per reason.
    IncomingRefusals {
        count: u64,
        secs: u64,
        by_reason: Vec<(String, u64)>,
    },
    /// A key for `peer` that is not pinned: the directory's key at `/trust NAME` (then
    /// `asking`: the next line answers, `yes` pins it), or a changed key seen when a chat
    /// was refused, shown by `/fingerprint NAME` beside the pinned one.
    PendingKey {
        peer: String,
        /// The key pinned now, if any.
        pinned: Option<PublicKey>,
        /// The key not pinned (yet).
        pending: PublicKey,
        /// The safety number we would share with `peer` under the pending key.
        safety: String,
        asking: bool,
    },
}

/// `2026-11-24 00:17:31 UTC` for a time in milliseconds since the Unix epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Where notes go.
pub trait Output: Send + Sync {
    /// Shows one note.
    fn show(&self, note: &Note);
    /// Something deserves the user's attention (the terminal rings its bell).
    fn alert(&self) {}
    /// The app has dealt with the last input: read the next line, showing `prompt`
    /// (the terminal reads one line at a time; the scripted front end ignores this).
    fn ready(&self, _prompt: &str) {}
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn utc_formats_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1_709_251_199_000), "2024-02-29 23:59:59 UTC");
        assert_eq!(super::utc(1_795_479_451_000), "2026-11-24 00:17:31 UTC");
    }

    #[test]
    fn printable_escapes_only_control_characters() {
        let plain = "  Grüße — 你好 🙂\ttab, back\\slash  ";
        assert_eq!(printable(plain), plain);
        assert_eq!(printable("a\nb\r\x1b[2Kc"), "a\\nb\\r\\u{1b}[2Kc");
    }
}
