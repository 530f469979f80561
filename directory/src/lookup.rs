//! `Lookup` and `Who`: what a logged-in user may learn about who else is online.
//!
//! Only logged-in users learn anything. A requester who is not logged in gets `NotFound`
//! for every lookup (the same answer as for an offline user, so it reveals nothing) and
//! `Error{NotLoggedIn}` for `Who`.

use proto::message::{ErrorCode, Reply};
use proto::names::UserName;

use crate::audit::AuditEvent;
use crate::state::Shared;

/// Handles `Lookup{target}` from `requester` (`None`: not logged in).
pub fn lookup(shared: &Shared, requester: Option<&UserName>, target: &UserName) -> Reply {
    let found = match requester {
        Some(_) => shared.presence.get(target),
        None => None,
    };
    shared.audit.record(AuditEvent::Lookup {
        requester: requester.map(UserName::to_string),
        target: target.to_string(),
        found: found.is_some(),
    });
    match found {
        Some(info) => Reply::Found(info),
        None => Reply::NotFound {
            user: target.clone(),
        },
    }
}

/// Most users one `Online` reply lists (the first by name). An entry takes at most 42
/// bytes (a 32-byte name and two length/number prefixes), so the reply always fits in
/// one frame; with more users online than fit, encoding the whole list would fail and
/// the asker would lose its connection.
pub const MAX_WHO_USERS: usize = 1000;

/// Handles `Who` from `requester` (`None`: not logged in).
pub fn who(shared: &Shared, requester: Option<&UserName>) -> Reply {
    match requester {
        Some(_) => {
            let mut users = shared.presence.list();
            users.truncate(MAX_WHO_USERS);
            Reply::Online { users }
        }
        None => Reply::Error {
            code: ErrorCode::NotLoggedIn,
            message: "log in first".into(),
        },
    }
}
