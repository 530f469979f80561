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

/// Text from another peer (a message, a close reason), made safe to print on one line.
/// This is the one place where hostile text is made printable; both front ends call it.
///
/// Shown escaped (`\n`, `\u{1b}`, `\u{202e}`):
/// - control characters other than tab (line breaks, terminal escapes, C1 controls), so a
///   peer can neither forge lines of the scripted output nor drive the terminal;
/// - line and paragraph separators (U+2028, U+2029);
/// - invisible formatting characters ([`is_invisible`]): bidi embeddings, overrides and
///   isolates (U+202A–U+202E, U+2066–U+2069), which could reorder what is shown and make
///   a message look as if someone else wrote it; zero-width spaces and joiners
///   (U+200B–U+200F, U+2060–U+2064, U+FEFF) and the rest of Unicode's Cf category, which
///   hide text or make two different strings look the same.
///
/// Everything else, spaces and visible Unicode included, is left unchanged. Padding a
/// message to the screen's edge is dealt with where lines are laid out
/// ([`screen_lines`]).
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| (c.is_control() && c != '\t') || is_invisible(c);
    if !text.contains(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            escape(c, &mut out);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// How [`printable`] writes one unsafe character: the short escapes for the common
/// controls (`\n`, `\r`), `\u{...}` for the rest.
fn escape(c: char, out: &mut String) {
    match c {
        '\n' | '\r' | '\0' => out.extend(c.escape_debug()),
        _ => out.extend(c.escape_unicode()),
    }
}

/// Whether `c` is invisible when printed yet changes what is shown: Unicode's format
/// characters (category Cf: bidi controls, zero-width characters, the byte order mark,
/// tags, ...) and the line and paragraph separators (U+2028, U+2029).
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// The most columns `c` may take on a terminal: a tab 8, printable ASCII 1, anything
/// else 2 (wide characters; an over-estimate for the rest, which only wraps earlier).
fn columns(c: char) -> usize {
    match c {
        '\t' => 8,
        ' '..='~' => 1,
        _ => 2,
    }
}

/// Marks the start of a screen line that continues the line above it.
pub const CONTINUATION: &str = "  \u{2502} ";

/// Lays out rendered text (already [`printable`]) as lines of at most `width` columns,
/// so that the terminal never wraps a line by itself: every line after the first of a
/// wrapped line starts with [`CONTINUATION`]. A peer who pads a message to the screen's
/// edge (or fills it with any text) therefore cannot make the rest of it look like a new
/// line from someone else: what the terminal shows at the start of a line is always ours.
///
/// Widths are counted conservatively (a tab as 8 columns, anything outside ASCII as 2),
/// so a line may wrap a little early, never late.
pub fn screen_lines(text: &str, width: usize) -> String {
    let marker: usize = CONTINUATION.chars().map(columns).sum();
    // Room for the marker and at least a few characters of text.
    let width = width.max(marker + 8);
    let mut out = String::with_capacity(text.len() + 16);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut used = 0;
        for c in line.chars() {
            let w = columns(c);
            if used + w > width {
                out.push('\n');
                out.push_str(CONTINUATION);
                used = marker;
            }
            out.push(c);
            used += w;
        }
    }
    out
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

    #[test]
    fn printable_escapes_bidi_and_invisible_characters() {
        // A right-to-left override makes "ali: hi" read as if reversed text were ours.
        assert_eq!(printable("x\u{202e}ih :ila"), "x\\u{202e}ih :ila");
        for (hostile, escaped) in [
            ("\u{202a}", "\\u{202a}"),
            ("\u{202d}", "\\u{202d}"),
            ("\u{2066}", "\\u{2066}"),
            ("\u{2069}", "\\u{2069}"),
            ("\u{200b}", "\\u{200b}"),
            ("\u{200f}", "\\u{200f}"),
            ("\u{2028}", "\\u{2028}"),
            ("\u{2029}", "\\u{2029}"),
            ("\u{feff}", "\\u{feff}"),
            ("\u{ad}", "\\u{ad}"),
            ("\u{e0041}", "\\u{e0041}"),
            ("\u{85}", "\\u{85}"),
            ("\u{7f}", "\\u{7f}"),
        ] {
            assert_eq!(printable(&format!("a{hostile}b")), format!("a{escaped}b"));
        }
    }

    #[test]
    fn padding_to_the_edge_cannot_start_a_line() {
        // The message pads to an 80-column screen's edge, then "writes" a line from bob.
        let forged = format!("ali: hi{}bob: send the money to mallory", " ".repeat(73));
        let shown = super::screen_lines(&printable(&forged), 80);
        let lines: Vec<&str> = shown.split('\n').collect();
        assert!(lines.len() > 1, "{shown:?}");
        assert!(lines[0].starts_with("ali: "));
        for line in &lines[1..] {
            assert!(line.starts_with(super::CONTINUATION), "{line:?}");
            assert!(!line.starts_with("bob:"));
        }
        // No screen line is wider than the screen, so the terminal never wraps.
        for width in [20, 40, 80, 132] {
            let shown = super::screen_lines(&format!("ali: {}", "é\tx你🙂 ".repeat(50)), width);
            for line in shown.split('\n') {
                let cols: usize = line.chars().map(super::columns).sum();
                assert!(cols <= width, "{line:?}");
            }
        }
        // Our own line breaks stay lines of their own; short lines are untouched.
        assert_eq!(super::screen_lines("a\nb", 80), "a\nb");
    }
}
