//! Load generator: N simulated peers against a real directory, on loopback.
//!
//! ```text
//! cargo run --release -p tools --bin loadgen -- --peers 10000
//! ```
//!
//! Each simulated peer has its own identity key and its own QUIC connection to the
//! directory; together they log in (password), look each other up, ask who is online,
//! and a few pairs open real end-to-end chats. Every answer is checked. At the end it
//! prints logins/s, lookups/s, latencies (median, p99, max), the directory's RSS and RSS
//! per connected peer, and the number of errors; it exits with status 1 if there was any.
//!
//! The directory runs as a child process (this executable in directory mode, see
//! `server.rs`) on a fresh copy of a cached data directory, unless `--directory ADDR`
//! names one that is already running.
//!
//! Scale-out: `--database postgres://...` keeps the accounts in PostgreSQL instead (a
//! scratch schema of the run's own, dropped at the end), and `--instances N` starts N
//! directories on it, with one key, peer `i` logging in to instance `i % N`, so that
//! lookups cross instances:
//!
//! ```text
//! eval "$(bash .ci/postgres start)"     # a throwaway PostgreSQL; exports NATTER_TEST_POSTGRES
//! cargo run --release -p tools --bin loadgen -- --peers 5000 \
//!     --database "$NATTER_TEST_POSTGRES" --instances 2
//! ```
//!
//! The parts (accounts, the directory process, the crowd, measuring) are the `tools`
//! library (`tools/src/lib.rs`), which the benchmark suite (`src/bin/bench`) uses too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{CommandFactory, Parser};

use tools::deployment::Deployment;
use tools::procfs::Meter;
use tools::server::Program;
use tools::stats::{Summary, fmt_count, fmt_duration, fmt_kib};
use tools::swarm::{Phase, Swarm};
use tools::{accounts, chatpeer, server, swarm};

/// How long the instances may take to announce the logins after the login phase.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// Drive N simulated peers against a Natter directory on loopback and report what it
/// sustained. Exit status: 0 if every operation succeeded, 1 if any failed, 2 on usage
/// errors.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Options {
    /// Simulated peers logged in at once.
    #[arg(long, default_value_t = 10_000)]
    peers: usize,
    /// Peers sharing one client UDP socket (QUIC endpoint).
    #[arg(long, default_value_t = 100)]
    peers_per_endpoint: usize,
    /// Password logins in flight at once.
    #[arg(long, default_value_t = 128)]
    login_concurrency: usize,
    /// How long the lookup phase runs, in seconds.
    #[arg(long, default_value_t = 5.0)]
    lookup_secs: f64,
    /// Lookups in flight at once (each from a random peer's own connection).
    #[arg(long, default_value_t = 32)]
    lookup_window: usize,
    /// `Who` requests (one at a time).
    #[arg(long, default_value_t = 5)]
    who: usize,
    /// Pairs of peers that open a real chat (on endpoints of their own).
    #[arg(long, default_value_t = 10)]
    chat_pairs: usize,
    /// Messages each chat sends (each one waits for its acknowledgement).
    #[arg(long, default_value_t = 100)]
    messages: usize,
    /// Seconds to hold every peer logged in before the final check.
    #[arg(long, default_value_t = 5.0)]
    hold_secs: f64,
    /// Also restart the directory and measure the reconnect storm (ticket logins).
    #[arg(long)]
    storm: bool,
    /// Use a running directory at this address instead of starting one.
    #[arg(long, value_name = "ADDR", requires = "directory_data")]
    directory: Option<SocketAddr>,
    /// Data directory of the running directory (accounts are added there).
    #[arg(long, value_name = "DIR")]
    directory_data: Option<PathBuf>,
    /// Start this `directory` binary instead of running the directory from this
    /// executable (its CLI keeps the default limit of 100 requests/s per connection).
    #[arg(long, value_name = "PATH", conflicts_with = "directory")]
    directory_bin: Option<PathBuf>,
    /// Keep the accounts in this PostgreSQL database (`postgres://user:pass@host/db`),
    /// in a scratch schema made for the run and dropped after it, instead of SQLite.
    #[arg(long, value_name = "URL", conflicts_with = "directory")]
    database: Option<String>,
    /// Directory instances serving together on the `--database` (peer i logs in to
    /// instance i % N). More than one needs `--database`.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        conflicts_with = "directory"
    )]
    instances: usize,
}

impl Options {
    /// What clap cannot check by itself.
    fn check(&self) -> Result<(), &'static str> {
        if self.instances == 0 {
            return Err("--instances must be at least 1");
        }
        if self.instances > 1 && self.database.is_none() {
            return Err(
                "--instances above 1 needs --database (instances share a PostgreSQL database)",
            );
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    if let Some(code) = server::serve_if_asked() {
        return code;
    }
    let options = Options::parse();
    if let Err(e) = options.check() {
        Options::command()
            .error(clap::error::ErrorKind::ArgumentConflict, e)
            .exit();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(async { tokio::spawn(run(options)).await }) {
        Ok(Ok(0)) => ExitCode::SUCCESS,
        Ok(Ok(errors)) => {
            eprintln!("loadgen: {errors} errors");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The directory under load: instances we started, or one that was already running.
enum Target {
    Local(Box<Deployment>),
    External {
        addr: SocketAddr,
        key: proto::PublicKey,
    },
}

impl Target {
    fn addrs_key(&self) -> (Vec<SocketAddr>, proto::PublicKey) {
        match self {
            Target::Local(d) => (d.addrs(), d.key),
            Target::External { addr, key } => (vec![*addr], *key),
        }
    }

    /// RSS of every instance, added up.
    fn rss_kib(&self) -> Option<u64> {
        match self {
            Target::Local(d) => Some(d.rss_kib()),
            Target::External { .. } => None,
        }
    }

    /// CPU time of every instance so far, added up.
    fn cpu(&self) -> Option<Duration> {
        match self {
            Target::Local(d) => Some(d.cpu()),
            Target::External { .. } => None,
        }
    }

    /// Which store and how many instances, in a few words.
    fn summary(&self) -> String {
        match self {
            Target::Local(d) => {
                let n = d.instances.len();
                format!(
                    "{}, {n} instance{}",
                    d.backend(),
                    if n == 1 { "" } else { "s" }
                )
            }
            Target::External { .. } => "external directory".into(),
        }
    }
}

async fn run(o: Options) -> anyhow::Result<u64> {
    let plan = accounts::Plan {
        bulk: o.peers + 2 * o.chat_pairs,
        real: 0,
        app: 0,
    };
    let mut target = match (&o.directory, &o.directory_data) {
        (Some(addr), Some(data)) => {
            accounts::create_in(data, plan).await?;
            let key = directory::keys::load_or_create(&directory::Config::new(data).key_path())?;
            Target::External {
                addr: *addr,
                key: key.public(),
            }
        }
        _ => {
            let template = accounts::cached(plan).await?;
            let program = match &o.directory_bin {
                Some(bin) => Program::Binary(bin.clone()),
                None => Program::SelfExec,
            };
            Target::Local(Box::new(
                Deployment::start(&program, &template, o.database.as_deref(), o.instances).await?,
            ))
        }
    };
    let (addrs, key) = target.addrs_key();
    let list = |items: Vec<String>| items.join(", ");
    println!(
        "loadgen: {} peers ({} per endpoint) against {}",
        o.peers,
        o.peers_per_endpoint,
        match &target {
            Target::Local(d) => format!(
                "{} at {} (child process{} {})",
                d.describe(),
                list(addrs.iter().map(ToString::to_string).collect()),
                if addrs.len() == 1 { "" } else { "es" },
                list(d.pids().iter().map(ToString::to_string).collect())
            ),
            Target::External { addr, .. } => format!("the directory at {addr} (external)"),
        }
    );
    if let Target::Local(d) = &target
        && let Some((version, durability)) = d.database_settings().await
    {
        println!("database: PostgreSQL {version}, {durability}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = target.rss_kib();
    let mut rows: Vec<(String, Phase)> = Vec::new();

    let mut swarm = Swarm::new(0, o.peers, o.peers_per_endpoint, &addrs, key)?;
    let login = swarm.login(0..o.peers, o.login_concurrency).await;
    let login_rate = login.rate();
    rows.push(("login (password)".into(), login));
    let online_rss = target.rss_kib();
    let mut presence = Phase::default();
    if let Target::Local(d) = &target {
        match d.settle(&swarm, SETTLE_WITHIN).await {
            Ok(after) if d.backend() == "PostgreSQL" => println!(
                "every login announced{} {} after the login phase",
                if addrs.len() > 1 {
                    " and known to every instance"
                } else {
                    ""
                },
                fmt_duration(after)
            ),
            Ok(_) => {}
            Err(e) => {
                presence.errors += 1;
                presence.first_errors.push(format!("presence: {e}"));
            }
        }
    }

    let dir_cpu = target.cpu();
    let me = Meter::start(std::process::id());
    let lookups = swarm
        .lookups(
            Duration::from_secs_f64(o.lookup_secs),
            o.lookup_window,
            usize::MAX,
        )
        .await;
    if let (Some(before), Some(after)) = (dir_cpu, target.cpu()) {
        let n = lookups.samples.len().max(1) as f64;
        println!(
            "CPU per lookup: directory {:.1} µs{}, load generator {:.1} µs",
            after.saturating_sub(before).as_secs_f64() * 1e6 / n,
            if addrs.len() > 1 {
                " (all instances)"
            } else {
                ""
            },
            me.stop().cpu.as_secs_f64() * 1e6 / n
        );
    }
    let lookup_rate = lookups.rate();
    rows.push(("lookup".into(), lookups));
    // `Who` lists at most `MAX_WHO_USERS` users (the first by name): more would not fit
    // in one frame.
    let listed = swarm.online().min(directory::lookup::MAX_WHO_USERS);
    let who = swarm.who(o.who, listed).await;
    rows.push(("who".into(), who));

    let chats = chat_phase(&o, &addrs, key).await;
    rows.push(("chat message (send → ack)".into(), chats));

    let held = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(o.hold_secs)).await;
    let mut hold = Phase::default();
    let still = swarm.online();
    if still != o.peers {
        hold.errors += (o.peers - still) as u64;
        hold.first_errors.push(format!(
            "{} of {} peers lost their directory connection while held",
            o.peers - still,
            o.peers
        ));
    }
    if let Target::Local(d) = &target
        && d.any_gone()
    {
        hold.errors += 1;
        hold.first_errors.push("a directory process is gone".into());
    }
    hold.elapsed = held.elapsed();
    let held_rss = target.rss_kib();

    if o.storm {
        if let Target::Local(d) = target {
            swarm.disconnect_all();
            let d = Box::new(d.restart().await.context("restarting the directory")?);
            let (storm, retries) = swarm.resume_all(None).await;
            println!("reconnect storm: {retries} connection attempts had to be retried");
            rows.push(("reconnect storm (ticket)".into(), storm));
            target = Target::Local(d);
        } else {
            println!("(no storm: the directory is external; it cannot be restarted from here)");
        }
    }

    print_table(&rows);
    if let (Some(idle), Some(online)) = (idle_rss, online_rss.max(held_rss)) {
        let per = online.saturating_sub(idle) as f64 / o.peers.max(1) as f64;
        println!(
            "directory RSS{}: {} idle, {} with {} peers logged in → {} per connected peer",
            if addrs.len() > 1 {
                " (all instances)"
            } else {
                ""
            },
            fmt_kib(idle as f64),
            fmt_kib(online as f64),
            fmt_count(o.peers as f64),
            fmt_kib(per)
        );
    }
    let mut errors = 0;
    for p in [&presence, &hold] {
        errors += p.errors;
        for e in &p.first_errors {
            println!("  error: {e}");
        }
    }
    for (_, p) in &rows {
        errors += p.errors;
    }
    println!("errors: {errors}");
    println!(
        "summary: {}: {} logins/s, {} lookups/s",
        target.summary(),
        fmt_count(login_rate),
        fmt_count(lookup_rate)
    );
    swarm.close().await;
    if let Target::Local(d) = target {
        d.stop().await?;
    }
    Ok(errors)
}

/// `chat_pairs` pairs of peers, each initiator sending `messages` messages one at a
/// time and waiting for each acknowledgement. Both peers of pair `p` log in to instance
/// `p % N` (so that the initiator's lookup never races the other's presence).
async fn chat_phase(o: &Options, addrs: &[SocketAddr], key: proto::PublicKey) -> Phase {
    let first = o.peers;
    let pairs: Vec<(usize, SocketAddr)> = (0..o.chat_pairs)
        .map(|p| (p, addrs[p % addrs.len()]))
        .collect();
    let messages = o.messages;
    let (mut phase, results) = swarm::bounded(pairs, None, move |(pair, addr)| async move {
        let run = async {
            let a = chatpeer::ChatPeer::login(first + 2 * pair, addr, key).await?;
            let b = chatpeer::ChatPeer::login(first + 2 * pair + 1, addr, key).await?;
            let server = b.serve();
            let (handle, mut events) = a.open(&b.name).await?;
            let mut samples = Vec::with_capacity(messages);
            for i in 0..messages {
                let t0 = Instant::now();
                let id = handle.send(&format!("message {i} from {}", a.name)).await?;
                chatpeer::delivered(&mut events, id).await?;
                samples.push(t0.elapsed());
            }
            handle.close().await;
            let got = chatpeer::received(&b, messages as u64).await;
            anyhow::ensure!(
                got == messages as u64,
                "{} received {got} of {messages}",
                b.name
            );
            anyhow::ensure!(b.failures.load(std::sync::atomic::Ordering::Relaxed) == 0);
            a.endpoint.close(0u32.into(), b"bye");
            b.endpoint.close(0u32.into(), b"bye");
            server.abort();
            anyhow::Ok(samples)
        };
        run.await.map_err(|e| format!("chat pair {pair}: {e:#}"))
    })
    .await;
    phase.samples = results.into_iter().flatten().collect();
    phase
}

fn print_table(rows: &[(String, Phase)]) {
    println!(
        "{:<28} {:>9} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "phase", "ok", "per sec", "median", "p99", "max", "errors"
    );
    for (name, phase) in rows {
        let mut samples = phase.samples.clone();
        let s = Summary::of(&mut samples);
        println!(
            "{:<28} {:>9} {:>10} {:>10} {:>10} {:>10} {:>7}",
            name,
            fmt_count(s.count as f64),
            fmt_count(phase.rate()),
            fmt_duration(s.median),
            fmt_duration(s.p99),
            fmt_duration(s.max),
            phase.errors
        );
        for e in &phase.first_errors {
            println!("  error: {e}");
        }
    }
}
