//! What each `peer` subcommand does. `main` parses arguments and reports errors; the
//! work happens here, on top of the library modules.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use crate::app::{App, Start};
use crate::cli::{Cli, Command};
use crate::endpoint;
use crate::login::{self, Credentials, Options};
use crate::profile::Profile;
use crate::ui::{self, Input, Note, Output};

/// Where peers listen for chats unless told otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:65000";

/// Runs one subcommand.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let opts = options(&cli)?;
    match cli.command {
        Command::Register { name } => register(&opts, &name).await,
        Command::Who => who(&opts).await,
        Command::Fingerprint { name } => fingerprint(&opts, name.as_deref()),
        Command::Trust { name } => trust(&opts, &name).await,
        Command::Login(l) | Command::Listen(l) => chat(&opts, l.listen, Start::Idle).await,
        Command::Connect { name, listen } => chat(&opts, listen.listen, Start::Connect(name)).await,
    }
}

fn options(cli: &Cli) -> anyhow::Result<Options> {
    let profile = match &cli.profile {
        Some(p) => p.clone(),
        None => Profile::default_dir()
            .context("no config directory on this system: pass --profile DIR")?,
    };
    let directory_fingerprint = match &cli.directory_fingerprint {
        Some(fp) => Some(
            proto::Fingerprint::parse(fp)
                .context("--directory-fingerprint is not a fingerprint")?,
        ),
        None => None,
    };
    Ok(Options {
        profile,
        directory: cli.directory.clone(),
        directory_fingerprint,
        credentials: Credentials {
            user: cli.user.clone(),
            password: None,
            password_file: cli.password_file.clone(),
        },
    })
}

/// Scripted output unless both stdin and stdout are terminals.
fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

fn print(note: &Note) {
    if std::io::stdout().is_terminal() {
        println!("{}", ui::terminal::render(note));
    } else {
        println!("{}", ui::script::render(note));
    }
}

async fn register(opts: &Options, name: &str) -> anyhow::Result<()> {
    proto::names::check_username(name)?;
    let mut profile = Profile::open(&opts.profile)?;
    let endpoint = endpoint::bind(profile.identity(), "0.0.0.0:0".parse()?)?;
    let (client, _) = login::connect_directory(&mut profile, &endpoint, opts).await?;
    let password = login::password(&opts.credentials, true)?;
    client
        .register(name, &password, &profile.public_key())
        .await?;
    client.close();
    profile.settings.user = Some(name.to_string());
    profile.save_settings()?;
    print(&Note::Info(format!(
        "Registered {name} with key {}",
        profile.public_key().fingerprint()
    )));
    Ok(())
}

async fn who(opts: &Options) -> anyhow::Result<()> {
    let online = login::login(opts, "0.0.0.0:0".parse()?).await?;
    let users = online.link.who().await?;
    online.link.logout().await;
    print(&Note::Who { users });
    Ok(())
}

fn fingerprint(opts: &Options, name: Option<&str>) -> anyhow::Result<()> {
    let profile = Profile::open(&opts.profile)?;
    let user = profile
        .settings
        .user
        .clone()
        .unwrap_or_else(|| "you".into());
    let mine = profile.public_key();
    let peer = match name {
        None => None,
        Some(n) => {
            let key = profile
                .peers
                .get(n)
                .with_context(|| format!("no key pinned for {n}: chat with them first"))?;
            Some((
                n.to_string(),
                key,
                proto::identity::safety_number(&mine, &key),
            ))
        }
    };
    print(&Note::Fingerprint {
        user,
        key: mine,
        peer,
    });
    Ok(())
}

async fn trust(opts: &Options, name: &str) -> anyhow::Result<()> {
    let mut online = login::login(opts, "0.0.0.0:0".parse()?).await?;
    let info = online.link.lookup(name).await?;
    online.link.logout().await;
    let Some(info) = info else {
        bail!("{name} is not online: their current key can be trusted once they are");
    };
    let old = online.profile.peers.get(name);
    online.profile.peers.pin(name, info.identity)?;
    let mine = online.profile.public_key();
    print(&Note::Info(format!(
        "Now trusting {name}'s key {}{}\nSafety number: {}",
        info.identity.fingerprint(),
        match old {
            Some(o) if o != info.identity => format!(" (replaces {})", o.fingerprint()),
            _ => String::new(),
        },
        proto::identity::safety_number(&mine, &info.identity)
    )));
    Ok(())
}

async fn chat(opts: &Options, listen: Option<SocketAddr>, start: Start) -> anyhow::Result<()> {
    let settings_listen = Profile::open(&opts.profile)?.settings.listen;
    let listen = match listen.or(settings_listen) {
        Some(l) => l,
        None => DEFAULT_LISTEN.parse()?,
    };
    let online = login::login(opts, listen).await?;
    let (tx, rx) = mpsc::channel::<Input>(256);
    let interactive = interactive();
    let out: Arc<dyn Output> = if interactive {
        Arc::new(ui::terminal::start(tx.clone())?)
    } else {
        ui::script::read_stdin(tx.clone());
        Arc::new(ui::script::ScriptOutput)
    };
    spawn_signal_handlers(tx);
    App::new(online, out, interactive).run(rx, start).await;
    Ok(())
}

/// Ctrl-C (when the line editor is not reading) ends the current chat; SIGTERM quits.
fn spawn_signal_handlers(tx: mpsc::Sender<Input>) {
    let int_tx = tx.clone();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if int_tx.send(Input::Interrupt).await.is_err() {
                return;
            }
        }
    });
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            term.recv().await;
            let _ = tx.send(Input::Eof).await;
        }
    });
}
