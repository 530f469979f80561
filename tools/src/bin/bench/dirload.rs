//! Scenarios 4 and 5: the directory with many logged-in peers.
//!
//! The crowd grows step by step (100, 1,000, 10,000 peers, each a QUIC connection of its
//! own). At each step: the directory's RSS, lookups per second with their latency (a
//! fixed number in flight, each from a random peer's own connection, every answer
//! checked), and the latency of password logins at the real argon2id cost. Then the
//! directory is restarted and every peer logs back in with its session ticket at once:
//! the reconnect storm.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peer::directory_client::DirectoryClient;
use proto::PublicKey;

use crate::accounts;
use crate::procfs::{Meter, Usage};
use crate::server::DirectoryProcess;
use crate::swarm::{Phase, Swarm};

/// Peers sharing one client UDP socket.
const PEERS_PER_ENDPOINT: usize = 100;
/// Password logins in flight while the crowd grows.
const LOGIN_CONCURRENCY: usize = 128;

/// How scenario 5 runs.
pub struct Plan {
    pub steps: Vec<usize>,
    pub lookup_time: Duration,
    pub lookup_window: usize,
    /// Real-cost password logins measured per step (one at a time).
    pub real_logins: usize,
}

/// What one step measured.
pub struct Step {
    pub n: usize,
    /// The password logins that grew the crowd to `n` (cheap hashes: see accounts.rs).
    pub grow: Phase,
    pub lookups: Phase,
    pub real_logins: Phase,
    pub rss_kib: u64,
    /// Directory RSS just before this step's peers logged in, and how many they were.
    pub rss_before_kib: u64,
    pub added: usize,
    pub idle_rss_kib: u64,
    pub dir_lookups: Usage,
    pub bench_lookups: Usage,
}

impl Step {
    /// Directory RSS per connected peer, KiB: how much the RSS grew while this step's
    /// peers logged in, per peer. (Measured per step because argon2's 19 MiB buffers of
    /// the password logins stay in malloc's per-thread arenas and would be counted.)
    pub fn per_peer_kib(&self) -> f64 {
        self.rss_kib.saturating_sub(self.rss_before_kib) as f64 / self.added.max(1) as f64
    }
}

/// The reconnect storm.
pub struct Storm {
    pub n: usize,
    /// Per peer: time from the storm's start to its `Granted`.
    pub phase: Phase,
    pub until_all: Duration,
    pub dir: Usage,
    pub bench: Usage,
    /// How long the directory took to stop and start again.
    pub restart: Duration,
    /// Connection attempts that failed and were tried again (as the real client does).
    pub retries: u64,
}

/// Runs scenario 5's steps, then scenario 4. Takes and gives back the directory (it is
/// restarted in the middle).
pub async fn run(
    mut dir: DirectoryProcess,
    plan: &Plan,
) -> anyhow::Result<(Vec<Step>, Storm, DirectoryProcess)> {
    let (addr, key) = (dir.addr, dir.key);
    // Register the real-cost accounts' keys and let argon2's 19 MiB buffers come and go
    // once, so they are part of the idle baseline rather than counted against peers.
    let warm = real_logins(addr, key, plan.real_logins).await;
    anyhow::ensure!(
        warm.errors == 0,
        "warm-up logins failed: {:?}",
        warm.first_errors
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss_kib = dir.stats().rss_kib;

    let max = plan.steps.iter().copied().max().unwrap_or(0);
    let mut swarm = Swarm::new(0, max, PEERS_PER_ENDPOINT, &[addr], key)?;
    let mut steps = Vec::new();
    let mut online = 0;
    for &n in &plan.steps {
        eprintln!("  directory with {n} peers...");
        let rss_before_kib = dir.stats().rss_kib;
        let added = n - online;
        let grow = swarm.login(online..n, LOGIN_CONCURRENCY).await;
        online = n;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_kib = dir.stats().rss_kib;
        let (dm, bm) = (Meter::start(dir.pid()), Meter::start(std::process::id()));
        let lookups = swarm
            .lookups(plan.lookup_time, plan.lookup_window, usize::MAX)
            .await;
        let (dir_lookups, bench_lookups) = (dm.stop(), bm.stop());
        let real = real_logins(addr, key, plan.real_logins).await;
        steps.push(Step {
            n,
            grow,
            lookups,
            real_logins: real,
            rss_kib,
            rss_before_kib,
            added,
            idle_rss_kib,
            dir_lookups,
            bench_lookups,
        });
    }

    eprintln!("  reconnect storm with {online} peers...");
    swarm.disconnect_all();
    let t0 = Instant::now();
    dir = tokio::task::spawn_blocking(move || dir.restart()).await??;
    let restart = t0.elapsed();
    let (dm, bm) = (Meter::start(dir.pid()), Meter::start(std::process::id()));
    let (phase, retries) = swarm.resume_all(None).await;
    let until_all = phase.elapsed;
    let storm = Storm {
        n: online,
        phase,
        retries,
        until_all,
        dir: dm.stop(),
        bench: bm.stop(),
        restart,
    };
    swarm.close().await;
    Ok((steps, storm, dir))
}

/// `count` password logins of the real-cost accounts, one at a time, each on a new
/// connection (closed right after).
async fn real_logins(addr: SocketAddr, key: PublicKey, count: usize) -> Phase {
    let mut phase = Phase::default();
    let endpoint = match crate::swarm::client_endpoint() {
        Ok(e) => e,
        Err(e) => {
            phase.errors += 1;
            phase.first_errors.push(format!("client endpoint: {e}"));
            return phase;
        }
    };
    let start = Instant::now();
    for i in 0..count {
        let name = accounts::real_name(i);
        let identity = accounts::real_identity(i);
        let t0 = Instant::now();
        let result = async {
            let client = DirectoryClient::connect(&endpoint, addr, Some(key)).await?;
            client
                .login(&name, accounts::PASSWORD, &identity, Vec::new())
                .await?;
            let dt = t0.elapsed();
            let _ = client.logout().await;
            client.close();
            anyhow::Ok(dt)
        }
        .await;
        match result {
            Ok(dt) => phase.samples.push(dt),
            Err(e) => {
                phase.errors += 1;
                if phase.first_errors.len() < 5 {
                    phase.first_errors.push(format!("{name}: {e:#}"));
                }
            }
        }
    }
    phase.elapsed = start.elapsed();
    endpoint.close(0u32.into(), b"bye");
    phase
}
