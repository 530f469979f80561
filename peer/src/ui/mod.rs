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

use std::net::SocketAddr;

use proto::message::OnlineUser;
use proto::{Fingerprint, PublicKey};

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
    Info(String),
    Warning(String),
    Error(String),
}

/// Where notes go.
pub trait Output: Send + Sync {
    /// Shows one note.
    fn show(&self, note: &Note);
    /// The app has dealt with the last input: read the next line, showing `prompt`
    /// (the terminal reads one line at a time; the scripted front end ignores this).
    fn ready(&self, _prompt: &str) {}
}
