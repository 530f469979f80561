//! The app's sealed mail: what it handed to the outbox and still waits to hear about,
//! the inbox once it runs, and what mail reports mean for the user ([`Note`]s).
//!
//! The work itself (sealing, depositing, fetching, opening) runs in the mailbox's tasks
//! ([`crate::mailbox`]); this keeps the app's side of it: the order of pending messages
//! (the outbox reports them in the order they were handed over), and the history of
//! mail both ways.

use std::collections::VecDeque;
use std::path::Path;

use proto::sealed::StaticSecret;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::history::{self, HistoryWriter};
use crate::mailbox::{Inbox, MailContext, MailReport, Outbox};
use crate::ui::Note;

/// What one mail report means for the user.
pub(super) struct MailNotes {
    /// To show, in order. (Each [`Note::OfflineMessage`] is one private message that
    /// waited for us.)
    pub notes: Vec<Note>,
    /// Letters that waited for us are acknowledged at the directory only once shown:
    /// send on this after showing `notes`.
    pub shown: Option<oneshot::Sender<()>>,
}

impl From<Vec<Note>> for MailNotes {
    fn from(notes: Vec<Note>) -> Self {
        Self { notes, shown: None }
    }
}

/// The app's side of the sealed mailbox.
pub(super) struct Mail {
    /// Seals and queues messages for peers we cannot reach.
    outbox: Outbox,
    /// Messages handed to the outbox and not yet reported queued or failed, in order.
    pending: VecDeque<(String, String)>,
    /// Fetches what waited for us; started once the login is shown.
    inbox: Option<Inbox>,
    /// What the inbox needs to start.
    inbox_start: Option<(MailContext, Vec<StaticSecret>)>,
    /// Private messages, both ways, sealed into the profile (none if it has no vault).
    history: Option<HistoryWriter>,
}

impl Mail {
    /// Starts the outbox in `tasks`; the inbox waits for [`Mail::open_inbox`].
    pub fn start(
        ctx: MailContext,
        prekeys: Vec<StaticSecret>,
        history: Option<HistoryWriter>,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        Self {
            outbox: Outbox::start(ctx.clone(), tasks),
            pending: VecDeque::new(),
            inbox: None,
            inbox_start: Some((ctx, prekeys)),
            history,
        }
    }

    /// Starts fetching what waited for us (once).
    pub fn open_inbox(&mut self, profile: &Path, tasks: &mut JoinSet<()>) {
        if let Some((ctx, prekeys)) = self.inbox_start.take() {
            self.inbox = Some(Inbox::start(
                ctx,
                prekeys,
                self.history.clone(),
                profile,
                tasks,
            ));
        }
    }

    /// Looks for mail now (the directory says some waits, or we are back online).
    pub fn wake(&self) {
        if let Some(inbox) = &self.inbox {
            inbox.wake();
        }
    }

    /// Hands a private message for `peer` to the outbox; a note if it cannot take it.
    pub fn send(&mut self, peer: &str, text: String) -> Option<Note> {
        match self.outbox.send(peer, text.clone()) {
            Ok(()) => {
                self.pending.push_back((peer.to_string(), text));
                None
            }
            Err(text) => Some(Note::Undelivered {
                peer: peer.to_string(),
                text,
                reason: "too many offline messages waiting to be queued".into(),
            }),
        }
    }

    /// Whether messages handed to the outbox still wait for their outcome.
    pub fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Gives up on what still waits for the outbox (quitting): one note each.
    pub fn abandon(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(peer, text)| Note::Undelivered {
                peer,
                text,
                reason: "quit before it could be queued at the directory".into(),
            })
            .collect()
    }

    /// Records a private message in the history.
    pub fn record(&self, peer: &str, direction: history::Direction, text: &str, at_ms: u64) {
        if let Some(h) = &self.history {
            h.append(peer, direction, text, at_ms);
        }
    }

    /// Writes out what the history still holds.
    pub async fn flush(&self) {
        if let Some(h) = &self.history {
            h.flush().await;
        }
    }

    /// What a mail report means for the user.
    pub fn report(&mut self, report: MailReport) -> MailNotes {
        let notes = match report {
            MailReport::Queued { peer, text, id } => {
                self.pending.pop_front();
                self.record(
                    &peer,
                    history::Direction::OutOffline,
                    &text,
                    crate::clock::now_ms(),
                );
                vec![Note::Queued {
                    peer,
                    mail_id: id,
                    text,
                }]
            }
            MailReport::Failed { peer, text, reason } => {
                self.pending.pop_front();
                vec![Note::Undelivered { peer, text, reason }]
            }
            MailReport::Received { letters, shown } => {
                let notes = letters
                    .into_iter()
                    .map(|letter| {
                        self.record(
                            &letter.from,
                            history::Direction::InOffline,
                            &letter.text,
                            letter.sent_at_ms,
                        );
                        Note::OfflineMessage {
                            peer: letter.from,
                            sent_at_ms: letter.sent_at_ms,
                            text: letter.text,
                        }
                    })
                    .collect();
                return MailNotes {
                    notes,
                    shown: Some(shown),
                };
            }
            MailReport::Refused { reason } => vec![Note::Warning(reason)],
            MailReport::Receipts(receipts) => receipts
                .into_iter()
                .map(|r| Note::MailReceipt {
                    peer: r.to.into_string(),
                    mail_id: r.id,
                    delivered: r.delivered,
                })
                .collect(),
            MailReport::Trouble(why) => vec![Note::Warning(why)],
        };
        notes.into()
    }
}
