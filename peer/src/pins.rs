//! Keys pinned on first contact (trust on first use), like SSH's `known_hosts`.
//!
//! One small text file per kind of thing pinned: `known_peers` (user name → identity key,
//! keyed by [`UserName`]) and `known_directories` (directory address → directory key,
//! keyed by [`DirectoryAddr`]). Each record is one line, `NAME HEXKEY`: the name, one
//! space, the key's 64 hex digits. Blank lines and lines starting with `#` are ignored.
//!
//! The format cannot be broken by any value: a key type holds only names without white
//! space or control characters, so whatever is pinned is written back as exactly one
//! line. Reading is strict ([`parse`]): a line that is not one record, a name that breaks
//! its rules, or a name given twice is an error naming the file and line — never "the
//! last one wins", which would let an injected line replace a pin.
//!
//! A changed key is never overwritten silently: [`Pins::check`] reports it and only an
//! explicit [`Pins::pin`] (the user's `peer trust NAME`) replaces it. Writes go to a
//! temporary file (mode 0600) that is renamed over the old one, so a crash never leaves a
//! half-written file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use proto::PublicKey;
use proto::names::UserName;

use crate::private_file::write_private;

/// What can name a pin: parsed from and printed as one word of a pin file line.
pub trait PinName: Ord + Clone + FromStr + AsRef<str> + std::fmt::Display {}

impl PinName for UserName {}
impl PinName for DirectoryAddr {}

/// Longest directory address in a pin file, in bytes (a DNS name is at most 253).
pub const MAX_DIRECTORY_ADDR: usize = 300;

/// A directory's address as the user wrote it (`host`, `host:port`, `[v6]:port`): what
/// `known_directories` is keyed by. 1 to [`MAX_DIRECTORY_ADDR`] bytes with no white space
/// or control characters, not starting with `#`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DirectoryAddr(String);

/// A directory address that cannot be a pin file key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "directory address must be 1 to {MAX_DIRECTORY_ADDR} bytes without spaces or control characters"
)]
pub struct BadDirectoryAddr;

impl DirectoryAddr {
    /// Checks `addr` and wraps it.
    pub fn parse(addr: &str) -> Result<Self, BadDirectoryAddr> {
        let ok = !addr.is_empty()
            && addr.len() <= MAX_DIRECTORY_ADDR
            && !addr.starts_with('#')
            && !addr
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || crate::ui::is_invisible(c));
        if ok {
            Ok(Self(addr.to_string()))
        } else {
            Err(BadDirectoryAddr)
        }
    }
}

impl FromStr for DirectoryAddr {
    type Err = BadDirectoryAddr;
    fn from_str(addr: &str) -> Result<Self, BadDirectoryAddr> {
        Self::parse(addr)
    }
}

impl AsRef<str> for DirectoryAddr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for DirectoryAddr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DirectoryAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The outcome of comparing a presented key with the pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// Nothing pinned for this name yet.
    New,
    /// The presented key is the pinned one.
    Match,
    /// A different key is pinned: refuse until the user trusts the new one.
    Changed { pinned: PublicKey },
}

/// Why the text of a pin file was refused ([`parse`]); lines count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: not `NAME HEXKEY` (a name, one space, 64 hex digits)")]
    Malformed { line: usize },
    #[error("line {line}: the name breaks the rules for a pinned name")]
    BadName { line: usize },
    #[error("line {line}: {name} is pinned twice (first on line {first})")]
    Duplicate {
        line: usize,
        first: usize,
        name: String,
    },
}

/// A pin file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: not `NAME HEXKEY`")]
    Malformed { path: PathBuf, line: usize },
    #[error("{path} {source}; fix or remove that line (nothing was pinned from this file)")]
    Refused { path: PathBuf, source: ParseError },
}

/// Parses the text of a pin file, strictly (see the module docs). Pure: the fuzz target
/// `pin_file` calls it directly.
pub fn parse<K: PinName>(text: &str) -> Result<BTreeMap<K, PublicKey>, ParseError> {
    let mut keys = BTreeMap::new();
    let mut first_line = BTreeMap::new();
    for (i, line) in text.split('\n').enumerate() {
        let line_no = i + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, key)) = line.split_once(' ') else {
            return Err(ParseError::Malformed { line: line_no });
        };
        let key = PublicKey::from_hex(key)
            .ok()
            .filter(|k| k.to_hex() == key)
            .ok_or(ParseError::Malformed { line: line_no })?;
        let name: K = name
            .parse()
            .map_err(|_| ParseError::BadName { line: line_no })?;
        if let Some(first) = first_line.insert(name.clone(), line_no) {
            return Err(ParseError::Duplicate {
                line: line_no,
                first,
                name: name.to_string(),
            });
        }
        keys.insert(name, key);
    }
    Ok(keys)
}

/// Writes pins as [`parse`] reads them: one `NAME HEXKEY` line each, sorted by name.
pub fn format<K: PinName>(keys: &BTreeMap<K, PublicKey>) -> String {
    let mut text = String::new();
    for (name, key) in keys {
        text.push_str(name.as_ref());
        text.push(' ');
        text.push_str(&key.to_hex());
        text.push('\n');
    }
    text
}

/// A set of pinned keys backed by one file.
#[derive(Debug, Clone)]
pub struct Pins<K: PinName = UserName> {
    path: PathBuf,
    keys: BTreeMap<K, PublicKey>,
}

impl<K: PinName> Pins<K> {
    /// Loads the pins in `path` (a missing file is an empty set).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, PinError> {
        let path = path.into();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(PinError::Read { path, source }),
        };
        match parse(&text) {
            Ok(keys) => Ok(Self { path, keys }),
            Err(ParseError::Malformed { line }) => Err(PinError::Malformed { path, line }),
            Err(source) => Err(PinError::Refused { path, source }),
        }
    }

    /// Compares `key` with what is pinned for `name`.
    pub fn check(&self, name: &str, key: &PublicKey) -> PinCheck
    where
        K: std::borrow::Borrow<str>,
    {
        match self.keys.get(name) {
            None => PinCheck::New,
            Some(pinned) if pinned == key => PinCheck::Match,
            Some(pinned) => PinCheck::Changed { pinned: *pinned },
        }
    }

    /// The key pinned for `name`, if any.
    pub fn get(&self, name: &str) -> Option<PublicKey>
    where
        K: std::borrow::Borrow<str>,
    {
        self.keys.get(name).copied()
    }

    /// Every pinned name, sorted.
    pub fn names(&self) -> Vec<K> {
        self.keys.keys().cloned().collect()
    }

    /// Pins `key` for `name` (replacing any earlier pin) and saves the file.
    pub fn pin(&mut self, name: &K, key: PublicKey) -> Result<(), PinError> {
        if self.keys.get(name) == Some(&key) {
            return Ok(());
        }
        self.keys.insert(name.clone(), key);
        self.save()
    }

    /// Removes the pin for `name` and saves the file.
    pub fn forget(&mut self, name: &str) -> Result<bool, PinError>
    where
        K: std::borrow::Borrow<str>,
    {
        let had = self.keys.remove(name).is_some();
        if had {
            self.save()?;
        }
        Ok(had)
    }

    fn save(&self) -> Result<(), PinError> {
        write_private(&self.path, format(&self.keys).as_bytes()).map_err(|source| PinError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Identity;

    fn name(n: &str) -> UserName {
        n.parse().unwrap()
    }

    #[test]
    fn pin_check_change_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_peers");
        let a = Identity::generate().public();
        let b = Identity::generate().public();
        let mut pins = Pins::<UserName>::load(&path).unwrap();
        assert_eq!(pins.check("ali", &a), PinCheck::New);
        pins.pin(&name("ali"), a).unwrap();
        assert_eq!(pins.check("ali", &a), PinCheck::Match);
        assert_eq!(pins.check("ali", &b), PinCheck::Changed { pinned: a });
        let reloaded = Pins::<UserName>::load(&path).unwrap();
        assert_eq!(reloaded.check("ali", &a), PinCheck::Match);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut reloaded = reloaded;
        assert!(reloaded.forget("ali").unwrap());
        assert_eq!(
            Pins::<UserName>::load(&path).unwrap().check("ali", &a),
            PinCheck::New
        );
    }

    #[test]
    fn malformed_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_peers");
        std::fs::write(&path, "ali nothex\n").unwrap();
        assert!(matches!(
            Pins::<UserName>::load(&path),
            Err(PinError::Malformed { line: 1, .. })
        ));
    }

    #[test]
    fn parsing_is_strict() {
        let a = Identity::generate().public().to_hex();
        let b = Identity::generate().public().to_hex();
        let parse = |text: &str| parse::<UserName>(text);
        // What `format` writes, comments and blank lines: fine.
        let ok = format!("# contacts\n\nali {a}\nbianca {b}\n");
        assert_eq!(parse(&ok).unwrap().len(), 2);
        assert_eq!(parse(&format!("ali {a}")).unwrap().len(), 1);
        // A name given twice is an error, never "the last one wins".
        assert_eq!(
            parse(&format!("ali {a}\nbianca {b}\nali {b}\n")),
            Err(ParseError::Duplicate {
                line: 3,
                first: 1,
                name: "ali".into()
            })
        );
        for (text, line) in [
            (format!("ali  {a}"), 1),
            (format!(" ali {a}"), 1),
            (format!("ali {a} "), 1),
            (format!("ali {a}\r\n"), 1),
            (format!("ali\t{a}"), 1),
            (format!("ali {a} extra"), 1),
            (format!("ali {}", a.to_uppercase()), 1),
            (format!("ali {}", &a[..62]), 1),
            ("ali".to_string(), 1),
            (format!("bianca {b}\nali"), 2),
        ] {
            assert_eq!(
                parse(&text),
                Err(ParseError::Malformed { line }),
                "{text:?}"
            );
        }
        for text in [
            format!("Ali {a}"),
            format!("al\u{202e}i {a}"),
            format!("zzz\u{85}ali {a}"),
        ] {
            assert_eq!(
                parse(&text),
                Err(ParseError::BadName { line: 1 }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn whatever_is_pinned_reads_back_as_pinned() {
        // The attack: a name that would add a second `ali` line if written as is. It
        // cannot even be made into a key: only valid names are pinned.
        let mallory = Identity::generate().public();
        assert!(
            format!("zzz {}\nali", mallory.to_hex())
                .parse::<UserName>()
                .is_err()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_peers");
        let ali = Identity::generate().public();
        let mut pins = Pins::<UserName>::load(&path).unwrap();
        pins.pin(&name("ali"), ali).unwrap();
        pins.pin(&name("zzz"), mallory).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let again = Pins::<UserName>::load(&path).unwrap();
        assert_eq!(again.get("ali"), Some(ali));
        assert_eq!(again.get("zzz"), Some(mallory));
    }

    #[test]
    fn a_duplicate_in_the_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_peers");
        let a = Identity::generate().public().to_hex();
        let b = Identity::generate().public().to_hex();
        std::fs::write(&path, format!("ali {a}\nali {b}\n")).unwrap();
        let err = Pins::<UserName>::load(&path).unwrap_err();
        assert!(matches!(
            err,
            PinError::Refused {
                source: ParseError::Duplicate { line: 2, .. },
                ..
            }
        ));
        let shown = err.to_string();
        assert!(
            shown.contains("known_peers") && shown.contains("pinned twice"),
            "{shown}"
        );
    }

    #[test]
    fn directory_addresses_are_validated_keys() {
        for ok in [
            "dir.example.org",
            "dir.example.org:4433",
            "127.0.0.1:9",
            "[::1]:4433",
        ] {
            DirectoryAddr::parse(ok).unwrap();
        }
        for bad in ["", "a b", "a\nb", "#x", "a\u{202e}b", &"x".repeat(301)] {
            assert!(DirectoryAddr::parse(bad).is_err(), "{bad:?}");
        }
        let key = Identity::generate().public().to_hex();
        assert!(parse::<DirectoryAddr>(&format!("dir:1 {key}\ndir:1 {key}")).is_err());
        assert_eq!(
            parse::<DirectoryAddr>(&format!("dir:1 {key}"))
                .unwrap()
                .len(),
            1
        );
    }
}
