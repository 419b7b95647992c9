//! Raft's messages between members, carried as distribution messages: a call to the peer's
//! endpoint of the same group ([`super::Names::endpoint`]), `{raft, Kind, Payload, To}` with the Raft request
//! serialized (bincode) in a binary and `To` the Raft id it is meant for, answered
//! `{ok, Payload}` or `{error, Payload}`, or `{error, {not_member, Id}}` by a node that is not
//! `To`: a member restarted under the same name is a new member (a new id) and must not take
//! the messages meant for its earlier run (its log is not that run's). No other transport or
//! port: the members' distribution connections carry it.
//!
//! One message is cast instead of called: an append that only carries a newer commit index
//! (openraft sends one after every commit), when the member has already acknowledged the
//! same vote and log position through this [`Peer`]. Openraft keeps one message in flight per
//! member, so waiting for that answer held the next write's entries back by most of a round
//! trip. Its answer would tell the leader nothing new: it is the position the member already
//! acknowledged, and the member's own view of the term is learned from the next called message
//! (an append with entries, or the periodic heartbeat, whose commit index is unchanged and so
//! always called). A fresh `Peer` calls its first message, so the rounds that confirm
//! leadership before a read (a new client each, see [`super::read_lease`]) are always called.

use super::types::{Member, NodeId, TypeConfig};
use crate::node::{Mailbox, Node};
use crate::term::{Atom, Value};
use erl_dist::node::NodeName;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{LogId, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Makes a [`Peer`] for each member Raft talks to.
pub struct Network {
    /// The local node.
    pub node: Arc<Node>,
    /// The name of the group's endpoint on every member.
    pub endpoint: String,
}

/// Why a message could not be carried.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The member's address is not a node name.
    #[error("bad member address {0:?}")]
    BadAddress(String),
    /// The call failed (peer unreachable, no reply in time).
    #[error(transparent)]
    Call(#[from] crate::node::mailbox::CallError),
    /// The answer is not `{ok, Binary}` or `{error, Binary}`.
    #[error("unexpected answer {0:?}")]
    Answer(Value),
    /// The node under the member's name is another member now (restarted with a new id).
    #[error("{0} is no longer the member this message is for")]
    NotMember(String),
    /// The payload did not (de)serialize.
    #[error("payload: {0}")]
    Payload(#[from] bincode::Error),
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, member: &Member) -> Peer {
        Peer {
            mailbox: Mailbox::new(&self.node),
            endpoint: self.endpoint.clone(),
            target,
            name: member.addr.parse().ok(),
            addr: member.addr.clone(),
            acknowledged: None,
        }
    }
}

/// The Raft messages to one member.
pub struct Peer {
    mailbox: Mailbox,
    endpoint: String,
    target: NodeId,
    name: Option<NodeName>,
    addr: String,
    /// The last append the member answered `Success`, if the last answer was one.
    acknowledged: Option<Acknowledged>,
}

/// What a Raft message is, on the wire.
pub fn kind_atom(kind: &str) -> Value {
    Value::Atom(Atom::new(kind).expect("a short atom"))
}

/// `{raft, Kind, Payload, To}`.
fn raft_message(kind: &str, payload: Vec<u8>, to: NodeId) -> Value {
    Value::tuple(vec![
        Value::Atom(Atom::from_static("raft")),
        kind_atom(kind),
        Value::binary_owned(payload),
        Value::Int(to as i64),
    ])
}

/// What a member last answered `Success` to, through one [`Peer`].
struct Acknowledged {
    vote: Vote<NodeId>,
    /// The last log id the member holds as the leader's (`None`: an empty log).
    position: Option<LogId<NodeId>>,
    /// The commit index sent with it, raised by the casts since.
    committed: Option<LogId<NodeId>>,
}

impl Acknowledged {
    /// Whether `rpc` only raises the commit index of this acknowledged position: no entries,
    /// the same vote and position, a newer commit index.
    fn only_raised_by(&self, rpc: &AppendEntriesRequest<TypeConfig>) -> bool {
        rpc.entries.is_empty()
            && rpc.vote == self.vote
            && rpc.prev_log_id == self.position
            && rpc.leader_commit > self.committed
    }
}

impl Peer {
    /// Casts `rpc` when it only raises the commit index of a position the member has
    /// acknowledged (see the module's doc); whether it did.
    fn cast_commit(&mut self, rpc: &AppendEntriesRequest<TypeConfig>) -> bool {
        let Some(acknowledged) = self.acknowledged.as_mut() else {
            return false;
        };
        if !acknowledged.only_raised_by(rpc) {
            return false;
        }
        let (Some(name), Ok(payload)) = (self.name.as_ref(), bincode::serialize(rpc)) else {
            return false;
        };
        let cast = raft_message("append", payload, self.target);
        if !self.mailbox.cast_remote(name, &self.endpoint, cast) {
            return false;
        }
        acknowledged.committed = rpc.leader_commit;
        true
    }

    async fn rpc<Req: Serialize, Resp: DeserializeOwned, E: DeserializeOwned>(
        &mut self,
        kind: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Result<Resp, E>, TransportError> {
        let name = self
            .name
            .clone()
            .ok_or_else(|| TransportError::BadAddress(self.addr.clone()))?;
        let call = raft_message(kind, bincode::serialize(request)?, self.target);
        let answer = self
            .mailbox
            .call_remote(&name, &self.endpoint, call, option.hard_ttl())
            .await?;
        match answer.as_tuple() {
            Some([Value::Atom(tag), body]) => match (tag.as_str(), body.as_bytes()) {
                ("ok", Some(bytes)) => Ok(Ok(bincode::deserialize(bytes)?)),
                ("error", Some(bytes)) => Ok(Err(bincode::deserialize(bytes)?)),
                ("error", None)
                    if body.as_tuple().and_then(|t| t.first()?.as_atom())
                        == Some(Atom::from_static("not_member")) =>
                {
                    Err(TransportError::NotMember(self.addr.clone()))
                }
                _ => Err(TransportError::Answer(answer)),
            },
            _ => Err(TransportError::Answer(answer)),
        }
    }

    fn failed<E: std::error::Error>(&self, e: TransportError) -> RPCError<NodeId, Member, E> {
        match e {
            TransportError::Call(crate::node::mailbox::CallError::Unreachable { .. })
            | TransportError::BadAddress(_)
            | TransportError::NotMember(_) => RPCError::Unreachable(Unreachable::new(&e)),
            other => RPCError::Network(NetworkError::new(&other)),
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        if self.cast_commit(&rpc) {
            return Ok(AppendEntriesResponse::Success);
        }
        let position = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        let answered = self.rpc("append", &rpc, &option).await;
        self.acknowledged = match &answered {
            Ok(Ok(AppendEntriesResponse::Success)) => Some(Acknowledged {
                vote: rpc.vote,
                position,
                committed: rpc.leader_commit,
            }),
            _ => None,
        };
        match answered {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.rpc("snapshot", &rpc, &option).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.rpc("vote", &rpc, &option).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) => Err(self.failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn append(
        term: u64,
        prev: u64,
        entries: &[u64],
        commit: Option<u64>,
    ) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(term, 1),
            prev_log_id: Some(log_id(term, prev)),
            entries: entries
                .iter()
                .map(|&i| Entry {
                    log_id: log_id(term, i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
            leader_commit: commit.map(|c| log_id(term, c)),
        }
    }

    #[test]
    fn only_an_append_raising_the_commit_of_an_acknowledged_position_is_cast() {
        let acknowledged = Acknowledged {
            vote: Vote::new_committed(2, 1),
            position: Some(log_id(2, 7)),
            committed: Some(log_id(2, 6)),
        };
        // The heartbeat openraft sends after committing entry 7.
        assert!(acknowledged.only_raised_by(&append(2, 7, &[], Some(7))));
        // The periodic heartbeat: nothing newer to tell, so its answer is awaited.
        assert!(!acknowledged.only_raised_by(&append(2, 7, &[], Some(6))));
        // Entries to append.
        assert!(!acknowledged.only_raised_by(&append(2, 7, &[8], Some(7))));
        // A position the member has not acknowledged (behind, or ahead of it).
        assert!(!acknowledged.only_raised_by(&append(2, 6, &[], Some(7))));
        assert!(!acknowledged.only_raised_by(&append(2, 8, &[], Some(8))));
        // Another term's leader.
        let mut other = append(2, 7, &[], Some(7));
        other.vote = Vote::new_committed(3, 1);
        assert!(!acknowledged.only_raised_by(&other));
    }
}
