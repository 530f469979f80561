//! The `directory` binary's interface contract, as scripts use it: `user add` from stdin,
//! `user list/unlock/remove` (also while the server runs), `serve` printing its
//! fingerprint and address, SIGTERM ending it with status 0, the same key after a restart.

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use proto::message::{Reply, Request, ServerMsg};
use proto::{Fingerprint, Identity};
use quinn::crypto::rustls::QuicClientConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

const BIN: &str = env!("CARGO_BIN_EXE_directory");
const WAIT: Duration = Duration::from_secs(20);

async fn directory(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data") // global flag after the subcommand
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Starts `directory serve` and reads the two lines it promises on stdout.
async fn serve(data: &Path) -> (Child, Fingerprint, std::net::SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--data"])
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
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
    (child, fingerprint, addr)
}

async fn terminate(mut child: Child) {
    let pid = child.id().unwrap() as libc::pid_t;
    // SAFETY: sending a signal to a child process we started and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = timeout(WAIT, child.wait())
        .await
        .expect("serve did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "serve exited with {status}");
}

#[tokio::test]
async fn user_commands_and_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("natter");

    let out = directory(
        &data,
        &["user", "add", "ali", "--admin", "--password-stdin"],
        Some("secret-ali\n"),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = directory(
        &data,
        &["user", "add", "ali", "--password-stdin"],
        Some("secret-ali\n"),
    )
    .await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("already exists") && err.trim().lines().count() == 1,
        "{err}"
    );
    let out = directory(&data, &["user", "add", "bob", "--password-stdin"], Some("")).await;
    assert!(!out.status.success());

    let (server, fingerprint, addr) = serve(&data).await;
    // The printed fingerprint is the key file's.
    let seed: [u8; 32] = std::fs::read(data.join("directory.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let key = Identity::from_secret_bytes(&seed).public();
    assert_eq!(fingerprint, key.fingerprint());
    // `directory fingerprint` prints the same (the server is running; it only reads).
    let out = directory(&data, &["fingerprint"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("directory fingerprint: {}", key.fingerprint())
    );

    // The CLI works on the database while the server runs.
    let out = directory(&data, &["user", "list"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&out);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("ali ") && l.contains("yes")),
        "{listed}"
    );
    let out = directory(&data, &["user", "unlock", "ali"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = directory(&data, &["user", "remove", "nobody"], None).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such user"), "{}", stderr(&out));

    // The server answers on the printed address with the printed key.
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let tls = proto::verify::client_config(None, Some(key), proto::ALPN_DIRECTORY).unwrap();
    let client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let conn = timeout(WAIT, endpoint.connect_with(client, addr, "natter").unwrap())
        .await
        .unwrap()
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    proto::frame::write_frame(
        &mut send,
        &Request::Hello {
            version: proto::PROTOCOL_VERSION,
            software: "cli-test".into(),
        },
    )
    .await
    .unwrap();
    let msg: Option<ServerMsg> = timeout(WAIT, proto::frame::read_frame(&mut recv))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            msg,
            Some(ServerMsg::Reply(Reply::Welcome {
                open_registration: false,
                ..
            }))
        ),
        "{msg:?}"
    );

    terminate(server).await;

    // Same data directory, same fingerprint.
    let (server, again, _) = serve(&data).await;
    assert_eq!(again, fingerprint);
    terminate(server).await;

    let out = directory(&data, &["user", "remove", "ali"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let audit = std::fs::read_to_string(data.join("audit.log")).unwrap();
    assert!(audit.contains("admin action=add_admin user=ali"), "{audit}");
    assert!(audit.contains("admin action=remove user=ali"), "{audit}");
    assert!(!audit.contains("secret-ali"));
}
