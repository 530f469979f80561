//! The harness every test uses (unpublished): real directories and peers on 127.0.0.1
//! port 0, real SQLite files, real TLS; the only stand-ins are the user and, for attacks,
//! a client or a dialer that writes the protocol by hand.
//!
//! # Layout
//! - `inproc.rs`: a [`TestDirectory`] (the directory library on a temp dir) and
//!   [`TestPeer`]s running the real app, driven like a script.
//! - `client.rs`: the peer library's directory client, logged in, without an app.
//! - `raw.rs`: [`RawClient`], the directory protocol written by hand, from any loopback
//!   source address.
//! - `dialer.rs`: [`RawDialer`], a peer doing the chat handshake by hand against the real
//!   acceptor, and [`EndpointPeer`], a user with just an identity and an endpoint.
//! - `process.rs`: the `directory` binary (one-shot commands, [`DirectoryProcess`] for
//!   `serve`) and [`PeerProcess`], the `peer` binary in scripted mode, as child processes.
//! - `http.rs`: [`http_get`], the status page's client.
//!
//! Every wait is bounded by [`WAIT`] (or a limit the test gives).

use std::time::Duration;

pub mod client;
pub mod dialer;
pub mod http;
pub mod inproc;
pub mod process;
pub mod raw;

pub use dialer::{EndpointPeer, RawDialer};
pub use http::http_get;
pub use inproc::{ChannelOutput, TestDirectory, TestPeer, options, options_at};
pub use process::{DirectoryProcess, PeerProcess};
pub use raw::RawClient;

/// How long a test waits for something that should happen, before failing.
pub const WAIT: Duration = Duration::from_secs(20);

/// The password every test user gets unless a test says otherwise.
pub const PASSWORD: &str = "correct horse battery";
