//! `/joke` against a local HTTP server speaking the joke API's JSON, and with no API
//! reachable (refused, or silent past the timeout): a bundled joke is sent instead. The
//! joke goes into the current chat as a normal message.

use std::time::{Duration, Instant};

use peer::app::Start;
use peer::ui::Note;
use testkit::{TestDirectory, TestPeer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A tiny joke API: answers every GET with one fixed joke, then closes.
async fn joke_server(json: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                assert!(buf.starts_with(b"GET /random_joke "), "{buf:?}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                    json.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

/// A server that accepts connections and never answers.
async fn silent_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    (addr, task)
}

/// ali, whose profile points `/joke` at `api`, in a chat with bianca.
async fn chat_with_api(dir: &TestDirectory, api: &str) -> (TestPeer, TestPeer) {
    let profile = tempfile::tempdir().unwrap();
    std::fs::write(
        profile.path().join("config.toml"),
        format!("joke_api = \"{api}\"\n"),
    )
    .unwrap();
    let bianca = TestPeer::start(dir, "bianca", Start::Idle).await.unwrap();
    let mut ali = TestPeer::start_in(dir, "ali", profile, Start::Connect("bianca".into()))
        .await
        .unwrap();
    ali.expect("connected", |n| matches!(n, Note::Connected { .. }))
        .await;
    (ali, bianca)
}

#[tokio::test]
async fn joke_from_the_api_is_sent_into_the_current_chat() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let api = joke_server(
        r#"{"type":"general","setup":"Why did the test pass?","punchline":"It had a local server.","id":1}"#,
    )
    .await;
    let (mut ali, mut bianca) = chat_with_api(&dir, &format!("http://{api}/random_joke")).await;
    ali.say("/joke").await;
    bianca
        .expect_message("ali", "Why did the test pass? It had a local server.")
        .await;
    let info = ali
        .expect(
            "joke shown",
            |n| matches!(n, Note::Info(t) if t.starts_with("joke")),
        )
        .await;
    assert!(
        matches!(info, Note::Info(ref t) if t.contains("joke API")),
        "{info:?}"
    );
    ali.expect("delivered", |n| matches!(n, Note::Delivered { .. }))
        .await;
    ali.quit().await;
    bianca.quit().await;
}

#[tokio::test]
async fn no_api_reachable_sends_a_bundled_joke() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let bundled: Vec<String> = peer::joke::all_bundled().iter().map(|j| j.text()).collect();

    // Refused at once: nothing listens on that port any more.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let (ali, mut bianca) = chat_with_api(&dir, &format!("http://{closed}/random_joke")).await;
    ali.say("/joke").await;
    let note = bianca
        .expect(
            "a joke",
            |n| matches!(n, Note::Message { peer, .. } if peer == "ali"),
        )
        .await;
    let Note::Message { text, .. } = note else {
        unreachable!()
    };
    assert!(bundled.contains(&text), "{text:?} is not a bundled joke");
    ali.quit().await;
    bianca.quit().await;

    // Silent: the short timeout gives up, and a bundled joke goes out all the same.
    // (New users: the first ones keep their keys, their profiles are gone.)
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let (silent, _server) = silent_server().await;
    let (ali, mut bianca) = chat_with_api(&dir, &format!("http://{silent}/random_joke")).await;
    let asked = Instant::now();
    ali.say("/joke").await;
    let note = bianca
        .expect(
            "a joke",
            |n| matches!(n, Note::Message { peer, .. } if peer == "ali"),
        )
        .await;
    let waited = asked.elapsed();
    let Note::Message { text, .. } = note else {
        unreachable!()
    };
    assert!(bundled.contains(&text), "{text:?} is not a bundled joke");
    assert!(
        waited >= peer::joke::TIMEOUT - Duration::from_millis(200)
            && waited < peer::joke::TIMEOUT + Duration::from_secs(3),
        "gave up after {waited:?}"
    );
    ali.quit().await;
    bianca.quit().await;
}

#[tokio::test]
async fn joke_without_a_chat_is_an_error_not_a_message() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Idle).await.unwrap();
    ali.say("/joke").await;
    ali.expect(
        "error",
        |n| matches!(n, Note::Error(t) if t.contains("/joke")),
    )
    .await;
    ali.quit().await;
}
