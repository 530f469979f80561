//! The audit trail: who registered, logged in, failed, got locked out, looked whom up,
//! and what the operator did.
//!
//! Each [`AuditEvent`] becomes a `tracing` event with target `audit` (so it shows on the
//! console and can be filtered with `RUST_LOG=audit=info`) and one line appended to
//! `<data>/audit.log` (mode 0600, rotated by size: `audit.log.1` ... `audit.log.N`, see
//! [`crate::rotating_file`]). Each event is also handed to an [`AuditObserver`] when one
//! is attached: that is how [`crate::metrics`] counts logins and lookups. The dependency
//! runs one way: this module owns the event type and the observer trait and knows nothing
//! of what observes it; the counters import the events, never the reverse.
//!
//! Strangers cannot flush the trail. What a connection that is not logged in gets
//! refused for that reason (a lookup, an administrator's request) is only counted
//! ([`AuditEvent::is_anonymous`]; [`crate::connection`] counts every such request in
//! `natter_anonymous_refused_total`), never written line by line. And security events ([`AuditEvent::is_security`]: failed logins and resumes,
//! lockouts, blocked sources, registrations, password and key changes, forced logouts,
//! administrator and operator actions) also go to `<data>/security.log`, rotated on its
//! own budget (the same size and count), so a logged-in user's flood of lookups cannot
//! rotate a failed login out of it either. The file is written by its own thread behind a bounded
//! queue, so recording never blocks a runtime thread; if the queue is ever full the line
//! is dropped from the file (the tracing event still goes out) and a warning says so.
//!
//! Never a password, a password hash or a ticket. User names that fail the name rules
//! (anyone can send any bytes as a name) are escaped and shortened, so a log line is
//! always one line.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use anyhow::Context;
use proto::PublicKey;

use crate::clock;
use crate::rotating_file::{RotatingFile, Rotation};

pub use crate::config::AUDIT_FILE;
/// File name of the security events' own log, beside the audit log.
pub const SECURITY_FILE: &str = "security.log";

/// Lines waiting for the writer thread at most.
const QUEUE: usize = 4096;

/// How long the writer thread rests after writing a batch; lines queue meanwhile (at
/// most [`QUEUE`]), so this bounds both the delay of a line and the writes per second.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Something worth an audit line. Fields mean the same everywhere: `user` is the account
/// name as the client sent it, `ip` the source address, `key` an identity key (logged as
/// its short fingerprint), `reason` a fixed word saying why something failed.
#[derive(Debug, Clone)]
pub enum AuditEvent {
    /// A peer created an account.
    Registered { user: String, ip: IpAddr },
    /// A registration was refused.
    RegisterRefused {
        user: String,
        ip: IpAddr,
        reason: &'static str,
    },
    /// A password login succeeded.
    LoginOk {
        user: String,
        ip: IpAddr,
        key: PublicKey,
    },
    /// A password login failed.
    LoginFailed {
        user: String,
        ip: IpAddr,
        reason: &'static str,
    },
    /// An account was locked after too many failures.
    AccountLocked { user: String, ip: IpAddr, secs: u64 },
    /// A source address was blocked after too many failures.
    SourceBlocked { ip: IpAddr, secs: u64 },
    /// An account's identity key was registered on its first login.
    KeyRegistered { user: String, key: PublicKey },
    /// A user changed their password.
    PasswordChanged { user: String, ip: IpAddr },
    /// A password change was refused (wrong old password, weak new one, locked).
    PasswordChangeFailed {
        user: String,
        ip: IpAddr,
        reason: &'static str,
    },
    /// A ticket login succeeded.
    Resumed { user: String, ip: IpAddr },
    /// A ticket login failed.
    ResumeFailed {
        user: String,
        ip: IpAddr,
        reason: &'static str,
    },
    /// A session ended on request.
    LoggedOut { user: String },
    /// A session was ended because the user logged in elsewhere or by the operator.
    ForcedLogout { user: String, reason: String },
    /// A lookup.
    Lookup {
        requester: Option<String>,
        target: String,
        found: bool,
    },
    /// An operator action (from the CLI or the library API).
    Admin { action: &'static str, user: String },
    /// A user joined or left a room.
    Room {
        user: String,
        room: String,
        joined: bool,
    },
    /// An administrator asked for an action from their peer session (and may).
    AdminRequested {
        by: String,
        ip: IpAddr,
        action: &'static str,
        target: Option<String>,
    },
    /// Someone who may not asked for an administrator's action.
    AdminRefused {
        by: Option<String>,
        ip: IpAddr,
        action: &'static str,
        target: Option<String>,
    },
    /// The operator acted through the local control socket (`directory shutdown`,
    /// `directory user logout`).
    Operator {
        action: &'static str,
        target: Option<String>,
    },
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use AuditEvent::*;
        match self {
            Registered { user, ip } => write!(f, "register user={} ip={ip}", name(user)),
            Room { user, room, joined } => write!(
                f,
                "{} user={} room={}",
                if *joined { "room_join" } else { "room_leave" },
                name(user),
                name(room)
            ),
            RegisterRefused { user, ip, reason } => write!(
                f,
                "register_refused user={} ip={ip} reason={reason}",
                name(user)
            ),
            LoginOk { user, ip, key } => write!(
                f,
                "login_ok user={} ip={ip} key={}",
                name(user),
                key.fingerprint().short().replace(' ', "")
            ),
            LoginFailed { user, ip, reason } => write!(
                f,
                "login_failed user={} ip={ip} reason={reason}",
                name(user)
            ),
            AccountLocked { user, ip, secs } => {
                write!(f, "lockout user={} ip={ip} secs={secs}", name(user))
            }
            SourceBlocked { ip, secs } => write!(f, "source_blocked ip={ip} secs={secs}"),
            KeyRegistered { user, key } => write!(
                f,
                "key_registered user={} key={}",
                name(user),
                key.fingerprint().short().replace(' ', "")
            ),
            PasswordChanged { user, ip } => {
                write!(f, "password_changed user={} ip={ip}", name(user))
            }
            PasswordChangeFailed { user, ip, reason } => write!(
                f,
                "password_change_failed user={} ip={ip} reason={reason}",
                name(user)
            ),
            Resumed { user, ip } => write!(f, "resume_ok user={} ip={ip}", name(user)),
            ResumeFailed { user, ip, reason } => write!(
                f,
                "resume_failed user={} ip={ip} reason={reason}",
                name(user)
            ),
            LoggedOut { user } => write!(f, "logout user={}", name(user)),
            ForcedLogout { user, reason } => {
                write!(f, "forced_logout user={} reason={reason:?}", name(user))
            }
            Lookup {
                requester,
                target,
                found,
            } => write!(
                f,
                "lookup by={} target={} found={found}",
                requester.as_deref().map(name).unwrap_or_else(|| "-".into()),
                name(target)
            ),
            Admin { action, user } => write!(f, "admin action={action} user={}", name(user)),
            AdminRequested {
                by,
                ip,
                action,
                target,
            } => write!(
                f,
                "admin_request by={} ip={ip} action={action} target={}",
                name(by),
                target.as_deref().map(name).unwrap_or_else(|| "-".into())
            ),
            Operator { action, target } => write!(
                f,
                "operator action={action} target={}",
                target.as_deref().map(name).unwrap_or_else(|| "-".into())
            ),
            AdminRefused {
                by,
                ip,
                action,
                target,
            } => write!(
                f,
                "admin_refused by={} ip={ip} action={action} target={}",
                by.as_deref().map(name).unwrap_or_else(|| "-".into()),
                target.as_deref().map(name).unwrap_or_else(|| "-".into())
            ),
        }
    }
}

impl AuditEvent {
    /// A refusal for not being logged in: counted, never written to the files (anyone
    /// can send any number of them).
    pub fn is_anonymous(&self) -> bool {
        matches!(
            self,
            AuditEvent::Lookup {
                requester: None,
                ..
            } | AuditEvent::AdminRefused { by: None, .. }
        )
    }

    /// Worth keeping apart from routine traffic (see the module docs).
    pub fn is_security(&self) -> bool {
        use AuditEvent::*;
        match self {
            RegisterRefused { .. }
            | Registered { .. }
            | LoginFailed { .. }
            | AccountLocked { .. }
            | SourceBlocked { .. }
            | KeyRegistered { .. }
            | PasswordChanged { .. }
            | PasswordChangeFailed { .. }
            | ResumeFailed { .. }
            | ForcedLogout { .. }
            | Admin { .. }
            | AdminRequested { .. }
            | Operator { .. } => true,
            AdminRefused { by, .. } => by.is_some(),
            LoginOk { .. } | Resumed { .. } | LoggedOut { .. } | Lookup { .. } | Room { .. } => {
                false
            }
        }
    }
}

/// A line for the writer thread, and whether it goes to the security log too.
type Line = (String, bool);

/// A user name as it may appear in a log line: valid names as they are, anything else
/// escaped, quoted and cut to a few dozen characters.
fn name(user: &str) -> String {
    if proto::names::check_username(user).is_ok() {
        user.to_string()
    } else {
        let short: String = user.chars().take(40).collect();
        format!("{short:?}")
    }
}

/// Something that sees every recorded event, anonymous refusals included, before it is
/// written (the directory's counters, [`crate::metrics::Metrics`]). Called on the
/// recording task: it must not block.
pub trait AuditObserver: Send + Sync + 'static {
    /// One event, as recorded.
    fn observe(&self, event: &AuditEvent);
}

/// Records audit events to tracing and to the audit log file.
pub struct Audit {
    lines: Mutex<Option<SyncSender<Line>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Sees every event (see [`Audit::attach_observer`]).
    observer: OnceLock<Arc<dyn AuditObserver>>,
}

impl fmt::Debug for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Audit")
    }
}

impl Audit {
    /// Appends to the audit log at `path` (created 0600 if missing), rotated by the
    /// default [`Rotation`].
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Self::open_with(path, Rotation::default())
    }

    /// Appends to the audit log at `path` and to [`SECURITY_FILE`] beside it (created
    /// 0600 if missing), each rotated by size as `rotation` says.
    pub fn open_with(path: &Path, rotation: Rotation) -> anyhow::Result<Self> {
        let mut file = RotatingFile::open(path, rotation)
            .with_context(|| format!("cannot open audit log {}", path.display()))?;
        let security_path = path.with_file_name(SECURITY_FILE);
        let mut security = RotatingFile::open(&security_path, rotation)
            .with_context(|| format!("cannot open security log {}", security_path.display()))?;
        let (tx, rx) = sync_channel::<Line>(QUEUE);
        let writer = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || {
                // Lines are written in batches: whatever is queued, then a short pause
                // while more queue up. A busy directory (every lookup is audited) then
                // costs one write and one wake-up per batch instead of one per line.
                let mut batch = Vec::with_capacity(64 * 1024);
                let mut secure = Vec::new();
                while let Ok(first) = rx.recv() {
                    batch.clear();
                    secure.clear();
                    let add =
                        |(line, is_security): Line, all: &mut Vec<u8>, secure: &mut Vec<u8>| {
                            all.extend_from_slice(line.as_bytes());
                            if is_security {
                                secure.extend_from_slice(line.as_bytes());
                            }
                        };
                    add(first, &mut batch, &mut secure);
                    while batch.len() < 64 * 1024
                        && let Ok(line) = rx.try_recv()
                    {
                        add(line, &mut batch, &mut secure);
                    }
                    if let Err(e) = file.write(&batch) {
                        tracing::error!("cannot write the audit log: {e}");
                    }
                    if !secure.is_empty()
                        && let Err(e) = security.write(&secure)
                    {
                        tracing::error!("cannot write the security log: {e}");
                    }
                    std::thread::sleep(BATCH_PAUSE);
                }
                let _ = file.sync();
                let _ = security.sync();
            })
            .context("cannot start the audit writer")?;
        Ok(Self {
            lines: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            observer: OnceLock::new(),
        })
    }

    /// Hands every later event to `observer` too (the directory's counters, which the
    /// status page and `/metrics` read). Only the first call has an effect.
    pub fn attach_observer(&self, observer: Arc<dyn AuditObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Records one event (an anonymous refusal is only counted).
    pub fn record(&self, event: AuditEvent) {
        if let Some(observer) = self.observer.get() {
            observer.observe(&event);
        }
        if event.is_anonymous() {
            tracing::debug!(target: "audit", "{event}");
            return;
        }
        let is_security = event.is_security();
        let line = event.to_string();
        tracing::info!(target: "audit", "{line}");
        let sender = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = sender.as_ref() {
            let stamped = format!("{} {line}\n", clock::format_utc(clock::unix_now()));
            match tx.try_send((stamped, is_security)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    tracing::warn!("audit log queue full; a line was not written to the file")
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Writes out queued lines and closes the file. Later events only go to tracing.
    pub async fn close(&self) {
        drop(self.lines.lock().unwrap_or_else(|e| e.into_inner()).take());
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_reach_the_file_without_secrets_or_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let audit = Audit::open(&path).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        audit.record(AuditEvent::LoginFailed {
            user: "ali".into(),
            ip,
            reason: "bad_password",
        });
        audit.record(AuditEvent::LoginFailed {
            user: "evil\nadmin action=remove".into(),
            ip,
            reason: "bad_credentials",
        });
        audit.close().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("login_failed user=ali ip=192.0.2.7 reason=bad_password"));
        assert!(
            lines[1].contains(r#"user="evil\nadmin action=remove""#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn security_events_keep_their_own_log_and_strangers_are_only_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let audit = Audit::open_with(
            &path,
            Rotation {
                max_bytes: 1000,
                keep: 1,
            },
        )
        .unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        audit.attach_observer(metrics.clone());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        audit.record(AuditEvent::LoginFailed {
            user: "ali".into(),
            ip,
            reason: "bad_password",
        });
        for i in 0..100 {
            audit.record(AuditEvent::Lookup {
                requester: None,
                target: format!("u{i}"),
                found: false,
            });
            audit.record(AuditEvent::Lookup {
                requester: Some("bianca".into()),
                target: format!("u{i}"),
                found: false,
            });
        }
        audit.close().await;
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        let trail = read(AUDIT_FILE) + &read("audit.log.1");
        assert!(
            !trail.contains("lookup by=- "),
            "a stranger's lookup was written"
        );
        let security = read(SECURITY_FILE);
        assert!(security.contains("login_failed user=ali"), "{security}");
        assert!(!security.contains("lookup"), "{security}");
        assert_eq!(
            crate::metrics::Metrics::get(&metrics.lookups),
            200,
            "all counted"
        );
    }
}
