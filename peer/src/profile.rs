//! The user's profile: one directory holding everything that is theirs.
//!
//! ```text
//! <profile>/vault               salt and cost of the password-derived key (crate::vault)
//! <profile>/identity.key        ed25519 identity key, sealed with that key (mode 0600)
//! <profile>/identity.pub        its public half, in clear (`peer fingerprint` offline)
//! <profile>/prekeys             x25519 secrets for sealed mail, sealed (crate::mailbox)
//! <profile>/history/NAME.log    conversation history, sealed (crate::history)
//! <profile>/config.toml         settings: every flag but --profile (`peer config print`)
//! <profile>/known_peers         identity keys of contacts, pinned on first contact
//! <profile>/known_directories   directory keys, pinned on first contact
//! ```
//!
//! The default location is the platform config directory's `natter/profile`
//! (`~/.config/natter/profile` on Linux); `--profile DIR` overrides it. The directory is
//! created with mode 0700. At every open ([`Profile::open`]) the permissions are checked
//! again: the profile directory and `history/`, when others may enter them, are set back
//! to 0700 (with a warning when others could write to them; readable, they showed only
//! names); a secret file (`identity.key`,
//! `vault`, `prekeys`, a history file) that others may read or write is refused with
//! [`ProfileError::ExposedKey`], since it may have been copied already: the user must
//! look and `chmod 600` it.
//!
//! [`Profile::open`] needs no password: it gives the settings, the pins and the public
//! key, as a [`Profile<Locked>`](Locked), which has no way to hand out the identity key.
//! The secrets need the password: [`Profile::open_secrets`], the one path login and
//! registration take, turns it into a [`Profile`] ([`Unlocked`]): [`Profile::unlock`]
//! derives the vault key and opens the identity key and the prekeys. A profile from
//! before the vault (a plaintext `identity.key`) is sealed by [`Profile::seal`] at the
//! first login whose password the directory accepted; a brand-new profile gets its
//! vault before its first login ([`Profile::create_vault`]), and loses it again if that
//! login is refused ([`Profile::forget_new_vault`]), so a mistyped first password never
//! locks the profile.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proto::sealed::StaticSecret;
use proto::{Identity, PublicKey};
use serde::{Deserialize, Serialize};

use crate::pins::{DirectoryAddr, PinError, Pins};
use crate::private_file::write_private;
use crate::vault::{Vault, VaultCost, VaultError};

const IDENTITY_FILE: &str = "identity.key";
const PUBLIC_FILE: &str = "identity.pub";
const PREKEYS_FILE: &str = "prekeys";
const CONFIG_FILE: &str = "config.toml";
const IDENTITY_HEADER: &str = "natter-identity-v1";
const PUBLIC_HEADER: &str = "natter-identity-public-v1";
/// A new prekey is made at login when the newest is older than this.
pub const PREKEY_ROTATION_SECS: i64 = 7 * 24 * 60 * 60;
/// Prekey secrets kept (mail sealed to an older one cannot be opened any more; mail
/// expires at the directory after 30 days by default, within this many rotations).
pub const PREKEYS_KEPT: usize = 6;

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
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("{path} holds no identity key yet: log in (or register) once to create it")]
    NoIdentity { path: PathBuf },
    #[error(
        "{path} holds a sealed identity key but no vault file: restore the file `vault` \
         from a backup (without it the key cannot be opened)"
    )]
    NoVault { path: PathBuf },
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
    /// URL of the joke API `/joke` asks (JSON `{setup, punchline}`); default: the public
    /// official-joke-api. Bundled jokes are used when it cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joke_api: Option<String>,
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

/// A profile opened without the password ([`Profile::open`]): settings, pins and the
/// public key. Its secrets are out of reach until [`Profile::unlock`] or
/// [`Profile::create_vault`] turns it into an [`Unlocked`] one.
pub struct Locked {
    key: LockedKey,
    /// The public key from `identity.pub`.
    public: Option<PublicKey>,
}

/// What a locked profile holds of its identity key.
enum LockedKey {
    /// Sealed in the vault (or not written yet under an existing vault: the unlock makes
    /// it): the password opens it.
    Sealed,
    /// Made just now for a profile that never logged in, in memory only: the first
    /// login seals it ([`Profile::create_vault`]), `peer fingerprint` keeps it unsealed
    /// ([`Profile::keep_unsealed`]).
    New(Box<Identity>),
    /// In a plaintext file written by a version before the vault: sealed once the
    /// directory has accepted the password.
    Legacy(Box<Identity>),
}

/// An unlocked profile: the identity key, and (unless it is a plaintext key from an
/// older version, not sealed yet) the vault and the prekeys.
pub struct Unlocked {
    identity: Arc<Identity>,
    /// The password-derived key; `None` for a plaintext key not sealed yet.
    vault: Option<Arc<Vault>>,
    /// Prekey secrets for sealed mail, newest first.
    prekeys: Vec<(i64, StaticSecret)>,
}

/// How [`Profile::open_secrets`] opened a locked profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// An existing vault was unlocked.
    Unlocked,
    /// A new profile got a vault just now: undo it ([`Profile::forget_new_vault`]) if
    /// the directory refuses the password.
    Created,
    /// An old profile with a plaintext key: seal it ([`Profile::seal`]) once the
    /// directory has accepted the password.
    Plaintext,
}

/// An opened profile, [`Locked`] or [`Unlocked`] (the default: what a logged-in peer
/// has). Only an unlocked one can hand out the identity key.
pub struct Profile<S = Unlocked> {
    dir: PathBuf,
    state: S,
    /// Settings from `config.toml`.
    pub settings: Settings,
    /// Contacts' pinned identity keys.
    pub peers: Pins,
    /// Directories' pinned keys, by address.
    pub directories: Pins<DirectoryAddr>,
}

impl<S> Profile<S> {
    /// The profile's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Whether the profile has a vault (its secrets are sealed with a password).
    pub fn has_vault(&self) -> bool {
        Vault::exists(&self.dir)
    }

    /// The same profile in another state.
    fn into_state<T>(self, state: T) -> Profile<T> {
        Profile {
            dir: self.dir,
            state,
            settings: self.settings,
            peers: self.peers,
            directories: self.directories,
        }
    }
}

impl Profile<Locked> {
    /// The default profile location, if the platform has a config directory.
    pub fn default_dir() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "natter").map(|d| d.config_dir().join("profile"))
    }

    /// Opens the profile in `dir` without the password (creating the directory on first
    /// use): settings, pins and the public key. A profile with no identity key yet gets
    /// a new one in memory, written by [`Profile::create_vault`].
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ProfileError> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        check_permissions(&dir)?;
        let key = match load_plain_identity(&dir.join(IDENTITY_FILE))? {
            Stored::Plain(identity) => LockedKey::Legacy(identity),
            Stored::Sealed => LockedKey::Sealed,
            Stored::Missing if Vault::exists(&dir) => LockedKey::Sealed,
            Stored::Missing => LockedKey::New(Box::new(Identity::generate())),
        };
        let public = read_public(&dir.join(PUBLIC_FILE));
        let settings = Settings::load(&dir)?;
        Ok(Self {
            peers: Pins::load(dir.join("known_peers"))?,
            directories: Pins::<DirectoryAddr>::load(dir.join("known_directories"))?,
            state: Locked { key, public },
            settings,
            dir,
        })
    }

    /// Whether the profile has no identity key on disk yet (never logged in).
    pub fn is_new(&self) -> bool {
        matches!(self.state.key, LockedKey::New(_))
    }

    /// The user's public identity key, if known (it is, once the profile has been used).
    pub fn known_public_key(&self) -> Option<PublicKey> {
        match &self.state.key {
            LockedKey::New(identity) | LockedKey::Legacy(identity) => Some(identity.public()),
            LockedKey::Sealed => self.state.public,
        }
    }

    /// The user's public identity key.
    ///
    /// # Panics
    /// If it is not known: see [`Profile::known_public_key`].
    pub fn public_key(&self) -> PublicKey {
        self.known_public_key()
            .expect("the profile has an identity key (identity.pub)")
    }

    /// The one way to a profile's secrets with the password, for a login or a
    /// registration: unlocks an existing vault, makes one for a new profile, or opens a
    /// plaintext key from an older version (to be sealed once the directory accepts the
    /// password). What it did says what to do when the directory answers. Slow
    /// (argon2): call it off the async runtime.
    pub fn open_secrets(
        mut self,
        password: &str,
        cost: VaultCost,
    ) -> Result<(Profile, Secrets), ProfileError> {
        if self.has_vault() {
            return Ok((self.unlock(password)?, Secrets::Unlocked));
        }
        match std::mem::replace(&mut self.state.key, LockedKey::Sealed) {
            LockedKey::New(identity) => {
                self.state.key = LockedKey::New(identity);
                Ok((self.create_vault(password, cost)?, Secrets::Created))
            }
            LockedKey::Legacy(identity) => Ok((
                self.into_state(Unlocked {
                    identity: Arc::new(*identity),
                    vault: None,
                    prekeys: Vec::new(),
                }),
                Secrets::Plaintext,
            )),
            LockedKey::Sealed => Err(ProfileError::NoVault { path: self.dir }),
        }
    }

    /// Derives the key from `password` and opens the identity key and the prekeys
    /// (making the first prekey, or a new one when the newest is old). Slow (argon2):
    /// call it off the async runtime. A wrong password is [`VaultError::WrongPassword`].
    pub fn unlock(self, password: &str) -> Result<Profile, ProfileError> {
        let vault = Vault::unlock(&self.dir, password)?;
        let path = self.dir.join(IDENTITY_FILE);
        let identity = match load_plain_identity(&path)? {
            // Migrated before, or interrupted mid-migration: seal it now.
            Stored::Plain(identity) => {
                seal_identity(&self.dir, &vault, &identity)?;
                *identity
            }
            Stored::Sealed => {
                let text = vault
                    .read_file(&path, IDENTITY_FILE)?
                    .ok_or_else(|| ProfileError::BadIdentity { path: path.clone() })?;
                let text = std::str::from_utf8(&text)
                    .map_err(|_| ProfileError::BadIdentity { path: path.clone() })?;
                parse_identity(text)
                    .ok_or_else(|| ProfileError::BadIdentity { path: path.clone() })?
            }
            // A vault was made but the key never written (interrupted first login).
            Stored::Missing => {
                let identity = Identity::generate();
                seal_identity(&self.dir, &vault, &identity)?;
                identity
            }
        };
        if self.state.public != Some(identity.public()) {
            write_public(&self.dir, &identity.public())?;
        }
        let prekeys = load_prekeys(&self.dir, &vault)?;
        Ok(self.into_state(Unlocked {
            identity: Arc::new(identity),
            vault: Some(Arc::new(vault)),
            prekeys,
        }))
    }

    /// Seals a new profile's identity key (or a plaintext one from an older version)
    /// and the prekeys with a new vault for `password`. Slow (argon2).
    pub fn create_vault(
        mut self,
        password: &str,
        cost: VaultCost,
    ) -> Result<Profile, ProfileError> {
        let identity = match std::mem::replace(&mut self.state.key, LockedKey::Sealed) {
            LockedKey::New(identity) | LockedKey::Legacy(identity) => Arc::new(*identity),
            LockedKey::Sealed => return Err(ProfileError::NoIdentity { path: self.dir }),
        };
        let mut profile = self.into_state(Unlocked {
            identity,
            vault: None,
            prekeys: Vec::new(),
        });
        profile.seal(password, cost)?;
        Ok(profile)
    }

    /// Writes a new profile's identity key without a password (plaintext, mode 0600, as
    /// versions before the vault did), for `peer fingerprint` on a profile that has
    /// never logged in: the key must stay the same, and no password is asked there. The
    /// first login seals it ([`Profile::create_vault`]).
    pub fn keep_unsealed(&mut self) -> Result<(), ProfileError> {
        let LockedKey::New(identity) = &self.state.key else {
            return Ok(());
        };
        let text = identity_text(identity);
        let path = self.dir.join(IDENTITY_FILE);
        write_private(&path, text.as_bytes())
            .map_err(|source| ProfileError::Write { path, source })?;
        write_public(&self.dir, &identity.public())?;
        let key = std::mem::replace(&mut self.state.key, LockedKey::Sealed);
        if let LockedKey::New(identity) = key {
            self.state.key = LockedKey::Legacy(identity);
        }
        Ok(())
    }
}

impl Profile {
    /// Seals the identity key (and the prekeys) with a new vault for `password`: for a
    /// new profile, or one whose key is still in a plaintext file from an older version
    /// (migrated here, after the directory accepted the password). Slow (argon2).
    pub fn seal(&mut self, password: &str, cost: VaultCost) -> Result<(), ProfileError> {
        let identity = self.state.identity.clone();
        let vault = Vault::create(password, cost)?;
        // The vault file first: a crash after it leaves a plaintext (or no) key file,
        // which the next unlock seals (or makes).
        vault.save(&self.dir)?;
        write_public(&self.dir, &identity.public())?;
        seal_identity(&self.dir, &vault, &identity)?;
        self.state.prekeys = load_prekeys(&self.dir, &vault)?;
        self.state.vault = Some(Arc::new(vault));
        Ok(())
    }

    /// Undoes [`Profile::create_vault`] for a profile whose first login was refused (the
    /// password was wrong, so the vault must not keep it): the next attempt starts anew.
    pub fn forget_new_vault(self) {
        for f in [
            crate::vault::VAULT_FILE,
            IDENTITY_FILE,
            PUBLIC_FILE,
            PREKEYS_FILE,
        ] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
    }

    /// The prekey to publish: the newest, with its creation time (none for a plaintext
    /// key not sealed yet).
    pub fn current_prekey(&self) -> Option<(i64, &StaticSecret)> {
        self.state.prekeys.first().map(|(at, k)| (*at, k))
    }

    /// The prekey secret whose public key is `public`, if we still have it.
    pub fn prekey_secret(&self, public: &[u8; 32]) -> Option<&StaticSecret> {
        self.state
            .prekeys
            .iter()
            .map(|(_, k)| k)
            .find(|k| proto::sealed::prekey_public(k) == *public)
    }

    /// Every prekey secret kept, newest first.
    pub fn prekeys(&self) -> Vec<StaticSecret> {
        self.state.prekeys.iter().map(|(_, k)| k.clone()).collect()
    }

    /// The password-derived key (none for a plaintext key not sealed yet).
    pub fn vault(&self) -> Option<&Arc<Vault>> {
        self.state.vault.as_ref()
    }

    /// The user's identity key.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.state.identity
    }

    /// The user's public identity key.
    pub fn public_key(&self) -> PublicKey {
        self.state.identity.public()
    }
}

/// The identity key file's plaintext (sealed by the vault, or kept as is).
fn identity_text(identity: &Identity) -> zeroize::Zeroizing<String> {
    let hex = zeroize::Zeroizing::new(proto::hex::encode(identity.secret_bytes().as_ref()));
    zeroize::Zeroizing::new(format!("{IDENTITY_HEADER}\n{}\n", hex.as_str()))
}

fn seal_identity(dir: &Path, vault: &Vault, identity: &Identity) -> Result<(), ProfileError> {
    let text = identity_text(identity);
    vault.write_file(&dir.join(IDENTITY_FILE), IDENTITY_FILE, text.as_bytes())?;
    Ok(())
}

/// Loads the prekey secrets; makes a new one when there is none or the newest is
/// older than [`PREKEY_ROTATION_SECS`], keeping the last [`PREKEYS_KEPT`].
fn load_prekeys(dir: &Path, vault: &Vault) -> Result<Vec<(i64, StaticSecret)>, ProfileError> {
    let path = dir.join(PREKEYS_FILE);
    let mut keys: Vec<(i64, StaticSecret)> = Vec::new();
    if let Some(text) = vault.read_file(&path, PREKEYS_FILE)? {
        let text = std::str::from_utf8(&text)
            .map_err(|_| ProfileError::BadIdentity { path: path.clone() })?;
        for line in text.lines() {
            let Some((at, hex)) = line.split_once(' ') else {
                continue;
            };
            let (Ok(at), Some(bytes)) = (at.parse::<i64>(), proto::hex::decode(hex)) else {
                continue;
            };
            let Ok(bytes) = <[u8; 32]>::try_from(bytes) else {
                continue;
            };
            keys.push((at, StaticSecret::from(bytes)));
        }
    }
    keys.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let now = crate::clock::now_ms() as i64 / 1000;
    if keys
        .first()
        .is_none_or(|(at, _)| now - at >= PREKEY_ROTATION_SECS)
    {
        keys.insert(0, (now, StaticSecret::random()));
        keys.truncate(PREKEYS_KEPT);
        let text = zeroize::Zeroizing::new(
            keys.iter()
                .map(|(at, k)| format!("{at} {}\n", proto::hex::encode(k.as_bytes())))
                .collect::<String>(),
        );
        vault.write_file(&path, PREKEYS_FILE, text.as_bytes())?;
    }
    Ok(keys)
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

/// What the identity key file holds.
enum Stored {
    /// A plaintext key (written by a version before the vault).
    Plain(Box<Identity>),
    /// A key sealed with the vault.
    Sealed,
    Missing,
}

fn load_plain_identity(path: &Path) -> Result<Stored, ProfileError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = zeroize::Zeroizing::new(bytes);
            check_private(path)?;
            if bytes.starts_with(crate::vault::MAGIC) {
                return Ok(Stored::Sealed);
            }
            std::str::from_utf8(&bytes)
                .ok()
                .and_then(parse_identity)
                .map(|i| Stored::Plain(Box::new(i)))
                .ok_or_else(|| ProfileError::BadIdentity {
                    path: path.to_path_buf(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::Missing),
        Err(source) => Err(ProfileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_public(path: &Path) -> Option<PublicKey> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != PUBLIC_HEADER {
        return None;
    }
    PublicKey::from_hex(lines.next()?).ok()
}

fn write_public(dir: &Path, key: &PublicKey) -> Result<(), ProfileError> {
    let path = dir.join(PUBLIC_FILE);
    write_private(
        &path,
        format!("{PUBLIC_HEADER}\n{}\n", key.to_hex()).as_bytes(),
    )
    .map_err(|source| ProfileError::Write { path, source })
}

/// Re-encrypts the profile in `dir` (identity key, prekeys, every history) from
/// password `old` to `new`, under a new salt. Interruptible at any point: see
/// [`crate::vault`]. Slow (argon2 twice): call it off the async runtime.
pub fn change_password(
    dir: &Path,
    old: &str,
    new: &str,
    cost: VaultCost,
) -> Result<(), ProfileError> {
    let old_vault = Vault::unlock(dir, old)?;
    let new_vault = Vault::create(new, cost)?;
    for name in [IDENTITY_FILE, PREKEYS_FILE] {
        let path = dir.join(name);
        if let Some(plain) = old_vault.read_file(&path, name)? {
            new_vault.write_file(&crate::vault::rekey_path(&path), name, &plain)?;
        }
    }
    for contact in crate::history::contacts(dir) {
        crate::history::rekey(dir, &contact, &old_vault, &new_vault).map_err(|e| {
            ProfileError::BadConfig {
                path: crate::history::path(dir, &contact),
                message: e.to_string(),
            }
        })?;
    }
    new_vault.commit(dir)?;
    Ok(())
}

fn parse_identity(text: &str) -> Option<Identity> {
    let mut lines = text.lines();
    if lines.next()? != IDENTITY_HEADER {
        return None;
    }
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    proto::hex::decode_into(lines.next()?.trim(), seed.as_mut_slice())?;
    Some(Identity::from_secret_bytes(&seed))
}

/// The checks of every open (see the module docs): directories fixed, secrets refused.
#[cfg(unix)]
fn check_permissions(dir: &Path) -> Result<(), ProfileError> {
    use std::os::unix::fs::PermissionsExt;
    let history = dir.join(crate::history::HISTORY_DIR);
    for folder in [dir, history.as_path()] {
        let Ok(meta) = std::fs::symlink_metadata(folder) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() && mode & 0o077 != 0 {
            std::fs::set_permissions(
                folder,
                std::fs::Permissions::from_mode(mode & 0o700 | 0o700),
            )
            .map_err(|source| ProfileError::Dir {
                path: folder.to_path_buf(),
                source,
            })?;
            // Readable only showed names (each secret is checked below); writable let
            // others swap files, which is worth a warning.
            if mode & 0o022 != 0 {
                tracing::warn!(
                    path = %folder.display(),
                    "profile directory was writable by other users (mode {mode:o}); set to \
                     700: check its files"
                );
            } else {
                tracing::debug!(path = %folder.display(), "profile directory mode {mode:o} set to 700");
            }
        }
    }
    let secrets = [IDENTITY_FILE, crate::vault::VAULT_FILE, PREKEYS_FILE]
        .into_iter()
        .map(|f| dir.join(f));
    let logs = std::fs::read_dir(&history)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    for path in secrets.chain(logs) {
        if path.is_file() {
            check_private(&path)?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_dir: &Path) -> Result<(), ProfileError> {
    Ok(())
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
    use crate::vault::test_cost;

    #[test]
    fn identity_is_sealed_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("profile");
        let fresh = Profile::open(&p).unwrap();
        assert!(fresh.is_new() && !fresh.has_vault());
        let first = fresh.public_key();
        let fresh = fresh.create_vault("pw-123456", test_cost()).unwrap();
        assert!(fresh.current_prekey().is_some());

        // Without the password: the public key only (a `Profile<Locked>` has no
        // `identity()` at all).
        let locked = Profile::open(&p).unwrap();
        assert_eq!(locked.public_key(), first);
        let raw = std::fs::read(p.join(IDENTITY_FILE)).unwrap();
        assert!(raw.starts_with(crate::vault::MAGIC));
        let again = Profile::open(&p).unwrap();
        assert!(matches!(
            again.unlock("wrong-pw"),
            Err(ProfileError::Vault(VaultError::WrongPassword))
        ));
        let again = Profile::open(&p).unwrap().unlock("pw-123456").unwrap();
        assert_eq!(again.identity().public(), first);
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

    #[cfg(unix)]
    #[test]
    fn permissions_are_checked_at_every_open() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("profile");
        let fresh = Profile::open(&p).unwrap();
        fresh.create_vault("pw-123456", test_cost()).unwrap();
        let history = p.join(crate::history::HISTORY_DIR);
        std::fs::create_dir(&history).unwrap();
        let log = history.join("ali.log");
        write_private(&log, b"sealed").unwrap();

        // Directories others may enter are closed again, with a warning.
        set(&p, 0o755);
        set(&history, 0o755);
        Profile::open(&p).unwrap();
        assert_eq!((mode(&p), mode(&history)), (0o700, 0o700));

        // A secret others may read is refused, each of them, until it is private.
        for secret in [
            p.join(crate::vault::VAULT_FILE),
            p.join(PREKEYS_FILE),
            log.clone(),
        ] {
            set(&secret, 0o640);
            match Profile::open(&p) {
                Err(ProfileError::ExposedKey { path, mode }) => {
                    assert_eq!((path, mode), (secret.clone(), 0o640))
                }
                Err(e) => panic!("{}: {e}", secret.display()),
                Ok(_) => panic!("{} open to the group was accepted", secret.display()),
            }
            set(&secret, 0o600);
        }
        let again = Profile::open(&p).unwrap();
        again.unlock("pw-123456").unwrap();
    }

    #[tokio::test]
    async fn plaintext_key_is_migrated_and_password_change_reencrypts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let old = Identity::generate();
        let hex = proto::hex::encode(old.secret_bytes().as_ref());
        write_private(
            &p.join(IDENTITY_FILE),
            format!("{IDENTITY_HEADER}\n{hex}\n").as_bytes(),
        )
        .unwrap();
        let profile = Profile::open(p).unwrap();
        assert!(!profile.is_new());
        assert_eq!(profile.known_public_key(), Some(old.public()));
        let profile = profile.create_vault("first-pw", test_cost()).unwrap();
        let raw = std::fs::read(p.join(IDENTITY_FILE)).unwrap();
        assert!(!raw.windows(hex.len()).any(|w| w == hex.as_bytes()));
        let prekey = profile.current_prekey().unwrap().1.to_bytes();
        let vault = profile.vault().unwrap().clone();
        let history = crate::history::HistoryWriter::start(p, vault);
        history.append("bianca", crate::history::Direction::Out, "kept", 1);
        history.flush().await;

        change_password(p, "first-pw", "second-pw", test_cost()).unwrap();
        assert!(crate::vault::rekey_files(p).is_empty());
        let profile = Profile::open(p).unwrap();
        assert!(matches!(
            profile.unlock("first-pw"),
            Err(ProfileError::Vault(VaultError::WrongPassword))
        ));
        let profile = Profile::open(p).unwrap().unlock("second-pw").unwrap();
        assert_eq!(profile.identity().public(), old.public());
        assert_eq!(profile.current_prekey().unwrap().1.to_bytes(), prekey);
        let vault = profile.vault().unwrap();
        let (entries, _) = crate::history::read(p, vault, "bianca").unwrap();
        assert_eq!(entries[0].text, "kept");
    }

    #[test]
    fn interrupted_password_change_is_finished_or_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let profile = Profile::open(p).unwrap();
        let profile = profile.create_vault("first-pw", test_cost()).unwrap();
        let key = profile.public_key();
        // Re-encrypted copies written, vault not replaced: the old password still opens
        // and the copies are discarded.
        let new_vault = Vault::create("second-pw", test_cost()).unwrap();
        let old_vault = Vault::unlock(p, "first-pw").unwrap();
        let rekey = || {
            for name in [IDENTITY_FILE, PREKEYS_FILE] {
                let path = p.join(name);
                let plain = old_vault.read_file(&path, name).unwrap().unwrap();
                new_vault
                    .write_file(&crate::vault::rekey_path(&path), name, &plain)
                    .unwrap();
            }
        };
        rekey();
        let again = Profile::open(p).unwrap().unlock("first-pw").unwrap();
        assert!(crate::vault::rekey_files(p).is_empty());
        assert_eq!(again.identity().public(), key);
        // Vault replaced but the copies not yet renamed: the new password finishes it.
        rekey();
        new_vault.save(p).unwrap();
        let again = Profile::open(p).unwrap().unlock("second-pw").unwrap();
        assert_eq!(again.identity().public(), key);
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
