//! Raft snapshots of a member's records, and where the latest one is kept.
//!
//! A snapshot is the record service's state as of a log position: every definition and every
//! live record with its creation time (the entries of [`crate::protocol::durable`]'s journal),
//! plus the request ids the state machine remembers (so a retry is still applied once after
//! the log before it is gone). Its bytes are
//! `term_to_binary({ash_gen_server_snapshot, 1, Entries, [{Id, ReplyBinary}]})`.
//!
//! Once a snapshot is built, openraft drops the log entries it covers (keeping a tail for
//! members a little behind): the log no longer grows with every write, and a member that joins
//! or fell too far behind receives the snapshot, then the log after it.
//!
//! With `--data-dir` the latest snapshot is also kept in [`SNAPSHOT_FILE`] (written beside it as
//! `raft.snapshot.new`,
//! flushed, renamed over it): a restarted member loads it before applying the log after it.
//! The file is `ASHSNAP1`, the metadata's length (u32 LE) and bincode bytes, the data's length
//! (u64 LE) and bytes, then a CRC-32 of the metadata and data (u32 LE).

use super::types::{Member, NodeId};
use crate::term::{Atom, Value};
use crate::wire::etf;
use openraft::SnapshotMeta;
use parking_lot::Mutex;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The snapshot's file name in the data directory.
pub const SNAPSHOT_FILE: &str = "raft.snapshot";

const MAGIC: &[u8; 8] = b"ASHSNAP1";

/// Why a snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file could not be read or written.
    #[error("snapshot file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file or the bytes are not a snapshot of ours.
    #[error("not a valid snapshot: {0}")]
    Invalid(String),
}

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Contents {
    /// Definitions and records, as the records journal writes them.
    pub entries: Vec<Value>,
    /// Remembered request ids with their replies (ETF bytes), oldest first.
    pub answered: Vec<(u64, Vec<u8>)>,
}

impl Contents {
    /// The snapshot's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let answered = self
            .answered
            .iter()
            .map(|(id, reply)| Value::pair(Value::Int(*id as i64), Value::binary(reply)))
            .collect();
        let term = Value::tuple(vec![
            Value::Atom(Atom::from_static("ash_gen_server_snapshot")),
            Value::Int(1),
            Value::list(self.entries.clone()),
            Value::list(answered),
        ]);
        let mut bytes = Vec::new();
        etf::encode(&term, &mut bytes);
        bytes
    }

    /// Reads a snapshot's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Contents, SnapshotError> {
        let invalid = |why: &str| SnapshotError::Invalid(why.to_string());
        let (term, used) = etf::decode(bytes).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        if used != bytes.len() {
            return Err(invalid("trailing bytes"));
        }
        let Some([tag, Value::Int(1), entries, answered]) = term.as_tuple() else {
            return Err(invalid(
                "not {ash_gen_server_snapshot, 1, Entries, Answered}",
            ));
        };
        if tag.as_atom().map(|a| a.as_str()) != Some("ash_gen_server_snapshot") {
            return Err(invalid("not an ash_gen_server snapshot"));
        }
        let entries = entries
            .as_list()
            .ok_or_else(|| invalid("entries"))?
            .to_vec();
        let answered = answered
            .as_list()
            .ok_or_else(|| invalid("answered"))?
            .iter()
            .map(|pair| match pair.as_tuple() {
                // Ids of 2^63 and above were written as negative integers (`as i64`).
                Some([Value::Int(id), reply]) => reply
                    .as_bytes()
                    .map(|b| (*id as u64, b.to_vec()))
                    .ok_or_else(|| invalid("a reply")),
                _ => Err(invalid("an answered id")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Contents { entries, answered })
    }
}

/// The latest snapshot of a member: its metadata and bytes.
pub type Latest = (SnapshotMeta<NodeId, Member>, Arc<Vec<u8>>);

/// Where a member keeps its latest snapshot: in memory, and in the data directory with one.
///
/// openraft builds a snapshot in a task of its own while its state machine may install one
/// from the leader, so two saves can overlap: they are taken one at a time (they share the
/// file's temporary name), and a snapshot older than the one kept is not saved over it.
#[derive(Default)]
pub struct SnapshotStore {
    dir: Option<PathBuf>,
    latest: Mutex<Option<Latest>>,
    /// Held while a snapshot is saved: one save at a time.
    saving: Mutex<()>,
    /// Set once the instance it belongs to has stopped ([`SnapshotStore::detach`]).
    detached: std::sync::atomic::AtomicBool,
}

impl SnapshotStore {
    /// A store writing to `dir` (in memory only without one).
    pub fn new(dir: Option<&Path>) -> SnapshotStore {
        SnapshotStore {
            dir: dir.map(Path::to_path_buf),
            latest: Mutex::new(None),
            saving: Mutex::new(()),
            detached: Default::default(),
        }
    }

    /// Writes nothing to the data directory any more, once a save under way has ended: the
    /// instance it belongs to has stopped, and another may own the directory's files (a
    /// snapshot built before the stop must not land there).
    pub fn detach(&self) {
        let _no_save_under_way = self.saving.lock();
        self.detached
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The latest snapshot, if any.
    pub fn latest(&self) -> Option<Latest> {
        self.latest.lock().clone()
    }

    /// Keeps `bytes` as the latest snapshot (on disk first, with a data directory), unless the
    /// latest already covers as much of the log; returns whether it was kept.
    pub fn save(
        &self,
        meta: SnapshotMeta<NodeId, Member>,
        bytes: Arc<Vec<u8>>,
    ) -> Result<bool, SnapshotError> {
        let _one_at_a_time = self.saving.lock();
        let kept = self
            .latest
            .lock()
            .as_ref()
            .map(|(kept, _)| kept.last_log_id);
        if kept.is_some_and(|kept| kept >= meta.last_log_id) {
            return Ok(false);
        }
        if let Some(dir) = &self.dir
            && !self.detached.load(std::sync::atomic::Ordering::Acquire)
        {
            write_file(&dir.join(SNAPSHOT_FILE), &meta, &bytes)?;
        }
        *self.latest.lock() = Some((meta, bytes));
        Ok(true)
    }

    /// Loads the snapshot kept in the data directory, if there is one, as the latest.
    pub fn load(&self) -> Result<Option<Latest>, SnapshotError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let Some((meta, bytes)) = read_file(&dir.join(SNAPSHOT_FILE))? else {
            return Ok(None);
        };
        let latest = (meta, Arc::new(bytes));
        *self.latest.lock() = Some(latest.clone());
        Ok(Some(latest))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_file(
    path: &Path,
    meta: &SnapshotMeta<NodeId, Member>,
    data: &[u8],
) -> Result<(), SnapshotError> {
    let meta = bincode::serialize(meta).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&meta);
    crc.update(data);
    // `raft.snapshot.new` (not `with_extension`: `raft.new` is the log journal's).
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let io_at = |at: &Path, e| io(at)(e);
    crate::storage::replace::replace_file(path, &tmp, io_at, |f| {
        let mut put = |bytes: &[u8]| f.write_all(bytes).map_err(io(&tmp));
        put(MAGIC)?;
        put(&(meta.len() as u32).to_le_bytes())?;
        put(&meta)?;
        put(&(data.len() as u64).to_le_bytes())?;
        put(data)?;
        put(&crc.finalize().to_le_bytes())
    })
}

/// The first `n` bytes of `bytes` and the rest, if there are `n`.
fn split(bytes: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (bytes.len() >= n).then(|| bytes.split_at(n))
}

type Read = Option<(SnapshotMeta<NodeId, Member>, Vec<u8>)>;

fn read_file(path: &Path) -> Result<Read, SnapshotError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let invalid = |why: &str| SnapshotError::Invalid(format!("{}: {why}", path.display()));
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| invalid("no ASHSNAP1 header"))?;
    let take = |rest, n| split(rest, n).ok_or_else(|| invalid("cut short"));
    let (len, rest) = take(rest, 4)?;
    let meta_len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let (meta, rest) = take(rest, meta_len)?;
    let (len, rest) = take(rest, 8)?;
    let data_len = usize::try_from(u64::from_le_bytes(len.try_into().expect("8 bytes")))
        .map_err(|_| invalid("too large"))?;
    let (data, rest) = take(rest, data_len)?;
    let (crc, rest) = take(rest, 4)?;
    if !rest.is_empty() {
        return Err(invalid("trailing bytes"));
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(meta);
    hasher.update(data);
    if hasher.finalize() != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(invalid("checksum mismatch"));
    }
    let meta = bincode::deserialize(meta).map_err(|e| invalid(&e.to_string()))?;
    Ok(Some((meta, data.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, StoredMembership};

    fn meta(index: u64) -> SnapshotMeta<NodeId, Member> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 7), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("3-{index}"),
        }
    }

    #[test]
    fn contents_round_trip() {
        let contents = Contents {
            entries: vec![Value::tuple(vec![
                Value::Atom(Atom::from_static("put")),
                Value::Atom(Atom::from_static("r")),
                Value::Int(1),
                Value::Int(2),
            ])],
            answered: vec![
                (5, vec![131, 100, 0, 2, b'o', b'k']),
                (u64::MAX - 3, vec![]),
            ],
        };
        assert_eq!(Contents::decode(&contents.encode()).unwrap(), contents);
        assert!(Contents::decode(b"\x83d\0\x02ok").is_err());
    }

    #[test]
    fn the_latest_snapshot_survives_a_restart_and_a_damaged_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("ash-snapshot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = SnapshotStore::new(Some(&dir));
        assert!(store.load().unwrap().is_none());
        store.save(meta(10), Arc::new(vec![1, 2, 3])).unwrap();
        store.save(meta(20), Arc::new(vec![4, 5])).unwrap();
        let again = SnapshotStore::new(Some(&dir));
        let (m, bytes) = again.load().unwrap().unwrap();
        assert_eq!(m, meta(20));
        assert_eq!(*bytes, vec![4, 5]);
        assert_eq!(again.latest().unwrap().0, meta(20));
        // A flipped byte is found.
        let path = dir.join(SNAPSHOT_FILE);
        let mut raw = std::fs::read(&path).unwrap();
        let n = raw.len();
        raw[n - 6] ^= 1;
        std::fs::write(&path, raw).unwrap();
        assert!(matches!(
            SnapshotStore::new(Some(&dir)).load(),
            Err(SnapshotError::Invalid(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_detached_store_writes_nothing_to_the_directory() {
        let dir = std::env::temp_dir().join(format!("ash-snapshot-detach-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = SnapshotStore::new(Some(&dir));
        store.save(meta(10), Arc::new(vec![1])).unwrap();
        store.detach();
        // Another instance owns the directory now.
        std::fs::remove_file(dir.join(SNAPSHOT_FILE)).unwrap();
        assert!(store.save(meta(20), Arc::new(vec![2])).unwrap());
        assert_eq!(store.latest().unwrap().0, meta(20), "kept in memory");
        assert!(!dir.join(SNAPSHOT_FILE).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A snapshot built in openraft's own task and one installed from the leader can be saved
    /// at the same time: every save succeeds, and the newest one is kept, on disk too.
    #[test]
    fn overlapping_saves_all_succeed_and_the_newest_is_kept() {
        let dir = std::env::temp_dir().join(format!("ash-snapshot-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(SnapshotStore::new(Some(&dir)));
        let savers: Vec<_> = (1..=16u64)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for round in 0..8u64 {
                        let index = round * 100 + i;
                        store
                            .save(meta(index), Arc::new(vec![i as u8; 4096]))
                            .unwrap();
                    }
                })
            })
            .collect();
        for saver in savers {
            saver.join().unwrap();
        }
        assert_eq!(store.latest().unwrap().0, meta(716));
        let (m, bytes) = SnapshotStore::new(Some(&dir)).load().unwrap().unwrap();
        assert_eq!(m, meta(716));
        assert_eq!(*bytes, vec![16u8; 4096]);
        // An older one after a newer one is not kept.
        assert!(!store.save(meta(5), Arc::new(vec![0])).unwrap());
        assert_eq!(store.latest().unwrap().0, meta(716));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
