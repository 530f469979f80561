//! The Markdown report: machine, commit, command, every figure with its unit, the
//! targets and, where one is missed, what holds it back.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use crate::dirload::Step;
use crate::procfs::Usage;
use crate::scaleout::Outcome;
use crate::stats::{Summary, fmt_count, fmt_duration, fmt_kib};
use crate::{Latencies, Options, Rates, Results};

/// Figures the run should have produced but did not (no samples): CI fails on these.
pub fn missing(r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    let mut need = |what: String, n: usize| {
        if n == 0 {
            out.push(what);
        }
    };
    need("connect".into(), r.connect.samples.len());
    need("round trip".into(), r.rtt.samples.len());
    need("throughput 100 B".into(), r.tput.per_tick.len());
    need("throughput 16 KiB".into(), r.bulk.per_tick.len());
    for room in &r.rooms {
        need(
            format!("room of {}", room.fan.members),
            room.fan.samples.len(),
        );
    }
    for s in &r.steps {
        need(format!("lookups at {} peers", s.n), s.lookups.samples.len());
        need(
            format!("password logins at {} peers", s.n),
            s.real_logins.samples.len(),
        );
    }
    need("reconnect storm".into(), r.storm.phase.samples.len());
    if let Outcome::Ran { rows, .. } = &r.scale {
        for row in rows {
            let setup = format!("{}, {} instance(s)", row.backend, row.instances);
            need(format!("logins on {setup}"), row.logins.samples.len());
            need(format!("lookups on {setup}"), row.lookups.samples.len());
        }
    }
    if let Ok(irc) = &r.irc {
        need("ngircd round trip".into(), irc.rtt.samples.len());
        need("ngircd throughput".into(), irc.tput.per_tick.len());
        need("ngircd connections".into(), irc.conns.samples.len());
    }
    out
}

/// Operations that failed or gave a wrong answer, on our side.
pub fn errors(r: &Results) -> u64 {
    r.steps
        .iter()
        .map(|s| s.grow.errors + s.lookups.errors + s.real_logins.errors)
        .sum::<u64>()
        + r.storm.phase.errors
        + match &r.scale {
            Outcome::Ran { rows, .. } => rows.iter().map(|row| row.errors()).sum(),
            _ => 0,
        }
}

fn summary(samples: &[Duration]) -> Summary {
    Summary::of(&mut samples.to_vec())
}

/// Median, the rate reached in 99 % of ticks (the 1st percentile: the bad tail, like a
/// latency's p99) and the best tick, as rates per second.
fn rate_stats(r: &Rates) -> (f64, f64, f64) {
    let mut v: Vec<u64> = r.per_tick.clone();
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_unstable();
    let per_sec = 1.0 / r.tick.as_secs_f64();
    let at = |p: f64| {
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1] as f64 * per_sec
    };
    (
        at(50.0),
        at(1.0),
        *v.last().expect("not empty") as f64 * per_sec,
    )
}

fn usage(peers: &Usage, server: &Usage) -> (String, String) {
    (
        format!(
            "{:.2} + {:.2}",
            peers.cpu.as_secs_f64(),
            server.cpu.as_secs_f64()
        ),
        format!(
            "{} / {}",
            fmt_kib(peers.peak_kib as f64),
            fmt_kib(server.peak_kib as f64)
        ),
    )
}

fn latency_row(out: &mut String, what: &str, l: &Latencies) {
    let s = summary(&l.samples);
    let (cpu, rss) = usage(&l.peers, &l.server);
    let _ = writeln!(
        out,
        "| {what} | {} | {} | {} | {} | {cpu} | {rss} |",
        fmt_count(s.count as f64),
        fmt_duration(s.median),
        fmt_duration(s.p99),
        fmt_duration(s.max)
    );
}

fn rate_row(out: &mut String, what: &str, r: &Rates, bytes: bool) {
    let (median, p99, max) = rate_stats(r);
    let unit = |x: f64| {
        if bytes {
            format!("{:.1} MB/s", x * r.size as f64 / 1e6)
        } else {
            format!("{} msg/s", fmt_count(x))
        }
    };
    let (cpu, rss) = usage(&r.peers, &r.server);
    let _ = writeln!(
        out,
        "| {what} | {} × {} ms | {} | {} | {} | {cpu} | {rss} |",
        r.per_tick.len(),
        r.tick.as_millis(),
        unit(median),
        unit(p99),
        unit(max)
    );
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {:.1} GiB RAM, Linux {}, {}",
        mem_kib / 1024.0 / 1024.0,
        kernel.trim(),
        run("rustc", &["--version"]).unwrap_or_else(|| "rustc (version unknown)".into())
    )
}

/// The 1-minute load average, as `/proc/loadavg` gives it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn commit() -> String {
    let Some(head) = run("git", &["rev-parse", "HEAD"]) else {
        return "unknown (not a git checkout)".into();
    };
    let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("`{head}` plus uncommitted changes")
    } else {
        format!("`{head}`")
    }
}

/// A target, what was measured against it, and what holds it back if missed.
struct Target {
    what: &'static str,
    measured: String,
    met: bool,
    why: &'static str,
}

fn targets(r: &Results) -> Vec<Target> {
    let connect = summary(&r.connect.samples);
    let rtt = summary(&r.rtt.samples);
    let last = r.steps.last();
    let per_peer = last.map_or(0.0, Step::per_peer_kib);
    let n = last.map_or(0, |s| s.n);
    let lookups = last.map(|s| (s.lookups.rate(), summary(&s.lookups.samples).p99));
    let storm_rate = r.storm.n as f64 / r.storm.until_all.as_secs_f64().max(1e-9);
    let (tput, _, _) = rate_stats(&r.tput);
    vec![
        Target {
            what: "connect → first message delivered, median < 3 ms",
            measured: fmt_duration(connect.median),
            met: connect.median < Duration::from_millis(3),
            why: WHY_CONNECT,
        },
        Target {
            what: "round trip (100 B), p50 < 100 µs",
            measured: fmt_duration(rtt.median),
            met: rtt.median < Duration::from_micros(100),
            why: WHY_RTT,
        },
        Target {
            what: "round trip (100 B), p99 < 300 µs",
            measured: fmt_duration(rtt.p99),
            met: rtt.p99 < Duration::from_micros(300),
            why: WHY_RTT,
        },
        Target {
            what: "one session, 100-byte messages one way > 300,000/s",
            measured: format!("{} msg/s", fmt_count(tput)),
            met: tput > 300_000.0,
            why: WHY_TPUT,
        },
        Target {
            what: "10,000 concurrent peers, directory RSS < 16 KiB per peer",
            measured: format!(
                "{} per peer at {} peers",
                fmt_kib(per_peer),
                fmt_count(n as f64)
            ),
            met: n >= 10_000 && per_peer < 16.0,
            why: WHY_RSS,
        },
        Target {
            what: "lookups > 100,000/s with p99 < 1 ms",
            measured: lookups.map_or("not run".into(), |(rate, p99)| {
                format!(
                    "{}/s, p99 {} (at {} peers)",
                    fmt_count(rate),
                    fmt_duration(p99),
                    fmt_count(n as f64)
                )
            }),
            met: lookups
                .is_some_and(|(rate, p99)| rate > 100_000.0 && p99 < Duration::from_millis(1)),
            why: WHY_LOOKUPS,
        },
        Target {
            what: "reconnect storm > 5,000 re-logins/s",
            measured: format!(
                "{}/s ({} peers)",
                fmt_count(storm_rate),
                fmt_count(r.storm.n as f64)
            ),
            met: storm_rate > 5_000.0 && r.storm.phase.errors == 0,
            why: WHY_STORM,
        },
    ]
}

const WHY_CONNECT: &str = "before the first acknowledgement come two directory lookups (the dialer's, and the acceptor's check of the dialer), a mutual-TLS QUIC handshake with certificates made from the identity keys, and three stream round trips (connect request, key shares, the message and its ack).";
const WHY_RTT: &str = "a message and its ack each pass through about eight task hand-offs between the two peers (chat driver → QUIC connection driver → UDP → endpoint driver → connection driver → stream reader task → chat driver → app); on 2 cores shared with the other processes, any of those wake-ups can wait for a busy core, which is what the tail shows.";
const WHY_TPUT: &str = "every message is its own sealed frame, stream write and acknowledgement frame (the protocol acknowledges each message), and costs about 20 µs of CPU across both peers (profiled with perf): QUIC packet handling and the wake-ups between each chat's driver, its stream reader and the QUIC connection drivers dominate, ChaCha20-Poly1305 about a tenth. 300,000/s on 2 cores means under 7 µs per message: it needs several frames per stream write and cumulative acknowledgements, a protocol change.";
const WHY_RSS: &str = "memory per connection is mostly quinn's (valgrind massif): the connection state (~6.8 KB), the unbounded channel that hands it datagrams (two 32-slot blocks, ~13 KB), the rustls session and packet keys (~5 KB), plus the directory's connection task (~4.6 KB); glibc's per-thread malloc arenas add about 9 KiB per peer (MALLOC_ARENA_MAX=1 measured 28 instead of 37 KiB at 2,000 peers).";
const WHY_LOOKUPS: &str = "each lookup is a request and a reply on their own QUIC packets, about 24 µs of directory CPU and as much in the load generator (loadgen prints both), with the two sharing 2 cores: that caps the pair near 40,000/s; the p99 is the queueing of 32 lookups in flight behind that.";
const WHY_STORM: &str = "each re-login is a new QUIC connection with a full TLS 1.3 handshake on both sides (x25519, the directory's ed25519 signature and its verification), then Hello, Resume with its signature and a durable ticket replacement, with all the clients handshaking on the same 2 cores; CPU is the limit (the same storm with the database on tmpfs was no faster, so SQLite's fsync is not).";

/// The whole report.
pub fn render(o: &Options, r: &Results) -> String {
    let mut out = String::new();
    let args = redacted_args();
    let command = format!(
        "cargo run --release -p tools --bin bench -- {}",
        args.join(" ")
    );
    let _ = writeln!(out, "# Natter benchmarks\n");
    let _ = writeln!(
        out,
        "<!-- Generated by tools (the bench binary); never edit by hand: run the command below again. -->\n"
    );
    let _ = writeln!(
        out,
        "- **Command:** `{}`{}",
        command.trim_end(),
        if o.quick {
            " (quick mode: small sample counts, at most 1,000 peers)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "- **Commit:** {}", commit());
    let _ = writeln!(
        out,
        "- **Generated:** {} (took {:.0} s)",
        directory::clock::format_utc(directory::clock::unix_now()),
        r.elapsed.as_secs_f64()
    );
    let _ = writeln!(out, "- **Machine:** {}", machine());
    let _ = writeln!(
        out,
        "- **Setting:** release build; every process (peers, load generator, directory, ngircd) \
         shares these cores; all traffic on 127.0.0.1; no figure comes from a simulation. \
         Load average (1 min) when the run started: {}; when it ended: {} (above 0 means \
         other programs were using the cores too).\n",
        r.load_before,
        load_average()
    );

    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| target | measured | |");
    let _ = writeln!(out, "|---|---|---|");
    let targets = targets(r);
    for t in &targets {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            t.what,
            t.measured,
            if t.met { "met" } else { "**missed**" }
        );
    }
    let missed: Vec<&Target> = targets.iter().filter(|t| !t.met).collect();
    if !missed.is_empty() {
        let _ = writeln!(out, "\nWhat holds the missed targets back:\n");
        for t in missed {
            let _ = writeln!(out, "- *{}*: {}", t.what, t.why);
        }
    }

    let _ = writeln!(out, "\n## 1–3. One chat between two peers\n");
    let _ = writeln!(
        out,
        "CPU is user + system seconds of the two peers (one process, two runtimes) + the \
         directory process; peak RSS is peers / directory.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | samples | median | p99 | max | CPU s | peak RSS |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    latency_row(
        &mut out,
        "1. connect: `/connect NAME` → first message delivered",
        &r.connect,
    );
    latency_row(&mut out, "2. round trip, 100-byte message → ack", &r.rtt);
    rate_row(
        &mut out,
        "3. throughput, 100-byte messages (sealed, acked)",
        &r.tput,
        false,
    );
    rate_row(&mut out, "3. throughput, 16 KiB messages", &r.bulk, true);
    let _ = writeln!(
        out,
        "\nThroughput samples are {} ms windows; \"p99\" is the rate reached in 99 % of them. \
         Over the whole run: {} msg/s (100 B, {} in flight at most) and {:.1} MB/s (16 KiB, {} in flight).",
        r.tput.tick.as_millis(),
        fmt_count(r.tput.total as f64 / r.tput.elapsed.as_secs_f64()),
        r.sizes.window,
        r.bulk.total as f64 * r.bulk.size as f64 / r.bulk.elapsed.as_secs_f64() / 1e6,
        r.sizes.bulk_window
    );

    let _ = writeln!(out, "\n## 4–5. The directory with many peers\n");
    let _ = writeln!(
        out,
        "Each peer is a QUIC connection of its own with its own identity key ({} peers per client \
         UDP socket). Lookups: {} in flight, each from a random online peer about another, every \
         answer checked (name, key, address), for {} s per step. Password logins use accounts \
         hashed at the real cost (argon2id, 19 MiB, 2 passes), one at a time. The crowd itself \
         logs in with accounts hashed at argon2's cheapest setting (8 KiB, 1 pass) so that \
         10,000 logins take seconds: those rates measure the protocol, not argon2.\n",
        100,
        r.sizes.dir.lookup_window,
        r.sizes.dir.lookup_time.as_secs()
    );
    let _ = writeln!(
        out,
        "| peers online | directory RSS | RSS per peer | lookups/s | lookup median | p99 | max | \
         password login median | p99 | max | crowd logins/s | CPU s during lookups (gen + dir) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in &r.steps {
        let l = summary(&s.lookups.samples);
        let p = summary(&s.real_logins.samples);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} + {:.2} |",
            fmt_count(s.n as f64),
            fmt_kib(s.rss_kib as f64),
            fmt_kib(s.per_peer_kib()),
            fmt_count(s.lookups.rate()),
            fmt_duration(l.median),
            fmt_duration(l.p99),
            fmt_duration(l.max),
            fmt_duration(p.median),
            fmt_duration(p.p99),
            fmt_duration(p.max),
            fmt_count(s.grow.rate()),
            s.bench_lookups.cpu.as_secs_f64(),
            s.dir_lookups.cpu.as_secs_f64()
        );
    }
    if let Some(s) = r.steps.first() {
        let _ = writeln!(
            out,
            "\nRSS per peer is how much the directory's RSS grew while a step's new peers logged in, \
             divided by their number (the idle directory: {}). Samples per step: lookups as \
             counted by the rate × time; {} password logins.",
            fmt_kib(s.idle_rss_kib as f64),
            r.sizes.dir.real_logins
        );
    }
    let st = &r.storm;
    let ss = summary(&st.phase.samples);
    let _ = writeln!(
        out,
        "\n**4. Reconnect storm.** The directory is stopped (SIGTERM) and started again on the same data; then every peer reconnects and logs back in with its session ticket, all at once. As the real client does, a peer whose attempt fails (no answer) tries again after a random back-off (0.25 s doubling up to 4 s); re-logins/s is peers ÷ time until all are back.\n"
    );
    let _ = writeln!(
        out,
        "| peers | restart | all back after | re-logins/s | per peer: median | p99 | max | retried attempts | CPU s (gen + dir) | peak RSS (gen / dir) | errors |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2} + {:.2} | {} / {} | {} |",
        fmt_count(st.n as f64),
        fmt_duration(st.restart),
        fmt_duration(st.until_all),
        fmt_count(st.n as f64 / st.until_all.as_secs_f64().max(1e-9)),
        fmt_duration(ss.median),
        fmt_duration(ss.p99),
        fmt_duration(ss.max),
        fmt_count(st.retries as f64),
        st.bench.cpu.as_secs_f64(),
        st.dir.cpu.as_secs_f64(),
        fmt_kib(st.bench.peak_kib as f64),
        fmt_kib(st.dir.peak_kib as f64),
        st.phase.errors
    );

    let _ = writeln!(out, "\n## 6. Rooms and relay\n");
    let _ = writeln!(
        out,
        "Every member is a real app with its own endpoint and login; one member types, the \
         others show the message (each over its own end-to-end session with the sender). The \
         first message also opens those sessions. Burst: {} messages typed back to back, until \
         every member has shown the last one. CPU: apps + directory.\n",
        crate::rooms::BURST
    );
    let _ = writeln!(
        out,
        "| room | first message (opens sessions) | fan-out samples | median | p99 | max | burst deliveries/s | CPU s | peak RSS |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for room in &r.rooms {
        let f = &room.fan;
        let s = summary(&f.samples);
        let deliveries = (crate::rooms::BURST * (f.members - 1)) as f64;
        let (cpu, rss) = usage(&room.peers, &room.server);
        let _ = writeln!(
            out,
            "| {} members | {} | {} | {} | {} | {} | {} | {cpu} | {rss} |",
            f.members,
            fmt_duration(f.first),
            s.count,
            fmt_duration(s.median),
            fmt_duration(s.p99),
            fmt_duration(s.max),
            fmt_count(deliveries / f.burst.as_secs_f64().max(1e-9))
        );
    }
    let _ = writeln!(
        out,
        "\n| relayed vs direct throughput | not yet implemented (no relay yet) |\n|---|---|"
    );

    render_scale_out(&mut out, r);
    render_irc(&mut out, r);

    let _ = writeln!(out, "\n## Errors\n");
    let mut any = false;
    for (what, p) in r
        .steps
        .iter()
        .flat_map(|s| {
            [
                ("crowd login", &s.grow),
                ("lookup", &s.lookups),
                ("password login", &s.real_logins),
            ]
        })
        .chain([("storm", &r.storm.phase)])
        .chain(scale_phases(r))
    {
        for e in &p.first_errors {
            any = true;
            let _ = writeln!(out, "- {what}: {e}");
        }
    }
    if let Outcome::Ran { rows, .. } = &r.scale {
        for row in rows {
            if let Err(e) = &row.settled {
                any = true;
                let _ = writeln!(
                    out,
                    "- scale-out, {} with {} instances: announcing the logins: {e}",
                    row.backend, row.instances
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "{}",
        if any {
            ""
        } else {
            "None: every operation succeeded and every answer was checked."
        }
    );
    out
}

/// The command line, with a `--database` URL replaced by `URL` (it may hold a password).
fn redacted_args() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for arg in std::env::args().skip(1) {
        if out.last().is_some_and(|prev| prev == "--database") {
            out.push("URL".into());
        } else if arg.starts_with("--database=") {
            out.push("--database=URL".into());
        } else {
            out.push(arg);
        }
    }
    out
}

/// The scale-out rows' phases, named for the Errors section.
fn scale_phases(r: &Results) -> Vec<(&'static str, &crate::swarm::Phase)> {
    match &r.scale {
        Outcome::Ran { rows, .. } => rows
            .iter()
            .flat_map(|row| {
                [
                    ("scale-out login", &row.logins),
                    ("scale-out lookup", &row.lookups),
                ]
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn render_scale_out(out: &mut String, r: &Results) {
    let _ = writeln!(out, "\n## Scale-out: PostgreSQL\n");
    let (source, settings, rows) = match &r.scale {
        Outcome::Skipped(why) => {
            let _ = writeln!(out, "Skipped: {why}.");
            return;
        }
        Outcome::Failed(e) => {
            let _ = writeln!(out, "**Failed:** {e}");
            return;
        }
        Outcome::Ran {
            source,
            settings,
            rows,
        } => (source, settings, rows),
    };
    let plan = &r.sizes.scale;
    let (version, durability) = match settings {
        Some((version, durability)) => (format!(" {version}"), format!("; {durability}")),
        None => Default::default(),
    };
    let _ = writeln!(
        out,
        "The same crowd against three set-ups of the directory service, each started from \
         scratch: SQLite (one instance), then PostgreSQL{version} with one instance and \
         with two on the same database (one directory key; each instance learns of the \
         other's logins through `LISTEN/NOTIFY`). {} peers ({} per client UDP socket) log \
         in with their password (cheap hashes, as above), {} at a time, peer i to instance \
         i mod N. Once every login has been announced (see below), lookups run for {} s, {} \
         in flight, each from a random peer about another, every answer checked: with two \
         instances about half ask one instance about a user connected to the other, which \
         it answers from its copy of the other's presence. The database ({source}{durability}; \
         a scratch schema per set-up) runs on the same cores; its CPU is not in the \
         directory column.\n",
        fmt_count(plan.peers as f64),
        crate::scaleout::PEERS_PER_ENDPOINT,
        crate::scaleout::LOGIN_CONCURRENCY,
        plan.lookup_time.as_secs(),
        plan.lookup_window
    );
    let _ = writeln!(
        out,
        "| set-up | logins/s | login median | p99 | lookups/s | lookup median | p99 | \
         directory CPU per lookup | logins announced after | errors |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let l = summary(&row.logins.samples);
        let k = summary(&row.lookups.samples);
        let settled = match (&row.settled, row.copied) {
            (_, None) => "–".to_string(),
            (Ok(d), _) => fmt_duration(*d),
            (Err(_), _) => format!(
                "**not within {} s**",
                crate::scaleout::SETTLE_WITHIN.as_secs()
            ),
        };
        let _ = writeln!(
            out,
            "| {}, {} instance{} | {} | {} | {} | {} | {} | {} | {:.1} µs | {} | {} |",
            row.backend,
            row.instances,
            if row.instances == 1 { "" } else { "s" },
            fmt_count(row.logins.rate()),
            fmt_duration(l.median),
            fmt_duration(l.p99),
            fmt_count(row.lookups.rate()),
            fmt_duration(k.median),
            fmt_duration(k.p99),
            row.lookup_cpu.as_secs_f64() * 1e6 / k.count.max(1) as f64,
            settled,
            row.errors()
        );
    }
    let _ = writeln!(
        out,
        "\n\"Logins announced after\": an instance on PostgreSQL grants a login, then one \
         task per instance writes it to the `presence` table and notifies the other \
         instances, in batches (one transaction each); this is how long after the last login was \
         granted the table held every peer and, with two instances, a lookup of every peer \
         from the other instance found it. The lookups start only then."
    );
    if let Some((n, took)) = rows.iter().find_map(|row| row.copied) {
        let _ = writeln!(
            out,
            "Copying the {} cached accounts (hashes and keys as they are) into a scratch \
             schema took {:.1} s per PostgreSQL set-up, before any measurement.",
            fmt_count(n as f64),
            took.as_secs_f64()
        );
    }
}

fn render_irc(out: &mut String, r: &Results) {
    let _ = writeln!(out, "\n## Side by side: Natter and ngircd\n");
    let irc = match &r.irc {
        Ok(irc) => irc,
        Err(why) => {
            let _ = writeln!(
                out,
                "| measurement | natter | ngircd | |\n|---|---|---|---|"
            );
            for m in ["round trip", "throughput", "connections held"] {
                let _ = writeln!(out, "| {m} | see above | skipped | {why} |");
            }
            return;
        }
    };
    let _ = writeln!(
        out,
        "{} with TLS 1.3 (GnuTLS), flood penalties, DNS and ident lookups off, driven by the bench's \
         own IRC client (tokio + rustls). The same two-user exchange: A sends a 100-byte PRIVMSG to B, \
         B's client answers each one (our acknowledgement); natter's messages go directly from peer \
         to peer, IRC's through the server both ways. Ratio = natter ÷ ngircd (below 1 is better \
         for latency and memory, above 1 for rates).\n",
        irc.version
    );
    let ours_rtt = summary(&r.rtt.samples);
    let theirs_rtt = summary(&irc.rtt.samples);
    let (ours_tput, ..) = rate_stats(&r.tput);
    let (theirs_tput, ..) = rate_stats(&irc.tput);
    let last = r.steps.last();
    let ours_mem = last.map_or(0.0, Step::per_peer_kib);
    let ours_n = last.map_or(0, |s| s.n);
    let theirs_n = irc.conns.samples.len();
    let theirs_mem =
        irc.conns_rss_kib.saturating_sub(irc.idle_rss_kib) as f64 / theirs_n.max(1) as f64;
    let ours_setup = last.map_or(0.0, |s| s.grow.rate());
    let ours_cpu =
        (r.tput.peers.cpu + r.tput.server.cpu).as_secs_f64() / r.tput.total.max(1) as f64;
    let theirs_cpu =
        (irc.tput.peers.cpu + irc.tput.server.cpu).as_secs_f64() / irc.tput.total.max(1) as f64;
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "–".into()
        }
    };
    let _ = writeln!(out, "| measurement | natter | ngircd | natter ÷ ngircd |");
    let _ = writeln!(out, "|---|---|---|---|");
    let secs = |d: Duration| d.as_secs_f64();
    let rows: Vec<(String, String, String, String)> = vec![
        (
            format!(
                "round trip 100 B, median ({} samples each)",
                fmt_count(r.rtt.samples.len() as f64)
            ),
            fmt_duration(ours_rtt.median),
            fmt_duration(theirs_rtt.median),
            ratio(secs(ours_rtt.median), secs(theirs_rtt.median)),
        ),
        (
            "round trip 100 B, p99".into(),
            fmt_duration(ours_rtt.p99),
            fmt_duration(theirs_rtt.p99),
            ratio(secs(ours_rtt.p99), secs(theirs_rtt.p99)),
        ),
        (
            "round trip 100 B, max".into(),
            fmt_duration(ours_rtt.max),
            fmt_duration(theirs_rtt.max),
            ratio(secs(ours_rtt.max), secs(theirs_rtt.max)),
        ),
        (
            format!(
                "throughput 100 B, acknowledged msg/s (median of {} ms windows)",
                r.tput.tick.as_millis()
            ),
            fmt_count(ours_tput),
            fmt_count(theirs_tput),
            ratio(ours_tput, theirs_tput),
        ),
        (
            "CPU per acknowledged message, all processes".into(),
            format!("{:.1} µs", ours_cpu * 1e6),
            format!("{:.1} µs", theirs_cpu * 1e6),
            ratio(ours_cpu, theirs_cpu),
        ),
        (
            "connections held (logged in / registered)".into(),
            fmt_count(ours_n as f64),
            format!(
                "{} of {}",
                fmt_count(theirs_n as f64),
                fmt_count(irc.conns_target as f64)
            ),
            ratio(ours_n as f64, theirs_n as f64),
        ),
        (
            "server RSS per held connection".into(),
            fmt_kib(ours_mem),
            fmt_kib(theirs_mem),
            ratio(ours_mem, theirs_mem),
        ),
        (
            "connection + login (registration) per second".into(),
            fmt_count(ours_setup),
            fmt_count(irc.conns.rate()),
            ratio(ours_setup, irc.conns.rate()),
        ),
    ];
    for (m, a, b, c) in rows {
        let _ = writeln!(out, "| {m} | {a} | {b} | {c} |");
    }
    let (cpu, rss) = usage(&irc.rtt.peers, &irc.rtt.server);
    let _ = writeln!(
        out,
        "\nngircd resources: round trips used {cpu} CPU s (clients + ngircd), peak RSS {rss}; \
         holding {} connections used {:.2} CPU s in ngircd; {} registrations failed.",
        fmt_count(theirs_n as f64),
        irc.conns_usage.cpu.as_secs_f64(),
        irc.conns.errors
    );
    if let Some(e) = irc.conns.first_errors.first() {
        let _ = writeln!(out, "First failure: {e}");
    }
}
