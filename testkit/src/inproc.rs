//! The in-process directory and peers: what most end-to-end tests (`tests/*.rs`) and the
//! demo run.
//!
//! Everything here is real: a [`directory::Directory`] on 127.0.0.1 port 0 with its SQLite
//! file in a temporary directory, and peers that log in through the real protocol and
//! run the real [`peer::app::App`]. The only stand-in is the user: a [`TestPeer`] types
//! lines into the app and reads what the app shows them from a channel, with timeouts
//! instead of sleeps.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use peer::app::{App, Start};
use peer::login::{Credentials, Options};
use peer::ui::{Input, Note, Output};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::{PASSWORD, WAIT};

/// A directory on a temporary data directory, listening on 127.0.0.1 (random port).
pub struct TestDirectory {
    pub server: directory::Directory,
    pub data: tempfile::TempDir,
}

impl TestDirectory {
    /// Starts a directory with test-friendly settings (cheap password hashing).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts a directory, letting the caller adjust the configuration first.
    pub async fn start_with(adjust: impl FnOnce(&mut directory::Config)) -> anyhow::Result<Self> {
        Self::start_in(tempfile::tempdir()?, adjust).await
    }

    /// Like [`TestDirectory::start_with`], on a data directory the caller prepared (for
    /// example with another instance's `directory.key`).
    pub async fn start_in(
        data: tempfile::TempDir,
        adjust: impl FnOnce(&mut directory::Config),
    ) -> anyhow::Result<Self> {
        let config = Self::config(data.path(), adjust);
        // A directory stopped just before on the same port (a restart) releases its
        // socket in its endpoint's driver task, which runs once we yield: retry while
        // the port is still taken.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match directory::Directory::start(config.clone()).await {
                Ok(server) => return Ok(Self { server, data }),
                Err(e)
                    if config.listen.port() != 0
                        && port_taken(&e)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn config(
        path: &std::path::Path,
        adjust: impl FnOnce(&mut directory::Config),
    ) -> directory::Config {
        let mut config = directory::Config::new(path);
        config.listen = "127.0.0.1:0".parse().expect("loopback address");
        config.password_cost = directory::PasswordCost::insecure_fast();
        adjust(&mut config);
        config
    }

    /// Stops the directory and starts it again on the same data directory (same port).
    pub async fn restart(self) -> anyhow::Result<Self> {
        let addr = self.server.local_addr();
        let data = self.data;
        self.server.shutdown().await;
        Self::start_in(data, |c| c.listen = addr).await
    }

    /// The address peers dial.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    /// Adds accounts with [`PASSWORD`].
    pub async fn add_users(&self, names: &[&str]) -> anyhow::Result<()> {
        for name in names {
            self.server.add_user(name, PASSWORD, false).await?;
        }
        Ok(())
    }
}

/// Whether `e` says the listening address is in use.
fn port_taken(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// Sends every note into a channel (the test reads it).
pub struct ChannelOutput(mpsc::UnboundedSender<Note>);

impl Output for ChannelOutput {
    fn show(&self, note: &Note) {
        let _ = self.0.send(note.clone());
    }
}

/// Options for a peer with its own profile directory, logging in as `user`.
pub fn options(
    dir: &TestDirectory,
    profile: &std::path::Path,
    user: &str,
    password: &str,
) -> Options {
    options_at(&dir.addr().to_string(), profile, user, password)
}

/// Options for a peer with its own profile directory, using the `--directory` value
/// `directory`, logging in as `user`.
pub fn options_at(
    directory: &str,
    profile: &std::path::Path,
    user: &str,
    password: &str,
) -> Options {
    Options {
        profile: profile.to_path_buf(),
        directory: Some(directory.to_string()),
        directory_fingerprint: None,
        credentials: Credentials {
            user: Some(user.to_string()),
            password: Some(Zeroizing::new(password.to_string())),
            password_file: None,
        },
        // Tests exercise logic, not argon2 (a real vault takes seconds in a debug build).
        vault_cost: peer::vault::VaultCost::insecure_fast(),
    }
}

/// A logged-in peer running the real app, driven like a script would drive it.
pub struct TestPeer {
    pub name: String,
    pub profile: tempfile::TempDir,
    input: mpsc::Sender<Input>,
    notes: mpsc::UnboundedReceiver<Note>,
    /// Every note seen so far, for failure messages.
    pub seen: Vec<Note>,
    /// Notes received but not yet matched by an `expect` (order-insensitive waits).
    backlog: std::collections::VecDeque<Note>,
    task: tokio::task::JoinHandle<()>,
}

impl TestPeer {
    /// Logs `name` in (password [`PASSWORD`]) and starts the app.
    pub async fn start(dir: &TestDirectory, name: &str, start: Start) -> anyhow::Result<Self> {
        let profile = tempfile::tempdir()?;
        Self::start_in(dir, name, profile, start).await
    }

    /// Like [`TestPeer::start`], reusing a profile directory (pinned keys survive).
    pub async fn start_in(
        dir: &TestDirectory,
        name: &str,
        profile: tempfile::TempDir,
        start: Start,
    ) -> anyhow::Result<Self> {
        Self::start_at(&dir.addr().to_string(), name, profile, start).await
    }

    /// Like [`TestPeer::start_in`], with the `--directory` value given as is (for
    /// example several instances, `ADDR1,ADDR2`).
    pub async fn start_at(
        directory: &str,
        name: &str,
        profile: tempfile::TempDir,
        start: Start,
    ) -> anyhow::Result<Self> {
        let opts = options_at(directory, profile.path(), name, PASSWORD);
        let online = peer::login::login(&opts, "127.0.0.1:0".parse()?)
            .await
            .with_context(|| format!("{name} logs in"))?;
        let (note_tx, notes) = mpsc::unbounded_channel();
        let (input, input_rx) = mpsc::channel(256);
        let out = Arc::new(ChannelOutput(note_tx));
        let task = tokio::spawn(App::new(online, out, false).run(input_rx, start));
        Ok(Self {
            name: name.to_string(),
            profile,
            input,
            notes,
            seen: Vec::new(),
            backlog: Default::default(),
            task,
        })
    }

    /// Types one line (a message or a slash command).
    pub async fn say(&self, line: &str) {
        self.input
            .send(Input::Line(line.to_string()))
            .await
            .expect("app is running");
    }

    /// Presses Ctrl-C.
    pub async fn interrupt(&self) {
        self.input
            .send(Input::Interrupt)
            .await
            .expect("app is running");
    }

    /// Waits for the first note matching `pred`, whether it already arrived (and was not
    /// matched by an earlier `expect`) or arrives within [`WAIT`].
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&Note) -> bool) -> Note {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i).expect("index in range");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.notes.recv()).await {
                Ok(Some(note)) => {
                    self.seen.push(note.clone());
                    if pred(&note) {
                        return note;
                    }
                    self.backlog.push_back(note);
                }
                Ok(None) => panic!(
                    "{}: app ended while waiting for {what}; seen: {:#?}",
                    self.name, self.seen
                ),
                Err(_) => panic!(
                    "{}: timed out waiting for {what}; seen: {:#?}",
                    self.name, self.seen
                ),
            }
        }
    }

    /// Waits for a message from `from` with exactly `text`.
    pub async fn expect_message(&mut self, from: &str, text: &str) {
        self.expect(
            &format!("message {text:?} from {from}"),
            |n| matches!(n, Note::Message { peer, text: t, .. } if peer == from && t == text),
        )
        .await;
    }

    /// Quits (end of input), waits for the app to finish logging out, and hands back
    /// the profile (to start the same user again on it).
    pub async fn quit(self) -> tempfile::TempDir {
        let _ = self.input.send(Input::Eof).await;
        let _ = tokio::time::timeout(WAIT, self.task).await;
        self.profile
    }

    /// Kills the peer abruptly: the app task is aborted, nothing is said to anyone.
    pub fn kill(self) {
        self.task.abort();
    }
}
