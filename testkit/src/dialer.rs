//! The raw dialer: a peer that does the connect request and the key exchange by hand
//! against a real acceptor, then writes any frame a test likes (tampered, replayed,
//! reflected, sealed for another session, over-long).

use std::net::SocketAddr;
use std::sync::Arc;

use peer::endpoint;
use proto::frame;
use proto::message::{ChatPayload, PeerInfo, PeerMsg};
use proto::session::{Handshake, Opener, Role, SealedFrame, Sealer};
use proto::{Identity, PublicKey};
use tokio::time::timeout;

use crate::WAIT;

/// A user with an identity and a bound peer endpoint on 127.0.0.1; no app, no directory.
pub struct EndpointPeer {
    pub name: &'static str,
    pub identity: Arc<Identity>,
    pub endpoint: quinn::Endpoint,
}

impl EndpointPeer {
    pub fn new(name: &'static str) -> Self {
        let identity = Arc::new(Identity::generate());
        let endpoint = endpoint::bind(&identity, "127.0.0.1:0".parse().unwrap()).unwrap();
        EndpointPeer {
            name,
            identity,
            endpoint,
        }
    }

    pub fn key(&self) -> PublicKey {
        self.identity.public()
    }

    pub fn addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap()
    }

    /// What the directory would answer about this peer.
    pub fn info(&self) -> PeerInfo {
        PeerInfo {
            user: self.name.parse().unwrap(),
            identity: self.key(),
            observed: self.addr(),
            addresses: vec![],
        }
    }
}

/// A hand-driven dialer: TLS with its own key, then the connect request, then a key share
/// signed by the signer a test chose.
pub struct RawDialer {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    sealer: Sealer,
    opener: Opener,
}

impl RawDialer {
    /// Dials `to` as `from` and completes the key exchange; panics if it fails.
    pub async fn connect(from: &EndpointPeer, to: &EndpointPeer) -> RawDialer {
        RawDialer::dial(from, to, &from.identity)
            .await
            .unwrap_or_else(|(why, _)| panic!("key exchange: {why}"))
    }

    /// Dials `to` as `from`, the key share signed by `signer`. On failure, the reason and
    /// the connection (kept open, for the other side to come to its own conclusion).
    pub async fn dial(
        from: &EndpointPeer,
        to: &EndpointPeer,
        signer: &Identity,
    ) -> Result<RawDialer, (String, quinn::Connection)> {
        let conn = endpoint::dial_peer(&from.endpoint, &from.identity, to.addr(), to.key())
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let connect = PeerMsg::Connect {
            version: proto::PROTOCOL_VERSION,
            initiator: from.name.parse().unwrap(),
            background: false,
        };
        frame::write_frame(&mut send, &connect).await.unwrap();
        let reply: PeerMsg = frame::read_frame(&mut recv).await.unwrap().unwrap();
        assert_eq!(
            reply,
            PeerMsg::Accepted {
                user: to.name.parse().unwrap()
            }
        );
        let (handshake, ours) = Handshake::start(signer, Role::Initiator, to.key());
        frame::write_frame(&mut send, &PeerMsg::KeyShare(ours))
            .await
            .unwrap();
        let theirs = match frame::read_frame(&mut recv).await {
            Ok(Some(PeerMsg::KeyShare(share))) => share,
            other => return Err((format!("no key share: {other:?}"), conn)),
        };
        let (sealer, opener) = match handshake.finish(&theirs) {
            Ok(session) => session.split(),
            Err(e) => return Err((e.to_string(), conn)),
        };
        Ok(RawDialer {
            conn,
            send,
            recv,
            sealer,
            opener,
        })
    }

    /// Seals `payload` as the next frame of this session (not sent).
    pub fn seal(&mut self, payload: &ChatPayload) -> SealedFrame {
        let bytes = frame::encode(payload).unwrap();
        self.sealer.seal(&bytes[frame::HEADER_LEN..]).unwrap()
    }

    /// Sends `sealed` as it is.
    pub async fn write(&mut self, sealed: SealedFrame) {
        frame::write_frame(&mut self.send, &PeerMsg::Sealed(sealed))
            .await
            .unwrap();
    }

    /// The next sealed frame from the other side, unopened.
    pub async fn read_sealed(&mut self) -> SealedFrame {
        match timeout(WAIT, frame::read_frame::<_, PeerMsg>(&mut self.recv))
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            PeerMsg::Sealed(sealed) => sealed,
            other => panic!("expected a sealed frame, got {other:?}"),
        }
    }

    /// The next frame from the other side, opened.
    pub async fn read(&mut self) -> ChatPayload {
        let sealed = self.read_sealed().await;
        frame::decode(&self.opener.open(&sealed).unwrap()).unwrap()
    }

    /// Waits for the other side to close the connection; returns its code and reason.
    pub async fn closed_by_peer(&self) -> (quinn::VarInt, String) {
        match timeout(WAIT, self.conn.closed()).await.unwrap() {
            quinn::ConnectionError::ApplicationClosed(close) => (
                close.error_code,
                String::from_utf8_lossy(&close.reason).into_owned(),
            ),
            other => panic!("expected an application close, got {other}"),
        }
    }
}
