//! Certificates made from identity keys.
//!
//! Every Natter endpoint (each peer, and by default the directory) presents a self-signed
//! certificate whose key *is* its ed25519 identity key. A completed TLS 1.3 handshake thus
//! proves possession of the identity key; no certificate authority is involved. The name in
//! the certificate means nothing: only the key is checked (see [`crate::verify`]).

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::identity::{Identity, PublicKey};

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 key bytes follow it.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot build certificate: {0}")]
    Build(String),
    #[error("certificate is not valid DER: {0}")]
    Parse(String),
    #[error("certificate key is not an ed25519 key")]
    NotEd25519,
}

/// A certificate with its private key, ready for rustls.
pub struct CertifiedIdentity {
    /// The self-signed certificate.
    pub cert: CertificateDer<'static>,
    /// The identity key in PKCS#8 form.
    pub key: PrivateKeyDer<'static>,
}

/// Makes a self-signed certificate for `identity`. `name` is informational only.
pub fn self_signed(identity: &Identity, name: &str) -> Result<CertifiedIdentity, CertError> {
    let der = identity.pkcs8_der();
    let pkcs8 = PrivatePkcs8KeyDer::from(der.to_vec());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
        .map_err(|e| CertError::Build(e.to_string()))?;
    let san = if name.is_empty() { "natter" } else { name };
    let mut params = rcgen::CertificateParams::new(vec![san.to_string()])
        .map_err(|e| CertError::Build(e.to_string()))?;
    // Long-lived: the key, not the validity period, is what peers pin.
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(4000, 1, 1);
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| CertError::Build(e.to_string()))?;
    Ok(CertifiedIdentity {
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(pkcs8),
    })
}

/// The SubjectPublicKeyInfo DER of an ed25519 key, as it appears in a certificate.
pub fn spki_der(key: &PublicKey) -> Vec<u8> {
    let mut out = ED25519_SPKI_PREFIX.to_vec();
    out.extend_from_slice(&key.0);
    out
}

/// Reads the ed25519 public key out of a certificate.
pub fn public_key_of(cert: &CertificateDer<'_>) -> Result<PublicKey, CertError> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)
        .map_err(|e| CertError::Parse(e.to_string()))?;
    key_from_spki(parsed.subject_public_key_info().as_ref())
}

fn key_from_spki(spki: &[u8]) -> Result<PublicKey, CertError> {
    match spki.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(rest) => {
            let arr: [u8; 32] = rest.try_into().map_err(|_| CertError::NotEd25519)?;
            Ok(PublicKey(arr))
        }
        None => Err(CertError::NotEd25519),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_identity_key() {
        let id = Identity::generate();
        let c = self_signed(&id, "ali").unwrap();
        assert_eq!(public_key_of(&c.cert).unwrap(), id.public());
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
        assert!(public_key_of(&junk).is_err());
    }
}
