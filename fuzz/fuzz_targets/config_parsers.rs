//! Arbitrary text into the peer's profile parsers: `config.toml` (`peer::profile::Settings`)
//! and a pin file (`peer::pins::Pins::load`, `NAME HEXKEY` lines). Never a panic; settings
//! that parse are written back the way `Profile::save_settings` does and parse back equal.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use peer::pins::{PinError, Pins};
use peer::profile::Settings;
use proto::names::UserName;

#[global_allocator]
static ALLOC: proto_fuzz::CappedAlloc = proto_fuzz::CappedAlloc;

/// One scratch pin file per fuzzing process, under the fuzz project's target dir.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/scratch"));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir.join(format!("known_peers.{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(settings) = toml::from_str::<Settings>(text) {
        let saved = toml::to_string(&settings).expect("settings serialize");
        let again: Settings = toml::from_str(&saved)
            .unwrap_or_else(|e| panic!("saved settings do not parse back: {e}\n{saved}"));
        assert_eq!(again, settings);
    }

    let path = scratch();
    // A new file each time: truncating and rewriting one makes ext4 flush it on close
    // (auto_da_alloc), which measured 40 times slower here.
    let _ = std::fs::remove_file(path);
    std::fs::write(path, text).expect("write scratch pin file");
    match Pins::<UserName>::load(path) {
        Ok(_) | Err(PinError::Malformed { .. } | PinError::Refused { .. }) => {}
        Err(e) => panic!("Pins::load: unexpected error {e:?}"),
    }
});
