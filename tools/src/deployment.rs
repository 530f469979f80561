//! The directory service under load: one instance on SQLite, or one or more instances
//! sharing a PostgreSQL database (scale-out), each a child process (see `server.rs`).
//!
//! On PostgreSQL every run gets a scratch schema of its own in the given database
//! ([`postgres::create_scratch_schema`]), so runs never see each other's accounts or
//! presence. The cached accounts are copied into it, hashes and keys as they are
//! ([`accounts::copy_accounts`]), and it is dropped when the run stops cleanly (a run
//! that fails half-way leaves it behind, named `natter_<hex>`). Every instance has a
//! data directory of its own (audit log, control socket) holding a copy of the same
//! directory key: peers pin one key for the whole service.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use directory::config::Secret;
use directory::store::Store;
use directory::store::postgres::{self, PostgresStore};
use proto::PublicKey;
use tempfile::TempDir;

use crate::accounts;
use crate::procfs;
use crate::server::{DirectoryProcess, Program, ServeArgs};
use crate::swarm::Swarm;

/// The scratch schema of a run on PostgreSQL.
struct Scratch {
    /// Connections to the database, scoped to the schema (they copied the accounts in).
    store: PostgresStore,
    /// The database URL with the schema as its `search_path`: what the instances get.
    url: String,
    schema: String,
    accounts: usize,
    copied_in: Duration,
}

/// The running instances.
pub struct Deployment {
    pub instances: Vec<DirectoryProcess>,
    /// The one directory key every instance serves with.
    pub key: PublicKey,
    database: Option<Scratch>,
    _data: Vec<TempDir>,
}

impl Deployment {
    /// Starts `instances` directories with the accounts of `template` (a data directory
    /// from [`accounts::cached`]): on a fresh copy of it (SQLite, one instance only), or
    /// on a fresh scratch schema of the PostgreSQL database at `database`.
    pub async fn start(
        program: &Program,
        template: &Path,
        database: Option<&str>,
        instances: usize,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(instances >= 1, "at least one directory instance");
        anyhow::ensure!(
            instances == 1 || database.is_some(),
            "several instances need a PostgreSQL database (an SQLite file is one instance's)"
        );
        let scratch = match database {
            Some(url) => Some(scratch_schema(url, template).await?),
            None => None,
        };
        let mut data = Vec::new();
        let mut running = Vec::new();
        for _ in 0..instances {
            let dir = tempfile::tempdir()?;
            match &scratch {
                Some(_) => accounts::copy_key_into(template, dir.path())?,
                None => accounts::copy_into(template, dir.path())?,
            }
            let mut args =
                ServeArgs::try_parse_from(["--data", &dir.path().display().to_string()])?;
            args.database = scratch.as_ref().map(|s| Secret(s.url.clone()));
            let program = program.clone();
            let child =
                tokio::task::spawn_blocking(move || DirectoryProcess::start(&program, args))
                    .await??;
            running.push(child);
            data.push(dir);
        }
        let key = running[0].key;
        anyhow::ensure!(
            running.iter().all(|p| p.key == key),
            "the instances serve with different keys"
        );
        Ok(Self {
            instances: running,
            key,
            database: scratch,
            _data: data,
        })
    }

    /// Where the instances listen, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.instances.iter().map(|p| p.addr).collect()
    }

    /// The instances' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.instances.iter().map(|p| p.pid()).collect()
    }

    /// Which store: `SQLite` or `PostgreSQL`.
    pub fn backend(&self) -> &'static str {
        if self.database.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    }

    /// One line: how many instances on which store.
    pub fn describe(&self) -> String {
        let n = self.instances.len();
        let instances = format!("{n} directory instance{}", if n == 1 { "" } else { "s" });
        match &self.database {
            Some(s) => format!(
                "{instances} on PostgreSQL (scratch schema {}; {} accounts copied in {:.1} s)",
                s.schema,
                s.accounts,
                s.copied_in.as_secs_f64()
            ),
            None => format!("{instances} on SQLite"),
        }
    }

    /// On PostgreSQL: how many accounts were copied in, and how long that took.
    pub fn accounts_copied(&self) -> Option<(usize, Duration)> {
        self.database.as_ref().map(|s| (s.accounts, s.copied_in))
    }

    /// On PostgreSQL: the server's version, and the settings that decide what a commit
    /// costs, e.g. `fsync off, synchronous_commit off` (a throwaway test cluster runs
    /// without them; a durable one pays for a disk flush per commit).
    pub async fn database_settings(&self) -> Option<(String, String)> {
        let client = self.database.as_ref()?.store.pool().get().await.ok()?;
        let row = client
            .query_one(
                "SELECT current_setting('server_version'), current_setting('fsync'), \
                 current_setting('synchronous_commit')",
                &[],
            )
            .await
            .ok()?;
        let setting = |i: usize| row.try_get::<_, String>(i).ok();
        Some((
            setting(0)?,
            format!("fsync {}, synchronous_commit {}", setting(1)?, setting(2)?),
        ))
    }

    /// Waits, for at most `within`, until every login of `swarm` has been announced: on
    /// PostgreSQL each instance writes a login to the `presence` table and notifies the
    /// others from one task, after granting it, so that work goes on for a while after a
    /// burst of logins (and would be measured with whatever comes next). Done when the
    /// table holds every online peer and, with several instances, every instance knows
    /// every user of the others ([`Swarm::await_presence`]). Returns how long it took.
    pub async fn settle(&self, swarm: &Swarm, within: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        if let Some(s) = &self.database {
            let online = swarm.online() as i64;
            let client = s.store.pool().get().await.map_err(|e| e.to_string())?;
            loop {
                let rows: i64 = client
                    .query_one("SELECT count(*) FROM presence", &[])
                    .await
                    .and_then(|row| row.try_get(0))
                    .map_err(|e| format!("counting presence rows: {e}"))?;
                if rows >= online {
                    break;
                }
                if start.elapsed() > within {
                    return Err(format!(
                        "{rows} of {online} logins in the presence table after {within:?}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        swarm
            .await_presence(within.saturating_sub(start.elapsed()))
            .await?;
        Ok(start.elapsed())
    }

    /// The instances' RSS added up, KiB (0 for one that is gone).
    pub fn rss_kib(&self) -> u64 {
        self.instances.iter().map(|p| p.stats().rss_kib).sum()
    }

    /// Whether one of the instances has exited.
    pub fn any_gone(&self) -> bool {
        self.instances.iter().any(|p| p.stats().rss_kib == 0)
    }

    /// CPU time the instances have used so far, added up (the database's not counted).
    pub fn cpu(&self) -> Duration {
        self.pids()
            .into_iter()
            .map(|pid| procfs::read(pid).unwrap_or_default().cpu)
            .sum()
    }

    /// Stops every instance and starts it again on the same data and port.
    pub async fn restart(mut self) -> anyhow::Result<Self> {
        let mut restarted = Vec::new();
        for p in std::mem::take(&mut self.instances) {
            restarted.push(tokio::task::spawn_blocking(move || p.restart()).await??);
        }
        self.instances = restarted;
        Ok(self)
    }

    /// Stops every instance (SIGTERM, a clean shutdown) and drops the scratch schema.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for p in std::mem::take(&mut self.instances) {
            tokio::task::spawn_blocking(move || p.stop()).await??;
        }
        if let Some(s) = self.database.take() {
            let client = s.store.pool().get().await?;
            client
                .batch_execute(&format!("DROP SCHEMA {} CASCADE", s.schema))
                .await
                .with_context(|| format!("cannot drop the scratch schema {}", s.schema))?;
            drop(client);
            s.store.close().await?;
        }
        Ok(())
    }
}

/// A fresh schema in the database at `url`, migrated, holding the template's accounts.
async fn scratch_schema(url: &str, template: &Path) -> anyhow::Result<Scratch> {
    let (scoped, schema) = postgres::create_scratch_schema(url)
        .await
        .context("cannot create a scratch schema in the PostgreSQL database")?;
    let store = PostgresStore::open(&scoped).await?;
    let started = Instant::now();
    let accounts =
        accounts::copy_accounts(template, Arc::new(store.clone()), postgres::POOL_SIZE).await?;
    Ok(Scratch {
        store,
        url: scoped,
        schema,
        accounts,
        copied_in: started.elapsed(),
    })
}
