//! The running directory: endpoint set-up, the accept loop, maintenance, shutdown.
//!
//! [`Directory::start`] goes data directory (permissions checked, locked for this server's
//! life) → identity key → TLS/QUIC config → endpoint → store and audit log → shared state
//! (and, on PostgreSQL, joining the other instances and linking to them: the wiring lives
//! here, [`crate::state::Shared`] only holds the parts), then spawns the accept loop. The accept loop checks the source's handshake
//! rate and takes a connection slot (see [`crate::limits`]) for each incoming connection,
//! or refuses it before the handshake, and runs one task per connection
//! ([`crate::connection`]). Every task holds a clone of a completion sender;
//! shutdown knows all tasks are done when the last clone is dropped.
//!
//! Beside QUIC it runs the operator's control socket ([`crate::operator`]) and, when
//! configured, the status page ([`crate::status`]).
//!
//! Shutdown: signal every task (each sends `Event::Shutdown` and closes its connection),
//! wait for them (bounded), close the endpoint, wait for it to go idle (bounded), then
//! close the store and the audit log, and stop the status page and the control socket.
//! The signal may also come from inside (an administrator's `/shutdown`, `directory
//! shutdown`): [`Directory::stopped`] tells the owner, who then calls
//! [`Directory::shutdown`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use proto::{Fingerprint, Identity, PublicKey};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::Instrument;

use crate::admin::{Admin, AdminError, UserSummary};
use crate::audit::Audit;
use crate::clock::unix_now;
use crate::config::Config;
use crate::connection::{self, close};
use crate::limits::{Admission, ConnCaps, ConnLimits, HandshakeLimits};
use crate::metrics::Metrics;
use crate::operator::OperatorSocket;
use crate::relay::forward::Links;
use crate::shutdown::Shutdown;
use crate::state::Shared;
use crate::status::StatusServer;
use crate::store::{self, Opened};
use crate::{cluster, keys, tls};

/// What peers are told when the directory stops.
const SHUTDOWN_REASON: &str = "directory shutting down";

/// How often stale rate-limit entries are dropped.
const SOURCE_PURGE_EVERY: Duration = Duration::from_secs(60);
/// How often expired tickets are deleted.
const TICKET_PURGE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Receive buffer asked for the UDP socket. The kernel default (about 200 KiB) holds
/// only some 90 datagrams: a burst of handshakes (a reconnect storm after a restart)
/// overflows it, and every dropped Initial packet costs its client a retransmission
/// timeout of a second or more. The kernel caps the size at `net.core.rmem_max`.
const RECV_BUFFER: usize = 4 << 20;

/// A running directory server.
pub struct Directory {
    shared: Arc<Shared>,
    admin: Admin,
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    public_key: PublicKey,
    limits: ConnLimits,
    status: Option<StatusServer>,
    operator: Option<OperatorSocket>,
    accept_task: Option<JoinHandle<()>>,
    maintenance_task: Option<JoinHandle<()>>,
    tasks_done: mpsc::Receiver<()>,
    /// Held while this server runs (see [`keys::lock_data_dir`]).
    _lock: keys::DataDirLock,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("local_addr", &self.local_addr)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// Opens (creating on first run) the data directory, the store and the identity key,
    /// binds the QUIC endpoint and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Directory> {
        let dir = config.data_dir.clone();
        let key_path = config.key_path();
        // The lock first: a second server on this data directory stops here, before it
        // touches the database or the running server's control socket.
        let (lock, identity) = tokio::task::spawn_blocking(move || {
            keys::ensure_data_dir(&dir)?;
            let lock = keys::lock_data_dir(&dir)?;
            anyhow::Ok((lock, keys::load_or_create(&key_path)?))
        })
        .await
        .context("key loading task failed")??;
        let public_key = identity.public();

        let server_config = tls::server_config(&identity, &config)?;
        let endpoint = bind(server_config, config.listen)?;
        let local_addr = endpoint.local_addr()?;
        let shared = Arc::new(open_shared(config, &endpoint, Arc::new(identity)).await?);

        let limits = ConnLimits::new(ConnCaps::of(&shared.config));
        // Before any task starts: a status address that cannot be bound fails the start.
        let status = match shared.config.status {
            Some(listen) => Some(
                StatusServer::start(
                    shared.clone(),
                    limits.clone(),
                    listen,
                    shared.config.status_token.as_ref().map(|t| t.0.clone()),
                )
                .await?,
            ),
            None => None,
        };
        let shutdown_rx = shared.shutdown.subscribe();
        let (done_tx, tasks_done) = mpsc::channel(1);
        let accept_task = tokio::spawn(accept_loop(
            endpoint.clone(),
            shared.clone(),
            limits.clone(),
            shutdown_rx.clone(),
            done_tx,
        ));
        let operator = match OperatorSocket::start(
            shared.clone(),
            &shared.config.operator_socket_path(),
            shutdown_rx.clone(),
        ) {
            Ok(socket) => Some(socket),
            Err(e) => {
                tracing::warn!(
                    "no control socket at {} ({e}): `directory shutdown` and \
                     `directory user logout` will not reach this server",
                    shared.config.operator_socket_path().display()
                );
                None
            }
        };
        let maintenance_task = tokio::spawn(maintenance(shared.clone(), shutdown_rx));
        let admin = Admin::new(
            shared.store.clone(),
            shared.passwords.clone(),
            shared.audit.clone(),
            shared.config.lockout,
        );
        tracing::info!(%local_addr, fingerprint = %public_key.fingerprint(), "directory started");
        Ok(Directory {
            shared,
            admin,
            endpoint,
            local_addr,
            public_key,
            limits,
            status,
            operator,
            accept_task: Some(accept_task),
            maintenance_task: Some(maintenance_task),
            tasks_done,
            _lock: lock,
        })
    }

    /// The UDP address the directory listens on (with the real port when started on 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The directory's identity key, as peers pin it.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Fingerprint of [`Directory::public_key`].
    pub fn fingerprint(&self) -> Fingerprint {
        self.public_key.fingerprint()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Creates an account (no identity key until its first login).
    pub async fn add_user(&self, name: &str, password: &str, admin: bool) -> anyhow::Result<()> {
        Ok(self.admin.add_user(name, password, admin).await?)
    }

    /// Lifts a lockout.
    pub async fn unlock_user(&self, name: &str) -> anyhow::Result<()> {
        Ok(self.admin.unlock_user(name).await?)
    }

    /// Deletes an account; if the user is online their session ends at once.
    pub async fn remove_user(&self, name: &str) -> anyhow::Result<()> {
        self.admin.remove_user(name).await?;
        self.shared
            .presence
            .account_removed(name, crate::operator::ACCOUNT_REMOVED);
        Ok(())
    }

    /// Forgets an account's identity key; if the user is online their session ends.
    pub async fn reset_key(&self, name: &str) -> anyhow::Result<()> {
        self.admin.reset_key(name).await?;
        self.shared
            .presence
            .force_logout(name, "identity key reset by the operator");
        Ok(())
    }

    /// Every account.
    pub async fn list_users(&self) -> Result<Vec<UserSummary>, AdminError> {
        self.admin.list_users().await
    }

    /// Where the status page listens, when it is on.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status.as_ref().map(StatusServer::local_addr)
    }

    /// The token the status page asks for, if it asks for one (configured, or made up at
    /// start because the page is bound to a non-loopback address).
    pub fn status_token(&self) -> Option<&str> {
        self.status.as_ref().and_then(StatusServer::token)
    }

    /// The counters behind the status page and `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Completes once shutdown has been asked for from inside (an administrator's
    /// `/shutdown`, `directory shutdown` on the control socket) and returns the reason.
    /// Peers have been told already and no new connection is accepted; the owner should
    /// then call [`Directory::shutdown`] to finish (drain, flush storage).
    pub async fn stopped(&self) -> String {
        self.shared.shutdown.subscribe().recv().await
    }

    /// Number of users logged in right now.
    pub fn online_count(&self) -> usize {
        self.shared.presence.len()
    }

    /// Number of open connections (logged in or not).
    pub fn connection_count(&self) -> usize {
        self.limits.open()
    }

    /// Number of open connections that have not logged in.
    pub fn anonymous_count(&self) -> usize {
        self.limits.anonymous()
    }

    /// Tells every peer, stops accepting, waits (bounded) for connections to close, and
    /// closes the store and the audit log.
    pub async fn shutdown(mut self) {
        let grace = self.shared.config.shutdown_grace;
        tracing::info!("shutting down");
        self.shared.shutdown.signal(SHUTDOWN_REASON);
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
        // Each connection task sends `Shutdown`, waits briefly for the peer, and ends.
        let drained = timeout(grace, async {
            while self.tasks_done.recv().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "{} connections still open after {grace:?}; closing them",
                self.limits.open()
            );
        }
        self.endpoint
            .close(close::SHUTDOWN.into(), SHUTDOWN_REASON.as_bytes());
        if timeout(grace, self.endpoint.wait_idle()).await.is_err() {
            tracing::warn!("endpoint not idle after {grace:?}");
        }
        if let Some(task) = self.maintenance_task.take() {
            let _ = task.await;
        }
        // The other instances are told we left before the store closes.
        if timeout(grace, self.shared.presence.cluster_left())
            .await
            .is_err()
        {
            tracing::warn!("could not leave the other instances within {grace:?}");
        }
        self.admin.close().await;
        if let Some(status) = self.status.take() {
            status.stop().await;
        }
        if let Some(operator) = self.operator.take() {
            operator.stop();
        }
        tracing::info!("directory stopped");
    }
}

impl Drop for Directory {
    /// Dropped without [`Directory::shutdown`]: stop everything without waiting.
    fn drop(&mut self) {
        self.shared.shutdown.signal(SHUTDOWN_REASON);
        if let Some(operator) = self.operator.take() {
            operator.stop();
        }
        self.endpoint
            .close(close::SHUTDOWN.into(), SHUTDOWN_REASON.as_bytes());
    }
}

/// Opens the store ([`store::open`]) and the audit log in `config.data_dir` (which must
/// exist) and builds the shared state over them. On PostgreSQL this instance also joins
/// the others on the database ([`crate::cluster`]) and links to them for relayed sessions
/// from its `endpoint` with the directory's `identity`.
async fn open_shared(
    config: Config,
    endpoint: &quinn::Endpoint,
    identity: Arc<Identity>,
) -> anyhow::Result<Shared> {
    let opened = store::open(&config)
        .await
        .with_context(|| match &config.database {
            Some(_) => "cannot open the PostgreSQL database".to_string(),
            None => format!("cannot open {}", config.database_path().display()),
        })?;
    let audit = Arc::new(Audit::open_with(
        &config.audit_path(),
        config.audit_rotation,
    )?);
    let Opened::Postgres(pg) = &opened else {
        return Shared::with_store(config, opened.store(), audit, identity.public()).await;
    };
    let policy = config.cluster;
    let address = cluster::postgres::relay_address(
        endpoint.local_addr()?,
        config.cluster.address,
        pg.config(),
    )
    .await;
    let shared = Shared::with_store(config, opened.store(), audit, identity.public()).await?;
    let cluster = cluster::postgres::start(
        pg,
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
    Ok(shared)
}

/// Binds the UDP socket (with a [`RECV_BUFFER`]-sized receive buffer) and the endpoint.
fn bind(server_config: quinn::ServerConfig, listen: SocketAddr) -> anyhow::Result<quinn::Endpoint> {
    let socket =
        std::net::UdpSocket::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let grown = quinn::udp::UdpSocketState::new((&socket).into())
        .and_then(|state| state.set_recv_buffer_size((&socket).into(), RECV_BUFFER));
    if let Err(e) = grown {
        tracing::warn!("cannot enlarge the UDP receive buffer: {e}");
    }
    let runtime = quinn::default_runtime().context("no async runtime")?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        socket,
        runtime,
    )
    .with_context(|| format!("cannot listen on {listen}"))
}

/// Accepts connections until shutdown, one task each.
async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    limits: ConnLimits,
    mut shutdown: Shutdown,
    done: mpsc::Sender<()>,
) {
    let config = &shared.config;
    let handshakes = HandshakeLimits::new(
        config.effective_handshakes_per_sec(),
        config.effective_handshake_burst(),
        config.source_limit.max_sources,
    );
    let mut purge = tokio::time::interval(SOURCE_PURGE_EVERY);
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.recv() => break,
            _ = purge.tick() => {
                handshakes.purge(Instant::now());
                continue;
            }
        };
        let Some(incoming) = incoming else { break };
        let remote = proto::addr::canonical(incoming.remote_address());
        let validated = incoming.remote_address_validated();
        match handshakes.admit(remote.ip(), validated, incoming.may_retry(), Instant::now()) {
            Admission::Accept => {}
            Admission::Retry => {
                tracing::debug!(%remote, "handshake rate reached; asking for address validation");
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
                continue;
            }
            Admission::Refuse => {
                tracing::debug!(%remote, "handshake rate reached; refusing");
                incoming.refuse();
                continue;
            }
        }
        let Some(slot) = limits.try_acquire(remote.ip()) else {
            tracing::debug!(%remote, "connection limit reached; refusing");
            incoming.refuse();
            continue;
        };
        let id = shared.next_conn_id();
        let span = tracing::info_span!("conn", id, %remote);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let done = done.clone();
        tokio::spawn(
            async move {
                let _done = done;
                let handshake = tokio::select! {
                    r = incoming => r,
                    () = slot.evicted() => {
                        tracing::debug!("evicted during the handshake");
                        return;
                    }
                };
                match handshake {
                    Ok(conn) => connection::run(shared, conn, id, slot, shutdown).await,
                    Err(e) => tracing::debug!("handshake failed: {e}"),
                }
            }
            .instrument(span),
        );
    }
    tracing::debug!("accept loop stopped");
}

/// Periodic clean-up: stale rate-limit entries, expired tickets.
async fn maintenance(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let mut sources = tokio::time::interval(SOURCE_PURGE_EVERY);
    let mut tickets = tokio::time::interval(TICKET_PURGE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = sources.tick() => shared.sources.purge(Instant::now()),
            _ = tickets.tick() => match shared.store.purge_expired_tickets(unix_now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("deleted {n} expired tickets"),
                Err(e) => tracing::warn!("cannot purge expired tickets: {e}"),
            },
        }
    }
}
