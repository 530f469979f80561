//! The `peer` binary refuses names and passwords over the protocol's limits itself, with
//! one clear line, before it sends anything: a user learns what is wrong instead of
//! getting the directory's bare "invalid" or spending a login attempt on a password no
//! account can have. The directory address given is one nobody listens on, so a check
//! that is missing shows as a connection failure (or a hang) instead of the message.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

const PEER: &str = env!("CARGO_BIN_EXE_peer");
/// Far below the time a dial to a dead address takes to fail.
const QUICK: Duration = Duration::from_secs(5);

/// Runs `peer --profile P --directory <nowhere> ARGS` with `PEER_PASSWORD=password`;
/// returns its one line of stderr, checking it failed and took no time.
async fn fails_with_one_line(profile: &Path, password: &str, args: &[&str]) -> String {
    let nowhere = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cmd = Command::new(PEER);
    for var in ["PEER_PROFILE", "PEER_DIRECTORY", "PEER_USER", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd.arg("--profile")
        .arg(profile)
        .args(["--directory", &nowhere.to_string()])
        .args(args)
        .env("PEER_PASSWORD", password)
        .env("HOME", profile)
        // The cheapest vault: these tests time the failure, not argon2.
        .env("NATTER_VAULT_COST", "8,1,1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(QUICK * 3, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("peer {args:?} hung"))
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "peer {args:?} succeeded");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "peer {args:?}: {stderr}");
    assert!(
        started.elapsed() < QUICK,
        "peer {args:?} took {:?} (did it try the network?): {stderr}",
        started.elapsed()
    );
    lines[0].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_passwords_over_the_limits_are_refused_before_anything_is_sent() {
    let profile = tempfile::tempdir().unwrap();
    let p = profile.path();
    let good = "correct horse battery";
    let too_long_name = "n".repeat(proto::names::MAX_USERNAME + 1);
    let too_long_password = "p".repeat(proto::names::MAX_PASSWORD + 1);

    let line = fails_with_one_line(p, good, &["register", &too_long_name]).await;
    assert!(line.contains("1 to 32 characters"), "{line}");
    let line = fails_with_one_line(p, "short", &["register", "dora"]).await;
    assert!(line.contains("at least 6 characters"), "{line}");
    let line = fails_with_one_line(p, &too_long_password, &["register", "dora"]).await;
    assert!(line.contains("at most 1024 bytes"), "{line}");
    let line = fails_with_one_line(p, &too_long_password, &["--user", "dora", "who"]).await;
    assert!(line.contains("at most 1024 bytes"), "{line}");
    let line = fails_with_one_line(p, good, &["--user", &too_long_name, "who"]).await;
    assert!(line.contains("1 to 32 characters"), "{line}");
}
