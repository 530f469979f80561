//! Everything a connection task may touch, shared by all of them.
//!
//! One [`Shared`] per running directory, behind an `Arc`. Each part guards itself (the
//! store has its own thread, presence and the rate limiter their own short mutexes), so
//! there is no lock around the whole.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use proto::{Identity, PublicKey};

use crate::audit::Audit;
use crate::config::Config;
use crate::lockout::{KnownSources, UnknownNames};
use crate::metrics::Metrics;
use crate::password::PasswordHashing;
use crate::presence::Presence;
use crate::ratelimit::SourceLimiter;
use crate::relay::Relay;
use crate::relay::forward::Links;
use crate::rooms::RoomIndex;
use crate::shutdown::{self, ShutdownSender};
use crate::store::Store;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;

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
    /// Opens the store and the audit log in `config.data_dir` (which must exist). With
    /// `config.database` set, the store is that PostgreSQL database and this instance
    /// joins the others on it ([`crate::cluster`]), linking to them for relayed sessions
    /// from its `endpoint` with the directory's `identity`; otherwise SQLite in the data
    /// directory.
    pub async fn open(
        config: Config,
        endpoint: &quinn::Endpoint,
        identity: Arc<Identity>,
    ) -> anyhow::Result<Self> {
        if let Some(url) = &config.database {
            let store = Arc::new(
                PostgresStore::open(&url.0)
                    .await
                    .context("cannot open the PostgreSQL database")?,
            );
            let audit = Audit::open_with(&config.audit_path(), config.audit_rotation)?;
            let policy = config.cluster;
            let address = crate::cluster::postgres::relay_address(
                endpoint.local_addr()?,
                config.cluster_address,
                store.config(),
            )
            .await;
            let shared =
                Self::with_store(config, store.clone(), Arc::new(audit), identity.public()).await?;
            let cluster = crate::cluster::postgres::start(
                &store,
                shared.presence.clone(),
                policy,
                address,
                shared.shutdown.subscribe(),
            )
            .await
            .context("cannot join the other directory instances")?;
            let links = Links::new(endpoint.clone(), identity, cluster)
                .context("cannot set up links to the other instances")?;
            shared.relay.set_links(Arc::new(links));
            tracing::info!(%address, "other instances link to this one at this address");
            return Ok(shared);
        }
        let store = SqliteStore::open(config.database_path())
            .await
            .with_context(|| format!("cannot open {}", config.database_path().display()))?;
        let audit = Audit::open_with(&config.audit_path(), config.audit_rotation)?;
        Self::with_store(config, Arc::new(store), Arc::new(audit), identity.public()).await
    }

    /// Shared state over an already open store (another backend, or a test's), for the
    /// directory whose key is `directory_key`.
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
