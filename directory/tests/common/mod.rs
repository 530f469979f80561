//! What the tests of the `directory` binary share: running it, as one-shot commands and
//! as `serve` (whose first two lines of output are part of its contract).

#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use proto::message::{Event, Reply, Request, ServerMsg, login_transcript};
use proto::{Fingerprint, Identity};
use quinn::crypto::rustls::QuicClientConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_directory");
/// Upper bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(20);
/// `directory.toml` with the cheapest password hashing (tests exercise logic, not argon2).
pub const CHEAP_HASHING: &str =
    "[password_cost]\nmemory_kib = 8\niterations = 1\nparallelism = 1\n";

/// Runs `directory ARGS --data DATA` (the global flag after the subcommand, as scripts
/// may write it) with `stdin` fed in, and waits for it.
pub async fn run(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
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
pub struct Serving {
    pub child: Child,
    pub fingerprint: Fingerprint,
    pub addr: SocketAddr,
}

/// Starts `directory --data DATA serve ARGS` with its log going to `stderr`, and reads
/// the two lines it promises on stdout: the fingerprint, then the address.
pub async fn serve(data: &Path, args: &[&str], stderr: impl Into<Stdio>) -> Serving {
    let mut child = Command::new(BIN)
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
    Serving {
        child,
        fingerprint,
        addr,
    }
}

/// `serve` on a fresh loopback port with cheap password hashing, its log on our stderr.
pub async fn serve_cheap(data: &Path) -> (Child, SocketAddr) {
    std::fs::write(data.join("directory.toml"), CHEAP_HASHING).unwrap();
    let s = serve(data, &["--listen", "127.0.0.1:0"], Stdio::inherit()).await;
    (s.child, s.addr)
}

/// A raw protocol client (frames by hand), logged in.
pub struct Client {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

impl Client {
    /// Connects to the directory at `addr` and logs in as `user` with `password` and
    /// the key `identity`; panics unless granted.
    pub async fn login(addr: SocketAddr, user: &str, identity: &Identity, password: &str) -> Self {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let tls = proto::verify::client_config(None, None, proto::ALPN_DIRECTORY).unwrap();
        let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
        let conn = timeout(WAIT, endpoint.connect_with(config, addr, "natter").unwrap())
            .await
            .unwrap()
            .unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        let channel = directory::tls::client_channel_binding(&conn).unwrap();
        let mut client = Self {
            send,
            recv,
            _conn: conn,
            _endpoint: endpoint,
        };
        let hello = Request::Hello {
            version: proto::PROTOCOL_VERSION,
            software: "directory-test".into(),
        };
        let Reply::Welcome { nonce, .. } = client.request(hello).await else {
            panic!("no welcome")
        };
        let key = identity.public();
        let reply = client
            .request(Request::Login {
                user: user.parse().unwrap(),
                password: password.into(),
                identity: key,
                signature: identity.sign(&login_transcript(&channel, &nonce, user, &key)),
                addresses: vec![],
            })
            .await;
        assert!(matches!(reply, Reply::Granted { .. }), "{reply:?}");
        client
    }

    /// Sends `request`; the next message must be its reply.
    pub async fn request(&mut self, request: Request) -> Reply {
        self.send_request(&request).await;
        match self.next().await {
            Some(ServerMsg::Reply(reply)) => reply,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// Sends `request` and returns its reply, skipping events pushed meanwhile.
    pub async fn call(&mut self, request: Request) -> Reply {
        self.send_request(&request).await;
        loop {
            match self.next().await {
                Some(ServerMsg::Reply(reply)) => return reply,
                Some(ServerMsg::Event(_)) => continue,
                None => panic!("the directory closed the stream"),
            }
        }
    }

    /// The next message from the directory (`None`: the stream ended).
    pub async fn next(&mut self) -> Option<ServerMsg> {
        timeout(WAIT, proto::frame::read_frame(&mut self.recv))
            .await
            .expect("the directory said nothing")
            .unwrap()
    }

    /// Waits for an event the directory pushes.
    pub async fn event(&mut self) -> Event {
        match self.next().await {
            Some(ServerMsg::Event(e)) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    async fn send_request(&mut self, request: &Request) {
        proto::frame::write_frame(&mut self.send, request)
            .await
            .unwrap();
    }
}
