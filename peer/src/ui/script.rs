//! The scripted front end, used when stdin or stdout is not a terminal.
//!
//! Input: each stdin line is a message to the current chat, or a slash command (a line
//! starting with `//` sends a literal `/`). End of stdin ends every chat and exits 0.
//! One exception: after `/adduser NAME` (administrators) the *next* line is the new
//! user's password. It is not a message, is not shown and goes only into the request, so
//! no password is ever on a command line; `info text=password for NAME: ...` asks for it.
//! (On a terminal the password is asked twice without echo instead.) Likewise after
//! `/trust NAME` (a `pending-key ... ask=yes` line): the next line answers, `yes` pins
//! the key shown and anything else keeps the pin as it is.
//!
//! Output: one line per event on stdout, `EVENT key=value ...`, where a free-text field
//! (`text=`, `reason=`) always comes last and runs to the end of the line unchanged,
//! except that control characters other than tab arrive escaped (`\n`, `\u{1b}`), and
//! so do bidi controls, zero-width and other invisible formatting characters and line
//! separators (`\u{202e}`, `\u{200b}`, `\u{2028}`; see [`super::printable`]), so another
//! peer's text can never start a line of its own nor look like someone else's. Names
//! (`from=`, `peer=`, `room=`) are valid user and room names: no spaces, no control
//! characters (anything else from the network is refused before it is shown).
//! This format is stable; scripts and tests rely on it. A `connected` line ends with
//! `path=direct` (the peers talk straight to each other) or `path=relayed` (through the
//! directory's relay, which sees only end-to-end sealed frames). Offline delivery adds: `queued`
//! (a message for an offline user, sealed and stored at the directory as mail `mail`),
//! then `mail-delivered` or `mail-expired` for it later; `mail` (a message that waited
//! for us; `sent` is the sender's clock); and `peer history` prints `history-entry`
//! lines (`dir` is `in`, `out`, `in-offline` or `out-offline`) and a closing `history`:
//!
//! ```text
//! logged-in user=ali directory=127.0.0.1:8888 fingerprint=3F2A91C0...
//! listening addr=127.0.0.1:65000
//! connecting peer=bianca
//! connected peer=bianca key=3F2A91C077DE0A41 direction=outgoing current=yes path=direct
//! connected peer=chloe key=... direction=incoming current=no background=yes path=relayed
//! switched peer=bianca
//! room-joined room=general members=ali,bianca,chloe(off)
//! room-changed room=general user=dora joined=yes
//! room-msg room=general from=bianca seq=4 text=hello everyone
//! missed room=general from=bianca count=2
//! room-left room=general
//! room name=general members=3
//! rooms count=1
//! member room=general user=ali online=yes
//! members room=general count=3
//! presence user=bianca online=no
//! undelivered to=chloe reason=chloe_is_not_online text=see you
//! msg from=bianca id=1 text=I am fine, how about you?
//! sent to=bianca id=1
//! delivered to=bianca id=1
//! ended peer=bianca clean=yes reason=closed by peer
//! undelivered to=bianca id=3 text=are you there?
//! connect-failed peer=bianca reason=bianca is not online
//! incoming-refused peer=mallory reason=...
//! incoming-refusals count=1326 secs=10 reasons=unknown-initiator:1300,busy:26
//! online user=ali secs=42
//! who count=1
//! fingerprint user=ali key=3F2A... peer=bianca peer-key=91C0... safety=12345 67890 ...
//! pending-key peer=bianca pinned=91C0... key=77AB... ask=yes safety=12345 67890 ...
//! account user=bianca admin=no online=yes locked=no failed=0 key=91C077DE0A413F2A
//! account user=carla admin=no online=no locked=admin failed=0 key=-
//! accounts count=2
//! queued to=chloe mail=7 text=see you
//! mail-delivered to=chloe mail=7
//! mail-expired to=chloe mail=7
//! mail from=chloe sent=2026-11-24T00:17:31Z text=sorry I missed you
//! history-entry peer=chloe at=2026-11-24T00:17:31Z dir=out text=see you
//! history peer=chloe count=1 damaged=0
//! info text=...
//! warning text=...
//! error text=...
//! ```

use std::io::Write;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use super::{Direction, Input, Note, Output, printable};

/// Writes notes to stdout in the scripted format.
pub struct ScriptOutput;

fn compact(s: String) -> String {
    s.replace(' ', "")
}

/// `2026-11-24T00:17:31Z`.
fn iso(ms: u64) -> String {
    super::utc(ms)
        .trim_end_matches(" UTC")
        .replacen(' ', "T", 1)
        + "Z"
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `ali,bianca(off)`: members, the offline ones marked.
fn member_list(members: &[proto::message::RoomMember]) -> String {
    members
        .iter()
        .map(|m| {
            if m.online {
                m.user.to_string()
            } else {
                format!("{}(off)", m.user)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
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
            background,
            path,
        } => format!(
            "connected peer={peer} key={} direction={} current={}{} path={}",
            compact(key.fingerprint().short()),
            match direction {
                Direction::Outgoing => "outgoing",
                Direction::Incoming => "incoming",
            },
            yes(*current),
            if *background { " background=yes" } else { "" },
            path.name()
        ),
        Note::RoomJoined { room, members } => {
            format!("room-joined room={room} members={}", member_list(members))
        }
        Note::RoomLeft { room } => format!("room-left room={room}"),
        Note::RoomChanged { room, user, joined } => {
            format!(
                "room-changed room={room} user={user} joined={}",
                yes(*joined)
            )
        }
        Note::RoomMessage {
            room,
            peer,
            seq,
            text,
            missed,
        } => {
            let mut out = String::new();
            if *missed > 0 {
                out.push_str(&format!("missed room={room} from={peer} count={missed}\n"));
            }
            out.push_str(&format!(
                "room-msg room={room} from={peer} seq={seq} text={}",
                printable(text)
            ));
            out
        }
        Note::Rooms { rooms } => {
            let mut out = String::new();
            for r in rooms {
                out.push_str(&format!("room name={} members={}\n", r.room, r.members));
            }
            out.push_str(&format!("rooms count={}", rooms.len()));
            out
        }
        Note::Members { room, members } => {
            let mut out = String::new();
            for m in members {
                out.push_str(&format!(
                    "member room={room} user={} online={}\n",
                    m.user,
                    yes(m.online)
                ));
            }
            out.push_str(&format!("members room={room} count={}", members.len()));
            out
        }
        Note::Presence { user, online } => format!("presence user={user} online={}", yes(*online)),
        Note::Undelivered { peer, text, reason } => format!(
            "undelivered to={peer} reason={} text={}",
            reason.replace(' ', "_"),
            printable(text)
        ),
        Note::Switched { peer } => format!("switched peer={peer}"),
        Note::Message { peer, id, text } => {
            format!("msg from={peer} id={id} text={}", printable(text))
        }
        Note::Sent { peer, id } => format!("sent to={peer} id={id}"),
        Note::Delivered { peer, id } => format!("delivered to={peer} id={id}"),
        Note::Ended {
            peer,
            reason,
            clean,
            undelivered,
        } => {
            let mut out = format!(
                "ended peer={peer} clean={} reason={}",
                if *clean { "yes" } else { "no" },
                printable(reason)
            );
            for (id, text) in undelivered {
                out.push_str(&format!("\nundelivered to={peer} id={id} text={text}"));
            }
            out
        }
        Note::ConnectFailed { peer, reason } => {
            format!("connect-failed peer={peer} reason={}", printable(reason))
        }
        Note::IncomingRefused { peer, reason } => format!(
            "incoming-refused peer={} reason={}",
            peer.as_deref().unwrap_or("?"),
            printable(reason)
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
        Note::Accounts { users } => {
            let mut out = String::new();
            for u in users {
                out.push_str(&format!(
                    "account user={} admin={} online={} locked={} failed={} key={}\n",
                    u.name,
                    yes(u.admin),
                    yes(u.online),
                    match (u.locked_by_admin, u.locked_for_secs) {
                        (true, _) => "admin".to_string(),
                        (false, Some(secs)) => format!("{secs}s"),
                        (false, None) => "no".to_string(),
                    },
                    u.failed_attempts,
                    u.identity
                        .map(|k| compact(k.fingerprint().short()))
                        .unwrap_or_else(|| "-".into())
                ));
            }
            out.push_str(&format!("accounts count={}", users.len()));
            out
        }
        Note::Queued {
            peer,
            mail_id,
            text,
        } => format!("queued to={peer} mail={mail_id} text={}", printable(text)),
        Note::MailReceipt {
            peer,
            mail_id,
            delivered,
        } => format!(
            "mail-{} to={peer} mail={mail_id}",
            if *delivered { "delivered" } else { "expired" }
        ),
        Note::OfflineMessage {
            peer,
            sent_at_ms,
            text,
        } => format!(
            "mail from={peer} sent={} text={}",
            iso(*sent_at_ms),
            printable(text)
        ),
        Note::History {
            peer,
            entries,
            damaged,
        } => {
            let mut out = String::new();
            for e in entries {
                out.push_str(&format!(
                    "history-entry peer={peer} at={} dir={} text={}\n",
                    iso(e.at_ms),
                    match e.direction {
                        crate::history::Direction::In => "in",
                        crate::history::Direction::Out => "out",
                        crate::history::Direction::InOffline => "in-offline",
                        crate::history::Direction::OutOffline => "out-offline",
                    },
                    printable(&e.text)
                ));
            }
            out.push_str(&format!(
                "history peer={peer} count={} damaged={damaged}",
                entries.len()
            ));
            out
        }
        Note::Info(text) => format!("info text={text}"),
        Note::Warning(text) => format!("warning text={}", text.replace('\n', " ")),
        Note::Error(text) => format!("error text={}", text.replace('\n', " ")),
        Note::PendingKey {
            peer,
            pinned,
            pending,
            safety,
            asking,
        } => format!(
            "pending-key peer={peer} pinned={} key={} ask={} safety={safety}",
            pinned
                .map(|k| compact(k.fingerprint().to_string()))
                .unwrap_or_else(|| "-".into()),
            compact(pending.fingerprint().to_string()),
            yes(*asking)
        ),
        Note::IncomingRefusals {
            count,
            secs,
            by_reason,
        } => {
            let reasons: Vec<String> = by_reason
                .iter()
                .map(|(why, n)| format!("{}:{n}", why.replace(' ', "-")))
                .collect();
            format!(
                "incoming-refusals count={count} secs={secs} reasons={}",
                reasons.join(",")
            )
        }
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

#[cfg(test)]
mod tests {
    use proto::message::AccountInfo;

    use super::*;

    #[test]
    fn accounts_render_one_line_each_then_a_count() {
        let key = proto::Identity::generate().public();
        let account = |name: &str| AccountInfo {
            name: name.parse().unwrap(),
            admin: false,
            online: false,
            locked_by_admin: false,
            locked_for_secs: None,
            failed_attempts: 0,
            identity: None,
            created_at: 0,
        };
        let users = vec![
            AccountInfo {
                admin: true,
                online: true,
                identity: Some(key),
                ..account("ali")
            },
            AccountInfo {
                locked_for_secs: Some(30),
                failed_attempts: 3,
                ..account("bianca")
            },
            AccountInfo {
                locked_by_admin: true,
                ..account("carla")
            },
        ];
        let text = render(&Note::Accounts { users });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "account user=ali admin=yes online=yes locked=no failed=0 key={}",
                compact(key.fingerprint().short())
            )
        );
        assert_eq!(
            lines[1],
            "account user=bianca admin=no online=no locked=30s failed=3 key=-"
        );
        assert_eq!(
            lines[2],
            "account user=carla admin=no online=no locked=admin failed=0 key=-"
        );
        assert_eq!(lines[3], "accounts count=3");
    }
}
