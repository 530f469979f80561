//! Sealed mail from the peer's side: messages for users who are offline.
//!
//! **Sending** ([`Outbox`]): when a message cannot reach its recipient directly (they
//! are not online, or cannot be reached), the app hands it here. One task takes the
//! messages in order: it asks the directory for the recipient's identity key and prekey,
//! checks the identity key against our pin (pinning it on first contact, refusing a
//! changed one, as for chats) and the prekey's signature, seals the message
//! ([`proto::sealed::seal`]) and deposits it. The app hears [`MailReport::Queued`] or
//! [`MailReport::Failed`] for each message, in order: nothing is dropped silently. A
//! directory that is unreachable for a moment (restarting) is retried for
//! [`RETRY_FOR`] before a message is reported as not sent.
//!
//! **Receiving** ([`Inbox`]): woken at login, after a re-login, and whenever the
//! directory says mail is waiting. It fetches the mail, opens each message with our
//! prekey secrets, checks the sender's key against our pin (or, for a first contact,
//! against the key the directory has registered for them), hands the messages to the
//! app and waits until the app has shown them and written them to the history, and only
//! then acknowledges them, so that the directory deletes them. A crash in between means
//! the messages come again at the next login, and a directory may hand out an old blob
//! again (a lost acknowledgement, or on purpose): [`SeenMail`], kept in the profile
//! across restarts, recognises each message already shown (by sender and sealed message
//! id) and drops the copy, so nothing is ever shown twice. The set is bounded
//! ([`SeenMail::MAX`]); a message older than the oldest one it still remembers cannot be
//! told apart from a replay and is dropped with a notice.
//!
//! **Receipts**: the directory keeps a receipt for each deposit that was delivered or
//! expired; the inbox collects them (at login, and when the directory says there are
//! some) and the app shows "delivered" or "expired".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use proto::message::{ErrorCode, MailReceipt};
use proto::names::UserName;
use proto::sealed::{self, StaticSecret};
use proto::{Identity, PublicKey};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::directory_client::ClientError;
use crate::history::HistoryWriter;
use crate::link::Link;
use crate::pins::{PinCheck, Pins};
use crate::ui::printable;

/// How long a message waits for an unreachable directory before it is reported unsent.
pub const RETRY_FOR: Duration = Duration::from_secs(30);
/// Most messages waiting for the outbox task.
const OUTBOX_QUEUE: usize = 1024;

/// What the mail tasks tell the app.
#[derive(Debug)]
pub enum MailReport {
    /// A message is stored at the directory for `peer` (as mail `id`).
    Queued { peer: String, text: String, id: u64 },
    /// A message could not be queued; `reason` says why, for the user.
    Failed {
        peer: String,
        text: String,
        reason: String,
    },
    /// Messages that waited for us. Send on `shown` once they are shown and recorded:
    /// only then are they acknowledged (deleted at the directory).
    Received {
        letters: Vec<Received>,
        shown: oneshot::Sender<()>,
    },
    /// A sealed message that could not be opened or trusted (dropped).
    Refused { reason: String },
    /// What became of messages we deposited.
    Receipts(Vec<MailReceipt>),
    /// The mailbox could not be read (the directory failed); tried again later.
    Trouble(String),
}

/// A message that waited for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub from: String,
    pub text: String,
    /// The sender's clock, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// The sealed message id (the sender's random id).
    pub id: [u8; 16],
}

/// What both mail tasks need.
#[derive(Clone)]
pub struct MailContext {
    pub link: Arc<Link>,
    pub identity: Arc<Identity>,
    pub me: UserName,
    pub pins: Arc<Mutex<Pins>>,
    pub reports: mpsc::Sender<MailReport>,
}

/// The sending side: messages go in, [`MailReport::Queued`] / `Failed` come out.
pub struct Outbox {
    jobs: mpsc::Sender<(String, String)>,
}

impl Outbox {
    /// Starts the outbox task in `tasks` (it ends when they are aborted, or with the app).
    pub fn start(ctx: MailContext, tasks: &mut JoinSet<()>) -> Self {
        let (jobs, mut rx) = mpsc::channel::<(String, String)>(OUTBOX_QUEUE);
        tasks.spawn(async move {
            while let Some((peer, text)) = rx.recv().await {
                let report = match send(&ctx, &peer, &text).await {
                    Ok(id) => MailReport::Queued { peer, text, id },
                    Err(reason) => MailReport::Failed { peer, text, reason },
                };
                if ctx.reports.send(report).await.is_err() {
                    return;
                }
            }
        });
        Self { jobs }
    }

    /// Queues `text` for `peer`. `Err` gives the message back when the queue is full.
    pub fn send(&self, peer: &str, text: String) -> Result<(), String> {
        self.jobs
            .try_send((peer.to_string(), text))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full((_, t))
                | mpsc::error::TrySendError::Closed((_, t)) => t,
            })
    }
}

/// Whether an error may go away by itself (the directory is restarting, the link is
/// logging back in).
fn transient(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Lost(_)
            | ClientError::Timeout
            | ClientError::Unreachable(_)
            | ClientError::Server {
                code: ErrorCode::Internal | ErrorCode::RateLimited | ErrorCode::NotLoggedIn,
                ..
            }
    )
}

/// Runs `op` until it succeeds, fails for good, or [`RETRY_FOR`] has passed.
async fn retrying<T, F, Fut>(mut op: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + RETRY_FOR;
    let mut delay = Duration::from_millis(200);
    loop {
        match op().await {
            Err(e) if transient(&e) && Instant::now() + delay < deadline => {
                tracing::debug!(error = %e, "directory unavailable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Seals `text` for `peer` and deposits it; the mail id, or why not.
async fn send(ctx: &MailContext, peer: &str, text: &str) -> Result<u64, String> {
    let peer = &UserName::parse(peer).map_err(|e| format!("{}: {e}", printable(peer)))?;
    let found = retrying(|| ctx.link.fetch_prekey(peer))
        .await
        .map_err(|e| format!("could not queue it at the directory: {e}"))?;
    let Some((key, prekey)) = found else {
        return Err(unknown(peer));
    };
    check_pin(&ctx.pins, peer, &key)?;
    let Some(prekey) = prekey else {
        return Err(format!(
            "{peer} is offline and has not logged in since offline messages were possible"
        ));
    };
    let (blob, _) = sealed::seal(
        &ctx.identity,
        &ctx.me,
        peer,
        &key,
        &prekey,
        text,
        crate::clock::now_ms(),
    )
    .map_err(|e| format!("cannot seal it: {e}"))?;
    match retrying(|| ctx.link.deposit(peer, blob.clone())).await {
        Ok(Some((id, _))) => Ok(id),
        Ok(None) => Err(unknown(peer)),
        Err(ClientError::Server {
            code: ErrorCode::MailboxFull,
            message,
        }) => Err(message),
        Err(e) => Err(format!("could not queue it at the directory: {e}")),
    }
}

fn unknown(peer: &str) -> String {
    format!("{peer} is unknown to the directory (no such account, or it has never logged in)")
}

/// The pin rule for mail: a pinned key must match; an unknown one is pinned.
fn check_pin(pins: &Mutex<Pins>, peer: &UserName, key: &PublicKey) -> Result<(), String> {
    let mut pins = pins.lock().map_err(|_| "pin store poisoned".to_string())?;
    match pins.check(peer, key) {
        PinCheck::Match => Ok(()),
        PinCheck::New => pins
            .pin(peer, *key)
            .map_err(|e| format!("could not pin {peer}'s key: {e}")),
        PinCheck::Changed { pinned } => Err(format!(
            "{peer}'s key has CHANGED: pinned {}, the directory now gives {}. This may be an attack; \
             nothing was sent. If {peer} really has a new key (ask them), run `/trust {peer}` once they are online.",
            pinned.fingerprint().short(),
            key.fingerprint().short()
        )),
    }
}

/// The receiving side: fetches mail and receipts whenever woken.
#[derive(Clone)]
pub struct Inbox {
    wake: Arc<Notify>,
}

impl Inbox {
    /// Starts the inbox task in `tasks`; it looks for mail at once.
    /// Messages already shown are remembered in `profile` ([`SeenMail`]).
    pub fn start(
        ctx: MailContext,
        prekeys: Vec<StaticSecret>,
        history: Option<HistoryWriter>,
        profile: &Path,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let task_wake = wake.clone();
        let mut seen = SeenMail::load(profile);
        tasks.spawn(async move {
            if let Some(why) = seen.damaged.take() {
                let _ = ctx.reports.send(MailReport::Trouble(why)).await;
            }
            loop {
                if !fetch(&ctx, &prekeys, history.as_ref(), &mut seen).await {
                    return;
                }
                match ctx.link.mail_receipts().await {
                    Ok(receipts) if receipts.is_empty() => {}
                    Ok(receipts) => {
                        if ctx
                            .reports
                            .send(MailReport::Receipts(receipts))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot collect mail receipts"),
                }
                task_wake.notified().await;
            }
        });
        Self { wake }
    }

    /// Asks the inbox to look for mail and receipts (again).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Fetches, opens and hands over everything waiting; acknowledges what the app has
/// shown. `false` when the app is gone.
async fn fetch(
    ctx: &MailContext,
    prekeys: &[StaticSecret],
    history: Option<&HistoryWriter>,
    seen: &mut SeenMail,
) -> bool {
    let my_key = ctx.identity.public();
    loop {
        let (items, more) = match ctx.link.fetch_mail().await {
            Ok(batch) => batch,
            Err(e) => {
                let _ = ctx
                    .reports
                    .send(MailReport::Trouble(format!(
                        "could not fetch offline messages: {e}"
                    )))
                    .await;
                return true;
            }
        };
        if items.is_empty() {
            return true;
        }
        let mut letters = Vec::new();
        let mut ack = Vec::new();
        for item in items {
            match open_one(ctx, prekeys, &my_key, &item.blob).await {
                Opened::Letter(letter) => {
                    ack.push(item.id);
                    let again = letters
                        .iter()
                        .any(|l: &Received| l.from == letter.from && l.id == letter.id);
                    match seen.check(&letter) {
                        Seen::New if !again => letters.push(letter),
                        Seen::New | Seen::Shown => {
                            tracing::debug!(from = %letter.from, "offline message shown before; dropped");
                        }
                        Seen::TooOld => {
                            let reason = format!(
                                "an offline message from {} dated {} is older than any this profile remembers showing, \
                                 so it may be a replay; dropped",
                                letter.from,
                                crate::ui::utc(letter.sent_at_ms)
                            );
                            if ctx
                                .reports
                                .send(MailReport::Refused { reason })
                                .await
                                .is_err()
                            {
                                return false;
                            }
                        }
                    }
                }
                Opened::Refused(reason) => {
                    ack.push(item.id);
                    if ctx
                        .reports
                        .send(MailReport::Refused { reason })
                        .await
                        .is_err()
                    {
                        return false;
                    }
                }
                // Could not check it now (the directory is away): leave it for later.
                Opened::Later => {}
            }
        }
        if !letters.is_empty() {
            let (shown, was_shown) = oneshot::channel();
            if ctx
                .reports
                .send(MailReport::Received {
                    letters: letters.clone(),
                    shown,
                })
                .await
                .is_err()
                || was_shown.await.is_err()
            {
                return false;
            }
            if let Some(h) = history {
                h.flush().await;
            }
            // Remembered before the acknowledgement: whatever the directory hands out
            // again from now on is recognised.
            if let Err(e) = seen.record(&letters) {
                tracing::warn!("could not remember the offline messages shown: {e}");
            }
        }
        if !ack.is_empty()
            && let Err(e) = ctx.link.ack_mail(ack).await
        {
            tracing::debug!(error = %e, "could not acknowledge mail; it comes again");
            return true;
        }
        if !more {
            return true;
        }
    }
}

enum Opened {
    Letter(Received),
    Refused(String),
    Later,
}

async fn open_one(
    ctx: &MailContext,
    prekeys: &[StaticSecret],
    my_key: &PublicKey,
    blob: &[u8],
) -> Opened {
    let target = match sealed::sealed_to(blob) {
        Ok(t) => t,
        Err(e) => return Opened::Refused(format!("an offline message was dropped: {e}")),
    };
    let Some(secret) = prekeys.iter().find(|k| sealed::prekey_public(k) == target) else {
        return Opened::Refused(
            "an offline message was sealed to a key this profile no longer has; dropped".into(),
        );
    };
    let letter = match sealed::open(blob, &ctx.me, my_key, secret) {
        Ok(l) => l,
        Err(e) => return Opened::Refused(format!("an offline message was dropped: {e}")),
    };
    let pinned = match ctx.pins.lock() {
        Ok(pins) => Some(pins.check(&letter.from, &letter.from_key)),
        Err(_) => None,
    };
    match pinned {
        Some(PinCheck::Match) => {}
        Some(PinCheck::Changed { pinned }) => {
            return Opened::Refused(format!(
                "an offline message claiming to be from {} is signed by key {}, not the pinned {}; dropped",
                letter.from,
                letter.from_key.fingerprint().short(),
                pinned.fingerprint().short()
            ));
        }
        Some(PinCheck::New) | None => {
            // First contact: the key must be the one the directory has for that name.
            match ctx.link.fetch_prekey(&letter.from).await {
                Ok(Some((key, _))) if key == letter.from_key => {
                    if let Ok(mut pins) = ctx.pins.lock()
                        && let Err(e) = pins.pin(&letter.from, key)
                    {
                        tracing::warn!("could not pin {}'s key: {e}", letter.from);
                    }
                }
                Ok(_) => {
                    return Opened::Refused(format!(
                        "an offline message claiming to be from {} is not signed by {}'s registered key; dropped",
                        letter.from, letter.from
                    ));
                }
                Err(_) => return Opened::Later,
            }
        }
    }
    Opened::Letter(Received {
        from: letter.from.into_string(),
        text: letter.text,
        sent_at_ms: letter.sent_at_ms,
        id: letter.id,
    })
}

/// Whether an offline message was shown before (see [`SeenMail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    Shown,
    /// Older than anything the set still remembers: cannot be told apart from a replay.
    TooOld,
}

/// Offline messages already shown, kept in the profile (file [`SeenMail::FILE`]) so that
/// a re-delivered blob is recognised across restarts. Each entry is a hash of the
/// sender's name and the sealed message id (the file says nothing about who wrote) and
/// the sender's timestamp. At most [`SeenMail::MAX`] entries: the oldest by timestamp go
/// first, and the newest timestamp gone becomes the *horizon*, below which every message
/// counts as [`Seen::TooOld`].
#[derive(Debug)]
pub struct SeenMail {
    path: PathBuf,
    entries: HashMap<[u8; 32], u64>,
    horizon: u64,
    /// Why the file could not be read, to tell the user once (it starts afresh).
    damaged: Option<String>,
}

impl SeenMail {
    /// The file in the profile.
    pub const FILE: &'static str = "mail_seen";
    /// Most messages remembered.
    pub const MAX: usize = 10_000;

    /// The set kept in `profile` (empty when there is none yet or it is damaged).
    pub fn load(profile: &Path) -> Self {
        let path = profile.join(Self::FILE);
        let mut seen = Self {
            path,
            entries: HashMap::new(),
            horizon: 0,
            damaged: None,
        };
        let text = match std::fs::read_to_string(&seen.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return seen,
            Err(e) => {
                seen.damaged = Some(format!("cannot read {}: {e}", seen.path.display()));
                return seen;
            }
        };
        if let Err(line) = seen.parse(&text) {
            seen.damaged = Some(format!(
                "{} line {line} is damaged: offline messages shown before may be shown again",
                seen.path.display()
            ));
            seen.entries.clear();
        }
        seen
    }

    /// Reads `horizon MS` and `HEXHASH MS` lines; `Err` names the first bad line.
    fn parse(&mut self, text: &str) -> Result<(), usize> {
        for (i, line) in text.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                [w, ..] if w.starts_with('#') => {}
                ["horizon", ms] => self.horizon = ms.parse().map_err(|_| i + 1)?,
                [hash, ms] => {
                    let hash: [u8; 32] = proto::hex::decode(hash)
                        .and_then(|b| b.try_into().ok())
                        .ok_or(i + 1)?;
                    self.entries.insert(hash, ms.parse().map_err(|_| i + 1)?);
                }
                _ => return Err(i + 1),
            }
        }
        Ok(())
    }

    fn key(from: &str, id: &[u8; 16]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"natter-mail-seen-v1");
        h.update((from.len() as u64).to_be_bytes());
        h.update(from.as_bytes());
        h.update(id);
        h.finalize().into()
    }

    /// Whether `letter` was shown before.
    pub fn check(&self, letter: &Received) -> Seen {
        if self
            .entries
            .contains_key(&Self::key(&letter.from, &letter.id))
        {
            Seen::Shown
        } else if letter.sent_at_ms < self.horizon {
            Seen::TooOld
        } else {
            Seen::New
        }
    }

    /// Remembers `letters` as shown and saves the set.
    pub fn record(&mut self, letters: &[Received]) -> std::io::Result<()> {
        for l in letters {
            self.entries.insert(Self::key(&l.from, &l.id), l.sent_at_ms);
        }
        if self.entries.len() > Self::MAX {
            let mut by_age: Vec<([u8; 32], u64)> =
                self.entries.iter().map(|(k, ms)| (*k, *ms)).collect();
            by_age.sort_by_key(|(_, ms)| *ms);
            let excess = self.entries.len() - Self::MAX;
            for (k, ms) in &by_age[..excess] {
                self.entries.remove(k);
                self.horizon = self.horizon.max(*ms);
            }
        }
        let mut text = format!(
            "# natter: offline messages already shown (hashed), so none is shown twice\nhorizon {}\n",
            self.horizon
        );
        for (k, ms) in &self.entries {
            text.push_str(&format!("{} {ms}\n", proto::hex::encode(k)));
        }
        crate::private_file::write_private(&self.path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(from: &str, id: u8, sent_at_ms: u64) -> Received {
        Received {
            from: from.into(),
            text: "hi".into(),
            sent_at_ms,
            id: [id; 16],
        }
    }

    #[test]
    fn shown_messages_are_recognised_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = SeenMail::load(dir.path());
        let a = letter("ali", 1, 1000);
        assert_eq!(seen.check(&a), Seen::New);
        seen.record(std::slice::from_ref(&a)).unwrap();
        assert_eq!(seen.check(&a), Seen::Shown);
        let seen = SeenMail::load(dir.path());
        assert!(seen.damaged.is_none());
        assert_eq!(seen.check(&a), Seen::Shown);
        // The same id from someone else is another message.
        assert_eq!(seen.check(&letter("bob", 1, 1000)), Seen::New);
    }

    #[test]
    fn the_set_is_bounded_and_older_messages_count_as_too_old() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = SeenMail::load(dir.path());
        let letters: Vec<Received> = (0..SeenMail::MAX as u64 + 5)
            .map(|i| Received {
                id: {
                    let mut id = [0u8; 16];
                    id[..8].copy_from_slice(&i.to_be_bytes());
                    id
                },
                ..letter("ali", 0, 10_000 + i)
            })
            .collect();
        seen.record(&letters).unwrap();
        assert_eq!(seen.entries.len(), SeenMail::MAX);
        let seen = SeenMail::load(dir.path());
        assert_eq!(seen.entries.len(), SeenMail::MAX);
        // The five oldest were forgotten: a copy of one of them cannot be told from a
        // replay, so it is refused rather than shown again.
        assert_eq!(seen.check(&letters[0]), Seen::TooOld);
        assert_eq!(seen.check(&letters[10]), Seen::Shown);
        assert_eq!(
            seen.check(&letter("bob", 9, 20_000 + SeenMail::MAX as u64)),
            Seen::New
        );
    }

    #[test]
    fn a_damaged_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SeenMail::FILE), "horizon x\n").unwrap();
        let seen = SeenMail::load(dir.path());
        assert!(seen.damaged.is_some());
    }
}
