//! Several directory instances on one PostgreSQL (scale-out), end to end on loopback:
//! users on different instances find each other and chat, a crashed instance's users
//! vanish from the others within the expiry bound, and lockout counts are shared.
//!
//! Needs `NATTER_TEST_POSTGRES` (see `.ci/postgres`); without it each test says
//! "skipped: NATTER_TEST_POSTGRES not set" and passes, unless `NATTER_REQUIRE_EXTRAS=1`.

use std::time::Duration;

use directory::cluster::ClusterPolicy;
use directory::config::Secret;
use directory::metrics::Metrics;
use directory::relay::RelayTap;
use directory::store::postgres;
use peer::app::Start;
use peer::directory_client::{ClientError, DirectoryClient};
use peer::ui::{Direction, Note, Path};
use proto::Identity;
use proto::message::{ErrorCode, PeerInfo, Refusal, RelayMsg, RelayRefusal, Reply};
use testkit::client::{logged_in_at, peer_endpoint};
use testkit::{PASSWORD, RawClient, TestDirectory, TestPeer};

/// Fast heartbeats so that the expiry test is short.
const POLICY: ClusterPolicy = ClusterPolicy {
    address: None,
    heartbeat: Duration::from_millis(300),
    expiry: Duration::from_millis(1500),
};

/// A fresh schema in the test database, or `None` (skipped).
async fn database() -> Option<String> {
    let url = postgres::test_url_from_env()?;
    Some(postgres::create_scratch_schema(&url).await.unwrap().0)
}

async fn instance(url: &str) -> TestDirectory {
    instance_in(url, tempfile::tempdir().unwrap()).await
}

async fn instance_in(url: &str, data: tempfile::TempDir) -> TestDirectory {
    instance_with(url, data, |_| {}).await
}

async fn instance_with(
    url: &str,
    data: tempfile::TempDir,
    adjust: impl FnOnce(&mut directory::Config),
) -> TestDirectory {
    let url = url.to_string();
    TestDirectory::start_in(data, move |c| {
        c.database = Some(Secret(url));
        c.cluster = POLICY;
        adjust(c);
    })
    .await
    .unwrap()
}

/// A data directory holding a copy of `of`'s key: instances of one service share it
/// (peers pin one key for all of them).
fn data_sharing_key(of: &TestDirectory) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let key = directory::keys::KEY_FILE;
    std::fs::copy(of.data.path().join(key), data.path().join(key)).unwrap();
    data
}

/// Looks `user` up until `want(found)` holds, for at most `within`.
async fn lookup_until(
    client: &DirectoryClient,
    user: &str,
    within: Duration,
    want: impl Fn(&Option<PeerInfo>) -> bool,
) -> Option<PeerInfo> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let found = client.lookup(user).await.unwrap();
        if want(&found) || tokio::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn users_on_two_instances_find_each_other_and_chat() {
    let Some(url) = database().await else { return };
    let one = instance(&url).await;
    let two = instance_in(&url, data_sharing_key(&one)).await;
    one.add_users(&["ali", "bianca", "chloe", "dina", "emil"])
        .await
        .unwrap();

    // Accounts are shared: bianca, created through instance 1, logs in to instance 2.
    let (ali_id, bianca_id) = (Identity::generate(), Identity::generate());
    let (ali_ep, ali) = logged_in_at(one.addr(), None, "ali", &ali_id).await;
    let (bianca_ep, bianca) = logged_in_at(two.addr(), None, "bianca", &bianca_id).await;

    let wait = Duration::from_secs(5);
    let found = lookup_until(&ali, "bianca", wait, Option::is_some)
        .await
        .expect("instance 1 finds bianca on instance 2");
    assert_eq!(found.identity, bianca_id.public());
    assert_eq!(found.observed, bianca_ep.local_addr().unwrap());
    let found = lookup_until(&bianca, "ali", wait, Option::is_some)
        .await
        .expect("instance 2 finds ali on instance 1");
    assert_eq!(found.identity, ali_id.public());
    assert_eq!(found.observed, ali_ep.local_addr().unwrap());
    let who: Vec<String> = ali
        .who()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.user.into_string())
        .collect();
    assert_eq!(who, ["ali", "bianca"]);

    // Logging out removes them from the other instance too.
    drop(bianca);
    bianca_ep.close(0u32.into(), b"bye");
    let gone = lookup_until(&ali, "bianca", wait, Option::is_none).await;
    assert!(gone.is_none(), "bianca logged out: {gone:?}");
    drop(ali);
    ali_ep.close(0u32.into(), b"bye");

    // Two real peers on different instances chat (rendezvous crosses instances).
    let mut dina = TestPeer::start(&two, "dina", Start::Idle).await.unwrap();
    let (watch_ep, watcher) = logged_in_at(one.addr(), None, "chloe", &Identity::generate()).await;
    lookup_until(&watcher, "dina", wait, Option::is_some)
        .await
        .expect("dina visible on instance 1");
    let mut emil = TestPeer::start(&one, "emil", Start::Connect("dina".into()))
        .await
        .unwrap();
    emil.expect("connected", |n| {
        matches!(n, Note::Connected { peer, direction: Direction::Outgoing, .. } if peer == "dina")
    })
    .await;
    dina.expect("incoming", |n| {
        matches!(n, Note::Connected { peer, direction: Direction::Incoming, .. } if peer == "emil")
    })
    .await;
    emil.say("hello from instance 1").await;
    dina.expect_message("emil", "hello from instance 1").await;
    dina.say("hello from instance 2").await;
    emil.expect_message("dina", "hello from instance 2").await;
    emil.quit().await;
    dina.quit().await;

    // A graceful stop takes its users off the other instances at once, not at expiry.
    let (_ep, bianca_again) = logged_in_at(two.addr(), None, "bianca", &bianca_id).await;
    lookup_until(&bianca_again, "chloe", wait, Option::is_some)
        .await
        .expect("chloe, on instance 1, visible on instance 2");
    one.server.shutdown().await;
    let stopped_at = std::time::Instant::now();
    let gone = lookup_until(&bianca_again, "chloe", POLICY.expiry, Option::is_none).await;
    assert!(
        gone.is_none(),
        "chloe still listed after instance 1 stopped"
    );
    assert!(
        stopped_at.elapsed() < POLICY.expiry / 2,
        "instance 1's users left only at expiry: it did not leave cleanly"
    );
    drop(watcher);
    watch_ep.close(0u32.into(), b"bye");
    two.server.shutdown().await;
}

/// An instance on a runtime of its own, so it can be stopped dead: its tasks vanish
/// mid-flight, nothing is written or said — the database's and the peers' view of
/// kill -9.
struct Crashable {
    kill: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Crashable {
    /// Starts an instance with the same key as `sibling`.
    fn start(url: &str, sibling: &TestDirectory) -> (std::net::SocketAddr, Self) {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (kill, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let url = url.to_string();
        let data = data_sharing_key(sibling);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let one = rt.block_on(instance_in(&url, data));
            addr_tx.send(one.addr()).unwrap();
            let _ = rt.block_on(kill_rx);
            std::mem::forget(one);
            rt.shutdown_background();
        });
        (addr_rx.recv().unwrap(), Self { kill, thread })
    }

    fn kill(self) {
        self.kill.send(()).unwrap();
        self.thread.join().unwrap();
    }
}

#[tokio::test]
async fn a_crashed_instance_s_users_vanish_within_the_expiry_bound() {
    let Some(url) = database().await else { return };
    let two = instance(&url).await;
    two.add_users(&["ali", "bianca"]).await.unwrap();

    let (one_addr, one) = Crashable::start(&url, &two);
    let (_ali_ep, _ali) = logged_in_at(one_addr, None, "ali", &Identity::generate()).await;
    let (_bianca_ep, bianca) =
        logged_in_at(two.addr(), None, "bianca", &Identity::generate()).await;
    let wait = Duration::from_secs(5);
    assert!(
        lookup_until(&bianca, "ali", wait, Option::is_some)
            .await
            .is_some()
    );

    one.kill();
    let killed_at = std::time::Instant::now();
    let bound = POLICY.vanish_bound() + Duration::from_millis(500);
    let found = lookup_until(&bianca, "ali", bound, Option::is_none).await;
    assert!(found.is_none(), "ali still visible after {bound:?}");
    assert!(
        killed_at.elapsed() >= POLICY.expiry / 2,
        "vanished at once: the crash was not silent"
    );
    two.server.shutdown().await;
}

#[tokio::test]
async fn lockout_counts_are_shared_across_instances() {
    let Some(url) = database().await else { return };
    let (one, two) = (instance(&url).await, instance(&url).await);
    one.add_users(&["ali"]).await.unwrap();
    let id = Identity::generate();
    let ep = peer_endpoint(&id);
    let c1 = DirectoryClient::connect(&ep, one.addr(), None)
        .await
        .unwrap();
    let c2 = DirectoryClient::connect(&ep, two.addr(), None)
        .await
        .unwrap();
    // Two wrong passwords at instance 1, the third at instance 2: locked everywhere.
    for (client, left) in [(&c1, 2), (&c1, 1), (&c2, 0)] {
        let e = client
            .login("ali", "wrong password", &id, vec![])
            .await
            .unwrap_err();
        assert!(
            matches!(e, ClientError::Refused { reason: Refusal::BadCredentials, attempts_left: Some(n), .. } if n == left),
            "{e}"
        );
    }
    for client in [&c1, &c2] {
        let e = client
            .login("ali", PASSWORD, &id, vec![])
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Refused {
                    reason: Refusal::LockedOut,
                    ..
                }
            ),
            "{e}"
        );
    }
    // Lifting it through one instance lifts it for both.
    one.server.unlock_user("ali").await.unwrap();
    c2.login("ali", PASSWORD, &id, vec![]).await.unwrap();
    one.server.shutdown().await;
    two.server.shutdown().await;
}

#[tokio::test]
async fn users_given_both_addresses_log_back_in_to_the_other_instance() {
    let Some(url) = database().await else { return };
    let two = instance(&url).await;
    two.add_users(&["ali", "bianca", "chloe"]).await.unwrap();
    let (one_addr, one) = Crashable::start(&url, &two);

    // ali knows both instances and logs in to the first; bianca uses instance 2.
    let both = format!("{one_addr},{}", two.addr());
    let mut ali = TestPeer::start_at(&both, "ali", tempfile::tempdir().unwrap(), Start::Idle)
        .await
        .unwrap();
    let mut bianca = TestPeer::start(&two, "bianca", Start::Idle).await.unwrap();
    let (_watch_ep, watcher) = logged_in_at(two.addr(), None, "chloe", &Identity::generate()).await;
    let wait = Duration::from_secs(5);
    lookup_until(&watcher, "ali", wait, Option::is_some)
        .await
        .expect("ali, on instance 1, visible on instance 2");

    one.kill();
    let killed_at = std::time::Instant::now();
    let two_addr = two.addr();
    ali.expect(
        "lost the directory",
        |n| matches!(n, Note::Warning(w) if w.starts_with("lost the directory")),
    )
    .await;
    ali.expect(
        "logged back in",
        |n| matches!(n, Note::Info(i) if *i == format!("logged back in to the directory at {two_addr}")),
    )
    .await;
    // Back on instance 2: still found once instance 1's users have certainly expired
    // (so it is the new session that is found), and chatting works.
    let expired = POLICY.vanish_bound().saturating_sub(killed_at.elapsed());
    tokio::time::sleep(expired).await;
    assert!(
        watcher.lookup("ali").await.unwrap().is_some(),
        "ali is not logged in to instance 2"
    );
    ali.say("/connect bianca").await;
    bianca
        .expect("incoming", |n| {
            matches!(n, Note::Connected { peer, direction: Direction::Incoming, .. } if peer == "ali")
        })
        .await;
    ali.say("still here").await;
    bianca.expect_message("ali", "still here").await;
    ali.quit().await;
    bianca.quit().await;
    two.server.shutdown().await;
}

/// Only the relay, on both instances, and a tap on each.
async fn relay_only(url: &str, data: tempfile::TempDir, tap: &RelayTap) -> TestDirectory {
    let tap = tap.clone();
    instance_with(url, data, move |c| {
        c.relay.force_relay = true;
        c.relay.tap = Some(tap);
    })
    .await
}

#[tokio::test]
async fn peers_on_two_instances_chat_through_the_relay() {
    let Some(url) = database().await else { return };
    let (tap_one, tap_two) = (RelayTap::new(), RelayTap::new());
    let one = relay_only(&url, tempfile::tempdir().unwrap(), &tap_one).await;
    let two = relay_only(&url, data_sharing_key(&one), &tap_two).await;
    one.add_users(&["ali", "bianca", "chloe"]).await.unwrap();

    let mut bianca = TestPeer::start(&two, "bianca", Start::Idle).await.unwrap();
    let (_watch_ep, watcher) = logged_in_at(one.addr(), None, "chloe", &Identity::generate()).await;
    lookup_until(&watcher, "bianca", Duration::from_secs(5), Option::is_some)
        .await
        .expect("bianca, on instance 2, visible on instance 1");
    let mut ali = TestPeer::start(&one, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    let relayed = |with: &'static str| move |n: &Note| matches!(n, Note::Connected { peer, path: Path::Relayed { .. }, .. } if peer == with);
    ali.expect("relayed chat with bianca", relayed("bianca"))
        .await;
    bianca.expect("relayed chat with ali", relayed("ali")).await;
    // Spliced on instance 1, forwarded by instance 2: each counts it.
    for dir in [&one, &two] {
        assert_eq!(Metrics::get(&dir.server.metrics().relay_sessions), 1);
    }

    const MARKER: &str = "PLAINTEXT-MARKER-c1u5t3r";
    ali.say(&format!("{MARKER} from instance 1")).await;
    bianca
        .expect_message("ali", &format!("{MARKER} from instance 1"))
        .await;
    bianca.say(&format!("{MARKER} from instance 2")).await;
    ali.expect_message("bianca", &format!("{MARKER} from instance 2"))
        .await;
    ali.interrupt().await;
    bianca
        .expect(
            "ended",
            |n| matches!(n, Note::Ended { peer, clean: true, .. } if peer == "ali"),
        )
        .await;
    // A second chat goes over the same link between the instances.
    ali.say("/connect bianca").await;
    ali.expect("relayed again", relayed("bianca")).await;
    bianca.expect("relayed again", relayed("ali")).await;
    ali.say("second relayed chat").await;
    bianca.expect_message("ali", "second relayed chat").await;

    // Instance 1 issued the tokens and spliced; instance 2 forwarded bianca's stream to
    // it. Both copied the chat, neither saw plaintext.
    for (name, tap) in [("instance 1", &tap_one), ("instance 2", &tap_two)] {
        let bytes = tap.bytes();
        assert!(bytes.len() > 2 * MARKER.len(), "{name} carried the chat");
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "plaintext crossed {name}"
        );
    }
    ali.quit().await;
    bianca.quit().await;
    one.server.shutdown().await;
    two.server.shutdown().await;
}

/// Links to `dir` as an instance would, signing with `signer`: the reply, and the
/// connection (to open forwarded streams on).
async fn link_as_instance(dir: &TestDirectory, signer: &Identity) -> (Reply, quinn::Connection) {
    use proto::message::{Request, instance_transcript};
    let mut raw = RawClient::connect(dir.addr(), dir.server.public_key()).await;
    let nonce = raw.hello().await;
    let auth = Request::InstanceAuth {
        instance: "test-instance".into(),
        signature: signer.sign(&instance_transcript(&nonce, "test-instance")),
    };
    let reply = raw.request(auth).await;
    // The control stream stays open as long as the link (finishing it ends the link).
    let RawClient {
        conn, send, recv, ..
    } = raw;
    std::mem::forget((send, recv));
    (reply, conn)
}

#[tokio::test]
async fn only_holders_of_the_directory_key_link_as_instances() {
    let Some(url) = database().await else { return };
    let data = tempfile::tempdir().unwrap();
    let key =
        directory::keys::load_or_create(&data.path().join(directory::keys::KEY_FILE)).unwrap();
    let dir = instance_in(&url, data).await;

    let (reply, conn) = link_as_instance(&dir, &Identity::generate()).await;
    assert!(
        matches!(
            reply,
            Reply::Error {
                code: ErrorCode::NotPermitted,
                ..
            }
        ),
        "{reply:?}"
    );
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(5), conn.closed()).await,
        Ok(quinn::ConnectionError::ApplicationClosed(_))
    ));

    // With the key: linked. A forwarded stream for a token nobody issued is refused.
    let (reply, conn) = link_as_instance(&dir, &key).await;
    assert!(matches!(reply, Reply::Done { .. }), "{reply:?}");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let forward = RelayMsg::Forward {
        token: [9; 16],
        user: "ali".parse().unwrap(),
    };
    proto::frame::write_frame(&mut send, &forward)
        .await
        .unwrap();
    let answer: Option<RelayMsg> = proto::frame::read_frame(&mut recv).await.unwrap();
    assert_eq!(
        answer,
        Some(RelayMsg::Refused {
            reason: RelayRefusal::UnknownToken
        })
    );
    dir.server.shutdown().await;
}

#[tokio::test]
async fn a_removed_account_leaves_its_rooms_on_every_instance() {
    let Some(url) = database().await else { return };
    let one = instance(&url).await;
    let two = instance_in(&url, data_sharing_key(&one)).await;
    one.add_users(&["ali", "chloe"]).await.unwrap();
    let (_ali_ep, ali) = logged_in_at(one.addr(), None, "ali", &Identity::generate()).await;
    let (_chloe_ep, chloe) = logged_in_at(two.addr(), None, "chloe", &Identity::generate()).await;
    ali.join_room("ops").await.unwrap();

    let rooms_until = |want: bool| {
        let chloe = &chloe;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let listed = chloe.rooms().await.unwrap().iter().any(|r| r.room == "ops");
                if listed == want || tokio::time::Instant::now() > deadline {
                    return listed;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(rooms_until(true).await, "instance 2 sees ali's room");
    one.server.remove_user("ali").await.unwrap();
    assert!(
        !rooms_until(false).await,
        "instance 2 forgot the removed account's room"
    );
    one.server.shutdown().await;
    two.server.shutdown().await;
}

#[tokio::test]
async fn the_status_page_lists_the_instances() {
    let Some(url) = database().await else { return };
    let one = instance_with(&url, tempfile::tempdir().unwrap(), |c| {
        c.status = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let two = instance_in(&url, data_sharing_key(&one)).await;
    one.add_users(&["ali"]).await.unwrap();
    let (_ep, _ali) = logged_in_at(two.addr(), None, "ali", &Identity::generate()).await;
    let status = one.server.status_addr().unwrap();

    // Both instances, ali counted on instance 2, and the gauge for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let snapshot = loop {
        let (code, body) = testkit::http_get(status, "/status.json", &[]).await;
        assert_eq!(code, 200, "{body}");
        let s: serde_json::Value = serde_json::from_str(&body).unwrap();
        let instances = s["cluster"]["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let users: u64 = instances.iter().filter_map(|i| i["users"].as_u64()).sum();
        if (instances.len() == 2 && users == 1) || tokio::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let instances = snapshot["cluster"]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{snapshot}");
    let addr_two = two.addr().to_string();
    let two_row = instances
        .iter()
        .find(|i| i["relay_address"] == addr_two.as_str())
        .expect("instance 2 listed with its address");
    assert_eq!(two_row["users"], 1, "{snapshot}");
    let (_, metrics) = testkit::http_get(status, "/metrics", &[]).await;
    assert!(metrics.contains("\nnatter_instances 2\n"), "{metrics}");
    let (_, page) = testkit::http_get(status, "/", &[]).await;
    assert!(page.contains(&addr_two), "the page names instance 2");
    one.server.shutdown().await;
    two.server.shutdown().await;
}
