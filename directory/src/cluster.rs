//! Several directory instances serving one user base: what they tell each other.
//!
//! Every instance keeps its own connections' presence in memory ([`crate::presence`])
//! and a mirror of everyone else's, so a lookup never waits on the network. The mirror
//! is fed by [`Message`]s that instances exchange through a [`Cluster`] backend:
//!
//! - [`Message::Online`] / [`Message::Offline`]: a login / logout on the sender. A login
//!   elsewhere replaces (and kicks) a local session of the same user.
//! - [`Message::Notify`]: an [`Event`] for users connected to other instances —
//!   presence and room announcements, and the rendezvous `Incoming` push, so a peer on
//!   instance 2 hears that someone on instance 1 is coming. This is the hook for
//!   cross-instance rendezvous: [`crate::presence::Presence::notify`] forwards to it
//!   by itself for every user it knows to be remote.
//! - [`Message::Room`]: room membership changed (the others refresh their cache).
//! - [`Message::Kick`]: an operator logged a user out on another instance.
//! - [`Message::Gone`]: an instance stopped (or was declared dead): drop its users.
//!
//! The one backend is PostgreSQL ([`postgres`]): presence rows in the shared database,
//! messages over `LISTEN/NOTIFY` on the same database, heartbeats that let a crashed
//! instance's users vanish within [`ClusterPolicy::vanish_bound`]. A single instance on
//! SQLite has no cluster at all.

pub mod postgres;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use proto::message::{Event, PeerInfo};
use proto::names::{RoomName, UserName};
use serde::{Deserialize, Serialize};

pub use crate::config::ClusterPolicy;

impl ClusterPolicy {
    /// The longest a crashed instance's users stay visible on the others: the expiry,
    /// plus one heartbeat until some instance sweeps, plus one until every instance has
    /// re-read presence (if the notification was lost).
    pub fn vanish_bound(&self) -> Duration {
        self.expiry + self.heartbeat * 2
    }
}

/// One running instance, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceStatus {
    pub id: String,
    /// Where the others link to it for relayed sessions.
    pub relay_address: Option<String>,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_secs: f64,
    /// Users logged in through it.
    pub users: u64,
}

/// What one instance tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// `info.user` logged in on the sender through its connection `conn`.
    Online { info: PeerInfo, conn: u64 },
    /// `user`'s session `conn` on the sender ended.
    Offline { user: UserName, conn: u64 },
    /// Pass `event` on to those of `users` connected to the receiving instance.
    Notify { users: Vec<UserName>, event: Event },
    /// `user` joined or left `room`.
    Room {
        room: RoomName,
        user: UserName,
        joined: bool,
    },
    /// End `user`'s session wherever it is, telling them `reason`.
    Kick { user: UserName, reason: String },
    /// The instance `instance` is gone; every user it had is offline.
    Gone { instance: String },
}

/// A message and the instance that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: String,
    pub message: Message,
}

/// Messages from one instance, in the order it published them (what one `NOTIFY`
/// carries when the sender has several queued).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub from: String,
    pub messages: Vec<Message>,
}

/// Where an instance sends its [`Message`]s. Receiving is the backend's business: it
/// hands what arrives to [`crate::presence::Presence::apply_remote`].
pub trait Cluster: Send + Sync + std::fmt::Debug + 'static {
    /// This instance's id (unique among running instances).
    fn instance(&self) -> &str;

    /// Queues `message` for the other instances. Never waits; messages leave in the
    /// order they were published.
    fn publish(&self, message: Message);

    /// Resolves once this instance has left the others (after shutdown), so that the
    /// store is not closed under its last words.
    fn left(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// The running instances (this one included), by id; empty if the database cannot
    /// be read.
    fn instances(&self) -> Pin<Box<dyn Future<Output = Vec<InstanceStatus>> + Send + '_>>;

    /// Where the running instance `instance` takes links from the others (for relayed
    /// sessions, see [`crate::relay::forward`]); `None` if it is not running.
    fn relay_address(
        &self,
        instance: &str,
    ) -> Pin<Box<dyn Future<Output = Option<SocketAddr>> + Send + '_>>;
}
