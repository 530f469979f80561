//! The sealed mailbox: messages for users who are offline, kept until they log in.
//!
//! The directory stores opaque blobs ([`proto::sealed`]): it never holds a key that opens
//! them. What it does learn, and keeps until the message is delivered or expires: who
//! deposited it (the logged-in sender), for whom, when, and its size. That is what it
//! needs to enforce quotas and to tell the sender what became of the message.
//!
//! ```text
//! sender                       directory                        recipient
//!   FetchPrekey{to}      ->    identity key + signed prekey
//!   Deposit{to, blob}    ->    stored (expiry, quota)  --MailWaiting-->  (if online)
//!                      <-      Queued{id}
//!                                                       <-  FetchMail (at login, on event)
//!                              Mail{items}              ->
//!                                                       <-  AckMail{ids}
//!                              blob deleted, receipt kept
//!            <--MailReceiptsWaiting-- (if online)
//!   MailReceipts         ->    Receipts{delivered | expired}, then forgotten
//! ```
//!
//! Delivery is at least once: a message is deleted only when the recipient acknowledges
//! it, so a recipient that dies between fetching and acknowledging gets it again (the
//! peer drops the duplicate by the sealed message id). The reply `Queued` is sent only
//! after the deposit is committed (SQLite, `synchronous=FULL`): a directory killed at any
//! moment after that still has the message when it restarts.
//!
//! Expiry: a message not delivered within [`MailboxPolicy::lifetime`] is deleted and its
//! sender gets an "expired" receipt; expired messages are never handed out, even before
//! the periodic purge deletes them. Receipts themselves are kept for another lifetime.
//! Quota: at most [`MailboxPolicy::max_messages`] messages and
//! [`MailboxPolicy::max_bytes`] bytes wait for one recipient, of which at most
//! [`MailboxPolicy::max_messages_per_sender`] messages and
//! [`MailboxPolicy::max_bytes_per_sender`] bytes from any one sender (one sender cannot
//! fill someone's mailbox), and at most [`MailboxPolicy::max_total_bytes`] bytes wait in
//! all; a deposit over any of them gets `Error{MailboxFull}` saying which. (With several
//! instances on PostgreSQL, the total may be exceeded by one message per instance
//! depositing at the same moment; the per-recipient quotas hold exactly.)

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::message::{ErrorCode, Event, MailItem, MailReceipt, Reply};
use proto::names::UserName;
use proto::sealed::{MAX_BLOB, SignedPrekey};

use crate::clock::unix_now;
use crate::presence::Presence;
use crate::shutdown::Shutdown;
use crate::state::Shared;
use crate::store::{DepositOutcome, NewMail, Store};

/// Most bytes of blobs one `Mail` reply carries (the frame limit is 64 KiB); a reply
/// always carries at least one message when any waits.
pub const FETCH_BATCH_BYTES: usize = 40 * 1024;
/// Most ids one `AckMail` may name.
pub const MAX_ACK_IDS: usize = 256;
/// Most messages one `Mail` reply carries (with [`FETCH_BATCH_BYTES`], this keeps the
/// reply well under the 64 KiB frame limit however small the blobs).
pub const FETCH_BATCH_ITEMS: usize = 256;
/// Events about mail for one user within this long are sent as one (see [`Nudges`]).
const NUDGE_DELAY: Duration = Duration::from_millis(100);
/// A prekey dated further in the future than this is refused (clock skew allowance).
const PREKEY_FUTURE_SLACK: i64 = 24 * 60 * 60;

pub use crate::config::MailboxPolicy;

impl MailboxPolicy {
    /// How often expired mail is purged: half the lifetime, between 1 s and 1 hour.
    pub fn purge_every(&self) -> Duration {
        (self.lifetime / 2).clamp(Duration::from_secs(1), Duration::from_secs(60 * 60))
    }

    fn lifetime_secs(&self) -> i64 {
        i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX / 4)
    }
}

/// Tells online users that mail or receipts wait, coalescing bursts: a flood of
/// deposits for one user (from one or many senders) becomes one `MailWaiting` per
/// [`NUDGE_DELAY`], not one event per message, so it can never fill that user's
/// notification queue (which would disconnect them). Each event is sent after every
/// change it stands for was committed, so the fetch it prompts sees them all.
#[derive(Debug, Default)]
pub struct Nudges {
    pending: Mutex<HashSet<(String, bool)>>,
}

impl Nudges {
    fn nudge(self: &Arc<Self>, presence: &Presence, user: &str, receipts: bool) {
        let key = (user.to_string(), receipts);
        if !self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone())
        {
            return;
        }
        let (nudges, presence) = (self.clone(), presence.clone());
        tokio::spawn(async move {
            tokio::time::sleep(NUDGE_DELAY).await;
            nudges
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            let event = if key.1 {
                Event::MailReceiptsWaiting
            } else {
                Event::MailWaiting
            };
            presence.notify(&[key.0], event);
        });
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply::Error {
        code,
        message: message.into(),
    }
}

fn not_logged_in() -> Reply {
    error(ErrorCode::NotLoggedIn, "log in first")
}

fn internal(e: impl std::fmt::Display) -> Reply {
    tracing::error!("mailbox storage error: {e}");
    error(ErrorCode::Internal, "storage error; try again")
}

/// `PublishPrekey`: keeps the prekey if the account's identity key signed it.
pub async fn publish_prekey(
    shared: &Shared,
    user: Option<&UserName>,
    prekey: SignedPrekey,
) -> Reply {
    let Some(user) = user else {
        return not_logged_in();
    };
    let identity = match shared.store.account(user).await {
        Ok(Some(account)) => account.identity,
        Ok(None) => None,
        Err(e) => return internal(e),
    };
    let Some(identity) = identity else {
        return error(ErrorCode::ProtocolViolation, "no identity key registered");
    };
    if prekey.verify(user, &identity).is_err() {
        return error(
            ErrorCode::ProtocolViolation,
            "the prekey is not signed by your identity key",
        );
    }
    if prekey.created_at > unix_now() + PREKEY_FUTURE_SLACK {
        return error(
            ErrorCode::ProtocolViolation,
            "the prekey is dated in the future",
        );
    }
    match shared.store.set_prekey(user, prekey).await {
        Ok(_) => Reply::PrekeyPublished,
        Err(e) => internal(e),
    }
}

/// `FetchPrekey`: the identity key and prekey of an account, online or not.
pub async fn fetch_prekey(shared: &Shared, requester: Option<&UserName>, user: &UserName) -> Reply {
    if requester.is_none() {
        return not_logged_in();
    }
    let not_found = || Reply::NotFound { user: user.clone() };
    let identity = match shared.store.account(user).await {
        Ok(Some(account)) => account.identity,
        Ok(None) => None,
        Err(e) => return internal(e),
    };
    let Some(identity) = identity else {
        return not_found();
    };
    match shared.store.prekey(user).await {
        Ok(prekey) => Reply::Prekey {
            user: user.clone(),
            identity,
            prekey,
        },
        Err(e) => internal(e),
    }
}

/// `Deposit`: stores a sealed blob for `to`, within the quota, and tells `to` if online.
pub async fn deposit(
    shared: &Shared,
    sender: Option<&UserName>,
    to: &UserName,
    blob: Vec<u8>,
) -> Reply {
    let Some(sender) = sender else {
        return not_logged_in();
    };
    if blob.is_empty() || blob.len() > MAX_BLOB {
        return error(
            ErrorCode::ProtocolViolation,
            format!("a sealed message must be 1 to {MAX_BLOB} bytes"),
        );
    }
    match shared.store.account(to).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Reply::NotFound { user: to.clone() };
        }
        Err(e) => return internal(e),
    }
    let policy = shared.config.mailbox;
    let now = unix_now();
    let mail = NewMail {
        recipient: to.to_string(),
        sender: sender.to_string(),
        blob,
        deposited_at: now,
        expires_at: now.saturating_add(policy.lifetime_secs()),
    };
    match shared.store.deposit_mail(mail, policy).await {
        Ok(DepositOutcome::Stored { id }) => {
            tracing::info!(id, to = to.as_str(), "sealed mail queued");
            shared.mail_nudges.nudge(&shared.presence, to, false);
            Reply::Queued {
                id,
                expires_in_secs: policy.lifetime.as_secs(),
            }
        }
        Ok(DepositOutcome::Full { messages, bytes }) => error(
            ErrorCode::MailboxFull,
            format!(
                "{to}'s mailbox is full ({messages} messages, {bytes} bytes waiting; at most {} messages and {} bytes): try again after {to} has logged in",
                policy.max_messages, policy.max_bytes
            ),
        ),
        Ok(DepositOutcome::SenderFull { messages, bytes }) => error(
            ErrorCode::MailboxFull,
            format!(
                "you already have {messages} messages ({bytes} bytes) waiting for {to}, the most one sender may (at most {} messages and {} bytes): try again after {to} has logged in",
                policy.max_messages_per_sender, policy.max_bytes_per_sender
            ),
        ),
        Ok(DepositOutcome::StoreFull) => error(
            ErrorCode::MailboxFull,
            "the directory's mail store is full: try again later",
        ),
        Err(e) => internal(e),
    }
}

/// `FetchMail`: what waits for `user`, oldest first, one reply's worth.
pub async fn fetch(shared: &Shared, user: Option<&UserName>) -> Reply {
    let Some(user) = user else {
        return not_logged_in();
    };
    match shared
        .store
        .waiting_mail(user, unix_now(), FETCH_BATCH_BYTES)
        .await
    {
        Ok((mut items, more)) => {
            let more = more || items.len() > FETCH_BATCH_ITEMS;
            items.truncate(FETCH_BATCH_ITEMS);
            Reply::Mail {
                items: items
                    .into_iter()
                    .map(|m| MailItem {
                        id: m.id,
                        deposited_at: m.deposited_at,
                        blob: m.blob,
                    })
                    .collect(),
                more,
            }
        }
        Err(e) => internal(e),
    }
}

/// `AckMail`: deletes what `user` received and tells the senders who are online.
pub async fn ack(shared: &Shared, user: Option<&UserName>, ids: Vec<u64>) -> Reply {
    let Some(user) = user else {
        return not_logged_in();
    };
    if ids.len() > MAX_ACK_IDS {
        return error(
            ErrorCode::ProtocolViolation,
            format!("at most {MAX_ACK_IDS} ids per AckMail"),
        );
    }
    let now = unix_now();
    let keep_until = now.saturating_add(shared.config.mailbox.lifetime_secs());
    match shared.store.ack_mail(user, ids, now, keep_until).await {
        Ok(senders) => {
            let count = senders.len() as u32;
            notify_senders(&shared.mail_nudges, &shared.presence, senders);
            Reply::MailAcked { count }
        }
        Err(e) => internal(e),
    }
}

/// `MailReceipts`: what became of `user`'s deposits since they last asked.
pub async fn receipts(shared: &Shared, user: Option<&UserName>) -> Reply {
    let Some(user) = user else {
        return not_logged_in();
    };
    match shared.store.take_receipts(user).await {
        Ok(receipts) => Reply::Receipts {
            receipts: receipts
                .into_iter()
                // A stored recipient was a valid name when deposited; one that is not
                // (a database edited by hand) is left out rather than sent.
                .filter_map(|r| {
                    Some(MailReceipt {
                        id: r.id,
                        to: UserName::try_from(r.recipient).ok()?,
                        delivered: r.delivered,
                    })
                })
                .collect(),
        },
        Err(e) => internal(e),
    }
}

fn notify_senders(nudges: &Arc<Nudges>, presence: &Presence, mut senders: Vec<String>) {
    senders.sort();
    senders.dedup();
    for sender in senders {
        nudges.nudge(presence, &sender, true);
    }
}

/// Purges expired mail every [`MailboxPolicy::purge_every`] until shutdown, telling
/// senders who are online that they have receipts.
pub async fn maintenance(
    store: Arc<dyn Store>,
    presence: Presence,
    nudges: Arc<Nudges>,
    policy: MailboxPolicy,
    mut shutdown: Shutdown,
) {
    let mut every = tokio::time::interval(policy.purge_every());
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = every.tick() => {
                let now = unix_now();
                let keep_until = now.saturating_add(policy.lifetime_secs());
                match store.expire_mail(now, keep_until).await {
                    Ok(senders) if senders.is_empty() => {}
                    Ok(senders) => {
                        tracing::info!("{} sealed messages expired undelivered", senders.len());
                        notify_senders(&nudges, &presence, senders);
                    }
                    Err(e) => tracing::debug!("cannot purge expired mail: {e}"),
                }
            }
        }
    }
}
