//! The `directory` binary's path (Cargo gives it to this crate's tests only), bound into
//! testkit's process helpers.

#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};

use testkit::DirectoryProcess;
use tokio::process::Child;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_directory");

/// Runs `directory ARGS --data DATA` with `stdin` fed in, and waits for it.
pub async fn run(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    testkit::process::run_directory(Path::new(BIN), data, args, stdin).await
}

/// Starts `directory --data DATA serve ARGS`, its log going to `stderr`.
pub async fn serve(data: &Path, args: &[&str], stderr: impl Into<Stdio>) -> DirectoryProcess {
    testkit::process::serve(Path::new(BIN), data, args, stderr).await
}

/// `serve` on a fresh loopback port with cheap password hashing, its log on our stderr.
pub async fn serve_cheap(data: &Path) -> (Child, SocketAddr) {
    testkit::process::serve_cheap(Path::new(BIN), data).await
}
