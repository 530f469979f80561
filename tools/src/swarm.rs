//! A crowd of simulated peers: each has its own identity key and its own QUIC connection
//! to the directory, through the real [`DirectoryClient`].
//!
//! Peers share a few client endpoints (one UDP socket carries `peers_per_endpoint`
//! connections), so the directory sees that many users behind one address, as it would
//! behind a NAT. Every operation checks the answer it gets: a lookup of a logged-in peer
//! must return that peer's name, key and the address its connection comes from; `Who`
//! must list online users only, sorted, as many as the directory lists at most. Anything
//! else counts as an error.
//!
//! Against several directory instances (one service on a shared database), peer `i`
//! logs in to instance `i % N`, so most lookups ask one instance about a user connected
//! to another. [`Swarm::await_presence`] waits until the instances know of each other's
//! users before anything is measured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use peer::directory_client::{ClientError, DirectoryClient};
use proto::{Identity, PublicKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use zeroize::Zeroizing;

use crate::accounts;

/// Errors kept word for word (the rest are only counted).
const KEEP_ERRORS: usize = 5;

/// How long a peer keeps trying to log back in during a reconnect storm.
const STORM_DEADLINE: Duration = Duration::from_secs(60);

/// Lookups in flight while [`Swarm::await_presence`] checks every peer.
const PRESENCE_WINDOW: usize = 32;

/// What one phase of load achieved.
#[derive(Debug, Default)]
pub struct Phase {
    /// Latency of each successful operation.
    pub samples: Vec<Duration>,
    /// Failed or wrong answers.
    pub errors: u64,
    /// The first few errors, for the user.
    pub first_errors: Vec<String>,
    /// Wall time of the phase.
    pub elapsed: Duration,
}

impl Phase {
    /// Successful operations per second of wall time.
    pub fn rate(&self) -> f64 {
        self.samples.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_errors.len() < KEEP_ERRORS {
            self.first_errors.push(e);
        }
    }

    fn merge(&mut self, other: Phase) {
        self.samples.extend(other.samples);
        self.errors += other.errors;
        for e in other.first_errors {
            if self.first_errors.len() < KEEP_ERRORS {
                self.first_errors.push(e);
            }
        }
    }
}

/// One simulated peer.
pub struct SimPeer {
    pub name: String,
    pub identity: Arc<Identity>,
    endpoint: usize,
    /// Index of the directory instance this peer logs in to.
    instance: usize,
    client: Option<Arc<DirectoryClient>>,
    ticket: Option<Zeroizing<Vec<u8>>>,
}

/// The crowd.
pub struct Swarm {
    endpoints: Vec<quinn::Endpoint>,
    peers: Vec<SimPeer>,
    /// The instances' addresses (all of them serve with the same key).
    directories: Arc<[SocketAddr]>,
    key: PublicKey,
}

impl Swarm {
    /// Bulk users `first..first + n` on fresh client endpoints, none logged in yet. Peer
    /// `i` will log in to `directories[i % directories.len()]`.
    pub fn new(
        first: usize,
        n: usize,
        peers_per_endpoint: usize,
        directories: &[SocketAddr],
        key: PublicKey,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!directories.is_empty(), "no directory to log in to");
        let per = peers_per_endpoint.max(1);
        let endpoints = (0..n.div_ceil(per))
            .map(|_| client_endpoint())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let peers = (0..n)
            .map(|i| SimPeer {
                name: accounts::bulk_name(first + i),
                identity: Arc::new(accounts::bulk_identity(first + i)),
                endpoint: i / per,
                instance: i % directories.len(),
                client: None,
                ticket: None,
            })
            .collect();
        Ok(Self {
            endpoints,
            peers,
            directories: directories.into(),
            key,
        })
    }

    /// Number of peers whose directory connection is open and logged in.
    pub fn online(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| p.client.as_ref().is_some_and(|c| !c.is_closed()))
            .count()
    }

    /// Logs peers `range` in with their password, at most `concurrency` at once. The
    /// latency of each is from dialing the directory to `Granted`.
    pub async fn login(&mut self, range: std::ops::Range<usize>, concurrency: usize) -> Phase {
        let jobs: Vec<_> = range
            .map(|i| {
                let p = &self.peers[i];
                (
                    i,
                    self.endpoints[p.endpoint].clone(),
                    self.directories[p.instance],
                    p.name.clone(),
                    p.identity.clone(),
                )
            })
            .collect();
        let key = self.key;
        let (phase, results) = bounded(
            jobs,
            Some(concurrency),
            move |(i, ep, directory, name, id)| async move {
                let client = DirectoryClient::connect(&ep, directory, Some(key))
                    .await
                    .map_err(|e| format!("{name}: connect: {e}"))?;
                let grant = client
                    .login(&name, accounts::PASSWORD, &id, Vec::new())
                    .await
                    .map_err(|e| format!("{name}: login: {e}"))?;
                Ok((i, client, grant.ticket))
            },
        )
        .await;
        for (i, client, ticket) in results {
            self.peers[i].client = Some(Arc::new(client));
            self.peers[i].ticket = Some(ticket);
        }
        phase
    }

    /// Waits until every instance knows of the users logged in to the others, for at
    /// most `within`; returns how long that took (nothing to wait for with one instance).
    ///
    /// An instance announces a login to the others through the database a few
    /// milliseconds after granting it, so a lookup right after the login phase could
    /// still miss a user on another instance. This looks every online peer up from a
    /// peer on the next instance ([`PRESENCE_WINDOW`] at a time), then again those not
    /// found yet, until none is left.
    pub async fn await_presence(&self, within: Duration) -> Result<Duration, String> {
        let n = self.directories.len();
        let start = Instant::now();
        if n < 2 {
            return Ok(Duration::ZERO);
        }
        let online = |k: usize| {
            self.peers
                .iter()
                .filter(move |p| p.instance == k)
                .filter_map(|p| Some((p.client.clone().filter(|c| !c.is_closed())?, p)))
        };
        let mut pending = Vec::new();
        for k in 0..n {
            let next = (k + 1) % n;
            let Some((asker, _)) = online(next).next() else {
                return Err(format!("no peer online on instance {next} to ask"));
            };
            pending.extend(online(k).map(|(_, p)| (asker.clone(), p.name.clone())));
        }
        loop {
            let (phase, found) =
                bounded(pending, Some(PRESENCE_WINDOW), |(asker, name)| async move {
                    match asker.lookup(&name).await {
                        Ok(found) => Ok((asker, name, found.is_some())),
                        Err(e) => Err(format!("looking up {name} on another instance: {e}")),
                    }
                })
                .await;
            if let Some(e) = phase.first_errors.into_iter().next() {
                return Err(e);
            }
            pending = found
                .into_iter()
                .filter(|(_, _, found)| !found)
                .map(|(asker, name, _)| (asker, name))
                .collect();
            if pending.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                return Err(format!(
                    "{} users (e.g. {}) still unknown to the next instance after {within:?}",
                    pending.len(),
                    pending[0].1
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Drops every directory connection (as a directory restart would) but keeps the
    /// tickets.
    pub fn disconnect_all(&mut self) {
        for p in &mut self.peers {
            p.client = None;
        }
    }

    /// Every peer with a ticket reconnects and resumes, all at once (or at most
    /// `concurrency` at once). Latency: from the storm's start to that peer's `Granted`.
    ///
    /// Like the real client (`peer::link::Link`), a peer whose connection attempt fails
    /// (no answer, connection lost) tries again after a random back-off of 0.25 s,
    /// doubling up to 4 s, until [`STORM_DEADLINE`]; a refusal is final. Also returns how
    /// many attempts were retried.
    pub async fn resume_all(&mut self, concurrency: Option<usize>) -> (Phase, u64) {
        let jobs: Vec<_> = self
            .peers
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| {
                p.client = None;
                let ticket = p.ticket.take()?;
                Some((
                    i,
                    self.endpoints[p.endpoint].clone(),
                    self.directories[p.instance],
                    p.name.clone(),
                    p.identity.clone(),
                    ticket,
                ))
            })
            .collect();
        let key = self.key;
        let start = Instant::now();
        let retries = Arc::new(AtomicU64::new(0));
        let counter = retries.clone();
        let (mut phase, results) = bounded(
            jobs,
            concurrency,
            move |(i, ep, directory, name, id, ticket)| {
                let retries = counter.clone();
                async move {
                    let mut backoff = Duration::from_millis(250);
                    loop {
                        let attempt = async {
                            let client =
                                DirectoryClient::connect(&ep, directory, Some(key)).await?;
                            let grant = client.resume(&name, &ticket, &id, Vec::new()).await?;
                            Ok::<_, ClientError>((client, grant))
                        };
                        match attempt.await {
                            Ok((client, grant)) => {
                                return Ok((i, client, grant.ticket, start.elapsed()));
                            }
                            Err(e @ ClientError::Refused { .. }) => {
                                return Err(format!("{name}: resume refused: {e}"));
                            }
                            Err(e) if start.elapsed() > STORM_DEADLINE => {
                                return Err(format!(
                                    "{name}: not back after {STORM_DEADLINE:?}: {e}"
                                ));
                            }
                            Err(_) => {
                                retries.fetch_add(1, Ordering::Relaxed);
                                let jitter = rand::random::<f64>() + 0.5;
                                tokio::time::sleep(backoff.mul_f64(jitter)).await;
                                backoff = (backoff * 2).min(Duration::from_secs(4));
                            }
                        }
                    }
                }
            },
        )
        .await;
        phase.samples.clear();
        for (i, client, ticket, since_start) in results {
            self.peers[i].client = Some(Arc::new(client));
            self.peers[i].ticket = Some(ticket);
            phase.samples.push(since_start);
        }
        (phase, retries.load(Ordering::Relaxed))
    }

    /// Who is where: for every online peer, its name, key and the address the directory
    /// must report for it.
    fn online_targets(&self) -> Vec<(Arc<DirectoryClient>, String, PublicKey, SocketAddr)> {
        self.peers
            .iter()
            .filter_map(|p| {
                let client = p.client.clone()?;
                let addr = self.endpoints[p.endpoint].local_addr().ok()?;
                Some((client, p.name.clone(), p.identity.public(), addr))
            })
            .collect()
    }

    /// Lookups from random online peers of random other online peers, `window` at once,
    /// for `duration` (or `max_ops` lookups, whichever ends first). Checks every answer.
    pub async fn lookups(&self, duration: Duration, window: usize, max_ops: usize) -> Phase {
        let targets = Arc::new(self.online_targets());
        if targets.len() < 2 {
            let mut phase = Phase::default();
            phase.error("fewer than two peers online: nothing to look up".into());
            return phase;
        }
        let start = Instant::now();
        let deadline = start + duration;
        let per_worker = max_ops.div_ceil(window.max(1));
        let mut workers = JoinSet::new();
        for _ in 0..window.max(1) {
            let targets = targets.clone();
            workers.spawn(async move {
                let mut phase = Phase::default();
                let mut rng = StdRng::from_rng(&mut rand::rng());
                for _ in 0..per_worker {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let r = rng.random_range(0..targets.len());
                    let mut t = rng.random_range(0..targets.len() - 1);
                    if t >= r {
                        t += 1;
                    }
                    let (client, asker, _, _) = &targets[r];
                    let (_, name, key, addr) = &targets[t];
                    let t0 = Instant::now();
                    match client.lookup(name).await {
                        Ok(Some(info))
                            if info.user == *name
                                && info.identity == *key
                                && info.observed == *addr =>
                        {
                            phase.samples.push(t0.elapsed())
                        }
                        Ok(Some(info)) => phase.error(format!(
                            "{asker} looked up {name}: wrong answer ({} {} at {})",
                            info.user,
                            info.identity.fingerprint().short(),
                            info.observed
                        )),
                        Ok(None) => phase.error(format!("{asker} looked up {name}: not found")),
                        Err(e) => phase.error(format!("{asker} looked up {name}: {e}")),
                    }
                }
                phase
            });
        }
        let mut phase = Phase::default();
        while let Some(done) = workers.join_next().await {
            match done {
                Ok(p) => phase.merge(p),
                Err(e) => phase.error(format!("lookup worker failed: {e}")),
            }
        }
        phase.elapsed = start.elapsed();
        phase
    }

    /// `count` `Who` requests from random online peers, one at a time. The list must
    /// hold `expected` users, sorted by name, every one of them online.
    pub async fn who(&self, count: usize, expected: usize) -> Phase {
        let targets = self.online_targets();
        let online: std::collections::HashSet<&str> = targets
            .iter()
            .map(|(_, name, _, _)| name.as_str())
            .collect();
        let mut phase = Phase::default();
        let start = Instant::now();
        let mut rng = StdRng::from_rng(&mut rand::rng());
        for _ in 0..count {
            if targets.is_empty() {
                break;
            }
            let (client, asker, _, _) = &targets[rng.random_range(0..targets.len())];
            let t0 = Instant::now();
            match client.who().await {
                Ok(users)
                    if users.len() == expected
                        && users.windows(2).all(|w| w[0].user < w[1].user)
                        && users.iter().all(|u| online.contains(u.user.as_str())) =>
                {
                    phase.samples.push(t0.elapsed())
                }
                Ok(users) => phase.error(format!(
                    "{asker} asked who is online: {} users listed, {expected} expected",
                    users.len()
                )),
                Err(e) => phase.error(format!("{asker} asked who is online: {e}")),
            }
        }
        phase.elapsed = start.elapsed();
        phase
    }

    /// Closes every connection and waits (briefly) for the endpoints to go quiet.
    pub async fn close(mut self) {
        self.disconnect_all();
        for ep in &self.endpoints {
            ep.close(0u32.into(), b"bye");
        }
        for ep in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
        }
    }
}

/// A client endpoint on 127.0.0.1 whose socket can take a burst: one socket here stands
/// for up to `peers_per_endpoint` machines, so its receive buffer is as large as the
/// kernel allows (`net.core.rmem_max`) rather than one machine's default.
pub fn client_endpoint() -> anyhow::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    state.set_recv_buffer_size((&socket).into(), 4 << 20)?;
    let runtime = quinn::default_runtime().ok_or_else(|| anyhow::anyhow!("no async runtime"))?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        runtime,
    )?)
}

/// Runs `work` for every job, at most `concurrency` at once (all at once if `None`),
/// timing each. Returns the phase (samples = per-job latency) and the successful results.
pub async fn bounded<J, T, F, Fut>(
    jobs: Vec<J>,
    concurrency: Option<usize>,
    work: F,
) -> (Phase, Vec<T>)
where
    J: Send + 'static,
    T: Send + 'static,
    F: Fn(J) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let slots = concurrency.map(|n| Arc::new(Semaphore::new(n.max(1))));
    let work = Arc::new(work);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for job in jobs {
        let slots = slots.clone();
        let work = work.clone();
        set.spawn(async move {
            let _permit = match &slots {
                Some(s) => Some(s.clone().acquire_owned().await.expect("semaphore open")),
                None => None,
            };
            let t0 = Instant::now();
            let result = work(job).await;
            (result, t0.elapsed())
        });
    }
    let mut phase = Phase::default();
    let mut results = Vec::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok((Ok(r), dt)) => {
                phase.samples.push(dt);
                results.push(r);
            }
            Ok((Err(e), _)) => phase.error(e),
            Err(e) => phase.error(format!("task failed: {e}")),
        }
    }
    phase.elapsed = start.elapsed();
    (phase, results)
}
