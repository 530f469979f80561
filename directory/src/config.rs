//! Everything an operator can tune, with safe defaults, as one serde struct.
//!
//! [`Config::new`] gives a directory that is safe to expose: registration closed, bounded
//! connection counts, OWASP-strength password hashing, 3-strike account lockout, no
//! status page. The same [`Config`] is the configuration file: each field is a key
//! (`#[serde(default, deny_unknown_fields)]`, so a missing key keeps its default and an
//! unknown one is refused), durations are seconds, and `directory config print` is its
//! serialization (secrets left out). [`Config::validate`] refuses values that cannot
//! work, naming the key ([`ConfigError`]). [`crate::config_file`] finds and reads the
//! file; tests and the load generator set fields directly.
//!
//! The policy types of the features (lockout, failed logins per source, password cost,
//! relay, mailbox, cluster, audit rotation) and the file names in the data directory live
//! here too, so this module imports nothing from the crate: the features import it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// UDP port the directory listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8888;
/// File name looked for in the data directory when `--config` is not given.
pub const CONFIG_FILE: &str = "directory.toml";
/// The SQLite database in the data directory.
pub const DB_FILE: &str = "directory.db";
/// The directory's identity key (PKCS#8 PEM) in the data directory.
pub const KEY_FILE: &str = "directory.key";
/// The audit log in the data directory.
pub const AUDIT_FILE: &str = "audit.log";
/// The operator's control socket in the data directory.
pub const SOCKET_FILE: &str = "control.sock";
/// Default for [`Config::hello_timeout`]: a new connection must open its control
/// stream and start `Hello` within this.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Config::frame_timeout`]: once a frame has started, the rest of it
/// must arrive within this.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`Config::write_timeout`]: how long one message may take to write
/// (the client must keep reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest `status_token` accepted.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest lock the lockout policy may impose (longer ones look like an administrator's
/// lock; see `admin::ADMIN_LOCK_THRESHOLD`).
pub const MAX_LOCKOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How the directory runs. Field order is the order `config print` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default = "Config::unset_data_dir", deny_unknown_fields)]
pub struct Config {
    /// Where the database, the identity key and the audit log live (created 0700).
    #[serde(rename = "data")]
    pub data_dir: PathBuf,
    /// UDP address to listen on (QUIC).
    pub listen: SocketAddr,
    /// Whether peers may create accounts themselves (`Register`).
    pub open_registration: bool,
    /// A connection that has heard nothing for this long is dropped (peers send
    /// keep-alives every 3 s, so a vanished peer disappears from presence this fast).
    #[serde(with = "secs")]
    pub idle_timeout: Duration,
    /// How long a session ticket from `Granted` stays valid for `Resume`.
    #[serde(with = "secs")]
    pub ticket_lifetime: Duration,
    /// Most logged-in connections at once, in total. Connections that have not logged in
    /// never count here (see `max_anonymous`), so strangers cannot take these slots.
    pub max_connections: usize,
    /// Most connections at once from one source address (IPv6: one /64), logged in or
    /// not. Further ones are refused before the handshake.
    pub max_connections_per_ip: usize,
    /// New connections (handshakes) one source address (IPv6: one /64) may start at once
    /// before it is rate-limited; `None`: as many as `max_connections_per_ip`. Checked
    /// before any handshake work; see `limits::HandshakeLimits`.
    pub handshake_burst: Option<u32>,
    /// New connections per second one source address may start once its burst is used
    /// up; `None`: a quarter of the burst (at least 1).
    pub handshakes_per_sec: Option<u32>,
    /// Most bidirectional streams a client may have open on one connection: the control
    /// stream, and one per relayed chat (see [`RelayPolicy::max_sessions_per_user`]).
    pub max_streams_per_connection: u32,
    /// How long a new connection may take to open its control stream and start `Hello`.
    #[serde(with = "secs")]
    pub hello_timeout: Duration,
    /// Most connections at once that have not logged in yet, in total; when full, a
    /// newcomer from a less busy source takes the place of the busiest source's oldest
    /// one (see `limits`). Further ones are refused before the handshake.
    pub max_anonymous: usize,
    /// Most connections at once from one source address that have not logged in yet.
    pub max_anonymous_per_ip: usize,
    /// How long after `Welcome` a connection may stay without logging in (or proving to
    /// be another instance); then it is closed. Starts again after a `Logout`.
    #[serde(with = "secs")]
    pub login_timeout: Duration,
    /// Once a request frame has started, how long the rest of it may take to arrive.
    #[serde(with = "secs")]
    pub frame_timeout: Duration,
    /// How long writing one message to a client may take: a client that does not read
    /// its replies is disconnected after this instead of being buffered for.
    #[serde(with = "secs")]
    pub write_timeout: Duration,
    /// Notifications (presence, rooms) one connection may have waiting to be written;
    /// a connection with more is disconnected as too slow.
    pub notify_queue: usize,
    /// Requests per second one connection may send on average; more get
    /// `Error{RateLimited}`.
    pub requests_per_sec: u32,
    /// Requests one connection may send in a burst.
    pub request_burst: u32,
    /// Most password hashes computed at once (each one holds `password_cost.memory_kib`).
    pub max_concurrent_hashes: usize,
    /// How long shutdown waits for peers to take their `Shutdown` notice and for the
    /// endpoint to go idle.
    #[serde(with = "secs")]
    pub shutdown_grace: Duration,
    /// TCP address of the status page, `/metrics` and `/healthz` (HTTP); `None`: off.
    pub status: Option<SocketAddr>,
    /// Token the status page asks for. Required (one is made up and printed at start
    /// when this is `None`) unless the page is bound to a loopback address. Never
    /// printed.
    #[serde(skip_serializing)]
    pub status_token: Option<Secret>,
    /// Where accounts live: `None` for SQLite in the data directory (the default), or a
    /// `postgres://user:password@host:port/db` URL shared by several instances
    /// (see `cluster`). A secret: the URL may hold a password; never printed.
    #[serde(skip_serializing)]
    pub database: Option<Secret>,
    /// Account lockout after failed password logins.
    pub lockout: LockoutPolicy,
    /// Rate limit on failed logins per source address.
    pub source_limit: SourcePolicy,
    /// Cost of the argon2id hashes made for new passwords.
    pub password_cost: PasswordCost,
    /// What is logged, and how (the binary's logging; the library does not read it).
    pub log: LogSettings,
    /// Size-based rotation of the audit log.
    #[serde(rename = "audit")]
    pub audit_rotation: Rotation,
    /// The relay for peers that find no direct path: on/off, caps, bandwidth.
    pub relay: RelayPolicy,
    /// Sealed mail for offline users: how long it waits, how much per recipient.
    pub mailbox: MailboxPolicy,
    /// Several instances on one PostgreSQL: heartbeats, presence expiry, the address the
    /// others dial.
    pub cluster: ClusterPolicy,
}

/// A secret setting: shown as `<redacted>` by `Debug`, never serialized.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A setting that cannot work, with the key it is under in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} must be at least 1")]
    AtLeastOne(&'static str),
    #[error("cluster.expiry_secs must be at least twice cluster.heartbeat_secs (at least 1)")]
    ClusterExpiry,
    #[error(
        "lockout.max_secs must be between lockout.base_secs and {} (one year)",
        MAX_LOCKOUT.as_secs()
    )]
    LockoutMax,
    #[error("password_cost.memory_kib must be at least 8 per lane (parallelism)")]
    PasswordMemory,
    #[error("status_token must be at least {MIN_TOKEN_LEN} characters")]
    ShortToken,
    #[error("database must be a postgres:// URL (SQLite needs no setting)")]
    Database,
    #[error("log filter {filter:?} (log.filter): {reason}")]
    LogFilter { filter: String, reason: String },
}

impl ConfigError {
    /// The configuration file key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            ConfigError::AtLeastOne(key) => key,
            ConfigError::ClusterExpiry => "cluster.expiry_secs",
            ConfigError::LockoutMax => "lockout.max_secs",
            ConfigError::PasswordMemory => "password_cost.memory_kib",
            ConfigError::ShortToken => "status_token",
            ConfigError::Database => "database",
            ConfigError::LogFilter { .. } => "log.filter",
        }
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
            hello_timeout: HELLO_TIMEOUT,
            frame_timeout: FRAME_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
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
            log: LogSettings::default(),
            audit_rotation: Rotation::default(),
            mailbox: MailboxPolicy::default(),
            relay: RelayPolicy::default(),
            database: None,
            cluster: ClusterPolicy::default(),
        }
    }

    /// The defaults with no data directory (an empty path): what a file that does not
    /// name one starts from.
    fn unset_data_dir() -> Self {
        Self::new(PathBuf::new())
    }

    /// Refuses settings that cannot work, naming the first key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("idle_timeout", self.idle_timeout.is_zero()),
            ("ticket_lifetime", self.ticket_lifetime.is_zero()),
            ("max_connections", self.max_connections == 0),
            ("max_connections_per_ip", self.max_connections_per_ip == 0),
            (
                "max_streams_per_connection",
                self.max_streams_per_connection == 0,
            ),
            ("handshake_burst", self.handshake_burst == Some(0)),
            ("handshakes_per_sec", self.handshakes_per_sec == Some(0)),
            ("hello_timeout", self.hello_timeout.is_zero()),
            ("max_anonymous", self.max_anonymous == 0),
            ("max_anonymous_per_ip", self.max_anonymous_per_ip == 0),
            ("login_timeout", self.login_timeout.is_zero()),
            ("frame_timeout", self.frame_timeout.is_zero()),
            ("write_timeout", self.write_timeout.is_zero()),
            ("notify_queue", self.notify_queue == 0),
            ("requests_per_sec", self.requests_per_sec == 0),
            ("request_burst", self.request_burst == 0),
            ("max_concurrent_hashes", self.max_concurrent_hashes == 0),
            ("lockout.max_failures", self.lockout.max_failures == 0),
            ("lockout.base_secs", self.lockout.base.is_zero()),
            (
                "source_limit.max_failures",
                self.source_limit.max_failures == 0,
            ),
            (
                "source_limit.max_sources",
                self.source_limit.max_sources == 0,
            ),
            (
                "password_cost.iterations",
                self.password_cost.iterations == 0,
            ),
            (
                "password_cost.parallelism",
                self.password_cost.parallelism == 0,
            ),
            ("relay.max_sessions", self.relay.max_sessions == 0),
            (
                "relay.max_sessions_per_user",
                self.relay.max_sessions_per_user == 0,
            ),
            (
                "relay.bytes_per_sec_per_user",
                self.relay.bytes_per_sec_per_user == 0,
            ),
            ("mailbox.lifetime_secs", self.mailbox.lifetime.is_zero()),
            ("mailbox.max_messages", self.mailbox.max_messages == 0),
            ("mailbox.max_bytes", self.mailbox.max_bytes == 0),
            (
                "mailbox.max_messages_per_sender",
                self.mailbox.max_messages_per_sender == 0,
            ),
            (
                "mailbox.max_bytes_per_sender",
                self.mailbox.max_bytes_per_sender == 0,
            ),
            ("mailbox.max_total_bytes", self.mailbox.max_total_bytes == 0),
        ];
        if let Some((key, _)) = positive.into_iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::AtLeastOne(key));
        }
        let c = &self.cluster;
        if c.heartbeat.is_zero() || c.expiry < c.heartbeat * 2 {
            return Err(ConfigError::ClusterExpiry);
        }
        if self.lockout.max < self.lockout.base || self.lockout.max > MAX_LOCKOUT {
            return Err(ConfigError::LockoutMax);
        }
        if self.password_cost.memory_kib < 8 * self.password_cost.parallelism {
            return Err(ConfigError::PasswordMemory);
        }
        if self
            .status_token
            .as_ref()
            .is_some_and(|t| t.0.trim().len() < MIN_TOKEN_LEN)
        {
            return Err(ConfigError::ShortToken);
        }
        if self
            .database
            .as_ref()
            .is_some_and(|d| !is_postgres_url(&d.0))
        {
            return Err(ConfigError::Database);
        }
        if let Some(filter) = &self.log.filter {
            tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| ConfigError::LogFilter {
                filter: filter.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
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

    /// Path of the SQLite database inside the data directory.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE)
    }

    /// Path of the directory's identity key file inside the data directory.
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join(KEY_FILE)
    }

    /// Path of the audit log inside the data directory.
    pub fn audit_path(&self) -> PathBuf {
        self.data_dir.join(AUDIT_FILE)
    }

    /// Path of the operator's control socket inside the data directory.
    pub fn operator_socket_path(&self) -> PathBuf {
        self.data_dir.join(SOCKET_FILE)
    }
}

/// Whether `database` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}

/// The platform's data directory for Natter (`~/.local/share/natter` on Linux), used
/// when `--data` is not given.
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "natter").map(|d| d.data_dir().to_path_buf())
}

/// How failures turn into lockouts (`[lockout]`; applied by `lockout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockoutPolicy {
    /// Wrong passwords in a row that lock the account.
    pub max_failures: u32,
    /// Length of the first lock.
    #[serde(rename = "base_secs", with = "secs")]
    pub base: Duration,
    /// Longest lock; later locks double up to this.
    #[serde(rename = "max_secs", with = "secs")]
    pub max: Duration,
}

impl Default for LockoutPolicy {
    /// 3 failures; locks of 30 s, 60 s, 120 s, ... capped at 1 h.
    fn default() -> Self {
        Self {
            max_failures: 3,
            base: Duration::from_secs(30),
            max: Duration::from_secs(60 * 60),
        }
    }
}

/// Limits on failed logins per source (`[source_limit]`; applied by `ratelimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcePolicy {
    /// Failures within `window` that block the source.
    pub max_failures: u32,
    /// Window over which failures are counted.
    #[serde(rename = "window_secs", with = "secs")]
    pub window: Duration,
    /// Length of the first block.
    #[serde(rename = "block_secs", with = "secs")]
    pub block: Duration,
    /// Longest block.
    #[serde(rename = "max_block_secs", with = "secs")]
    pub max_block: Duration,
    /// Most sources tracked at once.
    pub max_sources: usize,
}

impl Default for SourcePolicy {
    /// 10 failures per 10 minutes; blocks of 30 s doubling up to 1 h; 100,000 sources.
    /// Looser than the per-account limit because many users may share one NAT address.
    fn default() -> Self {
        Self {
            max_failures: 10,
            window: Duration::from_secs(600),
            block: Duration::from_secs(30),
            max_block: Duration::from_secs(3600),
            max_sources: 100_000,
        }
    }
}

/// Cost parameters for new argon2id hashes (`[password_cost]`; used by `password`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for PasswordCost {
    /// OWASP's recommendation for argon2id (Password Storage Cheat Sheet): m = 19 MiB,
    /// t = 2, p = 1. About 20–40 ms per hash on one core of a current machine.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl PasswordCost {
    /// The smallest cost argon2 allows. For tests only: it protects nothing.
    pub fn insecure_fast() -> Self {
        Self {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }
}

/// What is logged, and how (`[log]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `tracing` filter directives: `info`, or per module `info,directory::auth=debug`.
    /// `None`: the command's default (`info` for the server, `warn` for the others).
    pub filter: Option<String>,
    /// Text or JSON lines.
    pub format: LogFormat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (text or json)")),
        }
    }
}

/// When to rotate the audit log and how many old files to keep (`[audit]`; applied by
/// `rotating_file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rotation {
    /// Rotate before a line would take the file past this size. 0: never rotate.
    pub max_bytes: u64,
    /// Old files kept (`.1` is the newest). 0: the old file is deleted at rotation.
    pub keep: u32,
}

impl Default for Rotation {
    /// 10 MiB per file, 5 old files: at most 60 MiB of audit trail.
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// What the relay allows (`[relay]`; applied by `relay`). The defaults suit text chat:
/// a relayed chat needs a few kilobytes per second at most. Only the first four fields
/// are configuration file keys; the others are for tests and the load generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayPolicy {
    /// The operator's switch: `false` refuses every relay stream with
    /// `RelayRefusal::Disabled` (rendezvous and direct paths still work).
    pub enabled: bool,
    /// Relay sessions (parked or spliced streams) at once, in total.
    pub max_sessions: usize,
    /// Relay streams one user may have open at once (each chat takes one).
    pub max_sessions_per_user: usize,
    /// Bytes per second one user may send through the relay, over all their sessions.
    pub bytes_per_sec_per_user: u64,
    /// Bytes one user may send in a burst before [`Self::bytes_per_sec_per_user`] applies
    /// (at least `relay::PUMP_BUFFER` is used).
    #[serde(skip)]
    pub burst_bytes_per_user: u64,
    /// How long the first stream of a session waits for the second.
    #[serde(skip)]
    pub pair_timeout: Duration,
    /// How long a token from `Rendezvous` stays usable.
    #[serde(skip)]
    pub offer_ttl: Duration,
    /// `Rendezvous` requests one user may make per [`Self::offer_ttl`] (each one also
    /// pushes an event to its target, so this bounds that too).
    #[serde(skip)]
    pub max_offers_per_user: usize,
    /// Tells peers to skip direct paths and use the relay at once (tests and diagnosis;
    /// never needed in production).
    #[serde(skip)]
    pub force_relay: bool,
    /// Test hook: when set, every byte relayed is also recorded here.
    #[serde(skip)]
    pub tap: Option<RelayTap>,
}

impl Default for RelayPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            max_sessions: 1000,
            max_sessions_per_user: 8,
            bytes_per_sec_per_user: 256 * 1024,
            burst_bytes_per_user: 1024 * 1024,
            pair_timeout: Duration::from_secs(10),
            offer_ttl: Duration::from_secs(30),
            max_offers_per_user: 32,
            force_relay: false,
            tap: None,
        }
    }
}

/// Records bytes the relay copies (test hook; keeps at most [`RelayTap::LIMIT`] bytes).
/// Two taps are equal when they are the same tap.
#[derive(Clone, Default)]
pub struct RelayTap(Arc<Mutex<Vec<u8>>>);

impl RelayTap {
    /// Most bytes a tap keeps; later ones are dropped.
    pub const LIMIT: usize = 16 << 20;

    /// An empty tap.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything recorded so far, in the order the pumps copied it.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps `bytes` (up to [`Self::LIMIT`] in all).
    pub(crate) fn record(&self, bytes: &[u8]) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = Self::LIMIT.saturating_sub(all.len());
        all.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl PartialEq for RelayTap {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for RelayTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayTap")
    }
}

/// How long mail waits and how much of it one recipient may have waiting (`[mailbox]`;
/// applied by `mailbox` and the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailboxPolicy {
    /// An undelivered message is deleted after this (the sender gets a receipt saying so).
    #[serde(rename = "lifetime_secs", with = "secs")]
    pub lifetime: Duration,
    /// Most messages waiting for one recipient.
    pub max_messages: u32,
    /// Most bytes of blobs waiting for one recipient.
    pub max_bytes: u64,
    /// Most messages from one sender waiting for one recipient (so one sender cannot
    /// fill someone's mailbox).
    pub max_messages_per_sender: u32,
    /// Most bytes of blobs from one sender waiting for one recipient.
    pub max_bytes_per_sender: u64,
    /// Most bytes of blobs waiting in all, for everyone.
    pub max_total_bytes: u64,
}

impl Default for MailboxPolicy {
    /// 30 days, 1000 messages, 16 MiB per recipient, of which 100 messages, 2 MiB from
    /// any one sender; 4 GiB in all.
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(30 * 24 * 60 * 60),
            max_messages: 1000,
            max_bytes: 16 * 1024 * 1024,
            max_messages_per_sender: 100,
            max_bytes_per_sender: 2 * 1024 * 1024,
            max_total_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

/// Several instances sharing one database (`[cluster]`; applied by `cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterPolicy {
    /// The address the other instances dial to relay sessions through this one.
    /// `None`: the listening address, with `0.0.0.0` replaced by this machine's address
    /// toward the database.
    pub address: Option<SocketAddr>,
    /// How often each instance proves it is alive, sweeps dead instances and re-reads
    /// everyone's presence (which also repairs any notification it missed).
    #[serde(rename = "heartbeat_secs", with = "secs")]
    pub heartbeat: Duration,
    /// An instance silent for this long is dead: its users are removed everywhere.
    #[serde(rename = "expiry_secs", with = "secs")]
    pub expiry: Duration,
}

impl Default for ClusterPolicy {
    /// Heartbeat every 2 s, dead after 6 s of silence.
    fn default() -> Self {
        Self {
            address: None,
            heartbeat: Duration::from_secs(2),
            expiry: Duration::from_secs(6),
        }
    }
}

/// Durations in the file: seconds, a whole number (`30`) or with a fraction (`0.5`).
/// A whole number of seconds is written as an integer, so files stay as users wrote them.
mod secs {
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        match d.subsec_nanos() {
            0 => s.serialize_u64(d.as_secs()),
            _ => s.serialize_f64(d.as_secs_f64()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Seconds;
        impl Visitor<'_> for Seconds {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_secs)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Duration::try_from_secs_f64(v)
                    .map_err(|_| E::invalid_value(de::Unexpected::Float(v), &self))
            }
        }
        d.deserialize_any(Seconds)
    }
}
