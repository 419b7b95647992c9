//! The replicated state machine: every member applies the committed requests, in log order,
//! to its own record service (the process registered as [`RECORDS_NAME`]), so every replica
//! holds the same records; the leader's answer is the reply its caller gets.
//!
//! A request carries an id: a retried request (same id) is applied once, and the retry gets
//! the first answer. It also carries the leader's wall-clock time, passed to the record service
//! with it (`{'$at', At, Request}`), so a record created by it is born at the same time on
//! every replica and on every replay.
//!
//! The state machine lives in memory only: with `--data-dir`, a restarted member rebuilds it by
//! applying its durable log again from the start (openraft re-applies the committed entries
//! when the member starts, then the leader's newer ones). Snapshots are not built yet: the log
//! is kept whole (see [`super::log_store`]).

use super::types::{Command, Member, NodeId, Reply, TypeConfig};
use crate::node::{Mailbox, Node};
use crate::term::Value;
use crate::wire::etf;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
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

/// The state machine of a member.
pub struct StateMachine {
    mailbox: Arc<Mailbox>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    answered: HashMap<u64, Reply>,
    order: VecDeque<u64>,
}

impl StateMachine {
    /// A state machine applying to the record service of `node`.
    pub fn new(node: &Arc<Node>) -> StateMachine {
        StateMachine {
            mailbox: Arc::new(Mailbox::new(node)),
            last_applied: None,
            membership: StoredMembership::default(),
            answered: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    async fn execute(&mut self, id: u64, at: i64, term: &[u8]) -> Reply {
        if let Some(reply) = self.answered.get(&id) {
            return reply.clone();
        }
        let reply = match etf::decode(term) {
            Ok((request, _)) => match self
                .mailbox
                .call(RECORDS_NAME, at_leader_time(at, request), APPLY_TIMEOUT)
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
        if self.order.len() >= REMEMBERED_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.answered.remove(&old);
        }
        self.order.push_back(id);
        self.answered.insert(id, reply.clone());
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

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = NoSnapshots;

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

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        NoSnapshots
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<NodeId, Member>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        Err(no_snapshots())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(None)
    }
}

fn no_snapshots() -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::write_snapshot(
            None,
            &std::io::Error::other("snapshots are not supported yet (the log is kept whole)"),
        ),
    }
}

/// Snapshots are not built yet (the Raft configuration never asks for one).
pub struct NoSnapshots;

impl RaftSnapshotBuilder<TypeConfig> for NoSnapshots {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        Err(no_snapshots())
    }
}
