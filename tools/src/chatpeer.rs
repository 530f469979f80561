//! A peer that chats: its own endpoint (bound with its identity certificate, so others
//! can dial it), its own logged-in directory connection, and the real chat layer
//! ([`peer::chat::initiate`] / [`peer::chat::accept`]) on top.
//!
//! The acceptor side checks the dialer through the directory exactly as the app does
//! (the pin check is "first contact": always accepted).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use peer::chat::{self, ChatEvent, ChatEvents, ChatHandle};
use peer::directory_client::DirectoryClient;
use peer::endpoint;
use proto::message::ConnectRefusal;
use proto::names::UserName;
use proto::{Identity, PublicKey};

use crate::accounts;

/// A logged-in peer that can dial and accept chats.
pub struct ChatPeer {
    pub name: UserName,
    pub identity: Arc<Identity>,
    pub endpoint: quinn::Endpoint,
    pub client: Arc<DirectoryClient>,
    /// Messages received by chats this peer accepted.
    pub received: Arc<AtomicU64>,
    /// Incoming chats that failed (refused, broken).
    pub failures: Arc<AtomicU64>,
}

impl ChatPeer {
    /// Logs bulk user `index` in from a fresh endpoint on 127.0.0.1. Must run inside the
    /// runtime that should drive this peer's endpoint.
    pub async fn login(
        index: usize,
        directory: SocketAddr,
        key: PublicKey,
    ) -> anyhow::Result<Arc<Self>> {
        let name = accounts::bulk_name(index);
        let identity = Arc::new(accounts::bulk_identity(index));
        let endpoint = endpoint::bind(&identity, "127.0.0.1:0".parse()?)?;
        let client = DirectoryClient::connect(&endpoint, directory, Some(key))
            .await
            .with_context(|| format!("{name} connects"))?;
        let local = endpoint.local_addr()?;
        client
            .login(&name, accounts::PASSWORD, &identity, vec![local])
            .await
            .with_context(|| format!("{name} logs in"))?;
        Ok(Arc::new(Self {
            name: name.parse()?,
            identity,
            endpoint,
            client: Arc::new(client),
            received: Arc::default(),
            failures: Arc::default(),
        }))
    }

    /// Accepts chats until the endpoint closes; every accepted chat's messages are read
    /// (and so acknowledged) and counted. Spawns on the current runtime.
    pub fn serve(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(incoming) = me.endpoint.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else {
                        me.failures.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let client = me.client.clone();
                    let lookup = async move |claimed: &str| {
                        client
                            .lookup(claimed)
                            .await
                            .map_err(|_| ConnectRefusal::DirectoryUnavailable)
                    };
                    let pins = |_: &str, _: &PublicKey| Ok(());
                    match chat::accept(conn, &me.identity, &me.name, lookup, pins).await {
                        Ok((_handle, mut events)) => {
                            while let Some(event) = events.next().await {
                                match event {
                                    ChatEvent::Message { .. } => {
                                        me.received.fetch_add(1, Ordering::Relaxed);
                                    }
                                    ChatEvent::Ended { .. } => break,
                                    ChatEvent::Delivered { .. } => {}
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!("incoming chat failed: {e}");
                            me.failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        })
    }

    /// Opens a chat with `other` as the app's `/connect` does: lookup, dial the address
    /// the directory gave with the key it gave, connect request, key exchange.
    pub async fn open(&self, other: &str) -> anyhow::Result<(ChatHandle, ChatEvents)> {
        let info = self
            .client
            .lookup(other)
            .await?
            .with_context(|| format!("{other} is not online"))?;
        let conn =
            endpoint::dial_peer(&self.endpoint, &self.identity, info.observed, info.identity)
                .await?;
        Ok(chat::initiate(conn, &self.identity, &self.name, &info).await?)
    }
}

/// Waits for the `Delivered` event of message `id`; other events are ignored, the end
/// of the chat is an error.
pub async fn delivered(events: &mut ChatEvents, id: u64) -> anyhow::Result<()> {
    loop {
        match events.next().await {
            Some(ChatEvent::Delivered { id: got }) if got == id => return Ok(()),
            Some(ChatEvent::Ended { reason, .. }) => anyhow::bail!("chat ended: {reason}"),
            Some(_) => {}
            None => anyhow::bail!("chat events ended"),
        }
    }
}

/// How many messages `peer`'s accepted chats have shown, once that reaches `expected` (or
/// after 10 s): an acknowledged message is in the acceptor's event queue, not
/// necessarily counted yet.
pub async fn received(peer: &ChatPeer, expected: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = peer.received.load(Ordering::Relaxed);
        if got >= expected || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
