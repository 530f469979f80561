//! The scripted front end, used when stdin or stdout is not a terminal.
//!
//! Input: each stdin line is a message to the current chat, or a slash command (a line
//! starting with `//` sends a literal `/`). End of stdin ends every chat and exits 0.
//!
//! Output: one line per event on stdout, `EVENT key=value ...`, where a free-text field
//! (`text=`, `reason=`) always comes last and runs to the end of the line unchanged.
//! This format is stable; scripts and tests rely on it:
//!
//! ```text
//! logged-in user=ali directory=127.0.0.1:8888 fingerprint=3F2A91C0...
//! listening addr=127.0.0.1:65000
//! connecting peer=bianca
//! connected peer=bianca key=3F2A91C077DE0A41 direction=outgoing current=yes
//! switched peer=bianca
//! msg from=bianca id=1 text=I am fine, how about you?
//! sent to=bianca id=1
//! delivered to=bianca id=1
//! ended peer=bianca clean=yes reason=closed by peer
//! undelivered to=bianca id=3 text=are you there?
//! connect-failed peer=bianca reason=bianca is not online
//! incoming-refused peer=mallory reason=...
//! online user=ali secs=42
//! who count=1
//! fingerprint user=ali key=3F2A... peer=bianca peer-key=91C0... safety=12345 67890 ...
//! info text=...
//! warning text=...
//! error text=...
//! ```

use std::io::Write;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use super::{Direction, Input, Note, Output};

/// Writes notes to stdout in the scripted format.
pub struct ScriptOutput;

fn compact(s: String) -> String {
    s.replace(' ', "")
}

/// Renders a note as its one-line (or, for lists, several-line) scripted form.
pub fn render(note: &Note) -> String {
    match note {
        Note::LoggedIn {
            user,
            directory,
            directory_fingerprint,
            ..
        } => format!(
            "logged-in user={user} directory={directory} fingerprint={}",
            compact(directory_fingerprint.to_string())
        ),
        Note::Listening { addr } => format!("listening addr={addr}"),
        Note::Connecting { peer } => format!("connecting peer={peer}"),
        Note::Connected {
            peer,
            key,
            direction,
            current,
        } => format!(
            "connected peer={peer} key={} direction={} current={}",
            compact(key.fingerprint().short()),
            match direction {
                Direction::Outgoing => "outgoing",
                Direction::Incoming => "incoming",
            },
            if *current { "yes" } else { "no" }
        ),
        Note::Switched { peer } => format!("switched peer={peer}"),
        Note::Message { peer, id, text } => format!("msg from={peer} id={id} text={text}"),
        Note::Sent { peer, id } => format!("sent to={peer} id={id}"),
        Note::Delivered { peer, id } => format!("delivered to={peer} id={id}"),
        Note::Ended {
            peer,
            reason,
            clean,
            undelivered,
        } => {
            let mut out = format!(
                "ended peer={peer} clean={} reason={reason}",
                if *clean { "yes" } else { "no" }
            );
            for (id, text) in undelivered {
                out.push_str(&format!("\nundelivered to={peer} id={id} text={text}"));
            }
            out
        }
        Note::ConnectFailed { peer, reason } => {
            format!("connect-failed peer={peer} reason={reason}")
        }
        Note::IncomingRefused { peer, reason } => format!(
            "incoming-refused peer={} reason={reason}",
            peer.as_deref().unwrap_or("?")
        ),
        Note::Who { users } => {
            let mut out = String::new();
            for u in users {
                out.push_str(&format!("online user={} secs={}\n", u.user, u.online_secs));
            }
            out.push_str(&format!("who count={}", users.len()));
            out
        }
        Note::Fingerprint { user, key, peer } => {
            let mut out = format!(
                "fingerprint user={user} key={}",
                compact(key.fingerprint().to_string())
            );
            if let Some((name, their, safety)) = peer {
                out.push_str(&format!(
                    " peer={name} peer-key={} safety={safety}",
                    compact(their.fingerprint().to_string())
                ));
            }
            out
        }
        Note::Info(text) => format!("info text={text}"),
        Note::Warning(text) => format!("warning text={}", text.replace('\n', " ")),
        Note::Error(text) => format!("error text={}", text.replace('\n', " ")),
    }
}

impl Output for ScriptOutput {
    fn show(&self, note: &Note) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", render(note));
        let _ = out.flush();
    }
}

/// Reads stdin line by line into `tx`; end of stdin becomes [`Input::Eof`].
pub fn read_stdin(tx: mpsc::Sender<Input>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if tx.send(Input::Line(line)).await.is_err() {
                        return;
                    }
                }
                Ok(None) | Err(_) => {
                    let _ = tx.send(Input::Eof).await;
                    return;
                }
            }
        }
    });
}
