//! Natter's benchmark suite: speed, scale and memory, side by side with ngircd.
//!
//! ```text
//! cargo run --release -p tools --bin bench -- --out BENCHMARKS.md     # about 5 minutes
//! cargo run --release -p tools --bin bench -- --quick                 # under a minute (CI)
//! ```
//!
//! With a PostgreSQL database (`--database URL`, `NATTER_BENCH_POSTGRES` or
//! `NATTER_TEST_POSTGRES`), the report also compares logins/s and lookups/s on SQLite
//! with one and two directory instances on PostgreSQL (scale-out); without one, that
//! section says it was skipped.
//!
//! Everything runs on this machine over 127.0.0.1 with real endpoints: a directory child
//! process (see `tools/src/server.rs`), peers on their own tokio runtimes, and,
//! for the comparison, ngircd with TLS (`benches/setup-ngircd.sh` installs it). The
//! report (Markdown) says which machine, which commit and which command produced it.
//!
//! Exit status: 0 when every scenario ran without error; 1 when one failed or a check
//! found a wrong answer, or when ngircd or the database is missing and
//! `NATTER_REQUIRE_EXTRAS=1`; 2 for usage errors.
//!
//! # Layout
//! - `p2p.rs`: scenarios 1–3 (one chat: connect, round trip, throughput).
//! - `dirload.rs`: scenarios 4–5 (the directory with 100 to 10,000 peers; the storm).
//! - `rooms.rs`: scenario 6 (a message fanned out to a room of 10 or 50 apps).
//! - `scaleout.rs`: SQLite against one and two instances on PostgreSQL.
//! - `irc.rs`: ngircd and the minimal IRC client that drives it.
//! - `report.rs`: the Markdown report and the targets.
//! - the `tools` library (`tools/src/`): accounts, the directory
//!   process, the crowd of peers, `/proc` figures, statistics.

mod dirload;
mod irc;
mod p2p;
mod report;
mod rooms;
mod scaleout;

use tools::{accounts, chatpeer, deployment, procfs, server, stats, swarm};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use tools::procfs::{Meter, Usage};
use tools::server::{DirectoryProcess, Program, ServeArgs};

/// Run Natter's benchmarks (and ngircd's, for comparison) and write the report.
#[derive(Debug, Parser)]
#[command(name = "bench")]
pub struct Options {
    /// Write the Markdown report here (it is always printed on stdout too).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Small sample counts and at most 1,000 peers: finishes in under a minute.
    #[arg(long)]
    quick: bool,
    /// Leave out the ngircd comparison.
    #[arg(long)]
    no_irc: bool,
    /// PostgreSQL database for the scale-out comparison (`postgres://user:pass@host/db`;
    /// each set-up uses a scratch schema of its own). Default: `NATTER_BENCH_POSTGRES`,
    /// else `NATTER_TEST_POSTGRES`; with none, the comparison is skipped.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

/// Members of the rooms of scenario 6.
const ROOM_SIZES: [usize; 2] = [10, 50];

/// Sample counts and sizes of one run.
pub struct Sizes {
    pub connects: usize,
    pub rtt_warmup: usize,
    pub rtt: usize,
    pub tput_time: Duration,
    pub bulk_time: Duration,
    pub tick: Duration,
    pub window: usize,
    pub bulk_window: usize,
    pub dir: dirload::Plan,
    pub irc_conns: usize,
    pub room_samples: usize,
    pub scale: scaleout::Plan,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        let pick = |full: usize, q: usize| if quick { q } else { full };
        let secs = |full: u64, q: u64| Duration::from_secs(if quick { q } else { full });
        Self {
            connects: pick(200, 20),
            rtt_warmup: pick(1_000, 200),
            rtt: pick(10_000, 1_000),
            tput_time: secs(5, 1),
            bulk_time: secs(3, 1),
            tick: Duration::from_millis(100),
            window: 128,
            bulk_window: 32,
            dir: dirload::Plan {
                steps: if quick {
                    vec![100, 1_000]
                } else {
                    vec![100, 1_000, 10_000]
                },
                lookup_time: secs(5, 1),
                lookup_window: 32,
                real_logins: pick(10, 3),
            },
            irc_conns: pick(10_000, 1_000),
            room_samples: pick(50, 5),
            // 5,000 rather than 10,000: three set-ups, each logging the crowd in anew.
            scale: scaleout::Plan {
                peers: pick(5_000, 1_000),
                lookup_time: secs(5, 1),
                lookup_window: 32,
            },
        }
    }
}

/// Latency samples with the resources used while taking them.
pub struct Latencies {
    pub samples: Vec<Duration>,
    pub peers: Usage,
    pub server: Usage,
}

/// A throughput run with the resources it used.
pub struct Rates {
    pub size: usize,
    pub per_tick: Vec<u64>,
    pub tick: Duration,
    pub total: u64,
    pub elapsed: Duration,
    pub peers: Usage,
    pub server: Usage,
}

/// A room fan-out run with the resources it used.
pub struct RoomRun {
    pub fan: rooms::FanOut,
    pub peers: Usage,
    pub server: Usage,
}

/// The ngircd side of the comparison.
pub struct IrcResults {
    pub version: String,
    pub rtt: Latencies,
    pub tput: Rates,
    pub conns: swarm::Phase,
    pub conns_target: usize,
    pub idle_rss_kib: u64,
    pub conns_rss_kib: u64,
    pub conns_usage: Usage,
}

/// Everything one run measured.
pub struct Results {
    pub sizes: Sizes,
    pub connect: Latencies,
    pub rtt: Latencies,
    pub tput: Rates,
    pub bulk: Rates,
    pub rooms: Vec<RoomRun>,
    pub steps: Vec<dirload::Step>,
    pub storm: dirload::Storm,
    pub scale: scaleout::Outcome,
    pub irc: Result<IrcResults, String>,
    pub elapsed: Duration,
    /// The 1-minute load average when the run started.
    pub load_before: String,
}

fn main() -> ExitCode {
    if let Some(code) = server::serve_if_asked() {
        return code;
    }
    let options = Options::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    // The scenarios run as a task on the runtime's worker threads, as a peer's own tasks
    // do, rather than on the main thread (every hand-over to it would be a thread wake-up).
    match runtime.block_on(async { tokio::spawn(run(options)).await }) {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::FAILURE,
        Ok(Err(e)) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every scenario and writes the report. `Ok(false)`: something failed.
async fn run(o: Options) -> anyhow::Result<bool> {
    let started = Instant::now();
    let load_before = report::load_average();
    let sizes = Sizes::new(o.quick);
    let max_peers = sizes.dir.steps.iter().copied().max().unwrap_or(0);
    let plan = accounts::Plan {
        bulk: max_peers + 2,
        real: sizes.dir.real_logins,
        app: 2 + ROOM_SIZES.iter().sum::<usize>(),
    };
    let template = accounts::cached(plan).await?;
    let data = tempfile::tempdir()?;
    accounts::copy_into(&template, data.path())?;
    let args = ServeArgs::try_parse_from(["--data", &data.path().display().to_string()])?;
    let dir = DirectoryProcess::start(&Program::SelfExec, args)?;
    let (addr, key) = (dir.addr, dir.key);
    let other = p2p::other_runtime()?;
    let me = std::process::id();

    eprintln!(
        "1. connect → first message delivered ({} times)...",
        sizes.connects
    );
    let (pm, dm) = (Meter::start(me), Meter::start(dir.pid()));
    let samples = p2p::connect_time(&other, addr, key.fingerprint(), sizes.connects).await?;
    let connect = Latencies {
        samples,
        peers: pm.stop(),
        server: dm.stop(),
    };

    eprintln!("2. round trip ({} messages)...", sizes.rtt);
    let mut session = p2p::Session::open(&other, max_peers, addr, key).await?;
    let (pm, dm) = (Meter::start(me), Meter::start(dir.pid()));
    let samples = p2p::round_trips(&mut session, 100, sizes.rtt_warmup, sizes.rtt).await?;
    let rtt = Latencies {
        samples,
        peers: pm.stop(),
        server: dm.stop(),
    };

    eprintln!("3. throughput...");
    let mut rates = Vec::new();
    for (size, time, window) in [
        (100, sizes.tput_time, sizes.window),
        (16 * 1024, sizes.bulk_time, sizes.bulk_window),
    ] {
        let (pm, dm) = (Meter::start(me), Meter::start(dir.pid()));
        let t = p2p::throughput(&mut session, size, window, time, sizes.tick).await?;
        rates.push(Rates {
            size,
            per_tick: t.per_tick,
            tick: t.tick,
            total: t.total,
            elapsed: t.elapsed,
            peers: pm.stop(),
            server: dm.stop(),
        });
    }
    let sent = (sizes.rtt_warmup + sizes.rtt) as u64 + rates.iter().map(|r| r.total).sum::<u64>();
    let received = session.close(sent).await?;
    anyhow::ensure!(
        received == sent,
        "the acceptor received {received} messages, {sent} were acknowledged"
    );
    let bulk = rates.pop().expect("two runs");
    let tput = rates.pop().expect("two runs");

    let mut room_runs = Vec::new();
    let mut first_app = 2;
    for members in ROOM_SIZES {
        eprintln!("6. room fan-out, {members} members...");
        let (pm, dm) = (Meter::start(me), Meter::start(dir.pid()));
        let fan = rooms::fan_out(
            &other,
            addr,
            key.fingerprint(),
            members,
            first_app,
            sizes.room_samples,
        )
        .await?;
        first_app += members;
        room_runs.push(RoomRun {
            fan,
            peers: pm.stop(),
            server: dm.stop(),
        });
    }

    eprintln!("4–5. the directory with many peers...");
    let (steps, storm, dir) = dirload::run(dir, &sizes.dir).await?;
    tokio::task::spawn_blocking(move || dir.stop()).await??;

    let scale = match scaleout::database(o.database.as_deref()) {
        Ok((url, source)) => {
            eprintln!("scale-out: SQLite, then PostgreSQL with 1 and 2 instances...");
            scaleout::run(&template, &url, source, &sizes.scale).await
        }
        Err(why) => {
            eprintln!("bench: skipping the scale-out comparison: {why}");
            scaleout::Outcome::Skipped(why)
        }
    };

    let irc = if o.no_irc {
        Err("left out (--no-irc)".to_string())
    } else {
        match irc::find_ngircd() {
            Ok(bin) => {
                eprintln!("ngircd: round trip, throughput, connections...");
                Ok(run_irc(&bin, &other, &sizes).await?)
            }
            Err(why) => {
                eprintln!("bench: skipping the ngircd comparison: {why}");
                Err(why)
            }
        }
    };
    drop(other);

    let results = Results {
        sizes,
        connect,
        rtt,
        tput,
        bulk,
        rooms: room_runs,
        steps,
        storm,
        scale,
        irc,
        elapsed: started.elapsed(),
        load_before,
    };
    let text = report::render(&o, &results);
    println!("{text}");
    if let Some(path) = &o.out {
        std::fs::write(path, &text)?;
        eprintln!("bench: report written to {}", path.display());
    }
    let missing = report::missing(&results);
    if !missing.is_empty() {
        eprintln!("bench: figures missing: {}", missing.join(", "));
        return Ok(false);
    }
    let errors = report::errors(&results);
    if errors > 0 {
        eprintln!("bench: {errors} operations failed or gave wrong answers");
    }
    let extras_required = std::env::var("NATTER_REQUIRE_EXTRAS").as_deref() == Ok("1");
    if let (Err(why), true, false) = (&results.irc, extras_required, o.no_irc) {
        eprintln!("bench: NATTER_REQUIRE_EXTRAS=1 but the ngircd comparison was skipped: {why}");
        return Ok(false);
    }
    match &results.scale {
        scaleout::Outcome::Failed(e) => {
            eprintln!("bench: the scale-out comparison failed: {e}");
            return Ok(false);
        }
        scaleout::Outcome::Skipped(why) if extras_required => {
            eprintln!(
                "bench: NATTER_REQUIRE_EXTRAS=1 but the scale-out comparison was skipped: {why}"
            );
            return Ok(false);
        }
        _ => {}
    }
    Ok(errors == 0)
}

/// The comparison: same round trip and throughput through ngircd, then how many
/// connections it holds in how much memory.
async fn run_irc(
    bin: &PathBuf,
    other: &tokio::runtime::Runtime,
    sizes: &Sizes,
) -> anyhow::Result<IrcResults> {
    let server = irc::Ngircd::start(bin).await?;
    let acker = irc::start_acker(&server, other, "bianca").await?;
    let mut ali = irc::IrcClient::connect(&server, "ali").await?;
    let me = std::process::id();

    let (pm, sm) = (Meter::start(me), Meter::start(server.pid()));
    let samples = irc::round_trips(&mut ali, "bianca", 100, sizes.rtt_warmup, sizes.rtt).await?;
    let rtt = Latencies {
        samples,
        peers: pm.stop(),
        server: sm.stop(),
    };

    let (pm, sm) = (Meter::start(me), Meter::start(server.pid()));
    let (per_tick, total, elapsed) = irc::throughput(
        ali,
        "bianca",
        100,
        sizes.window,
        sizes.tput_time,
        sizes.tick,
    )
    .await?;
    let tput = Rates {
        size: 100,
        per_tick,
        tick: sizes.tick,
        total,
        elapsed,
        peers: pm.stop(),
        server: sm.stop(),
    };
    acker.abort();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss_kib = server.stats().rss_kib;
    let sm = Meter::start(server.pid());
    let (conns, clients) = irc::connect_many(&server, sizes.irc_conns, 128).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let conns_rss_kib = server.stats().rss_kib;
    let conns_usage = sm.stop();
    for c in clients {
        drop(c);
    }
    Ok(IrcResults {
        version: server.version.clone(),
        rtt,
        tput,
        conns,
        conns_target: sizes.irc_conns,
        idle_rss_kib,
        conns_rss_kib,
        conns_usage,
    })
}
