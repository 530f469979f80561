//! The Natter directory: the server every peer logs in to, to find the others.
//!
//! It keeps accounts (argon2id password hashes, identity keys) in SQLite, authenticates
//! users by password plus a signature with their identity key, knows who is online at
//! which addresses, and answers lookups from logged-in users. Peers talk to it over QUIC
//! (one connection, one control stream; see [`proto::message`]) and pin its key.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut config = directory::Config::new("/tmp/natter-dir");
//! config.listen = "127.0.0.1:0".parse()?;
//! let dir = directory::Directory::start(config).await?;
//! dir.add_user("ali", "correct horse", false).await?;
//! println!("directory fingerprint: {}", dir.fingerprint());
//! dir.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`server`]: [`Directory`] — start-up and the wiring of the parts (store, audit log,
//!   shared state, joining other instances), the accept loop, maintenance, graceful
//!   shutdown.
//! - [`connection`]: one connection's control stream and its state machine
//!   (Hello → requests), hostile-input handling, close codes.
//! - [`control`]: the control stream's mechanics: framed reads with deadlines, writes,
//!   closing so that the last message is delivered.
//! - [`auth`]: `Register`, `Login`, `Resume` — the order of checks and their replies.
//! - [`lookup`]: `Lookup` and `Who`.
//! - [`rendezvous`]: `Rendezvous` — a lookup that also tells the target who is coming
//!   from where, so both sides punch holes in their NATs at once.
//! - [`relay`]: relay streams for peers with no direct path — matching both sides of a
//!   token, splicing them, caps, bandwidth, counters.
//! - [`presence`]: who is online, owned per connection; replacing an older session;
//!   who hears about whose logins and logouts.
//! - [`mailbox`]: sealed mail for offline users — prekeys, deposit with expiry and
//!   quota, fetch, acknowledgement, receipts for the sender.
//! - [`rooms`]: room membership (durable, cached) and the room requests.
//! - [`password`]: argon2id hashing off the runtime, bounded.
//! - [`lockout`]: the account lockout policy (pure).
//! - [`ratelimit`]: failed logins per source address.
//! - [`limits`]: connections in total and per source address.
//! - [`ticket`]: session tickets for cheap re-login.
//! - [`store`]: the storage trait, [`store::open`] (the one place that chooses the
//!   backend) and [`store::StoreError`] (the backends' errors kept whole);
//!   [`store::sqlite`] its SQLite backend (the default), [`store::postgres`] its
//!   PostgreSQL backend (several instances, one user base).
//! - [`cluster`]: several instances on one PostgreSQL — presence mirrored across them,
//!   notifications forwarded, heartbeats and expiry ([`cluster::postgres`]).
//! - [`admin`]: operator actions on accounts (`directory user ...`, administrators).
//! - [`admin_requests`]: `Request::Admin` — administrators acting from their peers, and
//!   who may.
//! - [`operator`]: the local control socket that lets `directory shutdown` and
//!   `directory user logout` reach the running server.
//! - [`status`]: the status page, `/metrics` (Prometheus) and `/healthz` over HTTP:
//!   [`status::routes`] (server, token check), [`status::snapshot`] (what is gathered),
//!   [`status::prometheus`] (the text format), [`status::page`] (HTML, template in
//!   `status/page.html`).
//! - [`metrics`]: the counters behind them, an [`audit::AuditObserver`] of the audit
//!   trail (metrics imports audit, never the reverse).
//! - [`audit`]: the audit trail (tracing target `audit` and `<data>/audit.log`) and the
//!   observer trait it feeds; [`rotating_file`] rotates that file by size.
//! - [`keys`]: the data directory and the directory's identity key file.
//! - [`tls`]: certificate → rustls → quinn server configuration with transport limits.
//! - [`config`]: every tunable, its default and its validation, as one serde struct that
//!   is also the configuration file; the features' policy types and the data directory's
//!   file names (it imports nothing from the crate).
//! - [`config_file`]: finding and reading the file, the environment and flags over it,
//!   `config print`, logging set-up.
//! - [`state`]: the state all connection tasks share (state only; [`server`] builds it).
//! - [`shutdown`]: the shutdown signal.
//! - [`clock`]: Unix time and UTC formatting.

pub mod admin;
pub mod admin_requests;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod connection;
pub mod control;
pub mod keys;
pub mod limits;
pub mod lockout;
pub mod lookup;
pub mod mailbox;
pub mod metrics;
pub mod operator;
pub mod password;
pub mod presence;
pub mod ratelimit;
pub mod relay;
pub mod rendezvous;
pub mod rooms;
pub mod rotating_file;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod status;
pub mod store;
pub mod ticket;
pub mod tls;

pub use admin::{Admin, AdminError, UserSummary};
pub use config::{Config, DEFAULT_PORT, default_data_dir};
pub use connection::close;
pub use password::PasswordCost;
pub use server::Directory;
