//! The directory under load, in a process of its own so that its memory and CPU can be
//! read from `/proc` without the load generator's share.
//!
//! By default the child is this very executable started with [`SERVE_ARG`]: it runs
//! [`directory::Directory::start`] (the library the `directory` binary runs) on a multi-
//! threaded tokio runtime, like the binary, with the limits raised for load (see
//! [`ServeArgs`]). That child is always built from the same source as the load generator,
//! so it can never be a stale binary. `--directory-bin PATH` runs a real `directory`
//! binary instead (its CLI cannot raise the per-connection request rate of 100/s).
//!
//! The child prints `directory fingerprint: ...` and `listening on ...` like
//! `directory serve`, and stops cleanly on SIGTERM.
//!
//! With [`ServeArgs::database`] set, the child keeps its accounts in that PostgreSQL
//! database (and joins the other instances on it) instead of SQLite in its data
//! directory. The URL reaches the child in the `NATTER_DATABASE` environment variable,
//! as the `directory` binary reads it, never in its arguments (those show in `ps`, and
//! the URL may hold a password).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use directory::config::Secret;
use proto::PublicKey;

use crate::procfs;

/// First argument that turns this executable into the directory child.
pub const SERVE_ARG: &str = "__directory";

/// The environment variable that hands the child its database URL (the same one the
/// `directory` binary reads).
pub const DATABASE_ENV: &str = "NATTER_DATABASE";

/// How the child directory is configured (a subset of [`directory::Config`]).
#[derive(Debug, Clone, Parser)]
#[command(no_binary_name = true)]
pub struct ServeArgs {
    /// Data directory (database, key, audit log).
    #[arg(long)]
    pub data: PathBuf,
    /// UDP address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Most connections in total and from one address (all load comes from 127.0.0.1).
    #[arg(long, default_value_t = 25_000)]
    pub max_connections: usize,
    /// Requests per second one connection may send (the default config says 100).
    #[arg(long, default_value_t = 100_000)]
    pub requests_per_sec: u32,
    /// Request burst per connection (the default config says 200).
    #[arg(long, default_value_t = 100_000)]
    pub request_burst: u32,
    /// PostgreSQL URL of the shared store, or `None` for SQLite in `data`. Not an
    /// argument: passed in [`DATABASE_ENV`].
    #[arg(skip)]
    pub database: Option<Secret>,
}

impl ServeArgs {
    fn to_args(&self) -> Vec<String> {
        vec![
            "--data".into(),
            self.data.display().to_string(),
            "--listen".into(),
            self.listen.to_string(),
            "--max-connections".into(),
            self.max_connections.to_string(),
            "--requests-per-sec".into(),
            self.requests_per_sec.to_string(),
            "--request-burst".into(),
            self.request_burst.to_string(),
        ]
    }
}

/// If this process was started as the directory child, runs it and returns its exit code.
pub fn serve_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(SERVE_ARG) {
        return None;
    }
    let args = match ServeArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return Some(ExitCode::from(2));
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    Some(match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("directory child: {e:#}");
            ExitCode::FAILURE
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut config = directory::Config::new(&args.data);
    config.listen = args.listen;
    config.max_connections = args.max_connections;
    config.max_connections_per_ip = args.max_connections;
    // A login storm is that many connections not logged in yet, all from 127.0.0.1.
    config.max_anonymous = args.max_connections;
    config.max_anonymous_per_ip = args.max_connections;
    config.requests_per_sec = args.requests_per_sec;
    config.request_burst = args.request_burst;
    // Every simulated peer comes from 127.0.0.1: the per-source handshake limit would
    // otherwise be what a login burst or a reconnect storm measures.
    config.handshake_burst = Some(u32::try_from(args.max_connections).unwrap_or(u32::MAX));
    config.handshakes_per_sec = Some(1_000_000);
    config.database = std::env::var(DATABASE_ENV)
        .ok()
        .filter(|url| !url.is_empty())
        .map(Secret);
    let dir = directory::Directory::start(config).await?;
    println!("directory fingerprint: {}", dir.fingerprint());
    println!("listening on {}", dir.local_addr());
    term.recv().await;
    dir.shutdown().await;
    Ok(())
}

/// Which program runs the directory.
#[derive(Debug, Clone)]
pub enum Program {
    /// This executable with [`SERVE_ARG`].
    SelfExec,
    /// A `directory` binary (`directory --data D serve ...`).
    Binary(PathBuf),
}

/// A running directory child process.
pub struct DirectoryProcess {
    child: Child,
    pub addr: SocketAddr,
    pub key: PublicKey,
    pub args: ServeArgs,
    program: Program,
}

impl DirectoryProcess {
    /// Starts the directory and waits until it listens.
    pub fn start(program: &Program, args: ServeArgs) -> anyhow::Result<Self> {
        let key = directory::keys::load_or_create(&directory::Config::new(&args.data).key_path())?
            .public();
        let mut cmd = match program {
            Program::SelfExec => {
                let mut c = Command::new(std::env::current_exe()?);
                c.arg(SERVE_ARG).args(args.to_args());
                c
            }
            Program::Binary(bin) => {
                let mut c = Command::new(bin);
                c.arg("--data")
                    .arg(&args.data)
                    .arg("serve")
                    .arg("--listen")
                    .arg(args.listen.to_string())
                    .arg("--max-connections")
                    .arg(args.max_connections.to_string())
                    .arg("--max-connections-per-ip")
                    .arg(args.max_connections.to_string())
                    .arg("--max-anonymous")
                    .arg(args.max_connections.to_string())
                    .arg("--max-anonymous-per-ip")
                    .arg(args.max_connections.to_string())
                    .env(
                        "RUST_LOG",
                        std::env::var("RUST_LOG").unwrap_or("warn".into()),
                    );
                c
            }
        };
        // Never inherited: a NATTER_DATABASE in the caller's environment must not turn
        // an SQLite run into one on that database.
        match &args.database {
            Some(url) => cmd.env(DATABASE_ENV, &url.0),
            None => cmd.env_remove(DATABASE_ENV),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start the directory ({program:?})"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line?;
            if let Some(a) = line.strip_prefix("listening on ") {
                addr = Some(a.trim().parse::<SocketAddr>()?);
                break;
            }
        }
        let Some(addr) = addr else {
            let status = child.wait()?;
            bail!("the directory exited before listening ({status})");
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            child,
            addr,
            key,
            args,
            program: program.clone(),
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its memory and CPU now.
    pub fn stats(&self) -> procfs::ProcStats {
        procfs::read(self.pid()).unwrap_or_default()
    }

    /// SIGTERM, then waits (bounded) for a clean exit; SIGKILL if it does not come.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_in_place()
    }

    fn stop_in_place(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(status.success(), "the directory exited with {status}");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("the directory did not stop within 15 s of SIGTERM; killed")
    }

    /// Stops the directory and starts it again on the same data directory and port.
    pub fn restart(mut self) -> anyhow::Result<Self> {
        self.stop_in_place()?;
        let mut args = self.args.clone();
        args.listen = self.addr;
        Self::start(&self.program, args)
    }
}

impl Drop for DirectoryProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
