//! The Raft log: entries by index, the vote and the committed position — in memory, and with
//! `--data-dir` also in a journal on disk ([`crate::storage::journal`], file [`LOG_FILE`]), so a
//! restarted member comes back with its log and its vote.
//!
//! The journal records each change as it happens: `{entry, Bin}` (an appended entry),
//! `{truncate, Index}` (entries from `Index` on removed), `{purge, Bin}` (entries up to a log id
//! removed), `{vote, Bin}` and `{committed, Bin}` (openraft's types serialized with bincode in
//! `Bin`). Reading it back replays those changes in order; a torn last write is cut. At each
//! start the journal is rewritten as the state it holds (vote, committed, purge point, entries).
//! Appended entries and votes are written before openraft is told they are stored, and flushed
//! to the disk by the [`FsyncPolicy`] (with `always`, before); the committed position is only
//! written (it is a hint: a member learns it again from the leader).
//!
//! Once a [`super::snapshot`] covers them, openraft purges the entries before it; the journal
//! is rewritten as the entries left once [`COMPACT_AFTER`] have been purged since it was last
//! written whole, so the file stays bounded too. A restarted member loads its snapshot, then
//! applies the log after it again (openraft re-applies the committed entries at start, see
//! [`RaftLogStorage::read_committed`]).

use super::types::{NodeId, TypeConfig};
use crate::storage::journal::{self, FsyncPolicy, Journal, JournalError};
use crate::term::{Atom, Value};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The journal's file name in the data directory.
pub const LOG_FILE: &str = "raft.log";

/// Purged entries after which the journal is rewritten without them.
pub const COMPACT_AFTER: u64 = 10_000;

#[derive(Default)]
struct Inner {
    last_purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    journal: Option<Arc<Journal>>,
    /// Entries purged since the journal was last written whole.
    purged_since_rewrite: u64,
}

/// The log of one Raft group (cheap to clone: a reader shares it).
#[derive(Clone, Default)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

/// What [`LogStore::open`] found in the data directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reopened {
    /// Entries in the log.
    pub entries: usize,
    /// The committed position's index, if any.
    pub committed: Option<u64>,
    /// Bytes of a torn last write cut off the journal.
    pub cut_bytes: u64,
}

fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

fn tagged<T: Serialize>(tag: &'static str, value: &T) -> Result<Value, bincode::Error> {
    Ok(Value::pair(
        atom(tag),
        Value::binary_owned(bincode::serialize(value)?),
    ))
}

fn decoded<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    let bytes = value.as_bytes().ok_or("not a binary")?;
    bincode::deserialize(bytes).map_err(|e| e.to_string())
}

fn write_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn vote_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_vote(AnyError::new(&e)).into()
}

/// Why the log in the data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// An entry makes no sense (the file was written by something else, or a bug).
    #[error("raft log entry {index} is not valid: {reason}")]
    Entry {
        /// Its position in the journal.
        index: usize,
        /// Why.
        reason: String,
    },
}

impl Inner {
    /// Replays one journal entry.
    fn replay(&mut self, entry: &Value) -> Result<(), String> {
        match entry.as_tuple() {
            Some([Value::Atom(tag), body]) => match tag.as_str() {
                "entry" => {
                    let e: Entry<TypeConfig> = decoded(body)?;
                    self.entries.insert(e.get_log_id().index, e);
                }
                "truncate" => {
                    let index = body.as_int().ok_or("bad index")?;
                    self.entries.split_off(&(index as u64));
                }
                "purge" => {
                    let log_id: LogId<NodeId> = decoded(body)?;
                    self.entries = self.entries.split_off(&(log_id.index + 1));
                    self.last_purged = Some(log_id);
                }
                "vote" => self.vote = Some(decoded(body)?),
                "committed" => self.committed = decoded(body)?,
                _ => return Err("unknown entry".into()),
            },
            _ => return Err("not a pair".into()),
        }
        Ok(())
    }

    /// The journal entries that recreate this state.
    fn as_journal(&self) -> Result<Vec<Value>, bincode::Error> {
        let mut out = Vec::with_capacity(self.entries.len() + 3);
        if let Some(vote) = &self.vote {
            out.push(tagged("vote", vote)?);
        }
        if let Some(purged) = &self.last_purged {
            out.push(tagged("purge", purged)?);
        }
        for e in self.entries.values() {
            out.push(tagged("entry", e)?);
        }
        out.push(tagged("committed", &self.committed)?);
        Ok(out)
    }

    fn write(&self, terms: &[Value]) -> Result<(), JournalError> {
        match &self.journal {
            Some(journal) => journal.append_all(terms),
            None => Ok(()),
        }
    }
}

impl LogStore {
    /// The log kept in `dir` (made if missing): reads what the journal holds, rewrites it, and
    /// journals every change from now on. Returns the store, its journal (for the flush task
    /// of [`FsyncPolicy::Interval`]) and what was found.
    pub fn open(
        dir: &Path,
        policy: FsyncPolicy,
    ) -> Result<(LogStore, Arc<Journal>, Reopened), LogStoreError> {
        let path = dir.join(LOG_FILE);
        let (entries, cut_bytes) = journal::read(&path)?;
        let mut inner = Inner::default();
        for (index, entry) in entries.iter().enumerate() {
            inner
                .replay(entry)
                .map_err(|reason| LogStoreError::Entry { index, reason })?;
        }
        // A committed position whose entry did not survive (a machine crash under a lazy
        // fsync policy) is forgotten: the leader tells it again.
        if let Some(c) = inner.committed
            && inner.entries.get(&c.index).map(|e| e.log_id) != Some(c)
            && inner.last_purged != Some(c)
        {
            inner.committed = None;
        }
        let compact = inner.as_journal().map_err(|e| LogStoreError::Entry {
            index: 0,
            reason: e.to_string(),
        })?;
        journal::rewrite(&path, compact)?;
        let journal = Arc::new(Journal::open(&path, policy)?);
        let reopened = Reopened {
            entries: inner.entries.len(),
            committed: inner.committed.map(|c| c.index),
            cut_bytes,
        };
        inner.journal = Some(journal.clone());
        let store = LogStore {
            inner: Arc::new(Mutex::new(inner)),
        };
        Ok((store, journal, reopened))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        use std::ops::Bound;
        // A range that ends before it starts holds nothing (`BTreeMap::range` would panic, and
        // with it the group's Raft core).
        let start = match range.start_bound() {
            Bound::Included(i) => Some(*i),
            Bound::Excluded(i) => i.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.checked_add(1),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        match (start, end) {
            (None, _) => return Ok(Vec::new()),
            (Some(start), Some(end)) if start >= end => return Ok(Vec::new()),
            _ => {}
        }
        let inner = self.inner.lock().await;
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        if inner.journal.is_some() {
            let term = tagged("vote", vote).map_err(vote_error)?;
            inner.write(&[term]).map_err(vote_error)?;
        }
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        if let Some(journal) = &inner.journal {
            // Not flushed on its own: a committed position lost to a machine crash is learnt
            // again from the leader.
            let term = tagged("committed", &committed).map_err(write_error)?;
            journal.append_lazily(&term).map_err(write_error)?;
        }
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        if inner.journal.is_some() {
            let terms = entries
                .iter()
                .map(|e| tagged("entry", e))
                .collect::<Result<Vec<_>, _>>()
                .map_err(write_error)?;
            if let Err(e) = inner.write(&terms) {
                let error = std::io::Error::other(e.to_string());
                callback.log_io_completed(Err(error));
                return Err(write_error(e));
            }
        }
        for entry in entries {
            inner.entries.insert(entry.get_log_id().index, entry);
        }
        drop(inner);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        inner
            .write(&[Value::pair(
                atom("truncate"),
                Value::Int(log_id.index as i64),
            )])
            .map_err(write_error)?;
        inner.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        if inner.journal.is_some() {
            let term = tagged("purge", &log_id).map_err(write_error)?;
            inner.write(&[term]).map_err(write_error)?;
        }
        let before = inner.entries.len();
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        inner.last_purged = Some(log_id);
        inner.purged_since_rewrite += (before - inner.entries.len()) as u64;
        if inner.purged_since_rewrite >= COMPACT_AFTER
            && let Some(journal) = inner.journal.clone()
        {
            let terms = inner.as_journal().map_err(write_error)?;
            journal.replace(terms).map_err(write_error)?;
            inner.purged_since_rewrite = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::types::Command;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ash-raftlog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 7), index)
    }

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(Command::Request {
                id: index,
                at: 1_700_000_000_000 + index as i64,
                term: vec![131, 100, 0, 1, b'x'],
            }),
        }
    }

    /// Appends through openraft's storage API, waiting for the flush callback.
    async fn append(store: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
        store.blocking_append(entries).await.unwrap();
    }

    async fn indexes(store: &mut LogStore) -> Vec<(u64, u64)> {
        store
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    #[tokio::test]
    #[allow(clippy::reversed_empty_ranges)]
    async fn a_range_that_ends_before_it_starts_reads_nothing() {
        let mut store = LogStore::default();
        append(&mut store, (1..=5).map(|i| entry(1, i)).collect()).await;
        assert!(store.try_get_log_entries(4..2).await.unwrap().is_empty());
        assert!(store.try_get_log_entries(4..=3).await.unwrap().is_empty());
        assert!(store.try_get_log_entries(3..3).await.unwrap().is_empty());
        let between: Vec<u64> = store
            .try_get_log_entries(2..=3)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(between, [2, 3]);
    }

    #[tokio::test]
    async fn the_log_survives_reopening_and_a_torn_entry_is_cut() {
        let d = dir("reopen");
        let (mut store, _, found) = LogStore::open(&d, FsyncPolicy::Always).unwrap();
        assert_eq!(found, Reopened::default());
        append(&mut store, (1..=5).map(|i| entry(1, i)).collect()).await;
        store.truncate(log_id(1, 4)).await.unwrap();
        append(&mut store, vec![entry(2, 4)]).await;
        store.purge(log_id(1, 1)).await.unwrap();
        let vote = Vote::new_committed(2, 7);
        store.save_vote(&vote).await.unwrap();
        store.save_committed(Some(log_id(2, 4))).await.unwrap();
        drop(store);

        let (mut store, _, found) = LogStore::open(&d, FsyncPolicy::Always).unwrap();
        assert_eq!(
            found,
            Reopened {
                entries: 3,
                committed: Some(4),
                cut_bytes: 0
            }
        );
        assert_eq!(indexes(&mut store).await, vec![(1, 2), (1, 3), (2, 4)]);
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 4)));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1)));
        assert_eq!(state.last_log_id, Some(log_id(2, 4)));
        let read = store.try_get_log_entries(4..5).await.unwrap();
        assert_eq!(read, vec![entry(2, 4)]);

        // A crash in the middle of writing the last entry: it is cut, the rest is kept.
        append(&mut store, vec![entry(2, 5)]).await;
        drop(store);
        let path = d.join(LOG_FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 5).unwrap();
        drop(f);
        let (mut store, _, found) = LogStore::open(&d, FsyncPolicy::Never).unwrap();
        assert!(found.cut_bytes > 0);
        assert_eq!(indexes(&mut store).await, vec![(1, 2), (1, 3), (2, 4)]);
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        drop(store);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_foreign_entry_is_refused() {
        let d = dir("foreign");
        let path = d.join(LOG_FILE);
        journal::rewrite(&path, vec![Value::pair(atom("nonsense"), Value::Int(1))]).unwrap();
        assert!(matches!(
            LogStore::open(&d, FsyncPolicy::Never),
            Err(LogStoreError::Entry { index: 0, .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }
}
