//! Rooms: who is in which room, and the requests that change it.
//!
//! Membership is durable (the store's `room_members`, so it survives restarts and goes
//! with a deleted account) and cached here in memory, so that presence fan-out at every
//! login needs no storage query. The directory only knows *who* is in a room: room
//! messages go from each sender to each member over their end-to-end peer sessions and
//! never pass through here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use proto::message::{ErrorCode, Event, Reply, RoomInfo, RoomMember};
use proto::names::{RoomName, UserName};

use crate::audit::AuditEvent;
use crate::clock;
use crate::state::Shared;
use crate::store::{Store, StoreError};

/// Most rooms one user may be in.
pub const MAX_ROOMS_PER_USER: usize = 64;
/// Most members one room may have.
pub const MAX_MEMBERS_PER_ROOM: usize = 1000;

#[derive(Debug, Default)]
struct Maps {
    by_room: BTreeMap<RoomName, BTreeSet<UserName>>,
    by_user: BTreeMap<UserName, BTreeSet<RoomName>>,
}

/// The in-memory copy of room membership.
#[derive(Debug, Default)]
pub struct RoomIndex {
    maps: Mutex<Maps>,
}

impl RoomIndex {
    /// Loads every membership from the store.
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let index = Self::default();
        for (room, _) in store.rooms().await? {
            let Ok(room_name) = RoomName::parse(&room) else {
                tracing::warn!(
                    room = room.escape_debug().to_string(),
                    "skipping a stored room with an invalid name"
                );
                continue;
            };
            for user in store.room_members(&room).await? {
                match UserName::parse(&user) {
                    Ok(user) => index.insert(&room_name, &user),
                    Err(_) => tracing::warn!(
                        user = user.escape_debug().to_string(),
                        "skipping a stored room member with an invalid name"
                    ),
                }
            }
        }
        Ok(index)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, room: &RoomName, user: &UserName) {
        let mut m = self.lock();
        m.by_room
            .entry(room.clone())
            .or_default()
            .insert(user.clone());
        m.by_user
            .entry(user.clone())
            .or_default()
            .insert(room.clone());
    }

    pub(crate) fn remove(&self, room: &str, user: &str) {
        let mut m = self.lock();
        if let Some(members) = m.by_room.get_mut(room) {
            members.remove(user);
            if members.is_empty() {
                m.by_room.remove(room);
            }
        }
        if let Some(rooms) = m.by_user.get_mut(user) {
            rooms.remove(room);
            if rooms.is_empty() {
                m.by_user.remove(user);
            }
        }
    }

    /// The rooms `user` is in, sorted.
    pub fn rooms_of_user(&self, user: &str) -> Vec<RoomName> {
        self.lock()
            .by_user
            .get(user)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Forgets every membership of `user` (their account is gone); returns the rooms.
    pub fn remove_user(&self, user: &str) -> Vec<RoomName> {
        let rooms = self.rooms_of_user(user);
        for room in &rooms {
            self.remove(room, user);
        }
        rooms
    }

    /// Members of `room`, sorted.
    pub fn members(&self, room: &str) -> Vec<UserName> {
        self.lock()
            .by_room
            .get(room)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Everyone who shares at least one room with `user` (not `user`).
    pub fn room_mates(&self, user: &str) -> BTreeSet<UserName> {
        let m = self.lock();
        let mut mates = BTreeSet::new();
        for room in m.by_user.get(user).into_iter().flatten() {
            mates.extend(m.by_room.get(room).into_iter().flatten().cloned());
        }
        mates.remove(user);
        mates
    }

    fn rooms_of(&self, user: &str) -> usize {
        self.lock().by_user.get(user).map_or(0, BTreeSet::len)
    }

    /// Every room and its size.
    pub fn list(&self) -> Vec<RoomInfo> {
        self.lock()
            .by_room
            .iter()
            .map(|(room, m)| RoomInfo {
                room: room.clone(),
                members: m.len() as u32,
            })
            .collect()
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply::Error {
        code,
        message: message.into(),
    }
}

fn members_reply(shared: &Shared, room: &RoomName) -> Reply {
    let members = shared
        .rooms
        .members(room)
        .into_iter()
        .map(|user| RoomMember {
            online: shared.presence.get(&user).is_some(),
            user,
        })
        .collect();
    Reply::RoomMembers {
        room: room.clone(),
        members,
    }
}

/// `JoinRoom`: records the membership and tells the other members.
pub async fn join(shared: &Shared, user: Option<&UserName>, room: &RoomName) -> Reply {
    let Some(user) = user else {
        return error(ErrorCode::NotLoggedIn, "log in first");
    };
    let already = shared.rooms.members(room).iter().any(|m| m == user);
    if !already {
        if shared.rooms.rooms_of(user) >= MAX_ROOMS_PER_USER {
            return error(
                ErrorCode::RateLimited,
                format!("you are in {MAX_ROOMS_PER_USER} rooms already; leave one first"),
            );
        }
        if shared.rooms.members(room).len() >= MAX_MEMBERS_PER_ROOM {
            return error(ErrorCode::RateLimited, format!("room {room} is full"));
        }
        if let Err(e) = shared.store.join_room(room, user, clock::unix_now()).await {
            tracing::error!("cannot store room membership: {e}");
            return error(ErrorCode::Internal, "storage error; try again");
        }
        shared.rooms.insert(room, user);
        shared.audit.record(AuditEvent::Room {
            user: user.to_string(),
            room: room.to_string(),
            joined: true,
        });
        let others: Vec<UserName> = shared
            .rooms
            .members(room)
            .into_iter()
            .filter(|m| m != user)
            .collect();
        shared.presence.notify(
            &others,
            Event::RoomChanged {
                room: room.clone(),
                user: user.clone(),
                joined: true,
            },
        );
    }
    members_reply(shared, room)
}

/// `LeaveRoom`: removes the membership and tells the remaining members.
pub async fn leave(shared: &Shared, user: Option<&UserName>, room: &RoomName) -> Reply {
    let Some(user) = user else {
        return error(ErrorCode::NotLoggedIn, "log in first");
    };
    match shared.store.leave_room(room, user).await {
        Ok(true) => {}
        Ok(false) => return members_reply(shared, room),
        Err(e) => {
            tracing::error!("cannot store room membership: {e}");
            return error(ErrorCode::Internal, "storage error; try again");
        }
    }
    shared.rooms.remove(room, user);
    shared.audit.record(AuditEvent::Room {
        user: user.to_string(),
        room: room.to_string(),
        joined: false,
    });
    let remaining = shared.rooms.members(room);
    shared.presence.notify(
        &remaining,
        Event::RoomChanged {
            room: room.clone(),
            user: user.clone(),
            joined: false,
        },
    );
    members_reply(shared, room)
}

/// Takes a locked `user` out of every room, as if they had left each (stored, audited,
/// the remaining members told with `RoomChanged`, so their peers stop sending them room
/// messages). Returns the rooms left; a room whose membership could not be stored is
/// logged and kept.
pub async fn leave_all(shared: &Shared, user: &UserName) -> Vec<RoomName> {
    let mut left = Vec::new();
    for room in shared.rooms.rooms_of_user(user) {
        match leave(shared, Some(user), &room).await {
            Reply::Error { message, .. } => {
                tracing::error!(%user, %room, "could not take a locked user out of a room: {message}")
            }
            _ => left.push(room),
        }
    }
    left
}

/// `ListRooms`.
pub fn list(shared: &Shared, user: Option<&UserName>) -> Reply {
    if user.is_none() {
        return error(ErrorCode::NotLoggedIn, "log in first");
    }
    Reply::Rooms {
        rooms: shared.rooms.list(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_tracks_members_and_mates() {
        let idx = RoomIndex::default();
        idx.insert(&"general".parse().unwrap(), &"ali".parse().unwrap());
        idx.insert(&"general".parse().unwrap(), &"bianca".parse().unwrap());
        idx.insert(&"books".parse().unwrap(), &"bianca".parse().unwrap());
        idx.insert(&"books".parse().unwrap(), &"chloe".parse().unwrap());
        assert_eq!(idx.members("general"), ["ali", "bianca"]);
        let mates: Vec<_> = idx.room_mates("bianca").into_iter().collect();
        assert_eq!(mates, ["ali", "chloe"]);
        assert!(idx.room_mates("ali").contains("bianca"));
        idx.remove("general", "ali");
        assert!(idx.room_mates("ali").is_empty());
        idx.remove_user("bianca");
        assert_eq!(idx.members("books"), ["chloe"]);
        assert_eq!(idx.list().len(), 1);
    }
}
