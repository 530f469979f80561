//! Rooms, as the app sees them: the rooms we are in, their members and who of them is
//! online, and the message numbers ([`Marks`]); each request or event returns the
//! [`Note`]s it means for the user.
//!
//! The directory keeps who is in which room and tells members who joins and leaves;
//! the messages themselves go from the sender to every other online member, each over
//! the end-to-end session with that member (opened in the background when needed), and
//! never through the directory. Each sender numbers its messages per room, so a member
//! who was away learns how many of a sender's messages it missed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proto::message::{RoomMember, RoomTag};
use proto::names::{RoomName, UserName};

use crate::link::Link;
use crate::ui::Note;

/// What we know of one room we are in.
#[derive(Debug, Default)]
struct RoomState {
    /// Members and whether they are online.
    members: BTreeMap<UserName, bool>,
    /// Our last room message's number in this room.
    seq: u64,
}

impl RoomState {
    fn from_members(members: &[RoomMember]) -> Self {
        Self {
            members: members.iter().map(|m| (m.user.clone(), m.online)).collect(),
            seq: 0,
        }
    }

    fn listed(&self) -> Vec<RoomMember> {
        self.members
            .iter()
            .map(|(user, online)| RoomMember {
                user: user.clone(),
                online: *online,
            })
            .collect()
    }
}

/// File in the profile that keeps room message numbers across restarts.
const MARKS_FILE: &str = "room_marks";

/// Room message numbers that must outlive the app: the last number seen from each
/// sender in each room, and our own last number in each room. Kept in the profile as
/// lines `seen ROOM SENDER N` and `sent ROOM N`, written when leaving a room and on exit.
#[derive(Debug, Default)]
struct Marks {
    seen: HashMap<(String, String), u64>,
    sent: HashMap<String, u64>,
}

impl Marks {
    /// Loads the marks (a missing or unreadable file means none).
    fn load(profile: &Path) -> Self {
        let mut marks = Self::default();
        let Ok(text) = std::fs::read_to_string(profile.join(MARKS_FILE)) else {
            return marks;
        };
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["seen", room, sender, n] => {
                    if let Ok(n) = n.parse() {
                        marks.seen.insert((room.to_string(), sender.to_string()), n);
                    }
                }
                ["sent", room, n] => {
                    if let Ok(n) = n.parse() {
                        marks.sent.insert(room.to_string(), n);
                    }
                }
                _ => {}
            }
        }
        marks
    }

    /// Writes the marks, taking our own numbers from the rooms we are in now.
    fn save(&mut self, profile: &Path, rooms: &BTreeMap<String, RoomState>) -> std::io::Result<()> {
        for (room, state) in rooms {
            self.sent.insert(room.clone(), state.seq);
        }
        let mut text = String::new();
        for ((room, sender), n) in &self.seen {
            text.push_str(&format!("seen {room} {sender} {n}\n"));
        }
        for (room, n) in &self.sent {
            text.push_str(&format!("sent {room} {n}\n"));
        }
        crate::private_file::write_private(&profile.join(MARKS_FILE), text.as_bytes())
    }
}

/// How long a room request may wait for the directory.
const ROOM_TIMEOUT: Duration = Duration::from_secs(10);

/// The rooms we are in.
pub(super) struct Rooms {
    me: UserName,
    link: Arc<Link>,
    joined: BTreeMap<String, RoomState>,
    /// Room message numbers seen and sent (kept in the profile).
    marks: Marks,
    profile: PathBuf,
}

/// A room message to send: its tag, and the members online to send it to.
pub(super) struct RoomPost {
    pub tag: RoomTag,
    pub to: Vec<UserName>,
    /// What the user should know (nobody is there to read it).
    pub note: Option<Note>,
}

/// The note for a room request the directory did not answer in time.
fn directory_silent() -> Note {
    Note::Error("the directory did not answer".into())
}

impl Rooms {
    /// No rooms yet; the marks kept in `profile` are loaded.
    pub fn new(me: UserName, link: Arc<Link>, profile: &Path) -> Self {
        Self {
            me,
            link,
            joined: BTreeMap::new(),
            marks: Marks::load(profile),
            profile: profile.to_path_buf(),
        }
    }

    /// `/join ROOM`: joins a room (or finds it joined). `Ok` means the room is ours to
    /// make current.
    pub async fn join(&mut self, room: &str) -> Result<Note, Note> {
        if let Some(state) = self.joined.get(room) {
            let members = state.listed();
            return Ok(Note::RoomJoined {
                room: room.to_string(),
                members,
            });
        }
        match tokio::time::timeout(ROOM_TIMEOUT, self.link.join_room(room)).await {
            Ok(Ok(members)) => {
                let mut state = RoomState::from_members(&members);
                state.seq = self.marks.sent.get(room).copied().unwrap_or(0);
                self.joined.insert(room.to_string(), state);
                Ok(Note::RoomJoined {
                    room: room.to_string(),
                    members,
                })
            }
            Ok(Err(e)) => Err(Note::Error(format!("cannot join {room}: {e}"))),
            Err(_) => Err(directory_silent()),
        }
    }

    /// `/leave ROOM`. `Ok` means we are out of it.
    pub async fn leave(&mut self, room: &str) -> Result<Note, Note> {
        match tokio::time::timeout(ROOM_TIMEOUT, self.link.leave_room(room)).await {
            Ok(Ok(_)) => {
                self.joined.remove(room);
                self.marks.seen.retain(|(r, _), _| r != room);
                self.marks.sent.remove(room);
                self.save_marks();
                Ok(Note::RoomLeft {
                    room: room.to_string(),
                })
            }
            Ok(Err(e)) => Err(Note::Error(format!("cannot leave {room}: {e}"))),
            Err(_) => Err(directory_silent()),
        }
    }

    /// `/rooms`.
    pub async fn list(&self) -> Note {
        match tokio::time::timeout(ROOM_TIMEOUT, self.link.rooms()).await {
            Ok(Ok(rooms)) => Note::Rooms { rooms },
            Ok(Err(e)) => Note::Error(e.to_string()),
            Err(_) => directory_silent(),
        }
    }

    /// `/members ROOM`.
    pub fn members(&self, room: &str) -> Note {
        match self.joined.get(room) {
            Some(state) => Note::Members {
                room: room.to_string(),
                members: state.listed(),
            },
            None => Note::Error(format!("you are not in {room}: /join {room}")),
        }
    }

    /// Numbers our next message in `room` and says whom to send it to: every other
    /// online member. `None` if we are not in it.
    pub fn post(&mut self, room: &str) -> Option<RoomPost> {
        // Only rooms the directory let us join are in `joined`: their names are valid.
        let (Some(state), Ok(room_name)) = (self.joined.get_mut(room), RoomName::parse(room))
        else {
            return None;
        };
        state.seq += 1;
        let tag = RoomTag {
            room: room_name,
            seq: state.seq,
        };
        let to: Vec<UserName> = state
            .members
            .iter()
            .filter(|(user, online)| **online && **user != self.me)
            .map(|(user, _)| user.clone())
            .collect();
        let note = to
            .is_empty()
            .then(|| Note::Info(format!("nobody else in {room} is online")));
        Some(RoomPost { tag, to, note })
    }

    /// A room message arrived from `peer`: the note to show, unless it is not for us.
    pub fn message(&mut self, peer: &str, tag: RoomTag, text: String) -> Option<Note> {
        let Some(state) = self.joined.get(tag.room.as_str()) else {
            tracing::debug!(room = %tag.room, %peer, "room message for a room we are not in; ignored");
            return None;
        };
        if !state.members.contains_key(peer) {
            tracing::debug!(room = %tag.room, %peer, "room message from a non-member; ignored");
            return None;
        }
        let key = (tag.room.to_string(), peer.to_string());
        let missed = match self.marks.seen.insert(key, tag.seq) {
            Some(last) if tag.seq > last => tag.seq - last - 1,
            _ => 0,
        };
        Some(Note::RoomMessage {
            room: tag.room.into_string(),
            peer: peer.to_string(),
            seq: tag.seq,
            text,
            missed,
        })
    }

    /// Someone joined or left a room: the note, if it is a room we are in.
    pub fn changed(&mut self, room: RoomName, user: UserName, joined: bool) -> Option<Note> {
        let state = self.joined.get_mut(room.as_str())?;
        if joined {
            state.members.insert(user.clone(), true);
        } else {
            state.members.remove(&user);
            self.marks
                .seen
                .remove(&(room.to_string(), user.to_string()));
        }
        Some(Note::RoomChanged {
            room: room.into_string(),
            user: user.into_string(),
            joined,
        })
    }

    /// A contact or room-mate came online or went offline.
    pub fn presence(&mut self, user: UserName, online: bool) -> Note {
        for state in self.joined.values_mut() {
            if let Some(flag) = state.members.get_mut(&user) {
                *flag = online;
            }
        }
        Note::Presence {
            user: user.into_string(),
            online,
        }
    }

    /// Saves the room marks in the profile (failure is only worth a warning).
    pub fn save_marks(&mut self) {
        if let Err(e) = self.marks.save(&self.profile, &self.joined) {
            tracing::warn!(error = %e, "could not save room marks");
        }
    }
}
