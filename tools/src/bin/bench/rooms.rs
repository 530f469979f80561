//! Scenario 6 (rooms): one member's message reaching everyone else in a room of 10 or 50.
//!
//! Every member is a real app ([`peer::app::App`]) with its own profile, endpoint and
//! directory login; the sender on the bench's runtime, the others on the second runtime.
//! All join one room and the sender waits until it sees every member online. Then:
//! - first message: typed → shown by the last member; this one includes opening the
//!   sender's end-to-end sessions to every member;
//! - fan-out latency: one message at a time, typed → shown by the last member;
//! - burst: `BURST` messages typed back to back, until every member has shown them all.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peer::ui::Note;
use proto::Fingerprint;

use crate::accounts;
use crate::p2p::AppPeer;

/// Messages typed back to back in the burst.
pub const BURST: usize = 100;

/// What one room measured.
pub struct FanOut {
    pub members: usize,
    pub first: Duration,
    pub samples: Vec<Duration>,
    pub burst: Duration,
}

/// Runs the scenario with `members` members, app accounts `first_app..first_app+members`.
pub async fn fan_out(
    other: &tokio::runtime::Runtime,
    directory: SocketAddr,
    fp: Fingerprint,
    members: usize,
    first_app: usize,
    samples: usize,
) -> anyhow::Result<FanOut> {
    let room = format!("bench{members}");
    let mut sender = AppPeer::start(&accounts::app_name(first_app), directory, fp).await?;
    let mut others = Vec::new();
    for i in 1..members {
        let name = accounts::app_name(first_app + i);
        others.push(
            other
                .spawn(async move { AppPeer::start(&name, directory, fp).await })
                .await??,
        );
    }
    for p in std::iter::once(&mut sender).chain(others.iter_mut()) {
        p.say(&format!("/join {room}")).await?;
        p.wait(
            "joined",
            |n| matches!(n, Note::RoomJoined { room: r, .. } if *r == room),
        )
        .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        sender.say(&format!("/members {room}")).await?;
        let note = sender
            .wait("members", |n| matches!(n, Note::Members { .. }))
            .await?;
        if let Note::Members { members: list, .. } = note
            && list.iter().filter(|m| m.online).count() == members
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "members not all online after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut send_and_wait = async |text: String| -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        sender.say(&text).await?;
        for p in others.iter_mut() {
            p.wait(
                "a room message",
                |n| matches!(n, Note::RoomMessage { text: t, .. } if *t == text),
            )
            .await?;
        }
        Ok(t0.elapsed())
    };
    let first = send_and_wait("fan-out 0".to_string()).await?;
    let mut out = Vec::with_capacity(samples);
    for i in 1..=samples {
        out.push(send_and_wait(format!("fan-out {i}")).await?);
    }
    let t0 = Instant::now();
    for i in 0..BURST {
        sender.say(&format!("burst {i}")).await?;
    }
    let last = format!("burst {}", BURST - 1);
    for p in others.iter_mut() {
        p.wait(
            "the burst",
            |n| matches!(n, Note::RoomMessage { text: t, .. } if *t == last),
        )
        .await?;
    }
    let burst = t0.elapsed();
    sender.quit().await;
    for p in others {
        p.quit().await;
    }
    Ok(FanOut {
        members,
        first,
        samples: out,
        burst,
    })
}
