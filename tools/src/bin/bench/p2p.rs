//! Scenarios 1–3: one chat between two peers, on loopback, through a real directory.
//!
//! The two peers run on two separate tokio runtimes (two worker threads each), as two
//! `peer` processes would; they share the bench process only for measuring. Their only
//! link is UDP on 127.0.0.1. The directory is the child process.
//!
//! 1. connect: two real apps ([`peer::app::App`], the program a user runs); from the
//!    line `/connect NAME` typed into one, with a first message typed right after it,
//!    to that message's `Delivered` note.
//! 2. round trip: one open session; a 100-byte message, then wait for its
//!    acknowledgement; repeated.
//! 3. throughput: one session; 100-byte (then 16 KiB) messages sent back to back with up
//!    to `WINDOW` unacknowledged; counted when acknowledged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use peer::app::{App, Start};
use peer::calls::gate::{SOURCE_BURST, SOURCE_RATE};
use peer::chat::{ChatEvent, ChatEvents, ChatHandle};
use peer::login::{Credentials, Options};
use peer::ui::{Input, Note, Output};
use proto::Fingerprint;
use tokio::sync::{Semaphore, mpsc};
use zeroize::Zeroizing;

use crate::accounts;
use crate::chatpeer::{self, ChatPeer};

/// How long any single step may take before the scenario fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// A second runtime for "the other peer", like a second `peer` process.
pub fn other_runtime() -> anyhow::Result<OtherRuntime> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("other-peer")
        .enable_all()
        .build()?;
    Ok(OtherRuntime(Some(runtime)))
}

/// The other peer's runtime, shut down without waiting when dropped: dropping a runtime
/// inside the bench's async code would panic (and, on an early `?` return, hide the
/// error that caused it).
pub struct OtherRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for OtherRuntime {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime lives until dropped")
    }
}

impl Drop for OtherRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Notes into a channel.
struct ChannelOutput(mpsc::UnboundedSender<Note>);

impl Output for ChannelOutput {
    fn show(&self, note: &Note) {
        let _ = self.0.send(note.clone());
    }
}

/// A real app, driven by typed lines.
pub struct AppPeer {
    input: mpsc::Sender<Input>,
    notes: mpsc::UnboundedReceiver<Note>,
    _profile: tempfile::TempDir,
}

impl AppPeer {
    /// Logs `user` in (fresh profile) and starts the app on the current runtime.
    pub async fn start(user: &str, directory: SocketAddr, fp: Fingerprint) -> anyhow::Result<Self> {
        let profile = tempfile::tempdir()?;
        let opts = Options {
            profile: profile.path().to_path_buf(),
            directory: Some(directory.to_string()),
            directory_fingerprint: Some(fp),
            credentials: Credentials {
                user: Some(user.to_string()),
                password: Some(Zeroizing::new(accounts::PASSWORD.to_string())),
                password_file: None,
            },
            // The benchmark measures chat, not the vault's key derivation.
            vault_cost: peer::vault::VaultCost::insecure_fast(),
        };
        let online = peer::login::login(&opts, "127.0.0.1:0".parse()?)
            .await
            .with_context(|| format!("{user} logs in"))?;
        let (note_tx, notes) = mpsc::unbounded_channel();
        let (input, input_rx) = mpsc::channel(64);
        let app = App::new(online, Arc::new(ChannelOutput(note_tx)), false);
        tokio::spawn(app.run(input_rx, Start::Idle));
        Ok(Self {
            input,
            notes,
            _profile: profile,
        })
    }

    pub async fn say(&self, line: &str) -> anyhow::Result<()> {
        self.input
            .send(Input::Line(line.into()))
            .await
            .context("the app has stopped")
    }

    pub async fn wait(&mut self, what: &str, pred: impl Fn(&Note) -> bool) -> anyhow::Result<Note> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.notes.recv()).await {
                Ok(Some(note)) if pred(&note) => return Ok(note),
                Ok(Some(Note::ConnectFailed { reason, .. })) => {
                    anyhow::bail!("connect failed while waiting for {what}: {reason}")
                }
                Ok(Some(_)) => {}
                Ok(None) => anyhow::bail!("the app ended while waiting for {what}"),
                Err(_) => anyhow::bail!("timed out waiting for {what}"),
            }
        }
    }

    pub async fn quit(self) {
        let _ = self.input.send(Input::Eof).await;
    }
}

/// Scenario 1: `samples` times, `/connect` + a first message → `Delivered`, then `/end`.
pub async fn connect_time(
    other: &tokio::runtime::Runtime,
    directory: SocketAddr,
    fp: Fingerprint,
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    let (caller_name, callee_name) = (accounts::app_name(0), accounts::app_name(1));
    let mut callee = {
        let name = callee_name.clone();
        other
            .spawn(async move { AppPeer::start(&name, directory, fp).await })
            .await??
    };
    let mut caller = AppPeer::start(&caller_name, directory, fp).await?;
    let mut out = Vec::with_capacity(samples);
    let first = tokio::time::Instant::now();
    for i in 0..samples {
        // A listening peer takes a burst of calls from one address, then a few a second
        // (`peer::app::gate`); past the burst, calls are paced to that rate (outside the
        // measured time) so that none is refused as busy.
        let beyond_burst = (i + 2) as f64 - SOURCE_BURST;
        if beyond_burst > 0.0 {
            tokio::time::sleep_until(first + Duration::from_secs_f64(beyond_burst / SOURCE_RATE))
                .await;
        }
        let t0 = Instant::now();
        caller.say(&format!("/connect {callee_name}")).await?;
        caller.say(&format!("first message {i}")).await?;
        caller
            .wait(
                "the first message's delivery",
                |n| matches!(n, Note::Delivered { peer, .. } if *peer == callee_name),
            )
            .await?;
        out.push(t0.elapsed());
        caller.say("/end").await?;
        caller
            .wait("the end of the chat", |n| matches!(n, Note::Ended { .. }))
            .await?;
        callee
            .wait("the end of the chat (callee)", |n| {
                matches!(n, Note::Ended { .. })
            })
            .await?;
    }
    caller.quit().await;
    callee.quit().await;
    Ok(out)
}

/// An open session between two library-level peers (the acceptor on `other`).
pub struct Session {
    pub handle: ChatHandle,
    pub events: ChatEvents,
    a: Arc<ChatPeer>,
    b: Arc<ChatPeer>,
}

impl Session {
    /// Logs bulk users `first` and `first + 1` in and opens a chat from the first to the
    /// second.
    pub async fn open(
        other: &tokio::runtime::Runtime,
        first: usize,
        directory: SocketAddr,
        key: proto::PublicKey,
    ) -> anyhow::Result<Self> {
        let b = other
            .spawn(async move {
                let b = ChatPeer::login(first + 1, directory, key).await?;
                b.serve();
                anyhow::Ok(b)
            })
            .await??;
        let a = ChatPeer::login(first, directory, key).await?;
        let (handle, events) = a.open(&b.name).await?;
        Ok(Self {
            handle,
            events,
            a,
            b,
        })
    }

    /// Ends the chat and closes both endpoints; returns how many messages the acceptor
    /// showed (waiting for `expected`, bounded).
    pub async fn close(self, expected: u64) -> anyhow::Result<u64> {
        self.handle.close().await;
        let received = chatpeer::received(&self.b, expected).await;
        self.a.endpoint.close(0u32.into(), b"bye");
        self.b.endpoint.close(0u32.into(), b"bye");
        Ok(received)
    }
}

/// Scenario 2: `warmup` + `samples` round trips of a `size`-byte message.
pub async fn round_trips(
    s: &mut Session,
    size: usize,
    warmup: usize,
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    let text = "x".repeat(size);
    let mut out = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let t0 = Instant::now();
        let id = s.handle.send(&text).await?;
        tokio::time::timeout(STEP_TIMEOUT, chatpeer::delivered(&mut s.events, id))
            .await
            .context("no acknowledgement")??;
        if i >= warmup {
            out.push(t0.elapsed());
        }
    }
    Ok(out)
}

/// What a throughput run measured.
pub struct Throughput {
    /// Acknowledged messages in each `tick`.
    pub per_tick: Vec<u64>,
    pub tick: Duration,
    pub total: u64,
    pub elapsed: Duration,
}

/// Scenario 3: `size`-byte messages back to back for `duration`, at most `window`
/// unacknowledged, counted per `tick` as their acknowledgements arrive.
pub async fn throughput(
    s: &mut Session,
    size: usize,
    window: usize,
    duration: Duration,
    tick: Duration,
) -> anyhow::Result<Throughput> {
    let text = "y".repeat(size);
    let credits = Arc::new(Semaphore::new(window));
    let sender = {
        let handle = s.handle.clone();
        let credits = credits.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + duration;
            let mut sent = 0u64;
            while Instant::now() < deadline {
                credits.acquire().await?.forget();
                handle.send(&text).await?;
                sent += 1;
            }
            anyhow::Ok(sent)
        })
    };
    let start = Instant::now();
    let mut per_tick = Vec::new();
    let mut in_tick = 0u64;
    let mut next_tick = start + tick;
    let mut total = 0u64;
    let mut sent: Option<u64> = None;
    let mut sender = sender;
    loop {
        if let Some(sent) = sent
            && total >= sent
        {
            break;
        }
        tokio::select! {
            done = &mut sender, if sent.is_none() => sent = Some(done??),
            event = tokio::time::timeout(STEP_TIMEOUT, s.events.next()) => {
                match event.context("acknowledgements stopped")? {
                    Some(ChatEvent::Delivered { .. }) => {
                        credits.add_permits(1);
                        total += 1;
                        in_tick += 1;
                        let now = Instant::now();
                        while now >= next_tick {
                            per_tick.push(in_tick);
                            in_tick = 0;
                            next_tick += tick;
                        }
                    }
                    Some(ChatEvent::Ended { reason, .. }) => anyhow::bail!("chat ended: {reason}"),
                    Some(_) => {}
                    None => anyhow::bail!("chat events ended"),
                }
            }
        }
    }
    let elapsed = start.elapsed();
    // Only whole ticks while the sender was running count as samples.
    let whole = (duration.as_secs_f64() / tick.as_secs_f64()) as usize;
    per_tick.truncate(whole);
    Ok(Throughput {
        per_tick,
        tick,
        total,
        elapsed,
    })
}
