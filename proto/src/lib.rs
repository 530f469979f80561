//! Natter's shared protocol library.
//!
//! Everything both programs must agree on, and nothing else: no sockets, no files, no policy.
//!
//! # Layout
//! - [`frame`]: length-prefixed frames with a hard size limit; bincode encoding with a
//!   decode limit; async read/write of one frame over any byte stream.
//! - [`message`]: every message on the wire, directory protocol and peer-to-peer protocol.
//! - [`identity`]: long-term ed25519 identity keys, signatures, fingerprints, safety numbers.
//! - [`cert`]: self-signed QUIC certificates made from an identity key.
//! - [`verify`]: rustls verifiers that accept exactly one expected ed25519 key, and the
//!   rustls client/server configurations built on them.
//! - [`session`]: the end-to-end layer (x25519 + HKDF + ChaCha20-Poly1305) that seals chat
//!   messages independently of the transport.
//! - [`sealed`]: sealed mail for offline users (prekeys, x25519 + HKDF +
//!   ChaCha20-Poly1305, the sender's signature inside).
//! - [`hex`]: the one hex encoder and strict decoder.
//! - [`names`]: what a valid user name, password and message look like.
//! - [`addr`]: which of another peer's addresses a peer may send packets to.

pub mod addr;
pub mod cert;
pub mod frame;
pub mod hex;
pub mod identity;
pub mod message;
pub mod names;
pub mod sealed;
pub mod session;
pub mod verify;

pub use identity::{Fingerprint, Identity, PublicKey, Signature};

/// Version of the wire protocol spoken by this build. Sent in the first message of every
/// connection; a different version is refused with a clear error. Version 2 binds the
/// login and resume signatures to the directory's key and the TLS session
/// ([`message::ChannelBinding`]): a version 1 signature would never verify, so the version
/// says so up front instead of a confusing `BadSignature`.
pub const PROTOCOL_VERSION: u32 = 2;

/// ALPN protocol id of a connection to the directory.
pub const ALPN_DIRECTORY: &[u8] = b"natter-dir/1";

/// ALPN protocol id of a peer-to-peer chat connection.
pub const ALPN_PEER: &[u8] = b"natter-p2p/1";
