//! Chat sessions between real QUIC endpoints on 127.0.0.1.
//!
//! The directory is stood in for by a table built from the endpoints' real addresses and
//! keys; the acceptor's `lookup` answers from it. Nothing here sleeps to synchronise:
//! every wait is for an event, bounded by [`WAIT`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peer::chat::{self, ChatError, ChatEvent, ChatEvents, ChatHandle, EndReason};
use peer::endpoint;
use proto::frame;
use proto::message::{ChatPayload, ConnectRefusal, PeerInfo, PeerMsg};
use proto::session::Role;
use proto::{Identity, PublicKey};
use testkit::{EndpointPeer, RawDialer};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// Longest wait for anything (the endpoints' idle timeout is 8 s).
const WAIT: Duration = Duration::from_secs(15);

type Chat = (ChatHandle, ChatEvents);
type Directory = HashMap<String, PeerInfo>;

fn directory(peers: &[&EndpointPeer]) -> Directory {
    peers
        .iter()
        .map(|p| (p.name.to_string(), p.info()))
        .collect()
}

/// `from` dials `to` (pinning `to`'s real key) and asks for a chat as `claim`.
async fn dial(from: &EndpointPeer, to: &EndpointPeer, claim: &str) -> Result<Chat, ChatError> {
    let conn = endpoint::dial_peer(&from.endpoint, &from.identity, to.addr(), to.key())
        .await
        .expect("TLS handshake");
    let claim = claim
        .parse()
        .expect("a valid name (a bad one cannot be sent)");
    chat::initiate(conn, &from.identity, &claim, &to.info()).await
}

/// Accepts one chat at `at`, looking initiators up in `dir`, with no pins.
async fn accept_one(at: &EndpointPeer, dir: &Directory) -> Result<Chat, ChatError> {
    accept_with(at, dir, |_: &str, _: &PublicKey| Ok(())).await
}

async fn accept_with<P>(at: &EndpointPeer, dir: &Directory, pin_check: P) -> Result<Chat, ChatError>
where
    P: FnOnce(&str, &PublicKey) -> Result<(), ConnectRefusal>,
{
    let incoming = at.endpoint.accept().await.expect("endpoint open");
    let conn = incoming.await.expect("TLS handshake");
    let dir = dir.clone();
    let lookup = async move |name: &str| Ok(dir.get(name).cloned());
    chat::accept(
        conn,
        &at.identity,
        &at.name.parse().unwrap(),
        lookup,
        pin_check,
    )
    .await
}

/// `from` dials `to` under its own name; both sides' chats.
async fn connect(from: &EndpointPeer, to: &EndpointPeer, dir: &Directory) -> (Chat, Chat) {
    let (dialed, accepted) = tokio::join!(dial(from, to, from.name), accept_one(to, dir));
    (dialed.expect("dialer"), accepted.expect("acceptor"))
}

async fn next(events: &mut ChatEvents) -> ChatEvent {
    timeout(WAIT, events.next())
        .await
        .expect("an event in time")
        .expect("events still open")
}

/// Skips to the `Ended` event.
async fn ended(events: &mut ChatEvents) -> (EndReason, Vec<u64>) {
    loop {
        if let ChatEvent::Ended {
            reason,
            undelivered,
        } = next(events).await
        {
            assert!(
                timeout(WAIT, events.next()).await.unwrap().is_none(),
                "Ended is the last event"
            );
            return (reason, undelivered);
        }
    }
}

async fn expect_message(events: &mut ChatEvents, id: u64, text: &str) {
    match next(events).await {
        ChatEvent::Message {
            id: got, text: t, ..
        } => {
            assert_eq!((got, t.as_str()), (id, text));
        }
        other => panic!("expected message {id}, got {other:?}"),
    }
}

async fn expect_delivered(events: &mut ChatEvents, id: u64) {
    assert_eq!(next(events).await, ChatEvent::Delivered { id });
}

/// Sends `text` from one side and checks it arrives on the other and is acknowledged.
async fn exchange(from: &mut Chat, to: &mut Chat, text: &str) -> u64 {
    let id = from.0.send(text).await.unwrap();
    expect_message(&mut to.1, id, text).await;
    expect_delivered(&mut from.1, id).await;
    id
}

#[tokio::test]
async fn messages_flow_both_ways_and_close_ends_both_sides() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let dir = directory(&[&ali, &bianca]);
    let (mut a, mut b) = connect(&ali, &bianca, &dir).await;

    assert_eq!(
        (a.0.peer().as_str(), b.0.peer().as_str()),
        ("bianca", "ali")
    );
    assert_eq!((a.0.peer_key(), b.0.peer_key()), (bianca.key(), ali.key()));
    assert_eq!((a.0.role(), b.0.role()), (Role::Initiator, Role::Acceptor));
    assert_eq!(a.0.session_id(), b.0.session_id());

    for (n, text) in ["one", "two", "three"].into_iter().enumerate() {
        assert_eq!(a.0.send(text).await.unwrap(), n as u64 + 1);
    }
    for (n, text) in ["one", "two", "three"].into_iter().enumerate() {
        expect_message(&mut b.1, n as u64 + 1, text).await;
    }
    for id in 1..=3 {
        expect_delivered(&mut a.1, id).await;
    }
    // Ids count per direction.
    assert_eq!(exchange(&mut b, &mut a, "hi ali").await, 1);
    assert_eq!(exchange(&mut a, &mut b, "four").await, 4);

    a.0.close().await;
    assert_eq!(ended(&mut a.1).await, (EndReason::ClosedByUs, vec![]));
    assert_eq!(ended(&mut b.1).await, (EndReason::ClosedByPeer, vec![]));
    assert!(matches!(
        a.0.send("too late").await,
        Err(ChatError::Ended(EndReason::ClosedByUs))
    ));
    assert!(matches!(
        b.0.send("too late").await,
        Err(ChatError::Ended(EndReason::ClosedByPeer))
    ));

    // Bianca's endpoint goes on accepting; this time she ends it.
    let (mut a, mut b) = connect(&ali, &bianca, &dir).await;
    assert_eq!(exchange(&mut a, &mut b, "again").await, 1);
    assert_eq!(exchange(&mut b, &mut a, "welcome back").await, 1);
    b.0.close().await;
    assert_eq!(ended(&mut b.1).await, (EndReason::ClosedByUs, vec![]));
    assert_eq!(ended(&mut a.1).await, (EndReason::ClosedByPeer, vec![]));
}

#[tokio::test]
async fn messages_sent_just_before_close_are_still_acknowledged() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let dir = directory(&[&ali, &bianca]);
    let (a, mut b) = connect(&ali, &bianca, &dir).await;
    for id in 1..=3 {
        assert_eq!(a.0.send(&format!("m{id}")).await.unwrap(), id);
    }
    a.0.close().await;
    let (_, mut a_events) = a;
    for id in 1..=3 {
        expect_delivered(&mut a_events, id).await;
    }
    assert_eq!(ended(&mut a_events).await, (EndReason::ClosedByUs, vec![]));
    for id in 1..=3 {
        expect_message(&mut b.1, id, &format!("m{id}")).await;
    }
    assert_eq!(ended(&mut b.1).await, (EndReason::ClosedByPeer, vec![]));
}

#[tokio::test]
async fn dropping_every_handle_closes_the_chat() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let dir = directory(&[&ali, &bianca]);
    let ((a_handle, mut a_events), mut b) = connect(&ali, &bianca, &dir).await;
    let clone = a_handle.clone();
    drop(a_handle);
    // One clone left: the chat goes on.
    let id = clone.send("still here").await.unwrap();
    expect_message(&mut b.1, id, "still here").await;
    expect_delivered(&mut a_events, id).await;
    drop(clone);
    assert_eq!(ended(&mut a_events).await, (EndReason::ClosedByUs, vec![]));
    assert_eq!(ended(&mut b.1).await, (EndReason::ClosedByPeer, vec![]));
}

#[tokio::test]
async fn dropping_the_events_closes_the_chat() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let dir = directory(&[&ali, &bianca]);
    let ((a_handle, a_events), mut b) = connect(&ali, &bianca, &dir).await;
    drop(a_events);
    assert_eq!(ended(&mut b.1).await, (EndReason::ClosedByPeer, vec![]));
    // Bianca saw ali's goodbye, so ali's chat takes no more messages.
    let late = timeout(WAIT, a_handle.send("anyone?")).await.unwrap();
    assert!(
        matches!(late, Err(ChatError::Ended(EndReason::ClosedByUs))),
        "{late:?}"
    );
}

#[tokio::test]
async fn message_size_limit_is_checked_before_sending() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let dir = directory(&[&ali, &bianca]);
    let (mut a, mut b) = connect(&ali, &bianca, &dir).await;
    let too_long = "x".repeat(proto::names::MAX_MESSAGE + 1);
    assert!(matches!(
        a.0.send(&too_long).await,
        Err(ChatError::Message(_))
    ));
    // The longest allowed message fits in a frame, and did not use up an id.
    let longest = "é".repeat(proto::names::MAX_MESSAGE / 2);
    assert_eq!(exchange(&mut a, &mut b, &longest).await, 1);
    a.0.close().await;
}

#[tokio::test]
async fn impostor_with_another_key_is_refused() {
    let (ali, bianca, mallory) = (
        EndpointPeer::new("ali"),
        EndpointPeer::new("bianca"),
        EndpointPeer::new("mallory"),
    );
    let dir = directory(&[&ali, &bianca, &mallory]);
    let (dialed, accepted) =
        tokio::join!(dial(&mallory, &bianca, "ali"), accept_one(&bianca, &dir));
    match dialed {
        Err(ChatError::Refused(ConnectRefusal::KeyMismatch)) => {}
        other => panic!("mallory should be refused for her key: {other:?}"),
    }
    match accepted {
        Err(e @ ChatError::RefusedIncoming { .. }) => {
            assert_eq!(e.claimed(), Some("ali"));
            assert!(matches!(
                e,
                ChatError::RefusedIncoming {
                    reason: ConnectRefusal::KeyMismatch,
                    ..
                }
            ));
        }
        other => panic!("bianca should refuse: {other:?}"),
    }
    // Ali herself still gets through.
    let (mut a, mut b) = connect(&ali, &bianca, &dir).await;
    exchange(&mut a, &mut b, "it's really me").await;
}

#[tokio::test]
async fn unknown_initiator_is_refused() {
    let (bianca, chloe) = (EndpointPeer::new("bianca"), EndpointPeer::new("chloe"));
    let dir = directory(&[&bianca]);
    let (dialed, accepted) =
        tokio::join!(dial(&chloe, &bianca, "chloe"), accept_one(&bianca, &dir));
    assert!(
        matches!(
            dialed,
            Err(ChatError::Refused(ConnectRefusal::UnknownInitiator))
        ),
        "{dialed:?}"
    );
    assert!(accepted.is_err());
    // A name nobody can have does not even decode (it is not a `UserName`): the
    // acceptor ends the handshake as a protocol violation, without a lookup. (Before
    // names were checked at decode time this was a `Refused{UnknownInitiator}`.)
    let (dialed, accepted) = tokio::join!(
        connect_claiming(&chloe, &bianca, "Not A Name!"),
        accept_one(&bianca, &dir)
    );
    assert!(dialed.is_none(), "{dialed:?}");
    assert!(accepted.is_err());
}

/// Sends a connect request claiming `claim` (any text: encoded as the `String` a
/// `UserName` is on the wire) and returns the answer, if one came.
async fn connect_claiming(from: &EndpointPeer, to: &EndpointPeer, claim: &str) -> Option<PeerMsg> {
    #[derive(serde::Serialize)]
    enum RawPeerMsg<'a> {
        Connect {
            version: u32,
            initiator: &'a str,
            background: bool,
        },
    }
    let conn = endpoint::dial_peer(&from.endpoint, &from.identity, to.addr(), to.key())
        .await
        .expect("TLS handshake");
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    let connect = RawPeerMsg::Connect {
        version: proto::PROTOCOL_VERSION,
        initiator: claim,
        background: false,
    };
    frame::write_frame(&mut send, &connect).await.ok()?;
    frame::read_frame::<_, PeerMsg>(&mut recv).await.ok()?
}

#[tokio::test]
async fn initiator_from_an_unlisted_address_is_refused() {
    let (ali, bianca, elsewhere) = (
        EndpointPeer::new("ali"),
        EndpointPeer::new("bianca"),
        EndpointPeer::new("x"),
    );
    let mut dir = directory(&[&ali, &bianca]);
    // The directory saw ali somewhere else.
    dir.get_mut("ali").unwrap().observed = elsewhere.addr();
    let (dialed, _) = tokio::join!(dial(&ali, &bianca, "ali"), accept_one(&bianca, &dir));
    assert!(
        matches!(
            dialed,
            Err(ChatError::Refused(ConnectRefusal::AddressMismatch))
        ),
        "{dialed:?}"
    );
    // Listed among her reported addresses is good enough.
    dir.get_mut("ali").unwrap().addresses = vec![ali.addr()];
    let (dialed, accepted) = tokio::join!(dial(&ali, &bianca, "ali"), accept_one(&bianca, &dir));
    assert!(dialed.is_ok() && accepted.is_ok());
}

#[tokio::test]
async fn directory_failure_refuses_with_directory_unavailable() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let accept = async {
        let conn = bianca.endpoint.accept().await.unwrap().await.unwrap();
        // The directory connection is lost: the app answers DirectoryUnavailable.
        let lookup = async |_: &str| Err(ConnectRefusal::DirectoryUnavailable);
        chat::accept(
            conn,
            &bianca.identity,
            &"bianca".parse().unwrap(),
            lookup,
            |_, _| Ok(()),
        )
        .await
    };
    let (dialed, accepted) = tokio::join!(dial(&ali, &bianca, "ali"), accept);
    assert!(
        matches!(
            dialed,
            Err(ChatError::Refused(ConnectRefusal::DirectoryUnavailable))
        ),
        "{dialed:?}"
    );
    assert!(accepted.is_err());
}

#[tokio::test]
async fn pin_check_refusal_reaches_the_dialer() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let dir = directory(&[&ali, &bianca]);
    let asked = Arc::new(Mutex::new(None));
    let record = asked.clone();
    let pin_check = move |name: &str, key: &PublicKey| {
        *record.lock().unwrap() = Some((name.to_string(), *key));
        Err(ConnectRefusal::PinnedKeyChanged)
    };
    let (dialed, accepted) = tokio::join!(
        dial(&ali, &bianca, "ali"),
        accept_with(&bianca, &dir, pin_check)
    );
    match dialed {
        Err(e @ ChatError::Refused(ConnectRefusal::PinnedKeyChanged)) => {
            // What the UI prints after "bianca refused: ".
            assert_eq!(
                e.refusal().unwrap().to_string(),
                "your key differs from the one pinned earlier"
            );
        }
        other => panic!("expected the pin refusal: {other:?}"),
    }
    assert!(accepted.is_err());
    // The pin check ran after the directory checks, with the verified name and key.
    assert_eq!(*asked.lock().unwrap(), Some(("ali".to_string(), ali.key())));
}

#[tokio::test]
async fn busy_acceptor_refuses_without_looking() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let refuse = async {
        let conn = bianca.endpoint.accept().await.unwrap().await.unwrap();
        chat::refuse(conn, ConnectRefusal::Busy).await;
    };
    let (dialed, ()) = tokio::join!(dial(&ali, &bianca, "ali"), refuse);
    assert!(
        matches!(dialed, Err(ChatError::Refused(ConnectRefusal::Busy))),
        "{dialed:?}"
    );
}

#[tokio::test]
async fn dialer_pinning_another_key_fails_without_hanging() {
    let (ali, bianca, mallory) = (
        EndpointPeer::new("ali"),
        EndpointPeer::new("bianca"),
        EndpointPeer::new("mallory"),
    );
    let dir = directory(&[&ali, &bianca]);
    // Ali was told bianca has mallory's key (a lying directory, or a stale record).
    let dial = endpoint::dial_peer(&ali.endpoint, &ali.identity, bianca.addr(), mallory.key());
    let incoming = async { bianca.endpoint.accept().await.unwrap().await };
    let (dialed, incoming) = timeout(WAIT, async { tokio::join!(dial, incoming) })
        .await
        .expect("no hang");
    let err = dialed.expect_err("the pinned key must not match");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    assert!(
        incoming.is_err(),
        "bianca's side of the handshake fails too"
    );
    // Bianca's endpoint is unharmed.
    let (mut a, mut b) = connect(&ali, &bianca, &dir).await;
    exchange(&mut a, &mut b, "hello").await;
}

/// The TLS 1.3 pitfall: an acceptor that rejects the dialer's certificate. The dialer's
/// handshake completes; the rejection shows on first use and must become a clear error.
#[tokio::test]
async fn acceptor_rejecting_our_certificate_is_a_clear_error() {
    let ali = EndpointPeer::new("ali");
    let strict_id = Identity::generate();
    let somebody_else = Identity::generate().public();
    let cert = proto::cert::self_signed(&strict_id, "strict").unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(proto::verify::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(proto::verify::ClientKeyVerifier::new(Some(somebody_else)))
        .with_single_cert(vec![cert.cert], cert.key)
        .unwrap();
    tls.alpn_protocols = vec![proto::ALPN_PEER.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let strict = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let strict_addr = strict.local_addr().unwrap();
    let server_side = tokio::spawn(async move {
        let incoming = strict.accept().await.unwrap();
        assert!(incoming.await.is_err(), "the strict side refuses ali");
    });

    let attempt = async {
        // As DESIGN.md notes, the dialer's side of the TLS handshake completes...
        let conn = endpoint::dial_peer(
            &ali.endpoint,
            &ali.identity,
            strict_addr,
            strict_id.public(),
        )
        .await
        .expect("TLS 1.3: the dialer's handshake completes");
        let info = PeerInfo {
            user: "strict".parse().unwrap(),
            identity: strict_id.public(),
            observed: strict_addr,
            addresses: vec![],
        };
        // ...and the rejection shows when the chat starts.
        chat::initiate(conn, &ali.identity, &"ali".parse().unwrap(), &info).await
    };
    match timeout(WAIT, attempt).await.expect("no hang") {
        Err(e @ ChatError::TlsRejected(_)) => {
            let shown = e.to_string();
            assert!(shown.contains("rejected our certificate"), "{shown}");
        }
        other => panic!("expected a TLS rejection, got {other:?}"),
    }
    server_side.await.unwrap();
}

#[tokio::test]
async fn two_callers_at_once_both_get_through() {
    let (ali, bianca, chloe) = (
        EndpointPeer::new("ali"),
        EndpointPeer::new("bianca"),
        EndpointPeer::new("chloe"),
    );
    let dir = directory(&[&ali, &bianca, &chloe]);

    // Bianca's accept loop: one task per incoming connection, like the app's.
    let (tx, mut accepted) = mpsc::channel::<Chat>(4);
    let (endpoint, identity, table) = (
        bianca.endpoint.clone(),
        bianca.identity.clone(),
        dir.clone(),
    );
    let accept_loop = tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let (identity, table, tx) = (identity.clone(), table.clone(), tx.clone());
            tokio::spawn(async move {
                let conn = incoming.await.unwrap();
                let lookup = async move |name: &str| Ok(table.get(name).cloned());
                let chat = chat::accept(
                    conn,
                    &identity,
                    &"bianca".parse().unwrap(),
                    lookup,
                    |_, _| Ok(()),
                )
                .await
                .unwrap();
                tx.send(chat).await.unwrap();
            });
        }
    });

    let (a, c) = tokio::join!(dial(&ali, &bianca, "ali"), dial(&chloe, &bianca, "chloe"));
    let (mut a, mut c) = (a.unwrap(), c.unwrap());
    let mut bs = HashMap::new();
    for _ in 0..2 {
        let chat = timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
        bs.insert(chat.0.peer().to_string(), chat);
    }
    let mut ba = bs.remove("ali").unwrap();
    let mut bc = bs.remove("chloe").unwrap();

    // Both chats at once, interleaved.
    let ida = a.0.send("from ali").await.unwrap();
    let idc = c.0.send("from chloe").await.unwrap();
    expect_message(&mut bc.1, idc, "from chloe").await;
    expect_message(&mut ba.1, ida, "from ali").await;
    expect_delivered(&mut a.1, ida).await;
    expect_delivered(&mut c.1, idc).await;
    exchange(&mut bc, &mut c, "hi chloe").await;
    exchange(&mut ba, &mut a, "hi ali").await;
    assert_ne!(a.0.session_id(), c.0.session_id());

    // Ending one leaves the other running.
    a.0.close().await;
    assert_eq!(ended(&mut ba.1).await.0, EndReason::ClosedByPeer);
    exchange(&mut c, &mut bc, "still on").await;
    accept_loop.abort();
}

/// A peer process that dies mid-chat: its own runtime is shut down, so nothing it owns
/// sends another packet (no goodbye, no connection close).
#[tokio::test]
async fn killed_peer_is_noticed_and_the_endpoint_keeps_accepting() {
    let (bianca, chloe) = (EndpointPeer::new("bianca"), EndpointPeer::new("chloe"));
    let bianca_info = bianca.info();
    let (addr_tx, addr_rx) = oneshot::channel::<PeerInfo>();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let (kill_tx, kill_rx) = oneshot::channel::<()>();

    let ali_process = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Everything ali has is returned out of the runtime and dropped only after the
        // runtime is gone, so no task of hers runs again: like a killed process.
        let remains = rt.block_on(async move {
            let ali = EndpointPeer::new("ali");
            addr_tx.send(ali.info()).unwrap();
            let conn = endpoint::dial_peer(
                &ali.endpoint,
                &ali.identity,
                bianca_info.observed,
                bianca_info.identity,
            )
            .await
            .unwrap();
            let (handle, mut events) =
                chat::initiate(conn, &ali.identity, &"ali".parse().unwrap(), &bianca_info)
                    .await
                    .unwrap();
            let id = handle.send("still here").await.unwrap();
            expect_delivered(&mut events, id).await;
            ready_tx.send(()).unwrap();
            let _ = kill_rx.await;
            (ali, handle, events)
        });
        drop(rt);
        drop(remains);
    });

    let ali_info = addr_rx.await.unwrap();
    let mut dir = directory(&[&bianca, &chloe]);
    dir.insert("ali".into(), ali_info);
    let (handle, mut events) = accept_one(&bianca, &dir).await.unwrap();
    expect_message(&mut events, 1, "still here").await;
    ready_rx.await.unwrap();

    kill_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || ali_process.join().unwrap())
        .await
        .unwrap();
    let killed_at = Instant::now();
    // Written into the connection, never acknowledged.
    let id = handle.send("are you there?").await.unwrap();
    let (reason, undelivered) = ended(&mut events).await;
    assert!(matches!(reason, EndReason::ConnectionLost(_)), "{reason:?}");
    assert_eq!(undelivered, vec![id]);
    assert!(killed_at.elapsed() < WAIT);

    // Bianca's endpoint still takes chats.
    let (mut c, mut b) = connect(&chloe, &bianca, &dir).await;
    exchange(&mut c, &mut b, "hello bianca").await;
    exchange(&mut b, &mut c, "hello chloe").await;
}

fn text(id: u64, text: &str) -> ChatPayload {
    ChatPayload::Text {
        id,
        text: text.into(),
        sent_at_ms: 0,
        room: None,
    }
}

/// Ali (by hand) and bianca's real acceptor, in a chat.
async fn raw_chat() -> (RawDialer, Chat, [EndpointPeer; 2]) {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let dir = directory(&[&ali, &bianca]);
    let (raw, accepted) =
        tokio::join!(RawDialer::connect(&ali, &bianca), accept_one(&bianca, &dir));
    (raw, accepted.unwrap(), [ali, bianca])
}

/// Checks that bianca's chat ended with a violation mentioning `word`, and that she told
/// the other side so in the connection close.
async fn expect_violation(raw: &RawDialer, b: &mut Chat, word: &str) {
    let (reason, _) = ended(&mut b.1).await;
    match &reason {
        EndReason::Violation(why) => assert!(why.contains(word), "{why}"),
        other => panic!("expected a violation naming {word}, got {other:?}"),
    }
    let (code, why) = raw.closed_by_peer().await;
    assert_eq!(code, chat::CODE_VIOLATION);
    assert!(why.contains(word), "{why}");
}

#[tokio::test]
async fn tampered_frame_ends_the_session() {
    let (mut raw, mut b, _peers) = raw_chat().await;
    let good = raw.seal(&text(1, "hello"));
    raw.write(good).await;
    expect_message(&mut b.1, 1, "hello").await;
    assert_eq!(raw.read().await, ChatPayload::Ack { id: 1 });
    let mut bad = raw.seal(&text(2, "give me your password"));
    bad.ciphertext[3] ^= 0x20;
    raw.write(bad).await;
    expect_violation(&raw, &mut b, "tamper").await;
}

#[tokio::test]
async fn replayed_frame_ends_the_session() {
    let (mut raw, mut b, _peers) = raw_chat().await;
    let frame = raw.seal(&text(1, "pay 10 euros"));
    raw.write(frame.clone()).await;
    raw.write(frame).await;
    expect_message(&mut b.1, 1, "pay 10 euros").await;
    expect_violation(&raw, &mut b, "replay").await;
}

#[tokio::test]
async fn reordered_frame_ends_the_session() {
    let (mut raw, mut b, _peers) = raw_chat().await;
    let first = raw.seal(&text(1, "first"));
    let second = raw.seal(&text(2, "second"));
    raw.write(second).await;
    raw.write(first).await;
    expect_violation(&raw, &mut b, "reordered").await;
}

#[tokio::test]
async fn garbage_frame_ends_the_session() {
    let (mut raw, mut b, _peers) = raw_chat().await;
    raw.send
        .write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    expect_violation(&raw, &mut b, "bad frame").await;
}

#[tokio::test]
async fn oversized_frame_is_refused_before_reading_it() {
    let (mut raw, mut b, _peers) = raw_chat().await;
    raw.send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    expect_violation(&raw, &mut b, "exceeds the limit").await;
}

#[tokio::test]
async fn skipped_message_id_ends_the_session() {
    let (mut raw, mut b, _peers) = raw_chat().await;
    let frame = raw.seal(&text(5, "five?"));
    raw.write(frame).await;
    expect_violation(&raw, &mut b, "out of sequence").await;
}

#[tokio::test]
async fn handshake_message_inside_the_chat_ends_the_session() {
    let (mut raw, mut b, _peers) = raw_chat().await;
    let again = PeerMsg::Connect {
        version: proto::PROTOCOL_VERSION,
        initiator: "ali".parse().unwrap(),
        background: false,
    };
    frame::write_frame(&mut raw.send, &again).await.unwrap();
    expect_violation(&raw, &mut b, "unexpected").await;
}

#[tokio::test]
async fn acknowledging_a_message_never_sent_ends_the_session() {
    let (mut raw, mut b, _peers) = raw_chat().await;
    let frame = raw.seal(&ChatPayload::Ack { id: 1 });
    raw.write(frame).await;
    expect_violation(&raw, &mut b, "never sent").await;
}

/// The other side reads two messages, acknowledges only the first and says goodbye: the
/// second is reported undelivered.
#[tokio::test]
async fn unacknowledged_messages_are_reported_when_the_peer_leaves() {
    let (mut raw, mut b, _peers) = raw_chat().await;
    let one = b.0.send("one").await.unwrap();
    let two = b.0.send("two").await.unwrap();
    assert!(
        matches!(raw.read().await, ChatPayload::Text { id, text, .. } if id == one && text == "one")
    );
    assert!(
        matches!(raw.read().await, ChatPayload::Text { id, text, .. } if id == two && text == "two")
    );
    let ack = raw.seal(&ChatPayload::Ack { id: one });
    raw.write(ack).await;
    let bye = raw.seal(&ChatPayload::Bye);
    raw.write(bye).await;
    raw.send.finish().unwrap();
    // Bianca answers the goodbye; the one who said it first closes the connection.
    assert_eq!(raw.read().await, ChatPayload::Bye);
    raw.conn.close(chat::CODE_BYE, b"bye");
    expect_delivered(&mut b.1, one).await;
    assert_eq!(ended(&mut b.1).await, (EndReason::ClosedByPeer, vec![two]));
}
