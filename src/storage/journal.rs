//! An append-only journal of terms: each entry is `[length u32 LE][crc32 u32 LE][term]`, the
//! term in the external term format. Reading stops at the first entry that is cut short or
//! whose checksum does not match (a write torn by a crash), and the file is truncated there.
//!
//! Appends go to the file with one `write` each, under a lock, before the change they record
//! is acknowledged; [`FsyncPolicy`] says when the file is also flushed to the disk, and so what
//! a machine crash can lose (a crash of the process alone loses nothing that was written).

use crate::term::Value;
use crate::wire::etf;
use parking_lot::{Mutex, MutexGuard};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Entries larger than this are refused (and, when read, taken as the torn end).
pub const MAX_ENTRY: usize = 256 << 20;

/// When appended entries are flushed to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncPolicy {
    /// Before each change is acknowledged: a machine crash loses nothing acknowledged.
    Always,
    /// Every 100 ms in the background: a machine crash can lose the last 100 ms.
    Interval,
    /// When the operating system decides: a machine crash can lose its write-back window
    /// (typically up to 30 s).
    Never,
}

/// How often [`FsyncPolicy::Interval`] flushes.
pub const FSYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An entry is too large.
    #[error("a journal entry of {0} bytes is larger than the {MAX_ENTRY}-byte limit")]
    TooLarge(usize),
}

/// An open journal, appending.
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    policy: FsyncPolicy,
    dirty: AtomicBool,
    appended: AtomicU64,
    /// Retired ([`Journal::retire`]): its file is gone and nothing is written any more.
    retired: AtomicBool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn frame(term: &Value) -> Result<Vec<u8>, JournalError> {
    let mut body = Vec::new();
    etf::encode(term, &mut body);
    if body.len() > MAX_ENTRY {
        return Err(JournalError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads every whole entry of the journal at `path` (none if it does not exist) and truncates
/// a torn end. Returns the entries and how many bytes were cut off.
pub fn read(path: &Path) -> Result<(Vec<Value>, u64), JournalError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(io(path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(io(path)(e)),
    }
    let mut entries = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(body) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if len > MAX_ENTRY || crc32fast::hash(body) != crc {
            break;
        }
        match etf::decode(body) {
            Ok((term, used)) if used == body.len() => entries.push(term),
            _ => break,
        }
        at += 8 + len;
    }
    let cut = (bytes.len() - at) as u64;
    if cut > 0 {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        f.set_len(at as u64).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
    }
    Ok((entries, cut))
}

/// Replaces the journal at `path` with `entries`, atomically (written beside it, flushed,
/// renamed over it).
pub fn rewrite(path: &Path, entries: impl IntoIterator<Item = Value>) -> Result<(), JournalError> {
    let tmp = path.with_extension("new");
    let io_at = |at: &Path, e| io(at)(e);
    super::replace::replace_file(path, &tmp, io_at, |f| {
        for entry in entries {
            f.write_all(&frame(&entry)?).map_err(io(&tmp))?;
        }
        Ok(())
    })
}

impl Journal {
    /// Opens the journal at `path` for appending (creating it).
    pub fn open(path: &Path, policy: FsyncPolicy) -> Result<Journal, JournalError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        Ok(Journal {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            policy,
            dirty: AtomicBool::new(false),
            appended: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        })
    }

    /// Appends `term`; with [`FsyncPolicy::Always`], flushes it to the disk before returning.
    pub fn append(&self, term: &Value) -> Result<(), JournalError> {
        self.append_all(std::slice::from_ref(term))
    }

    /// Appends `terms` with one write (and, with [`FsyncPolicy::Always`], one flush to the disk
    /// before returning). A crash mid-write keeps a prefix of them: the torn one is cut when
    /// the journal is [`read`].
    pub fn append_all(&self, terms: &[Value]) -> Result<(), JournalError> {
        let mut bytes = Vec::new();
        for term in terms {
            bytes.extend_from_slice(&frame(term)?);
        }
        let Some(mut file) = self.live_file() else {
            return Ok(());
        };
        file.write_all(&bytes).map_err(io(&self.path))?;
        if self.policy == FsyncPolicy::Always {
            file.sync_data().map_err(io(&self.path))?;
        } else {
            self.dirty.store(true, Ordering::Relaxed);
        }
        self.appended
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Appends `term` without flushing it to the disk now, whatever the policy: the next flush
    /// takes it (for what can be lost to a machine crash without harm).
    pub fn append_lazily(&self, term: &Value) -> Result<(), JournalError> {
        let bytes = frame(term)?;
        let Some(mut file) = self.live_file() else {
            return Ok(());
        };
        file.write_all(&bytes).map_err(io(&self.path))?;
        self.dirty.store(true, Ordering::Relaxed);
        self.appended
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Replaces the whole journal with `entries` (atomically, as [`rewrite`] does) and goes on
    /// appending after them: compaction while it is open.
    pub fn replace(&self, entries: impl IntoIterator<Item = Value>) -> Result<(), JournalError> {
        let Some(mut file) = self.live_file() else {
            return Ok(());
        };
        rewrite(&self.path, entries)?;
        *file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        Ok(())
    }

    /// Flushes what was appended to the disk, if anything (the interval task calls this).
    pub fn flush(&self) -> Result<(), JournalError> {
        if self.dirty.swap(false, Ordering::Relaxed) && !self.retired.load(Ordering::Relaxed) {
            let file = self.file.lock().try_clone().map_err(io(&self.path))?;
            file.sync_data().map_err(io(&self.path))?;
        }
        Ok(())
    }

    /// The file, locked, unless the journal is retired (then nothing is to be written).
    fn live_file(&self) -> Option<MutexGuard<'_, File>> {
        let file = self.file.lock();
        (!self.retired.load(Ordering::Relaxed)).then_some(file)
    }

    /// Removes the journal's file (durably: the directory is flushed too), and from then on
    /// writes nothing: its changes are kept elsewhere now (a single node that became a cluster
    /// member keeps them in its Raft log). Under the lock appends take, so no append is
    /// skipped while the file still exists.
    pub fn retire(&self) -> Result<(), JournalError> {
        let Some(_file) = self.live_file() else {
            return Ok(());
        };
        match std::fs::remove_file(&self.path) {
            // Gone already: a retire that failed after removing it, tried again.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(&self.path)(e));
            }
            _ => {}
        }
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        self.retired.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The flush policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Bytes appended since the journal was opened.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }
}

/// Flushes `journal` to the disk every [`FSYNC_INTERVAL`] (for [`FsyncPolicy::Interval`]).
pub async fn flush_every_interval(journal: std::sync::Arc<Journal>) {
    let mut tick = tokio::time::interval(FSYNC_INTERVAL);
    loop {
        tick.tick().await;
        if let Err(e) = journal.flush() {
            tracing::error!(error = %e, "could not flush the journal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::parse_term;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ash-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_retired_journal_is_gone_and_writes_nothing_more() {
        let d = dir("retire");
        let path = d.join("journal.log");
        let j = Journal::open(&path, FsyncPolicy::Always).unwrap();
        j.append(&parse_term("{put, 1}").unwrap()).unwrap();
        j.retire().unwrap();
        assert!(!path.exists());
        // Appends, a compaction and a flush after it write nothing: the file stays gone.
        j.append(&parse_term("{put, 2}").unwrap()).unwrap();
        j.append_lazily(&parse_term("{put, 3}").unwrap()).unwrap();
        j.replace([parse_term("{put, 4}").unwrap()]).unwrap();
        j.flush().unwrap();
        j.retire().unwrap();
        assert!(!path.exists());
        assert_eq!(read(&path).unwrap(), (Vec::new(), 0));
        // A retire tried again after its file went (it failed flushing the directory): done.
        let again = Journal::open(&path, FsyncPolicy::Always).unwrap();
        std::fs::remove_file(&path).unwrap();
        again.retire().unwrap();
        again.append(&parse_term("{put, 5}").unwrap()).unwrap();
        assert!(!path.exists(), "retired: nothing written");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn entries_round_trip_and_a_torn_end_is_cut() {
        let d = dir("torn");
        let path = d.join("journal.log");
        let j = Journal::open(&path, FsyncPolicy::Always).unwrap();
        let terms: Vec<Value> = (0..5)
            .map(|i| parse_term(&format!("{{put, r, #{{id => {i}, s => <<\"x\">>}}, 7}}")).unwrap())
            .collect();
        for t in &terms {
            j.append(t).unwrap();
        }
        drop(j);
        assert_eq!(read(&path).unwrap(), (terms.clone(), 0));
        // A crash mid-write leaves half an entry: it is cut off, the rest is kept.
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let (kept, cut) = read(&path).unwrap();
        assert_eq!(kept, terms[..4].to_vec());
        assert!(cut > 0);
        assert_eq!(read(&path).unwrap(), (terms[..4].to_vec(), 0));
        // A flipped byte fails the checksum: reading stops there.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(&path).unwrap().0, terms[..3].to_vec());
        rewrite(&path, terms.clone()).unwrap();
        assert_eq!(read(&path).unwrap(), (terms, 0));
        let _ = std::fs::remove_dir_all(&d);
    }
}
