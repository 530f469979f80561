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
//! - [`server`]: [`Directory`] — start-up, the accept loop, maintenance, graceful shutdown.
//! - [`connection`]: one connection's control stream and its state machine
//!   (Hello → requests), hostile-input handling, close codes.
//! - [`control`]: the control stream's mechanics: framed reads with deadlines, writes,
//!   closing so that the last message is delivered.
//! - [`auth`]: `Register`, `Login`, `Resume` — the order of checks and their replies.
//! - [`lookup`]: `Lookup` and `Who`.
//! - [`presence`]: who is online, owned per connection; replacing an older session.
//! - [`password`]: argon2id hashing off the runtime, bounded.
//! - [`lockout`]: the account lockout policy (pure).
//! - [`ratelimit`]: failed logins per source address.
//! - [`limits`]: connections in total and per source address.
//! - [`ticket`]: session tickets for cheap re-login.
//! - [`store`]: the storage trait; [`store::sqlite`] its SQLite backend.
//! - [`admin`]: operator actions (`directory user ...`).
//! - [`audit`]: the audit trail (tracing target `audit` and `<data>/audit.log`).
//! - [`keys`]: the data directory and the directory's identity key file.
//! - [`tls`]: certificate → rustls → quinn server configuration with transport limits.
//! - [`config`]: every tunable and its default.
//! - [`state`]: the state all connection tasks share.
//! - [`shutdown`]: the shutdown signal.
//! - [`clock`]: Unix time and UTC formatting.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod connection;
pub mod control;
pub mod keys;
pub mod limits;
pub mod lockout;
pub mod lookup;
pub mod password;
pub mod presence;
pub mod ratelimit;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod ticket;
pub mod tls;

pub use admin::{Admin, AdminError, UserSummary};
pub use config::{Config, DEFAULT_PORT, default_data_dir};
pub use connection::close;
pub use password::PasswordCost;
pub use server::Directory;
