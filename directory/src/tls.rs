//! The QUIC server configuration: certificate → rustls → quinn, in three named steps.
//!
//! The certificate is self-signed with the directory's identity key (made fresh from the
//! key on every start, so the pinned fingerprint never changes). Clients are not asked for
//! a certificate: users prove themselves with a password and a key signature instead.
//! The transport settings bound what one connection may cost us. [`channel_binding`]
//! is what a peer's login proofs on one connection are bound to.

use std::sync::Arc;

use anyhow::Context;
use proto::message::{CHANNEL_EXPORTER_LABEL, CHANNEL_EXPORTER_LEN, ChannelBinding};
use proto::{Identity, PublicKey};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::config::Config;

/// Receive window of one stream: room for two maximum-size frames.
const STREAM_WINDOW: u32 = 2 * proto::frame::MAX_FRAME as u32;
/// Receive window of a whole connection (all its streams together).
const CONNECTION_WINDOW: u32 = 4 * proto::frame::MAX_FRAME as u32;
/// Most bytes queued for sending on one connection.
const SEND_WINDOW: u64 = 4 * proto::frame::MAX_FRAME as u64;

/// Builds the quinn server configuration for `identity` under `config`'s limits.
pub fn server_config(identity: &Identity, config: &Config) -> anyhow::Result<quinn::ServerConfig> {
    // 1. rustls: our certificate, TLS 1.3 only, ALPN "natter-dir/1", no client certificate.
    let tls = proto::verify::server_config(identity, false, proto::ALPN_DIRECTORY)
        .context("cannot build the TLS configuration")?;

    // 2. QUIC crypto on top of it.
    let crypto = QuicServerConfig::try_from(tls).context("TLS configuration unusable for QUIC")?;

    // 3. Transport limits. Windows are small because the control stream carries frames of
    //    at most 64 KiB one at a time; with the default windows (megabytes per stream) a
    //    few thousand clients that send and never read could pin gigabytes.
    let mut transport = TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            IdleTimeout::try_from(config.idle_timeout).context("idle timeout too large")?,
        ))
        .max_concurrent_bidi_streams(VarInt::from_u32(config.max_streams_per_connection))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(SEND_WINDOW)
        .datagram_receive_buffer_size(None);

    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    // No connection migration: the address we observed at login is what we hand out in
    // lookups. A peer whose NAT mapping changes reconnects (cheaply, with `Resume`) and
    // so publishes its new address, instead of keeping a stale one in presence.
    server.migration(false);
    // Bound connection attempts still in their handshake.
    server.max_incoming(config.max_anonymous.max(1));
    Ok(server)
}

/// [`channel_binding`] as a client of the directory computes it from its end of `conn`:
/// bound to the key the directory presented in the handshake. For clients that speak the
/// protocol by hand (tests, load generators); the peer has its own, which checks the pin.
pub fn client_channel_binding(conn: &quinn::Connection) -> Option<ChannelBinding> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    let key = proto::cert::public_key_of(certs.first()?).ok()?;
    channel_binding(conn, key)
}

/// What a peer's signatures on `conn` must be bound to: the directory's own key
/// (`directory`) and the TLS exporter of our side of the session. `None` when the session
/// cannot export keying material (the handshake did not complete). Test clients use it
/// from their side too: both ends export the same bytes.
pub fn channel_binding(conn: &quinn::Connection, directory: PublicKey) -> Option<ChannelBinding> {
    let mut exporter = [0u8; CHANNEL_EXPORTER_LEN];
    conn.export_keying_material(&mut exporter, CHANNEL_EXPORTER_LABEL, b"")
        .ok()?;
    Some(ChannelBinding {
        directory,
        exporter,
    })
}
