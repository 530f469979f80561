//! `cargo run --release --example demo`: a real chat between two peers through a real
//! directory, in one process, on loopback.
//!
//! It starts a directory on a temporary data directory (SQLite file, fresh identity key),
//! creates the accounts `ali` and `bianca`, logs both in through the real protocol (TLS
//! pinned to the directory's key, argon2id password check, identity-key signature),
//! then ali calls bianca: a direct QUIC connection with mutual TLS on their identity keys,
//! each side checked against the directory, an end-to-end session (x25519 +
//! ChaCha20-Poly1305) on top. It prints what each of them sees, and the safety number
//! both would compare to be sure nobody sits in the middle.

use peer::app::Start;
use peer::ui::{Note, terminal::render};
use testkit::{TestDirectory, TestPeer};

fn show(who: &str, note: &Note) {
    for line in render(note).lines() {
        println!("  {who:>9} | {line}");
    }
}

fn say(who: &str, line: &str) {
    println!("  {who:>9} | > {line}");
}

async fn step(p: &mut TestPeer, what: &str, pred: impl Fn(&Note) -> bool) -> Note {
    let note = p.expect(what, pred).await;
    show(&p.name.clone(), &note);
    note
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("Natter demo: a directory and two peers on 127.0.0.1\n");
    let dir =
        TestDirectory::start_with(|c| c.password_cost = directory::PasswordCost::default()).await?;
    println!("  directory | listening on {}", dir.addr());
    println!("  directory | fingerprint {}", dir.server.fingerprint());
    dir.add_users(&["ali", "bianca"]).await?;
    println!("  directory | accounts: ali, bianca (argon2id password hashes in SQLite)\n");

    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await?;
    step(&mut bianca, "login", |n| matches!(n, Note::LoggedIn { .. })).await;
    step(&mut bianca, "listening", |n| {
        matches!(n, Note::Listening { .. })
    })
    .await;
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into())).await?;
    step(&mut ali, "login", |n| matches!(n, Note::LoggedIn { .. })).await;
    step(&mut ali, "connecting", |n| {
        matches!(n, Note::Connecting { .. })
    })
    .await;
    step(&mut ali, "connected", |n| {
        matches!(n, Note::Connected { .. })
    })
    .await;
    step(&mut bianca, "incoming", |n| {
        matches!(n, Note::Connected { .. })
    })
    .await;

    let script = [
        ("ali", "Hello, how are you today?"),
        ("bianca", "I am fine, how about you?"),
        ("ali", "Great. Nobody but you can read this."),
    ];
    for (from, text) in script {
        let (sender, receiver) = if from == "ali" {
            (&mut ali, &mut bianca)
        } else {
            (&mut bianca, &mut ali)
        };
        say(from, text);
        sender.say(text).await;
        step(
            receiver,
            "message",
            |n| matches!(n, Note::Message { text: t, .. } if t == text),
        )
        .await;
        step(sender, "ack", |n| matches!(n, Note::Delivered { .. })).await;
    }

    println!();
    say("ali", "/fingerprint bianca");
    ali.say("/fingerprint bianca").await;
    let a = step(&mut ali, "fingerprint", |n| {
        matches!(n, Note::Fingerprint { .. })
    })
    .await;
    say("bianca", "/fingerprint ali");
    bianca.say("/fingerprint ali").await;
    let b = step(&mut bianca, "fingerprint", |n| {
        matches!(n, Note::Fingerprint { .. })
    })
    .await;
    let safety = |n: &Note| match n {
        Note::Fingerprint {
            peer: Some((_, _, s)),
            ..
        } => s.clone(),
        _ => String::new(),
    };
    anyhow::ensure!(safety(&a) == safety(&b), "safety numbers differ");
    println!("\n  Both screens show the same safety number: the keys were not swapped.\n");

    say("ali", "^C");
    ali.interrupt().await;
    step(&mut ali, "ended", |n| matches!(n, Note::Ended { .. })).await;
    step(&mut bianca, "ended", |n| matches!(n, Note::Ended { .. })).await;
    println!("  {:>9} | (still listening for chats)", "bianca");

    ali.quit().await;
    bianca.quit().await;
    dir.server.shutdown().await;
    println!("\nDemo complete.");
    Ok(())
}
