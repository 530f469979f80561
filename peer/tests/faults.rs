//! The directory dies under two chatting `peer` processes: the real `directory` binary is
//! killed with SIGKILL, the chat goes on without it, and when it is started again on the
//! same data directory and port both peers log back in by themselves (session ticket,
//! back-off with jitter) and say so: `info text=logged back in to the directory at ADDR`.
//!
//! The `directory` binary belongs to another package, so Cargo does not build it for this
//! one's tests: `testkit::process::directory_binary` asks Cargo for it (a no-op when it is up to date),
//! or takes `NATTER_DIRECTORY_BIN`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use testkit::process::{CHEAP_HASHING, directory_binary, run_directory, serve};
use testkit::{DirectoryProcess, PASSWORD, PeerProcess};
use tokio::process::Command;

const PEER: &str = env!("CARGO_BIN_EXE_peer");
/// Noticing a silent directory takes the peer's idle timeout (8 s); logging back in, a
/// few back-off steps more.
const RELOGIN_WAIT: Duration = Duration::from_secs(25);

/// `peer --profile P --directory D --user NAME ARGS` in scripted mode, with a clean
/// environment and the cheapest vault (a real one takes seconds in a debug build).
fn spawn_peer(name: &str, profile: &Path, directory: SocketAddr, args: &[&str]) -> PeerProcess {
    let mut cmd = Command::new(PEER);
    for var in ["PEER_PROFILE", "PEER_DIRECTORY", "PEER_USER", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd.arg("--profile")
        .arg(profile)
        .args(["--directory", &directory.to_string(), "--user", name])
        .args(args)
        .env("PEER_PASSWORD", PASSWORD)
        .env("HOME", profile)
        .env("NATTER_VAULT_COST", "8,1,1");
    PeerProcess::spawn(name, cmd)
}

/// `directory user add NAME --password-stdin`.
async fn add_user(bin: &Path, data: &Path, name: &str) {
    let args = ["user", "add", name, "--password-stdin"];
    let out = run_directory(bin, data, &args, Some(&format!("{PASSWORD}\n"))).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `directory serve --listen LISTEN` on `data`, its log on our stderr.
async fn serve_on(bin: &Path, data: &Path, listen: &str) -> DirectoryProcess {
    serve(bin, data, &["--listen", listen], Stdio::inherit()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_chat_on_while_the_directory_is_killed_and_log_back_in_when_it_returns() {
    let bin = tokio::task::spawn_blocking(directory_binary).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("directory");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("directory.toml"), CHEAP_HASHING).unwrap();
    add_user(&bin, &data, "ali").await;
    add_user(&bin, &data, "bianca").await;
    let directory = serve_on(&bin, &data, "127.0.0.1:0").await;
    let addr = directory.addr;

    let (ali_profile, bianca_profile) = (tmp.path().join("ali"), tmp.path().join("bianca"));
    let mut bianca = spawn_peer(
        "bianca",
        &bianca_profile,
        addr,
        &["listen", "--listen", "127.0.0.1:0"],
    );
    bianca.expect("listening addr=").await;
    let mut ali = spawn_peer(
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
    ali.expect_prefix_within(RELOGIN_WAIT, "warning text=lost the directory")
        .await;
    bianca
        .expect_prefix_within(RELOGIN_WAIT, "warning text=lost the directory")
        .await;
    bianca.send("still here").await;
    ali.expect("msg from=bianca id=1 text=still here").await;

    // Back on the same data directory and port: same key, same accounts, same tickets.
    let directory = serve_on(&bin, &data, &addr.to_string()).await;
    ali.expect_prefix_within(RELOGIN_WAIT, "info text=logged back in to the directory")
        .await;
    bianca
        .expect_prefix_within(RELOGIN_WAIT, "info text=logged back in to the directory")
        .await;
    // The directory knows both again.
    ali.send("/who").await;
    let count = ali.expect("who count=").await;
    assert_eq!(count, "who count=2", "{:?}", ali.seen);
    ali.send("after").await;
    bianca.expect("msg from=ali id=3 text=after").await;
    drop(directory);
}
