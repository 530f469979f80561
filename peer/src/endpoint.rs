//! The peer's single QUIC endpoint.
//!
//! One UDP socket does everything: it accepts incoming chats, dials other peers and
//! carries the directory connection. Using one socket is what makes the address the
//! directory observes the address other peers can reach, and what makes hole punching
//! possible: packets we send to a peer leave through the same NAT mapping the directory
//! saw (see [`crate::reach`]).
//!
//! Incoming connections must present an ed25519 certificate (mutual TLS); whose key it
//! is gets decided after the handshake by asking the directory. Outgoing connections pin
//! exactly the key we expect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::{Identity, PublicKey};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

/// How often an idle connection sends a keep-alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// How long a silent connection lives: a peer that vanished is noticed within this time.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(8);
/// Round-trip time assumed before the first measurement. QUIC's default (333 ms) makes
/// the first retransmission of a lost handshake packet wait about a second; while hole
/// punching the first packets are often dropped by a NAT that has not seen ours yet, so
/// we retry sooner (a few more small packets on a slow path cost nothing).
pub const INITIAL_RTT: Duration = Duration::from_millis(100);

/// The endpoint could not be set up, or a dial failed before a connection existed.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("TLS setup: {0}")]
    Tls(#[from] proto::verify::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot dial {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: quinn::ConnectError,
    },
    #[error("connection to {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: quinn::ConnectionError,
    },
    #[error("no usable TLS 1.3 cipher suite: {0}")]
    Quic(String),
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .expect("idle timeout fits in a QUIC varint"),
    ));
    t.initial_rtt(INITIAL_RTT);
    t.max_concurrent_bidi_streams(4u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    Arc::new(t)
}

/// How long [`close`] waits for the close to reach the other ends.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Closes every connection of `endpoint` and waits (at most [`CLOSE_WAIT`]) until the
/// close has gone out, so the directory frees our slot at once instead of noticing at
/// its idle timeout. Every program exit goes through here.
pub async fn close(endpoint: &quinn::Endpoint) {
    endpoint.close(0u32.into(), b"bye");
    if tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle())
        .await
        .is_err()
    {
        tracing::debug!("endpoint not idle after {CLOSE_WAIT:?}");
    }
}

/// Opens the peer's endpoint on `listen` (port 0 picks a free port).
pub fn bind(identity: &Identity, listen: SocketAddr) -> Result<quinn::Endpoint, EndpointError> {
    let tls = proto::verify::server_config(identity, true, proto::ALPN_PEER)?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| EndpointError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport());
    quinn::Endpoint::server(server, listen).map_err(|source| EndpointError::Bind {
        addr: listen,
        source,
    })
}

/// Client configuration for a connection that presents `identity` (when given) and
/// accepts only `expected` (`None`: first contact; the caller checks the key after).
pub fn client_config(
    identity: Option<&Identity>,
    expected: Option<PublicKey>,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, EndpointError> {
    let tls = proto::verify::client_config(identity, expected, alpn)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| EndpointError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// Dials `addr` with `config` and waits for the handshake to complete.
pub async fn dial(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
) -> Result<quinn::Connection, EndpointError> {
    let connecting = endpoint
        .connect_with(config, addr, "natter")
        .map_err(|source| EndpointError::Connect { addr, source })?;
    connecting
        .await
        .map_err(|source| EndpointError::Handshake { addr, source })
}

/// Dials another peer, accepting only a certificate for `expected` and presenting ours.
pub async fn dial_peer(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    addr: SocketAddr,
    expected: PublicKey,
) -> Result<quinn::Connection, EndpointError> {
    let config = client_config(Some(identity), Some(expected), proto::ALPN_PEER)?;
    dial(endpoint, config, addr).await
}

/// What our signatures for the directory on `conn` are bound to: the directory key we
/// accepted (`directory`, the pinned one when there is a pin) and the TLS exporter of our
/// side of the session. `None` when the session cannot export keying material.
pub fn channel_binding(
    conn: &quinn::Connection,
    directory: PublicKey,
) -> Option<proto::message::ChannelBinding> {
    let mut exporter = [0u8; proto::message::CHANNEL_EXPORTER_LEN];
    conn.export_keying_material(&mut exporter, proto::message::CHANNEL_EXPORTER_LABEL, b"")
        .ok()?;
    Some(proto::message::ChannelBinding {
        directory,
        exporter,
    })
}

/// The ed25519 key the other side of `conn` proved in its TLS handshake.
pub fn remote_key(conn: &quinn::Connection) -> Option<PublicKey> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    proto::cert::public_key_of(certs.first()?).ok()
}
