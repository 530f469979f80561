//! Everything a connection task may touch, shared by all of them.
//!
//! One [`Shared`] per running directory, behind an `Arc`. Each part guards itself (the
//! store has its own thread, presence and the rate limiter their own short mutexes), so
//! there is no lock around the whole. It is state only: opening the store and joining
//! other instances is [`crate::server`]'s wiring, which hands the parts in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use proto::PublicKey;

use crate::audit::Audit;
use crate::config::Config;
use crate::lockout::{KnownSources, UnknownNames};
use crate::metrics::Metrics;
use crate::password::PasswordHashing;
use crate::presence::Presence;
use crate::ratelimit::SourceLimiter;
use crate::relay::Relay;
use crate::rooms::RoomIndex;
use crate::shutdown::{self, ShutdownSender};
use crate::store::Store;

/// The directory's shared state.
pub struct Shared {
    /// The configuration it was started with.
    pub config: Config,
    /// Accounts and tickets.
    pub store: Arc<dyn Store>,
    /// Who is online.
    pub presence: Presence,
    /// Who is in which room.
    pub rooms: Arc<RoomIndex>,
    /// Failed logins per source address.
    pub sources: SourceLimiter,
    /// Which bucket of the store holds the lockout counters of a name without an account.
    pub unknown_names: UnknownNames,
    /// Sources each user logged in from (a password lockout does not stop them there).
    pub known_sources: KnownSources,
    /// argon2id, bounded.
    pub passwords: PasswordHashing,
    /// The audit trail.
    pub audit: Arc<Audit>,
    /// Counters for the status page and `/metrics` (fed by the audit trail).
    pub metrics: Arc<Metrics>,
    /// Rendezvous offers and relayed sessions.
    pub relay: Arc<Relay>,
    /// Coalesced "mail waiting" / "receipts waiting" events.
    pub mail_nudges: Arc<crate::mailbox::Nudges>,
    /// Signals shutdown to every task; an administrator's `Shutdown` pulls it too.
    pub shutdown: ShutdownSender,
    /// The directory's identity key: peers' login proofs are bound to it
    /// ([`proto::message::ChannelBinding`]).
    pub directory_key: PublicKey,
    next_conn_id: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("data_dir", &self.config.data_dir)
            .field("online", &self.presence.len())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Shared state over an open store and audit trail, for the directory whose key is
    /// `directory_key`. Loads room membership, attaches the counters to the audit trail
    /// and starts the mailbox's maintenance task; joining other instances is the
    /// server's wiring ([`crate::server`]), not this.
    pub async fn with_store(
        config: Config,
        store: Arc<dyn Store>,
        audit: Arc<Audit>,
        directory_key: PublicKey,
    ) -> anyhow::Result<Self> {
        let passwords = PasswordHashing::new(config.password_cost, config.max_concurrent_hashes);
        passwords.prepare().await?;
        let rooms = Arc::new(
            RoomIndex::load(store.as_ref())
                .await
                .context("cannot load room membership")?,
        );
        let metrics = Arc::new(Metrics::new());
        audit.attach_observer(metrics.clone());
        let (shutdown, _) = shutdown::channel();
        let presence = Presence::new(rooms.clone());
        let mail_nudges = Arc::new(crate::mailbox::Nudges::default());
        tokio::spawn(crate::mailbox::maintenance(
            store.clone(),
            presence.clone(),
            mail_nudges.clone(),
            config.mailbox,
            shutdown.subscribe(),
        ));
        let relay = Arc::new(Relay::new(
            config.relay.clone(),
            metrics.clone(),
            presence.clone(),
        ));
        Ok(Self {
            relay,
            mail_nudges,
            metrics,
            shutdown,
            sources: SourceLimiter::new(config.source_limit),
            unknown_names: UnknownNames::default(),
            known_sources: KnownSources::default(),
            presence,
            rooms,
            passwords,
            store,
            audit,
            config,
            directory_key,
            next_conn_id: AtomicU64::new(1),
        })
    }

    /// A fresh connection id, unique in this process.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}
