//! The Raft types of the cluster: what a log entry carries (a protocol request, executed by
//! every replica in log order) and what applying it answers (the request's reply).

use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// A member's Raft id. Random for each run of a node without a data directory, so a node
/// restarted without its Raft state joins as a new member and never votes twice in a term;
/// kept in the data directory with one (see [`super::identity`]), with the vote and the log.
pub type NodeId = u64;

/// A member: its distribution node name (`name@host`).
pub type Member = openraft::BasicNode;

/// What a log entry carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Command {
    /// A request of docs/PROTOCOL.md, as External Term Format bytes. `id` is unique to the
    /// client's request: a retry with the same id is applied once.
    Request {
        /// Unique to the request (de-duplicates retries).
        id: u64,
        /// The leader's wall-clock time when it took the request, in Unix milliseconds: what
        /// the request counts as done at (a created record's creation time) on every replica
        /// and on every replay of the log after a restart.
        at: i64,
        /// `term_to_binary(Request)`.
        term: Vec<u8>,
    },
}

/// What applying an entry answers: the request's reply, as External Term Format bytes
/// (empty for entries that are not requests).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply(pub Vec<u8>);

openraft::declare_raft_types!(
    /// The cluster's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft instance of a group.
pub type Raft = openraft::Raft<TypeConfig>;
