//! The directory's limits, each pushed past its edge by a real client over QUIC on
//! loopback: frame size, the hello and frame deadlines, streams per connection and the
//! bytes an unread stream may pin, connections in total, handshakes per source address,
//! a client that never reads its replies, and the notification queue of a peer that
//! never reads its events. Every test fails if its limit is taken away (see
//! `docs/LIMITS.md` for what each limit is and where it is set).
//!
//! 127.0.0.1, 127.0.0.2 and 127.0.0.3 are all loopback on Linux, so a client bound to one
//! of them is "another source address" to the directory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use directory::{Config, Directory, PasswordCost, close};
use proto::Identity;
use proto::message::{ErrorCode, Event, Reply, Request};
use testkit::RawClient;
use testkit::raw::{endpoint, handshake};
use tokio::time::timeout;

/// Upper bound for anything a test waits on.
const WAIT: Duration = Duration::from_secs(10);

async fn start(adjust: impl FnOnce(&mut Config)) -> (Directory, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::new(data.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.password_cost = PasswordCost::insecure_fast();
    adjust(&mut config);
    (Directory::start(config).await.unwrap(), data)
}

/// Waits until `cond` holds, at most [`WAIT`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}

fn error_code(reply: &Reply) -> ErrorCode {
    match reply {
        Reply::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_frame_over_the_size_limit_is_refused_from_its_header_alone() {
    let (dir, _data) = start(|_| {}).await;
    let mut raw = RawClient::from_ip(&dir, "127.0.0.1").await;
    raw.hello().await;
    // Only the 4-byte header of a frame one byte too large; no body, stream left open.
    let len = u32::try_from(proto::frame::MAX_FRAME + 1).unwrap();
    raw.send.write_all(&len.to_be_bytes()).await.unwrap();
    assert_eq!(error_code(&raw.reply().await), ErrorCode::BadFrame);
    assert_eq!(
        raw.closed_with(WAIT).await,
        u64::from(close::BAD_FRAME),
        "refused without waiting for (or allocating) the body"
    );
    // A frame of exactly the limit is read (and then fails to decode as a request).
    let mut raw = RawClient::from_ip(&dir, "127.0.0.1").await;
    raw.hello().await;
    let len = u32::try_from(proto::frame::MAX_FRAME).unwrap();
    let mut frame = len.to_be_bytes().to_vec();
    frame.resize(4 + proto::frame::MAX_FRAME, 0xee);
    raw.send.write_all(&frame).await.unwrap();
    assert_eq!(error_code(&raw.reply().await), ErrorCode::BadFrame);
    dir.shutdown().await;
}

#[tokio::test]
async fn names_and_passwords_over_their_limits_are_refused() {
    let (dir, _data) = start(|c| c.open_registration = true).await;
    dir.add_user("ali", "secret-ali", false).await.unwrap();
    let mut raw = RawClient::from_ip(&dir, "127.0.0.1").await;
    raw.hello().await;
    let id = Identity::generate();
    let register = |user: &str, password: &str| Request::Register {
        user: user.into(),
        password: password.into(),
        identity: id.public(),
    };
    let longest_name = "n".repeat(proto::names::MAX_USERNAME);
    let longest_password = "p".repeat(proto::names::MAX_PASSWORD);
    for (user, password) in [
        (format!("{longest_name}x"), "secret-x".to_string()),
        ("dora".into(), format!("{longest_password}x")),
        ("dora".into(), "short".into()),
        ("Dora".into(), "secret-dora".into()),
    ] {
        let reply = raw.call(register(&user, &password)).await;
        assert!(
            matches!(
                reply,
                Reply::Refused {
                    reason: proto::message::Refusal::Invalid,
                    ..
                }
            ),
            "{} bytes of name, {} of password: {reply:?}",
            user.len(),
            password.len()
        );
    }
    // Right at the limits is fine.
    let reply = raw.call(register(&longest_name, &longest_password)).await;
    assert!(matches!(reply, Reply::Registered { .. }), "{reply:?}");
    assert_eq!(dir.list_users().await.unwrap().len(), 2);

    // A login with an over-long password is refused like a wrong one, without counting
    // against the account (no account has such a password).
    let reply = raw
        .login(
            "ali",
            &format!("{longest_password}x"),
            &Identity::generate(),
        )
        .await;
    assert!(
        matches!(
            reply,
            Reply::Refused {
                reason: proto::message::Refusal::BadCredentials,
                ..
            }
        ),
        "{reply:?}"
    );
    let ali = dir.list_users().await.unwrap();
    assert!(ali.iter().all(|u| u.failed_attempts == 0), "{ali:?}");
    dir.shutdown().await;
}

#[tokio::test]
async fn silent_and_stalling_clients_are_cut_off_by_the_deadlines() {
    let (dir, _data) = start(|c| {
        c.hello_timeout = Duration::from_secs(1);
        c.frame_timeout = Duration::from_secs(1);
    })
    .await;
    let timed_out = u64::from(close::TIMEOUT);

    // Connects, never opens a stream.
    let endpoint = endpoint("127.0.0.1");
    let silent = handshake(&endpoint, dir.local_addr(), dir.public_key())
        .await
        .unwrap();
    match timeout(WAIT, silent.closed()).await.expect("not closed") {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), timed_out)
        }
        other => panic!("closed otherwise: {other}"),
    }
    // Opens the stream and starts a frame, but never finishes its Hello.
    let mut mute = RawClient::from_ip(&dir, "127.0.0.1").await;
    mute.send.write_all(&[0, 0]).await.unwrap();
    assert_eq!(mute.closed_with(WAIT).await, timed_out);
    // Says Hello, then starts a frame and stalls in the middle of it.
    let mut stalling = RawClient::from_ip(&dir, "127.0.0.1").await;
    stalling.hello().await;
    let started = Instant::now();
    stalling
        .send
        .write_all(&[0, 0, 0, 100, 1, 2, 3])
        .await
        .unwrap();
    assert_eq!(stalling.closed_with(WAIT).await, timed_out);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // An idle client after Hello is normal: it stays.
    let mut idle = RawClient::from_ip(&dir, "127.0.0.1").await;
    idle.hello().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        error_code(&idle.call(Request::Who).await),
        ErrorCode::NotLoggedIn
    );
    dir.shutdown().await;
}

#[tokio::test]
async fn streams_per_connection_are_capped_and_unread_streams_pin_little() {
    let (dir, _data) = start(|c| c.max_streams_per_connection = 2).await;
    let mut raw = RawClient::from_ip(&dir, "127.0.0.1").await;
    raw.hello().await;

    // One more bidirectional stream fits; the next one waits for a credit that never
    // comes, and unidirectional streams are not allowed at all.
    let (mut extra, _extra_recv) = raw.conn.open_bi().await.unwrap();
    assert!(
        timeout(Duration::from_millis(500), raw.conn.open_bi())
            .await
            .is_err(),
        "a third stream was allowed"
    );
    assert!(
        timeout(Duration::from_millis(500), raw.conn.open_uni())
            .await
            .is_err(),
        "a unidirectional stream was allowed"
    );

    // The directory never reads the extra stream: how much can we make it hold?
    let chunk = vec![0x5a; 16 * 1024];
    let mut accepted = 0usize;
    loop {
        match timeout(Duration::from_millis(300), extra.write(&chunk)).await {
            Ok(Ok(n)) => accepted += n,
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => break, // blocked by flow control
        }
        assert!(accepted <= 1 << 20, "1 MiB went into a stream nobody reads");
    }
    assert!(
        accepted <= 2 * proto::frame::MAX_FRAME,
        "{accepted} bytes buffered for an unread stream"
    );
    // The control stream still has its window.
    assert_eq!(
        error_code(&raw.call(Request::Who).await),
        ErrorCode::NotLoggedIn
    );
    dir.shutdown().await;
}

#[tokio::test]
async fn total_connections_are_capped_across_source_addresses() {
    let (dir, _data) = start(|c| {
        c.max_connections = 2;
        c.max_anonymous = 2;
        c.max_connections_per_ip = 10;
    })
    .await;
    let mut a = RawClient::from_ip(&dir, "127.0.0.1").await;
    a.hello().await;
    let mut b = RawClient::from_ip(&dir, "127.0.0.2").await;
    b.hello().await;
    let third = endpoint("127.0.0.3");
    assert!(
        handshake(&third, dir.local_addr(), dir.public_key())
            .await
            .is_err(),
        "a third connection got in past max_connections = 2"
    );
    assert_eq!(dir.connection_count(), 2);

    a.conn.close(0u32.into(), b"bye");
    until("the closed connection's slot to free up", || {
        dir.connection_count() == 1
    })
    .await;
    let conn = handshake(&third, dir.local_addr(), dir.public_key())
        .await
        .expect("a slot is free again");
    assert_eq!(
        error_code(&b.call(Request::Who).await),
        ErrorCode::NotLoggedIn
    );
    drop(conn);
    dir.shutdown().await;
}

#[tokio::test]
async fn strangers_must_log_in_in_time_and_cannot_keep_users_out() {
    const FLOOD: usize = 4;
    let (dir, _data) = start(|c| {
        c.max_anonymous = FLOOD;
        c.max_anonymous_per_ip = FLOOD;
        c.max_connections = 2;
        c.login_timeout = Duration::from_secs(2);
    })
    .await;
    dir.add_user("ali", "secret-ali", false).await.unwrap();

    // Strangers fill every anonymous slot from one address, say Hello and then only send
    // QUIC keep-alives (every 250 ms).
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let mut raw = RawClient::from_ip(&dir, "127.0.0.1").await;
        raw.hello().await;
        flood.push(raw);
    }
    let welcomed = Instant::now();
    assert_eq!(dir.anonymous_count(), FLOOD);
    assert!(
        handshake(&endpoint("127.0.0.1"), dir.local_addr(), dir.public_key())
            .await
            .is_err(),
        "the flooding source got one more anonymous slot"
    );

    // A real user from another address still gets in and logs in: a stranger's slot
    // makes room, and the login leaves the anonymous budget.
    let id = Identity::generate();
    let mut ali = RawClient::from_ip(&dir, "127.0.0.2").await;
    assert!(matches!(
        ali.login("ali", "secret-ali", &id).await,
        Reply::Granted { .. }
    ));
    assert_eq!(dir.online_count(), 1);
    assert!(dir.anonymous_count() < FLOOD);

    // Every stranger is gone at the deadline: the one that made room as busy, the
    // others for not logging in, keep-alives or not.
    let (mut busy, mut timed_out) = (0, 0);
    for raw in &flood {
        match raw.closed_with(WAIT).await {
            c if c == u64::from(close::BUSY) => busy += 1,
            c if c == u64::from(close::TIMEOUT) => timed_out += 1,
            other => panic!("closed with {other}"),
        }
    }
    assert_eq!((busy, timed_out), (1, FLOOD - 1));
    assert!(welcomed.elapsed() >= Duration::from_millis(1900));
    assert_eq!(dir.anonymous_count(), 0);

    // Ali, logged in, is past the deadline and stays.
    assert!(matches!(ali.call(Request::Who).await, Reply::Online { .. }));
    dir.shutdown().await;
}

#[tokio::test]
async fn a_strangers_flood_cannot_rotate_a_failed_login_out_of_the_audit_log() {
    const FLOOD: u64 = 190;
    let (dir, data) = start(|c| {
        c.audit_rotation = directory::rotating_file::Rotation {
            max_bytes: 1000,
            keep: 1,
        };
    })
    .await;
    dir.add_user("ali", "secret-ali", false).await.unwrap();
    let id = Identity::generate();
    let mut guesser = RawClient::from_ip(&dir, "127.0.0.2").await;
    assert!(matches!(
        guesser.login("ali", "not-her-password", &id).await,
        Reply::Refused { .. }
    ));

    // A stranger asks and asks without logging in (under the request burst).
    let mut stranger = RawClient::from_ip(&dir, "127.0.0.1").await;
    stranger.hello().await;
    for i in 0..FLOOD {
        let reply = stranger
            .call(Request::Lookup {
                user: format!("user{i}").parse().unwrap(),
            })
            .await;
        assert!(matches!(reply, Reply::NotFound { .. }), "{reply:?}");
    }
    assert_eq!(
        directory::metrics::Metrics::get(&dir.metrics().anonymous_refused),
        FLOOD,
        "each refusal is counted"
    );
    dir.shutdown().await;

    let read = |name: &str| std::fs::read_to_string(data.path().join(name)).unwrap_or_default();
    let retained = read("audit.log") + &read("audit.log.1");
    assert!(
        retained.contains("login_failed user=ali ip=127.0.0.2"),
        "the failed login was rotated out by the flood:\n{retained}"
    );
    assert!(!retained.contains("lookup by=- "), "{retained}");
    assert!(read("security.log").contains("login_failed user=ali ip=127.0.0.2"));
}

#[tokio::test]
async fn handshakes_per_source_are_rate_limited_before_any_work() {
    const BURST: u32 = 3;
    const RATE: u32 = 1;
    let (dir, _data) = start(|c| {
        c.handshake_burst = Some(BURST);
        c.handshakes_per_sec = Some(RATE);
        c.max_connections_per_ip = 1000;
    })
    .await;
    let flooder = endpoint("127.0.0.1");
    let started = Instant::now();
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for _ in 0..20 {
        match handshake(&flooder, dir.local_addr(), dir.public_key()).await {
            Ok(conn) => accepted.push(conn),
            Err(quinn::ConnectionError::ConnectionClosed(c))
                if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
            {
                refused += 1
            }
            Err(e) => panic!("refused otherwise: {e}"),
        }
    }
    let secs = started.elapsed().as_secs() as usize + 1;
    // The first burst goes straight in; the second after a stateless Retry (the address
    // is proven); then refusals, apart from the refill.
    let most = 2 * (BURST as usize + RATE as usize * secs);
    assert!(
        accepted.len() >= 2 * BURST as usize,
        "only {} accepted: the Retry path does not work",
        accepted.len()
    );
    assert!(
        refused >= 1 && accepted.len() <= most,
        "{} accepted, {refused} refused in {secs} s",
        accepted.len()
    );

    // Another source address is not affected.
    let other = endpoint("127.0.0.2");
    let conn = handshake(&other, dir.local_addr(), dir.public_key())
        .await
        .expect("another source gets in");
    drop((conn, accepted));
    dir.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_replies_is_disconnected() {
    let (dir, _data) = start(|c| {
        c.write_timeout = Duration::from_secs(1);
        c.requests_per_sec = 1_000_000;
        c.request_burst = 1_000_000;
    })
    .await;
    dir.add_user("ali", "secret-ali", false).await.unwrap();
    // A tiny receive window: after a few replies the directory can write no more.
    let mut slow = RawClient::from_ip_with(&dir, "127.0.0.1", |t| {
        t.stream_receive_window(1024u32.into())
            .receive_window(2048u32.into());
    })
    .await;
    slow.hello().await;
    let quinn_conn = slow.conn.clone();
    let mut send = slow.send;
    let flood = tokio::spawn(async move {
        let who = proto::frame::encode(&Request::Who).unwrap();
        // Blocks once the directory stops reading; fails once it closes.
        while send.write_all(&who).await.is_ok() {}
    });
    let started = Instant::now();
    match timeout(WAIT, quinn_conn.closed())
        .await
        .expect("not closed")
    {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), u64::from(close::TIMEOUT))
        }
        other => panic!("closed otherwise: {other}"),
    }
    assert!(started.elapsed() < WAIT);
    flood.await.unwrap();

    // Meanwhile everyone else is served as usual.
    let mut ali = RawClient::from_ip(&dir, "127.0.0.2").await;
    let reply = ali.login("ali", "secret-ali", &Identity::generate()).await;
    assert!(matches!(reply, Reply::Granted { .. }), "{reply:?}");
    until("the slow client's slot to free up", || {
        dir.connection_count() == 1
    })
    .await;
    dir.shutdown().await;
}

#[tokio::test]
async fn a_logged_in_peer_that_never_reads_its_events_is_disconnected() {
    let (dir, _data) = start(|c| {
        c.write_timeout = Duration::from_secs(1);
        c.notify_queue = 4;
        c.requests_per_sec = 1_000_000;
        c.request_burst = 1_000_000;
    })
    .await;
    dir.add_user("watcher", "secret-watcher", false)
        .await
        .unwrap();
    dir.add_user("bob", "secret-bob", false).await.unwrap();
    let mut watcher = RawClient::from_ip_with(&dir, "127.0.0.1", |t| {
        t.stream_receive_window(1024u32.into())
            .receive_window(2048u32.into());
    })
    .await;
    let reply = watcher
        .login("watcher", "secret-watcher", &Identity::generate())
        .await;
    assert!(matches!(reply, Reply::Granted { .. }), "{reply:?}");
    let watching = Request::Watch {
        users: vec![],
        everyone: true,
    };
    assert_eq!(watcher.call(watching).await, Reply::Watching);
    // From here on the watcher reads nothing; bob comes and goes.
    let bob_id = Identity::generate();
    let mut bob = RawClient::from_ip(&dir, "127.0.0.2").await;
    let reply = bob.login("bob", "secret-bob", &bob_id).await;
    assert!(matches!(reply, Reply::Granted { .. }), "{reply:?}");
    let started = Instant::now();
    let mut cycles = 0;
    while timeout(Duration::from_millis(1), watcher.conn.closed())
        .await
        .is_err()
    {
        assert!(started.elapsed() < WAIT, "the watcher is still connected");
        assert_eq!(bob.call(Request::Logout).await, Reply::LoggedOut);
        let reply = bob.login("bob", "secret-bob", &bob_id).await;
        assert!(matches!(reply, Reply::Granted { .. }), "{reply:?}");
        cycles += 1;
    }
    assert!(cycles > 2, "closed after {cycles} announcements only");
    until("the watcher to leave presence", || dir.online_count() == 1).await;
    dir.shutdown().await;
}

/// The queue itself, without a network: a watcher whose queue is full is told to go
/// rather than queued for (its queue never holds more than its capacity).
#[tokio::test]
async fn the_notification_queue_is_bounded() {
    use directory::presence::{ConnHandle, Presence};
    use directory::rooms::RoomIndex;
    use tokio::sync::mpsc;

    let data = tempfile::tempdir().unwrap();
    let store = directory::store::sqlite::SqliteStore::open(data.path().join("d.db"))
        .await
        .unwrap();
    let presence = Presence::new(Arc::new(RoomIndex::load(&store).await.unwrap()));
    let (events_tx, mut events) = mpsc::channel(1);
    let (notify_tx, mut notes) = mpsc::channel(2);
    let addr: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let key = Identity::generate().public();
    let watcher = ConnHandle {
        id: 1,
        events: events_tx,
        notify: notify_tx,
    };
    let _w = presence.login(&"watcher".parse().unwrap(), key, addr, vec![], watcher);
    presence.set_watch(&"watcher".parse().unwrap(), vec![], true);
    let mut sessions = Vec::new();
    for i in 0..3 {
        let (e, _) = mpsc::channel(1);
        let (n, _) = mpsc::channel(1);
        let conn = ConnHandle {
            id: 10 + i,
            events: e,
            notify: n,
        };
        sessions.push(presence.login(&format!("u{i}").parse().unwrap(), key, addr, vec![], conn));
    }
    // Two announcements fit; the third told the watcher to go.
    assert!(notes.try_recv().is_ok() && notes.try_recv().is_ok());
    assert!(notes.try_recv().is_err());
    match events.try_recv() {
        Ok(Event::ForcedLogout { reason }) => assert!(reason.contains("slow"), "{reason}"),
        other => panic!("expected a forced logout, got {other:?}"),
    }
}
