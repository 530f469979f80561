//! A malicious directory sends user names that break the rules, and the real peer app
//! keeps its pins and its screen intact.
//!
//! The directory is a fake: a raw QUIC server with the real directory's TLS
//! configuration (`directory::tls::server_config`) and proto's framing, which answers the
//! peer's requests with crafted replies. Its messages are written with mirror types that
//! hold names as plain strings (the encoding of a `UserName` on the wire), so it can send
//! what a compromised directory could send. The peer is the real app
//! ([`testkit::TestPeer`]), logging in to it like to any directory.
//!
//! The attack from the security review: mallory seals offline mail to bianca whose sender
//! is `"zzz <hex>\nalice"`, signed by mallory's own key, and the directory answers
//! bianca's `FetchPrekey` for that name with mallory's key. Before names were typed, the
//! name was pinned as written: `known_peers` got a second `alice` line with mallory's key,
//! which replaced alice's pin on the next start. Now the mail does not open (its sender is
//! not a valid name), alice's pin is untouched, and bianca is told why. The same
//! directory then pushes a presence event, a room member list and a who list with names
//! holding control and bidi characters: each such message is refused (the connection is
//! closed and the peer logs back in), and no such name reaches the screen.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use peer::app::Start;
use peer::ui::Note;
use proto::frame;
use proto::identity::transcript;
use proto::message::{ErrorCode, MailItem, Request};
use proto::sealed::{SealedMail, SignedPrekey, mail_transcript};
use proto::{Identity, PublicKey, Signature};
use serde::Serialize;
use sha2::{Digest, Sha256};
use testkit::TestPeer;
use x25519_dalek::{EphemeralSecret, PublicKey as XPublic};

/// The name that, written into `known_peers` as is, adds a line pinning `alice`.
fn injected_name(key: &PublicKey) -> String {
    format!("zzz {}\nalice", key.to_hex())
}

/// Names with a terminal escape, a line break and a right-to-left override.
const PRESENCE_NAME: &str = "zzz\u{1b}[2K\nalice";
const MEMBER_NAME: &str = "zzz\u{202e}ecila";
const WHO_NAME: &str = "zzz\u{2028}alice";

// What the fake sends, encoded like `proto::message::ServerMsg` but with names as plain
// strings. bincode writes an enum value as its variant's index, then its fields in order,
// so a variant is written here as (index, struct of its fields); the indices are the
// variants' places in `proto::message` (variants are only ever appended there).

/// One variant of an enum: its index, then its fields.
struct Variant<T>(u32, T);

impl<T: Serialize> Serialize for Variant<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_variant("", self.0, "", &self.1)
    }
}

/// `ServerMsg::Reply(reply)` and `ServerMsg::Event(event)`.
fn reply<T: Serialize>(index: u32, fields: T) -> Variant<Variant<T>> {
    Variant(0, Variant(index, fields))
}
fn event<T: Serialize>(index: u32, fields: T) -> Variant<Variant<T>> {
    Variant(1, Variant(index, fields))
}

// `Reply` variants.
const WELCOME: u32 = 0;
const GRANTED: u32 = 2;
const ONLINE: u32 = 6;
const LOGGED_OUT: u32 = 7;
const ERROR: u32 = 8;
const ROOM_MEMBERS: u32 = 9;
const WATCHING: u32 = 11;
const PREKEY_PUBLISHED: u32 = 14;
const PREKEY: u32 = 15;
const MAIL: u32 = 17;
const MAIL_ACKED: u32 = 18;
const RECEIPTS: u32 = 19;
// `Event` variants.
const PRESENCE: u32 = 3;
const MAIL_WAITING: u32 = 4;

#[derive(Serialize)]
struct Welcome {
    version: u32,
    nonce: [u8; 32],
    open_registration: bool,
}

#[derive(Serialize)]
struct Granted {
    user: String,
    ticket: Vec<u8>,
    ticket_lifetime_secs: u64,
    observed: SocketAddr,
    admin: bool,
}

#[derive(Serialize)]
struct Online {
    users: Vec<(String, u64)>,
}

#[derive(Serialize)]
struct Error {
    code: ErrorCode,
    message: String,
}

#[derive(Serialize)]
struct RoomMembers {
    room: String,
    members: Vec<(String, bool)>,
}

#[derive(Serialize)]
struct Prekey {
    user: String,
    identity: PublicKey,
    prekey: Option<SignedPrekey>,
}

#[derive(Serialize)]
struct Mail {
    items: Vec<MailItem>,
    more: bool,
}

#[derive(Serialize)]
struct Presence {
    user: String,
    online: bool,
}

/// `proto::sealed::MailContent` with a plain-string sender.
#[derive(Serialize)]
struct FakeContent<'a> {
    from: &'a str,
    from_key: PublicKey,
    to: &'a str,
    id: [u8; 16],
    text: &'a str,
    sent_at_ms: u64,
    signature: Signature,
}

/// Seals `text` from `from` (any string) for `to`, as proto's sealed mail format says:
/// x25519 with the recipient's prekey, HKDF-SHA256, ChaCha20-Poly1305, the sender's
/// signature inside. Written here from the format, the way an attacker would.
fn seal_as(
    sender: &Identity,
    from: &str,
    to: &str,
    to_key: &PublicKey,
    prekey: &SignedPrekey,
    text: &str,
) -> Vec<u8> {
    let id = [7u8; 16];
    let from_key = sender.public();
    let signature = sender.sign(&mail_transcript(from, &from_key, to, to_key, &id, text, 1));
    let content = FakeContent {
        from,
        from_key,
        to,
        id,
        text,
        sent_at_ms: 1,
        signature,
    };
    let plaintext = frame::encode(&content).unwrap()[frame::HEADER_LEN..].to_vec();
    let secret = EphemeralSecret::random();
    let ephemeral = XPublic::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&XPublic::from(prekey.key));
    let salt: [u8; 32] = Sha256::digest(transcript(
        "natter-mail-salt-v1",
        &[&ephemeral, &prekey.key, &to_key.0],
    ))
    .into();
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes())
        .expand(b"natter mail key", &mut key)
        .unwrap();
    let ciphertext = ChaCha20Poly1305::new(&Key::from(key))
        .encrypt(
            &Nonce::from([0u8; 12]),
            Payload {
                msg: &plaintext,
                aad: &transcript("natter-mail-aad-v1", &[&ephemeral, &prekey.key]),
            },
        )
        .unwrap();
    let mail = SealedMail {
        ephemeral,
        prekey: prekey.key,
        ciphertext,
    };
    frame::encode(&mail).unwrap()[frame::HEADER_LEN..].to_vec()
}

/// What the fake directory has learnt and done, across the peer's reconnections.
#[derive(Default)]
struct Attack {
    /// bianca's identity key (from her login) and prekey (from her `PublishPrekey`).
    victim: Option<PublicKey>,
    prekey: Option<SignedPrekey>,
    mail_served: bool,
    presence_pushed: bool,
    /// Names the peer asked `FetchPrekey` about.
    prekey_asked: Vec<String>,
}

struct FakeDirectory {
    endpoint: quinn::Endpoint,
    mallory: Arc<Identity>,
    attack: Arc<Mutex<Attack>>,
}

impl FakeDirectory {
    fn start() -> FakeDirectory {
        let data = tempfile::tempdir().unwrap();
        let identity = Identity::generate();
        let config = directory::Config::new(data.path());
        let server = directory::tls::server_config(&identity, &config).unwrap();
        let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
        let fake = FakeDirectory {
            endpoint: endpoint.clone(),
            mallory: Arc::new(Identity::generate()),
            attack: Arc::default(),
        };
        let (mallory, attack) = (fake.mallory.clone(), fake.attack.clone());
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let (mallory, attack) = (mallory.clone(), attack.clone());
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    let Ok((send, recv)) = conn.accept_bi().await else {
                        return;
                    };
                    serve(conn.remote_address(), send, recv, &mallory, &attack).await;
                });
            }
        });
        fake
    }

    fn addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap()
    }
}

/// One connection: answers every request, with the attack's crafted replies.
async fn serve(
    remote: SocketAddr,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mallory: &Identity,
    attack: &Mutex<Attack>,
) {
    while let Ok(Some(request)) = frame::read_frame::<_, Request>(&mut recv).await {
        let mut then = None;
        let answer = match request {
            Request::Hello { .. } => frame::encode(&reply(
                WELCOME,
                Welcome {
                    version: proto::PROTOCOL_VERSION,
                    nonce: rand::random(),
                    open_registration: false,
                },
            )),
            Request::Login { user, identity, .. } => {
                attack.lock().unwrap().victim = Some(identity);
                frame::encode(&granted(user.to_string(), remote))
            }
            Request::Resume { user, .. } => frame::encode(&granted(user.to_string(), remote)),
            Request::PublishPrekey { prekey } => {
                attack.lock().unwrap().prekey = Some(prekey);
                then = Some(frame::encode(&event(MAIL_WAITING, ())));
                frame::encode(&reply(PREKEY_PUBLISHED, ()))
            }
            Request::Watch { .. } => frame::encode(&reply(WATCHING, ())),
            Request::FetchMail => {
                let mut a = attack.lock().unwrap();
                let mut items = Vec::new();
                if let (false, Some(victim), Some(prekey)) = (a.mail_served, a.victim, &a.prekey) {
                    let blob = seal_as(
                        mallory,
                        &injected_name(&mallory.public()),
                        "bianca",
                        &victim,
                        prekey,
                        "hi, it's alice",
                    );
                    a.mail_served = true;
                    items.push(MailItem {
                        id: 1,
                        deposited_at: 1,
                        blob,
                    });
                }
                frame::encode(&reply(MAIL, Mail { items, more: false }))
            }
            Request::AckMail { ids } => {
                let mut a = attack.lock().unwrap();
                if a.mail_served && !a.presence_pushed {
                    a.presence_pushed = true;
                    then = Some(frame::encode(&event(
                        PRESENCE,
                        Presence {
                            user: PRESENCE_NAME.into(),
                            online: true,
                        },
                    )));
                }
                frame::encode(&reply(MAIL_ACKED, ids.len() as u32))
            }
            Request::MailReceipts => frame::encode(&reply(RECEIPTS, Vec::<()>::new())),
            // The lie that pins a name: "yes, that name's key is mallory's".
            Request::FetchPrekey { user } => {
                attack.lock().unwrap().prekey_asked.push(user.to_string());
                frame::encode(&reply(
                    PREKEY,
                    Prekey {
                        user: user.to_string(),
                        identity: mallory.public(),
                        prekey: None,
                    },
                ))
            }
            Request::JoinRoom { room } => frame::encode(&reply(
                ROOM_MEMBERS,
                RoomMembers {
                    room: room.to_string(),
                    members: vec![(MEMBER_NAME.into(), true), ("bianca".into(), true)],
                },
            )),
            Request::Who => frame::encode(&reply(
                ONLINE,
                Online {
                    users: vec![(WHO_NAME.into(), 1), ("bianca".into(), 1)],
                },
            )),
            Request::Logout => frame::encode(&reply(LOGGED_OUT, ())),
            other => frame::encode(&reply(
                ERROR,
                Error {
                    code: ErrorCode::Internal,
                    message: format!("the fake does not do {other:?}"),
                },
            )),
        };
        let frames = std::iter::once(answer).chain(then);
        for bytes in frames {
            if send.write_all(&bytes.unwrap()).await.is_err() {
                return;
            }
        }
    }
}

fn granted(user: String, observed: SocketAddr) -> Variant<Variant<Granted>> {
    reply(
        GRANTED,
        Granted {
            user,
            ticket: vec![1; 32],
            ticket_lifetime_secs: 3600,
            observed,
            admin: false,
        },
    )
}

/// Lines of `known_peers` that pin `name`.
fn pin_lines(profile: &std::path::Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(profile.join("known_peers")).unwrap_or_default();
    text.lines()
        .filter(|l| l.split(' ').next() == Some(name))
        .map(str::to_string)
        .collect()
}

/// Whether a note shows a hostile name (they all start with `zzz`).
fn shows_hostile_name(note: &Note) -> bool {
    !matches!(note, Note::Warning(_) | Note::Error(_) | Note::Info(_))
        && format!("{note:?}").contains("zzz")
}

fn refused_by_the_peer(note: &Note) -> bool {
    matches!(note, Note::Warning(w) if w.contains("refused a message from the directory"))
}

#[tokio::test]
async fn lying_directory_cannot_inject_a_pin_or_a_name() {
    let fake = FakeDirectory::start();
    let alice = Identity::generate().public();
    let profile = tempfile::tempdir().unwrap();
    std::fs::write(
        profile.path().join("known_peers"),
        format!("alice {}\n", alice.to_hex()),
    )
    .unwrap();
    let dir = profile.path().to_path_buf();
    let mut bianca = TestPeer::start_at(&fake.addr().to_string(), "bianca", profile, Start::Idle)
        .await
        .unwrap();

    // The mail with the injected sender name is refused, and bianca is told.
    let refused = bianca
        .expect(
            "the forged mail refused",
            |n| matches!(n, Note::Warning(w) if w.contains("offline message was dropped")),
        )
        .await;
    let Note::Warning(why) = refused else {
        unreachable!()
    };
    assert!(
        why.contains("names its sender with a name that breaks"),
        "{why}"
    );
    // Nobody asked the directory for that name's key, so nothing could be pinned.
    assert_eq!(
        fake.attack.lock().unwrap().prekey_asked,
        Vec::<String>::new()
    );
    assert_eq!(
        pin_lines(&dir, "alice"),
        [format!("alice {}", alice.to_hex())]
    );
    assert!(pin_lines(&dir, "zzz").is_empty());

    // A presence event with a terminal escape and a line break in the name: refused.
    bianca
        .expect("the presence event refused", refused_by_the_peer)
        .await;
    bianca
        .expect(
            "logged back in",
            |n| matches!(n, Note::Info(i) if i.contains("logged back in")),
        )
        .await;

    // A room member list with a right-to-left override: refused.
    bianca.say("/join general").await;
    bianca
        .expect("the member list refused", refused_by_the_peer)
        .await;

    // A who list with a line separator: refused.
    bianca.say("/who").await;
    bianca
        .expect("the who list refused", refused_by_the_peer)
        .await;

    assert!(
        !bianca.seen.iter().any(shows_hostile_name),
        "a hostile name reached the screen: {:#?}",
        bianca.seen
    );
    let profile = bianca.quit().await;
    // alice's pin is still alice's key, on the one line for her.
    assert_eq!(
        pin_lines(profile.path(), "alice"),
        [format!("alice {}", alice.to_hex())]
    );
    let pins = peer::pins::Pins::<proto::names::UserName>::load(profile.path().join("known_peers"))
        .unwrap();
    assert_eq!(pins.get("alice"), Some(alice));
}
