//! `Request::Admin`: administrators acting from their own peer session.
//!
//! Who may: a logged-in user whose account has the admin flag *now* (read from the store
//! at each request, so taking the flag away takes effect at once, without waiting for a
//! new login). Everyone else gets `Error{NotPermitted}` (`NotLoggedIn` before a login),
//! and the attempt is audited: who, from where, which action, on whom. A permitted
//! request is audited as well, next to the line the account change itself writes
//! ([`crate::admin`]), so the trail says which administrator did what.
//!
//! Replies: `Done{message}` for an action that worked, `Users` for `ListUsers`,
//! `NotFound` for an unknown account, `Refused{UserExists|Invalid}` for an `AddUser`
//! that breaks the rules, `Error{Internal}` when storage fails. `Shutdown` answers
//! `Done` and signals the shutdown at once: every connection, this one included once its
//! reply is written, is sent `Event::Shutdown` and closed; the owner of the
//! [`crate::Directory`] sees [`crate::Directory::stopped`] complete and finishes the job
//! (flush storage, exit).

use std::net::IpAddr;

use proto::message::{AccountInfo, AdminRequest, ErrorCode, Refusal, Reply};
use proto::names::UserName;
use zeroize::Zeroizing;

use crate::admin::{Admin, AdminError};
use crate::audit::AuditEvent;
use crate::state::Shared;

/// Ends what the directory can end for `user`, whose account was just locked (by an
/// administrator here, or by the operator through [`crate::operator`]): their rooms
/// (left, room-mates told), their relay offers and streams, their session. Says what was
/// ended, and plainly what cannot be: chats they already have open directly with other
/// peers are end-to-end and do not pass through the directory.
pub async fn end_locked(shared: &Shared, user: &UserName, reason: &str) -> String {
    let rooms = crate::rooms::leave_all(shared, user).await;
    let relayed = shared.relay.forget_user(user);
    let online = shared.presence.force_logout(user, reason);
    let mut ended = Vec::new();
    if online {
        ended.push("their session".to_string());
    }
    if relayed > 0 {
        ended.push(format!(
            "{relayed} relayed chat stream{}",
            if relayed == 1 { "" } else { "s" }
        ));
    }
    if !rooms.is_empty() {
        ended.push(format!(
            "their membership of {} (room-mates told)",
            rooms
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let ended = match ended.is_empty() {
        true => "nothing to end on this server".to_string(),
        false => format!("ended {}", ended.join(", ")),
    };
    format!(
        "{ended}; cannot end: chats {user} already has open directly with other peers \
         (end-to-end, not through the directory) last until either side closes them"
    )
}

/// Reason peers are given when an administrator shuts the directory down.
pub const SHUTDOWN_BY_ADMIN: &str = "directory shut down by an administrator";
/// Reason a user is given when an administrator ends their session.
pub const LOGGED_OUT_BY_ADMIN: &str = "logged out by an administrator";
/// Reason a user is given when an administrator locks their account.
pub const LOCKED_BY_ADMIN: &str = "account locked by an administrator";

/// Handles one `Request::Admin` from `requester` (`None`: not logged in) at `ip`.
pub async fn handle(
    shared: &Shared,
    requester: Option<&UserName>,
    ip: IpAddr,
    request: AdminRequest,
) -> Reply {
    let action = request.action();
    let target = request.target().map(str::to_string);
    let refuse = |code: ErrorCode, message: String| {
        shared.audit.record(AuditEvent::AdminRefused {
            by: requester.map(UserName::to_string),
            ip,
            action,
            target: target.clone(),
        });
        Reply::Error { code, message }
    };
    let Some(by) = requester else {
        return refuse(ErrorCode::NotLoggedIn, "log in first".into());
    };
    match shared.store.account(by).await {
        Ok(Some(account)) if account.admin => {}
        Ok(_) => {
            return refuse(
                ErrorCode::NotPermitted,
                format!("not permitted: {by} is not an administrator of this directory"),
            );
        }
        Err(e) => return internal(e),
    }
    shared.audit.record(AuditEvent::AdminRequested {
        by: by.to_string(),
        ip,
        action,
        target,
    });
    let admin = Admin::new(
        shared.store.clone(),
        shared.passwords.clone(),
        shared.audit.clone(),
        shared.config.lockout,
    );
    match request {
        AdminRequest::AddUser {
            name,
            password,
            admin: is_admin,
        } => {
            let password = Zeroizing::new(password);
            match admin.add_user(&name, &password, is_admin).await {
                Ok(()) => done(format!(
                    "added {} {name}",
                    if is_admin { "administrator" } else { "user" }
                )),
                Err(e) => failed(e),
            }
        }
        AdminRequest::ListUsers => match admin.list_users().await {
            Ok(users) => Reply::Users(
                users
                    .into_iter()
                    // Stored names were valid when created; one that is not (a database
                    // edited by hand) is left out rather than sent.
                    .filter_map(|u| {
                        Some(AccountInfo {
                            online: shared.presence.get(&u.name).is_some(),
                            locked_by_admin: u.locked_by_admin,
                            locked_for_secs: u.locked_for.filter(|_| !u.locked_by_admin),
                            failed_attempts: u.failed_attempts,
                            identity: u.identity,
                            created_at: u.created_at,
                            admin: u.admin,
                            name: UserName::try_from(u.name).ok()?,
                        })
                    })
                    .collect(),
            ),
            Err(e) => failed(e),
        },
        AdminRequest::LogoutUser { name } => {
            if shared.presence.force_logout(&name, LOGGED_OUT_BY_ADMIN) {
                done(format!("logged {name} out"))
            } else {
                done(format!("{name} is not online; nothing to do"))
            }
        }
        AdminRequest::Lock { name } => match admin.lock_user(&name).await {
            Ok(()) => done(format!(
                "locked {name}: {}",
                end_locked(shared, &name, LOCKED_BY_ADMIN).await
            )),
            Err(e) => failed(e),
        },
        AdminRequest::Unlock { name } => match admin.unlock_user(&name).await {
            Ok(()) => done(format!("unlocked {name}")),
            Err(e) => failed(e),
        },
        AdminRequest::Shutdown => {
            tracing::info!(by = by.as_str(), "shutdown requested by an administrator");
            shared.shutdown.signal(SHUTDOWN_BY_ADMIN);
            done("directory shutting down".into())
        }
    }
}

fn done(message: String) -> Reply {
    Reply::Done { message }
}

fn failed(e: AdminError) -> Reply {
    let refused = |reason| Reply::Refused {
        reason,
        attempts_left: None,
        retry_after_secs: None,
    };
    match e {
        AdminError::Exists(_) => refused(Refusal::UserExists),
        AdminError::InvalidName(_) | AdminError::InvalidPassword(_) => refused(Refusal::Invalid),
        AdminError::NoSuchUser(user) => match UserName::try_from(user) {
            Ok(user) => Reply::NotFound { user },
            Err(_) => refused(Refusal::Invalid),
        },
        other => internal(other),
    }
}

fn internal(e: impl std::fmt::Display) -> Reply {
    tracing::error!("administrator request failed: {e}");
    Reply::Error {
        code: ErrorCode::Internal,
        message: "internal error; see the directory's log".into(),
    }
}
