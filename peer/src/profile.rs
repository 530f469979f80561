//! The user's profile: one directory holding everything that is theirs.
//!
//! ```text
//! <profile>/identity.key        ed25519 identity key (mode 0600)
//! <profile>/config.toml         settings: every flag but --profile (`peer config print`)
//! <profile>/known_peers         identity keys of contacts, pinned on first contact
//! <profile>/known_directories   directory keys, pinned on first contact
//! ```
//!
//! The default location is the platform config directory's `natter/profile`
//! (`~/.config/natter/profile` on Linux); `--profile DIR` overrides it. The directory is
//! created with mode 0700 and the key file refused if others can read it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proto::{Identity, PublicKey};
use serde::{Deserialize, Serialize};

use crate::pins::{PinError, Pins, write_private};

const IDENTITY_FILE: &str = "identity.key";
const CONFIG_FILE: &str = "config.toml";
const IDENTITY_HEADER: &str = "natter-identity-v1";

/// A profile could not be opened or saved.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot use profile directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
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
    #[error("{path} is not a Natter identity key file")]
    BadIdentity { path: PathBuf },
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    ExposedKey { path: PathBuf, mode: u32 },
    #[error("{path}: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error(transparent)]
    Pins(#[from] PinError),
}

/// Settings kept in `config.toml`. Every field is optional; command-line flags win.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The user name this profile logs in as.
    pub user: Option<String>,
    /// The directory's address, `HOST:PORT`.
    pub directory: Option<String>,
    /// Where to listen for chats.
    pub listen: Option<SocketAddr>,
    /// The directory's key fingerprint, like `--directory-fingerprint` (replaces a pin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_fingerprint: Option<String>,
    /// A file whose first line is the password, like `--password-file` (relative to the
    /// profile directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Log filter when RUST_LOG is not set: `warn`, or per module `warn,peer::chat=debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Rooms to join at every login (e.g. `["general"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auto_join: Vec<String>,
    /// Whose comings and goings to hear about (room-mates are always heard).
    #[serde(default)]
    pub presence: PresenceScope,
    /// Bell and notification command.
    #[serde(default)]
    pub alerts: crate::alerts::Alerts,
}

/// Whose presence (online / offline) the user hears about, besides room-mates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceScope {
    /// People they have chatted with (their pinned contacts).
    #[default]
    Contacts,
    /// Everyone on the directory.
    Everyone,
    /// Nobody.
    None,
}

impl Settings {
    /// Reads `config.toml` in the profile directory `dir` (defaults when there is none),
    /// without creating anything.
    pub fn load(dir: &Path) -> Result<Self, ProfileError> {
        let path = dir.join(CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ProfileError::BadConfig {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(source) => Err(ProfileError::Read { path, source }),
        }
    }
}

/// An opened profile.
pub struct Profile {
    dir: PathBuf,
    identity: Arc<Identity>,
    /// Settings from `config.toml`.
    pub settings: Settings,
    /// Contacts' pinned identity keys.
    pub peers: Pins,
    /// Directories' pinned keys, by address.
    pub directories: Pins,
}

impl Profile {
    /// The default profile location, if the platform has a config directory.
    pub fn default_dir() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "natter").map(|d| d.config_dir().join("profile"))
    }

    /// Opens the profile in `dir`, creating it and a fresh identity key on first use.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ProfileError> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        let identity = load_or_create_identity(&dir.join(IDENTITY_FILE))?;
        let settings = Settings::load(&dir)?;
        Ok(Self {
            peers: Pins::load(dir.join("known_peers"))?,
            directories: Pins::load(dir.join("known_directories"))?,
            identity: Arc::new(identity),
            settings,
            dir,
        })
    }

    /// The profile's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The user's identity key.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// The user's public identity key.
    pub fn public_key(&self) -> PublicKey {
        self.identity.public()
    }

    /// Writes the settings back to `config.toml`.
    pub fn save_settings(&self) -> Result<(), ProfileError> {
        let path = self.dir.join(CONFIG_FILE);
        let text = toml::to_string(&self.settings).map_err(|e| ProfileError::BadConfig {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_private(&path, text.as_bytes()).map_err(|source| ProfileError::Write { path, source })
    }
}

fn create_private_dir(dir: &Path) -> Result<(), ProfileError> {
    let err = |source| ProfileError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(err)
}

fn load_or_create_identity(path: &Path) -> Result<Identity, ProfileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            check_private(path)?;
            parse_identity(&text).ok_or_else(|| ProfileError::BadIdentity {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity::generate();
            let secret = identity.secret_bytes();
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            let text = zeroize::Zeroizing::new(format!("{IDENTITY_HEADER}\n{hex}\n"));
            write_private(path, text.as_bytes()).map_err(|source| ProfileError::Write {
                path: path.to_path_buf(),
                source,
            })?;
            Ok(identity)
        }
        Err(source) => Err(ProfileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parse_identity(text: &str) -> Option<Identity> {
    let mut lines = text.lines();
    if lines.next()? != IDENTITY_HEADER {
        return None;
    }
    let hex = lines.next()?.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(Identity::from_secret_bytes(&seed))
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), ProfileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(ProfileError::ExposedKey {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), ProfileError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("profile");
        let first = Profile::open(&p).unwrap().public_key();
        let again = Profile::open(&p).unwrap().public_key();
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = std::fs::metadata(p.join(IDENTITY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(key & 0o777, 0o600);
            let d = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(d & 0o777, 0o700);
            std::fs::set_permissions(
                p.join(IDENTITY_FILE),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            assert!(matches!(
                Profile::open(&p),
                Err(ProfileError::ExposedKey { .. })
            ));
        }
    }

    #[test]
    fn settings_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Profile::open(dir.path()).unwrap();
        p.settings.user = Some("ali".into());
        p.settings.directory = Some("127.0.0.1:8888".into());
        p.save_settings().unwrap();
        let again = Profile::open(dir.path()).unwrap();
        assert_eq!(again.settings, p.settings);
        std::fs::write(dir.path().join(CONFIG_FILE), "usr = 'x'\n").unwrap();
        assert!(matches!(
            Profile::open(dir.path()),
            Err(ProfileError::BadConfig { .. })
        ));
    }
}
