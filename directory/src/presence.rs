//! Who is online: one entry per logged-in user, owned by the connection that logged in.
//!
//! Logging in returns a [`Session`]; dropping it (logout, the connection ending for any
//! reason, even a panic) removes the entry, unless a newer login of the same user has
//! replaced it meanwhile. A new login of a user who is already online replaces the old
//! entry and tells the old connection, through its [`ConnHandle`], to go away.
//!
//! Presence is also who hears about whom: every login and logout is announced
//! ([`Event::Presence`]) to the user's room-mates and to whoever watches them
//! ([`Presence::set_watch`]). Announcements go through each connection's bounded
//! notification queue; a connection too slow to take them is disconnected rather than
//! buffered for.
//!
//! With several instances on one database ([`crate::cluster`]) the table also mirrors
//! the users online elsewhere: lookups, `Who` and announcements see them, logins and
//! logouts here are published to the others, and notifications for remote users are
//! forwarded to their instance.
//!
//! The map is behind a plain mutex: every critical section is a few map operations and
//! non-blocking sends, never an `.await`. Its size is bounded by the number of
//! connections (and each watch list by [`proto::message::MAX_WATCH`]).

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use proto::PublicKey;
use proto::message::{Event, OnlineUser, PeerInfo};
use proto::names::UserName;
use tokio::sync::mpsc;

use crate::cluster::{Cluster, Message};
use crate::relay::forward::RemoteOffers;
use crate::rooms::RoomIndex;

/// How presence reaches the connection task that owns an entry.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// Unique per connection in this process.
    pub id: u64,
    /// Events for the connection to send and act on (it closes after a `ForcedLogout`).
    pub events: mpsc::Sender<Event>,
    /// Notifications the connection passes on to its peer (presence, rooms).
    pub notify: mpsc::Sender<Event>,
}

impl ConnHandle {
    /// Tells the connection to end its session with `reason`. Never waits: if the
    /// connection's (tiny) queue is full it is already being told to go.
    pub fn force_logout(&self, reason: &str) {
        let _ = self.events.try_send(Event::ForcedLogout {
            reason: reason.to_string(),
        });
    }

    /// Queues a notification; a connection whose queue is full is told to go.
    fn notify(&self, event: Event) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.notify.try_send(event) {
            tracing::warn!(
                conn = self.id,
                "peer too slow to take notifications; disconnecting"
            );
            self.force_logout("too slow to read notifications");
        }
    }
}

/// What is known about one online user.
#[derive(Debug, Clone)]
struct Entry {
    info: PeerInfo,
    since: Instant,
    conn: ConnHandle,
    /// Users this one asked to hear about.
    watching: Vec<UserName>,
}

/// A user online on another instance.
#[derive(Debug, Clone)]
struct Remote {
    info: PeerInfo,
    /// When this instance learnt of it.
    since: Instant,
    instance: String,
    conn: u64,
}

/// The online users and who watches whom.
#[derive(Debug, Default)]
struct Table {
    users: HashMap<UserName, Entry>,
    /// Users online on other instances (never also in `users`).
    remote: HashMap<UserName, Remote>,
    /// When a remote user was last seen going offline, so that a presence snapshot read
    /// before that does not bring them back.
    tombstones: HashMap<UserName, Instant>,
    /// Watched user → the users watching them.
    watchers: HashMap<UserName, HashSet<UserName>>,
    /// Users who asked to hear about everyone.
    everyone: HashSet<UserName>,
}

impl Table {
    /// Tells everyone interested that `user` came online or went offline.
    fn announce(&self, rooms: &RoomIndex, user: &UserName, online: bool) {
        let mut audience: HashSet<&str> = self.everyone.iter().map(UserName::as_str).collect();
        if let Some(w) = self.watchers.get(user) {
            audience.extend(w.iter().map(UserName::as_str));
        }
        let mates = rooms.room_mates(user);
        audience.extend(mates.iter().map(UserName::as_str));
        audience.remove(user.as_str());
        for name in audience {
            if let Some(e) = self.users.get(name) {
                e.conn.notify(Event::Presence {
                    user: user.clone(),
                    online,
                });
            }
        }
    }

    /// Removes `user`'s entry and everything it watched; announces them offline.
    fn remove(&mut self, rooms: &RoomIndex, user: &str) -> Option<Entry> {
        let entry = self.users.remove(user)?;
        self.unwatch(user, &entry.watching);
        self.everyone.remove(user);
        self.announce(rooms, &entry.info.user, false);
        Some(entry)
    }

    fn unwatch(&mut self, watcher: &str, watched: &[UserName]) {
        for w in watched {
            if let MapEntry::Occupied(mut set) = self.watchers.entry(w.clone()) {
                set.get_mut().remove(watcher);
                if set.get().is_empty() {
                    set.remove();
                }
            }
        }
    }
}

/// The table of online users. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Presence {
    table: Arc<Mutex<Table>>,
    rooms: Arc<RoomIndex>,
    cluster: Arc<OnceLock<Arc<dyn Cluster>>>,
    /// Relay tokens other instances issued for our users (see [`crate::relay::forward`]).
    offers: Arc<RemoteOffers>,
}

impl Presence {
    /// An empty table; room membership (for announcements) comes from `rooms`.
    pub fn new(rooms: Arc<RoomIndex>) -> Self {
        Self {
            table: Arc::default(),
            rooms,
            cluster: Arc::default(),
            offers: Arc::default(),
        }
    }

    /// Relay tokens other instances issued for users connected here.
    pub fn remote_offers(&self) -> &RemoteOffers {
        &self.offers
    }

    /// Joins the other instances: from now on logins, logouts and notifications for
    /// remote users go through `cluster`. Set once; later calls are ignored.
    pub fn set_cluster(&self, cluster: Arc<dyn Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The other instances' link, when there are several.
    pub fn cluster(&self) -> Option<Arc<dyn Cluster>> {
        self.cluster.get().cloned()
    }

    /// Waits until this instance has left the cluster after shutdown (at once without
    /// a cluster).
    pub async fn cluster_left(&self) {
        if let Some(c) = self.cluster.get() {
            c.left().await;
        }
    }

    fn publish(&self, message: Message) {
        if let Some(c) = self.cluster.get() {
            c.publish(message);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `user` as online through `conn`. An earlier entry of the same user from
    /// another connection is replaced and that connection is told "logged in elsewhere".
    pub fn login(
        &self,
        user: &UserName,
        identity: PublicKey,
        observed: SocketAddr,
        addresses: Vec<SocketAddr>,
        conn: ConnHandle,
    ) -> Session {
        let entry = Entry {
            info: PeerInfo {
                user: user.clone(),
                identity,
                observed,
                addresses,
            },
            since: Instant::now(),
            conn: conn.clone(),
            watching: Vec::new(),
        };
        let info = entry.info.clone();
        let mut table = self.lock();
        let replaced = table.users.insert(user.clone(), entry);
        // Online elsewhere: that instance kicks its session when it hears of this one.
        let was_remote = table.remote.remove(user).is_some();
        self.publish(Message::Online {
            info,
            conn: conn.id,
        });
        match replaced {
            Some(old) => {
                table.unwatch(user, &old.watching);
                table.everyone.remove(user);
                if old.conn.id != conn.id {
                    old.conn.force_logout("logged in elsewhere");
                    tracing::info!(
                        user = user.as_str(),
                        "replaced an earlier session of the same user"
                    );
                }
            }
            None if was_remote => {}
            None => table.announce(&self.rooms, user, true),
        }
        drop(table);
        Session {
            presence: self.clone(),
            user: user.clone(),
            conn_id: conn.id,
        }
    }

    /// Where `user` is, if online.
    pub fn get(&self, user: &str) -> Option<PeerInfo> {
        let table = self.lock();
        match table.users.get(user) {
            Some(e) => Some(e.info.clone()),
            None => table.remote.get(user).map(|r| r.info.clone()),
        }
    }

    /// Whether `user` is logged in on this instance (not only on another instance of a
    /// cluster): relay streams can only be spliced between users of one instance.
    pub fn is_local(&self, user: &str) -> bool {
        self.lock().users.contains_key(user)
    }

    /// Replaces the list of users `user` wants presence events about.
    pub fn set_watch(&self, user: &UserName, watching: Vec<UserName>, everyone: bool) {
        let mut table = self.lock();
        let Some(entry) = table.users.get_mut(user) else {
            return;
        };
        let old = std::mem::replace(&mut entry.watching, watching.clone());
        table.unwatch(user, &old);
        for w in watching {
            table.watchers.entry(w).or_default().insert(user.clone());
        }
        if everyone {
            table.everyone.insert(user.clone());
        } else {
            table.everyone.remove(user);
        }
    }

    /// Sends `event` to those of `users` who are online, here or on another instance.
    pub fn notify(&self, users: &[impl AsRef<str>], event: Event) {
        let table = self.lock();
        let mut elsewhere = Vec::new();
        for u in users {
            let u = u.as_ref();
            if let Some(e) = table.users.get(u) {
                e.conn.notify(event.clone());
            } else if let Some((name, _)) = table.remote.get_key_value(u) {
                elsewhere.push(name.clone());
            }
        }
        drop(table);
        // Room changes also refresh the other instances' membership caches.
        if let Event::RoomChanged { room, user, joined } = &event {
            self.publish(Message::Room {
                room: room.clone(),
                user: user.clone(),
                joined: *joined,
            });
        }
        if !elsewhere.is_empty() {
            self.publish(Message::Notify {
                users: elsewhere,
                event,
            });
        }
    }

    /// Everyone online, sorted by name.
    pub fn list(&self) -> Vec<OnlineUser> {
        let now = Instant::now();
        let table = self.lock();
        let mut users: Vec<OnlineUser> = table
            .users
            .iter()
            .map(|(name, e)| (name, e.since))
            .chain(table.remote.iter().map(|(name, r)| (name, r.since)))
            .map(|(name, since)| OnlineUser {
                user: name.clone(),
                online_secs: now.duration_since(since).as_secs(),
            })
            .collect();
        drop(table);
        users.sort_by(|a, b| a.user.cmp(&b.user));
        users
    }

    /// Number of users online through this instance.
    pub fn len(&self) -> usize {
        self.lock().users.len()
    }

    /// Whether nobody is online.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends `user`'s session (if online) and tells its connection why. Returns whether
    /// they were online.
    pub fn force_logout(&self, user: &str, reason: &str) -> bool {
        let mut table = self.lock();
        let removed = table.remove(&self.rooms, user);
        let remote = table
            .remote
            .get_key_value(user)
            .map(|(name, _)| name.clone());
        drop(table);
        match (removed, remote) {
            (Some(e), _) => {
                e.conn.force_logout(reason);
                self.publish(Message::Offline {
                    user: e.info.user,
                    conn: e.conn.id,
                });
                true
            }
            (None, Some(user)) => {
                self.publish(Message::Kick {
                    user,
                    reason: reason.to_string(),
                });
                true
            }
            (None, None) => false,
        }
    }

    /// `user`'s account is gone: their room memberships go (here and, through the
    /// cluster, on every instance's cache), and their session ends wherever it is.
    pub fn account_removed(&self, user: &str, reason: &str) {
        // A name that breaks the rules is in no room (the index holds only valid names).
        if let Ok(name) = UserName::parse(user) {
            for room in self.rooms.remove_user(user) {
                self.publish(Message::Room {
                    room,
                    user: name.clone(),
                    joined: false,
                });
            }
        }
        self.force_logout(user, reason);
    }

    fn remove_if_owned(&self, user: &UserName, conn_id: u64) {
        let mut table = self.lock();
        if table.users.get(user).is_some_and(|e| e.conn.id == conn_id) {
            table.remove(&self.rooms, user);
            drop(table);
            self.publish(Message::Offline {
                user: user.clone(),
                conn: conn_id,
            });
        }
    }

    /// Applies what another instance (`from`) said.
    pub fn apply_remote(&self, from: &str, message: Message) {
        match message {
            Message::Online { info, conn } => {
                let user = info.user.clone();
                let mut table = self.lock();
                let kicked = table.users.remove(&user);
                if let Some(old) = &kicked {
                    // Replaced by a login elsewhere: no "offline" in between.
                    table.unwatch(&user, &old.watching);
                    table.everyone.remove(&user);
                }
                let known = table
                    .remote
                    .insert(
                        user.clone(),
                        Remote {
                            info,
                            since: Instant::now(),
                            instance: from.to_string(),
                            conn,
                        },
                    )
                    .is_some();
                table.tombstones.remove(&user);
                if kicked.is_none() && !known {
                    table.announce(&self.rooms, &user, true);
                }
                drop(table);
                if let Some(old) = kicked {
                    old.conn.force_logout("logged in elsewhere");
                    tracing::info!(
                        user = user.as_str(),
                        "replaced by a session on another instance"
                    );
                }
            }
            Message::Offline { user, conn } => {
                let mut table = self.lock();
                if table
                    .remote
                    .get(&user)
                    .is_some_and(|r| r.instance == from && r.conn == conn)
                {
                    table.remote.remove(&user);
                    table.tombstones.insert(user.clone(), Instant::now());
                    table.announce(&self.rooms, &user, false);
                }
            }
            Message::Notify { users, event } => {
                let table = self.lock();
                for u in &users {
                    if let Some(e) = table.users.get(u) {
                        // A relay token for our user, issued over there: remember where.
                        match &event {
                            Event::Incoming {
                                from: peer, token, ..
                            } => self.offers.learn(*token, from, &peer.user, u),
                            Event::RelayCall { from: peer, token } => {
                                self.offers.learn(*token, from, peer, u)
                            }
                            _ => {}
                        }
                        e.conn.notify(event.clone());
                    }
                }
            }
            Message::Room { room, user, joined } => {
                if joined {
                    self.rooms.insert(&room, &user);
                } else {
                    self.rooms.remove(&room, &user);
                }
            }
            Message::Kick { user, reason } => {
                let removed = self.lock().remove(&self.rooms, &user);
                if let Some(e) = removed {
                    e.conn.force_logout(&reason);
                    self.publish(Message::Offline {
                        user,
                        conn: e.conn.id,
                    });
                }
            }
            Message::Gone { instance } => {
                let mut table = self.lock();
                let gone: Vec<UserName> = table
                    .remote
                    .iter()
                    .filter(|(_, r)| r.instance == instance)
                    .map(|(u, _)| u.clone())
                    .collect();
                let now = Instant::now();
                for user in gone {
                    table.remote.remove(&user);
                    table.tombstones.insert(user.clone(), now);
                    table.announce(&self.rooms, &user, false);
                }
            }
        }
    }

    /// Replaces the mirror of remote users with `snapshot` (instance, connection, info),
    /// read from the shared database after `read_at`; announces the differences. Changes
    /// heard after `read_at` are newer than the snapshot and are kept.
    pub fn resync_remote(&self, snapshot: Vec<(String, u64, PeerInfo)>, read_at: Instant) {
        let mut table = self.lock();
        let mut fresh: HashMap<UserName, (String, u64, PeerInfo)> = snapshot
            .into_iter()
            .filter(|(_, _, info)| !table.users.contains_key(&info.user))
            .map(|(instance, conn, info)| (info.user.clone(), (instance, conn, info)))
            .collect();
        let stale: Vec<UserName> = table
            .remote
            .iter()
            .filter(|(u, r)| r.since < read_at && !fresh.contains_key(*u))
            .map(|(u, _)| u.clone())
            .collect();
        for user in stale {
            table.remote.remove(&user);
            table.announce(&self.rooms, &user, false);
        }
        for (user, (instance, conn, info)) in fresh.drain() {
            if table.tombstones.get(&user).is_some_and(|t| *t >= read_at) {
                continue;
            }
            if table.remote.get(&user).is_some_and(|r| r.since >= read_at) {
                continue;
            }
            let known = table
                .remote
                .insert(
                    user.clone(),
                    Remote {
                        info,
                        since: Instant::now(),
                        instance,
                        conn,
                    },
                )
                .is_some();
            if !known {
                table.announce(&self.rooms, &user, true);
            }
        }
        table.tombstones.retain(|_, t| *t >= read_at);
    }

    /// This instance's own sessions (to republish after losing the database).
    pub fn local_sessions(&self) -> Vec<(PeerInfo, u64)> {
        self.lock()
            .users
            .values()
            .map(|e| (e.info.clone(), e.conn.id))
            .collect()
    }
}

/// A logged-in user's place in [`Presence`]; dropping it logs them out.
#[derive(Debug)]
pub struct Session {
    presence: Presence,
    user: UserName,
    conn_id: u64,
}

impl Session {
    /// The logged-in user.
    pub fn user(&self) -> &UserName {
        &self.user
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.presence.remove_if_owned(&self.user, self.conn_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(id: u64) -> (ConnHandle, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(1);
        let (notify, _) = mpsc::channel(1);
        (
            ConnHandle {
                id,
                events: tx,
                notify,
            },
            rx,
        )
    }

    fn watcher(id: u64) -> (ConnHandle, mpsc::Receiver<Event>) {
        let (events, _) = mpsc::channel(1);
        let (notify, rx) = mpsc::channel(16);
        (ConnHandle { id, events, notify }, rx)
    }

    #[test]
    fn watchers_hear_logins_and_logouts() {
        let p = Presence::default();
        let key = proto::Identity::generate().public();
        let (w, mut heard) = watcher(1);
        let _s = p.login(&"bianca".parse().unwrap(), key, addr(1), vec![], w);
        p.set_watch(
            &"bianca".parse().unwrap(),
            vec!["ali".parse().unwrap()],
            false,
        );
        let (h, _rx) = handle(2);
        let ali = p.login(&"ali".parse().unwrap(), key, addr(2), vec![], h);
        assert_eq!(
            heard.try_recv().unwrap(),
            Event::Presence {
                user: "ali".parse().unwrap(),
                online: true
            }
        );
        drop(ali);
        assert_eq!(
            heard.try_recv().unwrap(),
            Event::Presence {
                user: "ali".parse().unwrap(),
                online: false
            }
        );
        // Not watched: not heard.
        let (h, _rx) = handle(3);
        let _c = p.login(&"chloe".parse().unwrap(), key, addr(3), vec![], h);
        assert!(heard.try_recv().is_err());
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn login_lookup_logout() {
        let p = Presence::default();
        let key = proto::Identity::generate().public();
        let (h, _rx) = handle(1);
        let s = p.login(&"ali".parse().unwrap(), key, addr(1), vec![addr(2)], h);
        let info = p.get("ali").unwrap();
        assert_eq!(info.identity, key);
        assert_eq!(info.observed, addr(1));
        assert_eq!(info.addresses, [addr(2)]);
        assert_eq!(p.len(), 1);
        drop(s);
        assert!(p.get("ali").is_none());
        assert!(p.is_empty());
    }

    #[test]
    fn second_login_replaces_and_kicks_the_first() {
        let p = Presence::default();
        let key = proto::Identity::generate().public();
        let (h1, mut rx1) = handle(1);
        let (h2, mut rx2) = handle(2);
        let s1 = p.login(&"ali".parse().unwrap(), key, addr(1), vec![], h1);
        let s2 = p.login(&"ali".parse().unwrap(), key, addr(9), vec![], h2);
        assert_eq!(
            rx1.try_recv().unwrap(),
            Event::ForcedLogout {
                reason: "logged in elsewhere".into()
            }
        );
        assert!(rx2.try_recv().is_err());
        // The old session ending must not remove the new entry.
        drop(s1);
        assert_eq!(p.get("ali").unwrap().observed, addr(9));
        drop(s2);
        assert!(p.get("ali").is_none());
    }

    #[test]
    fn list_is_sorted() {
        let p = Presence::default();
        let key = proto::Identity::generate().public();
        let mut sessions = Vec::new();
        for (i, name) in ["carla", "ali", "bianca"].into_iter().enumerate() {
            let (h, rx) = handle(i as u64);
            sessions.push((p.login(&name.parse().unwrap(), key, addr(1), vec![], h), rx));
        }
        let names: Vec<_> = p.list().into_iter().map(|u| u.user).collect();
        assert_eq!(names, ["ali", "bianca", "carla"]);
        assert!(p.force_logout("bianca", "removed"));
        assert!(!p.force_logout("bianca", "removed"));
        assert_eq!(p.len(), 2);
    }
}
