//! Rendezvous and the relay, in process: a real directory and real peers on 127.0.0.1.
//!
//! Loopback always has a direct path, so most tests start the directory with
//! `relay.force_relay`, which tells both peers to skip direct dialing. Everything else is
//! the production path: rendezvous, relay streams on each peer's directory connection,
//! the directory splicing them, the chat's end-to-end layer over it.
//!
//! What is checked: chats work relayed (both ways, acknowledged, ended cleanly); the
//! directory relays only ciphertext (a [`RelayTap`] records every byte it copies, and a
//! marker typed by the users never appears in it); verification still holds (a peer whose
//! key share is not signed by the key the directory has for its name is refused, both
//! ways); the operator switch, the per-user session cap and the bandwidth cap work; the
//! counters move.

use std::time::{Duration, Instant};

use directory::metrics::Metrics;
use directory::relay::{RelayPolicy, RelayTap};
use peer::app::Start;
use peer::chat::{self, Path, Transport};
use peer::ui::{Direction, Note};
use proto::Identity;
use proto::frame;
use proto::message::{ConnectRefusal, Event, PeerMsg};
use proto::session::{Handshake, Role};
use testkit::{TestDirectory, TestPeer, WAIT};

fn connected(with: &str) -> impl Fn(&Note) -> bool + '_ {
    move |n| matches!(n, Note::Connected { peer, .. } if peer == with)
}

fn relayed(note: &Note) -> bool {
    matches!(
        note,
        Note::Connected {
            path: Path::Relayed { .. },
            ..
        }
    )
}

async fn relay_directory(adjust: impl FnOnce(&mut RelayPolicy)) -> TestDirectory {
    let dir = TestDirectory::start_with(|c| {
        c.relay.force_relay = true;
        adjust(&mut c.relay);
    })
    .await
    .unwrap();
    dir.add_users(&["ali", "bianca", "chloe", "mallory"])
        .await
        .unwrap();
    dir
}

/// Logs `name` in with the library, without running the app (to act by hand).
async fn raw_peer(dir: &TestDirectory, name: &str) -> (peer::login::Online, tempfile::TempDir) {
    let profile = tempfile::tempdir().unwrap();
    let opts = testkit::options(dir, profile.path(), name, testkit::PASSWORD);
    let online = peer::login::login(&opts, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (online, profile)
}

async fn next_event(events: &mut tokio::sync::mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("events open")
}

#[tokio::test]
async fn relayed_chat_works_both_ways_and_only_ciphertext_crosses_the_directory() {
    let tap = RelayTap::new();
    let dir = relay_directory(|r| r.tap = Some(tap.clone())).await;
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();

    let note = ali.expect("connected", connected("bianca")).await;
    assert!(relayed(&note), "{note:?}");
    assert!(matches!(
        note,
        Note::Connected {
            direction: Direction::Outgoing,
            ..
        }
    ));
    let note = bianca.expect("connected", connected("ali")).await;
    assert!(relayed(&note), "{note:?}");
    assert_eq!(Metrics::get(&dir.server.metrics().relay_sessions), 1);

    const MARKER: &str = "PLAINTEXT-MARKER-7f3a9c";
    let lines: Vec<String> = (1..=5).map(|i| format!("{MARKER} ali {i}")).collect();
    for l in &lines {
        ali.say(l).await;
    }
    for l in &lines {
        bianca.expect_message("ali", l).await;
    }
    for id in 1..=5u64 {
        ali.expect(
            "delivered",
            |n| matches!(n, Note::Delivered { id: i, .. } if *i == id),
        )
        .await;
    }
    bianca.say(&format!("{MARKER} bianca answers")).await;
    ali.expect_message("bianca", &format!("{MARKER} bianca answers"))
        .await;

    // Ctrl-C ends the relayed chat cleanly on both sides.
    ali.interrupt().await;
    let note = ali
        .expect(
            "ended",
            |n| matches!(n, Note::Ended { peer, .. } if peer == "bianca"),
        )
        .await;
    assert!(
        matches!(note, Note::Ended { clean: true, ref undelivered, .. } if undelivered.is_empty()),
        "{note:?}"
    );
    let note = bianca
        .expect(
            "ended",
            |n| matches!(n, Note::Ended { peer, .. } if peer == "ali"),
        )
        .await;
    assert!(matches!(note, Note::Ended { clean: true, .. }), "{note:?}");

    // The directory copied the chat (handshake, sealed frames) and never the plaintext.
    let relayed_bytes = tap.bytes();
    assert!(
        relayed_bytes.len() > 5 * MARKER.len(),
        "the relay carried the chat"
    );
    assert!(
        !relayed_bytes
            .windows(MARKER.len())
            .any(|w| w == MARKER.as_bytes()),
        "plaintext crossed the relay"
    );
    let metrics = dir.server.metrics();
    let deadline = Instant::now() + WAIT;
    while Metrics::get(&metrics.relay_sessions) != 0 {
        assert!(Instant::now() < deadline, "relay session never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        Metrics::get(&metrics.relay_bytes),
        tap.bytes().len() as u64,
        "every relayed byte is counted"
    );
    ali.quit().await;
    bianca.quit().await;
}

#[tokio::test]
async fn direct_paths_are_used_when_they_work() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    let note = ali.expect("connected", connected("bianca")).await;
    assert!(
        matches!(
            note,
            Note::Connected {
                path: Path::Direct { .. },
                ..
            }
        ),
        "{note:?}"
    );
    let note = bianca.expect("connected", connected("ali")).await;
    assert!(
        matches!(
            note,
            Note::Connected {
                path: Path::Direct { .. },
                ..
            }
        ),
        "{note:?}"
    );
    ali.say("direct hello").await;
    bianca.expect_message("ali", "direct hello").await;
    bianca.say("direct answer").await;
    ali.expect_message("bianca", "direct answer").await;
    assert_eq!(Metrics::get(&dir.server.metrics().relay_bytes), 0);
    // Paths that lost the race were closed quietly: nobody saw a refusal.
    for p in [&ali.seen, &bianca.seen] {
        assert!(
            !p.iter().any(|n| matches!(n, Note::IncomingRefused { .. })),
            "{p:#?}"
        );
    }
    ali.quit().await;
    bianca.quit().await;
}

#[tokio::test]
async fn rendezvous_tells_the_target_who_comes_from_where() {
    let dir = relay_directory(|_| {}).await;
    let (ali, _a) = raw_peer(&dir, "ali").await;
    let (bianca, _b) = raw_peer(&dir, "bianca").await;
    let mut events = bianca.link.client().take_events().unwrap();

    let rv = ali.link.rendezvous("bianca").await.unwrap().unwrap();
    assert_eq!(rv.peer.user, "bianca");
    assert_eq!(rv.peer.identity, bianca.profile.public_key());
    assert_eq!(rv.peer.observed, bianca.endpoint.local_addr().unwrap());
    assert!(rv.relay);
    assert!(!rv.direct, "force_relay says: no direct paths");
    match next_event(&mut events).await {
        Event::Incoming {
            from,
            token,
            direct,
        } => {
            assert_eq!(from.user, "ali");
            assert_eq!(from.identity, ali.profile.public_key());
            assert_eq!(from.observed, ali.endpoint.local_addr().unwrap());
            assert_eq!(token, rv.token);
            assert!(!direct);
        }
        other => panic!("expected Incoming, got {other:?}"),
    }
    // Nobody offline, nobody unknown, nobody to oneself.
    assert!(ali.link.rendezvous("chloe").await.unwrap().is_none());
    assert!(ali.link.rendezvous("nobody").await.unwrap().is_none());
    assert!(ali.link.rendezvous("ali").await.unwrap().is_none());

    // A token is only for the two users it was made for.
    let (chloe, _c) = raw_peer(&dir, "chloe").await;
    let err = chloe.link.open_relay(rv.token).await.unwrap_err();
    assert!(err.to_string().contains("unknown"), "{err}");
}

#[tokio::test]
async fn over_the_relay_the_acceptor_checks_the_initiators_key_share() {
    let dir = relay_directory(|_| {}).await;
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let (mallory, _m) = raw_peer(&dir, "mallory").await;
    let bianca_info = mallory.link.lookup("bianca").await.unwrap().unwrap();

    // 1. mallory, logged in as herself, claims to be ali on the relay: the directory
    //    paired bianca with mallory, so the claim is refused before any key exchange.
    let rv = mallory.link.rendezvous("bianca").await.unwrap().unwrap();
    let stream = mallory.link.open_relay(rv.token).await.unwrap();
    assert_eq!(stream.partner(), "bianca");
    let err = chat::initiate_over(
        Transport::relayed(stream),
        mallory.profile.identity(),
        &"ali".parse().unwrap(),
        &bianca_info,
        false,
    )
    .await
    .expect_err("impersonation must be refused");
    assert_eq!(
        err.refusal(),
        Some(&ConnectRefusal::UnknownInitiator),
        "{err}"
    );
    bianca
        .expect(
            "refusal shown",
            |n| matches!(n, Note::IncomingRefused { peer: Some(p), .. } if p == "ali"),
        )
        .await;

    // 2. mallory under her own name, but signing her key share with a key that is not
    //    the one the directory has for her: the acceptor's signature check refuses it.
    //    (Spoken by hand, so that mallory's side waits and bianca's check is what fails.)
    let rv = mallory.link.rendezvous("bianca").await.unwrap().unwrap();
    let (mut send, mut recv) = mallory
        .link
        .open_relay(rv.token)
        .await
        .unwrap()
        .into_streams();
    let connect = PeerMsg::Connect {
        version: proto::PROTOCOL_VERSION,
        initiator: "mallory".parse().unwrap(),
        background: false,
    };
    frame::write_frame(&mut send, &connect).await.unwrap();
    let answer: PeerMsg = frame::read_frame(&mut recv).await.unwrap().unwrap();
    assert_eq!(
        answer,
        PeerMsg::Accepted {
            user: "bianca".parse().unwrap()
        }
    );
    let other_key = Identity::generate();
    let (_handshake, share) = Handshake::start(&other_key, Role::Initiator, bianca_info.identity);
    frame::write_frame(&mut send, &PeerMsg::KeyShare(share))
        .await
        .unwrap();
    let theirs: PeerMsg = frame::read_frame(&mut recv).await.unwrap().unwrap();
    assert!(matches!(theirs, PeerMsg::KeyShare(_)));
    // bianca checks ours against the directory's key for "mallory", and ends the stream.
    let end = tokio::time::timeout(WAIT, frame::read_frame::<_, PeerMsg>(&mut recv))
        .await
        .unwrap();
    assert!(end.is_err() || matches!(end, Ok(None)), "{end:?}");
    bianca
        .expect(
            "refusal shown",
            |n| matches!(n, Note::IncomingRefused { reason, .. } if reason.contains("key share")),
        )
        .await;
    assert!(
        !bianca
            .seen
            .iter()
            .any(|n| matches!(n, Note::Connected { .. })),
        "no session was reported"
    );
    bianca.quit().await;
}

#[tokio::test]
async fn over_the_relay_the_dialer_checks_the_acceptors_key_share() {
    let dir = relay_directory(|_| {}).await;
    // bianca answers relayed calls by hand, signing with a key that is not hers.
    let (bianca, _b) = raw_peer(&dir, "bianca").await;
    let mut events = bianca.link.client().take_events().unwrap();
    let link = bianca.link.clone();
    let answering = tokio::spawn(async move {
        loop {
            let Event::RelayCall { token, .. } = next_event(&mut events).await else {
                continue;
            };
            let (mut send, mut recv) = link.open_relay(token).await.unwrap().into_streams();
            let connect: PeerMsg = frame::read_frame(&mut recv).await.unwrap().unwrap();
            assert!(matches!(connect, PeerMsg::Connect { .. }));
            let ali = link.lookup("ali").await.unwrap().unwrap();
            let accepted = PeerMsg::Accepted {
                user: "bianca".parse().unwrap(),
            };
            frame::write_frame(&mut send, &accepted).await.unwrap();
            let impostor = Identity::generate();
            let (_handshake, share) = Handshake::start(&impostor, Role::Acceptor, ali.identity);
            frame::write_frame(&mut send, &PeerMsg::KeyShare(share))
                .await
                .unwrap();
            // Read until ali gives up on us.
            while let Ok(Some(_)) = frame::read_frame::<_, PeerMsg>(&mut recv).await {}
            return;
        }
    });
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    let note = ali
        .expect("refused", |n| matches!(n, Note::ConnectFailed { .. }))
        .await;
    assert!(
        matches!(&note, Note::ConnectFailed { reason, .. } if reason.contains("key share")),
        "{note:?}"
    );
    answering.await.unwrap();
    ali.quit().await;
}

#[tokio::test]
async fn the_operator_can_turn_the_relay_off() {
    let dir = relay_directory(|r| r.enabled = false).await;
    let _bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    let note = ali
        .expect("refused", |n| matches!(n, Note::ConnectFailed { .. }))
        .await;
    assert!(
        matches!(&note, Note::ConnectFailed { reason, .. } if reason.contains("does not relay")),
        "{note:?}"
    );

    // Even a peer that ignores the rendezvous answer gets no relay.
    let (mallory, _m) = raw_peer(&dir, "mallory").await;
    let rv = mallory.link.rendezvous("bianca").await.unwrap().unwrap();
    assert!(!rv.relay);
    let err = mallory.link.open_relay(rv.token).await.unwrap_err();
    assert!(err.to_string().contains("turned off"), "{err}");
    assert_eq!(Metrics::get(&dir.server.metrics().relay_bytes), 0);
    ali.quit().await;
}

#[tokio::test]
async fn relay_sessions_per_user_are_capped() {
    let dir = relay_directory(|r| r.max_sessions_per_user = 1).await;
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let _chloe = TestPeer::start(&dir, "chloe", Start::Idle).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    ali.expect("connected", connected("bianca")).await;
    bianca.expect("connected", connected("ali")).await;

    ali.say("/connect chloe").await;
    let note = ali
        .expect("refused", |n| matches!(n, Note::ConnectFailed { .. }))
        .await;
    assert!(
        matches!(&note, Note::ConnectFailed { peer, reason } if peer == "chloe" && reason.contains("too many relay sessions")),
        "{note:?}"
    );
    // The first chat is unaffected.
    ali.say("/switch bianca").await;
    ali.say("still here").await;
    bianca.expect_message("ali", "still here").await;
    ali.quit().await;
    bianca.quit().await;
}

#[tokio::test]
async fn relay_bandwidth_per_user_is_capped() {
    const RATE: u64 = 64 * 1024;
    let dir = relay_directory(|r| {
        r.bytes_per_sec_per_user = RATE;
        r.burst_bytes_per_user = 16 * 1024;
    })
    .await;
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    ali.expect("connected", connected("bianca")).await;
    bianca.expect("connected", connected("ali")).await;

    let line = "x".repeat(15 * 1024);
    const LINES: u64 = 12;
    let started = Instant::now();
    for _ in 0..LINES {
        ali.say(&line).await;
    }
    for id in 1..=LINES {
        ali.expect(
            "delivered",
            |n| matches!(n, Note::Delivered { id: i, .. } if *i == id),
        )
        .await;
    }
    let took = started.elapsed();
    // 180 KiB at 64 KiB/s after a 16 KiB burst: at least 2.5 s.
    let floor = Duration::from_secs_f64((LINES * 15 * 1024 - 16 * 1024) as f64 / RATE as f64);
    assert!(took >= floor, "{took:?} < {floor:?}: the cap did not hold");
    ali.quit().await;
    bianca.quit().await;
}
