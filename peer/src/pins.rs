//! Keys pinned on first contact (trust on first use), like SSH's `known_hosts`.
//!
//! One small text file per kind of thing pinned: `known_peers` (user name → identity key)
//! and `known_directories` (directory address → directory key). Each line is
//! `NAME HEXKEY`. A changed key is never overwritten silently: [`Pins::check`] reports
//! it and only an explicit [`Pins::pin`] (the user's `peer trust NAME`) replaces it.
//! Writes go to a temporary file that is renamed over the old one, so a crash never
//! leaves a half-written file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use proto::PublicKey;

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
}

/// A set of pinned keys backed by one file.
#[derive(Debug, Clone)]
pub struct Pins {
    path: PathBuf,
    keys: BTreeMap<String, PublicKey>,
}

impl Pins {
    /// Loads the pins in `path` (a missing file is an empty set).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, PinError> {
        let path = path.into();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(PinError::Read { path, source }),
        };
        let mut keys = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(name), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(PinError::Malformed { path, line: i + 1 });
            };
            let key = PublicKey::from_hex(key).map_err(|_| PinError::Malformed {
                path: path.clone(),
                line: i + 1,
            })?;
            keys.insert(name.to_string(), key);
        }
        Ok(Self { path, keys })
    }

    /// Compares `key` with what is pinned for `name`.
    pub fn check(&self, name: &str, key: &PublicKey) -> PinCheck {
        match self.keys.get(name) {
            None => PinCheck::New,
            Some(pinned) if pinned == key => PinCheck::Match,
            Some(pinned) => PinCheck::Changed { pinned: *pinned },
        }
    }

    /// The key pinned for `name`, if any.
    pub fn get(&self, name: &str) -> Option<PublicKey> {
        self.keys.get(name).copied()
    }

    /// Every pinned name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// Pins `key` for `name` (replacing any earlier pin) and saves the file.
    pub fn pin(&mut self, name: &str, key: PublicKey) -> Result<(), PinError> {
        if self.keys.get(name) == Some(&key) {
            return Ok(());
        }
        self.keys.insert(name.to_string(), key);
        self.save()
    }

    /// Removes the pin for `name` and saves the file.
    pub fn forget(&mut self, name: &str) -> Result<bool, PinError> {
        let had = self.keys.remove(name).is_some();
        if had {
            self.save()?;
        }
        Ok(had)
    }

    fn save(&self) -> Result<(), PinError> {
        let mut text = String::new();
        for (name, key) in &self.keys {
            text.push_str(&format!("{name} {}\n", key.to_hex()));
        }
        write_private(&self.path, text.as_bytes()).map_err(|source| PinError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// Writes `bytes` to `path` atomically (temp file + rename) with mode 0600.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Identity;

    #[test]
    fn pin_check_change_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_peers");
        let a = Identity::generate().public();
        let b = Identity::generate().public();
        let mut pins = Pins::load(&path).unwrap();
        assert_eq!(pins.check("ali", &a), PinCheck::New);
        pins.pin("ali", a).unwrap();
        assert_eq!(pins.check("ali", &a), PinCheck::Match);
        assert_eq!(pins.check("ali", &b), PinCheck::Changed { pinned: a });
        let reloaded = Pins::load(&path).unwrap();
        assert_eq!(reloaded.check("ali", &a), PinCheck::Match);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut reloaded = reloaded;
        assert!(reloaded.forget("ali").unwrap());
        assert_eq!(Pins::load(&path).unwrap().check("ali", &a), PinCheck::New);
    }

    #[test]
    fn malformed_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_peers");
        std::fs::write(&path, "ali nothex\n").unwrap();
        assert!(matches!(
            Pins::load(&path),
            Err(PinError::Malformed { line: 1, .. })
        ));
    }
}
