//! The replicated state machine: every member applies the committed requests, in log order,
//! to its own record service (the process registered as the group's records name,
//! [`RECORDS_NAME`] for group 0), so every replica
//! holds the same records; the leader's answer is the reply its caller gets.
//!
//! A request carries an id: a retried request (same id) is applied once, and the retry gets
//! the first answer. It also carries the leader's wall-clock time, passed to the record service
//! with it (`{'$at', At, Request}`), so a record created by it is born at the same time on
//! every replica and on every replay.
//!
//! Every so many entries (`--snapshot-every`) the state is captured as a [`super::snapshot`]
//! and the log before it dropped. Installing a snapshot (a member that joins or fell behind)
//! empties the member's record service and fills it from the snapshot. With `--data-dir`, a
//! restarted member loads its latest snapshot, then applies the durable log after it again
//! (openraft re-applies the committed entries when the member starts, then the leader's newer
//! ones).

use super::snapshot::{Contents, SnapshotError, SnapshotStore};
use super::types::{Command, Member, NodeId, Reply, TypeConfig};
use crate::node::{Mailbox, Node};
use crate::record::RecordService;
use crate::term::{Atom, Value, atoms};
use crate::wire::etf;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

/// The name the record service is registered under in a cluster member (`ash_gen_server` is
/// the cluster's router there).
pub const RECORDS_NAME: &str = "ash_gen_server_records";

/// How many request ids are remembered for de-duplication.
const REMEMBERED_IDS: usize = 100_000;

/// How long applying one request may take before it is answered with a timeout.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The ids of the requests applied last, with their replies (at most `REMEMBERED_IDS`): a
/// request applied again under the same id gets its first reply. Kept beside the group's
/// instances ([`super::Cluster`]): a group formed again from this member's copy
/// ([`super::recover`]) keeps them with the records; a new instance that knows nothing of the
/// group yet starts without them ([`Remembered::clear`]).
#[derive(Default)]
pub struct Remembered {
    answered: HashMap<u64, Reply>,
    order: VecDeque<u64>,
}

impl Remembered {
    /// Forgets every id.
    pub fn clear(&mut self) {
        self.answered.clear();
        self.order.clear();
    }

    fn remember(&mut self, id: u64, reply: Reply) {
        if self.order.len() >= REMEMBERED_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.answered.remove(&old);
        }
        self.order.push_back(id);
        self.answered.insert(id, reply);
    }

    fn get(&self, id: u64) -> Option<&Reply> {
        self.answered.get(&id)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The ids and replies, oldest first (what a snapshot keeps).
    fn entries(&self) -> Vec<(u64, Vec<u8>)> {
        self.order
            .iter()
            .filter_map(|id| Some((*id, self.answered.get(id)?.0.clone())))
            .collect()
    }
}

/// The state machine of a member.
pub struct StateMachine {
    mailbox: Arc<Mailbox>,
    records: Arc<RecordService>,
    records_name: String,
    snapshots: Arc<SnapshotStore>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    remembered: Arc<Mutex<Remembered>>,
}

impl StateMachine {
    /// A state machine applying to `records`, the record service of `node` (registered as
    /// `records_name`: [`RECORDS_NAME`] for group 0), keeping its snapshots in `snapshots` and
    /// the request ids it applied in `remembered`. The latest snapshot kept there (with a data
    /// directory) is loaded into `records` first.
    pub fn new(
        node: &Arc<Node>,
        records: &Arc<RecordService>,
        records_name: &str,
        snapshots: Arc<SnapshotStore>,
        remembered: Arc<Mutex<Remembered>>,
    ) -> Result<StateMachine, SnapshotError> {
        let mut sm = StateMachine {
            mailbox: Arc::new(Mailbox::new(node)),
            records: records.clone(),
            records_name: records_name.to_string(),
            snapshots,
            last_applied: None,
            membership: StoredMembership::default(),
            remembered,
        };
        if let Some((meta, bytes)) = sm.snapshots.load()? {
            let restored = sm.install(&meta, &bytes)?;
            tracing::info!(
                index = ?meta.last_log_id.map(|l| l.index),
                records = restored,
                "loaded the raft snapshot from the data directory"
            );
        }
        Ok(sm)
    }

    /// Replaces the records and remembered ids with the snapshot's. Returns how many records
    /// it holds.
    fn install(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        bytes: &[u8],
    ) -> Result<usize, SnapshotError> {
        let contents = Contents::decode(bytes)?;
        // Whatever this member held is replaced: its record processes exit.
        let reason = Value::pair(
            Value::Atom(*atoms::SHUTDOWN),
            Value::Atom(Atom::from_static("replaced_by_snapshot")),
        );
        self.records.stop_all(self.records.store.all(), &reason);
        let restored = crate::protocol::durable::restore(&self.records, &contents.entries)
            .map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        let mut remembered = self.remembered.lock();
        remembered.clear();
        for (id, reply) in contents.answered {
            remembered.remember(id, Reply(reply));
        }
        drop(remembered);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(restored.records)
    }

    async fn execute(&mut self, id: u64, at: i64, term: &[u8]) -> Reply {
        if let Some(reply) = self.remembered.lock().get(id) {
            return reply.clone();
        }
        let reply = match etf::decode(term) {
            Ok((request, _)) => match self
                .mailbox
                .call(
                    &self.records_name,
                    at_leader_time(at, request),
                    APPLY_TIMEOUT,
                )
                .await
            {
                Ok(reply) => reply,
                Err(e) => error_reply(&e.to_string()),
            },
            Err(e) => error_reply(&format!("a replicated request does not decode: {e}")),
        };
        let mut bytes = Vec::new();
        etf::encode(&reply, &mut bytes);
        let reply = Reply(bytes);
        self.remembered.lock().remember(id, reply.clone());
        reply
    }
}

/// `{'$at', At, Request}`: the request as done at the leader's time (see
/// [`crate::protocol::caller::AT_TAG`]).
fn at_leader_time(at: i64, request: Value) -> Value {
    Value::tuple(vec![
        Value::Atom(crate::term::Atom::from_static(
            crate::protocol::caller::AT_TAG,
        )),
        Value::Int(at),
        request,
    ])
}

fn error_reply(text: &str) -> Value {
    crate::protocol::error::Error::Unavailable(text.to_string()).to_reply()
}

fn snapshot_error(e: SnapshotError) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::write_snapshot(None, AnyError::new(&e)),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>), StorageError<NodeId>>
    {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => replies.push(Reply::default()),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    replies.push(Reply::default());
                }
                EntryPayload::Normal(Command::Request { id, at, term }) => {
                    replies.push(self.execute(id, at, &term).await)
                }
            }
        }
        Ok(replies)
    }

    /// Captures the state now, between two applied entries (cloning the records); the
    /// builder encodes and keeps it while the log goes on being applied.
    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            contents: Contents {
                entries: crate::protocol::durable::snapshot_terms(&self.records),
                answered: self.remembered.lock().entries(),
            },
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = Arc::new(snapshot.into_inner());
        let records = self.install(meta, &bytes).map_err(snapshot_error)?;
        self.snapshots
            .save(meta.clone(), bytes)
            .map_err(snapshot_error)?;
        tracing::info!(
            index = ?meta.last_log_id.map(|l| l.index),
            records,
            "installed a raft snapshot from the leader"
        );
        metrics::counter!("ash_gen_server_cluster_snapshots_installed_total").increment(1);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.snapshots.latest().map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes.to_vec())),
        }))
    }
}

/// Encodes and keeps a snapshot captured by [`StateMachine::get_snapshot_builder`].
pub struct SnapshotBuilder {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    contents: Contents,
    snapshots: Arc<SnapshotStore>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let contents = std::mem::replace(
            &mut self.contents,
            Contents {
                entries: Vec::new(),
                answered: Vec::new(),
            },
        );
        let records = contents.entries.len();
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: match self.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, rand::random::<u32>()),
                None => format!("0-0-{}", rand::random::<u32>()),
            },
        };
        // Encoding and writing take a while for many records: off the runtime's threads.
        let snapshots = self.snapshots.clone();
        let saved_meta = meta.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let bytes = Arc::new(contents.encode());
            snapshots.save(saved_meta, bytes.clone()).map(|_| bytes)
        })
        .await
        .map_err(|e| snapshot_error(SnapshotError::Invalid(e.to_string())))?
        .map_err(snapshot_error)?;
        tracing::info!(
            index = ?meta.last_log_id.map(|l| l.index),
            entries = records,
            bytes = bytes.len(),
            "built a raft snapshot"
        );
        metrics::counter!("ash_gen_server_cluster_snapshots_built_total").increment(1);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes.to_vec())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_ids_go_first_and_clear_forgets_them_all() {
        let mut remembered = Remembered::default();
        for id in 0..REMEMBERED_IDS as u64 + 2 {
            remembered.remember(id, Reply(vec![id as u8]));
        }
        assert_eq!(remembered.len(), REMEMBERED_IDS);
        assert!(remembered.get(0).is_none() && remembered.get(1).is_none());
        assert_eq!(remembered.get(2), Some(&Reply(vec![2])));
        let entries = remembered.entries();
        assert_eq!(entries.first().map(|e| e.0), Some(2), "oldest first");
        assert_eq!(entries.len(), REMEMBERED_IDS);
        remembered.clear();
        assert!(remembered.is_empty() && remembered.get(2).is_none());
    }
}
