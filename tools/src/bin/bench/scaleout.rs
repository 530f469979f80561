//! Scale-out: logins and lookups per second with the accounts in SQLite (one instance)
//! and in PostgreSQL (one instance, then two on one database), the same crowd and the
//! same checks each time.
//!
//! Each set-up starts from scratch (see `tools/src/deployment.rs`: a fresh copy
//! of the cached accounts; on PostgreSQL a scratch schema of its own, dropped after). The
//! peers log in with their password, peer `i` to instance `i % N`; once every login has
//! been announced (on PostgreSQL: written to the `presence` table and, with two
//! instances, known to the other), lookups run for the set time, each from a random peer
//! about another, so with two instances about half of them ask one instance about a
//! user connected to the other. Every answer is checked (name, key, address).
//!
//! The database comes from `--database URL`, else `NATTER_BENCH_POSTGRES`, else
//! `NATTER_TEST_POSTGRES` (which `.ci/postgres start` exports); without one the section
//! is skipped and says why.

use std::path::Path;
use std::time::Duration;

use crate::deployment::Deployment;
use crate::server::Program;
use crate::swarm::{Phase, Swarm};

/// Peers sharing one client UDP socket (as in scenario 5).
pub const PEERS_PER_ENDPOINT: usize = 100;
/// Password logins in flight at once (as in scenario 5).
pub const LOGIN_CONCURRENCY: usize = 128;
/// How long the instances may take to announce the logins after the login phase.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// Environment variables that name the database, in the order they are tried.
pub const DATABASE_ENV: [&str; 2] = ["NATTER_BENCH_POSTGRES", "NATTER_TEST_POSTGRES"];

/// How the set-ups run.
pub struct Plan {
    pub peers: usize,
    pub lookup_time: Duration,
    pub lookup_window: usize,
}

/// What one set-up measured.
pub struct Row {
    /// `SQLite` or `PostgreSQL`.
    pub backend: &'static str,
    pub instances: usize,
    /// The password logins of the whole crowd.
    pub logins: Phase,
    pub lookups: Phase,
    /// How long after the logins every login was announced (see
    /// `Deployment::settle`), or why not within [`SETTLE_WITHIN`].
    pub settled: Result<Duration, String>,
    /// Directory CPU during the lookups, all instances (the database's not counted).
    pub lookup_cpu: Duration,
    /// On PostgreSQL: accounts copied into the scratch schema, and how long it took.
    pub copied: Option<(usize, Duration)>,
}

impl Row {
    /// Failed or wrong operations.
    pub fn errors(&self) -> u64 {
        self.logins.errors + self.lookups.errors + u64::from(self.settled.is_err())
    }
}

/// The section's result.
pub enum Outcome {
    /// Not run: no database named (the reason).
    Skipped(String),
    /// A set-up could not run (the error).
    Failed(String),
    Ran {
        /// Where the URL came from, e.g. "named by `NATTER_TEST_POSTGRES`" (never the
        /// URL: it may hold a password).
        source: String,
        /// The server's version and durability settings, if it said.
        settings: Option<(String, String)>,
        rows: Vec<Row>,
    },
}

/// The database to use and where it was named, or why there is none.
pub fn database(flag: Option<&str>) -> Result<(String, String), String> {
    if let Some(url) = flag {
        return Ok((url.to_string(), "named by `--database`".into()));
    }
    for var in DATABASE_ENV {
        if let Ok(url) = std::env::var(var)
            && !url.is_empty()
        {
            return Ok((url, format!("named by `{var}`")));
        }
    }
    Err(format!(
        "no PostgreSQL database named (pass `--database URL`, or set {} or {}; \
         `eval \"$(bash .ci/postgres start)\"` starts a throwaway one)",
        DATABASE_ENV[0], DATABASE_ENV[1]
    ))
}

/// Runs SQLite with one instance, then PostgreSQL (`url`) with one and with two.
pub async fn run(template: &Path, url: &str, source: String, plan: &Plan) -> Outcome {
    let mut rows = Vec::new();
    let mut settings = None;
    for (database, instances) in [(None, 1), (Some(url), 1), (Some(url), 2)] {
        eprintln!(
            "  {} peers, {instances} instance(s) on {}...",
            plan.peers,
            if database.is_some() {
                "PostgreSQL"
            } else {
                "SQLite"
            }
        );
        match set_up(template, database, instances, plan).await {
            Ok((row, s)) => {
                rows.push(row);
                settings = settings.or(s);
            }
            Err(e) => return Outcome::Failed(format!("{e:#}")),
        }
    }
    Outcome::Ran {
        source,
        settings,
        rows,
    }
}

/// One set-up, from start to stop.
async fn set_up(
    template: &Path,
    database: Option<&str>,
    instances: usize,
    plan: &Plan,
) -> anyhow::Result<(Row, Option<(String, String)>)> {
    let service = Deployment::start(&Program::SelfExec, template, database, instances).await?;
    let settings = service.database_settings().await;
    let mut swarm = Swarm::new(
        0,
        plan.peers,
        PEERS_PER_ENDPOINT,
        &service.addrs(),
        service.key,
    )?;
    let logins = swarm.login(0..plan.peers, LOGIN_CONCURRENCY).await;
    let settled = service.settle(&swarm, SETTLE_WITHIN).await;
    let before = service.cpu();
    let lookups = swarm
        .lookups(plan.lookup_time, plan.lookup_window, usize::MAX)
        .await;
    let lookup_cpu = service.cpu().saturating_sub(before);
    swarm.close().await;
    let row = Row {
        backend: service.backend(),
        instances,
        logins,
        lookups,
        settled,
        lookup_cpu,
        copied: service.accounts_copied(),
    };
    service.stop().await?;
    Ok((row, settings))
}
