//! Reachability: finding a path to another peer through NATs and firewalls.
//!
//! The way iroh and Syncthing do it, on our one QUIC endpoint (one UDP socket, the same
//! one the directory sees):
//!
//! 1. **Rendezvous.** The dialer asks the directory for a rendezvous instead of a plain
//!    lookup ([`rendezvous`]). The directory answers with the target's addresses (the
//!    one it observes, usually a NAT's public address, and the LAN addresses the target
//!    reported) and at the same moment pushes `Event::Incoming` to the target with the
//!    dialer's.
//! 2. **Simultaneous open.** The dialer dials every address at once ([`open`]); the
//!    target, on the event, dials every address of the dialer's ([`punch`]), marking
//!    those connections with the TLS server name [`PUNCH_SERVER_NAME`]. Each side's
//!    packets open its own NAT's mapping towards the other, so the other side's packets
//!    get in. Whichever connection completes its (mutually verified) TLS handshake first
//!    carries the chat: one the dialer made, or one the target made, which arrives at
//!    the dialer's endpoint and is handed to the waiting dial ([`Punches`]). The dialer
//!    runs the chat's initiator side on it either way. Every other connection of the
//!    attempt is closed with [`CODE_DUPLICATE`], which the other side takes quietly.
//! 3. **Relay.** When no direct path completes within [`ReachOptions::direct_timeout`]
//!    (both behind symmetric NATs, UDP blocked between them), the dialer opens a relay
//!    stream on its directory connection; the directory calls the target
//!    (`Event::RelayCall`), which opens its own; the directory splices them. The chat's
//!    end-to-end layer runs unchanged over it (see [`crate::chat::transport`]).
//!
//! "Every address" is every address [`dialable`] allows: addresses are named by the other
//! peer and relayed by the directory, so neither can aim us at our own loopback or link,
//! at a multicast group or at a broadcast address ([`proto::addr`]).
//!
//! A relayed chat stays relayed: moving it to a direct path found later is not done.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::message::{ErrorCode, PeerInfo};
use proto::names::UserName;
use proto::{Identity, PublicKey};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::chat::{self, CODE_DUPLICATE, ChatEvents, ChatHandle, Transport};
use crate::directory_client::{ClientError, Rendezvous};
use crate::endpoint;
use crate::link::Link;

/// TLS server name of the connections a target makes while punching: they carry the
/// dialer's chat, not a chat of the target's own.
pub const PUNCH_SERVER_NAME: &str = "natter-punch";
/// Default for [`ReachOptions::direct_timeout`].
pub const DIRECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Environment variable that sets [`ReachOptions::direct_timeout`] in milliseconds.
pub const DIRECT_TIMEOUT_ENV: &str = "PEER_DIRECT_TIMEOUT_MS";
/// Most punching attempts (one per `Event::Incoming`) running at once; more are ignored.
pub const MAX_PUNCHES: usize = 16;

/// How hard to try for a direct path.
#[derive(Debug, Clone)]
pub struct ReachOptions {
    /// How long the dialer tries direct paths before it falls back to the relay.
    pub direct_timeout: Duration,
}

impl Default for ReachOptions {
    fn default() -> Self {
        Self {
            direct_timeout: DIRECT_TIMEOUT,
        }
    }
}

impl ReachOptions {
    /// The defaults, with [`DIRECT_TIMEOUT_ENV`] over them when it is set.
    pub fn from_env() -> Self {
        let mut options = Self::default();
        if let Some(ms) = std::env::var(DIRECT_TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            options.direct_timeout = Duration::from_millis(ms);
        }
        options
    }
}

/// Dials waiting for connections the other peer makes to us while punching, by the
/// other peer's identity key. Cheap to clone.
#[derive(Clone, Default)]
pub struct Punches(Arc<Mutex<HashMap<PublicKey, mpsc::Sender<quinn::Connection>>>>);

impl std::fmt::Debug for Punches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Punches")
    }
}

/// A dial's place in [`Punches`]; leaves it when dropped.
struct Waiting {
    punches: Punches,
    key: PublicKey,
    rx: mpsc::Receiver<quinn::Connection>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.punches.lock().remove(&self.key);
    }
}

impl Punches {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<PublicKey, mpsc::Sender<quinn::Connection>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_for(&self, key: PublicKey) -> Waiting {
        let (tx, rx) = mpsc::channel(4);
        self.lock().insert(key, tx);
        Waiting {
            punches: self.clone(),
            key,
            rx,
        }
    }

    /// Hands a punched connection (see [`is_punch`]) to the dial waiting for its key.
    /// When none waits (it found another path already), the connection is closed with
    /// [`CODE_DUPLICATE`].
    pub fn deliver(&self, conn: quinn::Connection) {
        let waiting = endpoint::remote_key(&conn).and_then(|k| self.lock().get(&k).cloned());
        match waiting {
            Some(tx) => {
                if let Err(e) = tx.try_send(conn) {
                    let conn = match e {
                        mpsc::error::TrySendError::Full(c)
                        | mpsc::error::TrySendError::Closed(c) => c,
                    };
                    conn.close(CODE_DUPLICATE, b"another path won");
                }
            }
            None => conn.close(CODE_DUPLICATE, b"another path won"),
        }
    }
}

/// Whether `conn` (accepted by our endpoint) was made by a peer punching towards us for
/// one of our dials, rather than to call us.
pub fn is_punch(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.server_name)
        .is_some_and(|name| name == PUNCH_SERVER_NAME)
}

/// Whether a connection ended because the other side chose another path (nothing to tell
/// the user about).
pub fn is_duplicate(conn: &quinn::Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(close)) if close.error_code == CODE_DUPLICATE
    )
}

/// Asks the directory for a rendezvous with `peer`. A directory that rate-limits us
/// still gets a plain lookup (direct paths only, no relay). `Err` is for the user.
pub async fn rendezvous(link: &Link, peer: &str) -> Result<Rendezvous, String> {
    match link.rendezvous(peer).await {
        Ok(Some(rv)) => Ok(rv),
        Ok(None) => Err(format!("{peer} is not online")),
        Err(ClientError::Server {
            code: ErrorCode::RateLimited,
            ..
        }) => match link.lookup(peer).await {
            Ok(Some(info)) => Ok(Rendezvous {
                peer: info,
                token: [0; 16],
                direct: true,
                relay: false,
            }),
            Ok(None) => Err(format!("{peer} is not online")),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// Opens a chat with the peer of `rv` (whose key the caller has checked against the
/// pins): direct if any path completes within the timeout, else through the relay.
#[allow(clippy::too_many_arguments)]
pub async fn open(
    link: &Link,
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    me: &UserName,
    rv: &Rendezvous,
    background: bool,
    punches: &Punches,
    options: &ReachOptions,
) -> Result<(ChatHandle, ChatEvents), String> {
    let peer = &rv.peer;
    let mut tried = String::from("the directory said to use the relay");
    if rv.direct {
        let near = link.client().addr().ip();
        match race_direct(
            endpoint,
            near,
            identity,
            peer,
            punches,
            options.direct_timeout,
        )
        .await
        {
            Ok(conn) => {
                return chat::initiate_with(conn, identity, me, peer, background)
                    .await
                    .map_err(|e| e.to_string());
            }
            Err(why) => tried = why,
        }
    }
    if !rv.relay {
        return Err(format!(
            "no direct path to {} ({tried}) and the directory does not relay this chat \
             (relay turned off, or {} is on another directory instance)",
            peer.user, peer.user
        ));
    }
    tracing::info!(peer = %peer.user, %tried, "no direct path; using the relay");
    let stream = link
        .open_relay(rv.token)
        .await
        .map_err(|e| format!("no direct path to {} ({tried}), and {e}", peer.user))?;
    chat::initiate_over(Transport::relayed(stream), identity, me, peer, background)
        .await
        .map_err(|e| e.to_string())
}

/// Dials every address of `peer` at once, and takes connections `peer` makes to us while
/// punching; the first to complete a verified handshake within `limit` wins. Every other
/// one is closed with [`CODE_DUPLICATE`] (in the background, as they complete). `Err`
/// says what was tried.
async fn race_direct(
    endpoint: &quinn::Endpoint,
    near: IpAddr,
    identity: &Identity,
    peer: &PeerInfo,
    punches: &Punches,
    limit: Duration,
) -> Result<quinn::Connection, String> {
    let config = endpoint::client_config(Some(identity), Some(peer.identity), proto::ALPN_PEER)
        .map_err(|e| e.to_string())?;
    let mut waiting = punches.wait_for(peer.identity);
    let addresses = dialable(endpoint, near, peer);
    let mut attempts = JoinSet::new();
    for addr in &addresses {
        let (endpoint, config, addr) = (endpoint.clone(), config.clone(), *addr);
        attempts.spawn(async move { endpoint::dial(&endpoint, config, addr).await });
    }
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut last = None;
    let won = loop {
        tokio::select! {
            Some(done) = attempts.join_next() => match done {
                Ok(Ok(conn)) => break Some(conn),
                Ok(Err(e)) => last = Some(e.to_string()),
                Err(e) => last = Some(e.to_string()),
            },
            Some(conn) = waiting.rx.recv() => break Some(conn),
            () = &mut deadline => break None,
        }
    };
    drop(waiting);
    tokio::spawn(async move {
        while let Some(done) = attempts.join_next().await {
            if let Ok(Ok(conn)) = done {
                conn.close(CODE_DUPLICATE, b"another path won");
            }
        }
    });
    won.ok_or_else(|| {
        let tried: Vec<String> = addresses.iter().map(SocketAddr::to_string).collect();
        match last {
            Some(e) => format!(
                "tried {} for {} ms: {e}",
                tried.join(", "),
                limit.as_millis()
            ),
            None => format!(
                "tried {} for {} ms: no answer",
                tried.join(", "),
                limit.as_millis()
            ),
        }
    })
}

/// The target's side of a rendezvous: dials every address of `from` (the dialer) that
/// we may send to from `near` (our directory's address; see [`dialable`]) from our
/// endpoint, which opens our NAT towards them. Returns the first connection that
/// completes (the dialer then runs its chat on it, or closes it with
/// [`CODE_DUPLICATE`] if another path won), or `None`.
pub async fn punch(
    endpoint: &quinn::Endpoint,
    near: IpAddr,
    identity: &Identity,
    from: &PeerInfo,
) -> Option<quinn::Connection> {
    let config =
        endpoint::client_config(Some(identity), Some(from.identity), proto::ALPN_PEER).ok()?;
    let mut attempts = JoinSet::new();
    for addr in dialable(endpoint, near, from) {
        let (endpoint, config) = (endpoint.clone(), config.clone());
        attempts.spawn(async move {
            let connecting = endpoint
                .connect_with(config, addr, PUNCH_SERVER_NAME)
                .map_err(|e| e.to_string())?;
            connecting.await.map_err(|e| e.to_string())
        });
    }
    let mut won = None;
    while let Some(done) = attempts.join_next().await {
        match done {
            Ok(Ok(conn)) => {
                won = Some(conn);
                break;
            }
            Ok(Err(e)) => tracing::debug!(peer = %from.user, error = %e, "punch attempt failed"),
            Err(_) => {}
        }
    }
    tokio::spawn(async move {
        while let Some(done) = attempts.join_next().await {
            if let Ok(Ok(conn)) = done {
                conn.close(CODE_DUPLICATE, b"another path won");
            }
        }
    });
    won
}

/// The addresses of `peer` we send to: those [`proto::addr::dialable`] allows from
/// `near` (whatever the directory says, never our own loopback or link unless the peer
/// is there too, never multicast or broadcast), and that our endpoint can reach (an
/// IPv4 socket cannot reach IPv6 addresses).
pub fn dialable(endpoint: &quinn::Endpoint, near: IpAddr, peer: &PeerInfo) -> Vec<SocketAddr> {
    let v4_only = endpoint.local_addr().is_ok_and(|a| a.is_ipv4());
    proto::addr::dialable(peer, near)
        .into_iter()
        .filter(|a| !(v4_only && a.is_ipv6()))
        .collect()
}
