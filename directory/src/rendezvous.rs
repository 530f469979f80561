//! `Rendezvous`: a lookup that also tells the target who is coming, from where.
//!
//! When ali is about to connect to bianca, ali asks for a rendezvous instead of a plain
//! lookup. Ali gets what a lookup gives (bianca's observed and reported addresses and her
//! key), and at the same moment bianca's connection is pushed [`Event::Incoming`] with
//! ali's. Both then send QUIC packets toward each other from the socket they use for the
//! directory, which opens the mappings in the NATs between them (hole punching). Both get
//! the same relay token ([`crate::relay`]) in case no direct path works.
//!
//! With several directory instances ([`crate::cluster`]) the event reaches the target on
//! whichever instance it is connected to, so punching works across instances, and so does
//! the relay: the target's instance forwards its relay stream to this one
//! ([`crate::relay::forward`]).
//!
//! Each side hears only the other's addresses it may send packets to
//! ([`proto::addr`]): the observed address, and reported addresses except loopback (unless
//! both are on this host, and then only the observed one), link-local (unless both are on
//! one network), multicast and broadcast. Reported addresses are chosen freely at login;
//! without this a caller could make the target send packets to a third party's service.
//!
//! The rules of `Lookup` apply: only logged-in users learn anything, and anything else
//! gets `NotFound`. Each rendezvous pushes an event to someone else, so a user may make
//! only [`crate::relay::RelayPolicy::max_offers_per_user`] of them per offer lifetime;
//! beyond that the answer is `Error{RateLimited}`.

use proto::message::{ErrorCode, Event, PeerInfo, Reply};
use proto::names::UserName;

use crate::audit::AuditEvent;
use crate::state::Shared;

/// Handles `Rendezvous{target}` from `requester` (`None`: not logged in).
pub fn rendezvous(shared: &Shared, requester: Option<&UserName>, target: &UserName) -> Reply {
    let found = requester
        .filter(|me| *me != target)
        .and_then(|me| Some((shared.presence.get(me)?, shared.presence.get(target)?)));
    shared.audit.record(AuditEvent::Lookup {
        requester: requester.map(UserName::to_string),
        target: target.to_string(),
        found: found.is_some(),
    });
    let Some((mut me, mut peer)) = found else {
        return Reply::NotFound {
            user: target.clone(),
        };
    };
    // Each is told only the other's addresses it may send to (see the module docs).
    let (me_near, peer_near) = (peer.observed.ip(), me.observed.ip());
    keep_dialable(&mut me, me_near);
    keep_dialable(&mut peer, peer_near);
    let Some(token) = shared.relay.offer(&me.user, &peer.user) else {
        return Reply::Error {
            code: ErrorCode::RateLimited,
            message: "too many connection attempts; try again shortly".into(),
        };
    };
    let policy = shared.relay.policy();
    let direct = !policy.force_relay;
    // In a cluster the two may be connected to different instances: the event is
    // forwarded for the hole punching, and the target's instance forwards its relay
    // stream to this one ([`crate::relay::forward`]).
    let relay =
        policy.enabled && (shared.presence.is_local(&peer.user) || shared.relay.links().is_some());
    tracing::debug!(from = %me.user, to = %peer.user, direct, "rendezvous");
    shared.presence.notify(
        std::slice::from_ref(&peer.user),
        Event::Incoming {
            from: me,
            token,
            direct,
        },
    );
    Reply::Rendezvous {
        peer,
        token,
        direct,
        relay,
    }
}

/// Drops the reported addresses of `info` that the other side, at `near`, must not be
/// made to send packets to ([`proto::addr::may_send`]): a caller cannot aim the target at
/// a service on the target's own host or link, or at a multicast group, by reporting it
/// at login. The observed address stays (it is what the directory saw); the peer applies
/// the same rule to it.
fn keep_dialable(info: &mut PeerInfo, near: std::net::IpAddr) {
    let addresses = std::mem::take(&mut info.addresses);
    info.addresses = addresses
        .into_iter()
        .filter(|a| proto::addr::may_send(info, *a, near))
        .collect();
}
