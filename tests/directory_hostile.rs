//! The directory against hostile and careless clients, over real QUIC on loopback.
//!
//! A raw client ([`testkit::RawClient`]: frames by hand, no `peer` code) sends garbage, oversized and
//! truncated frames, unknown message types, wrong versions and out-of-order requests;
//! each gets its error and its connection closed, while a well-behaved client logged in
//! at the same time keeps working. Then the authentication rules: lockout and unlock,
//! key mismatch, replayed signatures, lookups before login, sessions replaced elsewhere,
//! restart on the same data directory, and shutdown notices.

use std::time::Duration;

use directory::{Config, Directory, PasswordCost, close};
use proto::Identity;
use proto::message::{
    ErrorCode, Event, Refusal, Reply, Request, ServerMsg, login_transcript, resume_transcript,
};
use testkit::RawClient;
use testkit::raw::reported;
use tokio::time::timeout;

/// Upper bound for anything a test waits on.
const WAIT: Duration = Duration::from_secs(10);

fn config(data: &std::path::Path) -> Config {
    let mut config = Config::new(data);
    config.listen = "127.0.0.1:0".parse().unwrap();
    // Tests exercise the logic, not argon2's cost.
    config.password_cost = PasswordCost::insecure_fast();
    config
}

async fn start(data: &std::path::Path) -> Directory {
    Directory::start(config(data)).await.unwrap()
}

fn error_code(reply: &Reply) -> ErrorCode {
    match reply {
        Reply::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn refusal(reply: &Reply) -> Refusal {
    match reply {
        Reply::Refused { reason, .. } => *reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Deterministic junk (xorshift), so a failure can be reproduced.
fn junk(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Waits until `cond` holds (checked every few milliseconds), at most [`WAIT`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}

/// Sends `bytes` on a fresh connection, then FIN; expects `Error{BadFrame}` and a close.
async fn expect_bad_frame(dir: &Directory, bytes: &[u8]) {
    let mut raw = RawClient::to(dir).await;
    raw.send_raw(bytes).await;
    let _ = raw.send.finish();
    let reply = raw.reply().await;
    assert_eq!(error_code(&reply), ErrorCode::BadFrame, "{reply:?}");
    assert_eq!(raw.closed_with(WAIT).await, u64::from(close::BAD_FRAME));
}

#[tokio::test]
async fn hostile_clients_are_cut_off_and_others_keep_working() {
    let data = tempfile::tempdir().unwrap();
    let dir = start(data.path()).await;
    dir.add_user("ali", "secret-ali", false).await.unwrap();
    dir.add_user("bianca", "secret-bianca", false)
        .await
        .unwrap();
    let ali_id = Identity::generate();
    let bianca_id = Identity::generate();

    // A well-behaved client, logged in for the whole test.
    let (mut ali, _) = RawClient::logged_in(&dir, "ali", "secret-ali", &ali_id).await;
    let (mut bianca, _) = RawClient::logged_in(&dir, "bianca", "secret-bianca", &bianca_id).await;
    match ali
        .call(Request::Lookup {
            user: "bianca".parse().unwrap(),
        })
        .await
    {
        Reply::Found(info) => {
            assert_eq!(info.identity, bianca_id.public());
            assert_eq!(info.observed, bianca.endpoint.local_addr().unwrap());
            assert_eq!(info.addresses, ["192.168.1.20:7000".parse().unwrap()]);
        }
        other => panic!("expected Found, got {other:?}"),
    }

    // Random bytes.
    expect_bad_frame(&dir, &junk(200, 0x9e37_79b9_7f4a_7c15)).await;
    // A header claiming 4 GiB.
    let mut huge = u32::MAX.to_be_bytes().to_vec();
    huge.extend_from_slice(&[0; 16]);
    expect_bad_frame(&dir, &huge).await;
    // A truncated frame, then FIN.
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0; 10]);
    expect_bad_frame(&dir, &truncated).await;
    // A header cut short, then FIN.
    expect_bad_frame(&dir, &[0, 0]).await;
    // An unknown message type (enum variant index 200).
    expect_bad_frame(&dir, &[0, 0, 0, 1, 200]).await;
    // A valid frame with trailing garbage inside.
    let mut trailing = proto::frame::encode(&Request::Who).unwrap();
    trailing.push(7);
    let len = (trailing.len() - 4) as u32;
    trailing[..4].copy_from_slice(&len.to_be_bytes());
    expect_bad_frame(&dir, &trailing).await;
    // Garbage after a proper Hello also closes the connection.
    {
        let mut raw = RawClient::to(&dir).await;
        raw.hello().await;
        raw.send_raw(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
        assert_eq!(error_code(&raw.reply().await), ErrorCode::BadFrame);
        assert_eq!(raw.closed_with(WAIT).await, u64::from(close::BAD_FRAME));
    }

    // Hello with another protocol version.
    {
        let mut raw = RawClient::to(&dir).await;
        let reply = raw
            .call(Request::Hello {
                version: 999,
                software: "future".into(),
            })
            .await;
        match &reply {
            Reply::Error {
                code: ErrorCode::UnsupportedVersion,
                message,
            } => {
                assert!(message.contains("999"), "{message}");
                assert!(
                    message.contains(&proto::PROTOCOL_VERSION.to_string()),
                    "{message}"
                );
            }
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
        assert_eq!(raw.closed_with(WAIT).await, u64::from(close::PROTOCOL));
    }
    // A request before Hello.
    {
        let mut raw = RawClient::to(&dir).await;
        let reply = raw
            .call(Request::Lookup {
                user: "ali".parse().unwrap(),
            })
            .await;
        assert_eq!(error_code(&reply), ErrorCode::ProtocolViolation);
        assert_eq!(raw.closed_with(WAIT).await, u64::from(close::PROTOCOL));
    }
    // Hello twice.
    {
        let mut raw = RawClient::to(&dir).await;
        raw.hello().await;
        let reply = raw
            .call(Request::Hello {
                version: proto::PROTOCOL_VERSION,
                software: "again".into(),
            })
            .await;
        assert_eq!(error_code(&reply), ErrorCode::ProtocolViolation);
        assert_eq!(raw.closed_with(WAIT).await, u64::from(close::PROTOCOL));
    }

    // The well-behaved clients did not notice any of it.
    match ali
        .call(Request::Lookup {
            user: "bianca".parse().unwrap(),
        })
        .await
    {
        Reply::Found(info) => assert_eq!(info.identity, bianca_id.public()),
        other => panic!("expected Found, got {other:?}"),
    }
    match bianca.call(Request::Who).await {
        Reply::Online { users } => {
            let names: Vec<_> = users.iter().map(|u| u.user.as_str()).collect();
            assert_eq!(names, ["ali", "bianca"]);
        }
        other => panic!("expected Online, got {other:?}"),
    }
    assert!(ali.events.is_empty() && bianca.events.is_empty());
    assert_eq!(dir.online_count(), 2);
    dir.shutdown().await;
}

#[tokio::test]
async fn wrong_passwords_lock_the_account_until_unlocked() {
    let data = tempfile::tempdir().unwrap();
    let dir = start(data.path()).await;
    dir.add_user("ali", "secret-ali", false).await.unwrap();
    let id = Identity::generate();

    let mut raw = RawClient::to(&dir).await;
    let nonce = raw.hello().await;
    for left in [2, 1, 0] {
        let reply = raw
            .login_with(&nonce, "ali", "wrong-password", &id, &reported())
            .await;
        assert_eq!(
            reply,
            Reply::Refused {
                reason: Refusal::BadCredentials,
                attempts_left: Some(left),
                retry_after_secs: None,
            }
        );
    }
    // Locked, even with the right password, and from another connection too.
    let reply = raw
        .login_with(&nonce, "ali", "secret-ali", &id, &reported())
        .await;
    match reply {
        Reply::Refused {
            reason: Refusal::LockedOut,
            retry_after_secs: Some(secs),
            ..
        } => assert!((1..=30).contains(&secs), "{secs}"),
        other => panic!("expected LockedOut, got {other:?}"),
    }
    let mut other = RawClient::to(&dir).await;
    let other_nonce = other.hello().await;
    let reply = other
        .login_with(&other_nonce, "ali", "secret-ali", &id, &reported())
        .await;
    assert_eq!(refusal(&reply), Refusal::LockedOut);

    dir.unlock_user("ali").await.unwrap();
    let reply = raw
        .login_with(&nonce, "ali", "secret-ali", &id, &reported())
        .await;
    assert!(matches!(reply, Reply::Granted { .. }), "{reply:?}");
    // A second login on the same connection is refused.
    let reply = raw
        .login_with(&nonce, "ali", "secret-ali", &id, &reported())
        .await;
    assert_eq!(refusal(&reply), Refusal::AlreadyLoggedIn);
    dir.shutdown().await;
}

#[tokio::test]
async fn key_mismatch_replay_and_lookup_rules() {
    let data = tempfile::tempdir().unwrap();
    let dir = start(data.path()).await;
    dir.add_user("ali", "secret-ali", false).await.unwrap();
    dir.add_user("bianca", "secret-bianca", false)
        .await
        .unwrap();
    let ali_id = Identity::generate();

    // Before login: lookups find nobody, Who is refused.
    let mut anon = RawClient::to(&dir).await;
    let anon_nonce = anon.hello().await;
    let (_ali, _) = RawClient::logged_in(&dir, "ali", "secret-ali", &ali_id).await;
    assert_eq!(
        anon.call(Request::Lookup {
            user: "ali".parse().unwrap()
        })
        .await,
        Reply::NotFound {
            user: "ali".parse().unwrap()
        }
    );
    assert_eq!(
        error_code(&anon.call(Request::Who).await),
        ErrorCode::NotLoggedIn
    );

    // The first login registered ali's key; another key is refused, like a wrong
    // password (issue 14: no oracle telling that the password was right).
    let impostor = Identity::generate();
    let reply = anon
        .login_with(&anon_nonce, "ali", "secret-ali", &impostor, &reported())
        .await;
    assert_eq!(refusal(&reply), Refusal::BadCredentials);

    // A signature made for another connection's nonce does not verify here.
    let bianca_id = Identity::generate();
    let mut victim = RawClient::to(&dir).await;
    let victim_nonce = victim.hello().await;
    let stolen = bianca_id.sign(&login_transcript(
        &victim.channel(),
        &victim_nonce,
        "bianca",
        &bianca_id.public(),
    ));
    let mut attacker = RawClient::to(&dir).await;
    let attacker_nonce = attacker.hello().await;
    assert_ne!(attacker_nonce, victim_nonce);
    let reply = attacker
        .call(Request::Login {
            user: "bianca".parse().unwrap(),
            password: "secret-bianca".into(),
            identity: bianca_id.public(),
            signature: stolen,
            addresses: vec![],
        })
        .await;
    assert_eq!(refusal(&reply), Refusal::BadSignature);
    // ... while on its own connection the same signature works.
    let reply = victim
        .call(Request::Login {
            user: "bianca".parse().unwrap(),
            password: "secret-bianca".into(),
            identity: bianca_id.public(),
            signature: stolen,
            addresses: vec![],
        })
        .await;
    assert!(matches!(reply, Reply::Granted { .. }), "{reply:?}");
    match victim
        .call(Request::Lookup {
            user: "nobody".parse().unwrap(),
        })
        .await
    {
        Reply::NotFound { user } => assert_eq!(user, "nobody"),
        other => panic!("expected NotFound, got {other:?}"),
    }

    // Logout leaves the connection usable but removes the user from presence.
    assert_eq!(victim.call(Request::Logout).await, Reply::LoggedOut);
    assert_eq!(
        victim
            .call(Request::Lookup {
                user: "ali".parse().unwrap()
            })
            .await,
        Reply::NotFound {
            user: "ali".parse().unwrap()
        }
    );
    assert_eq!(dir.online_count(), 1);
    dir.shutdown().await;
}

#[tokio::test]
async fn second_login_replaces_first_and_dropped_connections_leave() {
    let data = tempfile::tempdir().unwrap();
    let dir = start(data.path()).await;
    dir.add_user("ali", "secret-ali", false).await.unwrap();
    dir.add_user("bianca", "secret-bianca", false)
        .await
        .unwrap();
    let id = Identity::generate();

    let (mut first, _) = RawClient::logged_in(&dir, "ali", "secret-ali", &id).await;
    let (second, _) = RawClient::logged_in(&dir, "ali", "secret-ali", &id).await;
    assert_eq!(
        first.next().await,
        Some(ServerMsg::Event(Event::ForcedLogout {
            reason: "logged in elsewhere".into()
        }))
    );
    assert_eq!(
        first.closed_with(WAIT).await,
        u64::from(close::FORCED_LOGOUT)
    );
    assert_eq!(
        dir.online_count(),
        1,
        "the old session's end kept the new one"
    );

    let (mut watcher, _) =
        RawClient::logged_in(&dir, "bianca", "secret-bianca", &Identity::generate()).await;
    match watcher
        .call(Request::Lookup {
            user: "ali".parse().unwrap(),
        })
        .await
    {
        Reply::Found(info) => assert_eq!(info.identity, id.public()),
        other => panic!("expected Found, got {other:?}"),
    }
    // Closing the connection logs the user out at once.
    second.conn.close(0u32.into(), b"bye");
    until("closed connection to leave presence", || {
        dir.online_count() == 1
    })
    .await;
    assert_eq!(
        watcher
            .call(Request::Lookup {
                user: "ali".parse().unwrap()
            })
            .await,
        Reply::NotFound {
            user: "ali".parse().unwrap()
        }
    );
    dir.shutdown().await;
}

#[tokio::test]
async fn restart_keeps_key_accounts_and_tickets() {
    let data = tempfile::tempdir().unwrap();
    let id = Identity::generate();
    let (key, ticket) = {
        let dir = start(data.path()).await;
        dir.add_user("ali", "secret-ali", true).await.unwrap();
        let (_raw, ticket) = RawClient::logged_in(&dir, "ali", "secret-ali", &id).await;
        let key = dir.public_key();
        dir.shutdown().await;
        (key, ticket)
    };
    let dir = start(data.path()).await;
    assert_eq!(dir.public_key(), key, "same key file, same key");
    assert_eq!(dir.fingerprint(), key.fingerprint());

    // The ticket from before the restart resumes, without the password.
    let mut raw = RawClient::to(&dir).await;
    let nonce = raw.hello().await;
    let reply = raw
        .call(Request::Resume {
            user: "ali".parse().unwrap(),
            ticket: ticket.clone(),
            signature: id.sign(&resume_transcript(&raw.channel(), &nonce, "ali", &ticket)),
            addresses: vec![],
        })
        .await;
    match reply {
        Reply::Granted {
            user,
            ticket: fresh,
            admin,
            ..
        } => {
            assert_eq!(user, "ali");
            assert!(admin);
            assert_ne!(fresh, ticket);
        }
        other => panic!("expected Granted, got {other:?}"),
    }
    assert_eq!(raw.call(Request::Logout).await, Reply::LoggedOut);
    // The account (and its registered key) survived as well.
    let reply = raw
        .login_with(
            &nonce,
            "ali",
            "secret-ali",
            &Identity::generate(),
            &reported(),
        )
        .await;
    assert_eq!(refusal(&reply), Refusal::BadCredentials, "another key");
    let reply = raw
        .login_with(&nonce, "ali", "secret-ali", &id, &reported())
        .await;
    assert!(
        matches!(reply, Reply::Granted { admin: true, .. }),
        "{reply:?}"
    );
    dir.shutdown().await;
}

#[tokio::test]
async fn open_registration_and_shutdown_notice() {
    let data = tempfile::tempdir().unwrap();
    let mut config = config(data.path());
    config.open_registration = true;
    let dir = Directory::start(config).await.unwrap();
    let id = Identity::generate();

    let mut raw = RawClient::to(&dir).await;
    let nonce = match raw
        .call(Request::Hello {
            version: proto::PROTOCOL_VERSION,
            software: "raw-test".into(),
        })
        .await
    {
        Reply::Welcome {
            nonce,
            open_registration,
            ..
        } => {
            assert!(open_registration);
            nonce
        }
        other => panic!("expected Welcome, got {other:?}"),
    };
    let register = |user: &str, password: &str| Request::Register {
        user: user.parse().unwrap(),
        password: password.into(),
        identity: id.public(),
    };
    assert_eq!(
        raw.call(register("carla", "secret-carla")).await,
        Reply::Registered {
            user: "carla".parse().unwrap()
        }
    );
    assert_eq!(
        refusal(&raw.call(register("carla", "secret-carla")).await),
        Refusal::UserExists
    );
    assert_eq!(
        refusal(&raw.call(register("Carla!", "secret-carla")).await),
        Refusal::Invalid
    );
    assert_eq!(
        refusal(&raw.call(register("dora", "short")).await),
        Refusal::Invalid
    );
    let reply = raw
        .login_with(&nonce, "carla", "secret-carla", &id, &reported())
        .await;
    assert!(matches!(reply, Reply::Granted { .. }), "{reply:?}");

    let shutdown = tokio::spawn(dir.shutdown());
    match raw.next().await {
        Some(ServerMsg::Event(Event::Shutdown { reason })) => assert!(!reason.is_empty()),
        other => panic!("expected a Shutdown event, got {other:?}"),
    }
    assert_eq!(raw.closed_with(WAIT).await, u64::from(close::SHUTDOWN));
    timeout(WAIT, shutdown).await.unwrap().unwrap();
}

#[tokio::test]
async fn registration_is_closed_by_default() {
    let data = tempfile::tempdir().unwrap();
    let dir = start(data.path()).await;
    let mut raw = RawClient::to(&dir).await;
    raw.hello().await;
    let reply = raw
        .call(Request::Register {
            user: "eve".parse().unwrap(),
            password: "secret-eve".into(),
            identity: Identity::generate().public(),
        })
        .await;
    assert_eq!(refusal(&reply), Refusal::RegistrationClosed);
    dir.shutdown().await;
}

#[tokio::test]
async fn vanished_peers_time_out_while_live_ones_stay() {
    let data = tempfile::tempdir().unwrap();
    let mut config = config(data.path());
    config.idle_timeout = Duration::from_secs(1);
    let dir = Directory::start(config).await.unwrap();
    dir.add_user("ali", "secret-ali", false).await.unwrap();
    dir.add_user("bianca", "secret-bianca", false)
        .await
        .unwrap();
    let (ali, _) = RawClient::logged_in(&dir, "ali", "secret-ali", &Identity::generate()).await;
    let (mut bianca, _) =
        RawClient::logged_in(&dir, "bianca", "secret-bianca", &Identity::generate()).await;
    assert_eq!(dir.online_count(), 2);

    // Ali vanishes without a word: his packets now come from another port, which the
    // directory ignores (no migration), and nothing reaches him any more.
    ali.endpoint
        .rebind(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .unwrap();
    until("the vanished peer to leave presence", || {
        dir.online_count() == 1
    })
    .await;
    // Bianca, sending keep-alives, outlived the idle timeout.
    match bianca.call(Request::Who).await {
        Reply::Online { users } => {
            assert_eq!(users.len(), 1);
            assert_eq!(users[0].user, "bianca");
        }
        other => panic!("expected Online, got {other:?}"),
    }
    dir.shutdown().await;
}

#[tokio::test]
async fn connections_per_source_are_limited() {
    let data = tempfile::tempdir().unwrap();
    let mut config = config(data.path());
    config.max_connections_per_ip = 2;
    let dir = Directory::start(config).await.unwrap();
    let mut first = RawClient::to(&dir).await;
    first.hello().await;
    let mut second = RawClient::to(&dir).await;
    second.hello().await;
    let refused = testkit::raw::handshake(
        &testkit::raw::endpoint("127.0.0.1"),
        dir.local_addr(),
        dir.public_key(),
    )
    .await;
    assert!(
        refused.is_err(),
        "a third connection from one address is refused"
    );

    // A slot frees up when a connection ends.
    first.conn.close(0u32.into(), b"bye");
    until("the closed connection to free its slot", || {
        dir.connection_count() == 1
    })
    .await;
    let mut third = RawClient::to(&dir).await;
    third.hello().await;
    assert_eq!(second.call(Request::Logout).await, Reply::LoggedOut);
    dir.shutdown().await;
}

#[tokio::test]
async fn operator_actions_end_sessions() {
    let data = tempfile::tempdir().unwrap();
    let dir = start(data.path()).await;
    dir.add_user("ali", "secret-ali", false).await.unwrap();
    let id = Identity::generate();
    let (mut ali, ticket) = RawClient::logged_in(&dir, "ali", "secret-ali", &id).await;

    // Resetting the key ends the session and invalidates the ticket; a new key is accepted.
    dir.reset_key("ali").await.unwrap();
    match ali.next().await {
        Some(ServerMsg::Event(Event::ForcedLogout { reason })) => {
            assert!(reason.contains("reset"), "{reason}")
        }
        other => panic!("expected ForcedLogout, got {other:?}"),
    }
    assert_eq!(ali.closed_with(WAIT).await, u64::from(close::FORCED_LOGOUT));
    let mut raw = RawClient::to(&dir).await;
    let nonce = raw.hello().await;
    let reply = raw
        .call(Request::Resume {
            user: "ali".parse().unwrap(),
            ticket: ticket.clone(),
            signature: id.sign(&resume_transcript(&raw.channel(), &nonce, "ali", &ticket)),
            addresses: vec![],
        })
        .await;
    assert_eq!(refusal(&reply), Refusal::TicketInvalid);
    let new_id = Identity::generate();
    let reply = raw
        .login_with(&nonce, "ali", "secret-ali", &new_id, &reported())
        .await;
    assert!(matches!(reply, Reply::Granted { .. }), "{reply:?}");

    // Removing the account ends the session too.
    dir.remove_user("ali").await.unwrap();
    assert!(matches!(
        raw.next().await,
        Some(ServerMsg::Event(Event::ForcedLogout { .. }))
    ));
    assert_eq!(raw.closed_with(WAIT).await, u64::from(close::FORCED_LOGOUT));
    assert_eq!(dir.online_count(), 0);
    assert!(dir.list_users().await.unwrap().is_empty());
    dir.shutdown().await;
}

#[tokio::test]
async fn request_floods_are_rate_limited() {
    let data = tempfile::tempdir().unwrap();
    let mut config = config(data.path());
    config.requests_per_sec = 1;
    config.request_burst = 3;
    let dir = Directory::start(config).await.unwrap();
    dir.add_user("ali", "secret-ali", false).await.unwrap();
    let mut raw = RawClient::to(&dir).await;
    let nonce = raw.hello().await;
    let reply = raw
        .login_with(
            &nonce,
            "ali",
            "secret-ali",
            &Identity::generate(),
            &reported(),
        )
        .await;
    assert!(matches!(reply, Reply::Granted { .. }), "{reply:?}");
    assert!(matches!(raw.call(Request::Who).await, Reply::Online { .. }));
    // The burst is used up: the next request is refused, the connection stays.
    assert_eq!(
        error_code(&raw.call(Request::Who).await),
        ErrorCode::RateLimited
    );
    assert_eq!(dir.online_count(), 1);
    dir.shutdown().await;
}

#[tokio::test]
async fn instance_links_are_refused_by_a_directory_running_alone() {
    let data = tempfile::tempdir().unwrap();
    let dir = start(data.path()).await;
    // Even signed with the directory's own key: alone, it has no instances to link.
    let own =
        directory::keys::load_or_create(&data.path().join(directory::keys::KEY_FILE)).unwrap();
    for signer in [Identity::generate(), own] {
        let mut raw = RawClient::to(&dir).await;
        let nonce = raw.hello().await;
        let reply = raw
            .call(Request::InstanceAuth {
                instance: "0123456789abcdef".into(),
                signature: signer.sign(&proto::message::instance_transcript(
                    &nonce,
                    "0123456789abcdef",
                )),
            })
            .await;
        assert_eq!(error_code(&reply), ErrorCode::NotPermitted, "{reply:?}");
        assert_eq!(raw.closed_with(WAIT).await, u64::from(close::PROTOCOL));
    }
    dir.shutdown().await;
}

/// A request naming a user or room with a name that breaks the rules does not decode: it
/// is a bad frame like any other, which closes that connection and no other. (Before
/// names were typed, the directory answered such a lookup with `NotFound` echoing the
/// name back.)
#[tokio::test]
async fn names_that_break_the_rules_are_bad_frames() {
    let data = tempfile::tempdir().unwrap();
    let dir = start(data.path()).await;
    dir.add_user("ali", "secret-ali", false).await.unwrap();
    dir.add_user("mallory", "secret-mallory", false)
        .await
        .unwrap();
    let (ali_id, mallory_id) = (Identity::generate(), Identity::generate());
    // A well-behaved client, on one connection for the whole test.
    let (mut ali, _) = RawClient::logged_in(&dir, "ali", "secret-ali", &ali_id).await;

    // A frame: the request's variant index, then one name encoded as a string.
    let with_name = |variant: u8, name: &str| {
        let mut payload = vec![variant, u8::try_from(name.len()).unwrap()];
        payload.extend_from_slice(name.as_bytes());
        let mut bytes = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        bytes
    };
    // `Lookup` is variant 4, `JoinRoom` 7, `FetchPrekey` 13: a proper name decodes.
    let good = with_name(4, "ali");
    assert_eq!(
        proto::frame::decode::<Request>(&good[4..]).unwrap(),
        Request::Lookup {
            user: "ali".parse().unwrap()
        }
    );
    for (variant, name) in [
        (4, "zzz 00\nali"),
        (4, "ali\u{1b}[2K"),
        (7, "room\u{202e}"),
        (13, "ali\u{200b}"),
        (4, "Ali"),
    ] {
        let (mut raw, _) =
            RawClient::logged_in(&dir, "mallory", "secret-mallory", &mallory_id).await;
        raw.send_raw(&with_name(variant, name)).await;
        let reply = raw.reply().await;
        assert_eq!(
            error_code(&reply),
            ErrorCode::BadFrame,
            "{name:?}: {reply:?}"
        );
        assert_eq!(raw.closed_with(WAIT).await, u64::from(close::BAD_FRAME));
    }
    // ali's connection saw none of it and works as ever.
    let reply = ali
        .call(Request::Lookup {
            user: "ali".parse().unwrap(),
        })
        .await;
    assert!(matches!(reply, Reply::Found(_)), "{reply:?}");
    dir.shutdown().await;
}

#[tokio::test]
async fn an_administrators_lock_takes_the_user_out_of_rooms_and_ends_the_session() {
    let data = tempfile::tempdir().unwrap();
    let dir = start(data.path()).await;
    dir.add_user("root", "secret-root", true).await.unwrap();
    dir.add_user("ali", "secret-ali", false).await.unwrap();
    let (mut root, _) =
        RawClient::logged_in(&dir, "root", "secret-root", &Identity::generate()).await;
    let (mut ali, _) = RawClient::logged_in(&dir, "ali", "secret-ali", &Identity::generate()).await;
    for raw in [&mut ali, &mut root] {
        let reply = raw
            .call(Request::JoinRoom {
                room: "ops".parse().unwrap(),
            })
            .await;
        assert!(matches!(reply, Reply::RoomMembers { .. }), "{reply:?}");
    }

    let reply = root
        .call(Request::Admin(proto::message::AdminRequest::Lock {
            name: "ali".parse().unwrap(),
        }))
        .await;
    let Reply::Done { message } = reply else {
        panic!("expected Done, got {reply:?}")
    };
    assert!(
        message.contains("their session") && message.contains("ops"),
        "{message}"
    );
    assert!(message.contains("cannot end"), "{message}");
    // The room-mate is told ali left the room (after the reply, or before it).
    let left = |e: &Event| matches!(e, Event::RoomChanged { room, user, joined: false } if room == "ops" && user == "ali");
    while !root.events.iter().any(left) {
        match root.next().await {
            Some(ServerMsg::Event(e)) => root.events.push(e),
            other => panic!("expected ali leaving the room, got {other:?}"),
        }
    }
    assert_eq!(ali.closed_with(WAIT).await, u64::from(close::FORCED_LOGOUT));
    match root.call(Request::ListRooms).await {
        Reply::Rooms { rooms } => assert!(
            rooms.iter().all(|r| r.room != "ops" || r.members == 1),
            "{rooms:?}"
        ),
        other => panic!("{other:?}"),
    }
    dir.shutdown().await;
}
