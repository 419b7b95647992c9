//! The `ash_gen_server` process of a cluster member (the router of its group, named by
//! [`super::Names::router`]): every request of docs/PROTOCOL.md, for every record, answered as
//! a single node would.
//!
//! Writes (`define`, `create`, `upsert`, `bulk_create`, `update`, `destroy`, `update_where`,
//! `destroy_where`, `clear`) are appended to the Raft log by the leader and answered once a
//! majority holds them (the leader's state machine gives the reply). Reads are served by the
//! leader's record service after a linearizability check, or within the leader's
//! [`super::read_lease`] (a read never returns a value older than an acknowledged write). A
//! member that does not lead passes the request to the leader
//! (`{forward, Request, Id}` to its [`super::endpoint`]) and relays the answer, retrying with
//! the same request id — applied at most once — while a new leader is elected; a member that
//! holds no copy of its group ([`super::holders`]) passes it to the leader it last heard of,
//! or to a holder, which passes it on. `ping`, `stats`,
//! `subscribe`, `unsubscribe` and `fault` are served by the member itself; `cluster` describes
//! the cluster.

use super::Cluster;
use super::answer::{Answer, not_leader};
use super::types::Command;
use crate::node::genserver::{self, From};
use crate::node::{Mailbox, Node, Process};
use crate::protocol::error::Error;
use crate::protocol::request::{Request, split_request_id};
use crate::term::{Atom, Pid, Value};
use crate::wire::etf;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How long a request waits for a leader (an election) before it is answered `unavailable`.
pub const LEADER_WAIT: Duration = Duration::from_secs(10);

/// How long a member that holds no copy of a group waits for a holder's description of it.
const ASK_HOLDER: Duration = Duration::from_secs(5);

/// How long a forwarded request may take on the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

struct Router {
    cluster: Weak<Cluster>,
}

/// Registers the router of `cluster` under its group's router name (`ash_gen_server` for
/// group 0).
pub fn register(cluster: &Arc<Cluster>) -> Result<Pid, super::ClusterError> {
    let weak = Arc::downgrade(cluster);
    let router = |_| -> Arc<dyn crate::node::Process> { Arc::new(Router { cluster: weak }) };
    let node = &cluster.node;
    let names = &cluster.names;
    if cluster.options.adopt {
        // The record service has the name until now: it moves to its member name in the same
        // step, so no request to the name finds nobody.
        node.register_over(&names.router, &names.records, router)
            .ok_or_else(|| super::ClusterError::NameTaken(names.records.clone()))
    } else {
        node.register(&names.router, router)
            .ok_or_else(|| super::ClusterError::NameTaken(names.router.clone()))
    }
}

/// What a member does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Through the log.
    Write,
    /// On the leader, after a linearizability check.
    Read,
    /// On this member.
    Local,
}

/// Where a request of `kind` (see [`Request::kind`]) is served.
pub fn route_of(kind: &str) -> Route {
    match kind {
        "define" | "create" | "upsert" | "bulk_create" | "update" | "destroy" | "update_where"
        | "destroy_where" | "clear" => Route::Write,
        "ping" | "stats" | "subscribe" | "unsubscribe" | "fault" => Route::Local,
        _ => Route::Read,
    }
}

fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

fn unavailable(text: impl Into<String>) -> Value {
    Error::Unavailable(text.into()).to_reply()
}

/// Hands the call to the member's record service, which replies to `from` itself.
fn to_records(cluster: &Cluster, from: &From, request: Value) {
    let node = &cluster.node;
    match node.whereis(&cluster.names.records) {
        Some(pid) => {
            node.send(&pid, &genserver::call_message(from, request));
        }
        None => node.reply(from, &unavailable("the record service is not running")),
    }
}

/// Serves `request` on the leader: `Some(reply)`, or `None` when the record service replies
/// to `from` itself. A member that does not lead answers `{error, {not_leader, _}}`.
pub async fn serve_as_leader(
    cluster: &Arc<Cluster>,
    request: Value,
    id: u64,
    from: &From,
) -> Option<Value> {
    if !cluster.is_leader() {
        return Some(not_leader(cluster));
    }
    let kind =
        match Request::parse_with(&request, cluster.node.config.limits.max_records_per_request) {
            Ok(parsed) => parsed.kind(),
            Err(e) => return Some(e.to_reply()),
        };
    match route_of(kind) {
        Route::Write => {
            let mut term = Vec::new();
            etf::encode(&request, &mut term);
            let raft = cluster.raft();
            let write = raft.client_write(Command::Request {
                id,
                at: crate::record::registry::wall_ms(),
                term,
            });
            // A leader cut off from the majority stays leader until it hears a newer term: its
            // writes wait for a commit that cannot come.
            match tokio::time::timeout(LEADER_WAIT, write).await {
                Ok(Ok(written)) => Some(match etf::decode(&written.data.0) {
                    Ok((reply, _)) => reply,
                    Err(e) => unavailable(format!("the reply does not decode: {e}")),
                }),
                Ok(Err(e)) => Some(match e.forward_to_leader() {
                    Some(_) => not_leader(cluster),
                    None => unavailable(e.to_string()),
                }),
                Err(_) => Some(unavailable(format!(
                    "not committed within {} s: no majority of the members is reachable \
                     (the write may still be applied later)",
                    LEADER_WAIT.as_secs()
                ))),
            }
        }
        Route::Read | Route::Local => {
            let raft = cluster.raft();
            let ensure = cluster.read_lease.ensure(&raft, cluster.id());
            match tokio::time::timeout(LEADER_WAIT, ensure).await {
                Ok(Ok(_)) => {
                    to_records(cluster, from, request);
                    None
                }
                Ok(Err(e)) => Some(match e.forward_to_leader() {
                    Some(_) => not_leader(cluster),
                    None => unavailable(e.to_string()),
                }),
                Err(_) => Some(unavailable(format!(
                    "leadership not confirmed within {} s: no majority of the members is \
                     reachable",
                    LEADER_WAIT.as_secs()
                ))),
            }
        }
    }
}

/// Calls every other member's endpoint with `message` (expiry handler subscriptions).
pub(crate) async fn tell_members(cluster: &Arc<Cluster>, message: Value) {
    let me = cluster.node.config.name.to_string();
    let mailbox = Mailbox::new(&cluster.node);
    for name in super::holders::everyone(cluster) {
        if name == me {
            continue;
        }
        let Ok(peer) = name.parse() else { continue };
        if let Err(e) = mailbox
            .call_remote(
                &peer,
                &cluster.names.endpoint,
                message.clone(),
                Duration::from_secs(5),
            )
            .await
        {
            tracing::warn!(member = %name, error = %e, "could not pass an expiry handler subscription on");
        }
    }
}

/// Serves a call: on this member, as the leader, or through the leader.
async fn route(cluster: Arc<Cluster>, from: From, request: Value) {
    let (client_id, request) = match split_request_id(&request) {
        Ok((id, request)) => (id, request.clone()),
        Err(e) => {
            cluster.node.reply(&from, &e.to_reply());
            return;
        }
    };
    if request.as_atom().map(|a| a.as_str()) == Some("cluster") {
        // A member that holds no copy of the group asks one that does.
        if super::holders::placed(&cluster) && !super::holders::is_member(&cluster) {
            let mailbox = Mailbox::new(&cluster.node);
            let mut last = unavailable("no member holding the group answered");
            for holder in super::holders::candidates(&cluster) {
                let asked = mailbox
                    .call_remote_watched(
                        &holder,
                        &cluster.names.endpoint,
                        request.clone(),
                        ASK_HOLDER,
                    )
                    .await;
                match asked.map(Answer::of) {
                    Ok(Answer::Reply(reply)) => {
                        last = reply;
                        break;
                    }
                    Ok(_) => super::holders::note_leader(&cluster, None),
                    Err(e) => {
                        super::holders::note_leader(&cluster, None);
                        last = unavailable(format!(
                            "{holder}, holding the group, did not answer: {e}"
                        ));
                    }
                }
            }
            cluster.node.reply(&from, &last);
            return;
        }
        let info = super::membership::info(&cluster).await;
        cluster.node.reply(&from, &Value::pair(atom("ok"), info));
        return;
    }
    let parsed =
        match Request::parse_with(&request, cluster.node.config.limits.max_records_per_request) {
            Ok(parsed) => parsed,
            Err(e) => {
                cluster.node.reply(&from, &e.to_reply());
                return;
            }
        };
    if route_of(parsed.kind()) == Route::Local {
        let broadcast = match &parsed {
            Request::Subscribe(s) => Some(Value::tuple(vec![
                atom("subscribe_for"),
                Value::Pid(Box::new(from.pid)),
                super::expiry::handled_resources(s.0.as_deref()),
            ])),
            Request::Unsubscribe => Some(Value::pair(
                atom("unsubscribe_for"),
                Value::Pid(Box::new(from.pid)),
            )),
            _ => None,
        };
        to_records(&cluster, &from, request);
        if let Some(message) = broadcast {
            tell_members(&cluster, message).await;
        }
        return;
    }
    // The client's id (below 2^63) or one of ours (2^63 and above): a retry of either, by the
    // client or by this loop, is applied once.
    let id = client_id.unwrap_or_else(|| rand::random::<u64>() | 1 << 63);
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    let mailbox = Mailbox::new(&cluster.node);
    // The member a `not_leader` answer named: asked next.
    let mut hint: Option<erl_dist::node::NodeName> = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let target = match hint.take() {
            Some(name) => Some((None, name)),
            None => match super::holders::target(&cluster) {
                // A member that holds no copy of the group asks a holder.
                Some(name) if cluster.leader().is_none() => Some((None, name)),
                _ => cluster
                    .await_leader(left)
                    .await
                    .map(|(id, n)| (Some(id), n)),
            },
        };
        let reply = match target {
            None => unavailable("no leader: a majority of the members is unreachable"),
            Some((Some(leader), _)) if leader == cluster.id() => {
                match serve_as_leader(&cluster, request.clone(), id, &from).await {
                    Some(reply) => reply,
                    None => return,
                }
            }
            Some((_, name)) => {
                let forward = Value::tuple(vec![
                    atom("forward"),
                    request.clone(),
                    Value::Int(id as i64),
                ]);
                // Watched: a connection lost after the forward went out ends the wait at once
                // (the loop asks again, another member if need be), not after 30 s.
                match mailbox
                    .call_remote_watched(&name, &cluster.names.endpoint, forward, FORWARD_TIMEOUT)
                    .await
                {
                    Ok(reply) => reply,
                    Err(e) => {
                        super::holders::note_leader(&cluster, None);
                        unavailable(format!("the leader {name} did not answer: {e}"))
                    }
                }
            }
        };
        let reply = match Answer::of(reply) {
            Answer::Reply(reply) => reply,
            Answer::NoCluster | Answer::NotLeader(_) | Answer::Unavailable(_)
                if tokio::time::Instant::now() >= deadline =>
            {
                unavailable("no leader: a majority of the members is unreachable")
            }
            Answer::NotLeader(Some(leader)) => {
                super::holders::note_leader(&cluster, Some(leader.clone()));
                hint = Some(leader);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Answer::NoCluster | Answer::NotLeader(None) | Answer::Unavailable(_) => {
                super::holders::note_leader(&cluster, None);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        cluster.node.reply(&from, &reply);
        return;
    }
}

impl Process for Router {
    fn deliver(&self, node: &Arc<Node>, _from: Option<Pid>, message: Value) {
        let Some(cluster) = self.cluster.upgrade() else {
            return;
        };
        match genserver::classify(message) {
            genserver::GenMessage::Call(from, request) => {
                tokio::spawn(route(cluster, from, request));
            }
            // `keep_alive` casts: the record lives on every member holding its group; only the
            // leader's timers count, so the cast goes where the leader is.
            genserver::GenMessage::Cast(request) => {
                let cast = genserver::cast_message(request);
                if cluster.is_leader() {
                    if let Some(pid) = node.whereis(&cluster.names.records) {
                        node.send(&pid, &cast);
                    }
                } else if let Some(name) = super::holders::target(&cluster)
                    && let (Ok(name_atom), Ok(server)) = (
                        Atom::new(&name.to_string()),
                        Atom::new(&cluster.names.router),
                    )
                {
                    // The leader's router, or a holder's that passes it on.
                    let from = node.processes.pid(0);
                    node.write_to(name_atom, |w| w.reg_send(&from, server, |t| t.term(&cast)));
                }
            }
            genserver::GenMessage::Info(message) => {
                tracing::debug!(?message, "the cluster router ignored a message")
            }
        }
    }
}
