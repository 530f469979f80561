//! An append-only log file that rotates by size: `audit.log` → `audit.log.1` → ... →
//! `audit.log.N`, the oldest dropped.
//!
//! Blocking I/O: used from the audit writer's own thread, never from the runtime. A line
//! is never split across two files. Rotation renames, so a process that still has the old
//! file open (the `directory user ...` CLI while the server runs) keeps writing to it and
//! nothing is lost, only filed one generation older. [`Rotation`] (the `[audit]` table)
//! is declared in [`crate::config`].

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use crate::config::Rotation;

/// The open log file./// The open log file.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
}

impl RotatingFile {
    /// Opens `path` for appending (created 0600 if missing).
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
        })
    }

    /// Appends `bytes` (one or more whole lines), rotating first if they would not fit.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = bytes.len() as u64;
        if self.rotation.max_bytes > 0
            && self.size > 0
            && self.size.saturating_add(len) > self.rotation.max_bytes
        {
            self.rotate()?;
        }
        self.file.write_all(bytes)?;
        self.size += len;
        Ok(())
    }

    /// Flushes the file to disk.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// The file name of generation `n` (`audit.log.3`).
    fn generation(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_all()?;
        if self.rotation.keep == 0 {
            remove_if_exists(&self.path)?;
        } else {
            for n in (1..self.rotation.keep).rev() {
                rename_if_exists(&self.generation(n), &self.generation(n + 1))?;
            }
            std::fs::rename(&self.path, self.generation(1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotation = Rotation {
            max_bytes: 20,
            keep: 2,
        };
        let mut f = RotatingFile::open(&path, rotation).unwrap();
        for i in 0..8 {
            f.write(format!("line number {i}\n").as_bytes()).unwrap(); // 14 bytes each
        }
        f.sync().unwrap();
        // One line per file: the newest three lines survive, whole.
        assert_eq!(read(&path), "line number 7\n");
        assert_eq!(read(&dir.path().join("audit.log.1")), "line number 6\n");
        assert_eq!(read(&dir.path().join("audit.log.2")), "line number 5\n");
        assert!(!dir.path().join("audit.log.3").exists());

        // Reopening continues with the size on disk.
        drop(f);
        let mut f = RotatingFile::open(&path, rotation).unwrap();
        f.write(b"again\n").unwrap();
        assert_eq!(read(&path), "line number 7\nagain\n");
        f.write(b"and a rotation\n").unwrap();
        assert_eq!(read(&path), "and a rotation\n");
        assert_eq!(
            read(&dir.path().join("audit.log.1")),
            "line number 7\nagain\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn zero_means_never_rotate_or_keep_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut f = RotatingFile::open(
            &path,
            Rotation {
                max_bytes: 0,
                keep: 3,
            },
        )
        .unwrap();
        for _ in 0..100 {
            f.write(b"0123456789\n").unwrap();
        }
        assert_eq!(read(&path).len(), 1100);

        let path = dir.path().join("b.log");
        let mut f = RotatingFile::open(
            &path,
            Rotation {
                max_bytes: 15,
                keep: 0,
            },
        )
        .unwrap();
        f.write(b"0123456789\n").unwrap();
        f.write(b"abcdefghij\n").unwrap();
        assert_eq!(read(&path), "abcdefghij\n");
        assert!(!dir.path().join("b.log.1").exists());
    }
}
