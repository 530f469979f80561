//! Rooms and presence, as the app sees them.
//!
//! The directory keeps who is in which room and tells members who joins and leaves;
//! the messages themselves go from the sender to every other online member, each over
//! the end-to-end session with that member (opened in the background when needed), and
//! never through the directory. Each sender numbers its messages per room, so a member
//! who was away learns how many of a sender's messages it missed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use proto::message::{RoomMember, RoomTag};
use proto::names::{RoomName, UserName};

use super::App;
use crate::alerts::{Alert, mentions};
use crate::profile::PresenceScope;
use crate::ui::Note;

/// What we know of one room we are in.
#[derive(Debug, Default)]
pub(super) struct RoomState {
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
pub(super) struct Marks {
    pub seen: HashMap<(String, String), u64>,
    pub sent: HashMap<String, u64>,
}

impl Marks {
    /// Loads the marks (a missing or unreadable file means none).
    pub fn load(profile: &Path) -> Self {
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
    pub fn save(
        &mut self,
        profile: &Path,
        rooms: &BTreeMap<String, RoomState>,
    ) -> std::io::Result<()> {
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
        crate::pins::write_private(&profile.join(MARKS_FILE), text.as_bytes())
    }
}

/// How long a room request may wait for the directory.
const ROOM_TIMEOUT: Duration = Duration::from_secs(10);

impl App {
    /// `/join ROOM`: joins (or makes current) a room.
    pub(super) async fn join(&mut self, room: String) {
        if let Some(state) = self.rooms.get(&room) {
            let members = state.listed();
            self.room = Some(room.clone());
            self.current = None;
            self.show(Note::RoomJoined { room, members });
            return;
        }
        match tokio::time::timeout(ROOM_TIMEOUT, self.link.join_room(&room)).await {
            Ok(Ok(members)) => {
                let mut state = RoomState::from_members(&members);
                state.seq = self.marks.sent.get(&room).copied().unwrap_or(0);
                self.rooms.insert(room.clone(), state);
                self.room = Some(room.clone());
                self.current = None;
                self.show(Note::RoomJoined { room, members });
            }
            Ok(Err(e)) => self.show(Note::Error(format!("cannot join {room}: {e}"))),
            Err(_) => self.show(Note::Error("the directory did not answer".into())),
        }
    }

    /// `/leave [ROOM]`: leaves the current room (or the one named).
    pub(super) async fn leave(&mut self, room: Option<String>) {
        let Some(room) = room.or_else(|| self.room.clone()) else {
            self.show(Note::Error("no room to leave: /leave ROOM".into()));
            return;
        };
        match tokio::time::timeout(ROOM_TIMEOUT, self.link.leave_room(&room)).await {
            Ok(Ok(_)) => {
                self.rooms.remove(&room);
                if self.room.as_deref() == Some(room.as_str()) {
                    self.room = None;
                }
                self.marks.seen.retain(|(r, _), _| r != &room);
                self.marks.sent.remove(&room);
                self.save_marks();
                self.show(Note::RoomLeft { room });
            }
            Ok(Err(e)) => self.show(Note::Error(format!("cannot leave {room}: {e}"))),
            Err(_) => self.show(Note::Error("the directory did not answer".into())),
        }
    }

    /// `/rooms`.
    pub(super) async fn list_rooms(&mut self) {
        match tokio::time::timeout(ROOM_TIMEOUT, self.link.rooms()).await {
            Ok(Ok(rooms)) => self.show(Note::Rooms { rooms }),
            Ok(Err(e)) => self.show(Note::Error(e.to_string())),
            Err(_) => self.show(Note::Error("the directory did not answer".into())),
        }
    }

    /// `/members [ROOM]`.
    pub(super) fn members(&mut self, room: Option<String>) {
        let Some(room) = room.or_else(|| self.room.clone()) else {
            self.show(Note::Error("which room? /members ROOM".into()));
            return;
        };
        match self.rooms.get(&room) {
            Some(state) => {
                let members = state.listed();
                self.show(Note::Members { room, members });
            }
            None => self.show(Note::Error(format!("you are not in {room}: /join {room}"))),
        }
    }

    /// Sends one line to every other online member of `room`.
    pub(super) async fn send_room(&mut self, room: &str, text: String) {
        // Only rooms the directory let us join are in `rooms`: their names are valid.
        let (Some(state), Ok(room_name)) = (self.rooms.get_mut(room), RoomName::parse(room)) else {
            return;
        };
        state.seq += 1;
        let tag = RoomTag {
            room: room_name,
            seq: state.seq,
        };
        let online: Vec<UserName> = state
            .members
            .iter()
            .filter(|(user, online)| **online && **user != self.me)
            .map(|(user, _)| user.clone())
            .collect();
        if online.is_empty() {
            self.show(Note::Info(format!("nobody else in {room} is online")));
        }
        for member in online {
            self.deliver(&member, text.clone(), Some(tag.clone())).await;
        }
    }

    /// A room message arrived from `peer`.
    pub(super) fn room_message(&mut self, peer: &str, tag: RoomTag, text: String) {
        let Some(state) = self.rooms.get_mut(tag.room.as_str()) else {
            tracing::debug!(room = %tag.room, %peer, "room message for a room we are not in; ignored");
            return;
        };
        if !state.members.contains_key(peer) {
            tracing::debug!(room = %tag.room, %peer, "room message from a non-member; ignored");
            return;
        }
        let key = (tag.room.to_string(), peer.to_string());
        let missed = match self.marks.seen.insert(key, tag.seq) {
            Some(last) if tag.seq > last => tag.seq - last - 1,
            _ => 0,
        };
        if mentions(&text, &self.me) {
            self.alert(Alert::Mention, peer);
        }
        self.show(Note::RoomMessage {
            room: tag.room.into_string(),
            peer: peer.to_string(),
            seq: tag.seq,
            text,
            missed,
        });
    }

    /// Someone joined or left a room we are in.
    pub(super) fn room_changed(&mut self, room: RoomName, user: UserName, joined: bool) {
        let Some(state) = self.rooms.get_mut(room.as_str()) else {
            return;
        };
        if joined {
            state.members.insert(user.clone(), true);
        } else {
            state.members.remove(&user);
            self.marks
                .seen
                .remove(&(room.to_string(), user.to_string()));
        }
        self.show(Note::RoomChanged {
            room: room.into_string(),
            user: user.into_string(),
            joined,
        });
    }

    /// A contact or room-mate came online or went offline.
    pub(super) fn presence(&mut self, user: UserName, online: bool) {
        for state in self.rooms.values_mut() {
            if let Some(flag) = state.members.get_mut(&user) {
                *flag = online;
            }
        }
        self.alert(Alert::Presence, &user);
        self.show(Note::Presence {
            user: user.into_string(),
            online,
        });
    }

    /// Saves the room marks in the profile (failure is only worth a warning).
    pub(super) fn save_marks(&mut self) {
        if let Err(e) = self.marks.save(&self.profile_dir, &self.rooms) {
            tracing::warn!(error = %e, "could not save room marks");
        }
    }

    /// Joins the rooms the profile lists under `auto_join`.
    pub(super) async fn auto_join(&mut self) {
        for room in self.auto_join.clone() {
            self.join(room).await;
        }
    }

    /// Tells the directory whose presence we want, per the profile's `presence` scope.
    pub(super) async fn watch_contacts(&mut self) {
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
}
