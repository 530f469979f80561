//! Sealed mail: a message for a user who is offline, readable only by them.
//!
//! Each user publishes a *prekey*: an x25519 public key signed by their ed25519 identity
//! key ([`SignedPrekey`], over [`prekey_transcript`]). The directory keeps it with the
//! account. A sender who finds the recipient offline fetches the prekey and the
//! recipient's identity key, checks the identity key against its pin and the prekey's
//! signature, and seals ([`seal`]):
//!
//! ```text
//! e       = fresh x25519 secret            E = e·G
//! shared  = x25519(e, prekey)              (refused if not contributory)
//! salt    = SHA-256(transcript("natter-mail-salt-v1", [E, prekey, recipient identity]))
//! key     = HKDF-SHA256(salt, shared).expand("natter mail key")
//! blob    = bincode(SealedMail{ E, prekey, ChaCha20-Poly1305(key, nonce 0, aad, content) })
//! content = bincode(MailContent{ from, from_key, to, id, text, sent_at_ms, signature })
//! ```
//!
//! The key is used for exactly one message (the ephemeral key is fresh), so the fixed
//! nonce is safe. Inside, the sender signs ([`mail_transcript`]) its name and key, the
//! recipient's name and key, the message id, the text and the time: the recipient knows
//! who wrote it, and nobody can re-seal a message they received to a third person as if
//! it had been written to them. The directory that stores the blob sees only its size
//! and whom it is for; who sent it, it knows only because the sender is logged in.
//!
//! [`open`] checks everything that can be checked without policy (the tag, the
//! recipient, the sender's signature over the content with the key the content names);
//! the caller then checks that key against its pin for the sender (trust on first use,
//! as for chats). Nothing here does I/O.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::{EphemeralSecret, PublicKey as XPublic};
use zeroize::Zeroizing;

/// The secret half of a prekey (x25519), kept by its owner.
pub use x25519_dalek::StaticSecret;

use crate::identity::{Identity, PublicKey, Signature, transcript};
use crate::names::UserName;

/// Longest sealed blob the directory stores, in bytes: a message of
/// [`crate::names::MAX_MESSAGE`] bytes plus names, keys, signature and tag fit easily.
pub const MAX_BLOB: usize = 20 * 1024;

/// A user's published x25519 key for sealed mail, signed by their identity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPrekey {
    /// The x25519 public key.
    pub key: [u8; 32],
    /// Unix time it was made (newer prekeys replace older ones at the directory).
    pub created_at: i64,
    /// The identity key's signature over [`prekey_transcript`].
    pub signature: Signature,
}

/// Bytes an identity key signs to publish a prekey for `user`.
pub fn prekey_transcript(
    user: &str,
    identity: &PublicKey,
    prekey: &[u8; 32],
    created_at: i64,
) -> Vec<u8> {
    transcript(
        "natter-prekey-v1",
        &[
            user.as_bytes(),
            &identity.0,
            prekey,
            &created_at.to_be_bytes(),
        ],
    )
}

impl SignedPrekey {
    /// Signs the public half of `secret` as `user`'s prekey.
    pub fn sign(identity: &Identity, user: &str, secret: &StaticSecret, created_at: i64) -> Self {
        let key = XPublic::from(secret).to_bytes();
        let signature = identity.sign(&prekey_transcript(
            user,
            &identity.public(),
            &key,
            created_at,
        ));
        Self {
            key,
            created_at,
            signature,
        }
    }

    /// Checks that `identity` (the key pinned for `user`) signed this prekey for `user`.
    pub fn verify(&self, user: &str, identity: &PublicKey) -> Result<(), SealError> {
        identity
            .verify(
                &prekey_transcript(user, identity, &self.key, self.created_at),
                &self.signature,
            )
            .map_err(|_| SealError::BadPrekey)
    }
}

/// The public half of a prekey secret.
pub fn prekey_public(secret: &StaticSecret) -> [u8; 32] {
    XPublic::from(secret).to_bytes()
}

/// The outside of a sealed message: what the directory stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedMail {
    /// The sender's one-time x25519 public key.
    pub ephemeral: [u8; 32],
    /// The recipient's prekey it was sealed to (tells the recipient which secret opens it).
    pub prekey: [u8; 32],
    /// ChaCha20-Poly1305 of the encoded [`MailContent`], with its tag.
    pub ciphertext: Vec<u8>,
}

/// The inside of a sealed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailContent {
    pub from: UserName,
    pub from_key: PublicKey,
    pub to: UserName,
    /// Random, chosen by the sender: lets the recipient notice a message shown twice.
    pub id: [u8; 16],
    pub text: String,
    pub sent_at_ms: u64,
    /// `from_key`'s signature over [`mail_transcript`].
    pub signature: Signature,
}

/// [`MailContent`] as it is decoded by [`open`], before the names are checked.
#[derive(Deserialize)]
struct WireContent {
    from: String,
    from_key: PublicKey,
    to: String,
    id: [u8; 16],
    text: String,
    sent_at_ms: u64,
    signature: Signature,
}

/// A message as the sender wrote it, before sealing, and as the recipient gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// The sender's name, valid by construction (a sealed message whose `from` breaks the
    /// name rules does not open: [`SealError::Malformed`]).
    pub from: UserName,
    pub from_key: PublicKey,
    pub id: [u8; 16],
    pub text: String,
    pub sent_at_ms: u64,
}

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the recipient's prekey is not signed by their identity key")]
    BadPrekey,
    #[error("the recipient's prekey is weak")]
    WeakKey,
    #[error("the sealed message is malformed")]
    Malformed,
    #[error("the sealed message is too large")]
    TooLarge,
    #[error("the sealed message does not open: altered, or sealed for another key")]
    Tampered,
    #[error("the sealed message was addressed to someone else")]
    WrongRecipient,
    #[error("the sender's signature inside the sealed message does not verify")]
    BadSignature,
    #[error("the sealed message names its sender with a name that breaks the user name rules")]
    BadSender,
}

/// Bytes the sender signs inside a sealed message.
pub fn mail_transcript(
    from: &str,
    from_key: &PublicKey,
    to: &str,
    to_key: &PublicKey,
    id: &[u8; 16],
    text: &str,
    sent_at_ms: u64,
) -> Vec<u8> {
    transcript(
        "natter-mail-v1",
        &[
            from.as_bytes(),
            &from_key.0,
            to.as_bytes(),
            &to_key.0,
            id,
            text.as_bytes(),
            &sent_at_ms.to_be_bytes(),
        ],
    )
}

fn mail_key(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    prekey: &[u8; 32],
    to_key: &PublicKey,
) -> Zeroizing<[u8; 32]> {
    let salt: [u8; 32] = Sha256::digest(transcript(
        "natter-mail-salt-v1",
        &[ephemeral, prekey, &to_key.0],
    ))
    .into();
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(b"natter mail key", &mut *key)
        .expect("32 bytes is a valid HKDF output length");
    key
}

/// bincode, as on the wire (decoding goes through [`crate::frame::decode`] and its limit).
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
}

fn aad(ephemeral: &[u8; 32], prekey: &[u8; 32]) -> Vec<u8> {
    transcript("natter-mail-aad-v1", &[ephemeral, prekey])
}

/// Seals `text` from `identity` (user `from`) for user `to`, whose identity key `to_key`
/// the caller has checked against its pin, and whose `prekey` is checked here. Returns
/// the blob to deposit and the message id inside it.
pub fn seal(
    identity: &Identity,
    from: &UserName,
    to: &UserName,
    to_key: &PublicKey,
    prekey: &SignedPrekey,
    text: &str,
    sent_at_ms: u64,
) -> Result<(Vec<u8>, [u8; 16]), SealError> {
    prekey.verify(to, to_key)?;
    let id: [u8; 16] = rand::random();
    let from_key = identity.public();
    let signature = identity.sign(&mail_transcript(
        from, &from_key, to, to_key, &id, text, sent_at_ms,
    ));
    let content = MailContent {
        from: from.clone(),
        from_key,
        to: to.clone(),
        id,
        text: text.to_string(),
        sent_at_ms,
        signature,
    };
    let plaintext = Zeroizing::new(encode(&content).map_err(|_| SealError::TooLarge)?);
    let secret = EphemeralSecret::random();
    let ephemeral = XPublic::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&XPublic::from(prekey.key));
    if !shared.was_contributory() {
        return Err(SealError::WeakKey);
    }
    let key = mail_key(shared.as_bytes(), &ephemeral, &prekey.key, to_key);
    let ciphertext = ChaCha20Poly1305::new(&Key::from(*key))
        .encrypt(
            &Nonce::from([0u8; 12]),
            Payload {
                msg: &plaintext,
                aad: &aad(&ephemeral, &prekey.key),
            },
        )
        .map_err(|_| SealError::TooLarge)?;
    let blob = encode(&SealedMail {
        ephemeral,
        prekey: prekey.key,
        ciphertext,
    })
    .map_err(|_| SealError::TooLarge)?;
    if blob.len() > MAX_BLOB {
        return Err(SealError::TooLarge);
    }
    Ok((blob, id))
}

/// Which prekey a blob was sealed to (to pick the secret that opens it).
pub fn sealed_to(blob: &[u8]) -> Result<[u8; 32], SealError> {
    if blob.len() > MAX_BLOB {
        return Err(SealError::TooLarge);
    }
    let mail: SealedMail = crate::frame::decode(blob).map_err(|_| SealError::Malformed)?;
    Ok(mail.prekey)
}

/// Opens a blob sealed to `me` (identity key `my_key`) under the prekey whose secret is
/// `prekey`. Checks the tag, the recipient and the sender's signature; the caller checks
/// the sender's key ([`Letter::from_key`]) against its pin for [`Letter::from`].
pub fn open(
    blob: &[u8],
    me: &str,
    my_key: &PublicKey,
    prekey: &StaticSecret,
) -> Result<Letter, SealError> {
    if blob.len() > MAX_BLOB {
        return Err(SealError::TooLarge);
    }
    let mail: SealedMail = crate::frame::decode(blob).map_err(|_| SealError::Malformed)?;
    let ours = XPublic::from(prekey).to_bytes();
    if mail.prekey != ours {
        return Err(SealError::Tampered);
    }
    let shared = prekey.diffie_hellman(&XPublic::from(mail.ephemeral));
    if !shared.was_contributory() {
        return Err(SealError::WeakKey);
    }
    let key = mail_key(shared.as_bytes(), &mail.ephemeral, &ours, my_key);
    let plaintext = Zeroizing::new(
        ChaCha20Poly1305::new(&Key::from(*key))
            .decrypt(
                &Nonce::from([0u8; 12]),
                Payload {
                    msg: &mail.ciphertext,
                    aad: &aad(&mail.ephemeral, &ours),
                },
            )
            .map_err(|_| SealError::Tampered)?,
    );
    // Decoded with plain-string names first, so that a bad sender name is reported as
    // such; it never leaves this function.
    let content: WireContent =
        crate::frame::decode(&plaintext).map_err(|_| SealError::Malformed)?;
    if content.to != me {
        return Err(SealError::WrongRecipient);
    }
    let from = UserName::try_from(content.from).map_err(|_| SealError::BadSender)?;
    content
        .from_key
        .verify(
            &mail_transcript(
                &from,
                &content.from_key,
                me,
                my_key,
                &content.id,
                &content.text,
                content.sent_at_ms,
            ),
            &content.signature,
        )
        .map_err(|_| SealError::BadSignature)?;
    Ok(Letter {
        from,
        from_key: content.from_key,
        id: content.id,
        text: content.text,
        sent_at_ms: content.sent_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct User {
        name: UserName,
        id: Identity,
        prekey: StaticSecret,
        signed: SignedPrekey,
    }

    fn user(name: &'static str) -> User {
        let id = Identity::generate();
        let prekey = StaticSecret::random();
        let signed = SignedPrekey::sign(&id, name, &prekey, 1_700_000_000);
        User {
            name: name.parse().unwrap(),
            id,
            prekey,
            signed,
        }
    }

    fn seal_to(from: &User, to: &User, text: &str) -> Vec<u8> {
        seal(
            &from.id,
            &from.name,
            &to.name,
            &to.id.public(),
            &to.signed,
            text,
            42,
        )
        .unwrap()
        .0
    }

    #[test]
    fn round_trip() {
        let (ali, bianca) = (user("ali"), user("bianca"));
        let (blob, id) = seal(
            &ali.id,
            &ali.name,
            &bianca.name,
            &bianca.id.public(),
            &bianca.signed,
            "hello while you were away",
            42,
        )
        .unwrap();
        assert_eq!(sealed_to(&blob).unwrap(), bianca.signed.key);
        let letter = open(&blob, "bianca", &bianca.id.public(), &bianca.prekey).unwrap();
        assert_eq!(letter.from, "ali");
        assert_eq!(letter.from_key, ali.id.public());
        assert_eq!(letter.id, id);
        assert_eq!(letter.text, "hello while you were away");
        assert_eq!(letter.sent_at_ms, 42);
        let marker = b"while you were away";
        assert!(!blob.windows(marker.len()).any(|w| w == marker));
    }

    #[test]
    fn wrong_recipient_key_is_refused() {
        let (ali, bianca, chloe) = (user("ali"), user("bianca"), user("chloe"));
        let blob = seal_to(&ali, &bianca, "for bianca");
        assert_eq!(
            open(&blob, "chloe", &chloe.id.public(), &chloe.prekey),
            Err(SealError::Tampered)
        );
        // Right prekey secret, but claiming another identity: the key derivation differs.
        assert_eq!(
            open(&blob, "bianca", &chloe.id.public(), &bianca.prekey),
            Err(SealError::Tampered)
        );
        assert_eq!(
            open(&blob, "chloe", &bianca.id.public(), &bianca.prekey),
            Err(SealError::WrongRecipient)
        );
    }

    #[test]
    fn tampered_blob_is_refused() {
        let (ali, bianca) = (user("ali"), user("bianca"));
        let blob = seal_to(&ali, &bianca, "do not touch");
        for i in [blob.len() - 1, blob.len() / 2, 70] {
            let mut bad = blob.clone();
            bad[i] ^= 0x20;
            assert!(
                open(&bad, "bianca", &bianca.id.public(), &bianca.prekey).is_err(),
                "byte {i}"
            );
        }
        assert_eq!(
            open(
                &blob[..blob.len() - 3],
                "bianca",
                &bianca.id.public(),
                &bianca.prekey
            ),
            Err(SealError::Malformed)
        );
        assert_eq!(
            open(&[0u8; 3], "bianca", &bianca.id.public(), &bianca.prekey),
            Err(SealError::Malformed)
        );
    }

    #[test]
    fn forged_sender_signature_is_refused() {
        let (ali, bianca, mallory) = (user("ali"), user("bianca"), user("mallory"));
        // mallory seals a message claiming to be ali, with ali's key but her own signature.
        let to_key = bianca.id.public();
        let id = [9u8; 16];
        let content = MailContent {
            from: ali.name.clone(),
            from_key: ali.id.public(),
            to: bianca.name.clone(),
            id,
            text: "send money".into(),
            sent_at_ms: 1,
            signature: mallory.id.sign(&mail_transcript(
                "ali",
                &ali.id.public(),
                "bianca",
                &to_key,
                &id,
                "send money",
                1,
            )),
        };
        let blob = seal_by_hand(&content, &bianca);
        assert_eq!(
            open(&blob, "bianca", &to_key, &bianca.prekey),
            Err(SealError::BadSignature)
        );
    }

    /// Seals any encoded content for `to`, the way [`seal`] does, without its checks.
    fn seal_by_hand<T: Serialize>(content: &T, to: &User) -> Vec<u8> {
        let plaintext = encode(content).unwrap();
        let secret = StaticSecret::random();
        let ephemeral = XPublic::from(&secret).to_bytes();
        let shared = secret.diffie_hellman(&XPublic::from(to.signed.key));
        let key = mail_key(
            shared.as_bytes(),
            &ephemeral,
            &to.signed.key,
            &to.id.public(),
        );
        let ciphertext = ChaCha20Poly1305::new(&Key::from(*key))
            .encrypt(
                &Nonce::from([0u8; 12]),
                Payload {
                    msg: &plaintext,
                    aad: &aad(&ephemeral, &to.signed.key),
                },
            )
            .unwrap();
        encode(&SealedMail {
            ephemeral,
            prekey: to.signed.key,
            ciphertext,
        })
        .unwrap()
    }

    #[test]
    fn sender_name_breaking_the_rules_does_not_open() {
        // What a `MailContent` would be with plain strings: the same encoding.
        #[derive(Serialize)]
        struct RawContent<'a> {
            from: &'a str,
            from_key: PublicKey,
            to: &'a str,
            id: [u8; 16],
            text: &'a str,
            sent_at_ms: u64,
            signature: Signature,
        }
        let (mallory, bianca) = (user("mallory"), user("bianca"));
        let to_key = bianca.id.public();
        let hostile = format!("zzz {}\nali", mallory.id.public().to_hex());
        // Correctly signed by its sender's key: only the name is wrong.
        let content = RawContent {
            from: &hostile,
            from_key: mallory.id.public(),
            to: "bianca",
            id: [1; 16],
            text: "hi",
            sent_at_ms: 1,
            signature: mallory.id.sign(&mail_transcript(
                &hostile,
                &mallory.id.public(),
                "bianca",
                &to_key,
                &[1; 16],
                "hi",
                1,
            )),
        };
        let blob = seal_by_hand(&content, &bianca);
        assert_eq!(
            open(&blob, "bianca", &to_key, &bianca.prekey),
            Err(SealError::BadSender)
        );
        // The same content with a valid name opens: the name was the only fault.
        let content = RawContent {
            from: "mallory",
            signature: mallory.id.sign(&mail_transcript(
                "mallory",
                &mallory.id.public(),
                "bianca",
                &to_key,
                &[1; 16],
                "hi",
                1,
            )),
            ..content
        };
        let blob = seal_by_hand(&content, &bianca);
        let letter = open(&blob, "bianca", &to_key, &bianca.prekey).unwrap();
        assert_eq!(letter.from, "mallory");
    }

    #[test]
    fn prekey_signed_by_someone_else_is_refused() {
        let (ali, bianca, mallory) = (user("ali"), user("bianca"), user("mallory"));
        // The directory hands out mallory's prekey as bianca's.
        let forged = SignedPrekey::sign(&mallory.id, "bianca", &mallory.prekey, 1);
        assert_eq!(
            seal(
                &ali.id,
                &ali.name,
                &bianca.name,
                &bianca.id.public(),
                &forged,
                "hi",
                1
            )
            .err(),
            Some(SealError::BadPrekey)
        );
        // bianca's genuine prekey presented as chloe's.
        assert_eq!(
            bianca.signed.verify("chloe", &bianca.id.public()),
            Err(SealError::BadPrekey)
        );
    }
}
