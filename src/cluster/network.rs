//! Raft's messages between members, carried as distribution messages: a call to the peer's
//! endpoint of the same group ([`super::Names::endpoint`]), `{raft, Kind, Payload, To}` with the Raft request
//! serialized (bincode) in a binary and `To` the Raft id it is meant for, answered
//! `{ok, Payload}` or `{error, Payload}`, or `{error, {not_member, Id}}` by a node that is not
//! `To`: a member restarted under the same name is a new member (a new id) and must not take
//! the messages meant for its earlier run (its log is not that run's). No other transport or
//! port: the members' distribution connections carry it.

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
}

/// What a Raft message is, on the wire.
pub fn kind_atom(kind: &str) -> Value {
    Value::Atom(Atom::new(kind).expect("a short atom"))
}

impl Peer {
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
        let payload = bincode::serialize(request)?;
        let call = Value::tuple(vec![
            Value::Atom(Atom::from_static("raft")),
            kind_atom(kind),
            Value::binary_owned(payload),
            Value::Int(self.target as i64),
        ]);
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
        match self.rpc("append", &rpc, &option).await {
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
