//! The operator's way into a running directory from the same machine: a Unix socket at
//! `<data>/control.sock`, used by `directory shutdown` and `directory user logout|lock|
//! remove|reset-key` to act on the live server (account changes themselves go straight
//! to the database; what needs the running process — ending a session, stopping — comes
//! here).
//!
//! Who may: whoever can open the socket. It is created 0600 inside the 0700 data
//! directory, so that is the account the directory runs as (and root), which can read
//! the database and the key anyway. Every request is audited.
//!
//! Protocol: one request line, one reply line, then the server closes.
//!
//! ```text
//! ping                    -> ok pong
//! logout NAME [REASON...] -> ok logged NAME out | ok NAME is not online
//! locked NAME [REASON...] -> ok ended ...; cannot end: ...  (the account was locked:
//!                            rooms, relay, session; see admin_requests::end_locked)
//! removed NAME            -> ok forgot NAME   (the account is gone: rooms, session)
//! shutdown                -> ok shutting down
//! (anything else)         -> error unknown request: ...
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proto::names::UserName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::audit::AuditEvent;
use crate::shutdown::Shutdown;
use crate::state::Shared;

pub use crate::config::SOCKET_FILE;
/// Longest request line accepted.
const MAX_LINE: u64 = 1024;
/// How long one client may take to send its line.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// What peers are told when the operator shuts the directory down.
pub const SHUTDOWN_BY_OPERATOR: &str = "directory shut down by the operator";
/// What a user is told when the operator ends their session without a reason.
pub const LOGGED_OUT_BY_OPERATOR: &str = "logged out by the operator";
/// What a user is told when the operator locks their account.
pub const LOCKED_BY_OPERATOR: &str = "account locked by the operator";
/// Why a removed account's session ended.
pub const ACCOUNT_REMOVED: &str = "account removed by the operator";

/// The listening socket; removed from disk when stopped.
#[derive(Debug)]
pub struct OperatorSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl OperatorSocket {
    /// Binds `path` (replacing a socket file left by an earlier run) and serves until
    /// `shutdown`.
    pub fn start(shared: Arc<Shared>, path: &Path, shutdown: Shutdown) -> io::Result<Self> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        let task = tokio::spawn(serve(listener, shared, shutdown));
        Ok(Self {
            path: path.to_path_buf(),
            task,
        })
    }

    /// Stops listening and removes the socket file.
    pub fn stop(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(listener: UnixListener, shared: Arc<Shared>, mut shutdown: Shutdown) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("control socket: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = client(stream, &shared).await {
                tracing::debug!("control socket client: {e}");
            }
        });
    }
}

async fn client(stream: UnixStream, shared: &Shared) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_LINE));
    match tokio::time::timeout(CLIENT_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(r) => {
            r?;
        }
        Err(_) => return Ok(()),
    }
    let reply = handle(shared, line.trim()).await;
    write.write_all(format!("{reply}\n").as_bytes()).await?;
    write.shutdown().await
}

/// Carries out one request line; returns the reply line.
async fn handle(shared: &Shared, line: &str) -> String {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("ping"), None) => "ok pong".into(),
        (Some("logout"), Some(name)) => {
            let reason = reason(words).unwrap_or_else(|| LOGGED_OUT_BY_OPERATOR.to_string());
            shared.audit.record(AuditEvent::Operator {
                action: "logout",
                target: Some(name.to_string()),
            });
            if shared.presence.force_logout(name, &reason) {
                format!("ok logged {name} out")
            } else {
                format!("ok {name} is not online")
            }
        }
        (Some("locked"), Some(name)) => {
            let Ok(name) = name.parse::<UserName>() else {
                return format!("error not a user name: {name}");
            };
            let name = &name;
            let reason = reason(words).unwrap_or_else(|| LOCKED_BY_OPERATOR.to_string());
            shared.audit.record(AuditEvent::Operator {
                action: "lock",
                target: Some(name.to_string()),
            });
            format!(
                "ok {}",
                crate::admin_requests::end_locked(shared, name, &reason).await
            )
        }
        (Some("removed"), Some(name)) => {
            shared.audit.record(AuditEvent::Operator {
                action: "remove",
                target: Some(name.to_string()),
            });
            shared.presence.account_removed(name, ACCOUNT_REMOVED);
            format!("ok forgot {name}")
        }
        (Some("shutdown"), None) => {
            shared.audit.record(AuditEvent::Operator {
                action: "shutdown",
                target: None,
            });
            tracing::info!("shutdown requested on the control socket");
            shared.shutdown.signal(SHUTDOWN_BY_OPERATOR);
            "ok shutting down".into()
        }
        _ => {
            let shown: String = line.chars().take(40).collect();
            format!("error unknown request: {shown:?}")
        }
    }
}

/// The rest of a request line as a reason for the user, if there is one (cut short).
fn reason<'a>(words: impl Iterator<Item = &'a str>) -> Option<String> {
    let reason: String = words
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect();
    (!reason.is_empty()).then_some(reason)
}

/// Why the running directory could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No directory serves this data directory (no socket, or nobody behind it).
    #[error("no directory is running on {}", .0.display())]
    NotRunning(PathBuf),
    /// It answered with an error.
    #[error("the directory refused: {0}")]
    Refused(String),
    /// Talking to it failed.
    #[error("control socket {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Sends one request to the directory serving `data_dir`; returns its reply text.
pub async fn request(data_dir: &Path, line: &str) -> Result<String, OperatorError> {
    let path = data_dir.join(SOCKET_FILE);
    let io_err = |source| OperatorError::Io {
        path: path.clone(),
        source,
    };
    let mut stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(OperatorError::NotRunning(data_dir.to_path_buf()));
        }
        Err(e) => return Err(io_err(e)),
    };
    stream
        .write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(io_err)?;
    let mut reply = String::new();
    tokio::time::timeout(
        CLIENT_TIMEOUT,
        BufReader::new(stream.take(MAX_LINE)).read_line(&mut reply),
    )
    .await
    .map_err(|_| io_err(io::ErrorKind::TimedOut.into()))?
    .map_err(io_err)?;
    let reply = reply.trim();
    match reply.split_once(' ') {
        Some(("ok", text)) => Ok(text.to_string()),
        _ if reply == "ok" => Ok(String::new()),
        Some(("error", text)) => Err(OperatorError::Refused(text.to_string())),
        _ => Err(OperatorError::Refused(format!(
            "unexpected reply {reply:?}"
        ))),
    }
}

/// Whether a directory answers on `data_dir`'s control socket.
pub async fn is_running(data_dir: &Path) -> bool {
    request(data_dir, "ping").await.is_ok()
}
