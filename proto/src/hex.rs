//! Lower-case hexadecimal, the one encoder and the one strict decoder every part of
//! Natter uses for keys, fingerprints and the profile's files. The decoder accepts exactly
//! pairs of hex digits: no sign, no whitespace, no odd length (`u8::from_str_radix`
//! alone takes a leading `+`, which fuzzing found once; see `tests/regressions.rs`).

/// `bytes` as lower-case hex, two digits a byte.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes `s` spells, or `None` unless it is an even number of hex digits.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let mut out = vec![0; s.len() / 2];
    decode_into(s, &mut out)?;
    Some(out)
}

/// Decodes `s` into `out`, which it must fill exactly (for secrets kept in a buffer that
/// is zeroed on drop, so no copy is left behind). `None` leaves `out` unspecified.
pub fn decode_into(s: &str, out: &mut [u8]) -> Option<()> {
    let digits = s.as_bytes();
    if digits.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(())
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_case() {
        let bytes = [0x00, 0x7f, 0x80, 0xff, 0x12];
        assert_eq!(encode(&bytes), "007f80ff12");
        assert_eq!(decode("007f80ff12").unwrap(), bytes);
        assert_eq!(decode("007F80FF12").unwrap(), bytes);
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn only_pairs_of_hex_digits() {
        for bad in ["+f", "-f", " f", "f", "0g", "abc", "0x00", "é0", "ff\n"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        let mut out = [0u8; 2];
        assert_eq!(decode_into("00ff", &mut out), Some(()));
        assert_eq!(out, [0, 0xff]);
        assert_eq!(decode_into("00", &mut out), None);
        assert_eq!(decode_into("00ff00", &mut out), None);
    }
}
