//! The directory's configuration file (TOML), the flags over it, and logging.
//!
//! Every setting has a built-in default ([`Config::new`]), so no file is needed. Where a
//! setting is given several times, the most specific wins:
//!
//! ```text
//! built-in default  <  configuration file  <  environment  <  command-line flag
//! ```
//!
//! The environment counts for `RUST_LOG` (the log filter), `NATTER_DIRECTORY_DATA` and
//! `NATTER_DIRECTORY_CONFIG` (the latter two are the `--data`/`--config` flags' own
//! variables). The file is `--config FILE` when given, else `directory.toml` in the data
//! directory when it exists. Keys are the flags' names with `_` for `-`; durations are
//! whole seconds. `directory config print` shows the result, and
//! `docs/OPERATIONS.md` lists every key.
//!
//! Unknown keys are an error (a typo must not silently leave a default in force), and so
//! are values that make no sense (no connections allowed, an empty token).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Secret};

/// File name looked for in the data directory when `--config` is not given.
pub const CONFIG_FILE: &str = "directory.toml";
/// Shortest `status_token` accepted.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest lock the lockout policy may impose (longer ones look like an administrator's
/// lock; see [`crate::admin::ADMIN_LOCK_THRESHOLD`]).
pub const MAX_LOCKOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The file's contents: every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data: Option<PathBuf>,
    /// `postgres://...`: accounts in PostgreSQL, shared by several instances.
    pub database: Option<String>,
    pub listen: Option<SocketAddr>,
    pub open_registration: Option<bool>,
    pub idle_timeout: Option<u64>,
    pub ticket_lifetime: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub handshake_burst: Option<u32>,
    pub handshakes_per_sec: Option<u32>,
    pub max_streams_per_connection: Option<u32>,
    pub hello_timeout: Option<u64>,
    pub frame_timeout: Option<u64>,
    pub write_timeout: Option<u64>,
    pub notify_queue: Option<usize>,
    pub requests_per_sec: Option<u32>,
    pub request_burst: Option<u32>,
    pub max_concurrent_hashes: Option<usize>,
    pub shutdown_grace: Option<u64>,
    pub status: Option<SocketAddr>,
    pub status_token: Option<String>,
    pub max_anonymous: Option<usize>,
    pub max_anonymous_per_ip: Option<usize>,
    pub login_timeout: Option<u64>,
    #[serde(default)]
    pub lockout: LockoutSection,
    #[serde(default)]
    pub source_limit: SourceLimitSection,
    #[serde(default)]
    pub password_cost: PasswordCostSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub relay: RelaySection,
    #[serde(default)]
    pub mailbox: MailboxSection,
    #[serde(default)]
    pub cluster: ClusterSection,
}

/// `[cluster]`: several instances on one PostgreSQL database (see [`crate::cluster`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Where the other instances reach this one (for relayed sessions).
    pub address: Option<SocketAddr>,
    pub heartbeat_secs: Option<u64>,
    pub expiry_secs: Option<u64>,
}

/// `[mailbox]`: sealed mail for offline users (see [`crate::mailbox`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxSection {
    /// Seconds an undelivered message is kept.
    pub lifetime_secs: Option<u64>,
    /// Most messages waiting for one recipient.
    pub max_messages: Option<u32>,
    /// Most bytes of messages waiting for one recipient.
    pub max_bytes: Option<u64>,
    /// Most messages from one sender waiting for one recipient.
    pub max_messages_per_sender: Option<u32>,
    /// Most bytes of messages from one sender waiting for one recipient.
    pub max_bytes_per_sender: Option<u64>,
    /// Most bytes of messages waiting in all.
    pub max_total_bytes: Option<u64>,
}

/// `[lockout]`: account lockout after failed password logins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutSection {
    pub max_failures: Option<u32>,
    pub base_secs: Option<u64>,
    pub max_secs: Option<u64>,
}

/// `[source_limit]`: failed logins per source address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceLimitSection {
    pub max_failures: Option<u32>,
    pub window_secs: Option<u64>,
    pub block_secs: Option<u64>,
    pub max_block_secs: Option<u64>,
    pub max_sources: Option<usize>,
}

/// `[password_cost]`: argon2id parameters for new password hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordCostSection {
    pub memory_kib: Option<u32>,
    pub iterations: Option<u32>,
    pub parallelism: Option<u32>,
}

/// `[log]`: what is logged, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `tracing` filter directives: `info`, or per module `info,directory::auth=debug`.
    pub filter: Option<String>,
    pub format: Option<LogFormat>,
}

/// `[relay]`: the relay for peers that find no direct path (see [`crate::relay`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// `false` turns the relay off (rendezvous and direct paths still work).
    pub enabled: Option<bool>,
    pub max_sessions: Option<usize>,
    pub max_sessions_per_user: Option<usize>,
    pub bytes_per_sec_per_user: Option<u64>,
}

/// `[audit]`: the audit log file's rotation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    pub max_bytes: Option<u64>,
    pub keep: Option<u32>,
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

impl LogFormat {
    fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The logging set-up in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub filter: String,
    pub format: LogFormat,
}

/// What was given on the command line (and through the flags' environment variables).
/// `None`: not given.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub database: Option<String>,
    pub listen: Option<SocketAddr>,
    pub open_registration: Option<bool>,
    pub idle_timeout: Option<u64>,
    pub ticket_lifetime: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub status: Option<SocketAddr>,
    pub status_token: Option<String>,
    pub log_filter: Option<String>,
    pub max_anonymous: Option<usize>,
    pub max_anonymous_per_ip: Option<usize>,
    pub log_format: Option<LogFormat>,
}

/// The settings in force, and where the file came from.
#[derive(Debug, Clone)]
pub struct Effective {
    pub config: Config,
    pub log: LogSettings,
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
}

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    parse(&text).with_context(|| format!("configuration file {}", path.display()))
}

/// Parses a configuration file's text. An error is one line: where, and what.
pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end().replace('\n', " ");
        match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                anyhow::anyhow!("line {line}, column {column}: {message}")
            }
            None => anyhow::anyhow!("{message}"),
        }
    })
}

/// Finds and reads the configuration file, then applies it and `flags` over the
/// defaults. `default_data`: the data directory when neither flag nor file names one;
/// `rust_log`: the `RUST_LOG` variable; `default_filter`: the log filter when nothing
/// else sets one.
pub fn resolve(
    flags: &Overrides,
    default_data: Option<PathBuf>,
    rust_log: Option<String>,
    default_filter: &str,
) -> anyhow::Result<Effective> {
    let (file, path) = match &flags.config {
        Some(path) => (load(path)?, Some(path.clone())),
        None => {
            let data = flags.data.clone().or_else(|| default_data.clone());
            match data.map(|d| d.join(CONFIG_FILE)) {
                Some(path) if path.is_file() => {
                    let file = load(&path)?;
                    if let Some(inside) = &file.data
                        && Some(inside) != path.parent().map(Path::to_path_buf).as_ref()
                    {
                        bail!(
                            "{}: `data` cannot move the data directory from a file inside it; \
                             pass --config FILE instead",
                            path.display()
                        );
                    }
                    (file, Some(path))
                }
                _ => (FileConfig::default(), None),
            }
        }
    };
    let mut effective = apply(&file, flags, default_data, rust_log, default_filter).with_context(
        || match &path {
            Some(p) => format!("configuration from {} and flags", p.display()),
            None => "configuration from flags".into(),
        },
    )?;
    effective.file = path;
    Ok(effective)
}

/// Applies `file`, then `flags`, over the defaults (no file system access).
pub fn apply(
    file: &FileConfig,
    flags: &Overrides,
    default_data: Option<PathBuf>,
    rust_log: Option<String>,
    default_filter: &str,
) -> anyhow::Result<Effective> {
    let data = flags
        .data
        .clone()
        .or_else(|| file.data.clone())
        .or(default_data)
        .context("cannot find a data directory for this user; pass --data DIR")?;
    let mut c = Config::new(data);
    let secs = Duration::from_secs;

    // The file, then the flag, for the database.
    if let Some(url) = flags.database.as_ref().or(file.database.as_ref()) {
        if !crate::store::postgres::is_postgres_url(url) {
            bail!("database must be a postgres:// URL (SQLite needs no setting)");
        }
        c.database = Some(Secret(url.clone()));
    }

    // The file.
    set(&mut c.listen, file.listen);
    set(&mut c.open_registration, file.open_registration);
    set(&mut c.idle_timeout, file.idle_timeout.map(secs));
    set(&mut c.ticket_lifetime, file.ticket_lifetime.map(secs));
    set(&mut c.max_connections, file.max_connections);
    set(&mut c.max_connections_per_ip, file.max_connections_per_ip);
    if file.handshake_burst.is_some() {
        c.handshake_burst = file.handshake_burst;
    }
    if file.handshakes_per_sec.is_some() {
        c.handshakes_per_sec = file.handshakes_per_sec;
    }
    set(
        &mut c.max_streams_per_connection,
        file.max_streams_per_connection,
    );
    set(&mut c.hello_timeout, file.hello_timeout.map(secs));
    set(&mut c.max_anonymous, file.max_anonymous);
    set(&mut c.max_anonymous_per_ip, file.max_anonymous_per_ip);
    set(&mut c.login_timeout, file.login_timeout.map(secs));
    set(&mut c.frame_timeout, file.frame_timeout.map(secs));
    set(&mut c.write_timeout, file.write_timeout.map(secs));
    set(&mut c.notify_queue, file.notify_queue);
    set(&mut c.requests_per_sec, file.requests_per_sec);
    set(&mut c.request_burst, file.request_burst);
    set(&mut c.max_concurrent_hashes, file.max_concurrent_hashes);
    set(&mut c.shutdown_grace, file.shutdown_grace.map(secs));
    if file.status.is_some() {
        c.status = file.status;
    }
    if let Some(t) = &file.status_token {
        c.status_token = Some(Secret(t.clone()));
    }
    let l = &file.lockout;
    set(&mut c.lockout.max_failures, l.max_failures);
    set(&mut c.lockout.base, l.base_secs.map(secs));
    set(&mut c.lockout.max, l.max_secs.map(secs));
    let s = &file.source_limit;
    set(&mut c.source_limit.max_failures, s.max_failures);
    set(&mut c.source_limit.window, s.window_secs.map(secs));
    set(&mut c.source_limit.block, s.block_secs.map(secs));
    set(&mut c.source_limit.max_block, s.max_block_secs.map(secs));
    set(&mut c.source_limit.max_sources, s.max_sources);
    let p = &file.password_cost;
    set(&mut c.password_cost.memory_kib, p.memory_kib);
    set(&mut c.password_cost.iterations, p.iterations);
    set(&mut c.password_cost.parallelism, p.parallelism);
    set(&mut c.audit_rotation.max_bytes, file.audit.max_bytes);
    set(&mut c.audit_rotation.keep, file.audit.keep);
    set(
        &mut c.mailbox.lifetime,
        file.mailbox.lifetime_secs.map(secs),
    );
    set(&mut c.mailbox.max_messages, file.mailbox.max_messages);
    set(&mut c.mailbox.max_bytes, file.mailbox.max_bytes);
    set(
        &mut c.mailbox.max_messages_per_sender,
        file.mailbox.max_messages_per_sender,
    );
    set(
        &mut c.mailbox.max_bytes_per_sender,
        file.mailbox.max_bytes_per_sender,
    );
    set(&mut c.mailbox.max_total_bytes, file.mailbox.max_total_bytes);
    set(&mut c.cluster_address, file.cluster.address.map(Some));
    set(
        &mut c.cluster.heartbeat,
        file.cluster.heartbeat_secs.map(secs),
    );
    set(&mut c.cluster.expiry, file.cluster.expiry_secs.map(secs));
    let r = &file.relay;
    set(&mut c.relay.enabled, r.enabled);
    set(&mut c.relay.max_sessions, r.max_sessions);
    set(&mut c.relay.max_sessions_per_user, r.max_sessions_per_user);
    set(
        &mut c.relay.bytes_per_sec_per_user,
        r.bytes_per_sec_per_user,
    );

    // The flags.
    set(&mut c.listen, flags.listen);
    set(&mut c.open_registration, flags.open_registration);
    set(&mut c.idle_timeout, flags.idle_timeout.map(secs));
    set(&mut c.ticket_lifetime, flags.ticket_lifetime.map(secs));
    set(&mut c.max_connections, flags.max_connections);
    set(&mut c.max_connections_per_ip, flags.max_connections_per_ip);
    set(&mut c.max_anonymous, flags.max_anonymous);
    set(&mut c.max_anonymous_per_ip, flags.max_anonymous_per_ip);
    if flags.status.is_some() {
        c.status = flags.status;
    }
    if let Some(t) = &flags.status_token {
        c.status_token = Some(Secret(t.clone()));
    }

    let log = LogSettings {
        filter: flags
            .log_filter
            .clone()
            .or(rust_log.filter(|v| !v.trim().is_empty()))
            .or_else(|| file.log.filter.clone())
            .unwrap_or_else(|| default_filter.to_string()),
        format: flags.log_format.or(file.log.format).unwrap_or_default(),
    };
    check(&c, &log)?;
    Ok(Effective {
        config: c,
        log,
        file: None,
    })
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// Refuses settings that cannot work.
fn check(c: &Config, log: &LogSettings) -> anyhow::Result<()> {
    let positive = [
        ("idle_timeout", c.idle_timeout.as_secs()),
        ("ticket_lifetime", c.ticket_lifetime.as_secs()),
        ("max_connections", c.max_connections as u64),
        ("max_connections_per_ip", c.max_connections_per_ip as u64),
        (
            "max_streams_per_connection",
            u64::from(c.max_streams_per_connection),
        ),
        ("handshake_burst", c.handshake_burst.map_or(1, u64::from)),
        (
            "handshakes_per_sec",
            c.handshakes_per_sec.map_or(1, u64::from),
        ),
        ("hello_timeout", c.hello_timeout.as_secs()),
        ("max_anonymous", c.max_anonymous as u64),
        ("max_anonymous_per_ip", c.max_anonymous_per_ip as u64),
        ("login_timeout", c.login_timeout.as_secs()),
        ("frame_timeout", c.frame_timeout.as_secs()),
        ("write_timeout", c.write_timeout.as_secs()),
        ("notify_queue", c.notify_queue as u64),
        ("requests_per_sec", u64::from(c.requests_per_sec)),
        ("request_burst", u64::from(c.request_burst)),
        ("mailbox.lifetime_secs", c.mailbox.lifetime.as_secs()),
        ("mailbox.max_messages", u64::from(c.mailbox.max_messages)),
        ("mailbox.max_bytes", c.mailbox.max_bytes),
        (
            "mailbox.max_messages_per_sender",
            u64::from(c.mailbox.max_messages_per_sender),
        ),
        (
            "mailbox.max_bytes_per_sender",
            c.mailbox.max_bytes_per_sender,
        ),
        ("mailbox.max_total_bytes", c.mailbox.max_total_bytes),
        ("max_concurrent_hashes", c.max_concurrent_hashes as u64),
        ("lockout.max_failures", u64::from(c.lockout.max_failures)),
        ("lockout.base_secs", c.lockout.base.as_secs()),
        (
            "source_limit.max_failures",
            u64::from(c.source_limit.max_failures),
        ),
        (
            "source_limit.max_sources",
            c.source_limit.max_sources as u64,
        ),
        (
            "password_cost.iterations",
            u64::from(c.password_cost.iterations),
        ),
        (
            "password_cost.parallelism",
            u64::from(c.password_cost.parallelism),
        ),
        ("relay.max_sessions", c.relay.max_sessions as u64),
        (
            "relay.max_sessions_per_user",
            c.relay.max_sessions_per_user as u64,
        ),
        (
            "relay.bytes_per_sec_per_user",
            c.relay.bytes_per_sec_per_user,
        ),
    ];
    for (key, value) in positive {
        if value == 0 {
            bail!("{key} must be at least 1");
        }
    }
    if c.cluster.heartbeat.is_zero() || c.cluster.expiry < c.cluster.heartbeat * 2 {
        bail!("cluster.expiry_secs must be at least twice cluster.heartbeat_secs (at least 1)");
    }
    if c.lockout.max < c.lockout.base || c.lockout.max > MAX_LOCKOUT {
        bail!(
            "lockout.max_secs must be between lockout.base_secs and {} (one year)",
            MAX_LOCKOUT.as_secs()
        );
    }
    if c.password_cost.memory_kib < 8 * c.password_cost.parallelism {
        bail!("password_cost.memory_kib must be at least 8 per lane (parallelism)");
    }
    if let Some(token) = &c.status_token
        && token.0.trim().len() < MIN_TOKEN_LEN
    {
        bail!("status_token must be at least {MIN_TOKEN_LEN} characters");
    }
    tracing_subscriber::EnvFilter::try_new(&log.filter)
        .map_err(|e| anyhow::anyhow!("log filter {:?}: {e}", log.filter))?;
    Ok(())
}

/// The effective settings as a configuration file: every key, with its value in force
/// (what `directory config print` shows). The status token is never printed.
pub fn render(e: &Effective) -> String {
    let c = &e.config;
    let q = |s: &str| toml_string(s);
    let mut out = String::new();
    out.push_str(&format!(
        "# Effective configuration of the Natter directory (file: {}).\n\
         # Precedence: default < file < environment < flags.\n\n",
        e.file
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into())
    ));
    out.push_str(&format!(
        "data = {}\n",
        q(&c.data_dir.display().to_string())
    ));
    out.push_str(&format!("listen = {}\n", q(&c.listen.to_string())));
    out.push_str(&format!("open_registration = {}\n", c.open_registration));
    out.push_str(&format!("idle_timeout = {}\n", c.idle_timeout.as_secs()));
    out.push_str(&format!(
        "ticket_lifetime = {}\n",
        c.ticket_lifetime.as_secs()
    ));
    out.push_str(&format!("max_connections = {}\n", c.max_connections));
    out.push_str(&format!(
        "max_connections_per_ip = {}\n",
        c.max_connections_per_ip
    ));
    match c.handshake_burst {
        Some(n) => out.push_str(&format!("handshake_burst = {n}\n")),
        None => out.push_str(&format!(
            "# handshake_burst = {}  (as max_connections_per_ip)\n",
            c.effective_handshake_burst()
        )),
    }
    match c.handshakes_per_sec {
        Some(n) => out.push_str(&format!("handshakes_per_sec = {n}\n")),
        None => out.push_str(&format!(
            "# handshakes_per_sec = {}  (a quarter of the burst)\n",
            c.effective_handshakes_per_sec()
        )),
    }
    out.push_str(&format!(
        "max_streams_per_connection = {}\n",
        c.max_streams_per_connection
    ));
    out.push_str(&format!("hello_timeout = {}\n", c.hello_timeout.as_secs()));
    out.push_str(&format!("max_anonymous = {}\n", c.max_anonymous));
    out.push_str(&format!(
        "max_anonymous_per_ip = {}\n",
        c.max_anonymous_per_ip
    ));
    out.push_str(&format!("login_timeout = {}\n", c.login_timeout.as_secs()));
    out.push_str(&format!("frame_timeout = {}\n", c.frame_timeout.as_secs()));
    out.push_str(&format!("write_timeout = {}\n", c.write_timeout.as_secs()));
    out.push_str(&format!("notify_queue = {}\n", c.notify_queue));
    out.push_str(&format!("requests_per_sec = {}\n", c.requests_per_sec));
    out.push_str(&format!("request_burst = {}\n", c.request_burst));
    out.push_str(&format!(
        "max_concurrent_hashes = {}\n",
        c.max_concurrent_hashes
    ));
    out.push_str(&format!(
        "shutdown_grace = {}\n",
        c.shutdown_grace.as_secs()
    ));
    match c.status {
        Some(addr) => out.push_str(&format!("status = {}\n", q(&addr.to_string()))),
        None => out.push_str("# status = \"127.0.0.1:8080\"  (off)\n"),
    }
    match &c.database {
        Some(_) => out.push_str("# database = (PostgreSQL; not shown: it may hold a password)\n"),
        None => out.push_str("# database = (SQLite in the data directory)\n"),
    }
    match &c.status_token {
        Some(_) => out.push_str("# status_token = (set; not shown)\n"),
        None => out.push_str("# status_token = (not set)\n"),
    }
    out.push_str(&format!(
        "\n[lockout]\nmax_failures = {}\nbase_secs = {}\nmax_secs = {}\n",
        c.lockout.max_failures,
        c.lockout.base.as_secs(),
        c.lockout.max.as_secs()
    ));
    let s = &c.source_limit;
    out.push_str(&format!(
        "\n[source_limit]\nmax_failures = {}\nwindow_secs = {}\nblock_secs = {}\nmax_block_secs = {}\nmax_sources = {}\n",
        s.max_failures,
        s.window.as_secs(),
        s.block.as_secs(),
        s.max_block.as_secs(),
        s.max_sources
    ));
    let p = &c.password_cost;
    out.push_str(&format!(
        "\n[password_cost]\nmemory_kib = {}\niterations = {}\nparallelism = {}\n",
        p.memory_kib, p.iterations, p.parallelism
    ));
    out.push_str(&format!(
        "\n[log]\nfilter = {}\nformat = {}\n",
        q(&e.log.filter),
        q(e.log.format.as_str())
    ));
    out.push_str(&format!(
        "\n[audit]\nmax_bytes = {}\nkeep = {}\n",
        c.audit_rotation.max_bytes, c.audit_rotation.keep
    ));
    let r = &c.relay;
    out.push_str(&format!(
        "\n[relay]\nenabled = {}\nmax_sessions = {}\nmax_sessions_per_user = {}\nbytes_per_sec_per_user = {}\n",
        r.enabled, r.max_sessions, r.max_sessions_per_user, r.bytes_per_sec_per_user
    ));
    out.push_str(&format!(
        "\n[mailbox]\nlifetime_secs = {}\nmax_messages = {}\nmax_bytes = {}\nmax_messages_per_sender = {}\nmax_bytes_per_sender = {}\nmax_total_bytes = {}\n",
        c.mailbox.lifetime.as_secs(),
        c.mailbox.max_messages,
        c.mailbox.max_bytes,
        c.mailbox.max_messages_per_sender,
        c.mailbox.max_bytes_per_sender,
        c.mailbox.max_total_bytes
    ));
    out.push_str("\n[cluster]\n");
    match c.cluster_address {
        Some(addr) => out.push_str(&format!("address = {}\n", q(&addr.to_string()))),
        None => out.push_str(
            "# address = (the listening address; 0.0.0.0 becomes the address toward the database)\n",
        ),
    }
    out.push_str(&format!(
        "heartbeat_secs = {}\nexpiry_secs = {}\n",
        c.cluster.heartbeat.as_secs(),
        c.cluster.expiry.as_secs()
    ));
    out
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Sets up `tracing` for the process: `settings.filter` (per-module directives), as
/// text (coloured on a terminal) or JSON lines, on stderr.
pub fn init_logging(settings: &LogSettings) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.filter)
        .map_err(|e| anyhow::anyhow!("log filter {:?}: {e}", settings.filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match settings.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Option<PathBuf> {
        Some(PathBuf::from("/var/lib/natter"))
    }

    #[test]
    fn no_file_no_flags_gives_the_defaults() {
        let e = apply(
            &FileConfig::default(),
            &Overrides::default(),
            data(),
            None,
            "info",
        )
        .unwrap();
        let d = Config::new("/var/lib/natter");
        assert_eq!(e.config.listen, d.listen);
        assert_eq!(e.config.max_connections, d.max_connections);
        assert_eq!(e.config.lockout, d.lockout);
        assert_eq!(e.config.status, None);
        assert_eq!(e.log.filter, "info");
        assert_eq!(e.log.format, LogFormat::Text);
    }

    #[test]
    fn file_over_defaults_and_flags_over_file() {
        let file = parse(
            r#"
            listen = "127.0.0.1:9000"
            open_registration = true
            idle_timeout = 30
            max_connections = 50
            status = "127.0.0.1:8080"
            status_token = "0123456789abcdef"
            [lockout]
            max_failures = 5
            [log]
            filter = "warn,directory::auth=debug"
            format = "json"
            [audit]
            max_bytes = 1000
            keep = 2
            [cluster]
            address = "10.0.0.5:8888"
            heartbeat_secs = 1
            expiry_secs = 4
            "#,
        )
        .unwrap();
        let e = apply(&file, &Overrides::default(), data(), None, "info").unwrap();
        assert_eq!(e.config.listen, "127.0.0.1:9000".parse().unwrap());
        assert!(e.config.open_registration);
        assert_eq!(e.config.idle_timeout, Duration::from_secs(30));
        assert_eq!(e.config.max_connections, 50);
        assert_eq!(e.config.lockout.max_failures, 5);
        assert_eq!(
            e.config.lockout.base,
            Duration::from_secs(30),
            "default kept"
        );
        assert_eq!(e.config.status, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(e.config.audit_rotation.keep, 2);
        assert_eq!(
            e.config.cluster_address,
            Some("10.0.0.5:8888".parse().unwrap())
        );
        assert_eq!(e.config.cluster.heartbeat, Duration::from_secs(1));
        assert_eq!(e.config.cluster.expiry, Duration::from_secs(4));
        assert_eq!(e.log.filter, "warn,directory::auth=debug");
        assert_eq!(e.log.format, LogFormat::Json);

        // RUST_LOG beats the file; flags beat both.
        let e = apply(
            &file,
            &Overrides::default(),
            data(),
            Some("debug".into()),
            "info",
        )
        .unwrap();
        assert_eq!(e.log.filter, "debug");
        let flags = Overrides {
            listen: Some("127.0.0.1:9999".parse().unwrap()),
            open_registration: Some(false),
            max_connections: Some(7),
            log_filter: Some("error".into()),
            log_format: Some(LogFormat::Text),
            data: Some("/srv/natter".into()),
            ..Overrides::default()
        };
        let e = apply(&file, &flags, data(), Some("debug".into()), "info").unwrap();
        assert_eq!(e.config.listen, "127.0.0.1:9999".parse().unwrap());
        assert!(!e.config.open_registration);
        assert_eq!(e.config.max_connections, 7);
        assert_eq!(e.config.idle_timeout, Duration::from_secs(30), "file kept");
        assert_eq!(e.config.data_dir, PathBuf::from("/srv/natter"));
        assert_eq!(e.log.filter, "error");
        assert_eq!(e.log.format, LogFormat::Text);
    }

    #[test]
    fn mistakes_are_refused() {
        assert!(parse("lisen = \"127.0.0.1:1\"").is_err(), "unknown key");
        assert!(
            parse("[lockout]\nmax_failure = 3").is_err(),
            "unknown key in a table"
        );
        assert!(parse("listen = 8888").is_err(), "wrong type");
        assert!(parse("[log]\nformat = \"xml\"").is_err());
        let bad = |text: &str| {
            apply(
                &parse(text).unwrap(),
                &Overrides::default(),
                data(),
                None,
                "info",
            )
            .unwrap_err()
            .to_string()
        };
        assert!(bad("max_connections = 0").contains("max_connections"));
        assert!(bad("status_token = \"short\"").contains("status_token"));
        assert!(bad("[lockout]\nmax_secs = 99999999999").contains("lockout.max_secs"));
        assert!(bad("[log]\nfilter = \"info,=[\"").contains("log filter"));
        assert!(bad("[cluster]\nexpiry_secs = 3").contains("cluster.expiry_secs"));
        assert!(bad("[cluster]\nheartbeat_secs = 0").contains("cluster.expiry_secs"));
        let no_data = apply(
            &FileConfig::default(),
            &Overrides::default(),
            None,
            None,
            "info",
        );
        assert!(no_data.unwrap_err().to_string().contains("--data"));
    }

    #[test]
    fn printed_configuration_reads_back_the_same() {
        let file = parse(
            "listen = \"127.0.0.1:9000\"\nstatus = \"127.0.0.1:8080\"\nstatus_token = \"0123456789abcdef\"\n[password_cost]\nmemory_kib = 4096\n",
        )
        .unwrap();
        let e = apply(&file, &Overrides::default(), data(), None, "info").unwrap();
        let text = render(&e);
        assert!(!text.contains("0123456789abcdef"), "{text}");
        let again = apply(
            &parse(&text).unwrap(),
            &Overrides::default(),
            None,
            None,
            "x",
        )
        .unwrap();
        assert_eq!(again.config.listen, e.config.listen);
        assert_eq!(again.config.data_dir, e.config.data_dir);
        assert_eq!(again.config.status, e.config.status);
        assert_eq!(again.config.password_cost, e.config.password_cost);
        assert_eq!(again.config.source_limit, e.config.source_limit);
        assert_eq!(again.config.audit_rotation, e.config.audit_rotation);
        assert_eq!(again.log, e.log);
    }

    #[test]
    fn handshake_rate_follows_the_per_ip_cap_unless_set() {
        let e = apply(
            &parse("max_connections_per_ip = 100\nwrite_timeout = 2\n").unwrap(),
            &Overrides::default(),
            data(),
            None,
            "info",
        )
        .unwrap();
        assert_eq!(e.config.effective_handshake_burst(), 100);
        assert_eq!(e.config.effective_handshakes_per_sec(), 25);
        assert_eq!(e.config.write_timeout, Duration::from_secs(2));
        let text = render(&e);
        assert!(text.contains("# handshake_burst = 100"), "{text}");
        let e = apply(
            &parse("handshake_burst = 8\nhandshakes_per_sec = 3\n").unwrap(),
            &Overrides::default(),
            data(),
            None,
            "info",
        )
        .unwrap();
        assert_eq!(e.config.effective_handshake_burst(), 8);
        assert_eq!(e.config.effective_handshakes_per_sec(), 3);
        let again = apply(
            &parse(&render(&e)).unwrap(),
            &Overrides::default(),
            None,
            None,
            "x",
        )
        .unwrap();
        assert_eq!(again.config.handshake_burst, Some(8));
        assert_eq!(again.config.handshakes_per_sec, Some(3));
        assert_eq!(again.config.write_timeout, e.config.write_timeout);
        assert!(
            apply(
                &parse("handshake_burst = 0").unwrap(),
                &Overrides::default(),
                data(),
                None,
                "info"
            )
            .is_err()
        );
    }

    #[test]
    fn the_file_in_the_data_directory_is_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "max_connections = 12\n").unwrap();
        let flags = Overrides {
            data: Some(dir.path().to_path_buf()),
            ..Overrides::default()
        };
        let e = resolve(&flags, None, None, "info").unwrap();
        assert_eq!(e.config.max_connections, 12);
        assert_eq!(e.file, Some(dir.path().join(CONFIG_FILE)));
        std::fs::write(dir.path().join(CONFIG_FILE), "data = \"/elsewhere\"\n").unwrap();
        assert!(resolve(&flags, None, None, "info").is_err());
    }
}
