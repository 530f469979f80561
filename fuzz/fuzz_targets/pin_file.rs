//! Arbitrary text through the pin file parser (`peer::pins::parse`), keyed by user name
//! (`known_peers`) and by directory address (`known_directories`). Never a panic; what
//! parses has one record per line it counted, no name twice, and is written back
//! (`peer::pins::format`) as exactly one line per pin that parses back equal.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use peer::pins::{self, DirectoryAddr, ParseError, PinName};
use proto::names::UserName;

#[global_allocator]
static ALLOC: proto_fuzz::CappedAlloc = proto_fuzz::CappedAlloc;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check::<UserName>(text);
    check::<DirectoryAddr>(text);
});

fn check<K: PinName + Debug>(text: &str) {
    let lines = text.split('\n').count();
    match pins::parse::<K>(text) {
        Ok(keys) => {
            let records = text
                .split('\n')
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count();
            assert_eq!(keys.len(), records, "every record line is one pin");
            let written = pins::format(&keys);
            assert_eq!(written.lines().count(), keys.len(), "one line per pin");
            assert_eq!(pins::parse::<K>(&written).as_ref(), Ok(&keys));
        }
        Err(
            ParseError::Malformed { line }
            | ParseError::BadName { line }
            | ParseError::Duplicate { line, .. },
        ) => assert!((1..=lines).contains(&line), "line {line} of {lines}"),
    }
}
