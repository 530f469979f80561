//! Forged, replayed and altered sealed frames into a real session's `Opener`.
//!
//! Each input gets a fresh session between two fixed identities (so every run starts from
//! the same state), exchanges a few genuine frames, seals the next genuine one, then feeds
//! the forgeries. Each forgery must be refused with the error its counter calls for
//! (unless it is byte-for-byte the genuine next frame), must not panic, and must not
//! advance the opener: the genuine frame, and one after it, must still open.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use proto::Identity;
use proto::session::{Handshake, Role, SealedFrame, Session, SessionError};

#[global_allocator]
static ALLOC: proto_fuzz::CappedAlloc = proto_fuzz::CappedAlloc;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Genuine frames opened before the forgeries (taken modulo 4).
    warmup: u8,
    /// The plaintext of the genuine frame the forgeries compete with.
    next: Vec<u8>,
    forgeries: Vec<Forgery>,
}

#[derive(Debug, Arbitrary)]
struct Forgery {
    counter: Counter,
    body: Body,
}

/// The forged frame's counter, relative to what the opener expects.
#[derive(Debug, Arbitrary)]
enum Counter {
    Expected,
    Behind(u8),
    Ahead(u8),
    Raw(u64),
}

/// The forged frame's ciphertext.
#[derive(Debug, Arbitrary)]
enum Body {
    /// Bytes of the fuzzer's choosing.
    Raw(Vec<u8>),
    /// The genuine next ciphertext with bits flipped (`mask` 0 means no change).
    Flip { at: u16, mask: u8 },
    /// The genuine next ciphertext cut short.
    Truncate(u16),
    /// The genuine next ciphertext with bytes appended.
    Extend(Vec<u8>),
    /// A ciphertext sealed in the other direction (the receiver's own frame reflected).
    Reflect,
}

fn identities() -> &'static (Identity, Identity) {
    static IDS: OnceLock<(Identity, Identity)> = OnceLock::new();
    IDS.get_or_init(|| {
        (
            Identity::from_secret_bytes(&[1; 32]),
            Identity::from_secret_bytes(&[2; 32]),
        )
    })
}

fn session_pair() -> (Session, Session) {
    let (ali, bianca) = identities();
    let (hi, share_i) = Handshake::start(ali, Role::Initiator, bianca.public());
    let (ha, share_a) = Handshake::start(bianca, Role::Acceptor, ali.public());
    (
        hi.finish(&share_a).expect("genuine handshake"),
        ha.finish(&share_i).expect("genuine handshake"),
    )
}

fuzz_target!(|input: Input| {
    let (mut ali, mut bianca) = session_pair();
    let warmup = u64::from(input.warmup % 4);
    for n in 0..warmup {
        let f = ali.sealer.seal(&n.to_be_bytes()).expect("seal");
        assert_eq!(bianca.opener.open(&f).expect("genuine"), n.to_be_bytes());
    }
    let expected = warmup;
    let genuine = ali.sealer.seal(&input.next).expect("seal");
    assert_eq!(genuine.counter, expected);
    let reflected = bianca.sealer.seal(&input.next).expect("seal");

    let mut opened_genuine = false;
    for forgery in input.forgeries.iter().take(16) {
        let counter = match forgery.counter {
            Counter::Expected => expected,
            Counter::Behind(d) => expected.saturating_sub(u64::from(d)),
            Counter::Ahead(d) => expected + u64::from(d),
            Counter::Raw(c) => c,
        };
        let ciphertext = match &forgery.body {
            Body::Raw(bytes) => bytes.clone(),
            Body::Flip { at, mask } => {
                let mut c = genuine.ciphertext.clone();
                let i = usize::from(*at) % c.len();
                c[i] ^= mask;
                c
            }
            Body::Truncate(n) => {
                let keep = usize::from(*n) % genuine.ciphertext.len();
                genuine.ciphertext[..keep].to_vec()
            }
            Body::Extend(more) => [&genuine.ciphertext[..], more].concat(),
            Body::Reflect => reflected.ciphertext.clone(),
        };
        let frame = SealedFrame {
            counter,
            ciphertext,
        };
        let result = bianca.opener.open(&frame);
        if opened_genuine {
            // The opener has moved on: `expected` is now in the past.
            assert!(result.is_err(), "opened after the genuine frame: {frame:?}");
            continue;
        }
        match result {
            Ok(plaintext) => {
                assert_eq!(frame, genuine, "a forged frame opened");
                assert_eq!(plaintext, input.next);
                opened_genuine = true;
            }
            Err(SessionError::Replayed { got, expected: e }) => {
                assert!(got < expected && e == expected, "{got} {e}");
            }
            Err(SessionError::OutOfOrder { got, expected: e }) => {
                assert!(got > expected && e == expected, "{got} {e}");
            }
            Err(SessionError::Tampered) => {
                assert_eq!(counter, expected);
                assert_ne!(frame, genuine, "the genuine frame was refused");
            }
            Err(e) => panic!("unexpected error {e:?} for {frame:?}"),
        }
    }

    // Nothing forged moved the opener: the genuine frame (if not already delivered by an
    // identical copy) and the one after it still open.
    if !opened_genuine {
        assert_eq!(bianca.opener.open(&genuine).expect("genuine"), input.next);
    }
    let after = ali.sealer.seal(b"after").expect("seal");
    assert_eq!(bianca.opener.open(&after).expect("genuine"), b"after");
});
