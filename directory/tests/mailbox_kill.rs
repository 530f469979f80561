//! Sealed mail survives `kill -9` of the real `directory` binary.
//!
//! ali deposits 3 sealed messages for bianca (who is offline), the directory is killed
//! with SIGKILL right after answering `Queued`, and started again on the same data
//! directory: bianca then fetches all 3, in order, and acknowledges them; the directory
//! is killed again right after the acknowledgement, and after that restart nothing is
//! delivered a second time, while ali collects a "delivered" receipt for each. The
//! database files never contain the message text.

use std::net::SocketAddr;
use std::path::Path;

use proto::Identity;
use proto::message::{Reply, Request};
use proto::sealed::{self, SignedPrekey, StaticSecret};
use tokio::process::Child;

mod common;

use common::serve_cheap as serve;
use testkit::RawClient;
const PASSWORD: &str = "correct horse battery";
const MARKER: &str = "KILL-NINE-MARKER-51c2";

async fn add_user(data: &Path, name: &str) {
    let out = common::run(
        data,
        &["user", "add", name, "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGKILL: no shutdown, no flush, no checkpoint.
async fn kill_9(mut child: Child) {
    child.kill().await.unwrap();
    let status = child.wait().await.unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status}");
}

fn identity(user: &str) -> Identity {
    let mut seed = [3u8; 32];
    seed[..user.len()].copy_from_slice(user.as_bytes());
    Identity::from_secret_bytes(&seed)
}

/// `user`, logged in with their key and the password every test user has.
async fn login(addr: SocketAddr, user: &str) -> RawClient {
    RawClient::logged_in_at(addr, None, user, PASSWORD, &identity(user), &[])
        .await
        .0
}

fn database_has(data: &Path, needle: &str) -> bool {
    std::fs::read_dir(data).unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("directory.db")
            && std::fs::read(e.path())
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
    })
}

#[tokio::test]
async fn sealed_mail_survives_kill_9_and_is_delivered_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("natter");
    std::fs::create_dir_all(&data).unwrap();
    for name in ["ali", "bianca"] {
        add_user(&data, name).await;
    }
    let (server, addr) = serve(&data).await;

    // bianca logs in once and publishes her prekey.
    let prekey = StaticSecret::random();
    let bianca_id = identity("bianca");
    let mut bianca = login(addr, "bianca").await;
    let signed = SignedPrekey::sign(&bianca_id, "bianca", &prekey, 1_700_000_000);
    assert_eq!(
        bianca.call(Request::PublishPrekey { prekey: signed }).await,
        Reply::PrekeyPublished
    );
    assert_eq!(bianca.call(Request::Logout).await, Reply::LoggedOut);
    drop(bianca);

    // ali seals three messages to her and deposits them.
    let mut ali = login(addr, "ali").await;
    let Reply::Prekey {
        identity: key,
        prekey: Some(published),
        ..
    } = ali
        .call(Request::FetchPrekey {
            user: "bianca".parse().unwrap(),
        })
        .await
    else {
        panic!("no prekey")
    };
    assert_eq!(key, bianca_id.public());
    let texts: Vec<String> = (1..=3).map(|i| format!("{MARKER} {i}")).collect();
    let mut ids = Vec::new();
    for text in &texts {
        let (blob, _) = sealed::seal(
            &identity("ali"),
            &"ali".parse().unwrap(),
            &"bianca".parse().unwrap(),
            &key,
            &published,
            text,
            1,
        )
        .unwrap();
        match ali
            .call(Request::Deposit {
                to: "bianca".parse().unwrap(),
                blob,
            })
            .await
        {
            Reply::Queued { id, .. } => ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    drop(ali);

    // kill -9 right after the last `Queued`.
    kill_9(server).await;
    assert!(!database_has(&data, MARKER), "plaintext in the database");
    let (server, addr) = serve(&data).await;

    // bianca gets all three, in order, and acknowledges them.
    let mut bianca = login(addr, "bianca").await;
    let Reply::Mail { items, more: false } = bianca.call(Request::FetchMail).await else {
        panic!("no mail")
    };
    assert_eq!(items.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    let opened: Vec<String> = items
        .iter()
        .map(|m| {
            sealed::open(&m.blob, "bianca", &bianca_id.public(), &prekey)
                .unwrap()
                .text
        })
        .collect();
    assert_eq!(opened, texts);
    assert_eq!(
        bianca.call(Request::AckMail { ids: ids.clone() }).await,
        Reply::MailAcked { count: 3 }
    );
    drop(bianca);

    // kill -9 right after the acknowledgement: nothing comes back.
    kill_9(server).await;
    let (server, addr) = serve(&data).await;
    let mut bianca = login(addr, "bianca").await;
    assert_eq!(
        bianca.call(Request::FetchMail).await,
        Reply::Mail {
            items: vec![],
            more: false
        },
        "delivered once"
    );
    let mut ali = login(addr, "ali").await;
    let Reply::Receipts { receipts } = ali.call(Request::MailReceipts).await else {
        panic!("no receipts")
    };
    assert_eq!(receipts.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
    assert!(receipts.iter().all(|r| r.delivered && r.to == "bianca"));
    assert!(!database_has(&data, MARKER));
    kill_9(server).await;
}
