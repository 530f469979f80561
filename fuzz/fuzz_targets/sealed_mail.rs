//! Altered and forged sealed mail (`proto::sealed`) into `sealed_to` and `open`.
//!
//! One genuine blob is sealed once per process from ali to bianca under bianca's signed
//! prekey (fixed keys, so runs are comparable). Each input is a blob of the fuzzer's
//! making, or the genuine one altered. Nothing may panic or allocate without a bound,
//! and anything that opens must say exactly what the genuine blob says: mail cannot be
//! forged or altered without bianca noticing. A forged prekey signature is refused too.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use proto::Identity;
use proto::sealed::{self, SignedPrekey, StaticSecret};

#[global_allocator]
static ALLOC: proto_fuzz::CappedAlloc = proto_fuzz::CappedAlloc;

#[derive(Debug, Arbitrary)]
enum Input {
    /// Bytes of the fuzzer's choosing.
    Raw(Vec<u8>),
    /// The genuine blob with bits flipped (`mask` 0 means no change).
    Flip { at: u16, mask: u8 },
    /// The genuine blob cut short.
    Truncate(u16),
    /// The genuine blob with bytes appended.
    Extend(Vec<u8>),
    /// The genuine blob with a span replaced.
    Splice { at: u16, bytes: Vec<u8> },
    /// A prekey with these fields, checked against bianca's key.
    Prekey {
        key: [u8; 32],
        created_at: i64,
        signature: [u8; 64],
    },
}

struct Fixture {
    bianca: Identity,
    prekey: StaticSecret,
    blob: Vec<u8>,
    text: &'static str,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ali = Identity::from_secret_bytes(&[1; 32]);
        let bianca = Identity::from_secret_bytes(&[2; 32]);
        let prekey = StaticSecret::from([3; 32]);
        let signed = SignedPrekey::sign(&bianca, "bianca", &prekey, 1_700_000_000);
        let text = "meet at noon";
        let (blob, _) = sealed::seal(
            &ali,
            &"ali".parse().expect("a valid name"),
            &"bianca".parse().expect("a valid name"),
            &bianca.public(),
            &signed,
            text,
            1_700_000_000_000,
        )
        .expect("genuine seal");
        Fixture {
            bianca,
            prekey,
            blob,
            text,
        }
    })
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let g = &f.blob;
    let blob = match input {
        Input::Raw(bytes) => bytes,
        Input::Flip { at, mask } => {
            let mut b = g.clone();
            let i = usize::from(at) % b.len();
            b[i] ^= mask;
            b
        }
        Input::Truncate(n) => g[..usize::from(n) % g.len()].to_vec(),
        Input::Extend(more) => [&g[..], &more].concat(),
        Input::Splice { at, bytes } => {
            let mut b = g.clone();
            let i = usize::from(at) % b.len();
            let end = (i + bytes.len()).min(b.len());
            b[i..end].copy_from_slice(&bytes[..end - i]);
            b
        }
        Input::Prekey {
            key,
            created_at,
            signature,
        } => {
            let forged = SignedPrekey {
                key,
                created_at,
                signature: proto::Signature(signature),
            };
            let genuine = SignedPrekey::sign(&f.bianca, "bianca", &f.prekey, 1_700_000_000);
            if forged != genuine {
                assert!(
                    forged.verify("bianca", &f.bianca.public()).is_err(),
                    "a forged prekey verified: {forged:?}"
                );
            }
            return;
        }
    };
    let _ = sealed::sealed_to(&blob);
    if let Ok(letter) = sealed::open(&blob, "bianca", &f.bianca.public(), &f.prekey) {
        assert_eq!(letter.from, "ali");
        assert_eq!(
            letter.from_key,
            Identity::from_secret_bytes(&[1; 32]).public()
        );
        assert_eq!(letter.text, f.text);
        assert_eq!(letter.sent_at_ms, 1_700_000_000_000);
    }
});
