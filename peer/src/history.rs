//! Conversation history at rest: one append-only encrypted file per contact.
//!
//! ```text
//! <profile>/history/<contact>.log:
//!   "NVLT1" | vault id (16)                         header (see crate::vault)
//!   len (u32 BE) | nonce (12) | ciphertext          one record per message, appended
//! ```
//!
//! Each record is sealed with the profile's vault key (derived from the password), with
//! the contact's name in the associated data, so a record copied into another contact's
//! file does not open. A record is `at_ms TAB direction TAB text`, direction being `in`,
//! `out`, `in-offline` or `out-offline` (sealed mail). File names are contact names,
//! which `known_peers` shows in clear anyway; the contents never are.
//!
//! Private messages are recorded (both directions, chats and sealed mail); room messages
//! are not. Writes go through one [`HistoryWriter`] thread per app, so the runtime never
//! blocks on the disk and records keep the order they were given in. A record torn by a
//! crash at the end of a file is cut off the next time the file is opened for writing;
//! [`read`] stops there too.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use crate::vault::{FILE_HEADER_LEN, Vault, VaultError};

/// The history folder inside the profile.
pub const HISTORY_DIR: &str = "history";
/// Largest record accepted when reading (a message is at most 16 KiB).
const MAX_RECORD: usize = 64 * 1024;

/// Which way a message went, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received in a chat.
    In,
    /// Sent in a chat.
    Out,
    /// Received as sealed mail while we were offline.
    InOffline,
    /// Sent as sealed mail (queued at the directory).
    OutOffline,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::InOffline => "in-offline",
            Direction::OutOffline => "out-offline",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "in" => Direction::In,
            "out" => Direction::Out,
            "in-offline" => Direction::InOffline,
            "out-offline" => Direction::OutOffline,
            _ => return None,
        })
    }

    /// Whether we sent it.
    pub fn outgoing(self) -> bool {
        matches!(self, Direction::Out | Direction::OutOffline)
    }
}

/// One message in a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Milliseconds since the Unix epoch (the sender's clock for received mail).
    pub at_ms: u64,
    pub direction: Direction,
    pub text: String,
}

/// Reading a history failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("no history with {0}")]
    NoHistory(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn purpose(contact: &str) -> String {
    format!("history:{contact}")
}

/// The history file of `contact` in the profile `dir`.
pub fn path(dir: &Path, contact: &str) -> PathBuf {
    dir.join(HISTORY_DIR).join(format!("{contact}.log"))
}

fn encode(entry: &Entry) -> zeroize::Zeroizing<Vec<u8>> {
    zeroize::Zeroizing::new(
        format!(
            "{}\t{}\t{}",
            entry.at_ms,
            entry.direction.as_str(),
            entry.text
        )
        .into_bytes(),
    )
}

fn decode(bytes: &[u8]) -> Option<Entry> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, '\t');
    Some(Entry {
        at_ms: parts.next()?.parse().ok()?,
        direction: Direction::parse(parts.next()?)?,
        text: parts.next()?.to_string(),
    })
}

/// The records of a history file: sealed bytes, and where the last complete one ends.
fn records(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = FILE_HEADER_LEN;
    while at + 4 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len > MAX_RECORD || at + 4 + len > bytes.len() {
            break;
        }
        out.push(&bytes[at + 4..at + 4 + len]);
        at += 4 + len;
    }
    (out, at.min(bytes.len()))
}

/// Reads the whole history with `contact`, oldest first. Records that do not open
/// (damaged) are skipped and counted.
pub fn read(dir: &Path, vault: &Vault, contact: &str) -> Result<(Vec<Entry>, usize), HistoryError> {
    let path = path(dir, contact);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HistoryError::NoHistory(contact.to_string()));
        }
        Err(source) => return Err(HistoryError::Io { path, source }),
    };
    if !bytes.starts_with(&vault.file_header()) {
        return Err(VaultError::Damaged { path }.into());
    }
    let purpose = purpose(contact);
    let (sealed, _) = records(&bytes);
    let mut entries = Vec::with_capacity(sealed.len());
    let mut damaged = 0;
    for record in sealed {
        match vault.open(&purpose, record).and_then(|p| decode(&p)) {
            Some(entry) => entries.push(entry),
            None => damaged += 1,
        }
    }
    Ok((entries, damaged))
}

/// Re-encrypts `contact`'s history from `old` to `new`, into its `.rekey` file.
pub(crate) fn rekey(
    dir: &Path,
    contact: &str,
    old: &Vault,
    new: &Vault,
) -> Result<(), HistoryError> {
    let (entries, _) = read(dir, old, contact)?;
    let mut bytes = new.file_header();
    let purpose = purpose(contact);
    for entry in &entries {
        let sealed = new.seal(&purpose, &encode(entry));
        bytes.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&sealed);
    }
    let target = crate::vault::rekey_path(&path(dir, contact));
    crate::private_file::write_private(&target, &bytes).map_err(|source| HistoryError::Io {
        path: target,
        source,
    })
}

/// The contacts that have a history in the profile `dir`.
pub fn contacts(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir.join(HISTORY_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".log")
                .map(str::to_string)
        })
        .filter(|c| proto::names::check_username(c).is_ok())
        .collect();
    out.sort();
    out
}

enum Job {
    Append(String, Entry),
    Flush(std_mpsc::Sender<()>),
}

/// Appends records on a thread of its own. Cheap to clone; the thread ends when the
/// last clone is dropped, after writing everything given to it.
#[derive(Clone)]
pub struct HistoryWriter {
    jobs: std_mpsc::Sender<Job>,
}

impl HistoryWriter {
    /// Starts the writer for the profile `dir`.
    pub fn start(dir: &Path, vault: Arc<Vault>) -> Self {
        let (jobs, rx) = std_mpsc::channel();
        let dir = dir.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || run(&dir, &vault, rx));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the history writer: {e}; history is not kept");
        }
        Self { jobs }
    }

    /// Records one message with `contact` (never blocks).
    pub fn append(&self, contact: &str, direction: Direction, text: &str, at_ms: u64) {
        let entry = Entry {
            at_ms,
            direction,
            text: text.to_string(),
        };
        let _ = self.jobs.send(Job::Append(contact.to_string(), entry));
    }

    /// Waits (off the runtime) until everything appended so far is on disk.
    pub async fn flush(&self) {
        let (tx, rx) = std_mpsc::channel();
        if self.jobs.send(Job::Flush(tx)).is_ok() {
            let _ = tokio::task::spawn_blocking(move || rx.recv()).await;
        }
    }
}

fn run(dir: &Path, vault: &Vault, jobs: std_mpsc::Receiver<Job>) {
    let mut files: HashMap<String, File> = HashMap::new();
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Append(contact, entry) => {
                if proto::names::check_username(&contact).is_err() {
                    continue;
                }
                if !files.contains_key(&contact) {
                    match open_for_append(dir, vault, &contact) {
                        Ok(f) => {
                            files.insert(contact.clone(), f);
                        }
                        Err(e) => {
                            tracing::warn!("history with {contact} not kept: {e}");
                            continue;
                        }
                    }
                }
                let file = files.get_mut(&contact).expect("inserted above");
                let sealed = vault.seal(&purpose(&contact), &encode(&entry));
                let mut record = (sealed.len() as u32).to_be_bytes().to_vec();
                record.extend_from_slice(&sealed);
                if let Err(e) = file.write_all(&record).and_then(|()| file.sync_data()) {
                    tracing::warn!("cannot append to the history with {contact}: {e}");
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Opens `contact`'s history for appending: creates it with the header, or cuts a torn
/// last record off an existing one. A file of another vault is moved aside.
fn open_for_append(dir: &Path, vault: &Vault, contact: &str) -> std::io::Result<File> {
    let path = path(dir, contact);
    let folder = dir.join(HISTORY_DIR);
    if !folder.is_dir() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&folder)?;
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let header = vault.file_header();
    if bytes.is_empty() {
        file.write_all(&header)?;
    } else if !bytes.starts_with(&header) {
        drop(file);
        let aside = path.with_extension(format!("log.damaged-{}", crate::clock::now_ms()));
        tracing::warn!(
            "{} was not written with this profile's key; moved to {}",
            path.display(),
            aside.display()
        );
        std::fs::rename(&path, &aside)?;
        return open_for_append(dir, vault, contact);
    } else {
        let (_, end) = records(&bytes);
        if end < bytes.len() {
            file.set_len(end as u64)?;
        }
    }
    file.seek(SeekFrom::End(0))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::test_cost;

    #[tokio::test]
    async fn written_read_back_and_torn_tail_cut() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(Vault::create("pw", test_cost()).unwrap());
        let w = HistoryWriter::start(dir.path(), vault.clone());
        w.append("bianca", Direction::Out, "hello MARKER", 1);
        w.append("bianca", Direction::In, "tab\tand\nnewline", 2);
        w.append("chloe", Direction::InOffline, "while away", 3);
        w.flush().await;
        let (entries, damaged) = read(dir.path(), &vault, "bianca").unwrap();
        assert_eq!(damaged, 0);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].text, "tab\tand\nnewline");
        assert_eq!(entries[1].direction, Direction::In);
        assert_eq!(contacts(dir.path()), ["bianca", "chloe"]);
        let raw = std::fs::read(path(dir.path(), "bianca")).unwrap();
        assert!(!raw.windows(6).any(|x| x == b"MARKER"));

        // A crash mid-record: the torn tail is ignored, then cut before the next append.
        drop(w);
        let mut f = OpenOptions::new()
            .append(true)
            .open(path(dir.path(), "bianca"))
            .unwrap();
        f.write_all(&[0, 0, 1, 0, 7, 7]).unwrap();
        assert_eq!(read(dir.path(), &vault, "bianca").unwrap().0.len(), 2);
        let w = HistoryWriter::start(dir.path(), vault.clone());
        w.append("bianca", Direction::Out, "after the crash", 4);
        w.flush().await;
        let (entries, damaged) = read(dir.path(), &vault, "bianca").unwrap();
        assert_eq!((entries.len(), damaged), (3, 0));
        assert_eq!(entries[2].text, "after the crash");

        // Another key reads nothing.
        let other = Vault::create("pw", test_cost()).unwrap();
        assert!(read(dir.path(), &other, "bianca").is_err());
        assert!(matches!(
            read(dir.path(), &vault, "nobody"),
            Err(HistoryError::NoHistory(_))
        ));
    }
}
