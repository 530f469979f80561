//! The directory's data directory and its long-term identity key file.
//!
//! The key is an ed25519 seed of exactly 32 bytes in `<data>/directory.key`, created on
//! first start with mode 0600 inside a 0700 data directory. Peers pin the fingerprint of
//! its public half, so the same file must give the same fingerprint on every start: the
//! TLS certificate is rebuilt from it each time (see [`crate::tls`]), never stored.
//!
//! Permissions are checked at every start, not only at creation ([`ensure_data_dir`]):
//! a data directory others may enter is set back to 0700, and every file in it (key,
//! database, audit log, configuration) others may read or write back to 0600, each with
//! a warning; what cannot be fixed stops the start (a file owned by another account, a
//! configuration managed by root say, is only warned about).
//!
//! One server per data directory: [`lock_data_dir`] takes an exclusive lock on
//! `<data>/directory.lock` for the server's life, so a second `directory serve` on the
//! same directory stops before touching anything (its database, its control socket).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use proto::Identity;
use zeroize::Zeroizing;

pub use crate::config::KEY_FILE;

/// File name of the lock held by the server serving the data directory.
pub const LOCK_FILE: &str = "directory.lock";

/// Creates the data directory (mode 0700) if it does not exist yet; otherwise makes
/// sure others can neither enter it nor read or write a file in it (fixing the modes,
/// with a warning).
pub fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return secure_data_dir(dir);
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))
}

/// Sets the data directory back to 0700 and each regular file in it to 0600 where
/// others had any access, with a warning for each.
fn secure_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    restrict(dir, 0o700)?;
    let owner = fs::metadata(dir)?.uid();
    let entries = fs::read_dir(dir)
        .with_context(|| format!("cannot read data directory {}", dir.display()))?;
    for entry in entries {
        let entry =
            entry.with_context(|| format!("cannot read data directory {}", dir.display()))?;
        let meta = entry.metadata()?;
        // Not following links: a link's target is not ours to change.
        if !meta.is_file() {
            continue;
        }
        if meta.uid() != owner {
            // E.g. a configuration file managed by root: not ours to change.
            if meta.mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %entry.path().display(),
                    "is open to other users (mode {:o}) and owned by another user; \
                     left as it is",
                    meta.mode() & 0o777
                );
            }
            continue;
        }
        restrict(&entry.path(), 0o600)?;
    }
    Ok(())
}

/// Takes away every permission of group and others from `path` (leaving `private`, the
/// mode it should have, as the owner's part), warning when there were any.
fn restrict(path: &Path, private: u32) -> anyhow::Result<()> {
    let mode = fs::symlink_metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let fixed = (mode & 0o700) | (private & 0o700);
    fs::set_permissions(path, fs::Permissions::from_mode(fixed)).with_context(|| {
        format!(
            "{} is open to other users (mode {mode:o}) and cannot be fixed; chmod {:o} it",
            path.display(),
            private
        )
    })?;
    tracing::warn!(
        path = %path.display(),
        "was open to other users (mode {mode:o}); set to {fixed:o}"
    );
    Ok(())
}

/// The exclusive lock on a data directory, held for a server's life (released when
/// dropped, or by the kernel when the process ends, however it ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: fs::File,
}

/// Locks `dir` for one server; fails when another process serves it already.
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<DataDirLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = Read::by_ref(&mut file).take(32).read_to_string(&mut holder);
            let holder = match holder.trim().parse::<u32>() {
                Ok(pid) => format!(" (process {pid})"),
                Err(_) => String::new(),
            };
            bail!(
                "the data directory {} is already served by another directory{holder}; \
                 stop it first, or give this one another --data",
                dir.display()
            );
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    // Who holds it, for the message above; only informative.
    let _ = file.set_len(0);
    let _ = file.write_all(std::process::id().to_string().as_bytes());
    Ok(DataDirLock { _file: file })
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
    fn exposed_data_directories_are_made_private_again() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        ensure_data_dir(&data).unwrap();
        let key = data.join(KEY_FILE);
        load_or_create(&key).unwrap();
        let db = data.join("directory.db");
        fs::write(&db, b"accounts").unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&db, fs::Permissions::from_mode(0o664)).unwrap();
        ensure_data_dir(&data).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&db), 0o600);
    }

    #[test]
    fn a_data_directory_is_locked_by_one_server_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_data_dir(dir.path()).unwrap();
        let err = lock_data_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("already served"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        lock_data_dir(dir.path()).expect("free again");
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
