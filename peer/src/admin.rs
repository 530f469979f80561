//! Administrators' commands from the chat: `/adduser`, `/listusers`, `/logoutuser`,
//! `/lock`, `/unlock`, `/shutdown`.
//!
//! The directory decides who may, and audits every refusal; this side sends the request
//! (whoever types it: a refusal is worth an audit line) and turns the answer into a
//! [`Note`]. A new user's password never appears on a command line, in the line history
//! or in a script's arguments: on a terminal it is asked twice without echo; in scripted
//! mode (and in-process tests) `/adduser NAME` takes it from the next input line, which
//! is then neither sent anywhere else nor shown.

use std::time::Duration;

use proto::message::{AdminRequest, ErrorCode, Reply};
use proto::names::UserName;
use zeroize::Zeroizing;

use crate::directory_client::ClientError;
use crate::link::Link;
use crate::ui::Note;
use crate::ui::command::AdminCommand;

/// How long an administrator's request may take (adding a user hashes a password).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// An `/adduser` waiting for its password on the next input line (scripted mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAddUser {
    pub name: String,
    pub admin: bool,
}

/// What a command led to.
#[derive(Debug)]
pub struct Outcome {
    /// What to show.
    pub note: Note,
    /// Set when the next input line is the new user's password.
    pub pending: Option<PendingAddUser>,
}

/// Carries out `cmd`. `interactive`: a person is at a terminal, so `/adduser` asks for
/// the password without echo here; otherwise it asks for the next line.
pub async fn command(link: &Link, cmd: AdminCommand, interactive: bool) -> Outcome {
    let done = |note| Outcome {
        note,
        pending: None,
    };
    let request = match cmd {
        AdminCommand::AddUser { name, admin } => {
            if let Err(e) = proto::names::check_username(&name) {
                return done(Note::Error(format!("{name:?}: {e}")));
            }
            if !interactive {
                return Outcome {
                    note: Note::Info(format!(
                        "password for {name}: type it on the next line (it is not sent anywhere else)"
                    )),
                    pending: Some(PendingAddUser { name, admin }),
                };
            }
            let prompt_name = name.clone();
            let password =
                match tokio::task::spawn_blocking(move || prompt_password(&prompt_name)).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => return done(Note::Error(e)),
                    Err(e) => return done(Note::Error(e.to_string())),
                };
            return done(add_user(link, PendingAddUser { name, admin }, &password).await);
        }
        AdminCommand::ListUsers => AdminRequest::ListUsers,
        AdminCommand::LogoutUser(name) => match target(&name) {
            Ok(name) => AdminRequest::LogoutUser { name },
            Err(why) => return done(Note::Error(why)),
        },
        AdminCommand::Lock(name) => match target(&name) {
            Ok(name) => AdminRequest::Lock { name },
            Err(why) => return done(Note::Error(why)),
        },
        AdminCommand::Unlock(name) => match target(&name) {
            Ok(name) => AdminRequest::Unlock { name },
            Err(why) => return done(Note::Error(why)),
        },
        AdminCommand::Shutdown => AdminRequest::Shutdown,
    };
    done(send(link, request).await)
}

/// The account an administrator's command names, or the error to show.
fn target(name: &str) -> Result<UserName, String> {
    UserName::parse(name).map_err(|e| format!("{name:?}: {e}"))
}

/// Finishes an `/adduser` with the password typed on the line after it.
pub async fn add_user(link: &Link, pending: PendingAddUser, password: &str) -> Note {
    if let Err(e) = proto::names::check_new_password(password) {
        return Note::Error(format!("{} was not added: {e}", pending.name));
    }
    let name = match target(&pending.name) {
        Ok(name) => name,
        Err(why) => return Note::Error(why),
    };
    let password = Zeroizing::new(password.to_string());
    send(
        link,
        AdminRequest::AddUser {
            name,
            password: password.to_string(),
            admin: pending.admin,
        },
    )
    .await
}

/// Asks for a new user's password twice, without echo (blocking: run off the runtime).
fn prompt_password(name: &str) -> Result<Zeroizing<String>, String> {
    let first = Zeroizing::new(
        rpassword::prompt_password(format!("Password for {name}: "))
            .map_err(|e| format!("cannot read the password: {e}"))?,
    );
    let again = Zeroizing::new(
        rpassword::prompt_password(format!("Password for {name} (again): "))
            .map_err(|e| format!("cannot read the password: {e}"))?,
    );
    if first != again {
        return Err(format!("the passwords do not match; {name} was not added"));
    }
    Ok(first)
}

async fn send(link: &Link, request: AdminRequest) -> Note {
    let client = link.client();
    match tokio::time::timeout(ADMIN_TIMEOUT, client.admin(request)).await {
        Err(_) => Note::Error("the directory did not answer".into()),
        Ok(Ok(Reply::Done { message })) => Note::Info(message),
        Ok(Ok(Reply::Users(users))) => Note::Accounts { users },
        Ok(Ok(Reply::NotFound { user })) => Note::Error(format!("no such user: {user}")),
        Ok(Ok(other)) => Note::Error(format!("unexpected answer from the directory: {other:?}")),
        Ok(Err(ClientError::Server {
            code: ErrorCode::NotPermitted | ErrorCode::NotLoggedIn,
            message,
        })) => Note::Error(if message.starts_with("not permitted") {
            message
        } else {
            format!("not permitted: {message}")
        }),
        Ok(Err(e)) => Note::Error(e.to_string()),
    }
}
