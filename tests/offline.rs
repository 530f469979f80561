//! Sealed offline delivery, end to end: real directory, real peers, the real app.
//!
//! - bianca is offline; ali sends 3 messages; they are queued (sealed) at the directory,
//!   whose database file never holds the text; bianca logs in later and gets all 3, in
//!   order, once; ali hears "delivered" for each.
//! - Quota: over it the sender is told clearly, per message. Expiry: an expired message
//!   is never delivered and its sender hears "expired".
//! - A directory restart between queueing and delivery loses nothing (the kill -9
//!   variant with the real binary is `directory/tests/mailbox_kill.rs`).
//! - A recipient killed while taking its mail gets what it had not acknowledged again
//!   at its next login: every message is shown at least once, in order.

use std::time::Duration;

use peer::app::Start;
use peer::ui::Note;
use testkit::{TestDirectory, TestPeer};

const MARKER: &str = "PLAINTEXT-MARKER-7f3a";

/// Logs `name` in once (publishing a prekey) and out again; returns the profile.
async fn visit(dir: &TestDirectory, name: &str) -> tempfile::TempDir {
    let mut p = TestPeer::start(dir, name, Start::Idle).await.unwrap();
    p.expect("logged in", |n| matches!(n, Note::LoggedIn { .. }))
        .await;
    p.quit().await
}

async fn expect_queued(p: &mut TestPeer, to: &str, text: &str) -> u64 {
    match p
        .expect(
            &format!("queued {text:?}"),
            |n| matches!(n, Note::Queued { peer, text: t, .. } if peer == to && t == text),
        )
        .await
    {
        Note::Queued { mail_id, .. } => mail_id,
        _ => unreachable!(),
    }
}

fn offline_texts(p: &TestPeer, from: &str) -> Vec<String> {
    p.seen
        .iter()
        .filter_map(|n| match n {
            Note::OfflineMessage { peer, text, .. } if peer == from => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file of the directory's database (main file, WAL, shared memory).
fn database_bytes(dir: &TestDirectory) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir.data.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("directory.db") {
            all.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn offline_messages_are_sealed_queued_and_delivered_in_order_once() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let bianca_profile = visit(&dir, "bianca").await;

    let mut ali = TestPeer::start(&dir, "ali", Start::Idle).await.unwrap();
    let texts: Vec<String> = (1..=3).map(|i| format!("{MARKER} number {i}")).collect();
    for t in &texts {
        ali.say(&format!("/msg bianca {t}")).await;
    }
    let mut ids = Vec::new();
    for t in &texts {
        ids.push(expect_queued(&mut ali, "bianca", t).await);
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "queued in order: {ids:?}"
    );
    assert!(
        !ali.seen
            .iter()
            .any(|n| matches!(n, Note::Undelivered { .. })),
        "{:#?}",
        ali.seen
    );

    // The directory holds the messages, but never their text.
    let db = database_bytes(&dir);
    assert!(!db.is_empty());
    assert!(
        !contains(&db, MARKER),
        "plaintext in the directory's database"
    );

    // bianca comes back: all three, in order.
    let mut bianca = TestPeer::start_in(&dir, "bianca", bianca_profile, Start::Idle)
        .await
        .unwrap();
    for t in &texts {
        bianca
            .expect(&format!("offline message {t:?}"), |n| {
                matches!(n, Note::OfflineMessage { peer, text, .. } if peer == "ali" && text == t)
            })
            .await;
    }
    assert_eq!(offline_texts(&bianca, "ali"), texts, "in the order sent");

    // ali hears "delivered" for each.
    for id in &ids {
        ali.expect(&format!("mail {id} delivered"), |n| {
            matches!(n, Note::MailReceipt { peer, mail_id, delivered: true } if peer == "bianca" && mail_id == id)
        })
        .await;
    }

    // Delivered once: a second login gets nothing more (a new message marks the end).
    let bianca_profile = bianca.quit().await;
    ali.say("/msg bianca the end").await;
    expect_queued(&mut ali, "bianca", "the end").await;
    let mut bianca = TestPeer::start_in(&dir, "bianca", bianca_profile, Start::Idle)
        .await
        .unwrap();
    bianca
        .expect(
            "the end",
            |n| matches!(n, Note::OfflineMessage { text, .. } if text == "the end"),
        )
        .await;
    assert_eq!(offline_texts(&bianca, "ali"), ["the end"]);
    assert!(!contains(&database_bytes(&dir), MARKER));
    bianca.quit().await;
    ali.quit().await;
}

#[tokio::test]
async fn quota_is_a_clear_error_and_expired_mail_is_never_delivered() {
    let dir = TestDirectory::start_with(|c| {
        c.mailbox.max_messages = 2;
        c.mailbox.lifetime = Duration::from_secs(2);
    })
    .await
    .unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let bianca_profile = visit(&dir, "bianca").await;

    let mut ali = TestPeer::start(&dir, "ali", Start::Idle).await.unwrap();
    for t in ["one", "two", "three"] {
        ali.say(&format!("/msg bianca {t}")).await;
    }
    let first = expect_queued(&mut ali, "bianca", "one").await;
    let second = expect_queued(&mut ali, "bianca", "two").await;
    let note = ali
        .expect(
            "third refused",
            |n| matches!(n, Note::Undelivered { text, .. } if text == "three"),
        )
        .await;
    let Note::Undelivered { reason, .. } = note else {
        unreachable!()
    };
    assert!(reason.contains("mailbox is full"), "{reason}");

    // Both expire; ali is told.
    for id in [first, second] {
        ali.expect(
            &format!("mail {id} expired"),
            |n| matches!(n, Note::MailReceipt { mail_id, delivered: false, .. } if *mail_id == id),
        )
        .await;
    }
    // The quota is free again; bianca gets only what has not expired.
    ali.say("/msg bianca fresh").await;
    expect_queued(&mut ali, "bianca", "fresh").await;
    let mut bianca = TestPeer::start_in(&dir, "bianca", bianca_profile, Start::Idle)
        .await
        .unwrap();
    bianca
        .expect(
            "fresh",
            |n| matches!(n, Note::OfflineMessage { text, .. } if text == "fresh"),
        )
        .await;
    assert_eq!(offline_texts(&bianca, "ali"), ["fresh"]);
    bianca.quit().await;
    ali.quit().await;
}

#[tokio::test]
async fn queued_mail_survives_a_directory_restart() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let bianca_profile = visit(&dir, "bianca").await;
    let mut ali = TestPeer::start(&dir, "ali", Start::Idle).await.unwrap();
    ali.say("/msg bianca before the restart").await;
    expect_queued(&mut ali, "bianca", "before the restart").await;
    let ali_profile = ali.quit().await;

    let dir = dir.restart().await.unwrap();
    let mut bianca = TestPeer::start_in(&dir, "bianca", bianca_profile, Start::Idle)
        .await
        .unwrap();
    bianca
        .expect(
            "offline message",
            |n| matches!(n, Note::OfflineMessage { text, .. } if text == "before the restart"),
        )
        .await;
    // ali was offline when it was delivered: the receipt waits for her next login.
    let mut ali = TestPeer::start_in(&dir, "ali", ali_profile, Start::Idle)
        .await
        .unwrap();
    ali.expect("delivered", |n| {
        matches!(
            n,
            Note::MailReceipt {
                delivered: true,
                ..
            }
        )
    })
    .await;
    bianca.quit().await;
    ali.quit().await;
}

#[tokio::test]
async fn mail_to_an_online_but_unreachable_peer_is_queued_and_unknown_users_are_reported() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Idle).await.unwrap();
    // No such account: reported, not silently dropped.
    ali.say("/msg nobody hello?").await;
    let note = ali
        .expect(
            "undelivered",
            |n| matches!(n, Note::Undelivered { peer, .. } if peer == "nobody"),
        )
        .await;
    assert!(
        matches!(note, Note::Undelivered { ref reason, .. } if reason.contains("unknown")),
        "{note:?}"
    );
    // An account that never logged in has no key yet: reported.
    ali.say("/msg bianca hi").await;
    let note = ali
        .expect(
            "undelivered",
            |n| matches!(n, Note::Undelivered { peer, .. } if peer == "bianca"),
        )
        .await;
    assert!(
        matches!(note, Note::Undelivered { ref reason, .. } if reason.contains("never logged in")),
        "{note:?}"
    );
    ali.quit().await;
}

#[tokio::test]
async fn a_recipient_killed_while_taking_its_mail_gets_it_again() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let bianca_profile = visit(&dir, "bianca").await;
    let mut ali = TestPeer::start(&dir, "ali", Start::Idle).await.unwrap();
    let texts = ["first", "second", "third"];
    for t in texts {
        ali.say(&format!("/msg bianca {t}")).await;
    }
    for t in texts {
        expect_queued(&mut ali, "bianca", t).await;
    }
    // bianca is killed (no goodbye, nothing flushed) as soon as the first one shows.
    let mut bianca = TestPeer::start_in(&dir, "bianca", bianca_profile, Start::Idle)
        .await
        .unwrap();
    bianca
        .expect("first", |n| matches!(n, Note::OfflineMessage { .. }))
        .await;
    let first_run = offline_texts(&bianca, "ali");
    // The harness deletes a killed peer's profile: keep a copy of it as it was.
    let bianca_profile = tempfile::tempdir().unwrap();
    copy_dir(bianca.profile.path(), bianca_profile.path());
    bianca.kill();
    // Back on the same profile: whatever was not acknowledged comes again, so between
    // the two runs every message was shown, in order each time.
    let mut bianca = TestPeer::start_in(&dir, "bianca", bianca_profile, Start::Idle)
        .await
        .unwrap();
    for t in texts.iter().filter(|t| !first_run.iter().any(|s| s == *t)) {
        bianca
            .expect(
                &format!("{t} again"),
                |n| matches!(n, Note::OfflineMessage { text, .. } if text == t),
            )
            .await;
    }
    for _ in texts {
        ali.expect("delivered", |n| {
            matches!(
                n,
                Note::MailReceipt {
                    delivered: true,
                    ..
                }
            )
        })
        .await;
    }
    let second_run = offline_texts(&bianca, "ali");
    for t in texts {
        assert!(
            first_run.iter().chain(&second_run).any(|s| s == t),
            "{t} lost: {first_run:?} then {second_run:?}"
        );
    }
    let in_order = |run: &[String]| {
        let pos: Vec<usize> = run
            .iter()
            .filter_map(|s| texts.iter().position(|t| t == s))
            .collect();
        pos.windows(2).all(|w| w[0] < w[1])
    };
    assert!(in_order(&first_run) && in_order(&second_run));
    assert!(
        !ali.seen
            .iter()
            .any(|n| matches!(n, Note::Undelivered { .. })),
        "{:#?}",
        ali.seen
    );
    bianca.quit().await;
    ali.quit().await;
}
