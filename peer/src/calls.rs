//! The calls service: every peer-to-peer connection the peer makes or takes.
//!
//! It owns the endpoint's peer side: the accept loop (held to the [`gate`]'s bounds
//! before any TLS work), hole punching when the directory announces a caller, relay
//! streams for calls that found no direct path, and dialing (rendezvous, pin check,
//! direct or relayed path: [`crate::reach`]). Each call runs in a task of its own, so a
//! slow or hostile caller never stalls another; what comes of it is one [`CallEvent`]
//! on the service's channel: an opened session (a [`ChatHandle`] and its
//! [`ChatEvents`], like the chat actors hand out), a failed dial, or a refused call.
//!
//! The service knows nothing of conversations: which session carries what, and what
//! the user sees, is the app's ([`crate::app`]).

pub mod gate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use proto::message::{ConnectRefusal, PeerInfo, RelayToken};
use proto::names::UserName;
use proto::{Identity, PublicKey};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::chat::{self, ChatEvents, ChatHandle, Transport};
use crate::endpoint;
use crate::link::Link;
use crate::pins::{PinCheck, Pins};
use crate::reach::{self, Punches, ReachOptions};
use crate::ui::Direction;
use gate::{Gate, Shown, Summary};

/// How many call events may wait for the app.
const EVENTS: usize = 64;

/// What came of a call.
pub enum CallEvent {
    /// A session is open, one we dialed or one we took.
    Opened {
        handle: ChatHandle,
        events: ChatEvents,
        direction: Direction,
    },
    /// Dialing `peer` failed.
    DialFailed { peer: String, reason: String },
    /// A call was refused, and is worth naming now.
    Refused {
        peer: Option<String>,
        reason: String,
    },
    /// Refusals counted since the last one shown (see [`gate`]).
    Refusals(Summary),
}

/// The people and keys the service works for, shared by its tasks.
struct Inner {
    link: Arc<Link>,
    endpoint: quinn::Endpoint,
    identity: Arc<Identity>,
    me: UserName,
    pins: Arc<Mutex<Pins>>,
    changed_keys: ChangedKeys,
    events: mpsc::Sender<CallEvent>,
    /// Our dials waiting for connections the other peer makes while punching.
    punches: Punches,
    /// Punching attempts running, at most [`reach::MAX_PUNCHES`].
    punching: AtomicUsize,
    /// Bounds on what incoming calls cost us, and the refusal tally.
    gate: Gate,
}

/// The running calls service. Dropping it stops its tasks; [`Calls::close`] also closes
/// the endpoint.
pub struct Calls {
    inner: Arc<Inner>,
    /// How long dials try direct paths before the relay.
    reach: ReachOptions,
    tasks: JoinSet<()>,
}

/// A call to answer: a connection (one that called us, or one we made while punching
/// towards a dialer), or a paired relay stream.
enum Call {
    Direct(quinn::Connection),
    Relayed(Transport),
}

impl Calls {
    /// The service for a logged-in user, and the channel its events come on. Calls are
    /// taken once [`Calls::listen`] is called.
    pub fn new(
        link: Arc<Link>,
        endpoint: quinn::Endpoint,
        identity: Arc<Identity>,
        pins: Arc<Mutex<Pins>>,
        changed_keys: ChangedKeys,
    ) -> (Self, mpsc::Receiver<CallEvent>) {
        let (events, rx) = mpsc::channel(EVENTS);
        let inner = Inner {
            me: link.user().clone(),
            link,
            endpoint,
            identity,
            pins,
            changed_keys,
            events,
            punches: Punches::default(),
            punching: AtomicUsize::new(0),
            gate: Gate::default(),
        };
        let calls = Self {
            inner: Arc::new(inner),
            reach: ReachOptions::from_env(),
            tasks: JoinSet::new(),
        };
        (calls, rx)
    }

    /// Sets how long dials try direct paths before the relay (instead of the default or
    /// `PEER_DIRECT_TIMEOUT_MS`).
    pub fn set_reach(&mut self, reach: ReachOptions) {
        self.reach = reach;
    }

    /// The endpoint's local address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// Takes every call that arrives on the endpoint, each in a task of its own. Beyond
    /// the [`Gate`]'s bounds on connections being answered, a connection is refused
    /// before any TLS work.
    pub fn listen(&mut self) {
        let inner = self.inner.clone();
        self.tasks.spawn(async move {
            while let Some(incoming) = inner.endpoint.accept().await {
                let Some(entered) = inner.gate.enter(gate::source_of(incoming.remote_address()))
                else {
                    incoming.refuse();
                    inner.refused_at_the_door();
                    continue;
                };
                let inner = inner.clone();
                tokio::spawn(async move {
                    let _entered = entered;
                    let conn = match incoming.await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(error = %e, "incoming handshake failed");
                            return;
                        }
                    };
                    if reach::is_punch(&conn) {
                        // Made by a peer we are dialing: it belongs to that dial.
                        inner.punches.deliver(conn);
                        return;
                    }
                    inner.take_call(Call::Direct(conn)).await;
                });
            }
        });
    }

    /// Dials `peer` in a task of its own: [`CallEvent::Opened`] or
    /// [`CallEvent::DialFailed`] follows.
    pub fn dial(&mut self, peer: String, background: bool) {
        let (inner, reach) = (self.inner.clone(), self.reach.clone());
        self.tasks.spawn(async move {
            let event = match inner.dial(&peer, background, &reach).await {
                Ok((handle, events)) => CallEvent::Opened {
                    handle,
                    events,
                    direction: Direction::Outgoing,
                },
                Err(reason) => CallEvent::DialFailed { peer, reason },
            };
            let _ = inner.events.send(event).await;
        });
    }

    /// The directory says `from` is about to connect to us: dial their addresses now
    /// (hole punching), and answer on whichever connection completes.
    pub fn incoming(&mut self, from: PeerInfo, direct: bool) {
        if !direct || from.user == self.inner.me {
            return;
        }
        let running = self.inner.punching.fetch_add(1, Ordering::Relaxed);
        if running >= reach::MAX_PUNCHES {
            self.inner.punching.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(from = %from.user, "too many punching attempts running; not punching");
            return;
        }
        let inner = self.inner.clone();
        let near = inner.link.client().addr().ip();
        self.tasks.spawn(async move {
            let conn = reach::punch(&inner.endpoint, near, &inner.identity, &from).await;
            inner.punching.fetch_sub(1, Ordering::Relaxed);
            if let Some(conn) = conn {
                inner.take_call(Call::Direct(conn)).await;
            }
        });
    }

    /// `from` found no direct path and waits on the relay: open our relay stream and
    /// answer the call on it.
    pub fn relay_call(&mut self, from: UserName, token: RelayToken) {
        let inner = self.inner.clone();
        self.tasks.spawn(async move {
            match inner.link.open_relay(token).await {
                Ok(stream) => {
                    inner
                        .take_call(Call::Relayed(Transport::relayed(stream)))
                        .await
                }
                Err(e) => {
                    let event = CallEvent::Refused {
                        peer: Some(from.into_string()),
                        reason: format!("could not take the relayed call: {e}"),
                    };
                    let _ = inner.events.send(event).await;
                }
            }
        });
    }

    /// Stops taking and making calls and closes the endpoint (telling the directory and
    /// peers it is going).
    pub async fn close(mut self) {
        endpoint::close(&self.inner.endpoint).await;
        self.tasks.abort_all();
    }
}

impl Inner {
    /// Asks for a rendezvous with `peer`, checks the pin, and opens the session: direct
    /// if a path completes in time, else relayed (see [`crate::reach`]).
    async fn dial(
        &self,
        peer: &str,
        background: bool,
        reach: &ReachOptions,
    ) -> Result<(ChatHandle, ChatEvents), String> {
        let rv = reach::rendezvous(&self.link, peer).await?;
        let info: &PeerInfo = &rv.peer;
        let check = self
            .pins
            .lock()
            .map(|p| p.check(peer, &info.identity))
            .map_err(|_| "pin store poisoned".to_string())?;
        if let PinCheck::Changed { pinned } = check {
            self.changed_keys.note(peer, info.identity);
            return Err(format!(
                "{peer}'s key has CHANGED: pinned {}, the directory now gives {}. This may be an attack. \
                 If {peer} really has a new key (ask them), run `/trust {peer}` and compare the safety number.",
                pinned.fingerprint().short(),
                info.identity.fingerprint().short()
            ));
        }
        reach::open(
            &self.link,
            &self.endpoint,
            &self.identity,
            &self.me,
            &rv,
            background,
            &self.punches,
            reach,
        )
        .await
    }

    /// Answers a call: checks the caller (directory, pins, key), and reports the session
    /// or the refusal. A connection the dialer dropped because another path won is
    /// nothing to report.
    ///
    /// Before the directory is asked about the caller, the [`Gate`] holds the caller's
    /// source and all lookups to their bounds, and a recent answer that accepts this
    /// very connection is used instead of a new lookup.
    async fn take_call(self: &Arc<Self>, call: Call) {
        let (source, proven) = match &call {
            Call::Direct(conn) => (
                Some(gate::source_of(conn.remote_address())),
                endpoint::remote_key(conn).map(|key| (key, conn.remote_address())),
            ),
            Call::Relayed(_) => (None, None),
        };
        let lookup = async |claimed: &str| {
            self.gate.admit_source(source)?;
            if let (Some((key, remote)), Some(info)) = (proven, self.gate.cached(claimed))
                && chat::verify_initiator(claimed, &key, remote, Some(&info)).is_ok()
            {
                return Ok(Some(info));
            }
            self.gate.admit_lookup()?;
            match self.link.lookup(claimed).await {
                Ok(info) => {
                    self.gate.remember(claimed, info.as_ref());
                    Ok(info)
                }
                Err(e) => {
                    tracing::debug!(%e, "directory lookup for an incoming call failed");
                    Err(ConnectRefusal::DirectoryUnavailable)
                }
            }
        };
        let pin_check = |claimed: &str, key: &PublicKey| match self
            .pins
            .lock()
            .map(|p| p.check(claimed, key))
        {
            Ok(PinCheck::Changed { .. }) => {
                self.changed_keys.note(claimed, *key);
                Err(ConnectRefusal::PinnedKeyChanged)
            }
            _ => Ok(()),
        };
        let (result, duplicate) = match call {
            Call::Direct(conn) => {
                let watch = conn.clone();
                let result = chat::accept(conn, &self.identity, &self.me, lookup, pin_check).await;
                (result, reach::is_duplicate(&watch))
            }
            Call::Relayed(transport) => (
                chat::accept_over(transport, &self.identity, &self.me, lookup, pin_check).await,
                false,
            ),
        };
        let event = match result {
            Ok((handle, events)) => CallEvent::Opened {
                handle,
                events,
                direction: Direction::Incoming,
            },
            Err(e) if duplicate && e.claimed().is_none() => {
                tracing::debug!(error = %e, "unused path closed by the dialer");
                return;
            }
            Err(e) => {
                let reason = match &e {
                    chat::ChatError::RefusedIncoming { reason, .. } => Some(reason),
                    _ => None,
                };
                // Only direct calls, which anyone can make, are summarised. A relayed
                // call comes from a logged-in user the directory paired us with (and
                // bounds), and a contact whose key changed got past the directory's
                // check: those are always named, never flood noise.
                let shown = match reason {
                    Some(ConnectRefusal::PinnedKeyChanged) => Shown::Now,
                    _ if source.is_none() => Shown::Now,
                    _ => self.gate.refused(gate::refusal_kind(reason)),
                };
                match shown {
                    Shown::Now => CallEvent::Refused {
                        peer: e.claimed().map(str::to_string),
                        reason: e.to_string(),
                    },
                    Shown::SummaryDue(at) => {
                        self.summary_at(at);
                        return;
                    }
                    Shown::Counted => return,
                }
            }
        };
        let _ = self.events.send(event).await;
    }

    /// A connection refused before it was even answered (too many at once): counted.
    fn refused_at_the_door(self: &Arc<Self>) {
        if let Shown::SummaryDue(at) = self
            .gate
            .refused(gate::refusal_kind(Some(&ConnectRefusal::Busy)))
        {
            self.summary_at(at);
        }
    }

    /// Sends the refusal summary at `at`.
    fn summary_at(self: &Arc<Self>, at: tokio::time::Instant) {
        let inner = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(summary) = inner.gate.summary() {
                let _ = inner.events.send(CallEvent::Refusals(summary)).await;
            }
        });
    }
}

/// Changed keys seen when a call was refused because of a pin (not pinned), newest per
/// name, at most [`ChangedKeys::MAX`] names, for `/fingerprint NAME`. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ChangedKeys(Arc<Mutex<HashMap<String, PublicKey>>>);

impl ChangedKeys {
    const MAX: usize = 64;

    fn note(&self, name: &str, key: PublicKey) {
        let mut keys = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() < Self::MAX || keys.contains_key(name) {
            keys.insert(name.to_string(), key);
        }
    }

    /// The changed key seen for `name`, if any.
    pub fn get(&self, name: &str) -> Option<PublicKey> {
        let keys = self.0.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(name).copied()
    }

    /// Forgets `name`'s changed key (it is now pinned).
    pub fn forget(&self, name: &str) {
        let mut keys = self.0.lock().unwrap_or_else(|e| e.into_inner());
        keys.remove(name);
    }
}
