//! Who is online: one entry per logged-in user, owned by the connection that logged in.
//!
//! Logging in returns a [`Session`]; dropping it (logout, the connection ending for any
//! reason, even a panic) removes the entry, unless a newer login of the same user has
//! replaced it meanwhile. A new login of a user who is already online replaces the old
//! entry and tells the old connection, through its [`ConnHandle`], to go away.
//!
//! The map is behind a plain mutex: every critical section is a few map operations,
//! never an `.await`. Its size is bounded by the number of connections.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use proto::PublicKey;
use proto::message::{Event, OnlineUser, PeerInfo};
use tokio::sync::mpsc;

/// How presence reaches the connection task that owns an entry.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// Unique per connection in this process.
    pub id: u64,
    /// Events for the connection to send and act on (it closes after a `ForcedLogout`).
    pub events: mpsc::Sender<Event>,
}

impl ConnHandle {
    /// Tells the connection to end its session with `reason`. Never waits: if the
    /// connection's (tiny) queue is full it is already being told to go.
    pub fn force_logout(&self, reason: &str) {
        let _ = self.events.try_send(Event::ForcedLogout {
            reason: reason.to_string(),
        });
    }
}

/// What is known about one online user.
#[derive(Debug, Clone)]
struct Entry {
    info: PeerInfo,
    since: Instant,
    conn: ConnHandle,
}

/// The table of online users. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Presence {
    users: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Presence {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `user` as online through `conn`. An earlier entry of the same user from
    /// another connection is replaced and that connection is told "logged in elsewhere".
    pub fn login(
        &self,
        user: &str,
        identity: PublicKey,
        observed: SocketAddr,
        addresses: Vec<SocketAddr>,
        conn: ConnHandle,
    ) -> Session {
        let entry = Entry {
            info: PeerInfo {
                user: user.to_string(),
                identity,
                observed,
                addresses,
            },
            since: Instant::now(),
            conn: conn.clone(),
        };
        let replaced = self.lock().insert(user.to_string(), entry);
        if let Some(old) = replaced
            && old.conn.id != conn.id
        {
            old.conn.force_logout("logged in elsewhere");
            tracing::info!(user, "replaced an earlier session of the same user");
        }
        Session {
            presence: self.clone(),
            user: user.to_string(),
            conn_id: conn.id,
        }
    }

    /// Where `user` is, if online.
    pub fn get(&self, user: &str) -> Option<PeerInfo> {
        self.lock().get(user).map(|e| e.info.clone())
    }

    /// Everyone online, sorted by name.
    pub fn list(&self) -> Vec<OnlineUser> {
        let now = Instant::now();
        let mut users: Vec<OnlineUser> = self
            .lock()
            .iter()
            .map(|(name, e)| OnlineUser {
                user: name.clone(),
                online_secs: now.duration_since(e.since).as_secs(),
            })
            .collect();
        users.sort_by(|a, b| a.user.cmp(&b.user));
        users
    }

    /// Number of users online.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nobody is online.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends `user`'s session (if online) and tells its connection why. Returns whether
    /// they were online.
    pub fn force_logout(&self, user: &str, reason: &str) -> bool {
        let removed = self.lock().remove(user);
        match removed {
            Some(e) => {
                e.conn.force_logout(reason);
                true
            }
            None => false,
        }
    }

    fn remove_if_owned(&self, user: &str, conn_id: u64) {
        let mut users = self.lock();
        if let MapEntry::Occupied(e) = users.entry(user.to_string())
            && e.get().conn.id == conn_id
        {
            e.remove();
        }
    }
}

/// A logged-in user's place in [`Presence`]; dropping it logs them out.
#[derive(Debug)]
pub struct Session {
    presence: Presence,
    user: String,
    conn_id: u64,
}

impl Session {
    /// The logged-in user.
    pub fn user(&self) -> &str {
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
        (ConnHandle { id, events: tx }, rx)
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn login_lookup_logout() {
        let p = Presence::new();
        let key = proto::Identity::generate().public();
        let (h, _rx) = handle(1);
        let s = p.login("ali", key, addr(1), vec![addr(2)], h);
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
        let p = Presence::new();
        let key = proto::Identity::generate().public();
        let (h1, mut rx1) = handle(1);
        let (h2, mut rx2) = handle(2);
        let s1 = p.login("ali", key, addr(1), vec![], h1);
        let s2 = p.login("ali", key, addr(9), vec![], h2);
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
        let p = Presence::new();
        let key = proto::Identity::generate().public();
        let mut sessions = Vec::new();
        for (i, name) in ["carla", "ali", "bianca"].into_iter().enumerate() {
            let (h, rx) = handle(i as u64);
            sessions.push((p.login(name, key, addr(1), vec![], h), rx));
        }
        let names: Vec<_> = p.list().into_iter().map(|u| u.user).collect();
        assert_eq!(names, ["ali", "bianca", "carla"]);
        assert!(p.force_logout("bianca", "removed"));
        assert!(!p.force_logout("bianca", "removed"));
        assert_eq!(p.len(), 2);
    }
}
