//! The relay: when two peers find no direct path, the directory splices them.
//!
//! A relay session is named by a [`RelayToken`] that [`crate::rendezvous`] makes when
//! one user asks to connect to another (an *offer*: initiator, target, expiry). Each peer
//! opens a new bidirectional stream on its directory connection and sends
//! [`RelayMsg::Open`] with the token; the first one to come is *parked* (if it is the
//! initiator, the target is told with [`Event::RelayCall`]), the second one pairs with
//! it, both get [`RelayMsg::Ready`], and from then on two pumps copy bytes between the
//! streams. What is copied is the chat's own frames, end-to-end sealed by the peers
//! (`proto::session`): the directory learns who talks to whom, when and how much, never
//! what.
//!
//! ```text
//! ali ── relay stream ──> [pump ali→bianca] ──> relay stream ── bianca
//!     <──               <─[pump bianca→ali] <──
//! ```
//!
//! Bounds ([`RelayPolicy`]): an operator switch, sessions at once in total and per user
//! (a parked stream counts), a token bucket per user on the bytes they send through the
//! relay (a user over it is slowed down by QUIC flow control, not cut off), offers per
//! user per [`RelayPolicy::offer_ttl`], and how long a parked stream waits. Each pump
//! holds one [`PUMP_BUFFER`]; a pump that cannot write for [`STALL`] ends the session.
//!
//! Ends pass through: a stream finished by one peer is finished towards the other, a
//! reset is passed on with its code, and a peer that stops reading is stopped on the
//! other side. When a peer's connection breaks, the other side's stream is reset with
//! [`proto::message::RELAY_PEER_LOST`].
//!
//! With several instances of the directory, the two peers may be connected to different
//! ones: the target's instance then forwards its stream to the instance that issued the
//! token, over a link between the two ([`forward`]).
//!
//! Counters: [`Metrics::relay_sessions`] (sessions spliced or forwarded here, open now) and
//! [`Metrics::relay_bytes`] (bytes copied); the status page and `/metrics` show both.
//! [`RelayTap`] is a test hook that records the bytes copied, so tests can check that
//! only ciphertext went through.

pub mod forward;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use proto::frame;
use proto::message::{Event, RELAY_PEER_LOST, RelayMsg, RelayRefusal, RelayToken};
use proto::names::UserName;
use quinn::{ReadError, RecvStream, SendStream, VarInt, WriteError};
use tokio::sync::oneshot;
use tokio::time::timeout;

use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::state::Shared;

/// Bytes one pump reads and writes at a time (one buffer per direction per session).
pub const PUMP_BUFFER: usize = 16 * 1024;
/// A pump that cannot hand bytes to the other peer for this long ends the session: that
/// peer stopped reading.
pub const STALL: Duration = Duration::from_secs(30);
/// How long a new relay stream may take to send its `Open` frame.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often expired offers are swept out (at most; sweeping happens on new offers).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

pub use crate::config::{RelayPolicy, RelayTap};

/// A token bucket over bytes/// A token bucket over bytes, shared by one user's relay sessions. It lets a sender run
/// into debt and then makes it wait the debt off, so a large write is slowed, never
/// refused.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: u64, burst: u64) -> Self {
        let burst = burst.max(PUMP_BUFFER as u64) as f64;
        Self {
            rate: rate.max(1) as f64,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `n` bytes; returns how long the caller must wait before sending them.
    fn take(&self, n: usize, now: Instant) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *state;
        let refilled = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate)
            .min(self.burst);
        let left = refilled - n as f64;
        *state = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.rate)
        }
    }
}

/// One `Rendezvous`: who may use its token, until when.
#[derive(Debug)]
struct Offer {
    initiator: UserName,
    target: UserName,
    expires: Instant,
}

/// The first stream of a session, waiting for the second. Whoever holds it holds the
/// stream's place in the caps.
struct Parked {
    user: UserName,
    send: SendStream,
    recv: RecvStream,
    /// Fired when the second stream takes this one: the waiter stops waiting.
    taken: oneshot::Sender<()>,
    admitted: Admitted,
}

#[derive(Default)]
struct Inner {
    offers: HashMap<RelayToken, Offer>,
    /// Each user's recent offers, oldest first (for the per-user limit).
    offers_by_user: HashMap<String, VecDeque<Instant>>,
    parked: HashMap<RelayToken, Parked>,
    /// Relay streams open per user (parked or spliced).
    sessions: HashMap<String, usize>,
    total: usize,
    buckets: HashMap<String, Arc<Bucket>>,
    last_sweep: Option<Instant>,
}

impl Inner {
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.offers.retain(|_, o| o.expires > now);
        self.offers_by_user.retain(|_, q| {
            while q.front().is_some_and(|t| *t <= now) {
                q.pop_front();
            }
            !q.is_empty()
        });
    }

    /// Counts one more relay stream for `user`, if the caps allow.
    fn admit(&mut self, policy: &RelayPolicy, user: &str) -> bool {
        let mine = self.sessions.get(user).copied().unwrap_or(0);
        if mine >= policy.max_sessions_per_user || self.total >= policy.max_sessions {
            return false;
        }
        self.sessions.insert(user.to_string(), mine + 1);
        self.total += 1;
        true
    }

    fn release(&mut self, user: &str) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.sessions.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.sessions.remove(user);
                self.buckets.remove(user);
            }
        }
    }

    fn bucket(&mut self, policy: &RelayPolicy, user: &str) -> Arc<Bucket> {
        self.buckets
            .entry(user.to_string())
            .or_insert_with(|| {
                Arc::new(Bucket::new(
                    policy.bytes_per_sec_per_user,
                    policy.burst_bytes_per_user,
                ))
            })
            .clone()
    }
}

/// The directory's relay: offers, parked streams, per-user counts and buckets.
pub struct Relay {
    policy: RelayPolicy,
    metrics: Arc<Metrics>,
    presence: Presence,
    inner: Mutex<Inner>,
    /// Links to the other instances of the service (with several instances only).
    links: OnceLock<Arc<forward::Links>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Gives a user's relay stream back to the caps when dropped.
struct Admitted {
    relay: Arc<Relay>,
    user: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.relay.lock().release(&self.user);
    }
}

impl Relay {
    /// A relay under `policy`, counting into `metrics`, calling targets through `presence`.
    pub fn new(policy: RelayPolicy, metrics: Arc<Metrics>, presence: Presence) -> Self {
        Self {
            policy,
            metrics,
            presence,
            inner: Mutex::default(),
            links: OnceLock::new(),
        }
    }

    /// Joins the other instances: relay streams for tokens they issued are forwarded to
    /// them over `links` ([`forward`]). Set once.
    pub fn set_links(&self, links: Arc<forward::Links>) {
        let _ = self.links.set(links);
    }

    /// The links to other instances, when there are any.
    pub fn links(&self) -> Option<&Arc<forward::Links>> {
        self.links.get()
    }

    /// Counts one more relay stream for `user` if the caps allow; dropping the guard
    /// gives it back.
    fn admit(self: &Arc<Self>, user: &str) -> Option<Admitted> {
        self.lock().admit(&self.policy, user).then(|| Admitted {
            relay: self.clone(),
            user: user.to_string(),
        })
    }

    /// `user`'s byte bucket (shared by all their relay streams).
    fn bucket(&self, user: &str) -> Arc<Bucket> {
        self.lock().bucket(&self.policy, user)
    }

    /// What the relay allows.
    pub fn policy(&self) -> &RelayPolicy {
        &self.policy
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a token for `initiator` connecting to `target`, or `None` when the
    /// initiator has made too many offers lately.
    pub fn offer(&self, initiator: &UserName, target: &UserName) -> Option<RelayToken> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        let recent = inner
            .offers_by_user
            .entry(initiator.to_string())
            .or_default();
        while recent.front().is_some_and(|t| *t <= now) {
            recent.pop_front();
        }
        if recent.len() >= self.policy.max_offers_per_user {
            return None;
        }
        let expires = now + self.policy.offer_ttl;
        recent.push_back(expires);
        let token: RelayToken = rand::random();
        inner.offers.insert(
            token,
            Offer {
                initiator: initiator.clone(),
                target: target.clone(),
                expires,
            },
        );
        Some(token)
    }

    /// Relay streams open now (parked or spliced), in total.
    pub fn open_streams(&self) -> usize {
        self.lock().total
    }

    /// A locked account: forgets the offers made by or for `user` (so nobody parks a
    /// stream waiting for them) and returns how many relay streams they hold now. Those
    /// are streams on their directory connection: they end when it is closed, and the
    /// other side's stream is reset with [`proto::message::RELAY_PEER_LOST`].
    pub fn forget_user(&self, user: &str) -> usize {
        let mut inner = self.lock();
        inner
            .offers
            .retain(|_, o| o.initiator != user && o.target != user);
        inner.sessions.get(user).copied().unwrap_or(0)
    }
}

/// Takes a new stream a peer opened on its directory connection (logged in as `user`)
/// and serves it as a relay stream in a task of its own.
pub(crate) fn accept_stream(
    shared: &Arc<Shared>,
    user: UserName,
    send: SendStream,
    recv: RecvStream,
) {
    let relay = shared.relay.clone();
    tokio::spawn(async move { serve(relay, user, send, recv).await });
}

/// Refuses a relay stream: says why and finishes it.
async fn refuse(send: &mut SendStream, recv: &mut RecvStream, reason: RelayRefusal) {
    tracing::debug!(%reason, "relay stream refused");
    let _ = timeout(
        OPEN_TIMEOUT,
        frame::write_frame(send, &RelayMsg::Refused { reason }),
    )
    .await;
    let _ = send.finish();
    let _ = recv.stop(VarInt::from_u32(0));
}

async fn serve(relay: Arc<Relay>, user: UserName, mut send: SendStream, mut recv: RecvStream) {
    let token = match timeout(OPEN_TIMEOUT, frame::read_frame::<_, RelayMsg>(&mut recv)).await {
        Ok(Ok(Some(RelayMsg::Open { token }))) => token,
        Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
            tracing::debug!("relay stream without a valid Open frame; dropped");
            let _ = send.reset(VarInt::from_u32(0));
            let _ = recv.stop(VarInt::from_u32(0));
            return;
        }
    };
    if !relay.policy.enabled {
        return refuse(&mut send, &mut recv, RelayRefusal::Disabled).await;
    }
    // A token another instance issued: the session is spliced there.
    if let Some(links) = relay.links().cloned()
        && !relay.lock().offers.contains_key(&token)
        && let Some(instance) = relay.presence.remote_offers().take(&token, &user)
    {
        return forward::forward(relay, links, instance, (user, token), send, recv).await;
    }
    join(relay, user, token, send, recv).await
}

/// `user`'s relay stream for `token` (theirs, or forwarded by another instance): parks
/// it, or splices it to the stream parked for the same token, or refuses it.
async fn join(
    relay: Arc<Relay>,
    user: UserName,
    token: RelayToken,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    if !relay.policy.enabled {
        return refuse(&mut send, &mut recv, RelayRefusal::Disabled).await;
    }

    enum Next {
        Refuse(RelayRefusal, SendStream, RecvStream),
        Wait(oneshot::Receiver<()>),
        Splice(Parked, Admitted, SendStream, RecvStream),
    }
    // Decided under the lock; guards (which lock to release) are dropped after it.
    let next = {
        let now = Instant::now();
        let mut inner = relay.lock();
        let offer = inner
            .offers
            .get(&token)
            .filter(|o| o.expires > now && (o.initiator == user || o.target == user))
            .map(|o| (o.initiator.clone(), o.target.clone()));
        let parked_by = inner.parked.get(&token).map(|p| p.user.clone());
        match (offer, parked_by) {
            (None, _) => Next::Refuse(RelayRefusal::UnknownToken, send, recv),
            // The same user twice on one token.
            (Some(_), Some(by)) if by == user => {
                Next::Refuse(RelayRefusal::UnknownToken, send, recv)
            }
            (Some(_), _) if !inner.admit(&relay.policy, &user) => {
                Next::Refuse(RelayRefusal::TooManySessions, send, recv)
            }
            (Some(_), Some(_)) => {
                inner.offers.remove(&token);
                let parked = inner.parked.remove(&token).expect("checked above");
                let admitted = Admitted {
                    relay: relay.clone(),
                    user: user.to_string(),
                };
                Next::Splice(parked, admitted, send, recv)
            }
            (Some((initiator, target)), None) => {
                let (taken, waiting) = oneshot::channel();
                let admitted = Admitted {
                    relay: relay.clone(),
                    user: user.to_string(),
                };
                inner.parked.insert(
                    token,
                    Parked {
                        user: user.clone(),
                        send,
                        recv,
                        taken,
                        admitted,
                    },
                );
                if user == initiator {
                    relay.presence.notify(
                        &[target],
                        Event::RelayCall {
                            from: user.clone(),
                            token,
                        },
                    );
                }
                // The streams are parked: this task only waits now.
                Next::Wait(waiting)
            }
        }
    };
    match next {
        Next::Refuse(reason, mut send, mut recv) => refuse(&mut send, &mut recv, reason).await,
        Next::Wait(waiting) => wait(relay, token, waiting).await,
        Next::Splice(parked, admitted, send, recv) => {
            splice(relay, parked, (user, send, recv), admitted).await;
        }
    }
}

/// The first stream of a session waits for the second (which takes over its streams),
/// or is refused with `NoAnswer` after [`RelayPolicy::pair_timeout`].
async fn wait(relay: Arc<Relay>, token: RelayToken, waiting: oneshot::Receiver<()>) {
    if timeout(relay.policy.pair_timeout, waiting).await.is_ok() {
        return;
    }
    let parked = relay.lock().parked.remove(&token);
    if let Some(mut parked) = parked {
        refuse(&mut parked.send, &mut parked.recv, RelayRefusal::NoAnswer).await;
    }
}

/// Both streams are here: tell both sides, then copy bytes both ways until both are done.
async fn splice(
    relay: Arc<Relay>,
    first: Parked,
    (user, mut send, recv): (UserName, SendStream, RecvStream),
    admitted: Admitted,
) {
    let Parked {
        user: first_user,
        send: mut first_send,
        recv: first_recv,
        taken,
        admitted: first_admitted,
    } = first;
    let _ = taken.send(());
    let _guards = (admitted, first_admitted);
    tracing::info!(a = %first_user, b = %user, "relay session open");
    let ready = async {
        frame::write_frame(&mut first_send, &RelayMsg::Ready { peer: user.clone() }).await?;
        frame::write_frame(
            &mut send,
            &RelayMsg::Ready {
                peer: first_user.clone(),
            },
        )
        .await
    };
    if !matches!(timeout(OPEN_TIMEOUT, ready).await, Ok(Ok(()))) {
        let _ = first_send.reset(VarInt::from_u32(RELAY_PEER_LOST));
        let _ = send.reset(VarInt::from_u32(RELAY_PEER_LOST));
        return;
    }
    let (first_bucket, bucket) = {
        let mut inner = relay.lock();
        (
            inner.bucket(&relay.policy, &first_user),
            inner.bucket(&relay.policy, &user),
        )
    };
    relay.metrics.relay_sessions.fetch_add(1, Ordering::Relaxed);
    let tap = relay.policy.tap.clone();
    tokio::join!(
        pump(
            first_recv,
            send,
            Some(first_bucket),
            &relay.metrics,
            tap.as_ref()
        ),
        pump(recv, first_send, Some(bucket), &relay.metrics, tap.as_ref()),
    );
    relay.metrics.relay_sessions.fetch_sub(1, Ordering::Relaxed);
    tracing::info!(a = %first_user, b = %user, "relay session closed");
}

/// Copies one direction until it ends, passing the end on (finish, reset, stop), at the
/// pace `bucket` allows (`None`: another instance limits it).
async fn pump(
    mut from: RecvStream,
    mut to: SendStream,
    bucket: Option<Arc<Bucket>>,
    metrics: &Metrics,
    tap: Option<&RelayTap>,
) {
    let lost = VarInt::from_u32(RELAY_PEER_LOST);
    let mut buf = vec![0u8; PUMP_BUFFER];
    let mut stopped = std::pin::pin!(to.stopped());
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(Some(n)) => n,
                Ok(None) => {
                    let _ = to.finish();
                    return;
                }
                Err(ReadError::Reset(code)) => {
                    let _ = to.reset(code);
                    return;
                }
                Err(_) => {
                    let _ = to.reset(lost);
                    return;
                }
            },
            // The receiving peer stopped reading (or vanished): tell the sender.
            stopped = &mut stopped => {
                let code = match stopped {
                    Ok(Some(code)) => code,
                    _ => lost,
                };
                let _ = from.stop(code);
                return;
            }
        };
        if let Some(bucket) = &bucket {
            let wait = bucket.take(n, Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        metrics.relay_bytes.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(tap) = tap {
            tap.record(&buf[..n]);
        }
        match timeout(STALL, to.write_all(&buf[..n])).await {
            Ok(Ok(())) => {}
            Ok(Err(WriteError::Stopped(code))) => {
                let _ = from.stop(code);
                return;
            }
            Ok(Err(_)) | Err(_) => {
                let _ = to.reset(lost);
                let _ = from.stop(lost);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let b = Bucket::new(1000, 20_000);
        assert_eq!(b.take(20_000, start), Duration::ZERO);
        // Empty now: 500 bytes more cost half a second.
        let wait = b.take(500, start);
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        // A second later the debt is paid and 500 more bytes are free again.
        let later = start + Duration::from_millis(1000);
        assert_eq!(b.take(500, later), Duration::ZERO);
    }

    #[test]
    fn offers_are_limited_per_user_and_expire() {
        let policy = RelayPolicy {
            max_offers_per_user: 2,
            offer_ttl: Duration::from_millis(50),
            ..RelayPolicy::default()
        };
        let relay = Relay::new(policy, Arc::new(Metrics::new()), Presence::default());
        let a = relay
            .offer(&"ali".parse().unwrap(), &"bianca".parse().unwrap())
            .unwrap();
        let b = relay
            .offer(&"ali".parse().unwrap(), &"chloe".parse().unwrap())
            .unwrap();
        assert_ne!(a, b);
        assert!(
            relay
                .offer(&"ali".parse().unwrap(), &"dora".parse().unwrap())
                .is_none(),
            "third offer refused"
        );
        assert!(
            relay
                .offer(&"bianca".parse().unwrap(), &"ali".parse().unwrap())
                .is_some(),
            "limits are per user"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            relay
                .offer(&"ali".parse().unwrap(), &"dora".parse().unwrap())
                .is_some(),
            "old offers expired"
        );
    }

    #[test]
    fn caps_count_per_user_and_in_total() {
        let policy = RelayPolicy {
            max_sessions: 3,
            max_sessions_per_user: 2,
            ..RelayPolicy::default()
        };
        let mut inner = Inner::default();
        assert!(inner.admit(&policy, "ali"));
        assert!(inner.admit(&policy, "ali"));
        assert!(!inner.admit(&policy, "ali"), "per-user cap");
        assert!(inner.admit(&policy, "bianca"));
        assert!(!inner.admit(&policy, "chloe"), "total cap");
        inner.release("ali");
        assert!(inner.admit(&policy, "chloe"));
        assert_eq!(inner.total, 3);
    }

    #[test]
    fn tap_keeps_bytes_in_order() {
        let tap = RelayTap::new();
        tap.record(b"abc");
        tap.record(b"def");
        assert_eq!(tap.bytes(), b"abcdef");
    }
}
