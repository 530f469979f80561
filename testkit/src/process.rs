//! The programs as a user or an operator runs them: `directory` one-shot commands and
//! `directory serve` as child processes (whose first two lines of output are part of
//! their contract), and `peer` child processes in scripted mode, read line by line with a
//! deadline. Every child is killed when its guard is dropped, so a failing test leaves no
//! process behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::Fingerprint;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

use crate::WAIT;

/// `directory.toml` with the cheapest password hashing (tests exercise logic, not argon2).
pub const CHEAP_HASHING: &str =
    "[password_cost]\nmemory_kib = 8\niterations = 1\nparallelism = 1\n";

/// The `directory` binary of this build (in the target directory of the running test
/// executable), built by Cargo if need be (a no-op when it is up to date), or the one
/// `NATTER_DIRECTORY_BIN` names. For tests of other crates than `directory`, which Cargo
/// gives no `CARGO_BIN_EXE_directory`.
pub fn directory_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATTER_DIRECTORY_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cargo = std::process::Command::new(cargo);
    // Not the variables Cargo set for this test: build scripts (ring's) watch some of
    // them, and would run again, and make the next `cargo test` rebuild half the tree.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let ours = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_CFG_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*key);
        if ours {
            cargo.env_remove(&*key);
        }
    }
    cargo
        .args(["build", "--quiet", "-p", "directory", "--bin", "directory"])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("cargo runs");
    assert!(
        status.success(),
        "cannot build the directory binary ({status}); build it with \
         `cargo build -p directory` or point NATTER_DIRECTORY_BIN at it"
    );
    let bin = profile_dir.join("directory");
    assert!(bin.is_file(), "no {}", bin.display());
    bin
}

/// Runs `BIN ARGS --data DATA` (the global flag after the subcommand, as scripts
/// may write it) with `stdin` fed in, and waits for it.
pub async fn run_directory(bin: &Path, data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    timeout(WAIT, child.wait_with_output())
        .await
        .expect("directory command hung")
        .unwrap()
}

/// A running `directory serve` (killed when dropped) and what it printed.
pub struct DirectoryProcess {
    pub child: Child,
    pub fingerprint: Fingerprint,
    pub addr: SocketAddr,
}

/// Starts `BIN --data DATA serve ARGS` with its log going to `stderr`, and reads
/// the two lines it promises on stdout: the fingerprint, then the address.
pub async fn serve(
    bin: &Path,
    data: &Path,
    args: &[&str],
    stderr: impl Into<Stdio>,
) -> DirectoryProcess {
    let mut child = Command::new(bin)
        .arg("--data")
        .arg(data)
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        timeout(WAIT, lines.next_line())
            .await
            .expect("serve printed nothing")
            .unwrap()
            .expect("serve closed stdout")
    };
    let first = next().await;
    let fingerprint = first
        .strip_prefix("directory fingerprint: ")
        .and_then(Fingerprint::parse)
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let second = next().await;
    let addr = second
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected second line {second:?}"));
    DirectoryProcess {
        child,
        fingerprint,
        addr,
    }
}

/// `serve` on a fresh loopback port with cheap password hashing, its log on our stderr.
pub async fn serve_cheap(bin: &Path, data: &Path) -> (Child, SocketAddr) {
    std::fs::write(data.join("directory.toml"), CHEAP_HASHING).unwrap();
    let s = serve(bin, data, &["--listen", "127.0.0.1:0"], Stdio::inherit()).await;
    (s.child, s.addr)
}

impl DirectoryProcess {
    /// kill -9 (what `Child::kill` sends on Unix): no shutdown, no flush; and reaps it.
    pub async fn sigkill(mut self) {
        timeout(WAIT, self.child.kill()).await.unwrap().unwrap();
    }
}

/// A running `peer` child process, driven through its stdin and read line by line.
/// Dropping it kills the process.
pub struct PeerProcess {
    pub name: String,
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    /// Every stdout line read so far, for failure messages.
    pub seen: Vec<String>,
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl PeerProcess {
    /// Starts `cmd` (its stdin, stdout and stderr piped) as the process of user `name`.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("peer starts");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            name: name.to_string(),
            child,
            stdin,
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// What it printed so far, for failure messages.
    pub fn context(&self) -> String {
        format!(
            "[{}] stdout so far:\n  {}\nstderr so far:\n  {}",
            self.name,
            self.seen.join("\n  "),
            self.stderr.lock().unwrap().replace('\n', "\n  ")
        )
    }

    /// Reads stdout until a line satisfies `pred` (returned), failing after `limit`.
    pub async fn expect_within(
        &mut self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Ok(Ok(None)) => panic!("EOF while waiting for {what}\n{}", self.context()),
                Ok(Err(e)) => panic!("reading stdout: {e}\n{}", self.context()),
                Err(_) => panic!("no {what} within {limit:?}\n{}", self.context()),
            }
        }
    }

    /// Reads stdout until a line starts with `prefix`.
    pub async fn expect(&mut self, prefix: &str) -> String {
        self.expect_prefix_within(WAIT, prefix).await
    }

    /// Reads stdout until a line starts with `prefix`, failing after `limit`.
    pub async fn expect_prefix_within(&mut self, limit: Duration, prefix: &str) -> String {
        self.expect_within(limit, &format!("line starting {prefix:?}"), |l| {
            l.starts_with(prefix)
        })
        .await
    }

    /// Waits for a received message and checks that its text arrived unchanged.
    pub async fn expect_message(&mut self, from: &str, text: &str) {
        let prefix = format!("msg from={from} ");
        let line = self.expect(&prefix).await;
        let got = line.split_once(" text=").map(|(_, t)| t);
        assert_eq!(
            got,
            Some(text),
            "message from {from} changed on the way: {line:?}\n{}",
            self.context()
        );
    }

    /// Waits for `logged-in` and `listening`; returns the listening address.
    pub async fn online(&mut self) -> SocketAddr {
        let logged_in = self.expect("logged-in ").await;
        assert!(
            logged_in.contains(&format!("user={}", self.name)),
            "{logged_in}"
        );
        let line = self.expect("listening addr=").await;
        let addr: SocketAddr = line["listening addr=".len()..]
            .parse()
            .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
        assert_ne!(addr.port(), 0, "--listen with port 0 must pick a port");
        addr
    }

    /// Writes one line to its stdin.
    pub async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to peer's stdin");
        stdin.flush().await.expect("flush peer's stdin");
    }

    /// Closes its stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the process to exit; returns its status and the rest of its stdout.
    pub async fn exit(&mut self) -> (ExitStatus, Vec<String>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut rest = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => {
                    self.seen.push(line.clone());
                    rest.push(line);
                }
                Ok(Ok(None)) | Ok(Err(_)) => break,
                Err(_) => panic!("stdout did not end within {WAIT:?}\n{}", self.context()),
            }
        }
        let status = tokio::time::timeout_at(deadline, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("did not exit within {WAIT:?}\n{}", self.context()))
            .expect("wait for peer");
        (status, rest)
    }

    /// Closes stdin and checks that the program ends its chats and exits 0.
    pub async fn quit(&mut self) -> Vec<String> {
        self.close_stdin();
        let (status, rest) = self.exit().await;
        assert!(
            status.success(),
            "end of stdin must exit 0, got {status}\n{}",
            self.context()
        );
        rest
    }
}
