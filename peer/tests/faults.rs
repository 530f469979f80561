//! The directory dies under two chatting `peer` processes: the real `directory` binary is
//! killed with SIGKILL, the chat goes on without it, and when it is started again on the
//! same data directory and port both peers log back in by themselves (session ticket,
//! back-off with jitter) and say so: `info text=logged back in to the directory at ADDR`.
//!
//! The `directory` binary belongs to another package, so Cargo does not build it for this
//! one's tests: [`directory_binary`] asks Cargo for it (a no-op when it is up to date),
//! or takes `NATTER_DIRECTORY_BIN`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

const PEER: &str = env!("CARGO_BIN_EXE_peer");
const WAIT: Duration = Duration::from_secs(15);
/// Noticing a silent directory takes the peer's idle timeout (8 s); logging back in, a
/// few back-off steps more.
const RELOGIN_WAIT: Duration = Duration::from_secs(25);
const PASSWORD: &str = "correct horse battery";

/// The `directory` binary, built by Cargo into this target directory if need be.
fn directory_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATTER_DIRECTORY_BIN") {
        return path.into();
    }
    let peer = Path::new(PEER);
    let profile_dir = peer.parent().expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("target");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut cargo = std::process::Command::new(env!("CARGO"));
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

/// A running `directory serve`; killed when dropped.
struct Directory {
    child: Child,
    addr: SocketAddr,
}

impl Directory {
    async fn start(bin: &Path, data: &Path, listen: &str) -> Directory {
        let mut child = Command::new(bin)
            .arg("--data")
            .arg(data)
            .args(["serve", "--listen", listen])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("directory starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = timeout(WAIT, lines.next_line())
                .await
                .expect("directory printed nothing")
                .unwrap()
                .expect("directory exited before listening");
            if let Some(addr) = line.strip_prefix("listening on ") {
                return Directory {
                    child,
                    addr: addr.parse().unwrap(),
                };
            }
        }
    }

    /// kill -9 (what `Child::kill` sends on Unix), and reap it.
    async fn sigkill(mut self) {
        timeout(WAIT, self.child.kill()).await.unwrap().unwrap();
    }
}

/// A `peer` child process in scripted mode, read line by line; killed when dropped.
struct PeerProcess {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    seen: Vec<String>,
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl PeerProcess {
    fn spawn(name: &str, profile: &Path, directory: SocketAddr, args: &[&str]) -> Self {
        let mut cmd = Command::new(PEER);
        for var in ["PEER_PROFILE", "PEER_DIRECTORY", "PEER_USER", "RUST_LOG"] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .arg("--profile")
            .arg(profile)
            .args(["--directory", &directory.to_string(), "--user", name])
            .args(args)
            .env("PEER_PASSWORD", PASSWORD)
            .env("HOME", profile)
            // The cheapest vault (a real one takes seconds in a debug build).
            .env("NATTER_VAULT_COST", "8,1,1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("peer starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            name: name.into(),
            child,
            stdin,
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Reads stdout until a line starts with `prefix`, for at most `limit`.
    async fn expect_within(&mut self, limit: Duration, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                outcome => panic!(
                    "[{}] no line starting {prefix:?} ({outcome:?})\nstdout:\n  {}\nstderr:\n  {}",
                    self.name,
                    self.seen.join("\n  "),
                    self.stderr.lock().unwrap().replace('\n', "\n  ")
                ),
            }
        }
    }

    async fn expect(&mut self, prefix: &str) -> String {
        self.expect_within(WAIT, prefix).await
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }
}

/// `directory user add NAME --password-stdin`.
async fn add_user(bin: &Path, data: &Path, name: &str) {
    let mut child = Command::new(bin)
        .arg("--data")
        .arg(data)
        .args(["user", "add", name, "--password-stdin"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_chat_on_while_the_directory_is_killed_and_log_back_in_when_it_returns() {
    let bin = tokio::task::spawn_blocking(directory_binary).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("directory");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("directory.toml"),
        "[password_cost]\nmemory_kib = 8\niterations = 1\nparallelism = 1\n",
    )
    .unwrap();
    add_user(&bin, &data, "ali").await;
    add_user(&bin, &data, "bianca").await;
    let directory = Directory::start(&bin, &data, "127.0.0.1:0").await;
    let addr = directory.addr;

    let (ali_profile, bianca_profile) = (tmp.path().join("ali"), tmp.path().join("bianca"));
    let mut bianca = PeerProcess::spawn(
        "bianca",
        &bianca_profile,
        addr,
        &["listen", "--listen", "127.0.0.1:0"],
    );
    bianca.expect("listening addr=").await;
    let mut ali = PeerProcess::spawn(
        "ali",
        &ali_profile,
        addr,
        &["connect", "bianca", "--listen", "127.0.0.1:0"],
    );
    ali.expect("connected peer=bianca ").await;
    bianca.expect("connected peer=ali ").await;
    ali.send("before").await;
    bianca.expect("msg from=ali id=1 text=before").await;

    // kill -9 the directory. The chat is direct: it does not notice.
    directory.sigkill().await;
    ali.send("while it is dead").await;
    bianca
        .expect("msg from=ali id=2 text=while it is dead")
        .await;
    ali.expect("delivered to=bianca id=2").await;

    // The peers notice the silence (idle timeout) and start trying to log back in.
    ali.expect_within(RELOGIN_WAIT, "warning text=lost the directory")
        .await;
    bianca
        .expect_within(RELOGIN_WAIT, "warning text=lost the directory")
        .await;
    bianca.send("still here").await;
    ali.expect("msg from=bianca id=1 text=still here").await;

    // Back on the same data directory and port: same key, same accounts, same tickets.
    let directory = Directory::start(&bin, &data, &addr.to_string()).await;
    ali.expect_within(RELOGIN_WAIT, "info text=logged back in to the directory")
        .await;
    bianca
        .expect_within(RELOGIN_WAIT, "info text=logged back in to the directory")
        .await;
    // The directory knows both again.
    ali.send("/who").await;
    let count = ali.expect("who count=").await;
    assert_eq!(count, "who count=2", "{:?}", ali.seen);
    ali.send("after").await;
    bianca.expect("msg from=ali id=3 text=after").await;
    drop(directory);
}
