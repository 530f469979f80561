//! Everything an operator can tune, with safe defaults.
//!
//! [`Config::new`] gives a directory that is safe to expose: registration closed, bounded
//! connection counts, OWASP-strength password hashing, 3-strike account lockout, no
//! status page. The `directory` binary fills it from the configuration file and its
//! flags ([`crate::config_file`]); tests and the load generator set fields directly.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::ClusterPolicy;
use crate::lockout::LockoutPolicy;
use crate::mailbox::MailboxPolicy;
use crate::password::PasswordCost;
use crate::ratelimit::SourcePolicy;
use crate::relay::RelayPolicy;
use crate::rotating_file::Rotation;

/// UDP port the directory listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8888;

/// How the directory runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the database, the identity key and the audit log live (created 0700).
    pub data_dir: PathBuf,
    /// UDP address to listen on (QUIC).
    pub listen: SocketAddr,
    /// Whether peers may create accounts themselves (`Register`).
    pub open_registration: bool,
    /// How long a session ticket from `Granted` stays valid for `Resume`.
    pub ticket_lifetime: Duration,
    /// A connection that has heard nothing for this long is dropped (peers send
    /// keep-alives every 3 s, so a vanished peer disappears from presence this fast).
    pub idle_timeout: Duration,
    /// Most logged-in connections at once, in total. Connections that have not logged in
    /// never count here (see `max_anonymous`), so strangers cannot take these slots.
    pub max_connections: usize,
    /// Most connections at once from one source address (IPv6: one /64), logged in or
    /// not. Further ones are refused before the handshake.
    pub max_connections_per_ip: usize,
    /// Most connections at once that have not logged in yet, in total; when full, a
    /// newcomer from a less busy source takes the place of the busiest source's oldest
    /// one (see [`crate::limits`]). Further ones are refused before the handshake.
    pub max_anonymous: usize,
    /// Most connections at once from one source address that have not logged in yet.
    pub max_anonymous_per_ip: usize,
    /// How long after `Welcome` a connection may stay without logging in (or proving to
    /// be another instance); then it is closed. Starts again after a `Logout`.
    pub login_timeout: Duration,
    /// New connections (handshakes) one source address (IPv6: one /64) may start at once
    /// before it is rate-limited; `None`: as many as `max_connections_per_ip`. Checked
    /// before any handshake work; see [`crate::limits::HandshakeLimits`].
    pub handshake_burst: Option<u32>,
    /// New connections per second one source address may start once its burst is used
    /// up; `None`: a quarter of the burst (at least 1).
    pub handshakes_per_sec: Option<u32>,
    /// Most bidirectional streams a client may have open on one connection: the control
    /// stream, and one per relayed chat (see [`RelayPolicy::max_sessions_per_user`]).
    pub max_streams_per_connection: u32,
    /// How long a new connection may take to open its control stream and start `Hello`.
    pub hello_timeout: Duration,
    /// Once a request frame has started, how long the rest of it may take to arrive.
    pub frame_timeout: Duration,
    /// How long writing one message to a client may take: a client that does not read
    /// its replies is disconnected after this instead of being buffered for.
    pub write_timeout: Duration,
    /// Notifications (presence, rooms) one connection may have waiting to be written;
    /// a connection with more is disconnected as too slow.
    pub notify_queue: usize,
    /// Requests per second one connection may send on average; more get
    /// `Error{RateLimited}`.
    pub requests_per_sec: u32,
    /// Requests one connection may send in a burst.
    pub request_burst: u32,
    /// Account lockout after failed password logins.
    pub lockout: LockoutPolicy,
    /// Rate limit on failed logins per source address.
    pub source_limit: SourcePolicy,
    /// Cost of the argon2id hashes made for new passwords.
    pub password_cost: PasswordCost,
    /// Most password hashes computed at once (each one holds `password_cost.memory_kib`).
    pub max_concurrent_hashes: usize,
    /// How long shutdown waits for peers to take their `Shutdown` notice and for the
    /// endpoint to go idle.
    pub shutdown_grace: Duration,
    /// TCP address of the status page, `/metrics` and `/healthz` (HTTP); `None`: off.
    pub status: Option<SocketAddr>,
    /// Token the status page asks for. Required (one is made up and printed at start
    /// when this is `None`) unless the page is bound to a loopback address.
    pub status_token: Option<Secret>,
    /// Size-based rotation of the audit log.
    pub audit_rotation: Rotation,
    /// Sealed mail for offline users: how long it waits, how much per recipient.
    pub mailbox: MailboxPolicy,
    /// The relay for peers that find no direct path: on/off, caps, bandwidth.
    pub relay: RelayPolicy,
    /// Where accounts live: `None` for SQLite in the data directory (the default), or a
    /// `postgres://user:password@host:port/db` URL shared by several instances
    /// (see [`crate::cluster`]). A secret: the URL may hold a password.
    pub database: Option<Secret>,
    /// Several instances on one PostgreSQL: heartbeats and presence expiry.
    pub cluster: ClusterPolicy,
    /// With several instances: the address the others dial to relay sessions through
    /// this one. Default: the listening address, with `0.0.0.0` replaced by this
    /// machine's address toward the database.
    pub cluster_address: Option<SocketAddr>,
}

/// A secret setting: shown as `<redacted>` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Config {
    /// Defaults for a directory keeping its state in `data_dir`, listening on
    /// `0.0.0.0:8888`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)),
            open_registration: false,
            ticket_lifetime: Duration::from_secs(24 * 60 * 60),
            idle_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_ip: 64,
            max_anonymous: 1000,
            max_anonymous_per_ip: 16,
            login_timeout: Duration::from_secs(10),
            handshake_burst: None,
            handshakes_per_sec: None,
            max_streams_per_connection: 12,
            hello_timeout: crate::control::HELLO_TIMEOUT,
            frame_timeout: crate::control::FRAME_TIMEOUT,
            write_timeout: crate::control::WRITE_TIMEOUT,
            notify_queue: 64,
            requests_per_sec: 100,
            request_burst: 200,
            lockout: LockoutPolicy::default(),
            source_limit: SourcePolicy::default(),
            password_cost: PasswordCost::default(),
            max_concurrent_hashes: std::thread::available_parallelism()
                .map(|n| n.get() * 2)
                .unwrap_or(4),
            shutdown_grace: Duration::from_secs(3),
            status: None,
            status_token: None,
            audit_rotation: Rotation::default(),
            mailbox: MailboxPolicy::default(),
            relay: RelayPolicy::default(),
            database: None,
            cluster: ClusterPolicy::default(),
            cluster_address: None,
        }
    }

    /// The handshake burst in force: `handshake_burst`, else `max_connections_per_ip`.
    pub fn effective_handshake_burst(&self) -> u32 {
        self.handshake_burst
            .unwrap_or_else(|| u32::try_from(self.max_connections_per_ip).unwrap_or(u32::MAX))
            .max(1)
    }

    /// The handshake rate in force: `handshakes_per_sec`, else a quarter of the burst.
    pub fn effective_handshakes_per_sec(&self) -> u32 {
        self.handshakes_per_sec
            .unwrap_or_else(|| self.effective_handshake_burst() / 4)
            .max(1)
    }

    /// The connection caps in force (see [`crate::limits`]).
    pub fn conn_caps(&self) -> crate::limits::ConnCaps {
        crate::limits::ConnCaps {
            users: self.max_connections,
            per_source: self.max_connections_per_ip,
            anonymous: self.max_anonymous,
            anonymous_per_source: self.max_anonymous_per_ip,
        }
    }

    /// Path of the SQLite database inside the data directory.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(crate::store::sqlite::DB_FILE)
    }

    /// Path of the directory's identity key file inside the data directory.
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join(crate::keys::KEY_FILE)
    }

    /// Path of the audit log inside the data directory.
    pub fn audit_path(&self) -> PathBuf {
        self.data_dir.join(crate::audit::AUDIT_FILE)
    }

    /// Path of the operator's control socket inside the data directory.
    pub fn operator_socket_path(&self) -> PathBuf {
        self.data_dir.join(crate::operator::SOCKET_FILE)
    }
}

/// The platform's data directory for Natter (`~/.local/share/natter` on Linux), used
/// when `--data` is not given.
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "natter").map(|d| d.data_dir().to_path_buf())
}
