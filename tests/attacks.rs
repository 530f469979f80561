//! Attacks on authentication and on the end-to-end layer, each refused, over real QUIC on
//! loopback, in-process.
//!
//! Directory side (a raw protocol client, frames by hand): password guessing held to the
//! lockout rule across reconnects and across source addresses, guessing across accounts
//! held to the per-source limit, a replayed login, a login signature made for another
//! user or by another key, a login relayed by a malicious directory, 64 guesses at once
//! (at most three passwords checked), an unknown name answering like a real one, a
//! stranger's lockout not stopping the key holder, a logout ending its ticket. EndpointPeer side (a hand-driven dialer against the real acceptor): a
//! key share signed by another identity, a message sealed for another session, a frame
//! reflected back to its sender, an over-long message, and a sender whose peer never
//! acknowledges (its queue is bounded).
//!
//! Attacks covered elsewhere are not repeated: a signature for another connection's nonce,
//! a changed key, lookups before login (`tests/directory_hostile.rs`); a Connect Request
//! naming someone else, a certificate for another key, tampered, replayed and reordered
//! frames (`tests/chat_session.rs`, `tests/peer_chat.rs`). `127.0.0.2` and `127.0.0.3`
//! are loopback too: a client bound there is another source address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use peer::app::Start;
use peer::chat::{self, ChatError, ChatEvent, ChatEvents, ChatHandle, EndReason};
use peer::endpoint;
use peer::ui::Note;
use proto::frame;
use proto::message::{
    ChatPayload, ConnectRefusal, PeerInfo, PeerMsg, Refusal, Reply, Request, ServerMsg,
    login_transcript, resume_transcript,
};
use proto::{Identity, PublicKey};
use testkit::{EndpointPeer, RawClient, RawDialer, TestDirectory, TestPeer};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(15);
const PASSWORD: &str = testkit::PASSWORD;

// ---------------------------------------------------------------------------------------
// The directory
// ---------------------------------------------------------------------------------------

/// Logs in reporting `addresses` as our own; panics unless granted.
async fn login_reporting(raw: &mut RawClient, user: &str, id: &Identity, addresses: &[SocketAddr]) {
    let request = raw.login_request_with(&raw.nonce(), user, PASSWORD, id, addresses);
    assert_granted(&raw.call(request).await);
}

fn refusal(reply: &Reply) -> Refusal {
    match reply {
        Reply::Refused { reason, .. } => *reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn bad_password(left: u32) -> Reply {
    Reply::Refused {
        reason: Refusal::BadCredentials,
        attempts_left: Some(left),
        retry_after_secs: None,
    }
}

fn assert_granted(reply: &Reply) {
    assert!(matches!(reply, Reply::Granted { .. }), "{reply:?}");
}

#[tokio::test]
async fn guessing_on_a_fresh_connection_each_time_still_locks_the_account() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let id = Identity::generate();
    for left in [2, 1, 0] {
        let mut raw = RawClient::greeted(&dir.server, "127.0.0.1").await;
        assert_eq!(
            raw.login("ali", "guess-1234", &id).await,
            bad_password(left)
        );
    }
    // Locked: the right password on yet another connection is not even checked.
    let mut raw = RawClient::greeted(&dir.server, "127.0.0.1").await;
    let reply = raw.login("ali", PASSWORD, &id).await;
    match reply {
        Reply::Refused {
            reason: Refusal::LockedOut,
            retry_after_secs: Some(secs),
            ..
        } => assert!((1..=30).contains(&secs), "{secs}"),
        other => panic!("expected LockedOut, got {other:?}"),
    }
}

#[tokio::test]
async fn guessing_from_several_addresses_counts_against_the_one_account() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let id = Identity::generate();
    // One failure from each of two addresses, a third from the first again.
    for (ip, left) in [("127.0.0.1", 2), ("127.0.0.2", 1), ("127.0.0.1", 0)] {
        let mut raw = RawClient::greeted(&dir.server, ip).await;
        assert_eq!(
            raw.login("ali", "guess-1234", &id).await,
            bad_password(left)
        );
    }
    // The account is locked wherever the next attempt comes from...
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let mut raw = RawClient::greeted(&dir.server, ip).await;
        let reply = raw.login("ali", PASSWORD, &id).await;
        assert_eq!(refusal(&reply), Refusal::LockedOut, "from {ip}");
    }
    // ... and only that account: the addresses themselves are not blocked (3 failures
    // are far below the per-source limit), so another user logs in from them.
    let mut raw = RawClient::greeted(&dir.server, "127.0.0.1").await;
    assert_granted(&raw.login("bianca", PASSWORD, &Identity::generate()).await);
}

#[tokio::test]
async fn guessing_across_many_accounts_blocks_the_source_and_only_it() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let limit = dir.server.config().source_limit.max_failures;
    let id = Identity::generate();
    // One guess per account name, never the same account twice: no account locks, but
    // the source runs out of failures.
    let mut raw = RawClient::greeted(&dir.server, "127.0.0.2").await;
    for i in 0..limit {
        let reply = raw.login(&format!("user{i}"), "guess-1234", &id).await;
        assert_eq!(refusal(&reply), Refusal::BadCredentials, "guess {i}");
    }
    // Blocked now, even for an account it has the right password for, on a new
    // connection too.
    let mut again = RawClient::greeted(&dir.server, "127.0.0.2").await;
    match again.login("ali", PASSWORD, &id).await {
        Reply::Refused {
            reason: Refusal::SourceBlocked,
            retry_after_secs: Some(secs),
            ..
        } => assert!(secs >= 1, "{secs}"),
        other => panic!("expected the source to be blocked, got {other:?}"),
    }
    // Another address is not affected, and ali's account was never locked.
    let mut other = RawClient::greeted(&dir.server, "127.0.0.1").await;
    assert_granted(&other.login("ali", PASSWORD, &id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_get_at_most_three_passwords_checked() {
    // A real password cost, so that guesses are in argon2 at the same time.
    let dir = TestDirectory::start_with(|c| {
        c.password_cost = directory::PasswordCost {
            memory_kib: 4096,
            iterations: 1,
            parallelism: 1,
        }
    })
    .await
    .unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let id = Arc::new(Identity::generate());
    // 64 connections, as many from one address as strangers may hold there
    // (`max_anonymous_per_ip`, 16), the rest from sixteen others, all ready first; then
    // every guess goes out at once.
    let mut raws = Vec::new();
    for i in 0..64u32 {
        let ip = if i < 16 {
            "127.0.0.1".to_string()
        } else {
            format!("127.0.1.{}", i % 16)
        };
        raws.push(RawClient::greeted(&dir.server, &ip).await);
    }
    let mut guesses = tokio::task::JoinSet::new();
    for mut raw in raws {
        let id = id.clone();
        guesses.spawn(async move { raw.login("ali", "guess-1234", &id).await });
    }
    let mut checked = 0;
    while let Some(reply) = guesses.join_next().await {
        match refusal(&reply.unwrap()) {
            Refusal::BadCredentials => checked += 1,
            other => assert_eq!(other, Refusal::LockedOut),
        }
    }
    assert!(checked <= 3, "{checked} wrong passwords checked");
    let users = dir.server.list_users().await.unwrap();
    assert!(users[0].locked_for.is_some(), "ali is locked");
}

#[tokio::test]
async fn an_unknown_name_answers_like_a_real_account() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let id = Identity::generate();
    for user in ["ali", "nobody"] {
        let mut raw = RawClient::greeted(&dir.server, "127.0.0.1").await;
        for left in [2, 1, 0] {
            assert_eq!(
                raw.login(user, "guess-1234", &id).await,
                bad_password(left),
                "{user}"
            );
        }
        let reply = raw.login(user, "guess-1234", &id).await;
        assert_eq!(refusal(&reply), Refusal::LockedOut, "{user}");
    }
}

#[tokio::test]
async fn a_stranger_locking_the_password_does_not_lock_the_user_out_of_their_key() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let ali = Identity::generate();
    let mut home = RawClient::greeted(&dir.server, "127.0.0.1").await;
    let Reply::Granted { ticket, .. } = home.login("ali", PASSWORD, &ali).await else {
        panic!("ali logs in")
    };
    drop(home);
    // A stranger locks ali's password.
    let mut stranger = RawClient::greeted(&dir.server, "127.0.0.2").await;
    for left in [2, 1, 0] {
        assert_eq!(
            stranger.login("ali", "guess-1234", &ali).await,
            bad_password(left)
        );
    }
    assert_eq!(
        refusal(&stranger.login("ali", PASSWORD, &ali).await),
        Refusal::LockedOut
    );
    // Ali's ticket and key still resume, from anywhere...
    let mut roaming = RawClient::greeted(&dir.server, "127.0.0.3").await;
    let signature = ali.sign(&resume_transcript(
        &roaming.channel(),
        &roaming.nonce(),
        "ali",
        &ticket,
    ));
    let resume = Request::Resume {
        user: "ali".parse().unwrap(),
        ticket,
        signature,
        addresses: vec![],
    };
    assert_granted(&roaming.call(&resume).await);
    drop(roaming);
    // ...and her password still works from where she logged in before.
    let mut home = RawClient::greeted(&dir.server, "127.0.0.1").await;
    assert_granted(&home.login("ali", PASSWORD, &ali).await);
}

#[tokio::test]
async fn a_logout_ends_the_ticket() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let ali = Identity::generate();
    let mut raw = RawClient::greeted(&dir.server, "127.0.0.1").await;
    let Reply::Granted { ticket, .. } = raw.login("ali", PASSWORD, &ali).await else {
        panic!("ali logs in")
    };
    assert_eq!(raw.call(&Request::Logout).await, Reply::LoggedOut);
    let mut again = RawClient::greeted(&dir.server, "127.0.0.1").await;
    let signature = ali.sign(&resume_transcript(
        &again.channel(),
        &again.nonce(),
        "ali",
        &ticket,
    ));
    let resume = Request::Resume {
        user: "ali".parse().unwrap(),
        ticket,
        signature,
        addresses: vec![],
    };
    assert_eq!(refusal(&again.call(&resume).await), Refusal::TicketInvalid);
}

#[tokio::test]
async fn a_replayed_login_is_refused() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let id = Identity::generate();
    let mut victim = RawClient::greeted(&dir.server, "127.0.0.1").await;
    let captured = victim.login_request("ali", PASSWORD, &id);
    assert_granted(&victim.call(&captured).await);
    // An eavesdropper who somehow got the whole request (password included) replays it
    // word for word on its own connection: the signature is over the victim's nonce.
    let mut attacker = RawClient::greeted(&dir.server, "127.0.0.2").await;
    assert_ne!(attacker.nonce(), victim.nonce());
    let reply = attacker.call(&captured).await;
    assert_eq!(refusal(&reply), Refusal::BadSignature);
    assert_eq!(dir.server.online_count(), 1);
    // The victim's session is untouched.
    let who = victim.call(&Request::Who).await;
    assert!(matches!(who, Reply::Online { users } if users.len() == 1));
}

#[tokio::test]
async fn a_login_signature_made_for_another_user_is_refused() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let ali = Identity::generate();
    let bianca = Identity::generate();
    // Bianca (who also knows ali's password) signs her own login transcript on this
    // connection and presents it, with her key, as ali's: ali has no key registered yet,
    // so accepting it would bind bianca's key to ali's account.
    let mut raw = RawClient::greeted(&dir.server, "127.0.0.1").await;
    let for_bianca = bianca.sign(&login_transcript(
        &raw.channel(),
        &raw.nonce(),
        "bianca",
        &bianca.public(),
    ));
    let forged = Request::Login {
        user: "ali".parse().unwrap(),
        password: PASSWORD.into(),
        identity: bianca.public(),
        signature: for_bianca,
        addresses: vec![],
    };
    assert_eq!(refusal(&raw.call(&forged).await), Refusal::BadSignature);
    // The same signature is good for bianca herself.
    let honest = Request::Login {
        user: "bianca".parse().unwrap(),
        password: PASSWORD.into(),
        identity: bianca.public(),
        signature: for_bianca,
        addresses: vec![],
    };
    assert_granted(&raw.call(&honest).await);
    // Ali's account got no key from it: ali's own key is the one registered.
    let mut real = RawClient::greeted(&dir.server, "127.0.0.2").await;
    assert_granted(&real.login("ali", PASSWORD, &ali).await);
    let mut later = RawClient::greeted(&dir.server, "127.0.0.3").await;
    let reply = later.login("ali", PASSWORD, &bianca).await;
    // Another key answers like a wrong password (issue 14: no oracle for the password).
    assert_eq!(refusal(&reply), Refusal::BadCredentials);
}

#[tokio::test]
async fn a_login_signed_by_another_key_than_the_one_presented_is_refused() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let ali = Identity::generate();
    let mallory = Identity::generate();
    let mut raw = RawClient::greeted(&dir.server, "127.0.0.1").await;
    // The transcript names ali's key, but mallory (without ali's private key) signs it.
    let signature = mallory.sign(&login_transcript(
        &raw.channel(),
        &raw.nonce(),
        "ali",
        &ali.public(),
    ));
    let request = Request::Login {
        user: "ali".parse().unwrap(),
        password: PASSWORD.into(),
        identity: ali.public(),
        signature,
        addresses: vec![],
    };
    assert_eq!(refusal(&raw.call(&request).await), Refusal::BadSignature);
    assert_eq!(dir.server.online_count(), 0);
}

/// A malicious directory B, built from our own TLS configuration with its own key: the
/// victim pinned B (it is the victim's directory) and logs in to it. B logs in to the
/// honest directory A as the victim by relaying: it hands the victim A's nonce in its
/// `Welcome` and forwards the victim's signed `Login` to A. Returns A's answer.
async fn relay_login_through_malicious_directory(a: &TestDirectory, victim: &Identity) -> Reply {
    let b_identity = Identity::generate();
    let b_data = tempfile::tempdir().unwrap();
    let b_config = directory::Config::new(b_data.path());
    let b_endpoint = quinn::Endpoint::server(
        directory::tls::server_config(&b_identity, &b_config).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let b_addr = b_endpoint.local_addr().unwrap();

    let mut upstream = RawClient::greeted(&a.server, "127.0.0.2").await;
    let a_nonce = upstream.nonce();
    let proxy = tokio::spawn(async move {
        let conn = b_endpoint.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let hello: Option<Request> = frame::read_frame(&mut recv).await.unwrap();
        assert!(matches!(hello, Some(Request::Hello { .. })), "{hello:?}");
        let welcome = Reply::Welcome {
            version: proto::PROTOCOL_VERSION,
            nonce: a_nonce,
            open_registration: false,
        };
        frame::write_frame(&mut send, &ServerMsg::Reply(welcome))
            .await
            .unwrap();
        let login: Request = frame::read_frame(&mut recv).await.unwrap().unwrap();
        assert!(matches!(login, Request::Login { .. }));
        let reply = upstream.call(&login).await;
        // The victim hears what A said; B keeps the connection until the victim is done.
        frame::write_frame(&mut send, &ServerMsg::Reply(reply.clone()))
            .await
            .unwrap();
        let _ = timeout(WAIT, recv.read_to_end(0)).await;
        (reply, b_endpoint)
    });

    let endpoint = endpoint::bind(victim, "127.0.0.1:0".parse().unwrap()).unwrap();
    let client = peer::directory_client::DirectoryClient::connect(
        &endpoint,
        b_addr,
        Some(b_identity.public()),
    )
    .await
    .unwrap();
    let victim_saw = client.login("ali", PASSWORD, victim, vec![]).await;
    client.close();
    let (reply, _b) = timeout(WAIT, proxy).await.unwrap().unwrap();
    assert!(victim_saw.is_err(), "{victim_saw:?}");
    reply
}

#[tokio::test]
async fn a_login_relayed_by_a_malicious_directory_is_refused() {
    let a = TestDirectory::start().await.unwrap();
    a.add_users(&["ali"]).await.unwrap();
    let victim = Identity::generate();
    let reply = relay_login_through_malicious_directory(&a, &victim).await;
    // The victim signed for B's key and B's TLS session: A sees neither.
    assert_eq!(refusal(&reply), Refusal::BadSignature);
    assert_eq!(a.server.online_count(), 0);
    let users = a.server.list_users().await.unwrap();
    let ali = users.iter().find(|u| u.name == "ali").unwrap();
    assert_eq!(ali.identity, None, "no key registered by the relayed login");
    // The victim's own login to A is unaffected.
    let mut raw = RawClient::greeted(&a.server, "127.0.0.1").await;
    assert_granted(&raw.login("ali", PASSWORD, &victim).await);
}

// ---------------------------------------------------------------------------------------
// EndpointPeer to peer
// ---------------------------------------------------------------------------------------

/// Accepts one chat at `at`, where the directory knows exactly `known`.
async fn accept_one(
    at: &EndpointPeer,
    known: PeerInfo,
) -> Result<(ChatHandle, ChatEvents), ChatError> {
    let conn = at.endpoint.accept().await.unwrap().await.unwrap();
    let lookup = async move |name: &str| Ok((name == known.user).then_some(known));
    chat::accept(
        conn,
        &at.identity,
        &at.name.parse().unwrap(),
        lookup,
        |_: &str, _: &PublicKey| Ok(()),
    )
    .await
}

/// Ali (by hand, her own key share) and the real acceptor at `to`, in a chat.
async fn raw_chat(from: &EndpointPeer, to: &EndpointPeer) -> (RawDialer, (ChatHandle, ChatEvents)) {
    let (dialer, accepted) =
        tokio::join!(RawDialer::connect(from, to), accept_one(to, from.info()));
    (dialer, accepted.expect("acceptor"))
}

fn text(id: u64, text: &str) -> ChatPayload {
    ChatPayload::Text {
        id,
        text: text.into(),
        sent_at_ms: 0,
        room: None,
    }
}

async fn next(events: &mut ChatEvents) -> ChatEvent {
    timeout(WAIT, events.next())
        .await
        .expect("an event in time")
        .expect("events still open")
}

/// Bianca's chat must end with a protocol violation whose reason contains `word`, and
/// no message may have been delivered to her before that.
async fn expect_violation(events: &mut ChatEvents, word: &str) {
    match next(events).await {
        ChatEvent::Ended {
            reason: EndReason::Violation(why),
            ..
        } => assert!(why.contains(word), "{why}"),
        other => panic!("expected a violation naming {word:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_key_share_signed_by_another_identity_is_refused() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let mallory = Identity::generate();
    // TLS and the connect request are ali's own; the ephemeral key is signed by mallory
    // (a man in the middle who cannot sign as ali).
    let (dialer, accepted) = tokio::join!(
        RawDialer::dial(&ali, &bianca, &mallory),
        accept_one(&bianca, ali.info())
    );
    match accepted {
        Err(ChatError::Handshake(e)) => assert!(e.to_string().contains("not signed"), "{e}"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a forged key share was accepted"),
    }
    // (The forger cannot use bianca's share either: it was made for ali.)
    let Err((_, conn)) = dialer else {
        panic!("the forger got a session")
    };
    timeout(WAIT, conn.closed())
        .await
        .expect("bianca closes the connection");
}

#[tokio::test]
async fn a_message_sealed_for_another_session_is_refused() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let (mut first, (_h1, mut events1)) = raw_chat(&ali, &bianca).await;
    let (mut second, (_h2, mut events2)) = raw_chat(&ali, &bianca).await;
    // Same sender, same receiver, same message id and counter: only the session differs.
    let sealed_for_first = first.seal(&text(1, "transfer approved"));
    second.write(sealed_for_first.clone()).await;
    expect_violation(&mut events2, "sealed for another session").await;
    // In its own session the very same frame is fine.
    first.write(sealed_for_first).await;
    match next(&mut events1).await {
        ChatEvent::Message { id, text, .. } => {
            assert_eq!((id, text.as_str()), (1, "transfer approved"))
        }
        other => panic!("expected the message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_frame_reflected_back_to_its_sender_is_refused() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let (mut raw, (handle, mut events)) = raw_chat(&ali, &bianca).await;
    let id = handle.send("meet at noon").await.unwrap();
    // Ali receives bianca's sealed message and sends the same bytes straight back: the
    // other direction has its own key, so bianca cannot be made to read her own words.
    let sealed = raw.read_sealed().await;
    raw.write(sealed).await;
    assert_eq!(id, 1);
    expect_violation(&mut events, "sealed for another session").await;
}

#[tokio::test]
async fn a_message_over_the_length_limit_ends_the_chat() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let (mut raw, (_handle, mut events)) = raw_chat(&ali, &bianca).await;
    // Sealed properly, so it passes the crypto; only the length is wrong.
    let too_long = "x".repeat(proto::names::MAX_MESSAGE + 1);
    let sealed = raw.seal(&text(1, &too_long));
    raw.write(sealed).await;
    expect_violation(&mut events, "too long").await;
}

/// Takes [`chat::STALL_TIMEOUT`] (20 s) and a little more.
#[tokio::test]
async fn a_peer_that_stops_reading_is_disconnected_after_the_stall_timeout() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let (raw, (handle, mut events)) = raw_chat(&ali, &bianca).await;
    // Ali reads nothing at all: once the QUIC window is full, bianca's writes stall.
    let big = "x".repeat(proto::names::MAX_MESSAGE);
    let started = tokio::time::Instant::now();
    for _ in 0..chat::MAX_UNACKED {
        handle.send(&big).await.unwrap();
    }
    let reason = loop {
        match timeout(chat::STALL_TIMEOUT + WAIT, events.next())
            .await
            .expect("the stalled chat is never given up")
        {
            Some(ChatEvent::Ended { reason, .. }) => break reason,
            Some(_) => {}
            None => panic!("events ended without Ended"),
        }
    };
    match reason {
        EndReason::ConnectionLost(why) => assert!(why.contains("stopped reading"), "{why}"),
        other => panic!("ended otherwise: {other:?}"),
    }
    assert!(started.elapsed() >= chat::STALL_TIMEOUT);
    match timeout(WAIT, raw.conn.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, chat::CODE_TIMEOUT)
        }
        other => panic!("closed otherwise: {other}"),
    }
}

#[tokio::test]
async fn a_peer_that_never_acknowledges_cannot_make_the_sender_buffer_without_bound() {
    let (ali, bianca) = (EndpointPeer::new("ali"), EndpointPeer::new("bianca"));
    let (mut raw, (handle, _events)) = raw_chat(&ali, &bianca).await;
    // Ali reads nothing and acknowledges nothing. Bianca's sends are queued, then
    // refused: at most MAX_UNACKED in flight plus COMMAND_QUEUE waiting.
    let bound = chat::MAX_UNACKED + chat::COMMAND_QUEUE + 1;
    let mut queued = 0;
    let refused = loop {
        match handle.send("are you there?").await {
            Ok(_) => queued += 1,
            Err(e) => break e,
        }
        assert!(
            queued <= bound,
            "{queued} messages queued for a peer that never acks"
        );
        if queued % 64 == 0 {
            // Let the driver move what it can into the connection.
            tokio::task::yield_now().await;
        }
    };
    assert!(
        matches!(refused, ChatError::Backlog(_)),
        "refused otherwise: {refused}"
    );
    assert!(queued >= chat::COMMAND_QUEUE, "refused after only {queued}");
    // What did reach ali starts at message 1.
    let first = raw.read().await;
    assert!(
        matches!(first, ChatPayload::Text { id: 1, .. }),
        "{first:?}"
    );
}

// ---------------------------------------------------------------------------------------
// A listening peer under a flood of calls
// ---------------------------------------------------------------------------------------

/// Where a peer running the real app listens, and its key.
async fn listening(p: &mut TestPeer) -> (SocketAddr, PublicKey) {
    let addr = match p
        .expect("listening", |n| matches!(n, Note::Listening { .. }))
        .await
    {
        Note::Listening { addr } => addr,
        _ => unreachable!(),
    };
    p.say("/fingerprint").await;
    let key = match p
        .expect("its key", |n| matches!(n, Note::Fingerprint { .. }))
        .await
    {
        Note::Fingerprint { key, .. } => key,
        _ => unreachable!(),
    };
    (addr, key)
}

/// One call with a throwaway key claiming to be `claimed`: the refusal it got, if it got
/// as far as the connect request (`None`: refused before, or no answer).
async fn throwaway_call(
    endpoint: &quinn::Endpoint,
    to: SocketAddr,
    key: PublicKey,
    claimed: &str,
) -> Option<ConnectRefusal> {
    let id = Identity::generate();
    let conn = endpoint::dial_peer(endpoint, &id, to, key).await.ok()?;
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    let connect = PeerMsg::Connect {
        version: proto::PROTOCOL_VERSION,
        initiator: claimed.parse().unwrap(),
        background: false,
    };
    frame::write_frame(&mut send, &connect).await.ok()?;
    let reply = timeout(WAIT, frame::read_frame::<_, PeerMsg>(&mut recv)).await;
    conn.close(0u32.into(), b"");
    match reply {
        Ok(Ok(Some(PeerMsg::Refused { reason }))) => Some(reason),
        other => panic!("a throwaway key was not refused: {other:?}"),
    }
}

fn refusal_note(n: &Note) -> bool {
    matches!(
        n,
        Note::IncomingRefused { .. } | Note::IncomingRefusals { .. }
    )
}

#[tokio::test]
async fn a_flood_of_throwaway_keys_claiming_to_be_ali_locks_nobody_out() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let (to, key) = listening(&mut bianca).await;

    // Mallory floods bianca from another source address, 16 calls at a time, a fresh
    // key each, every one claiming to be ali, until told to stop.
    const MAX_CALLS: usize = 20_000;
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let busy = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(tokio::sync::Notify::new());
    let endpoint = quinn::Endpoint::client("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (endpoint, stop, calls, busy, started) = (
            endpoint.clone(),
            stop.clone(),
            calls.clone(),
            busy.clone(),
            started.clone(),
        );
        flood.spawn(async move {
            while !stop.load(Ordering::Relaxed) && calls.load(Ordering::Relaxed) < MAX_CALLS {
                let reason = throwaway_call(&endpoint, to, key, "ali").await;
                if reason == Some(ConnectRefusal::Busy) {
                    busy.fetch_add(1, Ordering::Relaxed);
                }
                if calls.fetch_add(1, Ordering::Relaxed) == 200 {
                    started.notify_one();
                }
            }
        });
    }
    started.notified().await;
    let flood_started = std::time::Instant::now();

    // During the flood, ali's genuine call gets through and bianca's own requests to
    // the directory are answered.
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    ali.expect(
        "connected",
        |n| matches!(n, Note::Connected { peer, .. } if peer == "bianca"),
    )
    .await;
    bianca
        .expect(
            "ali's call",
            |n| matches!(n, Note::Connected { peer, .. } if peer == "ali"),
        )
        .await;
    ali.say("hello through the flood").await;
    bianca
        .expect_message("ali", "hello through the flood")
        .await;
    bianca.say("/who").await;
    bianca
        .expect(
            "who",
            |n| matches!(n, Note::Who { users } if users.len() == 2),
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    while flood.join_next().await.is_some() {}
    let made = calls.load(Ordering::Relaxed);
    let secs = flood_started.elapsed().as_secs();
    eprintln!(
        "flood: {made} calls, {} answered Busy, ali's call and bianca's /who done within {secs} s",
        busy.load(Ordering::Relaxed)
    );
    assert!(
        made < MAX_CALLS,
        "the flood ended before ali's call was done"
    );

    // Bianca's screen: refusals are summarised, not shown one line each.
    bianca.say("/who").await;
    bianca
        .expect("who", |n| matches!(n, Note::Who { .. }))
        .await;
    // The first refusal, then one summary per interval (however slow this machine).
    let shown = bianca.seen.iter().filter(|n| refusal_note(n)).count() as u64;
    let bound = 2 + secs / peer::calls::gate::SUMMARY_INTERVAL.as_secs();
    assert!(
        shown <= bound,
        "{shown} refusal notes on bianca's screen for {made} calls (at most {bound})"
    );
    assert!(
        busy.load(Ordering::Relaxed) > 0,
        "the flood was never held back"
    );
    let summary = bianca
        .expect("a summary", |n| matches!(n, Note::IncomingRefusals { .. }))
        .await;
    match summary {
        Note::IncomingRefusals {
            count, by_reason, ..
        } => {
            assert!(count > 0);
            assert_eq!(by_reason.iter().map(|(_, n)| n).sum::<u64>(), count);
        }
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------------
// Rendezvous cannot aim a peer at someone else
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_caller_cannot_make_the_target_send_packets_to_addresses_it_chose() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["mallory", "bianca"]).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    listening(&mut bianca).await;

    // A third process on bianca's host (think of a local service), which mallory wants
    // bianca to send packets to.
    let victim = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let victim_addr = victim.local_addr().unwrap();
    // Mallory logs in from a real peer endpoint (so bianca's punch towards the address
    // the directory observes can be seen arriving), reporting the victim's address and
    // a multicast group as her own.
    let mallory_id = Arc::new(Identity::generate());
    let mallory_endpoint = endpoint::bind(&mallory_id, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut mallory = RawClient::connect_on(
        mallory_endpoint.clone(),
        dir.addr(),
        Some(dir.server.public_key()),
        |_| {},
    )
    .await;
    mallory.hello().await;
    let reported = vec![
        victim_addr,
        SocketAddr::new("224.0.0.251".parse().unwrap(), victim_addr.port()),
    ];
    login_reporting(&mut mallory, "mallory", &mallory_id, &reported).await;
    let reply = mallory
        .call(&Request::Rendezvous {
            user: "bianca".parse().unwrap(),
        })
        .await;
    assert!(
        matches!(reply, Reply::Rendezvous { direct: true, .. }),
        "{reply:?}"
    );

    // Bianca punches towards mallory: her connection to the observed address arrives
    // (that is the event that her punching ran; every address gets its first packet at
    // once, long before a handshake completes)...
    let punched = timeout(WAIT, async {
        loop {
            let incoming = mallory_endpoint.accept().await.expect("endpoint open");
            if let Ok(conn) = incoming.await {
                return conn;
            }
        }
    })
    .await
    .expect("bianca's punch towards the observed address");
    assert!(peer::reach::is_punch(&punched));
    punched.close(0u32.into(), b"");
    // ... and nothing reached the victim.
    let mut buf = [0u8; 2048];
    match victim.try_recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((n, from)) => panic!("bianca sent {n} bytes from {from} to {victim_addr}"),
        Err(e) => panic!("{e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Offline mail handed out again
// ---------------------------------------------------------------------------------------

/// Seals `text` from ali (logged in on `raw` with `id`) to bianca and deposits it;
/// returns the blob.
async fn deposit_to_bianca(raw: &mut RawClient, id: &Identity, text: &str) -> Vec<u8> {
    let (identity, prekey) = match raw
        .call(&Request::FetchPrekey {
            user: "bianca".parse().unwrap(),
        })
        .await
    {
        Reply::Prekey {
            identity,
            prekey: Some(prekey),
            ..
        } => (identity, prekey),
        other => panic!("expected bianca's prekey, got {other:?}"),
    };
    let (blob, _) = proto::sealed::seal(
        id,
        &"ali".parse().unwrap(),
        &"bianca".parse().unwrap(),
        &identity,
        &prekey,
        text,
        1_800_000_000_000,
    )
    .unwrap();
    deposit_blob(raw, &blob).await;
    blob
}

async fn deposit_blob(raw: &mut RawClient, blob: &[u8]) {
    let reply = raw
        .call(&Request::Deposit {
            to: "bianca".parse().unwrap(),
            blob: blob.to_vec(),
        })
        .await;
    assert!(matches!(reply, Reply::Queued { .. }), "{reply:?}");
}

fn offline_message(text: &'static str) -> impl Fn(&Note) -> bool {
    move |n| matches!(n, Note::OfflineMessage { text: t, .. } if t == text)
}

#[tokio::test]
async fn a_redelivered_offline_message_is_never_shown_twice_even_after_a_restart() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    // Bianca logs in once (publishing her prekey) and leaves.
    let bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let profile = bianca.quit().await;

    let ali_id = Identity::generate();
    let mut ali = RawClient::greeted(&dir.server, "127.0.0.1").await;
    assert_granted(&ali.login("ali", PASSWORD, &ali_id).await);
    let blob = deposit_to_bianca(&mut ali, &ali_id, "see you at eight").await;
    let mut bianca = TestPeer::start_in(&dir, "bianca", profile, Start::Idle)
        .await
        .unwrap();
    bianca
        .expect("the message", offline_message("see you at eight"))
        .await;
    let profile = bianca.quit().await;

    // The very same blob is handed to the directory again (a lost acknowledgement, a
    // replaying sender or directory), then a new message.
    deposit_blob(&mut ali, &blob).await;
    deposit_to_bianca(&mut ali, &ali_id, "new message").await;
    let mut bianca = TestPeer::start_in(&dir, "bianca", profile, Start::Idle)
        .await
        .unwrap();
    // Mail comes oldest first: once the new message is shown, the old copy was handled.
    bianca
        .expect("the new message", offline_message("new message"))
        .await;
    let again = bianca
        .seen
        .iter()
        .filter(|n| offline_message("see you at eight")(n))
        .count();
    assert_eq!(again, 0, "shown again after a restart: {:#?}", bianca.seen);
    bianca.quit().await;
}
