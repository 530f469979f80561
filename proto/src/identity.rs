//! Long-term identity keys (ed25519), signatures, fingerprints and safety numbers.
//!
//! A user's identity key is created once and kept in their profile; its public half is
//! registered with the directory and pinned by the people they talk to. Every signature
//! Natter makes is over a domain-separated transcript (see [`transcript`]), so a signature
//! made for one purpose can never be replayed for another.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Length of an ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// A signature did not verify, or a key was not a valid ed25519 point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a valid ed25519 public key")]
    InvalidKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("identity key file is malformed")]
    MalformedSecret,
}

/// A user's long-term ed25519 signing key. The secret never leaves this type except
/// through [`Identity::secret_bytes`], which the profile uses to store it (mode 0600).
pub struct Identity {
    signing: SigningKey,
}

impl Identity {
    /// Creates a fresh identity from the operating system's random source.
    pub fn generate() -> Self {
        let seed = Zeroizing::new(rand::random::<[u8; 32]>());
        Self::from_secret_bytes(&seed)
    }

    /// Rebuilds an identity from its 32-byte secret seed.
    pub fn from_secret_bytes(seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte secret seed, for storing in the profile. Zeroed when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public half, as registered with the directory and pinned by contacts.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs `msg`. Callers pass a [`transcript`] so that signatures are domain-separated.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.signing.sign(msg).to_bytes())
    }

    /// PKCS#8 DER of the key, for building a TLS certificate from it.
    pub(crate) fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        Zeroizing::new(
            self.signing
                .to_pkcs8_der()
                .expect("ed25519 key always encodes as PKCS#8")
                .as_bytes()
                .to_vec(),
        )
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public().fingerprint())
    }
}

/// An ed25519 public key as sent on the wire and pinned in profiles.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// Checks that `sig` is a valid signature by this key over `msg` (strict verification:
    /// no malleable or small-order signatures).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::InvalidKey)?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        key.verify_strict(msg, &sig)
            .map_err(|_| KeyError::BadSignature)
    }

    /// Whether the bytes are a valid ed25519 point.
    pub fn is_valid(&self) -> bool {
        VerifyingKey::from_bytes(&self.0).is_ok()
    }

    /// The key's fingerprint: SHA-256 of the key, shown in groups of hex digits.
    pub fn fingerprint(&self) -> Fingerprint {
        let digest = Sha256::digest(self.0);
        Fingerprint(digest.into())
    }

    /// Lowercase hex of the raw key (used in profile files).
    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }

    /// Parses [`PublicKey::to_hex`] output.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let bytes = crate::hex::decode(s.trim()).ok_or(KeyError::InvalidKey)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::InvalidKey)?;
        let key = PublicKey(arr);
        if key.is_valid() {
            Ok(key)
        } else {
            Err(KeyError::InvalidKey)
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint().short())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.fingerprint().short())
    }
}

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", crate::hex::encode(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "{SIGNATURE_LEN} bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                let arr: [u8; SIGNATURE_LEN] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Signature(arr))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Signature, E> {
                self.visit_bytes(&v)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// SHA-256 of a public key. Displayed as 16 groups of 4 hex digits; [`Fingerprint::short`]
/// gives the first 4 groups for status lines.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The first 4 groups ("3F2A 91C0 77DE 0A41"), enough to spot a changed key at a glance.
    pub fn short(&self) -> String {
        groups(&self.0[..8])
    }

    /// Parses the [`fmt::Display`] form (spaces and case ignored).
    pub fn parse(s: &str) -> Option<Self> {
        let compact: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != ':')
            .collect();
        let bytes = crate::hex::decode(&compact)?;
        Some(Fingerprint(bytes.try_into().ok()?))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&groups(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.short())
    }
}

/// A safety number for two keys: the same 60 digits on both users' screens when (and only
/// when) each has the other's real key. Compare it out of band (in person, by phone).
pub fn safety_number(a: &PublicKey, b: &PublicKey) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let digest = Sha256::new()
        .chain_update(b"natter-safety-number-v1")
        .chain_update(lo.0)
        .chain_update(hi.0)
        .finalize();
    // 12 groups of 5 digits, each from 2.5 bytes of the digest (as a 40-bit chunk mod 1e5).
    (0..12)
        .map(|i| {
            let chunk = &digest[i * 2..i * 2 + 5];
            let mut n = 0u64;
            for b in chunk {
                n = (n << 8) | *b as u64;
            }
            format!("{:05}", n % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds a domain-separated byte string to sign: a context label followed by each part,
/// each prefixed with its length, so no two different part lists give the same bytes.
pub fn transcript(label: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    out.extend_from_slice(&(label.len() as u32).to_be_bytes());
    out.extend_from_slice(label.as_bytes());
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn groups(bytes: &[u8]) -> String {
    bytes
        .chunks(2)
        .map(|c| crate::hex::encode(c).to_uppercase())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let id = Identity::generate();
        let msg = transcript("test", &[b"hello"]);
        let sig = id.sign(&msg);
        id.public().verify(&msg, &sig).unwrap();
        let other = transcript("test", &[b"hellO"]);
        assert_eq!(
            id.public().verify(&other, &sig),
            Err(KeyError::BadSignature)
        );
        let stranger = Identity::generate();
        assert_eq!(
            stranger.public().verify(&msg, &sig),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn secret_round_trip_and_hex() {
        let id = Identity::generate();
        let again = Identity::from_secret_bytes(&id.secret_bytes());
        assert_eq!(id.public(), again.public());
        assert_eq!(
            PublicKey::from_hex(&id.public().to_hex()).unwrap(),
            id.public()
        );
        assert!(PublicKey::from_hex("zz").is_err());
    }

    #[test]
    fn fingerprint_display_parses_back() {
        let fp = Identity::generate().public().fingerprint();
        let shown = fp.to_string();
        assert_eq!(shown.split(' ').count(), 16);
        assert_eq!(Fingerprint::parse(&shown), Some(fp));
        assert_eq!(
            Fingerprint::parse(&shown.to_lowercase().replace(' ', "")),
            Some(fp)
        );
        assert!(shown.starts_with(&fp.short()));
    }

    #[test]
    fn safety_number_is_symmetric_and_key_dependent() {
        let a = Identity::generate().public();
        let b = Identity::generate().public();
        let c = Identity::generate().public();
        assert_eq!(safety_number(&a, &b), safety_number(&b, &a));
        assert_ne!(safety_number(&a, &b), safety_number(&a, &c));
        assert_eq!(safety_number(&a, &b).len(), 12 * 5 + 11);
    }

    #[test]
    fn transcript_is_unambiguous() {
        assert_ne!(
            transcript("l", &[b"ab", b"c"]),
            transcript("l", &[b"a", b"bc"])
        );
    }
}
