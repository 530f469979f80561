//! Property tests for the wire format and the session crypto.
//!
//! - Wire: every message type round-trips through `encode`/`decode` for arbitrary field
//!   values; every strict prefix of an encoding is refused; appended bytes are refused as
//!   `Trailing`; arbitrary or corrupted bytes never panic the decoder.
//! - Session: seal → open round-trips in order; a flipped bit, a changed counter or a
//!   frame out of order is refused and does not advance the opener.
//! - Identity: `transcript` is injective; safety numbers are symmetric; keys and
//!   fingerprints parse back from their printed forms.
//!
//! Case counts are kept small so the file runs in seconds in a debug build; the fuzz
//! targets in `fuzz` (run by `.ci/fuzz`) search the same ground for longer.

use std::fmt::Debug;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use proptest::prelude::*;
use proptest::sample::Index;
use proto::frame::{FrameError, HEADER_LEN, decode, encode, payload_len};
use proto::identity::{Fingerprint, Identity, PublicKey, Signature, safety_number, transcript};
use proto::message::{
    AccountInfo, AdminRequest, ChatPayload, ConnectRefusal, ErrorCode, Event, MailItem,
    MailReceipt, OnlineUser, PeerInfo, PeerMsg, Refusal, RelayMsg, RelayRefusal, Reply, Request,
    RoomInfo, RoomMember, RoomTag, ServerMsg,
};
use proto::names::{RoomName, UserName};
use proto::sealed::SignedPrekey;
use proto::session::{Handshake, KeyShare, Role, SealedFrame, Session, SessionError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Cases per property: enough to cover every variant many times, few enough for seconds.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Shrunk failures are printed; the ones worth keeping go to `regressions.rs`.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Strategies for every message type.

fn text() -> impl Strategy<Value = String> {
    any::<String>()
}

/// Any valid user name: 1–32 of `a-z 0-9 . _ -`, starting with a letter or digit.
fn user() -> impl Strategy<Value = UserName> {
    const FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    const REST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789._-";
    (
        prop::sample::select(FIRST),
        prop::collection::vec(prop::sample::select(REST), 0..32),
    )
        .prop_map(|(first, rest)| {
            let name: String = std::iter::once(first).chain(rest).map(char::from).collect();
            UserName::parse(&name).expect("generated names follow the rules")
        })
}

fn room() -> impl Strategy<Value = RoomName> {
    user().prop_map(|name| RoomName::parse(&name).expect("same rules"))
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..80)
}

fn key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

fn signature() -> impl Strategy<Value = Signature> {
    prop::array::uniform::<_, 64>(any::<u8>()).prop_map(Signature)
}

/// Any socket address the wire can carry. serde writes an IPv6 address as (ip, port)
/// only, so flow info and scope id do not survive the wire and are generated as zero.
fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        any::<SocketAddrV4>().prop_map(SocketAddr::V4),
        (any::<Ipv6Addr>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))),
    ]
}

fn addrs() -> impl Strategy<Value = Vec<SocketAddr>> {
    prop::collection::vec(addr(), 0..5)
}

fn refusal() -> impl Strategy<Value = Refusal> {
    use Refusal::*;
    prop::sample::select(vec![
        BadCredentials,
        LockedOut,
        KeyMismatch,
        BadSignature,
        TicketInvalid,
        RegistrationClosed,
        UserExists,
        Invalid,
        AlreadyLoggedIn,
        SourceBlocked,
    ])
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    use ErrorCode::*;
    prop::sample::select(vec![
        UnsupportedVersion,
        ProtocolViolation,
        NotLoggedIn,
        BadFrame,
        RateLimited,
        Internal,
        NotPermitted,
        MailboxFull,
    ])
}

fn connect_refusal() -> impl Strategy<Value = ConnectRefusal> {
    use ConnectRefusal::*;
    prop::sample::select(vec![
        UnknownInitiator,
        KeyMismatch,
        AddressMismatch,
        PinnedKeyChanged,
        DirectoryUnavailable,
        UnsupportedVersion,
        Busy,
    ])
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u32>(), text()).prop_map(|(version, software)| Request::Hello { version, software }),
        (text(), text(), key()).prop_map(|(user, password, identity)| Request::Register {
            user,
            password,
            identity
        }),
        (user(), text(), key(), signature(), addrs()).prop_map(
            |(user, password, identity, signature, addresses)| Request::Login {
                user,
                password,
                identity,
                signature,
                addresses,
            }
        ),
        (user(), bytes(), signature(), addrs()).prop_map(|(user, ticket, signature, addresses)| {
            Request::Resume {
                user,
                ticket,
                signature,
                addresses,
            }
        }),
        user().prop_map(|user| Request::Lookup { user }),
        Just(Request::Who),
        Just(Request::Logout),
        room().prop_map(|room| Request::JoinRoom { room }),
        room().prop_map(|room| Request::LeaveRoom { room }),
        Just(Request::ListRooms),
        (prop::collection::vec(user(), 0..5), any::<bool>())
            .prop_map(|(users, everyone)| Request::Watch { users, everyone }),
        admin_request().prop_map(Request::Admin),
        signed_prekey().prop_map(|prekey| Request::PublishPrekey { prekey }),
        user().prop_map(|user| Request::FetchPrekey { user }),
        (user(), bytes()).prop_map(|(to, blob)| Request::Deposit { to, blob }),
        Just(Request::FetchMail),
        prop::collection::vec(any::<u64>(), 0..5).prop_map(|ids| Request::AckMail { ids }),
        Just(Request::MailReceipts),
        user().prop_map(|user| Request::Rendezvous { user }),
        (text(), signature()).prop_map(|(instance, signature)| Request::InstanceAuth {
            instance,
            signature
        }),
        (text(), text()).prop_map(|(old, new)| Request::ChangePassword { old, new }),
    ]
}

fn signed_prekey() -> impl Strategy<Value = SignedPrekey> {
    (any::<[u8; 32]>(), any::<i64>(), signature()).prop_map(|(key, created_at, signature)| {
        SignedPrekey {
            key,
            created_at,
            signature,
        }
    })
}

fn admin_request() -> impl Strategy<Value = AdminRequest> {
    prop_oneof![
        (user(), text(), any::<bool>()).prop_map(|(name, password, admin)| {
            AdminRequest::AddUser {
                name,
                password,
                admin,
            }
        }),
        Just(AdminRequest::ListUsers),
        user().prop_map(|name| AdminRequest::LogoutUser { name }),
        user().prop_map(|name| AdminRequest::Lock { name }),
        user().prop_map(|name| AdminRequest::Unlock { name }),
        Just(AdminRequest::Shutdown),
    ]
}

prop_compose! {
    fn account_info()(
        name in user(),
        flags in any::<(bool, bool, bool)>(),
        locked_for_secs in any::<Option<u64>>(),
        failed_attempts in any::<u32>(),
        identity in prop::option::of(key()),
        created_at in any::<i64>(),
    ) -> AccountInfo {
        let (admin, online, locked_by_admin) = flags;
        AccountInfo {
            name,
            admin,
            online,
            locked_by_admin,
            locked_for_secs,
            failed_attempts,
            identity,
            created_at,
        }
    }
}

prop_compose! {
    fn peer_info()(user in user(), identity in key(), observed in addr(), addresses in addrs())
        -> PeerInfo {
        PeerInfo { user, identity, observed, addresses }
    }
}

prop_compose! {
    fn room_member()(user in user(), online in any::<bool>()) -> RoomMember {
        RoomMember { user, online }
    }
}

prop_compose! {
    fn room_info()(room in room(), members in any::<u32>()) -> RoomInfo {
        RoomInfo { room, members }
    }
}

prop_compose! {
    fn online_user()(user in user(), online_secs in any::<u64>()) -> OnlineUser {
        OnlineUser { user, online_secs }
    }
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (any::<u32>(), any::<[u8; 32]>(), any::<bool>()).prop_map(
            |(version, nonce, open_registration)| Reply::Welcome {
                version,
                nonce,
                open_registration,
            }
        ),
        user().prop_map(|user| Reply::Registered { user }),
        (user(), bytes(), any::<u64>(), addr(), any::<bool>()).prop_map(
            |(user, ticket, ticket_lifetime_secs, observed, admin)| Reply::Granted {
                user,
                ticket,
                ticket_lifetime_secs,
                observed,
                admin,
            }
        ),
        (refusal(), any::<Option<u32>>(), any::<Option<u64>>()).prop_map(
            |(reason, attempts_left, retry_after_secs)| Reply::Refused {
                reason,
                attempts_left,
                retry_after_secs,
            }
        ),
        peer_info().prop_map(Reply::Found),
        user().prop_map(|user| Reply::NotFound { user }),
        prop::collection::vec(online_user(), 0..5).prop_map(|users| Reply::Online { users }),
        Just(Reply::LoggedOut),
        (error_code(), text()).prop_map(|(code, message)| Reply::Error { code, message }),
        (room(), prop::collection::vec(room_member(), 0..5))
            .prop_map(|(room, members)| Reply::RoomMembers { room, members }),
        prop::collection::vec(room_info(), 0..5).prop_map(|rooms| Reply::Rooms { rooms }),
        Just(Reply::Watching),
        prop::collection::vec(account_info(), 0..5).prop_map(Reply::Users),
        text().prop_map(|message| Reply::Done { message }),
        Just(Reply::PrekeyPublished),
        (user(), key(), prop::option::of(signed_prekey())).prop_map(|(user, identity, prekey)| {
            Reply::Prekey {
                user,
                identity,
                prekey,
            }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(id, expires_in_secs)| Reply::Queued {
            id,
            expires_in_secs
        }),
        (
            prop::collection::vec(
                (any::<u64>(), any::<i64>(), bytes()).prop_map(|(id, deposited_at, blob)| {
                    MailItem {
                        id,
                        deposited_at,
                        blob,
                    }
                }),
                0..3
            ),
            any::<bool>()
        )
            .prop_map(|(items, more)| Reply::Mail { items, more }),
        any::<u32>().prop_map(|count| Reply::MailAcked { count }),
        prop::collection::vec(
            (any::<u64>(), user(), any::<bool>()).prop_map(|(id, to, delivered)| MailReceipt {
                id,
                to,
                delivered
            }),
            0..3
        )
        .prop_map(|receipts| Reply::Receipts { receipts }),
        (peer_info(), any::<[u8; 16]>(), any::<bool>(), any::<bool>()).prop_map(
            |(peer, token, direct, relay)| Reply::Rendezvous {
                peer,
                token,
                direct,
                relay
            }
        ),
    ]
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    prop_oneof![
        reply().prop_map(ServerMsg::Reply),
        text().prop_map(|reason| ServerMsg::Event(Event::Shutdown { reason })),
        text().prop_map(|reason| ServerMsg::Event(Event::ForcedLogout { reason })),
        (room(), user(), any::<bool>()).prop_map(|(room, user, joined)| {
            ServerMsg::Event(Event::RoomChanged { room, user, joined })
        }),
        (user(), any::<bool>())
            .prop_map(|(user, online)| ServerMsg::Event(Event::Presence { user, online })),
        Just(ServerMsg::Event(Event::MailWaiting)),
        Just(ServerMsg::Event(Event::MailReceiptsWaiting)),
        (peer_info(), any::<[u8; 16]>(), any::<bool>()).prop_map(|(from, token, direct)| {
            ServerMsg::Event(Event::Incoming {
                from,
                token,
                direct,
            })
        }),
        (user(), any::<[u8; 16]>())
            .prop_map(|(from, token)| ServerMsg::Event(Event::RelayCall { from, token })),
    ]
}

fn peer_msg() -> impl Strategy<Value = PeerMsg> {
    prop_oneof![
        (any::<u32>(), user(), any::<bool>()).prop_map(|(version, initiator, background)| {
            PeerMsg::Connect {
                version,
                initiator,
                background,
            }
        }),
        user().prop_map(|user| PeerMsg::Accepted { user }),
        connect_refusal().prop_map(|reason| PeerMsg::Refused { reason }),
        (any::<[u8; 32]>(), signature()).prop_map(|(ephemeral, signature)| {
            PeerMsg::KeyShare(KeyShare {
                ephemeral,
                signature,
            })
        }),
        (any::<u64>(), bytes()).prop_map(|(counter, ciphertext)| {
            PeerMsg::Sealed(SealedFrame {
                counter,
                ciphertext,
            })
        }),
    ]
}

fn relay_msg() -> impl Strategy<Value = RelayMsg> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(|token| RelayMsg::Open { token }),
        user().prop_map(|peer| RelayMsg::Ready { peer }),
        prop::sample::select(vec![
            RelayRefusal::Disabled,
            RelayRefusal::NotLoggedIn,
            RelayRefusal::UnknownToken,
            RelayRefusal::TooManySessions,
            RelayRefusal::NoAnswer,
            RelayRefusal::InstanceUnreachable,
        ])
        .prop_map(|reason| RelayMsg::Refused { reason }),
        (any::<[u8; 16]>(), user()).prop_map(|(token, user)| RelayMsg::Forward { token, user }),
    ]
}

fn room_tag() -> impl Strategy<Value = Option<RoomTag>> {
    prop::option::of((room(), any::<u64>()).prop_map(|(room, seq)| RoomTag { room, seq }))
}

fn chat_payload() -> impl Strategy<Value = ChatPayload> {
    prop_oneof![
        (any::<u64>(), text(), any::<u64>(), room_tag()).prop_map(
            |(id, text, sent_at_ms, room)| ChatPayload::Text {
                id,
                text,
                sent_at_ms,
                room,
            }
        ),
        any::<u64>().prop_map(|id| ChatPayload::Ack { id }),
        Just(ChatPayload::Bye),
    ]
}

/// Fails to compile when a variant is added, as a reminder to add it to the strategies
/// above (otherwise the new variant would silently go untested).
#[allow(dead_code)]
fn strategies_cover_every_variant(
    (r, p, s, m, c): (Request, Reply, ServerMsg, PeerMsg, ChatPayload),
    (refusal, code, connect): (Refusal, ErrorCode, ConnectRefusal),
) {
    match r {
        Request::Hello { .. }
        | Request::Register { .. }
        | Request::Login { .. }
        | Request::Resume { .. }
        | Request::Lookup { .. }
        | Request::Who
        | Request::Logout
        | Request::JoinRoom { .. }
        | Request::LeaveRoom { .. }
        | Request::ListRooms
        | Request::Watch { .. }
        | Request::PublishPrekey { .. }
        | Request::FetchPrekey { .. }
        | Request::Deposit { .. }
        | Request::FetchMail
        | Request::AckMail { .. }
        | Request::MailReceipts
        | Request::Rendezvous { .. }
        | Request::InstanceAuth { .. }
        | Request::ChangePassword { .. }
        | Request::Admin(
            AdminRequest::AddUser { .. }
            | AdminRequest::ListUsers
            | AdminRequest::LogoutUser { .. }
            | AdminRequest::Lock { .. }
            | AdminRequest::Unlock { .. }
            | AdminRequest::Shutdown,
        ) => {}
    }
    match p {
        Reply::Welcome { .. }
        | Reply::Registered { .. }
        | Reply::Granted { .. }
        | Reply::Refused { .. }
        | Reply::Found(_)
        | Reply::NotFound { .. }
        | Reply::Online { .. }
        | Reply::LoggedOut
        | Reply::Error { .. }
        | Reply::RoomMembers { .. }
        | Reply::Rooms { .. }
        | Reply::Watching
        | Reply::Users(_)
        | Reply::Done { .. }
        | Reply::PrekeyPublished
        | Reply::Prekey { .. }
        | Reply::Queued { .. }
        | Reply::Mail { .. }
        | Reply::MailAcked { .. }
        | Reply::Receipts { .. }
        | Reply::Rendezvous { .. } => {}
    }
    match s {
        ServerMsg::Reply(_)
        | ServerMsg::Event(
            Event::Shutdown { .. }
            | Event::ForcedLogout { .. }
            | Event::RoomChanged { .. }
            | Event::Presence { .. }
            | Event::MailWaiting
            | Event::MailReceiptsWaiting
            | Event::Incoming { .. }
            | Event::RelayCall { .. },
        ) => {}
    }
    match m {
        PeerMsg::Connect { .. }
        | PeerMsg::Accepted { .. }
        | PeerMsg::Refused { .. }
        | PeerMsg::KeyShare(_)
        | PeerMsg::Sealed(_) => {}
    }
    match c {
        ChatPayload::Text { .. } | ChatPayload::Ack { .. } | ChatPayload::Bye => {}
    }
    match refusal {
        Refusal::BadCredentials
        | Refusal::LockedOut
        | Refusal::KeyMismatch
        | Refusal::BadSignature
        | Refusal::TicketInvalid
        | Refusal::RegistrationClosed
        | Refusal::UserExists
        | Refusal::Invalid
        | Refusal::AlreadyLoggedIn
        | Refusal::SourceBlocked => {}
    }
    match code {
        ErrorCode::UnsupportedVersion
        | ErrorCode::ProtocolViolation
        | ErrorCode::NotLoggedIn
        | ErrorCode::BadFrame
        | ErrorCode::RateLimited
        | ErrorCode::Internal
        | ErrorCode::NotPermitted
        | ErrorCode::MailboxFull => {}
    }
    match connect {
        ConnectRefusal::UnknownInitiator
        | ConnectRefusal::KeyMismatch
        | ConnectRefusal::AddressMismatch
        | ConnectRefusal::PinnedKeyChanged
        | ConnectRefusal::DirectoryUnavailable
        | ConnectRefusal::UnsupportedVersion
        | ConnectRefusal::Busy => {}
    }
}

// ---------------------------------------------------------------------------------------
// Wire format.

trait Message: Serialize + DeserializeOwned + PartialEq + Debug {}
impl<T: Serialize + DeserializeOwned + PartialEq + Debug> Message for T {}

/// The payload (encoding without the length prefix) of `msg`, checking the prefix.
fn payload_of<T: Message>(msg: &T) -> Result<Vec<u8>, TestCaseError> {
    let frame = encode(msg).map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    let header = *frame.first_chunk::<HEADER_LEN>().unwrap();
    let len = payload_len(header).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(len, frame.len() - HEADER_LEN);
    Ok(frame[HEADER_LEN..].to_vec())
}

/// Round trip, every strict prefix refused, appended bytes refused as `Trailing`.
fn wire_properties<T: Message>(msg: &T, extra: &[u8]) -> Result<(), TestCaseError> {
    let payload = payload_of(msg)?;
    let back: T = decode(&payload).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert_eq!(&back, msg);

    for keep in 0..payload.len() {
        let cut = decode::<T>(&payload[..keep]);
        prop_assert!(
            matches!(cut, Err(FrameError::Malformed(_))),
            "prefix of {} of {} bytes gave {:?}",
            keep,
            payload.len(),
            cut
        );
    }

    let longer = [&payload[..], extra].concat();
    let got = decode::<T>(&longer);
    prop_assert!(
        matches!(got, Err(FrameError::Trailing(n)) if n == extra.len()),
        "{} appended bytes gave {:?}",
        extra.len(),
        got
    );
    Ok(())
}

/// Decoding must not panic; whatever decodes must round-trip.
fn decode_is_total<T: Message>(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(msg) = decode::<T>(bytes) {
        let payload = payload_of(&msg)?;
        prop_assert_eq!(decode::<T>(&payload).ok(), Some(msg));
    }
    Ok(())
}

/// `msg`'s encoding with one byte replaced: decoding it must not panic.
fn corrupted<T: Message>(msg: &T, at: Index, byte: u8) -> Result<(), TestCaseError> {
    let mut payload = payload_of(msg)?;
    let i = at.index(payload.len());
    payload[i] = byte;
    decode_is_total::<T>(&payload)
}

fn extra() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..16)
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn request_wire_format(msg in request(), extra in extra()) {
        wire_properties(&msg, &extra)?;
    }

    #[test]
    fn reply_wire_format(msg in reply(), extra in extra()) {
        wire_properties(&msg, &extra)?;
    }

    #[test]
    fn server_msg_wire_format(msg in server_msg(), extra in extra()) {
        wire_properties(&msg, &extra)?;
    }

    #[test]
    fn peer_msg_wire_format(msg in peer_msg(), extra in extra()) {
        wire_properties(&msg, &extra)?;
    }

    #[test]
    fn chat_payload_wire_format(msg in chat_payload(), extra in extra()) {
        wire_properties(&msg, &extra)?;
    }

    #[test]
    fn relay_msg_wire_format(msg in relay_msg(), extra in extra()) {
        wire_properties(&msg, &extra)?;
    }

    #[test]
    fn decode_of_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_is_total::<Request>(&bytes)?;
        decode_is_total::<Reply>(&bytes)?;
        decode_is_total::<ServerMsg>(&bytes)?;
        decode_is_total::<PeerMsg>(&bytes)?;
        decode_is_total::<ChatPayload>(&bytes)?;
        decode_is_total::<RelayMsg>(&bytes)?;
    }

    #[test]
    fn decode_of_corrupted_encodings_never_panics(
        r in request(), s in server_msg(), p in peer_msg(), c in chat_payload(),
        at in any::<Index>(), byte in any::<u8>(),
    ) {
        corrupted(&r, at, byte)?;
        corrupted(&s, at, byte)?;
        corrupted(&p, at, byte)?;
        corrupted(&c, at, byte)?;
    }
}

// ---------------------------------------------------------------------------------------
// Session.

/// An established session pair between two identities made from the given seeds.
fn pair(seed_i: [u8; 32], seed_a: [u8; 32]) -> (Session, Session) {
    let ali = Identity::from_secret_bytes(&seed_i);
    let bianca = Identity::from_secret_bytes(&seed_a);
    let (hi, share_i) = Handshake::start(&ali, Role::Initiator, bianca.public());
    let (ha, share_a) = Handshake::start(&bianca, Role::Acceptor, ali.public());
    (hi.finish(&share_a).unwrap(), ha.finish(&share_i).unwrap())
}

fn plaintexts(min: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), min..8)
}

proptest! {
    // Every case runs a real handshake (slow in a debug build): fewer cases.
    #![proptest_config(config(24))]

    #[test]
    fn seal_then_open_round_trips_in_order(
        seeds in any::<([u8; 32], [u8; 32])>(),
        to_acceptor in plaintexts(0),
        to_initiator in plaintexts(0),
    ) {
        let (mut i, mut a) = pair(seeds.0, seeds.1);
        prop_assert_eq!(i.id(), a.id());
        for (n, msg) in to_acceptor.iter().enumerate() {
            let frame = i.sealer.seal(msg).unwrap();
            prop_assert_eq!(frame.counter, n as u64);
            prop_assert_eq!(frame.ciphertext.len(), msg.len() + 16);
            prop_assert_eq!(&a.opener.open(&frame).unwrap(), msg);
        }
        for msg in &to_initiator {
            let frame = a.sealer.seal(msg).unwrap();
            prop_assert_eq!(&i.opener.open(&frame).unwrap(), msg);
        }
    }

    #[test]
    fn flipped_bit_is_refused_and_does_not_advance(
        seeds in any::<([u8; 32], [u8; 32])>(),
        before in plaintexts(0),
        msg in prop::collection::vec(any::<u8>(), 0..64),
        bit in any::<Index>(),
        counter_bit in 0u32..64,
    ) {
        let (mut i, mut a) = pair(seeds.0, seeds.1);
        for m in &before {
            a.opener.open(&i.sealer.seal(m).unwrap()).unwrap();
        }
        let genuine = i.sealer.seal(&msg).unwrap();

        let mut bad = genuine.clone();
        let b = bit.index(bad.ciphertext.len() * 8);
        bad.ciphertext[b / 8] ^= 1 << (b % 8);
        prop_assert_eq!(a.opener.open(&bad), Err(SessionError::Tampered));

        let mut moved = genuine.clone();
        moved.counter ^= 1 << counter_bit;
        let got = a.opener.open(&moved);
        prop_assert!(
            matches!(got, Err(SessionError::Replayed { .. } | SessionError::OutOfOrder { .. })),
            "{:?}", got
        );

        prop_assert_eq!(a.opener.open(&genuine).unwrap(), msg);
        let next = i.sealer.seal(b"next").unwrap();
        prop_assert_eq!(a.opener.open(&next).unwrap(), b"next".to_vec());
    }

    #[test]
    fn out_of_order_is_refused_and_does_not_advance(
        seeds in any::<([u8; 32], [u8; 32])>(),
        msgs in plaintexts(2),
        at in any::<Index>(),
        other in any::<Index>(),
    ) {
        let (mut i, mut a) = pair(seeds.0, seeds.1);
        let frames: Vec<_> = msgs.iter().map(|m| i.sealer.seal(m).unwrap()).collect();
        let at = at.index(frames.len());
        // Any index but `at`.
        let wrong = (at + 1 + other.index(frames.len() - 1)) % frames.len();
        for f in &frames[..at] {
            a.opener.open(f).unwrap();
        }
        let got = a.opener.open(&frames[wrong]);
        if wrong < at {
            prop_assert_eq!(got, Err(SessionError::Replayed { got: wrong as u64, expected: at as u64 }));
        } else {
            prop_assert_eq!(got, Err(SessionError::OutOfOrder { got: wrong as u64, expected: at as u64 }));
        }
        for (f, m) in frames[at..].iter().zip(&msgs[at..]) {
            prop_assert_eq!(&a.opener.open(f).unwrap(), m);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Identity.

/// Reads a transcript back into its label and parts; `None` if it is not well formed.
fn parse_transcript(mut t: &[u8]) -> Option<(String, Vec<Vec<u8>>)> {
    fn field<'a>(t: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (len, rest) = t.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (value, rest) = rest.split_at(len);
        *t = rest;
        Some(value)
    }
    let label = String::from_utf8(field(&mut t)?.to_vec()).ok()?;
    let mut parts = Vec::new();
    while !t.is_empty() {
        parts.push(field(&mut t)?.to_vec());
    }
    Some((label, parts))
}

fn transcript_of(label: &str, parts: &[Vec<u8>]) -> Vec<u8> {
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    transcript(label, &refs)
}

fn parts() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 0..6)
}

proptest! {
    #![proptest_config(config(256))]

    /// The transcript has a left inverse, so it is injective.
    #[test]
    fn transcript_parses_back(label in ".{0,12}", parts in parts()) {
        let t = transcript_of(&label, &parts);
        prop_assert_eq!(parse_transcript(&t), Some((label, parts)));
    }

    #[test]
    fn different_part_lists_give_different_transcripts(
        l1 in "[a-c]{0,2}", p1 in parts(), l2 in "[a-c]{0,2}", p2 in parts(),
    ) {
        if (&l1, &p1) != (&l2, &p2) {
            prop_assert_ne!(transcript_of(&l1, &p1), transcript_of(&l2, &p2));
        }
    }

    /// The near misses: the same bytes cut into parts at other places.
    #[test]
    fn resplitting_the_same_bytes_gives_a_different_transcript(
        p in parts(), cuts in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        let joined = p.concat();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(joined.len() + 1)).collect();
        points.sort_unstable();
        let mut resplit = Vec::new();
        let mut from = 0;
        for to in points {
            resplit.push(joined[from..to].to_vec());
            from = to;
        }
        resplit.push(joined[from..].to_vec());
        if resplit != p {
            prop_assert_ne!(transcript_of("l", &p), transcript_of("l", &resplit));
        }
    }

    #[test]
    fn safety_number_is_symmetric(a in key(), b in key()) {
        let n = safety_number(&a, &b);
        prop_assert_eq!(&n, &safety_number(&b, &a));
        let groups: Vec<&str> = n.split(' ').collect();
        prop_assert_eq!(groups.len(), 12);
        prop_assert!(groups.iter().all(|g| g.len() == 5 && g.bytes().all(|c| c.is_ascii_digit())));
    }

    #[test]
    fn fingerprint_parses_back_from_display(bytes in any::<[u8; 32]>()) {
        let fp = Fingerprint(bytes);
        prop_assert_eq!(Fingerprint::parse(&fp.to_string()), Some(fp));
        prop_assert_eq!(Fingerprint::parse(&fp.to_string().to_lowercase().replace(' ', ":")), Some(fp));
    }

    #[test]
    fn public_key_parses_back_from_hex(seed in any::<[u8; 32]>()) {
        let key = Identity::from_secret_bytes(&seed).public();
        prop_assert_eq!(PublicKey::from_hex(&key.to_hex()), Ok(key));
        prop_assert_eq!(PublicKey::from_hex(&format!(" {}\n", key.to_hex().to_uppercase())), Ok(key));
    }
}
