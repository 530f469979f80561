//! The raw directory client: one QUIC connection, one control stream, frames written by
//! hand (no `peer` code), so that a test can send what a real peer never would and see
//! exactly what the directory answers.
//!
//! A client can be bound to any loopback address (127.0.0.2 is "another source address"
//! to the directory), pin the directory's key or not, and adjust its transport. The
//! panicking methods are for tests that expect an answer; the `try_` ones return the
//! failure as text, for tests where a broken connection is a possible outcome (a killed
//! directory, a full disk).

use std::borrow::Borrow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::message::{
    ChannelBinding, Event, Reply, Request, ServerMsg, login_transcript, resume_transcript,
};
use proto::{Identity, PublicKey};
use quinn::crypto::rustls::QuicClientConfig;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use crate::WAIT;

/// The addresses [`RawClient::logged_in`] reports as its own: a private one, as a peer
/// behind a NAT reports.
pub fn reported() -> [SocketAddr; 1] {
    ["192.168.1.20:7000".parse().expect("an address")]
}

/// A client endpoint bound to `ip` (any port).
pub fn endpoint(ip: &str) -> quinn::Endpoint {
    quinn::Endpoint::client(SocketAddr::new(ip.parse().expect("an IP address"), 0))
        .expect("a client endpoint")
}

/// Client settings pinning `key` (any key when `None`), with a keep-alive well under the
/// directory's idle timeouts like a real peer's; `tweak` adjusts the transport.
pub fn client_config(
    key: Option<PublicKey>,
    tweak: impl FnOnce(&mut quinn::TransportConfig),
) -> quinn::ClientConfig {
    let tls = proto::verify::client_config(None, key, proto::ALPN_DIRECTORY).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_millis(250)));
    tweak(&mut transport);
    config.transport_config(Arc::new(transport));
    config
}

/// One handshake from `endpoint` to the directory at `addr` with `key`; `Err` when the
/// directory refuses it.
pub async fn handshake(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    key: PublicKey,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let connecting = endpoint
        .connect_with(client_config(Some(key), |_| {}), addr, "natter")
        .unwrap();
    timeout(WAIT, connecting).await.expect("handshake hung")
}

/// A raw directory client.
pub struct RawClient {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    /// This connection's login nonce, once `Hello` is done.
    nonce: Option<[u8; 32]>,
    /// Events received while waiting for replies.
    pub events: Vec<Event>,
}

impl RawClient {
    /// Connects on `endpoint` (the directory then observes its address) to `addr`,
    /// pinning `key` if given; `Err` when the handshake fails or times out.
    pub async fn try_connect_on(
        endpoint: quinn::Endpoint,
        addr: SocketAddr,
        key: Option<PublicKey>,
        tweak: impl FnOnce(&mut quinn::TransportConfig),
    ) -> Result<RawClient, String> {
        let connecting = endpoint
            .connect_with(client_config(key, tweak), addr, "natter")
            .map_err(|e| e.to_string())?;
        let conn = match timeout(WAIT, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("handshake timed out".into()),
        };
        let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        Ok(RawClient {
            endpoint,
            conn,
            send,
            recv,
            nonce: None,
            events: Vec::new(),
        })
    }

    /// Like [`RawClient::try_connect_on`]; panics when the handshake fails.
    pub async fn connect_on(
        endpoint: quinn::Endpoint,
        addr: SocketAddr,
        key: Option<PublicKey>,
        tweak: impl FnOnce(&mut quinn::TransportConfig),
    ) -> RawClient {
        RawClient::try_connect_on(endpoint, addr, key, tweak)
            .await
            .unwrap_or_else(|e| panic!("connecting to the directory at {addr}: {e}"))
    }

    /// Connects from 127.0.0.1 to `addr`, pinning `key`.
    pub async fn connect(addr: SocketAddr, key: PublicKey) -> RawClient {
        RawClient::connect_on(endpoint("127.0.0.1"), addr, Some(key), |_| {}).await
    }

    /// Connects from 127.0.0.1 to `dir`.
    pub async fn to(dir: &directory::Directory) -> RawClient {
        RawClient::connect(dir.local_addr(), dir.public_key()).await
    }

    /// Connects from `ip` to `dir`.
    pub async fn from_ip(dir: &directory::Directory, ip: &str) -> RawClient {
        RawClient::from_ip_with(dir, ip, |_| {}).await
    }

    /// Connects from `ip` to `dir`, `tweak` adjusting the transport.
    pub async fn from_ip_with(
        dir: &directory::Directory,
        ip: &str,
        tweak: impl FnOnce(&mut quinn::TransportConfig),
    ) -> RawClient {
        let (addr, key) = (dir.local_addr(), dir.public_key());
        RawClient::connect_on(endpoint(ip), addr, Some(key), tweak).await
    }

    /// Connects from `ip` to `dir` and says `Hello`.
    pub async fn greeted(dir: &directory::Directory, ip: &str) -> RawClient {
        let mut raw = RawClient::from_ip(dir, ip).await;
        raw.hello().await;
        raw
    }

    /// Connects to `dir`, says `Hello` and logs in reporting [`reported`]; panics unless
    /// granted. Returns the ticket.
    pub async fn logged_in(
        dir: &directory::Directory,
        user: &str,
        password: &str,
        id: &Identity,
    ) -> (RawClient, Vec<u8>) {
        let (addr, key) = (dir.local_addr(), Some(dir.public_key()));
        RawClient::logged_in_at(addr, key, user, password, id, &reported()).await
    }

    /// Like [`RawClient::logged_in`], to the directory at `addr` (its key pinned if
    /// given), reporting `addresses`.
    pub async fn logged_in_at(
        addr: SocketAddr,
        key: Option<PublicKey>,
        user: &str,
        password: &str,
        id: &Identity,
        addresses: &[SocketAddr],
    ) -> (RawClient, Vec<u8>) {
        let mut raw = RawClient::connect_on(endpoint("127.0.0.1"), addr, key, |_| {}).await;
        let nonce = raw.hello().await;
        match raw.login_with(&nonce, user, password, id, addresses).await {
            Reply::Granted { ticket, .. } => (raw, ticket),
            other => panic!("expected Granted, got {other:?}"),
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.unwrap();
        self.send.flush().await.unwrap();
    }

    /// Writes one request frame.
    pub async fn send(&mut self, request: &Request) {
        proto::frame::write_frame(&mut self.send, request)
            .await
            .unwrap();
    }

    /// The next message from the directory (`None`: the stream ended or broke).
    pub async fn next(&mut self) -> Option<ServerMsg> {
        timeout(WAIT, proto::frame::read_frame(&mut self.recv))
            .await
            .expect("no message from the directory in time")
            .ok()
            .flatten()
    }

    /// Waits for an event the directory pushes; the next message must be one.
    pub async fn event(&mut self) -> Event {
        match self.next().await {
            Some(ServerMsg::Event(e)) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The next reply, collecting events on the way.
    pub async fn reply(&mut self) -> Reply {
        loop {
            match self.next().await {
                Some(ServerMsg::Reply(reply)) => return reply,
                Some(ServerMsg::Event(event)) => self.events.push(event),
                None => panic!("stream ended while waiting for a reply"),
            }
        }
    }

    /// Sends `request` and returns its reply, collecting events pushed meanwhile.
    pub async fn call(&mut self, request: impl Borrow<Request>) -> Reply {
        self.send(request.borrow()).await;
        self.reply().await
    }

    /// Sends `request`; the next message must be its reply.
    pub async fn request(&mut self, request: Request) -> Reply {
        self.send(&request).await;
        match self.next().await {
            Some(ServerMsg::Reply(reply)) => reply,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// One request and its reply; `Err` when the connection breaks or no reply comes
    /// within [`WAIT`] (a hang is an error too).
    pub async fn try_call(&mut self, request: &Request) -> Result<Reply, String> {
        proto::frame::write_frame(&mut self.send, request)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match timeout(WAIT, proto::frame::read_frame(&mut self.recv)).await {
                Err(_) => return Err("no reply within the deadline".into()),
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(None)) => return Err("stream ended".into()),
                Ok(Ok(Some(ServerMsg::Reply(reply)))) => return Ok(reply),
                Ok(Ok(Some(ServerMsg::Event(event)))) => self.events.push(event),
            }
        }
    }

    fn hello_request() -> Request {
        Request::Hello {
            version: proto::PROTOCOL_VERSION,
            software: "testkit-raw".into(),
        }
    }

    /// Says `Hello`; returns (and keeps) this connection's login nonce.
    pub async fn hello(&mut self) -> [u8; 32] {
        match self.call(RawClient::hello_request()).await {
            Reply::Welcome { nonce, .. } => {
                self.nonce = Some(nonce);
                nonce
            }
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Like [`RawClient::hello`], the failure as text.
    pub async fn try_hello(&mut self) -> Result<[u8; 32], String> {
        match self.try_call(&RawClient::hello_request()).await? {
            Reply::Welcome { nonce, .. } => {
                self.nonce = Some(nonce);
                Ok(nonce)
            }
            other => Err(format!("expected Welcome, got {other:?}")),
        }
    }

    /// This connection's login nonce; panics before `Hello`.
    pub fn nonce(&self) -> [u8; 32] {
        self.nonce.expect("Hello was said on this connection")
    }

    /// What this connection's login proofs are bound to.
    pub fn channel(&self) -> ChannelBinding {
        directory::tls::client_channel_binding(&self.conn).expect("a channel binding")
    }

    /// A login request signed properly for this connection (after `Hello`).
    pub fn login_request(&self, user: &str, password: &str, id: &Identity) -> Request {
        self.login_request_with(&self.nonce(), user, password, id, &[])
    }

    /// A login request signed over `nonce` (this connection's or, for an attack, another
    /// one's), reporting `addresses`.
    pub fn login_request_with(
        &self,
        nonce: &[u8; 32],
        user: &str,
        password: &str,
        id: &Identity,
        addresses: &[SocketAddr],
    ) -> Request {
        let key = id.public();
        Request::Login {
            user: user.parse().unwrap(),
            password: password.into(),
            identity: key,
            signature: id.sign(&login_transcript(&self.channel(), nonce, user, &key)),
            addresses: addresses.to_vec(),
        }
    }

    /// A resume request for `ticket`, signed properly for this connection (after `Hello`).
    pub fn resume_request(&self, user: &str, ticket: &[u8], id: &Identity) -> Request {
        let signature = id.sign(&resume_transcript(
            &self.channel(),
            &self.nonce(),
            user,
            ticket,
        ));
        Request::Resume {
            user: user.parse().unwrap(),
            ticket: ticket.to_vec(),
            signature,
            addresses: vec![],
        }
    }

    /// Logs in (saying `Hello` first if this connection has not yet).
    pub async fn login(&mut self, user: &str, password: &str, id: &Identity) -> Reply {
        if self.nonce.is_none() {
            self.hello().await;
        }
        let request = self.login_request(user, password, id);
        self.call(request).await
    }

    /// Logs in signing over `nonce` and reporting `addresses`.
    pub async fn login_with(
        &mut self,
        nonce: &[u8; 32],
        user: &str,
        password: &str,
        id: &Identity,
        addresses: &[SocketAddr],
    ) -> Reply {
        let request = self.login_request_with(nonce, user, password, id, addresses);
        self.call(request).await
    }

    /// Waits (at most `within`) for the directory to close the connection; returns its
    /// application close code.
    pub async fn closed_with(&self, within: Duration) -> u64 {
        match timeout(within, self.conn.closed())
            .await
            .unwrap_or_else(|_| panic!("not closed within {within:?}"))
        {
            quinn::ConnectionError::ApplicationClosed(close) => close.error_code.into_inner(),
            other => panic!("closed otherwise: {other}"),
        }
    }
}
