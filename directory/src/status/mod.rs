//! The status page, `/metrics` and `/healthz`: what the directory is doing, over HTTP
//! (axum), for the operator and for monitoring.
//!
//! | path           | what                                                         |
//! |----------------|--------------------------------------------------------------|
//! | `/`            | HTML page; its inline script refreshes it from `/status.json` |
//! | `/status.json` | the same figures as JSON ([`Snapshot`])                      |
//! | `/metrics`     | the counters in the Prometheus text format (version 0.0.4)   |
//! | `/healthz`     | `200 ok` while the QUIC listener runs, `503` once stopping   |
//!
//! **Access.** The page shows who is online, so it is not for everyone: bound to a
//! loopback address it is open to local users (like the data directory's owner); bound
//! anywhere else it needs a token, the configured `status_token` or, when none is set,
//! one made up at start and printed by `directory serve`. A configured token is required
//! on loopback too. The token goes in an `Authorization: Bearer TOKEN` header (Prometheus'
//! `authorization` setting) or a `?token=TOKEN` query (a browser; the page passes it on to
//! its refreshes). `/healthz` tells nothing and needs no token.
//!
//! Nothing here blocks the directory: every figure is an atomic or a short lock, except
//! the locked-account count, which lists accounts from the store (its own thread).
//!
//! - [`routes`]: the HTTP server ([`StatusServer`]), its routes and the token check.
//! - [`snapshot`]: what is gathered from the shared state ([`Snapshot`]).
//! - [`prometheus`]: the Prometheus text.
//! - [`page`]: the HTML page; its template is `status/page.html`.

pub mod page;
pub mod prometheus;
pub mod routes;
pub mod snapshot;

pub use page::{human_bytes, human_secs};
pub use routes::StatusServer;
pub use snapshot::{ClusterSnapshot, LockedAccount, Snapshot};
