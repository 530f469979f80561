//! What the load generator (`loadgen`) and the benchmark suite (`bench`) share: simulated
//! peers against a real directory on loopback, and the measuring around them.
//!
//! ```text
//! cargo run --release -p tools --bin loadgen -- --peers 10000
//! cargo run --release -p tools --bin bench -- --out BENCHMARKS.md
//! ```
//!
//! # Layout
//! - `accounts.rs`: the generated accounts and their cache under `target/`.
//! - `deployment.rs`: the directory service under load: one instance on SQLite, or N
//!   on a scratch schema of a PostgreSQL database.
//! - `server.rs`: the directory child process (start, restart, stop, `/proc` figures).
//! - `swarm.rs`: the crowd of simulated peers and the checked operations they run.
//! - `chatpeer.rs`: peers that open real chats with each other.
//! - `procfs.rs`: a process's CPU and memory from `/proc`.
//! - `stats.rs`: percentiles and the way figures are printed.
//!
//! The binaries: `src/bin/loadgen.rs` (N peers, a table of figures) and `src/bin/bench/`
//! (the scenarios and the Markdown report).

pub mod accounts;
pub mod chatpeer;
pub mod deployment;
pub mod procfs;
pub mod server;
pub mod stats;
pub mod swarm;
