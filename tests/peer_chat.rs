//! Chats between real peers through a real directory, driven the way a user drives the
//! app: lines typed, Ctrl-C pressed, notes read.

use peer::app::Start;
use peer::ui::{Direction, Note};
use testkit::{TestDirectory, TestPeer};

fn connected(with: &str) -> impl Fn(&Note) -> bool + '_ {
    move |n| matches!(n, Note::Connected { peer, .. } if peer == with)
}

fn ended(with: &str) -> impl Fn(&Note) -> bool + '_ {
    move |n| matches!(n, Note::Ended { peer, .. } if peer == with)
}

#[tokio::test]
async fn chat_both_ways_with_acks_then_ctrl_c_and_a_second_chat() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca", "chloe"]).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();

    let note = ali.expect("connected", connected("bianca")).await;
    assert!(matches!(
        note,
        Note::Connected {
            direction: Direction::Outgoing,
            current: true,
            ..
        }
    ));
    bianca
        .expect("incoming", |n| {
            matches!(n, Note::Connected { peer, direction: Direction::Incoming, current: true, .. } if peer == "ali")
        })
        .await;

    let lines = [
        "Hello, how are you today?",
        "  spaces kept  ",
        "ünïcödé ✓ 你好",
    ];
    for l in lines {
        ali.say(l).await;
    }
    for l in lines {
        bianca.expect_message("ali", l).await;
    }
    let order: Vec<&str> = bianca
        .seen
        .iter()
        .filter_map(|n| match n {
            Note::Message { peer, text, .. } if peer == "ali" => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(order, lines, "messages arrive in the order they were typed");
    for id in 1..=3u64 {
        ali.expect(
            "delivered",
            |n| matches!(n, Note::Delivered { id: i, .. } if *i == id),
        )
        .await;
    }
    bianca.say("I am fine, how about you?").await;
    ali.expect_message("bianca", "I am fine, how about you?")
        .await;

    // Ctrl-C on ali's side ends the chat on both sides, cleanly.
    ali.interrupt().await;
    let note = ali.expect("ended", ended("bianca")).await;
    assert!(
        matches!(note, Note::Ended { clean: true, ref undelivered, .. } if undelivered.is_empty()),
        "{note:?}"
    );
    let note = bianca.expect("ended", ended("ali")).await;
    assert!(matches!(note, Note::Ended { clean: true, .. }), "{note:?}");

    // bianca still listens: chloe gets through.
    let mut chloe = TestPeer::start(&dir, "chloe", Start::Connect("bianca".into()))
        .await
        .unwrap();
    chloe.expect("connected", connected("bianca")).await;
    chloe.say("hi from chloe").await;
    bianca.expect_message("chloe", "hi from chloe").await;
    chloe.quit().await;
    bianca.expect("ended", ended("chloe")).await;
    ali.quit().await;
    bianca.quit().await;
}

#[tokio::test]
async fn connect_right_after_ctrl_c_opens_a_fresh_chat() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    ali.expect("connected", connected("bianca")).await;
    bianca.expect("connected", connected("ali")).await;

    // Ctrl-C, and at once (before the chat has wound down) /connect again: a new chat,
    // not a switch back to the one that is ending.
    ali.interrupt().await;
    ali.say("/connect bianca").await;
    ali.expect("ended", ended("bianca")).await;
    ali.expect("connected again", connected("bianca")).await;
    assert!(
        !ali.seen.iter().any(|n| matches!(n, Note::Switched { .. })),
        "switched to the chat being ended: {:#?}",
        ali.seen
    );
    bianca.expect("connected again", connected("ali")).await;
    ali.say("still here").await;
    bianca.expect_message("ali", "still here").await;
    ali.quit().await;
    bianca.quit().await;
}

#[tokio::test]
async fn two_callers_at_once_both_get_through_and_switch_works() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca", "chloe"]).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let (ali, chloe) = tokio::join!(
        TestPeer::start(&dir, "ali", Start::Connect("bianca".into())),
        TestPeer::start(&dir, "chloe", Start::Connect("bianca".into())),
    );
    let (mut ali, mut chloe) = (ali.unwrap(), chloe.unwrap());
    ali.expect("connected", connected("bianca")).await;
    chloe.expect("connected", connected("bianca")).await;
    bianca.expect("ali", connected("ali")).await;
    bianca.expect("chloe", connected("chloe")).await;

    ali.say("from ali").await;
    chloe.say("from chloe").await;
    bianca.expect_message("ali", "from ali").await;
    bianca.expect_message("chloe", "from chloe").await;

    // bianca talks to each by switching.
    for who in ["chloe", "ali"] {
        bianca.say(&format!("/switch {who}")).await;
        bianca
            .expect(
                "switched",
                |n| matches!(n, Note::Switched { peer } if peer == who),
            )
            .await;
        bianca.say(&format!("hello {who}")).await;
    }
    chloe.expect_message("bianca", "hello chloe").await;
    ali.expect_message("bianca", "hello ali").await;
    for p in [ali, chloe, bianca] {
        p.quit().await;
    }
}

#[tokio::test]
async fn impersonation_is_refused_at_the_acceptor() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca", "mallory"]).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let _ali = TestPeer::start(&dir, "ali", Start::Idle).await.unwrap();

    // mallory logs in as herself, then dials bianca claiming to be ali.
    let profile = tempfile::tempdir().unwrap();
    let opts = testkit::options(&dir, profile.path(), "mallory", testkit::PASSWORD);
    let mallory = peer::login::login(&opts, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let info = mallory.link.lookup("bianca").await.unwrap().unwrap();
    let conn = peer::endpoint::dial_peer(
        &mallory.endpoint,
        mallory.profile.identity(),
        info.observed,
        info.identity,
    )
    .await
    .unwrap();
    let err = peer::chat::initiate(
        conn,
        mallory.profile.identity(),
        &"ali".parse().unwrap(),
        &info,
    )
    .await
    .expect_err("impersonation must be refused");
    assert_eq!(
        err.refusal(),
        Some(&proto::message::ConnectRefusal::KeyMismatch),
        "{err}"
    );
    bianca
        .expect(
            "refusal shown",
            |n| matches!(n, Note::IncomingRefused { peer: Some(p), .. } if p == "ali"),
        )
        .await;
}

#[tokio::test]
async fn a_changed_key_is_refused_until_trusted() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    ali.expect("connected", connected("bianca")).await;
    ali.say("/end").await;
    ali.expect("ended", ended("bianca")).await;
    bianca.expect("ended", ended("ali")).await;
    bianca.quit().await;

    // bianca comes back with a new identity key (new profile; operator reset her key).
    dir.server.reset_key("bianca").await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    ali.say("/connect bianca").await;
    let note = ali
        .expect(
            "refused",
            |n| matches!(n, Note::ConnectFailed { peer, .. } if peer == "bianca"),
        )
        .await;
    assert!(format!("{note:?}").contains("CHANGED"), "{note:?}");

    // Her side refuses ali too? No: bianca's new profile has no pin for ali. But ali's
    // pin protects ali: nothing was sent. `/fingerprint bianca` shows the changed key
    // beside the pinned one.
    ali.say("/fingerprint bianca").await;
    let pinned = match ali
        .expect("fingerprint", |n| matches!(n, Note::Fingerprint { .. }))
        .await
    {
        Note::Fingerprint {
            peer: Some((_, key, _)),
            ..
        } => key,
        other => panic!("{other:?}"),
    };
    let changed = match ali
        .expect("the changed key", |n| matches!(n, Note::PendingKey { .. }))
        .await
    {
        Note::PendingKey {
            peer,
            pinned: Some(old),
            pending,
            asking: false,
            ..
        } if peer == "bianca" && old == pinned && pending != pinned => pending,
        other => panic!("{other:?}"),
    };
    // `/trust` shows the new key's safety number and asks first: answering anything but
    // yes pins nothing.
    ali.say("/trust bianca").await;
    let asked = |n: &Note| {
        matches!(n, Note::PendingKey { peer, pinned: Some(old), pending, asking: true, .. }
            if peer == "bianca" && *old == pinned && *pending == changed)
    };
    ali.expect("the question", asked).await;
    ali.say("no").await;
    ali.expect(
        "not trusted",
        |n| matches!(n, Note::Info(t) if t.contains("not trusted")),
    )
    .await;
    ali.say("/connect bianca").await;
    let note = ali
        .expect(
            "refused again",
            |n| matches!(n, Note::ConnectFailed { peer, .. } if peer == "bianca"),
        )
        .await;
    assert!(format!("{note:?}").contains("CHANGED"), "{note:?}");
    // After checking, ali trusts the new key.
    ali.say("/trust bianca").await;
    ali.expect("the question", asked).await;
    ali.say("yes").await;
    ali.expect(
        "trusted",
        |n| matches!(n, Note::Info(t) if t.contains("now trusting bianca")),
    )
    .await;
    ali.say("/connect bianca").await;
    ali.expect("connected", connected("bianca")).await;
    ali.say("hello new key").await;
    bianca.expect_message("ali", "hello new key").await;
}

#[tokio::test]
async fn acceptor_refuses_a_caller_whose_pinned_key_changed() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    ali.expect("connected", connected("bianca")).await;
    bianca.expect("connected", connected("ali")).await;
    ali.quit().await;
    bianca.expect("ended", ended("ali")).await;

    // "ali" returns with another key: bianca, who pinned the first, refuses the call.
    dir.server.reset_key("ali").await.unwrap();
    let mut ali2 = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    let note = ali2
        .expect(
            "refused",
            |n| matches!(n, Note::ConnectFailed { peer, .. } if peer == "bianca"),
        )
        .await;
    assert!(format!("{note:?}").contains("pinned"), "{note:?}");
    bianca
        .expect(
            "refusal shown",
            |n| matches!(n, Note::IncomingRefused { peer: Some(p), .. } if p == "ali"),
        )
        .await;
}

#[tokio::test]
async fn chats_go_on_while_the_directory_restarts_and_peers_log_back_in() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    ali.expect("connected", connected("bianca")).await;

    let addr = dir.addr();
    let data = dir.data;
    dir.server.shutdown().await;
    ali.expect("directory lost", |n| matches!(n, Note::Warning(t) if t.contains("lost the directory") || t.contains("shutting down")))
        .await;

    // The direct chat does not need the directory.
    ali.say("still here").await;
    bianca.expect_message("ali", "still here").await;

    // The directory returns on the same data dir and port: both log back in by ticket.
    let mut config = directory::Config::new(data.path());
    config.listen = addr;
    config.password_cost = directory::PasswordCost::insecure_fast();
    let server = directory::Directory::start(config).await.unwrap();
    ali.expect(
        "back",
        |n| matches!(n, Note::Info(t) if t.contains("logged back in")),
    )
    .await;
    bianca
        .expect(
            "back",
            |n| matches!(n, Note::Info(t) if t.contains("logged back in")),
        )
        .await;
    ali.say("/who").await;
    let note = ali.expect("who", |n| matches!(n, Note::Who { .. })).await;
    let Note::Who { users } = note else {
        unreachable!()
    };
    let names: Vec<&str> = users.iter().map(|u| u.user.as_str()).collect();
    assert_eq!(names, ["ali", "bianca"]);
    server.shutdown().await;
}
