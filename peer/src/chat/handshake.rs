//! Setting a chat up: the connect request, the acceptor's checks, the key exchange.
//!
//! On a direct path the dialer already pinned the acceptor's key in TLS (it got the key
//! from its own lookup). The acceptor only knows *some* ed25519 key dialed it; it learns
//! whose by looking the claimed name up at the directory itself ([`verify_initiator`])
//! and then applying the user's pins.
//!
//! On a relayed path there is no TLS between the peers. The acceptor checks that the
//! claimed name is the user the directory paired it with, looks the name up, applies the
//! pins to the key the directory gives ([`verify_relayed_initiator`]; the address check
//! is skipped, since the chat comes through the directory), and the end-to-end key
//! exchange then proves the key: each key share is signed by its sender's identity key
//! over both identity keys, and each side checks the other's against the key it looked
//! up (dialer) or was given for the claimed name (acceptor). Both sides then exchange a
//! sealed confirmation ([`CONFIRMATION`]) before the chat counts as open, so a key share
//! replayed from an earlier session (by the relay, say) is refused too: only the holder
//! of the matching ephemeral secret can seal it.
//!
//! Every step is bounded by [`HANDSHAKE_TIMEOUT`]; any failure ends the transport with a
//! code (and, direct, a reason) the other side can show.

use std::net::SocketAddr;

use proto::frame::{self, FrameError};
use proto::message::{ConnectRefusal, PeerInfo, PeerMsg};
use proto::names::UserName;
use proto::session::{Handshake, Role, Session, SessionError};
use proto::{Identity, PublicKey};
use tokio::time::timeout;

use super::transport::{Carrier, CloseInfo, Path, Transport, relay_code_text};
use super::{
    CLOSE_TIMEOUT, CODE_ABORT, CODE_REFUSED, CODE_TIMEOUT, CODE_VIOLATION, ChatError, ChatEvents,
    ChatHandle, HANDSHAKE_TIMEOUT, application_close_text, close_reason_bytes, session,
};
use crate::endpoint;

/// The plaintext both sides seal first on a relayed path: key confirmation.
pub const CONFIRMATION: &[u8] = b"natter-relayed-key-confirmation-v1";

/// A chat that passed its handshake, ready to run.
pub(super) struct Established {
    pub session: Session,
    pub peer: UserName,
    pub peer_key: PublicKey,
    pub role: Role,
    /// Opened for room messages or a quick message rather than as a chat.
    pub background: bool,
}

/// Dialer side: asks the other end of `conn` (from [`endpoint::dial_peer`], which pinned
/// `peer.identity`) for a chat, introducing ourselves as `me`.
///
/// Fails with [`ChatError::Refused`] when the acceptor says no, and with
/// [`ChatError::TlsRejected`] when its TLS stack did not accept our certificate (with TLS
/// 1.3 that only shows once the connection is used). The connection is closed on failure.
pub async fn initiate(
    conn: quinn::Connection,
    identity: &Identity,
    me: &UserName,
    peer: &PeerInfo,
) -> Result<(ChatHandle, ChatEvents), ChatError> {
    initiate_with(conn, identity, me, peer, false).await
}

/// Like [`initiate`]; with `background`, the session is for room messages or a quick
/// message and the acceptor is asked not to make it its current chat.
///
/// `conn` may also be a connection the other peer dialed to us while punching through
/// NATs: either way its TLS handshake must have proven `peer.identity`.
pub async fn initiate_with(
    conn: quinn::Connection,
    identity: &Identity,
    me: &UserName,
    peer: &PeerInfo,
    background: bool,
) -> Result<(ChatHandle, ChatEvents), ChatError> {
    let carrier = Carrier::Direct(conn.clone());
    let opened = async {
        if endpoint::remote_key(&conn) != Some(peer.identity) {
            return Err(ChatError::WrongKey);
        }
        match timeout(HANDSHAKE_TIMEOUT, conn.open_bi()).await {
            Err(_) => Err(ChatError::Timeout("a stream to open")),
            Ok(Err(e)) => Err(connection_error(CloseInfo::Quic(e))),
            Ok(Ok(streams)) => Ok(streams),
        }
    }
    .await;
    match opened {
        Ok((send, recv)) => {
            let transport = Transport {
                send,
                recv,
                carrier,
                path: Path::Direct {
                    remote: conn.remote_address(),
                    tls_key: peer.identity,
                },
                partner: None,
            };
            initiate_over(transport, identity, me, peer, background).await
        }
        Err(e) => {
            close_after(&carrier, &e);
            Err(e)
        }
    }
}

/// Dialer side over any transport (a direct stream, or a relay stream from
/// [`crate::directory_client::DirectoryClient::open_relay`]). `peer.identity` must be
/// the key we looked up and checked against our pins: on a relayed path it is what the
/// acceptor's key share is verified against.
pub async fn initiate_over(
    mut transport: Transport,
    identity: &Identity,
    me: &UserName,
    peer: &PeerInfo,
    background: bool,
) -> Result<(ChatHandle, ChatEvents), ChatError> {
    match dial(&mut transport, identity, me, peer, background).await {
        Ok(established) => Ok(session::start(transport, established)),
        Err(e) => {
            close_after(&transport.carrier, &e);
            transport.end_streams();
            Err(e)
        }
    }
}

/// Acceptor side: answers the chat request arriving on `conn` (from our endpoint's
/// `accept`, or a connection we dialed to punch through NATs), introducing ourselves as
/// `me`.
///
/// `lookup` asks the directory about the claimed initiator (`Ok(None)`: not known / not
/// logged in; `Err`: the refusal to send, normally [`ConnectRefusal::DirectoryUnavailable`]
/// when the directory could not be asked, or [`ConnectRefusal::Busy`] when the caller
/// bounds lookups). `pin_check` then applies the
/// user's pins (trust on first use) and may refuse, normally with
/// [`ConnectRefusal::PinnedKeyChanged`]. A refusal is sent to the dialer and returned as
/// [`ChatError::RefusedIncoming`]. The connection is closed on any failure.
pub async fn accept<L, P>(
    conn: quinn::Connection,
    identity: &Identity,
    me: &UserName,
    lookup: L,
    pin_check: P,
) -> Result<(ChatHandle, ChatEvents), ChatError>
where
    L: AsyncFnOnce(&str) -> Result<Option<PeerInfo>, ConnectRefusal>,
    P: FnOnce(&str, &PublicKey) -> Result<(), ConnectRefusal>,
{
    let carrier = Carrier::Direct(conn.clone());
    let opened = async {
        let key = endpoint::remote_key(&conn).ok_or_else(|| {
            ChatError::Protocol("the dialer presented no ed25519 certificate".into())
        })?;
        match timeout(HANDSHAKE_TIMEOUT, conn.accept_bi()).await {
            Err(_) => Err(ChatError::Timeout("the dialer to open a stream")),
            Ok(Err(e)) => Err(connection_error(CloseInfo::Quic(e))),
            Ok(Ok((send, recv))) => Ok((key, send, recv)),
        }
    }
    .await;
    match opened {
        Ok((key, send, recv)) => {
            let transport = Transport {
                send,
                recv,
                carrier,
                path: Path::Direct {
                    remote: conn.remote_address(),
                    tls_key: key,
                },
                partner: None,
            };
            accept_over(transport, identity, me, lookup, pin_check).await
        }
        Err(e) => {
            close_after(&carrier, &e);
            Err(e)
        }
    }
}

/// Acceptor side over any transport (see [`accept`] for `lookup` and `pin_check`). On a
/// relayed path the initiator's key is the one the directory gives for the claimed name,
/// and its key share must be signed by it.
pub async fn accept_over<L, P>(
    mut transport: Transport,
    identity: &Identity,
    me: &UserName,
    lookup: L,
    pin_check: P,
) -> Result<(ChatHandle, ChatEvents), ChatError>
where
    L: AsyncFnOnce(&str) -> Result<Option<PeerInfo>, ConnectRefusal>,
    P: FnOnce(&str, &PublicKey) -> Result<(), ConnectRefusal>,
{
    match answer(&mut transport, identity, me, lookup, pin_check).await {
        Ok(established) => Ok(session::start(transport, established)),
        Err(e) => {
            close_after(&transport.carrier, &e);
            transport.end_streams();
            Err(e)
        }
    }
}

/// Refuses the chat request arriving on `conn` without looking at it, e.g. with
/// [`ConnectRefusal::Busy`] when the app has too many chats open.
pub async fn refuse(conn: quinn::Connection, reason: ConnectRefusal) {
    if let Ok(Ok((mut send, _recv))) = timeout(HANDSHAKE_TIMEOUT, conn.accept_bi()).await {
        let refused = PeerMsg::Refused {
            reason: reason.clone(),
        };
        let _ = timeout(CLOSE_TIMEOUT, frame::write_frame(&mut send, &refused)).await;
        let _ = send.finish();
        // The dialer closes once it has read it; our close could overtake the reply.
        let _ = timeout(CLOSE_TIMEOUT, conn.closed()).await;
    }
    conn.close(CODE_REFUSED, close_reason_bytes(&reason.to_string()));
}

/// Refuses a chat request arriving on a relay stream, e.g. with
/// [`ConnectRefusal::Busy`]: says why and finishes the stream.
pub async fn refuse_over(mut transport: Transport, reason: ConnectRefusal) {
    send_refusal(&mut transport, &reason).await;
    transport
        .carrier
        .close(CODE_REFUSED, close_reason_bytes(&reason.to_string()));
    transport.end_streams();
}

/// The acceptor's decision about a connect request, given what the directory said about
/// the claimed initiator (`info`, `None` when it does not know them), the key the
/// connection proved in TLS and the address it comes from.
///
/// Accepts only when the directory knows `claimed` under that very name, with that key,
/// at that address (IPv4-mapped IPv6 addresses compare equal to their IPv4 form).
pub fn verify_initiator(
    claimed: &str,
    handshake_key: &PublicKey,
    remote: SocketAddr,
    info: Option<&PeerInfo>,
) -> Result<(), ConnectRefusal> {
    let info = info.ok_or(ConnectRefusal::UnknownInitiator)?;
    if info.user != claimed {
        // The directory answered about someone else: treat as not known.
        return Err(ConnectRefusal::UnknownInitiator);
    }
    if info.identity != *handshake_key {
        return Err(ConnectRefusal::KeyMismatch);
    }
    let remote = proto::addr::canonical(remote);
    if !info
        .all_addresses()
        .into_iter()
        .any(|a| proto::addr::canonical(a) == remote)
    {
        return Err(ConnectRefusal::AddressMismatch);
    }
    Ok(())
}

/// The acceptor's decision about a connect request on a relayed path: the claimed name
/// must be the user the directory paired us with (`partner`) and known to the directory
/// (`info`). Returns the key the initiator's key share must then be signed with. There
/// is no address to check: the chat comes through the directory.
pub fn verify_relayed_initiator(
    claimed: &str,
    partner: &str,
    info: Option<&PeerInfo>,
) -> Result<PublicKey, ConnectRefusal> {
    let info = info.ok_or(ConnectRefusal::UnknownInitiator)?;
    if info.user != claimed || partner != claimed {
        return Err(ConnectRefusal::UnknownInitiator);
    }
    Ok(info.identity)
}

async fn dial(
    t: &mut Transport,
    identity: &Identity,
    me: &UserName,
    peer: &PeerInfo,
    background: bool,
) -> Result<Established, ChatError> {
    let connect = PeerMsg::Connect {
        version: proto::PROTOCOL_VERSION,
        initiator: me.clone(),
        background,
    };
    write_msg(t, &connect, "our connect request to be sent").await?;
    match read_msg(t, "the answer to our connect request").await? {
        PeerMsg::Accepted { user } if user == peer.user => {}
        PeerMsg::Accepted { user } => {
            return Err(ChatError::Protocol(format!(
                "expected {} but the other side calls itself {}",
                peer.user,
                printable(&user)
            )));
        }
        PeerMsg::Refused { reason } => return Err(ChatError::Refused(reason)),
        other => return Err(unexpected(&other, "the answer to a connect request")),
    }
    let session = exchange_keys(t, identity, Role::Initiator, peer.identity).await?;
    Ok(Established {
        session,
        peer: peer.user.clone(),
        peer_key: peer.identity,
        role: Role::Initiator,
        background,
    })
}

async fn answer<L, P>(
    t: &mut Transport,
    identity: &Identity,
    me: &UserName,
    lookup: L,
    pin_check: P,
) -> Result<Established, ChatError>
where
    L: AsyncFnOnce(&str) -> Result<Option<PeerInfo>, ConnectRefusal>,
    P: FnOnce(&str, &PublicKey) -> Result<(), ConnectRefusal>,
{
    let (version, claimed, background) = match read_msg(t, "a connect request").await? {
        PeerMsg::Connect {
            version,
            initiator,
            background,
        } => (version, initiator, background),
        other => return Err(unexpected(&other, "a connect request")),
    };
    let decision = decide(t, version, &claimed, lookup, pin_check).await;
    let key = match decision {
        Ok(key) => key,
        Err(reason) => {
            tracing::debug!(claimed = %printable(&claimed), %reason, "refusing chat");
            send_refusal(t, &reason).await;
            return Err(ChatError::RefusedIncoming {
                claimed: printable(&claimed),
                reason,
            });
        }
    };
    let accepted = PeerMsg::Accepted { user: me.clone() };
    write_msg(t, &accepted, "our acceptance to be sent").await?;
    let session = exchange_keys(t, identity, Role::Acceptor, key).await?;
    Ok(Established {
        session,
        peer: claimed,
        peer_key: key,
        role: Role::Acceptor,
        background,
    })
}

/// Everything the acceptor checks, in order: version, name syntax, directory (name, key,
/// address or relay partner), pin. Returns the initiator's key.
async fn decide<L, P>(
    t: &Transport,
    version: u32,
    claimed: &str,
    lookup: L,
    pin_check: P,
) -> Result<PublicKey, ConnectRefusal>
where
    L: AsyncFnOnce(&str) -> Result<Option<PeerInfo>, ConnectRefusal>,
    P: FnOnce(&str, &PublicKey) -> Result<(), ConnectRefusal>,
{
    if version != proto::PROTOCOL_VERSION {
        return Err(ConnectRefusal::UnsupportedVersion);
    }
    if proto::names::check_username(claimed).is_err() {
        // Not a name anyone can have; do not bother the directory with it.
        return Err(ConnectRefusal::UnknownInitiator);
    }
    if t.partner.as_deref().is_some_and(|p| p != claimed) {
        // The directory paired us with someone else than who speaks: no need to ask it.
        return Err(ConnectRefusal::UnknownInitiator);
    }
    let info = match timeout(HANDSHAKE_TIMEOUT, lookup(claimed)).await {
        Ok(Ok(info)) => info,
        Ok(Err(reason)) => return Err(reason),
        Err(_) => {
            tracing::debug!(%claimed, "directory lookup timed out");
            return Err(ConnectRefusal::DirectoryUnavailable);
        }
    };
    let key = match &t.path {
        Path::Direct { remote, tls_key } => {
            verify_initiator(claimed, tls_key, *remote, info.as_ref())?;
            *tls_key
        }
        Path::Relayed { .. } => {
            let partner = t.partner.as_deref().unwrap_or_default();
            let key = verify_relayed_initiator(claimed, partner, info.as_ref())?;
            tracing::debug!(
                %claimed,
                "relayed chat: address check skipped; the key share must be signed by the directory's key"
            );
            key
        }
    };
    pin_check(claimed, &key)?;
    Ok(key)
}

/// Sends both key shares and derives the end-to-end session; on a relayed path, also
/// exchanges sealed confirmations.
async fn exchange_keys(
    t: &mut Transport,
    identity: &Identity,
    role: Role,
    peer_key: PublicKey,
) -> Result<Session, ChatError> {
    let (handshake, ours) = Handshake::start(identity, role, peer_key);
    write_msg(t, &PeerMsg::KeyShare(ours), "our key share to be sent").await?;
    let theirs = match read_msg(t, "the other side's key share").await? {
        PeerMsg::KeyShare(share) => share,
        other => return Err(unexpected(&other, "a key share")),
    };
    let mut session = handshake.finish(&theirs)?;
    if t.path.is_relayed() {
        let confirmation = session.sealer.seal(CONFIRMATION)?;
        write_msg(
            t,
            &PeerMsg::Sealed(confirmation),
            "our key confirmation to be sent",
        )
        .await?;
        let theirs = match read_msg(t, "the other side's key confirmation").await? {
            PeerMsg::Sealed(sealed) => sealed,
            other => return Err(unexpected(&other, "a key confirmation")),
        };
        if session.opener.open(&theirs)? != CONFIRMATION {
            return Err(ChatError::Handshake(SessionError::Tampered));
        }
    }
    Ok(session)
}

/// Sends a refusal. Directly, the dialer closes the connection once it has read it (our
/// own close could overtake the reply), so we wait for that, at most [`CLOSE_TIMEOUT`];
/// a relay stream is simply finished.
async fn send_refusal(t: &mut Transport, reason: &ConnectRefusal) {
    let refused = PeerMsg::Refused {
        reason: reason.clone(),
    };
    let _ = timeout(CLOSE_TIMEOUT, frame::write_frame(&mut t.send, &refused)).await;
    let _ = t.send.finish();
    if t.carrier.close_discards() {
        let _ = timeout(CLOSE_TIMEOUT, t.carrier.closed()).await;
    }
}

async fn write_msg(t: &mut Transport, msg: &PeerMsg, step: &'static str) -> Result<(), ChatError> {
    match timeout(HANDSHAKE_TIMEOUT, frame::write_frame(&mut t.send, msg)).await {
        Err(_) => Err(ChatError::Timeout(step)),
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(frame_error(&t.carrier, e)),
    }
}

async fn read_msg(t: &mut Transport, step: &'static str) -> Result<PeerMsg, ChatError> {
    match timeout(
        HANDSHAKE_TIMEOUT,
        frame::read_frame::<_, PeerMsg>(&mut t.recv),
    )
    .await
    {
        Err(_) => Err(ChatError::Timeout(step)),
        Ok(Ok(Some(msg))) => Ok(msg),
        Ok(Ok(None)) => {
            t.carrier.note_finished();
            Err(match t.carrier.close_info() {
                Some(CloseInfo::RelayFinished) | None => {
                    ChatError::Protocol(format!("the stream ended while waiting for {step}"))
                }
                Some(info) => connection_error(info),
            })
        }
        Ok(Err(e)) => Err(frame_error(&t.carrier, e)),
    }
}

/// A frame could not be read or written: the transport's fate explains an I/O error
/// best; anything else is the other side sending garbage.
fn frame_error(carrier: &Carrier, e: FrameError) -> ChatError {
    match e {
        FrameError::Io(io) => {
            carrier.note_io_error(&io);
            match carrier.close_info() {
                Some(closed) => connection_error(closed),
                None => ChatError::ConnectionLost(io.to_string()),
            }
        }
        other => ChatError::Protocol(other.to_string()),
    }
}

/// Maps how a transport ended to what the user should read.
fn connection_error(info: CloseInfo) -> ChatError {
    use quinn::ConnectionError as E;
    match info {
        // 0x100..=0x1ff: a TLS alert. The acceptor's TLS refused our certificate.
        CloseInfo::Quic(E::ConnectionClosed(close)) if is_crypto(close.error_code) => {
            ChatError::TlsRejected(close.to_string())
        }
        CloseInfo::Quic(E::TransportError(err)) if is_crypto(err.code) => {
            ChatError::TlsRejected(err.to_string())
        }
        CloseInfo::Quic(E::ApplicationClosed(close)) => ChatError::ConnectionLost(format!(
            "the other side closed the connection: {}",
            application_close_text(&close)
        )),
        CloseInfo::Quic(E::TimedOut) => {
            ChatError::ConnectionLost("the other side stopped answering".into())
        }
        CloseInfo::Quic(other) => ChatError::ConnectionLost(other.to_string()),
        CloseInfo::RelayLocal => ChatError::ConnectionLost("we ended the relayed chat".into()),
        CloseInfo::RelayFinished => {
            ChatError::ConnectionLost("the other side ended the relay stream".into())
        }
        CloseInfo::RelayReset(code) => ChatError::ConnectionLost(format!(
            "the other side ended the relayed chat: {}",
            relay_code_text(code)
        )),
        CloseInfo::DirectoryLost(e) => ChatError::ConnectionLost(format!(
            "lost the directory connection that carried the relay: {e}"
        )),
    }
}

fn is_crypto(code: quinn::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

fn unexpected(msg: &PeerMsg, wanted: &str) -> ChatError {
    let got = match msg {
        PeerMsg::Connect { .. } => "a connect request",
        PeerMsg::Accepted { .. } => "an acceptance",
        PeerMsg::Refused { .. } => "a refusal",
        PeerMsg::KeyShare(_) => "a key share",
        PeerMsg::Sealed(_) => "a sealed message",
    };
    ChatError::Protocol(format!("expected {wanted}, got {got}"))
}

/// Ends the transport after a failed handshake, with a code that says why. A refusal
/// we received is closed by us (the acceptor waits for that); one we sent was closed
/// when the dialer read it, or is closed here after the wait.
fn close_after(carrier: &Carrier, e: &ChatError) {
    let code = match e {
        ChatError::Refused(_) | ChatError::RefusedIncoming { .. } => CODE_REFUSED,
        ChatError::Timeout(_) => CODE_TIMEOUT,
        ChatError::Protocol(_) | ChatError::Handshake(_) | ChatError::WrongKey => CODE_VIOLATION,
        _ => CODE_ABORT,
    };
    carrier.close(code, close_reason_bytes(&e.to_string()));
}

/// A name from the network, made safe to print: escaped and at most 40 characters.
fn printable(name: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = name
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if name.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn info(user: &str, key: PublicKey, observed: &str, reported: &[&str]) -> PeerInfo {
        PeerInfo {
            user: user.parse().unwrap(),
            identity: key,
            observed: observed.parse().unwrap(),
            addresses: reported.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn key() -> PublicKey {
        Identity::generate().public()
    }

    #[test]
    fn accepts_the_directory_record() {
        let k = key();
        let ali = info("ali", k, "203.0.113.5:4000", &["192.168.1.9:4000"]);
        let from_public = "203.0.113.5:4000".parse().unwrap();
        let from_lan = "192.168.1.9:4000".parse().unwrap();
        assert_eq!(verify_initiator("ali", &k, from_public, Some(&ali)), Ok(()));
        assert_eq!(verify_initiator("ali", &k, from_lan, Some(&ali)), Ok(()));
    }

    #[test]
    fn unknown_initiator() {
        let k = key();
        let addr = "203.0.113.5:4000".parse().unwrap();
        assert_eq!(
            verify_initiator("ali", &k, addr, None),
            Err(ConnectRefusal::UnknownInitiator)
        );
        // The directory answered about another user: never good enough.
        let bob = info("bob", k, "203.0.113.5:4000", &[]);
        assert_eq!(
            verify_initiator("ali", &k, addr, Some(&bob)),
            Err(ConnectRefusal::UnknownInitiator)
        );
    }

    #[test]
    fn key_mismatch_wins_over_address() {
        let ali = info("ali", key(), "203.0.113.5:4000", &[]);
        let mallory_key = key();
        let elsewhere = "198.51.100.7:5000".parse().unwrap();
        assert_eq!(
            verify_initiator("ali", &mallory_key, elsewhere, Some(&ali)),
            Err(ConnectRefusal::KeyMismatch)
        );
        let same_addr = "203.0.113.5:4000".parse().unwrap();
        assert_eq!(
            verify_initiator("ali", &mallory_key, same_addr, Some(&ali)),
            Err(ConnectRefusal::KeyMismatch)
        );
    }

    #[test]
    fn address_mismatch() {
        let k = key();
        let ali = info("ali", k, "203.0.113.5:4000", &["192.168.1.9:4000"]);
        for other in ["203.0.113.5:4001", "203.0.113.6:4000", "10.0.0.1:4000"] {
            assert_eq!(
                verify_initiator("ali", &k, other.parse().unwrap(), Some(&ali)),
                Err(ConnectRefusal::AddressMismatch),
                "{other}"
            );
        }
    }

    #[test]
    fn ipv4_mapped_addresses_compare_as_ipv4() {
        let k = key();
        let mapped = SocketAddr::new(Ipv4Addr::new(203, 0, 113, 5).to_ipv6_mapped().into(), 4000);
        // Connection seen on a dual-stack socket, directory lists IPv4.
        let ali = info("ali", k, "203.0.113.5:4000", &[]);
        assert_eq!(verify_initiator("ali", &k, mapped, Some(&ali)), Ok(()));
        // And the other way round.
        let ali_mapped = PeerInfo {
            observed: mapped,
            ..ali
        };
        let plain = "203.0.113.5:4000".parse().unwrap();
        assert_eq!(
            verify_initiator("ali", &k, plain, Some(&ali_mapped)),
            Ok(())
        );
        // A real IPv6 address is not confused with anything IPv4.
        let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 4000);
        assert_eq!(
            verify_initiator("ali", &k, v6, Some(&ali_mapped)),
            Err(ConnectRefusal::AddressMismatch)
        );
    }

    #[test]
    fn canonical_addr_drops_flow_info() {
        let a: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        let with_flow = match a {
            SocketAddr::V6(v6) => SocketAddr::V6(std::net::SocketAddrV6::new(*v6.ip(), 4000, 7, 0)),
            v4 => v4,
        };
        assert_ne!(a, with_flow);
        assert_eq!(proto::addr::canonical(a), proto::addr::canonical(with_flow));
    }

    #[test]
    fn relayed_initiator_must_be_the_relay_partner_and_known() {
        let k = key();
        let ali = info("ali", k, "203.0.113.5:4000", &[]);
        // The key share must then be signed by the directory's key for the name.
        assert_eq!(verify_relayed_initiator("ali", "ali", Some(&ali)), Ok(k));
        // The directory paired us with someone else than who speaks.
        assert_eq!(
            verify_relayed_initiator("ali", "mallory", Some(&ali)),
            Err(ConnectRefusal::UnknownInitiator)
        );
        // Not logged in, or the directory answered about someone else.
        assert_eq!(
            verify_relayed_initiator("ali", "ali", None),
            Err(ConnectRefusal::UnknownInitiator)
        );
        let bob = info("bob", k, "203.0.113.5:4000", &[]);
        assert_eq!(
            verify_relayed_initiator("ali", "ali", Some(&bob)),
            Err(ConnectRefusal::UnknownInitiator)
        );
    }

    #[test]
    fn printable_names_are_escaped_and_short() {
        assert_eq!(printable("ali"), "ali");
        assert_eq!(printable("a\nb"), "a\\nb");
        let long = "x".repeat(100);
        assert_eq!(printable(&long).chars().count(), 41);
    }
}
