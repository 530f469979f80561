//! The `directory` command: run the server, manage its accounts, stop it.
//!
//! ```text
//! directory [--data DIR] [--config FILE] serve [--listen ADDR] [--status ADDR] ...
//! printf 'secret\n' | directory user add NAME [--admin] --password-stdin
//! directory user list | remove NAME | lock NAME | unlock NAME | logout NAME | reset-key NAME
//! directory shutdown
//! directory config print [serve flags]
//! ```
//!
//! Settings come from built-in defaults, then the configuration file (`--config FILE`, or
//! `directory.toml` in the data directory), then the environment, then flags; see
//! [`directory::config_file`] and `docs/OPERATIONS.md`.
//!
//! Exit status 0 on success; 1 with a one-line reason on stderr on failure; 2 for usage
//! errors (clap). `serve` prints two lines on stdout that scripts parse:
//! `directory fingerprint: <fingerprint>` and `listening on <addr>`, then, with a status
//! page, `status page on http://<addr>/` and maybe `status token: <token>`. It runs until
//! Ctrl-C, SIGTERM, `directory shutdown` or an administrator's `/shutdown`, and exits 0
//! once peers are told and storage is flushed. Logs go to stderr.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use directory::config::{LogFormat, Secret};
use directory::config_file::{self, Sources};
use directory::operator::{self, OperatorError};
use directory::{Admin, Config, Directory};
use tokio::signal::unix::{SignalKind, signal};
use zeroize::Zeroizing;

/// Natter directory server: accounts, login, presence, lookup.
#[derive(Debug, Parser)]
#[command(name = "directory", version)]
struct Cli {
    /// Data directory (database, identity key, audit log, control socket).
    /// Default: `data` in the configuration file, else the platform data directory's
    /// `natter` folder.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "NATTER_DIRECTORY_DATA",
        hide_env_values = true
    )]
    data: Option<PathBuf>,

    /// Configuration file (TOML). Default: `directory.toml` in the data directory, if
    /// it exists.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "NATTER_DIRECTORY_CONFIG",
        hide_env_values = true
    )]
    config: Option<PathBuf>,

    /// Where accounts live: a `postgres://user:password@host:port/db` URL, shared by
    /// several directory instances (scale-out). Default: SQLite in the data directory.
    /// Prefer the environment variable or the file: flags show in `ps`.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "NATTER_DATABASE",
        hide_env_values = true
    )]
    database: Option<Secret>,

    /// Log filter: a level (`info`) or per-module directives
    /// (`info,directory::auth=debug`). Beats RUST_LOG and the file's `log.filter`.
    #[arg(long, global = true, value_name = "FILTER")]
    log_filter: Option<String>,

    /// Log line format: `text`, or `json` (one object per line, for log shippers).
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<LogFormat>,

    #[command(subcommand)]
    command: Command,
}

/// The server's flags; each one overrides the configuration file key of the same name.
#[derive(Debug, Clone, Default, Args)]
struct ServeArgs {
    /// UDP address to listen on (QUIC) [default: 0.0.0.0:8888]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Let peers create their own accounts (`--open-registration=false` turns off what
    /// the file turned on) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    open_registration: Option<bool>,
    /// Drop a connection silent for this many seconds [default: 10]
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    idle_timeout: Option<Duration>,
    /// Lifetime of session tickets, in seconds [default: 86400]
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    ticket_lifetime: Option<Duration>,
    /// Most logged-in connections at once [default: 10000]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most connections at once from one address (IPv6: one /64) [default: 64]
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<usize>,
    /// Most connections at once that have not logged in yet [default: 1000]
    #[arg(long, value_name = "N")]
    max_anonymous: Option<usize>,
    /// Most connections at once from one address that have not logged in [default: 16]
    #[arg(long, value_name = "N")]
    max_anonymous_per_ip: Option<usize>,
    /// Serve the status page, /metrics and /healthz over HTTP on this TCP address
    /// (e.g. 127.0.0.1:8080) [default: off]
    #[arg(long, value_name = "ADDR")]
    status: Option<SocketAddr>,
    /// Token the status page asks for (at least 16 characters). Without one, a page
    /// bound to a non-loopback address gets a random token, printed at start. Prefer the
    /// environment variable or the file: flags show in `ps`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "NATTER_STATUS_TOKEN",
        hide_env_values = true
    )]
    status_token: Option<Secret>,
}

impl ServeArgs {
    /// Sets the settings given as flags over `config`.
    fn apply(self, config: &mut Config) {
        macro_rules! given {
            ($($key:ident),+) => {$(
                if let Some(value) = self.$key {
                    config.$key = value.into();
                }
            )+};
        }
        given!(
            listen,
            open_registration,
            idle_timeout,
            ticket_lifetime,
            max_connections,
            max_connections_per_ip,
            max_anonymous,
            max_anonymous_per_ip,
            status,
            status_token
        );
    }
}

/// A flag's whole number of seconds.
fn seconds(text: &str) -> Result<Duration, std::num::ParseIntError> {
    text.parse().map(Duration::from_secs)
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the directory server until Ctrl-C, SIGTERM or `directory shutdown`.
    Serve(ServeArgs),
    /// Manage accounts (works while the server runs).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Stop the directory running on this data directory: peers are told, storage is
    /// flushed, and it exits 0.
    Shutdown,
    /// Print the directory's key fingerprint (for users' `--directory-fingerprint`),
    /// creating the data directory and the key if this is the first use.
    Fingerprint,
    /// Show the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
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
    /// Delete an account (and end its session on the running server).
    Remove { name: String },
    /// Lock an account until unlocked (and end its session on the running server).
    Lock { name: String },
    /// Lift a lock: an operator's, or a lockout after failed logins.
    Unlock { name: String },
    /// End a user's session on the running server; their peer is told why.
    Logout { name: String },
    /// Forget the account's identity key (for a user who lost theirs).
    ResetKey { name: String },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the effective configuration (defaults, file, environment and these flags
    /// combined) as a configuration file.
    Print(ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs at info by default (and `config print` shows what it would use);
    // the one-shot commands only warn, so a failure shows as one line on stderr.
    let default_filter = match cli.command {
        Command::Serve(_) | Command::Config { .. } => "info",
        _ => "warn",
    };
    let sources = Sources {
        config: cli.config.clone(),
        data: cli.data.clone(),
        default_data: directory::default_data_dir(),
        rust_log: std::env::var("RUST_LOG").ok(),
        default_filter: default_filter.into(),
    };
    let effective = match config_file::resolve(&sources, |config| flags(&cli, config)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("directory: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = config_file::init_logging(&effective.config.log) {
        eprintln!("directory: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("directory: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, effective)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("directory: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets the settings given as flags over `config`.
fn flags(cli: &Cli, config: &mut Config) {
    if let Some(database) = &cli.database {
        config.database = Some(database.clone());
    }
    if let Some(filter) = &cli.log_filter {
        config.log.filter = Some(filter.clone());
    }
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    if let Command::Serve(args)
    | Command::Config {
        action: ConfigAction::Print(args),
    } = &cli.command
    {
        args.clone().apply(config);
    }
}

async fn run(command: Command, effective: config_file::Effective) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) => serve(effective.config).await,
        Command::User { action } => {
            let admin = Admin::open_config(&effective.config).await?;
            let result = user(&admin, &effective.config.data_dir, action).await;
            admin.close().await;
            result
        }
        Command::Shutdown => shutdown(&effective.config.data_dir).await,
        Command::Fingerprint => {
            let dir = effective.config.data_dir.clone();
            let key = effective.config.key_path();
            let identity = tokio::task::spawn_blocking(move || {
                directory::keys::ensure_data_dir(&dir)?;
                directory::keys::load_or_create(&key)
            })
            .await
            .context("key loading task failed")??;
            println!("directory fingerprint: {}", identity.public().fingerprint());
            Ok(())
        }
        Command::Config {
            action: ConfigAction::Print(_),
        } => {
            print!("{}", config_file::render(&effective)?);
            Ok(())
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
        if let Some(addr) = directory.status_addr() {
            writeln!(out, "status page on http://{addr}/")?;
        }
        if let Some(token) = directory.status_token() {
            writeln!(out, "status token: {token}")?;
        }
        out.flush()?;
    }
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("interrupted"),
        reason = directory.stopped() => tracing::info!(%reason, "stop requested"),
    }
    directory.shutdown().await;
    Ok(())
}

async fn user(admin: &Admin, data: &Path, action: UserAction) -> anyhow::Result<()> {
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
                    Some(_) if u.locked_by_admin => "locked".to_string(),
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
            // The running server forgets the account's rooms and ends its session.
            match operator::request(data, &format!("removed {name}")).await {
                Ok(reply) => tracing::info!("{reply}"),
                Err(OperatorError::NotRunning(_)) => {}
                Err(e) => eprintln!("directory: warning: could not end {name}'s session: {e}"),
            }
            println!("removed user {name}");
        }
        UserAction::Lock { name } => {
            admin.lock_user(&name).await?;
            // The running server ends what it can for the account (rooms, relay,
            // session) and says what it cannot (direct chats already open).
            let ended = match operator::request(data, &format!("locked {name}")).await {
                Ok(reply) => format!("{reply}\n"),
                Err(OperatorError::NotRunning(_)) => String::new(),
                Err(e) => {
                    eprintln!("directory: warning: could not end {name}'s session: {e}");
                    String::new()
                }
            };
            print!("{ended}");
            println!("locked user {name}; `directory user unlock {name}` lifts it");
        }
        UserAction::Unlock { name } => {
            admin.unlock_user(&name).await?;
            println!("unlocked user {name}");
        }
        UserAction::Logout { name } => {
            proto::names::check_username(&name)?;
            let reply = operator::request(data, &format!("logout {name}")).await?;
            println!("{reply}");
        }
        UserAction::ResetKey { name } => {
            admin.reset_key(&name).await?;
            kick(data, &name, "identity key reset by the operator").await;
            println!("reset the identity key of {name}; their next login registers a new one");
        }
    }
    Ok(())
}

/// Ends `name`'s session on the running server, if one runs (the account change itself
/// is already in the database, which the server reads at every login).
async fn kick(data: &Path, name: &str, reason: &str) {
    match operator::request(data, &format!("logout {name} {reason}")).await {
        Ok(reply) => tracing::info!("{reply}"),
        Err(OperatorError::NotRunning(_)) => {}
        Err(e) => eprintln!("directory: warning: could not end {name}'s session: {e}"),
    }
}

/// Asks the running directory to stop and waits until it has flushed and gone.
async fn shutdown(data: &Path) -> anyhow::Result<()> {
    let socket = data.join(operator::SOCKET_FILE);
    operator::request(data, "shutdown").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while socket.exists() {
        if tokio::time::Instant::now() > deadline {
            bail!("the directory was told to stop but has not finished after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("directory stopped");
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

/// Asks without echo until the password meets the rules (said at once, not after it
/// was typed twice), then asks for it again.
fn password_from_prompt() -> anyhow::Result<Zeroizing<String>> {
    let first = loop {
        let first = Zeroizing::new(
            rpassword::prompt_password("Password: ").context("cannot read the password")?,
        );
        match proto::names::check_new_password(&first) {
            Ok(()) => break first,
            Err(e) => eprintln!("{e}; try again"),
        }
    };
    let second = Zeroizing::new(
        rpassword::prompt_password("Password again: ").context("cannot read the password")?,
    );
    if *first != *second {
        bail!("the passwords do not match");
    }
    Ok(first)
}
