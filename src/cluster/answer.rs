//! What members tell each other about the cluster itself: the name of each member's
//! endpoint, the answers that send a request elsewhere (`no_cluster`, `not_leader`,
//! `unavailable`), built and read here only, and the request to join a group; and the readers
//! of `{ok, _}` and `{error, _}` replies the fan-out and the front router share.

use super::Cluster;
use crate::node::Mailbox;
use crate::node::mailbox::CallError;
use crate::term::{Atom, Value};
use erl_dist::node::NodeName;
use std::time::Duration;

/// The registered name of each member's endpoint (see [`super::endpoint`]).
pub const ENDPOINT_NAME: &str = "ash_gen_server_raft";

fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

/// `{error, {not_leader, Leader | undefined}}` or `{error, no_cluster}` for `cluster`.
pub fn not_leader(cluster: &Cluster) -> Value {
    let metrics = cluster.raft().metrics().borrow().clone();
    if metrics
        .membership_config
        .membership()
        .get_node(&cluster.id())
        .is_none()
    {
        return Value::pair(atom("error"), atom("no_cluster"));
    }
    let leader = match cluster.leader() {
        Some((_, name)) => Value::from(name.to_string().as_str()),
        None => atom("undefined"),
    };
    Value::pair(atom("error"), Value::pair(atom("not_leader"), leader))
}

/// Whether `reply` is `{error, _}`.
pub fn is_error(reply: &Value) -> bool {
    matches!(reply.as_tuple(), Some([Value::Atom(tag), _]) if tag.as_str() == "error")
}

/// `X` of the reply `{ok, X}`.
pub fn ok_body(reply: &Value) -> Option<&Value> {
    match reply.as_tuple() {
        Some([Value::Atom(tag), body]) if tag.as_str() == "ok" => Some(body),
        _ => None,
    }
}

/// What an answer of a member's endpoint or router means to the member that asked.
#[derive(Debug)]
pub enum Answer {
    /// The request's own reply.
    Reply(Value),
    /// `{error, no_cluster}`: the member does not belong to a cluster yet.
    NoCluster,
    /// `{error, {not_leader, Leader | undefined}}`: ask the leader named, if any.
    NotLeader(Option<NodeName>),
    /// `{error, {unavailable, _}}`: no majority now; the reply as it came.
    Unavailable(Value),
}

impl Answer {
    /// Reads `reply`.
    pub fn of(reply: Value) -> Answer {
        let reason = match reply.as_tuple() {
            Some([e, reason]) if e.as_atom().map(|a| a.as_str()) == Some("error") => reason,
            _ => return Answer::Reply(reply),
        };
        if reason.as_atom().map(|a| a.as_str()) == Some("no_cluster") {
            return Answer::NoCluster;
        }
        match reason.as_tuple() {
            Some([tag, leader]) if tag.as_atom().map(|a| a.as_str()) == Some("not_leader") => {
                Answer::NotLeader(
                    leader
                        .as_bytes()
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|s| s.parse().ok()),
                )
            }
            Some([tag, _]) if tag.as_atom().map(|a| a.as_str()) == Some("unavailable") => {
                Answer::Unavailable(reply)
            }
            _ => Answer::Reply(reply),
        }
    }
}

/// Asks `target`'s endpoint to admit this member (`{join, Name, Id}`, passed on to the
/// leader). Monitored: a peer that is not a member yet (no endpoint: still starting, or
/// deciding) answers `noproc` at once instead of leaving the call to time out.
pub async fn ask_to_join(
    cluster: &Cluster,
    mailbox: &Mailbox,
    target: &NodeName,
) -> Result<Answer, CallError> {
    let request = Value::tuple(vec![
        atom("join"),
        Value::from(cluster.node.config.name.to_string().as_str()),
        Value::Int(cluster.id() as i64),
    ]);
    mailbox
        .call_remote_monitored(
            target,
            &cluster.names.endpoint,
            request,
            Duration::from_secs(60),
        )
        .await
        .map(Answer::of)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(reason: Value) -> Value {
        Value::pair(atom("error"), reason)
    }

    #[test]
    fn answers_are_read_once() {
        assert!(matches!(
            Answer::of(error(atom("no_cluster"))),
            Answer::NoCluster
        ));
        match Answer::of(error(Value::pair(
            atom("not_leader"),
            Value::from("a@127.0.0.1"),
        ))) {
            Answer::NotLeader(Some(name)) => assert_eq!(name.to_string(), "a@127.0.0.1"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Answer::of(error(Value::pair(atom("not_leader"), atom("undefined")))),
            Answer::NotLeader(None)
        ));
        let unavailable = error(Value::pair(atom("unavailable"), Value::from("no majority")));
        assert!(
            matches!(Answer::of(unavailable.clone()), Answer::Unavailable(v) if v == unavailable)
        );
        let not_found = error(atom("not_found"));
        assert!(matches!(Answer::of(not_found.clone()), Answer::Reply(v) if v == not_found));
        let ok = Value::pair(atom("ok"), Value::Int(1));
        assert!(matches!(Answer::of(ok.clone()), Answer::Reply(v) if v == ok));
    }
}
