//! Staying logged in to the directory.
//!
//! A [`Link`] owns the current [`DirectoryClient`]. When the connection breaks (the
//! directory restarted, the network changed) [`Link::keep_alive`] logs back in with the
//! session ticket and an identity-key signature alone, with exponential back-off and
//! jitter so that thousands of peers do not all return in the same millisecond. The
//! password is never kept: it is used once at [`Link::login`] and dropped.
//!
//! With several directory instances (`--directory a,b`), logging back in tries the
//! instance we were on first, then the others ([`DirectoryClient::connect_any`]).
//!
//! Direct chats in progress do not depend on the link: they run between the peers. A
//! relayed chat runs on the directory connection, and ends when that connection breaks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::message::{
    Event, MailItem, MailReceipt, OnlineUser, PeerInfo, RelayToken, RoomInfo, RoomMember,
};
use proto::names::UserName;
use proto::sealed::SignedPrekey;
use proto::{Identity, PublicKey};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::chat::RelayStream;
use crate::directory_client::{ClientError, DirectoryClient, Grant, Rendezvous};

/// First delay before logging back in; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest delay between attempts to log back in.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What happened to the directory session, for the user interface.
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// The connection broke; logging back in.
    Lost { reason: String },
    /// Logged back in, to the directory (instance) at this address.
    Restored { addr: SocketAddr },
    /// Cannot log back in without the user (ticket refused, key changed, forced out).
    GaveUp { reason: String },
    /// The directory said something (shutdown notice, forced logout).
    Directory(Event),
}

/// A logged-in directory session that survives reconnects.
pub struct Link {
    endpoint: quinn::Endpoint,
    /// The directory's names (several: instances of one service, tried in turn).
    directories: Vec<String>,
    /// The address of the instance we are (or were last) logged in to: tried first.
    addr: Mutex<SocketAddr>,
    directory_key: PublicKey,
    user: UserName,
    identity: Arc<Identity>,
    addresses: Vec<SocketAddr>,
    client: Mutex<Arc<DirectoryClient>>,
    ticket: Mutex<Zeroizing<Vec<u8>>>,
    admin: bool,
    /// What we asked to hear about; asked again after a re-login.
    watching: Mutex<(Vec<UserName>, bool)>,
}

impl Link {
    /// Logs in with the password over an already connected client. `directories` are
    /// the names of the directory (`--directory`), to log back in to when the connection
    /// breaks: the instance we were on first, then the others.
    pub async fn login(
        endpoint: quinn::Endpoint,
        client: DirectoryClient,
        directories: Vec<String>,
        user: &str,
        password: Zeroizing<String>,
        identity: Arc<Identity>,
        addresses: Vec<SocketAddr>,
    ) -> Result<(Arc<Self>, Grant), ClientError> {
        let grant = client
            .login(user, &password, &identity, addresses.clone())
            .await?;
        drop(password);
        let link = Arc::new(Self {
            endpoint,
            directories,
            addr: Mutex::new(client.addr()),
            directory_key: client.directory_key(),
            user: grant.user.clone(),
            identity,
            addresses,
            client: Mutex::new(Arc::new(client)),
            ticket: Mutex::new(grant.ticket.clone()),
            admin: grant.admin,
            watching: Mutex::default(),
        });
        Ok((link, grant))
    }

    /// The user name logged in.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// Whether the account is an administrator.
    pub fn admin(&self) -> bool {
        self.admin
    }

    /// The current directory connection.
    pub fn client(&self) -> Arc<DirectoryClient> {
        self.client.lock().expect("link lock").clone()
    }

    /// Looks `user` up at the directory.
    pub async fn lookup(&self, user: &str) -> Result<Option<PeerInfo>, ClientError> {
        self.client().lookup(user).await
    }

    /// Looks `user` up and tells them we are coming (see [`DirectoryClient::rendezvous`]).
    pub async fn rendezvous(&self, user: &str) -> Result<Option<Rendezvous>, ClientError> {
        self.client().rendezvous(user).await
    }

    /// Opens a relay stream for `token` on the current directory connection (see
    /// [`DirectoryClient::open_relay`]). A relayed chat lives on that connection: if it
    /// breaks, the chat ends (the directory session itself is restored as usual).
    pub async fn open_relay(&self, token: RelayToken) -> Result<RelayStream, ClientError> {
        self.client().open_relay(token).await
    }

    /// Who is online.
    pub async fn who(&self) -> Result<Vec<OnlineUser>, ClientError> {
        self.client().who().await
    }

    /// Joins `room`; returns its members.
    pub async fn join_room(&self, room: &str) -> Result<Vec<RoomMember>, ClientError> {
        self.client().join_room(room).await
    }

    /// Leaves `room`; returns the remaining members.
    pub async fn leave_room(&self, room: &str) -> Result<Vec<RoomMember>, ClientError> {
        self.client().leave_room(room).await
    }

    /// The rooms that have members.
    pub async fn rooms(&self) -> Result<Vec<RoomInfo>, ClientError> {
        self.client().rooms().await
    }

    /// Sets who we hear about (kept, and sent again after every re-login).
    pub async fn watch(&self, users: Vec<UserName>, everyone: bool) -> Result<(), ClientError> {
        *self.watching.lock().expect("link lock") = (users.clone(), everyone);
        self.client().watch(users, everyone).await
    }

    /// Publishes our prekey for sealed mail.
    pub async fn publish_prekey(&self, prekey: SignedPrekey) -> Result<(), ClientError> {
        self.client().publish_prekey(prekey).await
    }

    /// `user`'s registered identity key and prekey, online or not.
    pub async fn fetch_prekey(
        &self,
        user: &str,
    ) -> Result<Option<(PublicKey, Option<SignedPrekey>)>, ClientError> {
        self.client().fetch_prekey(user).await
    }

    /// Deposits sealed mail for `to` (see [`DirectoryClient::deposit`]).
    pub async fn deposit(
        &self,
        to: &str,
        blob: Vec<u8>,
    ) -> Result<Option<(u64, Duration)>, ClientError> {
        self.client().deposit(to, blob).await
    }

    /// Mail waiting for us.
    pub async fn fetch_mail(&self) -> Result<(Vec<MailItem>, bool), ClientError> {
        self.client().fetch_mail().await
    }

    /// Acknowledges mail we have.
    pub async fn ack_mail(&self, ids: Vec<u64>) -> Result<u32, ClientError> {
        self.client().ack_mail(ids).await
    }

    /// Receipts for mail we deposited.
    pub async fn mail_receipts(&self) -> Result<Vec<MailReceipt>, ClientError> {
        self.client().mail_receipts().await
    }

    /// Logs out and closes the directory connection.
    pub async fn logout(&self) {
        let client = self.client();
        let _ = tokio::time::timeout(Duration::from_secs(2), client.logout()).await;
        client.close();
    }

    /// Watches the connection and logs back in with the ticket whenever it breaks, until
    /// the ticket is refused or the directory forces us out. Reports to `events`.
    pub async fn keep_alive(self: Arc<Self>, events: mpsc::Sender<LinkEvent>) {
        loop {
            let client = self.client();
            if let Some(mut pushed) = client.take_events() {
                let events = events.clone();
                tokio::spawn(async move {
                    while let Some(e) = pushed.recv().await {
                        let _ = events.send(LinkEvent::Directory(e)).await;
                    }
                });
            }
            let reason = client.closed().await;
            if client.forced_out() {
                let _ = events.send(LinkEvent::GaveUp { reason }).await;
                return;
            }
            let _ = events.send(LinkEvent::Lost { reason }).await;
            match self.relogin().await {
                Ok(()) => {
                    let addr = *self.addr.lock().expect("link lock");
                    let _ = events.send(LinkEvent::Restored { addr }).await;
                }
                Err(e) => {
                    let _ = events
                        .send(LinkEvent::GaveUp {
                            reason: e.to_string(),
                        })
                        .await;
                    return;
                }
            }
        }
    }

    /// The instance we were on, then the directory's other addresses (resolved again
    /// each time: DNS may have moved them).
    async fn addresses_to_try(&self) -> Vec<SocketAddr> {
        let last = *self.addr.lock().expect("link lock");
        let mut addrs = vec![last];
        if let Ok(all) = crate::directory_addr::resolve_all(&self.directories).await {
            addrs.extend(all.into_iter().filter(|a| *a != last));
        }
        addrs
    }

    /// Reconnects and resumes with the ticket, retrying with back-off while the
    /// directory is unreachable. Gives up on refusals (they will not change by retrying).
    async fn relogin(&self) -> Result<(), ClientError> {
        let mut delay = FIRST_BACKOFF;
        loop {
            tokio::time::sleep(jitter(delay)).await;
            delay = (delay * 2).min(MAX_BACKOFF);
            let client = match DirectoryClient::connect_any(
                &self.endpoint,
                &self.addresses_to_try().await,
                Some(self.directory_key),
            )
            .await
            {
                Ok(c) => c,
                Err(e @ ClientError::FingerprintChanged { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "directory still unreachable");
                    continue;
                }
            };
            let ticket = self.ticket.lock().expect("link lock").clone();
            match client
                .resume(&self.user, &ticket, &self.identity, self.addresses.clone())
                .await
            {
                Ok(grant) => {
                    *self.ticket.lock().expect("link lock") = grant.ticket;
                    let (users, everyone) = self.watching.lock().expect("link lock").clone();
                    if (!users.is_empty() || everyone)
                        && let Err(e) = client.watch(users, everyone).await
                    {
                        tracing::warn!(error = %e, "could not renew presence watch");
                    }
                    *self.addr.lock().expect("link lock") = client.addr();
                    *self.client.lock().expect("link lock") = Arc::new(client);
                    return Ok(());
                }
                Err(e @ ClientError::Refused { .. }) => return Err(e),
                Err(e) => tracing::debug!(error = %e, "resume failed; retrying"),
            }
        }
    }
}

/// `delay` scaled by a random factor in [0.5, 1.5).
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + rand::random::<f64>())
}
