//! Arbitrary text into the name, password, key and fingerprint parsers, and arbitrary
//! bytes into the certificate parser. Never a panic; whatever is accepted obeys the rules
//! the parser documents, and parses back from its own printed form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::names::{self, MAX_PASSWORD, MAX_USERNAME, MIN_PASSWORD, NameError};
use proto::{Fingerprint, PublicKey, cert};
use rustls::pki_types::CertificateDer;

#[global_allocator]
static ALLOC: proto_fuzz::CappedAlloc = proto_fuzz::CappedAlloc;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        username(text);
        password(text);
        public_key(text);
        fingerprint(text);
    }
    certificate(data);
});

fn username(text: &str) {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    match names::check_username(text) {
        Ok(()) => {
            assert!((1..=MAX_USERNAME).contains(&text.len()));
            assert!(text.chars().all(allowed));
            assert!(text.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()));
        }
        Err(NameError::UsernameLength) => {
            assert!(text.is_empty() || text.len() > MAX_USERNAME)
        }
        Err(NameError::UsernameChars) => {
            assert!(!text.is_empty() && text.len() <= MAX_USERNAME);
        }
        Err(e) => panic!("check_username: unexpected error {e:?}"),
    }
}

fn password(text: &str) {
    match names::check_new_password(text) {
        Ok(()) => assert!(text.len() <= MAX_PASSWORD && text.chars().count() >= MIN_PASSWORD),
        Err(NameError::PasswordTooLong) => assert!(text.len() > MAX_PASSWORD),
        Err(NameError::PasswordTooShort) => assert!(text.chars().count() < MIN_PASSWORD),
        Err(e) => panic!("check_new_password: unexpected error {e:?}"),
    }
}

fn public_key(text: &str) {
    if let Ok(key) = PublicKey::from_hex(text) {
        assert!(key.is_valid());
        // Only hex digits (and surrounding white space) are a key.
        assert_eq!(key.to_hex(), text.trim().to_ascii_lowercase(), "{text:?}");
        assert_eq!(PublicKey::from_hex(&key.to_hex()), Ok(key));
    }
}

fn fingerprint(text: &str) {
    if let Some(fp) = Fingerprint::parse(text) {
        let compact: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != ':')
            .collect();
        // Only hex digits (once spaces and colons are dropped) are a fingerprint.
        assert_eq!(
            compact.to_ascii_lowercase(),
            fp.to_string().replace(' ', "").to_ascii_lowercase(),
            "{text:?}"
        );
        assert_eq!(Fingerprint::parse(&fp.to_string()), Some(fp));
    }
}

fn certificate(data: &[u8]) {
    let der = CertificateDer::from(data);
    if let Ok(key) = cert::public_key_of(&der) {
        let spki = cert::spki_der(&key);
        assert!(
            data.windows(spki.len()).any(|w| w == spki),
            "the key read is not in the certificate"
        );
    }
}
