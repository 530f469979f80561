//! TLS verifiers that accept exactly one expected ed25519 key, and the rustls
//! configurations built on them.
//!
//! Natter never asks "is this certificate signed by someone I trust?", only "is this the
//! key I expect?". The expected key comes from a pin (the directory's fingerprint, a
//! contact's pinned key) or from a directory lookup. The handshake signature is still
//! checked with rustls' own `verify_tls13_signature`: that is the proof of possession.
//!
//! Only TLS 1.3 with the ring provider is offered; that is what QUIC requires anyway.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::cert::{self, CertError};
use crate::identity::{Identity, PublicKey};

/// The certificate presented carries a different key than the one expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("key mismatch: expected fingerprint {}, got {}", expected.fingerprint(), found.fingerprint())]
pub struct KeyMismatch {
    /// The key we were told to expect.
    pub expected: PublicKey,
    /// The key the other side actually has.
    pub found: PublicKey,
}

/// The ring provider, the only one Natter compiles in.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// Checks a presented certificate: it must carry an ed25519 key, and that key must equal
/// `expected` when one is given.
fn check(
    end_entity: &CertificateDer<'_>,
    expected: Option<&PublicKey>,
) -> Result<(), rustls::Error> {
    let found = cert::public_key_of(end_entity).map_err(|e| match e {
        CertError::NotEd25519 => {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        }
        _ => rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding),
    })?;
    match expected {
        Some(expected) if *expected != found => Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(KeyMismatch {
                expected: *expected,
                found,
            }))),
        )),
        _ => Ok(()),
    }
}

/// Client side: accepts a server whose certificate key is `expected`. With `None` any
/// ed25519 key is accepted and the caller must check (and pin) the key it finds after the
/// handshake: that is trust on first use, and nothing else should pass `None`.
#[derive(Debug)]
pub struct ServerKeyVerifier {
    expected: Option<PublicKey>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerKeyVerifier {
    /// A verifier for one expected key (or, with `None`, first contact).
    pub fn new(expected: Option<PublicKey>) -> Arc<Self> {
        Arc::new(Self {
            expected,
            algorithms: algorithms(),
        })
    }
}

impl ServerCertVerifier for ServerKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check(end_entity, self.expected.as_ref())?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Server side of a peer-to-peer connection: a client certificate is mandatory and must
/// carry an ed25519 key (equal to `expected` when one is given). Who the key belongs to
/// is decided after the handshake, by asking the directory.
#[derive(Debug)]
pub struct ClientKeyVerifier {
    expected: Option<PublicKey>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientKeyVerifier {
    /// A verifier that requires a client certificate with an ed25519 key.
    pub fn new(expected: Option<PublicKey>) -> Arc<Self> {
        Arc::new(Self {
            expected,
            algorithms: algorithms(),
        })
    }
}

impl ClientCertVerifier for ClientKeyVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check(end_entity, self.expected.as_ref())?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// A TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Client configuration for dialing a server with key `expected` (`None`: first contact,
/// see [`ServerKeyVerifier`]). With `identity`, our identity certificate is presented too
/// (peer-to-peer connections require it).
pub fn client_config(
    identity: Option<&Identity>,
    expected: Option<PublicKey>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(ServerKeyVerifier::new(expected));
    let mut config = match identity {
        Some(id) => {
            let c = cert::self_signed(id, "natter-peer")?;
            builder.with_client_auth_cert(vec![c.cert], c.key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Server configuration presenting `identity`'s certificate. With `require_client_key`,
/// clients must present an ed25519 certificate (peer-to-peer); otherwise none is asked
/// for (the directory authenticates users by password and key signature instead).
pub fn server_config(
    identity: &Identity,
    require_client_key: bool,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TlsError> {
    let c = cert::self_signed(identity, "natter")?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = if require_client_key {
        builder.with_client_cert_verifier(ClientKeyVerifier::new(None))
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(vec![c.cert], c.key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}
