//! The profile's secrets at rest: a key derived from the user's password.
//!
//! `<profile>/vault` (plain text) holds a random vault id, the argon2id salt and cost,
//! and a check value sealed with the derived key, so a wrong password is a clear
//! [`VaultError::WrongPassword`] and never garbage. The key itself is never written
//! anywhere: it is derived when the user gives the password (login, `peer history`) and
//! kept in memory (zeroed on drop) for that run only.
//!
//! Everything sealed with it uses ChaCha20-Poly1305 with a random 96-bit nonce and, as
//! associated data, the vault id and what the bytes are for (the identity key file, the
//! prekeys, one contact's history), so a sealed file moved to another purpose or another
//! profile does not open. Sealed files start with a 5-byte magic and the vault id:
//!
//! ```text
//! whole file (identity.key, prekeys):  "NVLT1" | vault id (16) | nonce (12) | ciphertext
//! record (history, see crate::history):                          nonce (12) | ciphertext
//! ```
//!
//! Changing the password ([`crate::profile::change_password`]) re-encrypts every sealed
//! file under a new vault (new id, salt and key): each file is first written beside the
//! old one as `NAME.rekey`, then the new `vault` file replaces the old one (the commit
//! point), then the `.rekey` files replace the originals. [`Vault::unlock`] finishes or
//! discards a change that was interrupted, going by the vault id in each `.rekey` file.
//!
//! argon2 is slow on purpose; callers on an async runtime run [`Vault::create`] and
//! [`Vault::unlock`] in `spawn_blocking`.
//!
//! **Cost.** The vault is what a thief of the laptop attacks, offline and without any
//! lockout, so it costs more than the directory's online login (19 MiB, 2 passes): new
//! vaults use [`VaultCost::default`], argon2id with 128 MiB, 3 passes, 1 lane, which
//! takes about 0.55 s to unlock on the machine this was measured on (release build,
//! a shared 2-core VM; 19 MiB/2 passes took 48 ms there, 64 MiB/3 passes 0.25 s). The cost
//! is recorded in the vault file, so vaults made with an older, cheaper cost still open;
//! `peer passwd` re-seals them at the current cost (a login says so). The password
//! itself is checked for strength when it is chosen ([`crate::passwd::check_strength`]).
//! `NATTER_VAULT_COST=MEMORY_KIB,PASSES,LANES` overrides the cost of new vaults (for
//! tests and very slow machines; see [`VaultCost::from_env`]).

use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use proto::identity::transcript;
use zeroize::Zeroizing;

use crate::private_file::write_private;

/// The vault file inside the profile.
pub const VAULT_FILE: &str = "vault";
/// Suffix of a file re-encrypted for a new password, not yet in place.
pub const REKEY_SUFFIX: &str = ".rekey";
const HEADER: &str = "natter-vault-v1";
/// Magic at the start of a sealed file.
pub const MAGIC: &[u8; 5] = b"NVLT1";
/// Bytes before the first nonce of a sealed file: magic and vault id.
pub const FILE_HEADER_LEN: usize = MAGIC.len() + 16;
const NONCE_LEN: usize = 12;

/// argon2id cost of the key derivation, recorded in the vault file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaultCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for VaultCost {
    /// m = 128 MiB, t = 3, p = 1: about half a second (see the module docs).
    fn default() -> Self {
        Self {
            memory_kib: 128 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl VaultCost {
    /// The cost of vaults made before issue 14 (the online login's: 19 MiB, 2 passes).
    /// Such vaults still open; `peer passwd` re-seals them at [`VaultCost::default`].
    pub const LEGACY: VaultCost = VaultCost {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    /// The smallest cost argon2 allows. For tests only: it protects nothing.
    pub fn insecure_fast() -> Self {
        Self {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    /// The cost for new vaults: `NATTER_VAULT_COST=MEMORY_KIB,PASSES,LANES` when set and
    /// well formed (a malformed value is ignored, with a warning), else the default.
    pub fn from_env() -> Self {
        match std::env::var("NATTER_VAULT_COST") {
            Ok(text) => Self::parse(&text).unwrap_or_else(|| {
                tracing::warn!(
                    "NATTER_VAULT_COST={text:?} is not MEMORY_KIB,PASSES,LANES; ignored"
                );
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(',').map(|p| p.trim().parse::<u32>().ok());
        let cost = Self {
            memory_kib: parts.next()??,
            iterations: parts.next()??,
            parallelism: parts.next()??,
        };
        let valid = parts.next().is_none()
            && Params::new(cost.memory_kib, cost.iterations, cost.parallelism, Some(32)).is_ok();
        valid.then_some(cost)
    }

    /// Whether this cost is below `other` in memory or passes (a vault worth re-sealing).
    pub fn weaker_than(&self, other: &VaultCost) -> bool {
        self.memory_kib < other.memory_kib || self.iterations < other.iterations
    }
}

/// The vault could not be opened, or something sealed with it did not open.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("wrong password: it does not open this profile's keys and history")]
    WrongPassword,
    #[error("{path} is damaged or was not sealed by this profile's password")]
    Damaged { path: PathBuf },
    #[error("{path} is not a Natter vault file")]
    BadVaultFile { path: PathBuf },
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
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// An unlocked vault: the derived key, in memory only.
pub struct Vault {
    id: [u8; 16],
    salt: [u8; 16],
    cost: VaultCost,
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("id", &proto::hex::encode(&self.id))
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Whether the profile in `dir` has a vault.
    pub fn exists(dir: &Path) -> bool {
        dir.join(VAULT_FILE).exists()
    }

    /// Makes a new vault for `password` (in memory; [`Vault::save`] writes its file).
    pub fn create(password: &str, cost: VaultCost) -> Result<Self, VaultError> {
        Self::derive(rand::random(), rand::random(), cost, password)
    }

    fn derive(
        id: [u8; 16],
        salt: [u8; 16],
        cost: VaultCost,
        password: &str,
    ) -> Result<Self, VaultError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, Some(32))
            .map_err(|e| VaultError::Kdf(e.to_string()))?;
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password.as_bytes(), &salt, &mut *key)
            .map_err(|e| VaultError::Kdf(e.to_string()))?;
        Ok(Self {
            id,
            salt,
            cost,
            cipher: ChaCha20Poly1305::new(&Key::from(*key)),
        })
    }

    /// Writes the vault file into `dir` (atomically, mode 0600), as `name`.
    fn write_as(&self, dir: &Path, name: &str) -> Result<(), VaultError> {
        let check = self.seal("vault-check", &self.id);
        let text = format!(
            "{HEADER}\nid={}\nsalt={}\nm={}\nt={}\np={}\ncheck={}\n",
            proto::hex::encode(&self.id),
            proto::hex::encode(&self.salt),
            self.cost.memory_kib,
            self.cost.iterations,
            self.cost.parallelism,
            proto::hex::encode(&check)
        );
        let path = dir.join(name);
        write_private(&path, text.as_bytes()).map_err(|source| VaultError::Write { path, source })
    }

    /// Writes the vault file into the profile `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), VaultError> {
        self.write_as(dir, VAULT_FILE)
    }

    /// Derives the key from `password` and checks it against the vault in `dir`; then
    /// finishes (or discards) an interrupted password change.
    pub fn unlock(dir: &Path, password: &str) -> Result<Self, VaultError> {
        let path = dir.join(VAULT_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| VaultError::Read {
            path: path.clone(),
            source,
        })?;
        let bad = || VaultError::BadVaultFile { path: path.clone() };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad());
        }
        let mut field = |name: &str| -> Result<String, VaultError> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(bad)
        };
        let id: [u8; 16] = proto::hex::decode(&field("id")?)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(bad)?;
        let salt: [u8; 16] = proto::hex::decode(&field("salt")?)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(bad)?;
        let num = |s: String| s.parse::<u32>().map_err(|_| bad());
        let cost = VaultCost {
            memory_kib: num(field("m")?)?,
            iterations: num(field("t")?)?,
            parallelism: num(field("p")?)?,
        };
        let check = proto::hex::decode(&field("check")?).ok_or_else(bad)?;
        let vault = Self::derive(id, salt, cost, password)?;
        match vault.open("vault-check", &check) {
            Some(inner) if inner.as_slice() == id => {}
            _ => return Err(VaultError::WrongPassword),
        }
        vault.finish_rekey(dir);
        Ok(vault)
    }

    /// The vault id (first bytes of every sealed file after the magic).
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// The argon2id cost its key was derived with.
    pub fn cost(&self) -> VaultCost {
        self.cost
    }

    fn aad(&self, purpose: &str) -> Vec<u8> {
        transcript("natter-vault-v1", &[purpose.as_bytes(), &self.id])
    }

    /// Seals `plaintext` for `purpose`: nonce and ciphertext.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &self.aad(purpose),
                },
            )
            .expect("ChaCha20-Poly1305 seals any plaintext that fits in memory");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens what [`Vault::seal`] sealed for `purpose`. `None` if it does not open.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: &self.aad(purpose),
                },
            )
            .ok()
            .map(Zeroizing::new)
    }

    /// The header every sealed file of this vault starts with.
    pub fn file_header(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.id);
        out
    }

    /// Writes `plaintext` sealed for `purpose` to `path` (atomically, mode 0600).
    pub fn write_file(
        &self,
        path: &Path,
        purpose: &str,
        plaintext: &[u8],
    ) -> Result<(), VaultError> {
        let mut bytes = self.file_header();
        bytes.extend_from_slice(&self.seal(purpose, plaintext));
        write_private(path, &bytes).map_err(|source| VaultError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads and opens a file written by [`Vault::write_file`]. `Ok(None)`: no such file.
    pub fn read_file(
        &self,
        path: &Path,
        purpose: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(VaultError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let damaged = || VaultError::Damaged {
            path: path.to_path_buf(),
        };
        let body = bytes
            .strip_prefix(self.file_header().as_slice())
            .ok_or_else(damaged)?;
        self.open(purpose, body).map(Some).ok_or_else(damaged)
    }

    /// Writes this vault's file as the new `vault` of `dir`: the commit point of a
    /// password change (see the module docs).
    pub(crate) fn commit(&self, dir: &Path) -> Result<(), VaultError> {
        self.write_as(dir, VAULT_FILE)?;
        self.finish_rekey(dir);
        Ok(())
    }

    /// Puts `.rekey` files of this vault in place and deletes those of any other.
    fn finish_rekey(&self, dir: &Path) {
        for path in rekey_files(dir) {
            let ours = std::fs::File::open(&path)
                .and_then(|mut f| {
                    let mut head = [0u8; FILE_HEADER_LEN];
                    std::io::Read::read_exact(&mut f, &mut head)?;
                    Ok(head)
                })
                .is_ok_and(|head| head[..] == self.file_header()[..]);
            let target = path.with_extension("");
            let done = if ours {
                std::fs::rename(&path, &target)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = done {
                tracing::warn!("cannot finish a password change at {}: {e}", path.display());
            }
        }
    }
}

/// Every `.rekey` file in the profile `dir` and its `history/`.
pub(crate) fn rekey_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in [dir.to_path_buf(), dir.join(crate::history::HISTORY_DIR)] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.to_string_lossy().ends_with(REKEY_SUFFIX) {
                out.push(p);
            }
        }
    }
    out
}

/// The path a file is re-encrypted to during a password change.
pub(crate) fn rekey_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(REKEY_SUFFIX);
    PathBuf::from(s)
}

#[cfg(test)]
pub(crate) fn test_cost() -> VaultCost {
    VaultCost::insecure_fast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_password_is_an_error_and_files_do_not_move() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::create("right password", test_cost()).unwrap();
        vault.save(dir.path()).unwrap();
        let file = dir.path().join("secret");
        vault.write_file(&file, "a", b"the marker text").unwrap();
        let raw = std::fs::read(&file).unwrap();
        assert!(!raw.windows(6).any(|w| w == b"marker"));

        let again = Vault::unlock(dir.path(), "right password").unwrap();
        assert_eq!(
            again.read_file(&file, "a").unwrap().unwrap().as_slice(),
            b"the marker text"
        );
        assert!(matches!(
            again.read_file(&file, "b"),
            Err(VaultError::Damaged { .. })
        ));
        assert!(matches!(
            Vault::unlock(dir.path(), "wrong password"),
            Err(VaultError::WrongPassword)
        ));
        assert!(
            again
                .read_file(&dir.path().join("none"), "a")
                .unwrap()
                .is_none()
        );
    }

    /// The vault file's hex is read as strictly as every other (its own decoder took a
    /// leading `+`, which the fuzz-found fix had forbidden elsewhere).
    #[test]
    fn a_vault_file_with_a_signed_hex_field_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::create("right password", test_cost()).unwrap();
        vault.save(dir.path()).unwrap();
        let path = dir.path().join(VAULT_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let id = text.lines().find_map(|l| l.strip_prefix("id=")).unwrap();
        let tampered = text.replace(&format!("id={id}"), &format!("id=+{}", &id[1..]));
        std::fs::write(&path, tampered).unwrap();
        assert!(matches!(
            Vault::unlock(dir.path(), "right password"),
            Err(VaultError::BadVaultFile { .. })
        ));
    }

    #[test]
    fn the_cost_is_recorded_so_older_cheaper_vaults_still_open() {
        let dir = tempfile::tempdir().unwrap();
        // A vault as made before the cost went up.
        let old = Vault::create("right password", VaultCost::LEGACY).unwrap();
        old.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(VAULT_FILE)).unwrap();
        assert!(text.contains("\nm=19456\nt=2\np=1\n"), "{text}");
        let again = Vault::unlock(dir.path(), "right password").unwrap();
        assert_eq!(again.cost(), VaultCost::LEGACY);
        assert!(again.cost().weaker_than(&VaultCost::default()));
        assert!(!VaultCost::default().weaker_than(&VaultCost::LEGACY));
    }

    #[test]
    fn new_vaults_cost_more_than_an_online_login() {
        let d = VaultCost::default();
        assert!(d.memory_kib >= 64 * 1024 && d.iterations >= 3, "{d:?}");
        assert_eq!(
            VaultCost::parse("1024,2,1"),
            Some(VaultCost {
                memory_kib: 1024,
                iterations: 2,
                parallelism: 1,
            })
        );
        for bad in ["", "1024", "1024,2", "1024,2,1,1", "x,2,1", "1,1,1"] {
            assert_eq!(VaultCost::parse(bad), None, "{bad:?}");
        }
    }
}
