//! Arbitrary bytes decoded as the messages that carry user and room names (and as a bare
//! name). Never a panic; every name in whatever decodes passes `check_username`
//! (`check_room` for rooms), so no decoded message can carry a name with spaces, line
//! breaks, control or formatting characters; and a decoded message re-encodes and decodes
//! back equal.
//!
//! The input is tried as one payload (after a 4-byte prefix, whatever it says, like
//! `frame_decode`), and its text, when it is UTF-8, as a name encoded the way the wire
//! encodes a `String`: a name decodes exactly when it follows the rules.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use proto::frame::{self, HEADER_LEN};
use proto::message::{
    AdminRequest, ChatPayload, Event, PeerMsg, RelayMsg, Reply, Request, ServerMsg,
};
use proto::names::{self, RoomName, UserName};
use proto::sealed::MailContent;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[global_allocator]
static ALLOC: proto_fuzz::CappedAlloc = proto_fuzz::CappedAlloc;

fuzz_target!(|data: &[u8]| {
    let body = data.get(HEADER_LEN..).unwrap_or_default();
    if let Some(msg) = decoded::<Request>(body) {
        request_names(&msg).iter().for_each(|n| user(n));
    }
    if let Some(msg) = decoded::<ServerMsg>(body) {
        server_names(&msg);
    }
    if let Some(msg) = decoded::<PeerMsg>(body) {
        match &msg {
            PeerMsg::Connect { initiator, .. } => user(initiator),
            PeerMsg::Accepted { user: u } => user(u),
            PeerMsg::Refused { .. } | PeerMsg::KeyShare(_) | PeerMsg::Sealed(_) => {}
        }
    }
    if let Some(msg) = decoded::<RelayMsg>(body) {
        match &msg {
            RelayMsg::Ready { peer } => user(peer),
            RelayMsg::Forward { user: u, .. } => user(u),
            RelayMsg::Open { .. } | RelayMsg::Refused { .. } => {}
        }
    }
    if let Some(ChatPayload::Text {
        room: Some(tag), ..
    }) = decoded::<ChatPayload>(body)
    {
        room(&tag.room);
    }
    if let Some(content) = decoded::<MailContent>(body) {
        user(&content.from);
        user(&content.to);
    }
    for bytes in [data, body] {
        if let Some(name) = decoded::<UserName>(bytes) {
            user(&name);
        }
        if let Some(name) = decoded::<RoomName>(bytes) {
            room(&name);
        }
    }

    // The text as a name: parsing and decoding agree with the rules, and with each other.
    if let Ok(text) = std::str::from_utf8(data) {
        let valid = names::check_username(text).is_ok();
        assert_eq!(UserName::parse(text).is_ok(), valid, "{text:?}");
        assert_eq!(RoomName::parse(text).is_ok(), valid, "{text:?}");
        let wire = frame::encode(&text.to_string()).expect("a string encodes");
        let as_name = frame::decode::<UserName>(&wire[HEADER_LEN..]);
        assert_eq!(as_name.is_ok(), valid, "{text:?}");
        if let Ok(name) = as_name {
            assert_eq!(name, text);
            // Same bytes on the wire as the string it wraps.
            assert_eq!(frame::encode(&name).expect("a name encodes"), wire);
        }
    }
});

/// Decodes one payload; a message that decodes must round-trip.
fn decoded<T: Serialize + DeserializeOwned + PartialEq + Debug>(body: &[u8]) -> Option<T> {
    let msg = frame::decode::<T>(body).ok()?;
    let bytes = frame::encode(&msg).expect("a decoded message re-encodes");
    let again: T = frame::decode(&bytes[HEADER_LEN..]).expect("re-encoded message decodes");
    assert_eq!(again, msg);
    Some(msg)
}

fn user(name: &UserName) {
    assert!(names::check_username(name).is_ok(), "{name:?}");
    assert!(
        !name.chars().any(|c| c.is_whitespace() || c.is_control()),
        "{name:?}"
    );
}

fn room(name: &RoomName) {
    assert!(names::check_room(name).is_ok(), "{name:?}");
}

fn request_names(msg: &Request) -> Vec<&UserName> {
    match msg {
        Request::Login { user, .. }
        | Request::Resume { user, .. }
        | Request::Lookup { user }
        | Request::FetchPrekey { user }
        | Request::Rendezvous { user }
        | Request::Deposit { to: user, .. } => vec![user],
        Request::JoinRoom { room: r } | Request::LeaveRoom { room: r } => {
            room(r);
            vec![]
        }
        Request::Watch { users, .. } => users.iter().collect(),
        Request::Admin(
            AdminRequest::AddUser { name, .. }
            | AdminRequest::LogoutUser { name }
            | AdminRequest::Lock { name }
            | AdminRequest::Unlock { name },
        ) => vec![name],
        // `Register` proposes a name as a plain string, which the directory checks.
        Request::Register { .. }
        | Request::Hello { .. }
        | Request::Who
        | Request::Logout
        | Request::ListRooms
        | Request::Admin(AdminRequest::ListUsers | AdminRequest::Shutdown)
        | Request::PublishPrekey { .. }
        | Request::FetchMail
        | Request::AckMail { .. }
        | Request::MailReceipts
        | Request::InstanceAuth { .. }
        | Request::ChangePassword { .. } => vec![],
    }
}

fn server_names(msg: &ServerMsg) {
    match msg {
        ServerMsg::Reply(reply) => match reply {
            Reply::Registered { user: u }
            | Reply::Granted { user: u, .. }
            | Reply::NotFound { user: u }
            | Reply::Prekey { user: u, .. } => user(u),
            Reply::Found(info) | Reply::Rendezvous { peer: info, .. } => user(&info.user),
            Reply::Online { users } => users.iter().for_each(|u| user(&u.user)),
            Reply::RoomMembers { room: r, members } => {
                room(r);
                members.iter().for_each(|m| user(&m.user));
            }
            Reply::Rooms { rooms } => rooms.iter().for_each(|r| room(&r.room)),
            Reply::Users(accounts) => accounts.iter().for_each(|a| user(&a.name)),
            Reply::Receipts { receipts } => receipts.iter().for_each(|r| user(&r.to)),
            Reply::Welcome { .. }
            | Reply::Refused { .. }
            | Reply::LoggedOut
            | Reply::Error { .. }
            | Reply::Watching
            | Reply::Done { .. }
            | Reply::PrekeyPublished
            | Reply::Queued { .. }
            | Reply::Mail { .. }
            | Reply::MailAcked { .. } => {}
        },
        ServerMsg::Event(event) => match event {
            Event::RoomChanged {
                room: r, user: u, ..
            } => {
                room(r);
                user(u);
            }
            Event::Presence { user: u, .. } | Event::RelayCall { from: u, .. } => user(u),
            Event::Incoming { from, .. } => user(&from.user),
            Event::Shutdown { .. }
            | Event::ForcedLogout { .. }
            | Event::MailWaiting
            | Event::MailReceiptsWaiting => {}
        },
    }
}
