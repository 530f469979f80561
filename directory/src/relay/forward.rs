//! Relaying between two instances of one directory service (several instances on one
//! database, see [`crate::cluster`]).
//!
//! A relay token belongs to the instance that issued it at `Rendezvous`: the
//! initiator's. When the target is connected to another instance, that instance learns
//! the token from the cluster message that carries `Incoming` or `RelayCall` to the
//! target ([`RemoteOffers`]). When the target then opens its relay stream there with the
//! token, its instance does not splice it itself: it opens a stream on a QUIC link to the
//! issuing instance, says whose stream it is ([`RelayMsg::Forward`]), and copies bytes
//! both ways. The issuing instance treats that stream exactly like the target's own, so
//! parking, pairing, caps, `Ready` and `Refused` all happen in one place:
//!
//! ```text
//! ali ── relay stream ── [instance 1: splice] ── link stream ── [instance 2: copy] ── relay stream ── bianca
//! ```
//!
//! **Why a link between instances, not the database.** Relayed chat is a byte stream
//! with flow control; `NOTIFY` is for small messages (8000 bytes, no back-pressure).
//! The instances already speak QUIC and hold the same directory key, so the link needs no
//! new port, certificate or secret: it is a connection to the other instance's own
//! listening address (its `relay_address` in the `instances` table), where the server
//! must present our key, and where we prove with a signature by that same key over the
//! connection's nonce that we are an instance too (`Request::InstanceAuth`). One link per
//! pair of instances carries every session between them, one stream each; it is opened
//! on first use and kept alive while it lasts.
//!
//! What a link can do is bounded like a peer's relay streams: the forwarding instance
//! admits the target's stream under its caps and byte bucket, the issuing instance
//! admits it again under its own. Chat stays end-to-end sealed: neither instance sees
//! anything but ciphertext.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::frame;
use proto::message::{
    RelayMsg, RelayRefusal, RelayToken, Reply, Request, ServerMsg, instance_transcript,
};
use proto::names::UserName;
use proto::{Identity, PublicKey};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{RecvStream, SendStream, VarInt};
use tokio::time::timeout;

use super::{OPEN_TIMEOUT, Relay, pump, refuse};
use crate::cluster::Cluster;

/// How long a token learned from another instance is kept (the issuing instance enforces
/// the real expiry, [`super::RelayPolicy::offer_ttl`]; this only bounds our memory).
const REMOTE_OFFER_TTL: Duration = Duration::from_secs(120);
/// Most tokens learned from other instances kept at once.
const MAX_REMOTE_OFFERS: usize = 100_000;
/// Keep-alive on links, so that a link carrying only quiet chats is not idled out.
const LINK_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// A token another instance issued, for two users of which one is connected here.
#[derive(Debug)]
struct RemoteOffer {
    instance: String,
    users: [String; 2],
    expires: Instant,
}

/// Relay tokens issued by other instances, learned from the cluster messages that tell
/// our users about them.
#[derive(Debug, Default)]
pub struct RemoteOffers {
    offers: Mutex<HashMap<RelayToken, RemoteOffer>>,
}

impl RemoteOffers {
    /// Records that `instance` issued `token` for `initiator` connecting to `target`.
    pub fn learn(&self, token: RelayToken, instance: &str, initiator: &str, target: &str) {
        let now = Instant::now();
        let mut offers = self.offers.lock().unwrap_or_else(|e| e.into_inner());
        if offers.len() >= MAX_REMOTE_OFFERS {
            offers.retain(|_, o| o.expires > now);
            if offers.len() >= MAX_REMOTE_OFFERS {
                tracing::warn!("too many relay tokens from other instances; one dropped");
                return;
            }
        }
        offers.insert(
            token,
            RemoteOffer {
                instance: instance.to_string(),
                users: [initiator.to_string(), target.to_string()],
                expires: now + REMOTE_OFFER_TTL,
            },
        );
    }

    /// The instance that issued `token`, if `user` is one of its two users (the token is
    /// used up).
    pub fn take(&self, token: &RelayToken, user: &str) -> Option<String> {
        let mut offers = self.offers.lock().unwrap_or_else(|e| e.into_inner());
        let offer = offers.get(token)?;
        if offer.expires <= Instant::now() || !offer.users.iter().any(|u| u == user) {
            return None;
        }
        offers.remove(token).map(|o| o.instance)
    }
}

/// Why a link to another instance could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("instance {0} is not running (no address in the database)")]
    NoAddress(String),
    #[error("cannot reach instance at {addr}: {why}")]
    Unreachable { addr: SocketAddr, why: String },
    #[error("instance at {addr} refused the link: {why}")]
    Refused { addr: SocketAddr, why: String },
    #[error("the link broke: {0}")]
    Lost(String),
}

/// An open link: the connection, and its control stream (kept open: finishing it would
/// end the connection).
struct Link {
    conn: quinn::Connection,
    _control: (SendStream, RecvStream),
}

/// This instance's links to the other instances of the service.
pub struct Links {
    endpoint: quinn::Endpoint,
    identity: Arc<Identity>,
    client: quinn::ClientConfig,
    cluster: Arc<dyn Cluster>,
    /// One slot per instance linked to: a slow or dead instance holds up only its own.
    open: Mutex<HashMap<String, Slot>>,
}

/// The link to one instance, if open; locked while it is (re)opened.
type Slot = Arc<tokio::sync::Mutex<Option<Link>>>;

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("instance", &self.cluster.instance())
            .finish_non_exhaustive()
    }
}

impl Links {
    /// Links dialled from `endpoint` (the directory's own), authenticated with the
    /// directory's `identity`, to instances found through `cluster`.
    pub fn new(
        endpoint: quinn::Endpoint,
        identity: Arc<Identity>,
        cluster: Arc<dyn Cluster>,
    ) -> anyhow::Result<Self> {
        let tls =
            proto::verify::client_config(None, Some(identity.public()), proto::ALPN_DIRECTORY)?;
        let crypto = QuicClientConfig::try_from(tls)?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(LINK_KEEP_ALIVE));
        client.transport_config(Arc::new(transport));
        Ok(Self {
            endpoint,
            identity,
            client,
            cluster,
            open: Default::default(),
        })
    }

    /// The directory's key: an instance proving it holds it is one of us.
    pub fn directory_key(&self) -> PublicKey {
        self.identity.public()
    }

    /// A new stream to `instance`, on its link (opened first if needed).
    async fn stream(&self, instance: &str) -> Result<(SendStream, RecvStream), LinkError> {
        let slot = self.slot(instance);
        let mut link = slot.lock().await;
        if let Some(open) = link.as_ref() {
            match open.conn.open_bi().await {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    tracing::debug!(instance, "link lost ({e}); reconnecting");
                    *link = None;
                }
            }
        }
        let opened = self.connect(instance).await?;
        let stream = opened
            .conn
            .open_bi()
            .await
            .map_err(|e| LinkError::Lost(e.to_string()))?;
        *link = Some(opened);
        Ok(stream)
    }

    /// `instance`'s slot. Slots of links that are gone (instances that stopped) are
    /// dropped as new ones come, so the map holds about one per running instance.
    fn slot(&self, instance: &str) -> Slot {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = open.get(instance) {
            return slot.clone();
        }
        open.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot.try_lock().map_or(true, |link| {
                    link.as_ref()
                        .is_some_and(|l| l.conn.close_reason().is_none())
                })
        });
        open.entry(instance.to_string()).or_default().clone()
    }

    /// Dials `instance` and proves we are an instance of the same service.
    async fn connect(&self, instance: &str) -> Result<Link, LinkError> {
        let addr = self
            .cluster
            .relay_address(instance)
            .await
            .ok_or_else(|| LinkError::NoAddress(instance.to_string()))?;
        let unreachable = |why: String| LinkError::Unreachable { addr, why };
        let refused = |why: String| LinkError::Refused { addr, why };
        let conn = self
            .endpoint
            .connect_with(self.client.clone(), addr, "natter")
            .map_err(|e| unreachable(e.to_string()))?
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let hello = Request::Hello {
            version: proto::PROTOCOL_VERSION,
            software: format!("natter-directory-link/{}", env!("CARGO_PKG_VERSION")),
        };
        frame::write_frame(&mut send, &hello)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let nonce = match frame::read_frame::<_, ServerMsg>(&mut recv).await {
            Ok(Some(ServerMsg::Reply(Reply::Welcome { nonce, .. }))) => nonce,
            other => return Err(refused(format!("{other:?}"))),
        };
        let me = self.cluster.instance().to_string();
        let signature = self.identity.sign(&instance_transcript(&nonce, &me));
        frame::write_frame(
            &mut send,
            &Request::InstanceAuth {
                instance: me,
                signature,
            },
        )
        .await
        .map_err(|e| unreachable(e.to_string()))?;
        match frame::read_frame::<_, ServerMsg>(&mut recv).await {
            Ok(Some(ServerMsg::Reply(Reply::Done { .. }))) => {}
            other => return Err(refused(format!("{other:?}"))),
        }
        tracing::info!(instance, %addr, "relay link to another instance open");
        Ok(Link {
            conn,
            _control: (send, recv),
        })
    }
}

/// Serves `user`'s relay stream for `token`, which `instance` issued: copies it to and
/// from a stream on the link to that instance.
pub(super) async fn forward(
    relay: Arc<Relay>,
    links: Arc<Links>,
    instance: String,
    (user, token): (UserName, RelayToken),
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let Some(admitted) = relay.admit(&user) else {
        return refuse(&mut send, &mut recv, RelayRefusal::TooManySessions).await;
    };
    let opened = async {
        let (mut link_send, link_recv) = links.stream(&instance).await?;
        frame::write_frame(
            &mut link_send,
            &RelayMsg::Forward {
                token,
                user: user.clone(),
            },
        )
        .await
        .map_err(|e| LinkError::Lost(e.to_string()))?;
        Ok::<_, LinkError>((link_send, link_recv))
    };
    let (link_send, link_recv) = match timeout(OPEN_TIMEOUT, opened).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(%instance, "cannot forward a relay stream: {e}");
            return refuse(&mut send, &mut recv, RelayRefusal::InstanceUnreachable).await;
        }
        Err(_) => {
            tracing::warn!(%instance, "cannot forward a relay stream: timed out");
            return refuse(&mut send, &mut recv, RelayRefusal::InstanceUnreachable).await;
        }
    };
    tracing::debug!(%user, %instance, "relay stream forwarded to the issuing instance");
    let bucket = relay.bucket(&user);
    let tap = relay.policy.tap.clone();
    // The issuing instance limits the other direction (its user's bucket).
    relay.metrics.relay_sessions.fetch_add(1, Ordering::Relaxed);
    tokio::join!(
        pump(recv, link_send, Some(bucket), &relay.metrics, tap.as_ref()),
        pump(link_recv, send, None, &relay.metrics, tap.as_ref()),
    );
    relay.metrics.relay_sessions.fetch_sub(1, Ordering::Relaxed);
    drop(admitted);
}

/// Serves a stream another instance opened on its link to us: a relay stream of one of
/// its users for a token we issued.
pub(crate) fn accept_link_stream(relay: Arc<Relay>, mut send: SendStream, mut recv: RecvStream) {
    tokio::spawn(async move {
        match timeout(OPEN_TIMEOUT, frame::read_frame::<_, RelayMsg>(&mut recv)).await {
            Ok(Ok(Some(RelayMsg::Forward { token, user }))) => {
                super::join(relay, user, token, send, recv).await
            }
            _ => {
                tracing::debug!("link stream without a valid Forward frame; dropped");
                let _ = send.reset(VarInt::from_u32(0));
                let _ = recv.stop(VarInt::from_u32(0));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_offers_are_for_their_two_users_once() {
        let offers = RemoteOffers::default();
        let token = [7; 16];
        offers.learn(token, "inst-1", "ali", "bianca");
        assert_eq!(offers.take(&token, "chloe"), None, "not chloe's token");
        assert_eq!(offers.take(&[8; 16], "bianca"), None, "unknown token");
        assert_eq!(offers.take(&token, "bianca").as_deref(), Some("inst-1"));
        assert_eq!(offers.take(&token, "bianca"), None, "used up");
    }
}
