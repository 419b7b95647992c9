//! The member's endpoint (its group's [`super::Names::endpoint`], [`super::answer::ENDPOINT_NAME`]
//! for group 0): what other members call it with.
//!
//! - `{raft, append | vote | snapshot, Payload, To}`: a Raft message for the member with Raft id
//!   `To` (see [`super::network`]); another id is answered `{error, {not_member, To}}`; an
//!   append may also come as a cast (no answer; one meant for another id is dropped);
//! - `ping`: answered `pong` (a node started with `--join` asks whether this is a member);
//! - `cluster`: `{ok, Info}`, this member's description of its group (a member that does not
//!   hold a group asks a holder);
//! - `subscriptions`: `{ok, [{Pid, all | [Resource]}]}`, the expiry handlers this member knows
//!   (a member that joined later learns them, [`super::expiry::learn_handlers`]), or
//!   `{error, leaving}` from a member that is stopping, `{error, learning}` from one that has
//!   not learned them yet;
//! - `leaving`: `true` while this member leaves the group (it stops), else `false` (a group's
//!   leader asks before it makes the voters fewer, [`super::holders`]);
//! - `recover`: an operator asks this member to form the group again from its copy, the group
//!   having lost a majority of its voters for good (`ash-gen-server recover`,
//!   [`super::recover`]): `{ok, #{group, old_id, new_id, records, snapshot}}` or
//!   `{error, Message}` (`{recover, lost_for_good}`: with a data directory too, the lost
//!   members' directories being lost for good);
//! - `{elect, Id}`: a leader without a vote asks this voter (Raft id `Id`) to stand for
//!   election ([`super::membership`]): `ok`, or an error when it is not that voter;
//! - `{join, NodeName, Id}`: a node asks to become a member (answered by the leader);
//! - `{leave, Id}`: a member leaves (answered by the leader);
//! - `{is_member, Id}`: whether the group counts the member `Id` (answered by the leader: a
//!   member that no longer holds the group drops its copy once it does not, [`super::holders`]);
//! - `{subscribe_for, Pid, all | [Resource]}`, `{unsubscribe_for, Pid}`: an expiry handler
//!   subscribed on another member: this member connects to its node and subscribes it too, so
//!   whichever member leads can notify it;
//! - `{forward, Request, Id}`: a request of docs/PROTOCOL.md a member passes to the leader
//!   (`Id` de-duplicates retries).
//!
//! A member that is not the leader answers the last three with
//! `{error, {not_leader, LeaderName | undefined}}`, or `{error, no_cluster}` before it belongs to
//! a cluster; the caller then asks the leader.

use super::Cluster;
use super::types::NodeId;
use crate::node::genserver::{self, From};
use crate::node::{Node, Process};
use crate::term::{Atom, Pid, Value};
use serde::Serialize;
use std::sync::{Arc, Weak};

struct Endpoint {
    cluster: Weak<Cluster>,
}

/// Registers the endpoint of `cluster`.
pub fn register(cluster: &Arc<Cluster>) -> Result<Pid, super::ClusterError> {
    let weak = Arc::downgrade(cluster);
    let name = &cluster.names.endpoint;
    cluster
        .node
        .register(name, |_| Arc::new(Endpoint { cluster: weak }))
        .ok_or_else(|| super::ClusterError::NameTaken(name.clone()))
}

fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

fn encoded<T: Serialize, E: Serialize>(result: Result<T, E>) -> Value {
    let (tag, bytes) = match result {
        Ok(v) => ("ok", bincode::serialize(&v)),
        Err(e) => ("error", bincode::serialize(&e)),
    };
    match bytes {
        Ok(bytes) => Value::pair(atom(tag), Value::binary_owned(bytes)),
        Err(e) => Value::pair(atom("error"), Value::from(e.to_string().as_str())),
    }
}

async fn raft_message(cluster: &Cluster, kind: &str, payload: &[u8]) -> Value {
    let bad = |e: bincode::Error| Value::pair(atom("error"), Value::from(e.to_string().as_str()));
    match kind {
        "append" => match bincode::deserialize(payload) {
            Ok(rpc) => {
                cluster.heard_from_leader();
                encoded(cluster.raft().append_entries(rpc).await)
            }
            Err(e) => bad(e),
        },
        "vote" => match bincode::deserialize(payload) {
            Ok(rpc) => encoded(cluster.raft().vote(rpc).await),
            Err(e) => bad(e),
        },
        "snapshot" => match bincode::deserialize(payload) {
            Ok(rpc) => {
                cluster.heard_from_leader();
                encoded(cluster.raft().install_snapshot(rpc).await)
            }
            Err(e) => bad(e),
        },
        _ => Value::pair(atom("error"), atom("unknown_raft_message")),
    }
}

async fn serve(cluster: Arc<Cluster>, from: From, request: Value) {
    // The requests named by an atom.
    let named = match request.as_atom().map(|a| a.as_str()) {
        Some("ping") => Some(atom("pong")),
        // This member's own description of the group (never passed on); `no_cluster` when it
        // is not in the group (any more).
        Some("cluster") if super::holders::is_member(&cluster) => Some(Value::pair(
            atom("ok"),
            super::membership::info(&cluster).await,
        )),
        Some("cluster") => Some(Value::pair(atom("error"), atom("no_cluster"))),
        Some("subscriptions") => Some(super::expiry::handlers_reply(&cluster)),
        Some("leaving") => Some(Value::boolean(super::holders::is_leaving(&cluster))),
        Some("recover") => Some(super::recover::recover(&cluster, false).await),
        _ => None,
    };
    if let Some(reply) = named {
        cluster.node.reply_now(&from, &reply);
        return;
    }
    if let Some((kind, payload, to)) = raft_parts(&request) {
        let reply = if to != cluster.id() {
            Value::pair(
                atom("error"),
                Value::pair(atom("not_member"), Value::Int(to as i64)),
            )
        } else {
            match (kind.as_atom(), payload.as_bytes()) {
                (Some(kind), Some(payload)) => raft_message(&cluster, kind.as_str(), payload).await,
                _ => Value::pair(atom("error"), atom("bad_raft_message")),
            }
        };
        cluster.node.reply_now(&from, &reply);
        return;
    }
    let reply = match request.as_tuple() {
        Some([tag, option])
            if tag.as_atom().map(|a| a.as_str()) == Some("recover")
                && option.as_atom().map(|a| a.as_str()) == Some("lost_for_good") =>
        {
            super::recover::recover(&cluster, true).await
        }
        Some([tag, name, id]) if tag.as_atom().map(|a| a.as_str()) == Some("join") => {
            match (
                name.as_bytes().and_then(|b| std::str::from_utf8(b).ok()),
                id.as_int(),
            ) {
                (Some(name), Some(id)) => {
                    super::membership::admit(&cluster, name.to_string(), id as NodeId).await
                }
                _ => Value::pair(atom("error"), atom("bad_join")),
            }
        }
        Some([tag, id]) if tag.as_atom().map(|a| a.as_str()) == Some("leave") => {
            match id.as_int() {
                Some(id) => super::membership::remove(&cluster, id as NodeId).await,
                None => Value::pair(atom("error"), atom("bad_leave")),
            }
        }
        Some([tag, id]) if tag.as_atom().map(|a| a.as_str()) == Some("elect") => {
            match id.as_int() {
                Some(id) => super::membership::elect(&cluster, id as NodeId).await,
                None => Value::pair(atom("error"), atom("bad_elect")),
            }
        }
        Some([tag, id]) if tag.as_atom().map(|a| a.as_str()) == Some("is_member") => {
            match id.as_int() {
                Some(id) => super::holders::answer_is_member(&cluster, id as NodeId),
                None => Value::pair(atom("error"), atom("bad_is_member")),
            }
        }
        Some([tag, Value::Pid(pid), resources])
            if tag.as_atom().map(|a| a.as_str()) == Some("subscribe_for") =>
        {
            let resources = resources
                .as_list()
                .map(|list| list.iter().filter_map(Value::as_atom).collect());
            if let Ok(peer) = pid.node.as_str().parse() {
                let _ = cluster.node.connect(&peer).await;
            }
            cluster.records.subscribe_expiry(**pid, resources);
            atom("ok")
        }
        Some([tag, Value::Pid(pid)])
            if tag.as_atom().map(|a| a.as_str()) == Some("unsubscribe_for") =>
        {
            cluster.records.unsubscribe_expiry(pid);
            atom("ok")
        }
        Some([tag, request, id]) if tag.as_atom().map(|a| a.as_str()) == Some("forward") => {
            let id = id.as_int().unwrap_or_default() as u64;
            match super::router::serve_as_leader(&cluster, request.clone(), id, &from).await {
                Some(reply) => reply,
                // Served straight to `from` by the record service.
                None => return,
            }
        }
        _ => Value::pair(atom("error"), Value::pair(atom("unknown_request"), request)),
    };
    // Answered from this task: the member that called waits for it (a Raft message's answer
    // is on the path of every write).
    cluster.node.reply_now(&from, &reply);
}

/// A cast `{raft, append, Payload, To}` (an append that only raises the commit index, see
/// [`super::network`]): handled as the call would be, the answer dropped.
async fn serve_cast(cluster: Arc<Cluster>, request: Value) {
    if let Some((kind, payload, to)) = raft_parts(&request)
        && kind.as_atom().map(|a| a.as_str()) == Some("append")
        && to == cluster.id()
        && let Some(payload) = payload.as_bytes()
    {
        raft_message(&cluster, "append", payload).await;
    } else {
        tracing::debug!(?request, "the raft endpoint ignored a cast");
    }
}

/// The kind, payload and addressee of a Raft message `{raft, Kind, Payload, To}`.
fn raft_parts(request: &Value) -> Option<(&Value, &Value, NodeId)> {
    match request.as_tuple()? {
        [tag, kind, payload, Value::Int(to)]
            if tag.as_atom().map(|a| a.as_str()) == Some("raft") =>
        {
            Some((kind, payload, *to as NodeId))
        }
        _ => None,
    }
}

impl Process for Endpoint {
    fn deliver(&self, _node: &Arc<Node>, _from: Option<Pid>, message: Value) {
        let Some(cluster) = self.cluster.upgrade() else {
            return;
        };
        match genserver::classify(message) {
            genserver::GenMessage::Call(from, request) => {
                tokio::spawn(serve(cluster, from, request));
            }
            genserver::GenMessage::Cast(request) => {
                tokio::spawn(serve_cast(cluster, request));
            }
            other => tracing::debug!(message = ?other, "the raft endpoint ignored a message"),
        }
    }
}
