//! Rooms, quick messages and presence between real peers through a real directory.

use std::collections::{BTreeMap, HashMap};

use peer::app::Start;
use peer::ui::Note;
use testkit::{TestDirectory, TestPeer};

async fn join(p: &mut TestPeer, room: &str) {
    p.say(&format!("/join {room}")).await;
    p.expect(
        "joined",
        |n| matches!(n, Note::RoomJoined { room: r, .. } if r == room),
    )
    .await;
}

#[tokio::test]
async fn five_members_fifty_messages_each_arrive_exactly_once_in_order() {
    const MEMBERS: [&str; 5] = ["ali", "bianca", "chloe", "dora", "emil"];
    const EACH: u64 = 50;
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&MEMBERS).await.unwrap();
    let mut peers = Vec::new();
    for name in MEMBERS {
        let mut p = TestPeer::start(&dir, name, Start::Idle).await.unwrap();
        join(&mut p, "general").await;
        peers.push(p);
    }
    // Everyone knows everyone is in the room and online before sending.
    for p in &mut peers {
        let me = p.name.clone();
        for other in MEMBERS.iter().filter(|o| **o != me) {
            p.say("/members").await;
            let note = p
                .expect("members", |n| matches!(n, Note::Members { .. }))
                .await;
            let Note::Members { members, .. } = note else {
                unreachable!()
            };
            if !members.iter().any(|m| m.user == *other && m.online) {
                p.expect(
                    "joined",
                    |n| matches!(n, Note::RoomChanged { user, joined: true, .. } if user == other),
                )
                .await;
            }
        }
    }
    // All five send 50 messages at once.
    for p in &peers {
        for i in 1..=EACH {
            p.say(&format!("{} #{i}", p.name)).await;
        }
    }
    for p in &mut peers {
        let expected = (MEMBERS.len() as u64 - 1) * EACH;
        let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut total = 0;
        while total < expected {
            let note = p
                .expect("room message", |n| matches!(n, Note::RoomMessage { .. }))
                .await;
            let Note::RoomMessage {
                peer,
                text,
                missed,
                room,
                ..
            } = note
            else {
                unreachable!()
            };
            assert_eq!(room, "general");
            assert_eq!(missed, 0, "{} missed messages from {peer}", p.name);
            let (from, n) = text.split_once(" #").unwrap();
            assert_eq!(from, peer, "sender name is the verified one");
            got.entry(peer).or_default().push(n.parse().unwrap());
            total += 1;
        }
        for (sender, seqs) in &got {
            let want: Vec<u64> = (1..=EACH).collect();
            assert_eq!(
                seqs, &want,
                "{} got {sender}'s messages once each, in order",
                p.name
            );
        }
        assert_eq!(got.len(), MEMBERS.len() - 1);
    }
    // Nobody's messages went undelivered.
    for p in &peers {
        assert!(
            !p.seen.iter().any(|n| matches!(n, Note::Undelivered { .. })),
            "{}: {:?}",
            p.name,
            p.seen
        );
    }
    for p in peers {
        p.quit().await;
    }
}

#[tokio::test]
async fn joining_and_leaving_update_every_member_and_presence_is_told() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca", "chloe"]).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Idle).await.unwrap();
    join(&mut ali, "general").await;
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    join(&mut bianca, "general").await;
    ali.expect(
        "bianca joined",
        |n| matches!(n, Note::RoomChanged { user, joined: true, .. } if user == "bianca"),
    )
    .await;

    let mut chloe = TestPeer::start(&dir, "chloe", Start::Idle).await.unwrap();
    join(&mut chloe, "general").await;
    for p in [&mut ali, &mut bianca] {
        p.expect(
            "chloe joined",
            |n| matches!(n, Note::RoomChanged { user, joined: true, .. } if user == "chloe"),
        )
        .await;
        p.say("/members").await;
        let note = p
            .expect("members", |n| matches!(n, Note::Members { .. }))
            .await;
        let Note::Members { members, .. } = note else {
            unreachable!()
        };
        let names: Vec<&str> = members.iter().map(|m| m.user.as_str()).collect();
        assert_eq!(names, ["ali", "bianca", "chloe"]);
    }

    chloe.say("/leave").await;
    chloe
        .expect("left", |n| matches!(n, Note::RoomLeft { .. }))
        .await;
    for p in [&mut ali, &mut bianca] {
        p.expect(
            "chloe left",
            |n| matches!(n, Note::RoomChanged { user, joined: false, .. } if user == "chloe"),
        )
        .await;
    }

    // Room-mates hear when someone goes offline (here: bianca quits) and comes back.
    let profile = bianca.quit().await;
    ali.expect(
        "bianca offline",
        |n| matches!(n, Note::Presence { user, online: false } if user == "bianca"),
    )
    .await;
    let _bianca = TestPeer::start_in(&dir, "bianca", profile, Start::Idle)
        .await
        .unwrap();
    ali.expect(
        "bianca online",
        |n| matches!(n, Note::Presence { user, online: true } if user == "bianca"),
    )
    .await;
    ali.say("/rooms").await;
    let note = ali
        .expect("rooms", |n| matches!(n, Note::Rooms { .. }))
        .await;
    let Note::Rooms { rooms } = note else {
        unreachable!()
    };
    assert_eq!(rooms.len(), 1);
    assert_eq!((rooms[0].room.as_str(), rooms[0].members), ("general", 2));
}

#[tokio::test]
async fn quick_messages_reach_only_their_addressee_while_the_room_goes_on() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca", "chloe"]).await.unwrap();
    let mut peers: HashMap<&str, TestPeer> = HashMap::new();
    for name in ["ali", "bianca", "chloe"] {
        let mut p = TestPeer::start(&dir, name, Start::Idle).await.unwrap();
        join(&mut p, "general").await;
        peers.insert(name, p);
    }
    let ali = peers.get_mut("ali").unwrap();
    for other in ["bianca", "chloe"] {
        ali.expect(
            "joined",
            |n| matches!(n, Note::RoomChanged { user, .. } if user == other),
        )
        .await;
    }
    ali.say("room line one").await;
    ali.say("/msg bianca just for you").await;
    ali.say("@chloe and this one for you").await;
    ali.say("/whisper bianca second secret").await;
    ali.say("room line two").await;

    for name in ["bianca", "chloe"] {
        let p = peers.get_mut(name).unwrap();
        for line in ["room line one", "room line two"] {
            p.expect(
                "room line",
                |n| matches!(n, Note::RoomMessage { text, .. } if text == line),
            )
            .await;
        }
    }
    let bianca = peers.get_mut("bianca").unwrap();
    bianca.expect_message("ali", "just for you").await;
    bianca.expect_message("ali", "second secret").await;
    let chloe = peers.get_mut("chloe").unwrap();
    chloe.expect_message("ali", "and this one for you").await;
    // ali still talks to the room: her plain lines did not become a private chat.
    let ali = peers.get_mut("ali").unwrap();
    ali.say("room line three").await;
    let chloe = peers.get_mut("chloe").unwrap();
    chloe
        .expect(
            "room line three",
            |n| matches!(n, Note::RoomMessage { text, .. } if text == "room line three"),
        )
        .await;
    assert!(
        !chloe
            .seen
            .iter()
            .any(|n| matches!(n, Note::Message { text, .. } if text.contains("secret") || text.contains("just for you"))),
        "chloe saw bianca's private messages: {:?}",
        chloe.seen
    );
    let bianca = &peers["bianca"];
    assert!(
        !bianca
            .seen
            .iter()
            .any(|n| matches!(n, Note::Message { text, .. } if text.contains("for you") && text.contains("and this"))),
        "bianca saw chloe's private message"
    );
}

#[tokio::test]
async fn a_member_who_was_away_learns_what_it_missed() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca", "chloe"]).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Idle).await.unwrap();
    join(&mut ali, "general").await;
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    join(&mut bianca, "general").await;
    ali.expect(
        "bianca joined",
        |n| matches!(n, Note::RoomChanged { user, .. } if user == "bianca"),
    )
    .await;
    ali.say("before").await;
    bianca
        .expect(
            "before",
            |n| matches!(n, Note::RoomMessage { text, .. } if text == "before"),
        )
        .await;

    // bianca goes away (still a member); ali sends two messages meanwhile.
    let bianca_profile = bianca.quit().await;
    ali.expect(
        "bianca offline",
        |n| matches!(n, Note::Presence { user, online: false } if user == "bianca"),
    )
    .await;
    ali.say("while away 1").await;
    ali.say("while away 2").await;
    let mut bianca = TestPeer::start_in(&dir, "bianca", bianca_profile, Start::Idle)
        .await
        .unwrap();
    join(&mut bianca, "general").await;
    ali.expect(
        "bianca online",
        |n| matches!(n, Note::Presence { user, online: true } if user == "bianca"),
    )
    .await;
    ali.say("after").await;
    let note = bianca
        .expect(
            "after",
            |n| matches!(n, Note::RoomMessage { text, .. } if text == "after"),
        )
        .await;
    assert!(
        matches!(
            note,
            Note::RoomMessage {
                seq: 4,
                missed: 2,
                ..
            }
        ),
        "bianca learns she missed 2: {note:?}"
    );
}
