//! The `directory` command: run the server, or manage its accounts.
//!
//! ```text
//! directory [--data DIR] serve [--listen ADDR] [--open-registration]
//! printf 'secret\n' | directory [--data DIR] user add NAME [--admin] --password-stdin
//! directory [--data DIR] user list | remove NAME | unlock NAME | reset-key NAME
//! ```
//!
//! Exit status 0 on success; 1 with a one-line reason on stderr on failure; 2 for usage
//! errors (clap). `serve` prints two lines on stdout that scripts parse:
//! `directory fingerprint: <fingerprint>` and `listening on <addr>`. Logs go to stderr.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use directory::{Admin, Config, Directory};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;
use zeroize::Zeroizing;

/// Natter directory server: accounts, login, presence, lookup.
#[derive(Debug, Parser)]
#[command(name = "directory", version)]
struct Cli {
    /// Data directory (database, identity key, audit log).
    /// Default: the platform data directory's `natter` folder.
    #[arg(long, global = true, value_name = "DIR", env = "NATTER_DIRECTORY_DATA")]
    data: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the directory server until Ctrl-C or SIGTERM.
    Serve {
        /// UDP address to listen on (QUIC).
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8888")]
        listen: SocketAddr,
        /// Let peers create their own accounts.
        #[arg(long)]
        open_registration: bool,
        /// Drop a connection silent for this many seconds.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        idle_timeout: u64,
        /// Lifetime of session tickets, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 24 * 60 * 60)]
        ticket_lifetime: u64,
        /// Most connections at once.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        max_connections: usize,
        /// Most connections at once from one address (IPv6: one /64).
        #[arg(long, value_name = "N", default_value_t = 64)]
        max_connections_per_ip: usize,
    },
    /// Manage accounts (works while the server runs).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Create an account. Its identity key is registered on its first login.
    Add {
        /// User name (1-32 of a-z 0-9 . _ -).
        name: String,
        /// Make the user a directory administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List,
    /// Delete an account.
    Remove { name: String },
    /// Lift a lockout after failed logins.
    Unlock { name: String },
    /// Forget the account's identity key (for a user who lost theirs).
    ResetKey { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs at info by default; the one-shot `user` commands only warn, so a
    // failure shows as one line on stderr. RUST_LOG overrides both.
    let default_level = match cli.command {
        Command::Serve { .. } => "info",
        Command::User { .. } => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("directory: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("directory: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let data = match cli.data {
        Some(dir) => dir,
        None => directory::default_data_dir()
            .context("cannot find a data directory for this user; pass --data DIR")?,
    };
    match cli.command {
        Command::Serve {
            listen,
            open_registration,
            idle_timeout,
            ticket_lifetime,
            max_connections,
            max_connections_per_ip,
        } => {
            let mut config = Config::new(data);
            config.listen = listen;
            config.open_registration = open_registration;
            config.idle_timeout = Duration::from_secs(idle_timeout.max(1));
            config.ticket_lifetime = Duration::from_secs(ticket_lifetime.max(1));
            config.max_connections = max_connections;
            config.max_connections_per_ip = max_connections_per_ip;
            serve(config).await
        }
        Command::User { action } => {
            let admin = Admin::open(&data).await?;
            let result = user(&admin, action).await;
            admin.close().await;
            result
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Listen for signals before announcing ourselves: a script may send SIGTERM as soon
    // as it has read the two lines, and the default action would kill us uncleanly.
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let directory = Directory::start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "directory fingerprint: {}", directory.fingerprint())?;
        writeln!(out, "listening on {}", directory.local_addr())?;
        out.flush()?;
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    directory.shutdown().await;
    Ok(())
}

async fn user(admin: &Admin, action: UserAction) -> anyhow::Result<()> {
    match action {
        UserAction::Add {
            name,
            admin: is_admin,
            password_stdin,
        } => {
            let password = if password_stdin {
                password_from_stdin()?
            } else {
                password_from_prompt()?
            };
            admin.add_user(&name, &password, is_admin).await?;
            println!("added user {name}");
        }
        UserAction::List => {
            let users = admin.list_users().await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<32}  {:<5}  {:<19}  {:<16}  CREATED",
                "NAME", "ADMIN", "KEY", "STATUS"
            )?;
            for u in users {
                let key = u
                    .identity
                    .map(|k| k.fingerprint().short())
                    .unwrap_or_else(|| "-".into());
                let status = match u.locked_for {
                    Some(secs) => format!("locked {secs}s"),
                    None if u.failed_attempts > 0 => format!("{} failed", u.failed_attempts),
                    None => "ok".into(),
                };
                writeln!(
                    out,
                    "{:<32}  {:<5}  {:<19}  {:<16}  {}",
                    u.name,
                    if u.admin { "yes" } else { "no" },
                    key,
                    status,
                    directory::clock::format_utc(u.created_at)
                )?;
            }
            out.flush()?;
        }
        UserAction::Remove { name } => {
            admin.remove_user(&name).await?;
            println!("removed user {name}");
        }
        UserAction::Unlock { name } => {
            admin.unlock_user(&name).await?;
            println!("unlocked user {name}");
        }
        UserAction::ResetKey { name } => {
            admin.reset_key(&name).await?;
            println!("reset the identity key of {name}; their next login registers a new one");
        }
    }
    Ok(())
}

/// The first line of standard input, without its line ending.
fn password_from_stdin() -> anyhow::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_string());
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(password)
}

/// Asks twice without echo.
fn password_from_prompt() -> anyhow::Result<Zeroizing<String>> {
    let first = Zeroizing::new(
        rpassword::prompt_password("Password: ").context("cannot read the password")?,
    );
    let second = Zeroizing::new(
        rpassword::prompt_password("Password again: ").context("cannot read the password")?,
    );
    if *first != *second {
        bail!("the passwords do not match");
    }
    Ok(first)
}
