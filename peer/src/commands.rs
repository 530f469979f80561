//! What each `peer` subcommand does. `main` parses arguments and reports errors; the
//! work happens here, on top of the library modules.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use crate::app::{App, Start};
use crate::cli::{Cli, Command, ConfigAction};
use crate::endpoint;
use crate::login::{self, Credentials, Options};
use crate::profile::{Profile, Settings};
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
        Command::Trust {
            name,
            fingerprint,
            yes,
        } => trust(&opts, &name, fingerprint.as_deref(), yes).await,
        Command::Login(l) | Command::Listen(l) => chat(&opts, l.listen, Start::Idle).await,
        Command::Connect { name, listen } => chat(&opts, listen.listen, Start::Connect(name)).await,
        Command::History { name, last } => history(&opts, &name, last).await,
        Command::Passwd => passwd(&opts).await,
        Command::Config {
            action: ConfigAction::Print(ref l),
        } => config_print(&cli, l.listen),
    }
}

/// `peer history NAME [--last N]`: unlocks the profile and prints the conversation.
async fn history(opts: &Options, name: &str, last: Option<usize>) -> anyhow::Result<()> {
    proto::names::check_username(name)?;
    let profile = Profile::open(&opts.profile)?;
    if !profile.has_vault() {
        bail!("this profile has no history yet (log in once to start one)");
    }
    let password = login::password(&opts.credentials, false)?;
    let (profile, _) = login::open_secrets(profile, &password, opts.vault_cost).await?;
    drop(password);
    let vault = profile.vault().context("the profile did not unlock")?;
    let (mut entries, damaged) = match crate::history::read(profile.dir(), vault, name) {
        Ok(found) => found,
        Err(crate::history::HistoryError::NoHistory(_)) => (Vec::new(), 0),
        Err(e) => return Err(e.into()),
    };
    if let Some(n) = last {
        entries.drain(..entries.len().saturating_sub(n));
    }
    print(&Note::History {
        peer: name.to_string(),
        entries,
        damaged,
    });
    Ok(())
}

/// `peer passwd`: changes the password at the directory and re-encrypts the profile
/// under it (see [`crate::passwd`]).
async fn passwd(opts: &Options) -> anyhow::Result<()> {
    let profile = Profile::open(&opts.profile)?;
    if !profile.has_vault() {
        bail!("this profile has no sealed keys yet: log in once first");
    }
    drop(profile);
    let mut opts = opts.clone();
    opts.credentials.password = Some(login::password(&opts.credentials, false)?);
    let new = match std::env::var("PEER_NEW_PASSWORD") {
        Ok(p) => zeroize::Zeroizing::new(p),
        Err(_) if std::io::stdin().is_terminal() => {
            let first = zeroize::Zeroizing::new(rpassword::prompt_password("New password: ")?);
            let again =
                zeroize::Zeroizing::new(rpassword::prompt_password("New password (again): ")?);
            if first != again {
                bail!("the new passwords do not match");
            }
            first
        }
        Err(_) => bail!("no new password: set PEER_NEW_PASSWORD"),
    };
    crate::passwd::change(&opts, new, opts.vault_cost).await?;
    print(&Note::Info(
        "Password changed at the directory, and the profile's keys and history are sealed \
         with it"
            .into(),
    ));
    Ok(())
}

/// The profile directory: `--profile`, else the platform default.
fn profile_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    match &cli.profile {
        Some(p) => Ok(p.clone()),
        None => {
            Profile::default_dir().context("no config directory on this system: pass --profile DIR")
        }
    }
}

/// The log filter: `RUST_LOG`, else the profile's `log`, else `warn`. Never fails: a
/// broken profile is reported by the command itself.
pub fn log_filter(cli: &Cli) -> String {
    if let Ok(filter) = std::env::var("RUST_LOG")
        && !filter.trim().is_empty()
    {
        return filter;
    }
    profile_dir(cli)
        .ok()
        .and_then(|dir| Settings::load(&dir).ok())
        .and_then(|s| s.log)
        .unwrap_or_else(|| "warn".into())
}

/// `peer config print`: the profile's settings with the flags and environment over them,
/// as a `config.toml`.
fn config_print(cli: &Cli, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let (dir, s) = effective_settings(cli, listen)?;
    let mut out = format!(
        "# Effective settings of profile {} (config.toml, then the environment, then flags).\n",
        dir.display()
    );
    let unset = [
        ("user", s.user.is_none(), "asked at login, then remembered"),
        (
            "directory",
            s.directory.is_none(),
            "needed at the first login, then remembered",
        ),
        (
            "directory_fingerprint",
            s.directory_fingerprint.is_none(),
            "the directory's key is pinned on first contact",
        ),
        (
            "password_file",
            s.password_file.is_none(),
            "the password comes from PEER_PASSWORD or a prompt",
        ),
    ];
    for (key, missing, what) in unset {
        if missing {
            out.push_str(&format!("# {key}: not set ({what})\n"));
        }
    }
    out.push_str(&toml::to_string(&s).context("cannot show the settings")?);
    print!("{out}");
    Ok(())
}

/// The profile directory and its settings with the flags and environment over them,
/// defaults filled in where there are some.
fn effective_settings(
    cli: &Cli,
    listen: Option<SocketAddr>,
) -> anyhow::Result<(PathBuf, Settings)> {
    let dir = profile_dir(cli)?;
    let mut s = Settings::load(&dir)?;
    if cli.user.is_some() {
        s.user = cli.user.clone();
    }
    if cli.directory.is_some() {
        s.directory = cli.directory.clone();
    }
    if cli.directory_fingerprint.is_some() {
        s.directory_fingerprint = cli.directory_fingerprint.clone();
    }
    if cli.password_file.is_some() {
        s.password_file = cli.password_file.clone();
    }
    s.listen = Some(match listen.or(s.listen) {
        Some(l) => l,
        None => DEFAULT_LISTEN.parse()?,
    });
    s.log = Some(log_filter(cli));
    Ok((dir, s))
}

/// The options every networked command needs: flags first, then the profile's
/// `config.toml` (the user name, directory and listen address are looked up there later,
/// where they are used).
fn options(cli: &Cli) -> anyhow::Result<Options> {
    let profile = profile_dir(cli)?;
    let settings = Settings::load(&profile)?;
    let directory_fingerprint = match (&cli.directory_fingerprint, &settings.directory_fingerprint)
    {
        (Some(fp), _) => Some(
            proto::Fingerprint::parse(fp)
                .context("--directory-fingerprint is not a fingerprint")?,
        ),
        (None, Some(fp)) => Some(
            proto::Fingerprint::parse(fp)
                .context("directory_fingerprint in config.toml is not a fingerprint")?,
        ),
        (None, None) => None,
    };
    // A relative path in the file is relative to the profile directory.
    let password_file = cli
        .password_file
        .clone()
        .or_else(|| settings.password_file.map(|p| profile.join(p)));
    Ok(Options {
        profile,
        directory: cli.directory.clone(),
        directory_fingerprint,
        credentials: Credentials {
            user: cli.user.clone(),
            password: None,
            password_file,
        },
        vault_cost: crate::vault::VaultCost::from_env(),
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
    let profile = Profile::open(&opts.profile)?;
    let password = login::password(&opts.credentials, true)?;
    // Said here, in words, rather than as the directory's bare "invalid"; and it will
    // seal the profile's keys, so it must stand an offline attack.
    crate::passwd::check_strength(name, &password)?;
    let attempt = async |profile: &mut Profile| {
        let endpoint = endpoint::bind(profile.identity(), "0.0.0.0:0".parse()?)?;
        let (client, _, _) = login::connect_directory(profile, &endpoint, opts).await?;
        let registered = client
            .register(name, &password, &profile.public_key())
            .await;
        client.close();
        endpoint::close(&endpoint).await;
        anyhow::Ok(registered?)
    };
    let (mut profile, ()) =
        login::with_secrets(profile, &password, opts.vault_cost, attempt).await?;
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
    let users = online.link.who().await;
    online.close().await;
    print(&Note::Who { users: users? });
    Ok(())
}

fn fingerprint(opts: &Options, name: Option<&str>) -> anyhow::Result<()> {
    let mut profile = Profile::open(&opts.profile)?;
    // A profile that never logged in keeps its new key until the first login seals it.
    profile.keep_unsealed()?;
    let user = opts
        .credentials
        .user
        .clone()
        .or_else(|| profile.settings.user.clone())
        .unwrap_or_else(|| "you".into());
    let mine = profile
        .known_public_key()
        .context("identity.pub is missing: log in once to write it again")?;
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

/// `peer trust NAME [FINGERPRINT] [--yes]`: shows the directory's key for NAME and the
/// safety number, and pins it only when confirmed: the fingerprint given matches, `--yes`,
/// or `yes` typed at the terminal. Without any of them and no terminal, nothing is pinned.
async fn trust(
    opts: &Options,
    name: &str,
    fingerprint: Option<&str>,
    yes: bool,
) -> anyhow::Result<()> {
    let expected = fingerprint
        .map(|f| {
            proto::Fingerprint::parse(f).with_context(|| format!("{f:?} is not a fingerprint"))
        })
        .transpose()?;
    let mut online = login::login(opts, "0.0.0.0:0".parse()?).await?;
    let info = online.link.lookup(name).await;
    online.link.logout().await;
    endpoint::close(&online.endpoint).await;
    let info = info?;
    let Some(info) = info else {
        bail!("{name} is not online: their current key can be trusted once they are");
    };
    let old = online.profile.peers.get(name);
    let mine = online.profile.public_key();
    let safety = proto::identity::safety_number(&mine, &info.identity);
    if old == Some(info.identity) {
        print(&Note::Info(format!(
            "{name}'s key {} is already trusted\nSafety number: {safety}",
            info.identity.fingerprint()
        )));
        return Ok(());
    }
    let ask = expected.is_none() && !yes && std::io::stdin().is_terminal();
    print(&Note::PendingKey {
        peer: name.to_string(),
        pinned: old,
        pending: info.identity,
        safety: safety.clone(),
        asking: ask,
    });
    let confirmed = match expected {
        Some(fp) if fp != info.identity.fingerprint() => bail!(
            "not trusted: the directory's key for {name} is {}, not the one you checked ({fp})",
            info.identity.fingerprint()
        ),
        Some(_) => true,
        None if yes => true,
        None if ask => {
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            answer.trim().eq_ignore_ascii_case("yes")
        }
        None => bail!(
            "not trusted: compare the safety number with {name}, then run `peer trust {name} FINGERPRINT` \
             with the key's fingerprint (or `--yes`)"
        ),
    };
    if !confirmed {
        bail!("not trusted: {name}'s pinned key is unchanged");
    }
    online.profile.peers.pin(&info.user, info.identity)?;
    print(&Note::Info(format!(
        "Now trusting {name}'s key {}{}\nSafety number: {safety}",
        info.identity.fingerprint(),
        match old {
            Some(o) => format!(" (replaces {})", o.fingerprint()),
            None => String::new(),
        },
    )));
    Ok(())
}

async fn chat(opts: &Options, listen: Option<SocketAddr>, start: Start) -> anyhow::Result<()> {
    let settings_listen = Settings::load(&opts.profile)?.listen;
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("peer").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_override_the_profile_config() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_str().unwrap();
        let fp = proto::Identity::generate()
            .public()
            .fingerprint()
            .to_string();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "user = \"ali\"\ndirectory = \"192.0.2.1:8888\"\nlisten = \"127.0.0.1:7000\"\n\
                 directory_fingerprint = \"{fp}\"\npassword_file = \"secret.txt\"\n"
            ),
        )
        .unwrap();

        // The file alone.
        let (_, s) = effective_settings(&cli(&["--profile", p, "config", "print"]), None).unwrap();
        assert_eq!(s.user.as_deref(), Some("ali"));
        assert_eq!(s.listen, Some("127.0.0.1:7000".parse().unwrap()));
        let opts = options(&cli(&["--profile", p, "who"])).unwrap();
        assert_eq!(
            opts.directory_fingerprint.map(|f| f.to_string()),
            Some(fp.clone())
        );
        assert_eq!(
            opts.credentials.password_file,
            Some(dir.path().join("secret.txt")),
            "relative to the profile"
        );

        // Flags win.
        let args = [
            "--profile",
            p,
            "--user",
            "bob",
            "--directory",
            "192.0.2.2:9999",
            "--password-file",
            "/elsewhere",
            "config",
            "print",
            "--listen",
            "127.0.0.1:7001",
        ];
        let (_, s) =
            effective_settings(&cli(&args), Some("127.0.0.1:7001".parse().unwrap())).unwrap();
        assert_eq!(s.user.as_deref(), Some("bob"));
        assert_eq!(s.directory.as_deref(), Some("192.0.2.2:9999"));
        assert_eq!(s.listen, Some("127.0.0.1:7001".parse().unwrap()));
        assert_eq!(s.password_file, Some(PathBuf::from("/elsewhere")));

        // No file at all: defaults, and nothing is created.
        let empty = tempfile::tempdir().unwrap();
        let fresh = empty.path().join("profile");
        let (_, s) = effective_settings(
            &cli(&["--profile", fresh.to_str().unwrap(), "config", "print"]),
            None,
        )
        .unwrap();
        assert_eq!(s.listen, Some(DEFAULT_LISTEN.parse().unwrap()));
        assert_eq!(s.user, None);
        assert!(!fresh.exists());

        // A bad fingerprint in the file is named as such.
        std::fs::write(
            dir.path().join("config.toml"),
            "directory_fingerprint = \"nope\"\n",
        )
        .unwrap();
        let err = options(&cli(&["--profile", p, "who"])).err().unwrap();
        assert!(format!("{err:#}").contains("config.toml"), "{err:#}");
    }
}
