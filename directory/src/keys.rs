//! The directory's data directory and its long-term identity key file.
//!
//! The key is an ed25519 seed of exactly 32 bytes in `<data>/directory.key`, created on
//! first start with mode 0600 inside a 0700 data directory. Peers pin the fingerprint of
//! its public half, so the same file must give the same fingerprint on every start: the
//! TLS certificate is rebuilt from it each time (see [`crate::tls`]), never stored.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use proto::Identity;
use zeroize::Zeroizing;

/// File name of the identity key inside the data directory.
pub const KEY_FILE: &str = "directory.key";

/// Creates the data directory (mode 0700) if it does not exist yet.
pub fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))
}

/// Loads the identity key from `path`, or creates a fresh one there (mode 0600) when the
/// file does not exist. A file of the wrong size is an error, never silently replaced:
/// replacing it would change the fingerprint every peer has pinned.
pub fn load_or_create(path: &Path) -> anyhow::Result<Identity> {
    match OpenOptions::new().read(true).open(path) {
        Ok(mut file) => {
            let mode = file.metadata()?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "identity key file is readable by others (mode {:o}); chmod 600 it",
                    mode & 0o777
                );
            }
            let mut bytes = Zeroizing::new(Vec::with_capacity(33));
            Read::by_ref(&mut file)
                .take(33)
                .read_to_end(&mut bytes)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let seed: Zeroizing<[u8; 32]> = match bytes.as_slice().try_into() {
                Ok(seed) => Zeroizing::new(seed),
                Err(_) => bail!(
                    "identity key file {} is malformed (expected 32 bytes)",
                    path.display()
                ),
            };
            Ok(Identity::from_secret_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(e).with_context(|| format!("cannot open {}", path.display())),
    }
}

fn create(path: &Path) -> anyhow::Result<Identity> {
    let identity = Identity::generate();
    let tmp = path.with_extension("key.tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(identity.secret_bytes().as_slice())?;
    file.sync_all()?;
    drop(file);
    // Rename into place so a crash never leaves a half-written key behind.
    fs::rename(&tmp, path).with_context(|| format!("cannot create {}", path.display()))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    tracing::info!(path = %path.display(), "created a new directory identity key");
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        ensure_data_dir(&data).unwrap();
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let path = data.join(KEY_FILE);
        let first = load_or_create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), 32);
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.public(), again.public());
    }

    #[test]
    fn malformed_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::write(&path, b"short").unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
    }
}
