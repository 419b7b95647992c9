//! Who belongs to the cluster and who votes.
//!
//! This is group 0's membership, and that of a cluster of one group; with several groups,
//! [`super::holders`] places each other group on some of group 0's members.
//!
//! A node started with `--cluster` (or `--replicas`) and no `--join` forms a cluster of one; a
//! node started with `--join` alone is a member when a peer is one or is deciding with peers of
//! its own ([`runs_cluster`], [`super::role`]). A node with `--join`
//! asks its peers to admit it (`{join, Name, Id}` to their endpoint, passed on to the leader);
//! when no reachable peer belongs to a cluster yet, the node whose name sorts first among
//! itself and the peers that answered forms it, so members started together make one cluster.
//!
//! The leader admits a node as a learner and, once it has caught up with the log (received the
//! snapshot, if it needs one), lets the [`super::ClusterOptions::replicas`] members ranked first
//! by rendezvous hashing of their names ([`super::placement::replicas_of`]) vote; the others
//! stay learners. A voter unreachable for [`GONE_AFTER`] gives its vote to a reachable member
//! that has caught up, when there is one ([`choose_voters`]), and takes it back by the same
//! ranking once it is reachable and caught up again. A node restarted
//! under the same name comes back with a new id: its old id is removed when it is admitted. A
//! member stopped with SIGTERM leaves first (`{leave, Id}`), so the others keep a majority.
//!
//! A leader that the change of voters left without a vote (openraft lets a learner lead on:
//! the member that formed the cluster, when others rank first) asks the voter furthest along
//! its log to stand for election (`hand_on_lead`, `{elect, Id}` to its endpoint): every
//! commit then counts the leader's own copy again, and the voters carry the leader's load. The
//! cluster is not `healthy` until a voter leads.
//!
//! With `--data-dir` a member keeps its id, vote and log ([`super::identity`],
//! [`super::log_store`]): restarted, it is still a member (no `--join` needed), and it stays
//! one on SIGTERM, expecting to come back; `ash-gen-server drain` still makes it leave.

use super::Cluster;
use super::answer::{Answer, ENDPOINT_NAME, not_leader};
use super::types::{Member, NodeId};
pub use super::view::{GONE_AFTER, eligible, gone, members, voters};
use crate::node::Mailbox;
use crate::node::connection::ConnectError;
use crate::node::mailbox::CallError;
use crate::term::{Atom, Value};
use erl_dist::node::NodeName;
use openraft::ChangeMembers;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

fn ok() -> Value {
    atom("ok")
}

fn error(reason: String) -> Value {
    crate::protocol::error::Error::Unavailable(reason).to_reply()
}

/// Who should vote in `group` among `members`: the first `replicas` by rendezvous hashing of
/// their names for the group.
pub fn desired_voters(
    members: &BTreeMap<NodeId, String>,
    replicas: usize,
    group: u32,
) -> BTreeSet<NodeId> {
    let names: Vec<&str> = members.values().map(String::as_str).collect();
    let chosen = super::placement::replicas_of(group, &names, replicas.max(1));
    members
        .iter()
        .filter(|(_, name)| chosen.contains(&name.as_str()))
        .map(|(id, _)| *id)
        .collect()
}

/// Waits (up to a few seconds) until Raft shows the membership its reopened log holds.
async fn reopened_membership(cluster: &Cluster) {
    if cluster
        .instance()
        .reopened
        .as_ref()
        .is_none_or(|r| r.entries == 0)
        && cluster.instance().snapshots.latest().is_none()
    {
        return;
    }
    let mut metrics = cluster.raft().metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while members(cluster).is_empty() {
        if tokio::time::timeout_at(deadline, metrics.changed())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Forms or joins the cluster; returns once this member belongs to it. A member whose data
/// directory holds a log already belongs to the cluster it records (Raft elects a leader among
/// the members it knows); one removed meanwhile asks the members it knows to admit it again.
pub async fn form(cluster: Arc<Cluster>) {
    if super::holders::placed(&cluster) {
        return super::holders::form(cluster).await;
    }
    let me = cluster.node.config.name.to_string();
    let mailbox = Mailbox::new(&cluster.node);
    let started = tokio::time::Instant::now();
    reopened_membership(&cluster).await;
    loop {
        let known = members(&cluster);
        if known.contains_key(&cluster.id()) {
            tracing::info!(id = cluster.id(), "member of the cluster");
            return;
        }
        let mut peers = cluster.options.join.clone();
        for name in known.values() {
            if let Ok(peer) = name.parse::<erl_dist::node::NodeName>()
                && *name != me
                && !peers.contains(&peer)
            {
                peers.push(peer);
            }
        }
        if peers.is_empty() {
            initialize(&cluster).await;
            // Give the membership entry time to apply before looking again (a second
            // `initialize` is refused, and openraft logs that as an error).
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let (joined, without_cluster) = ask_to_join_any(&cluster, &mailbox, &peers).await;
        if !joined && known.is_empty() {
            // Nobody reachable has a cluster: the first name forms it (after a grace period
            // when some peers did not answer, so members started together find each other).
            let first = without_cluster.iter().all(|other| me < *other);
            let all_answered = without_cluster.len() == peers.len();
            if first && (all_answered || started.elapsed() > Duration::from_secs(3)) {
                initialize(&cluster).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks `peers` in turn to admit this member (following `not_leader` answers to the leader)
/// until one does: whether one did, and the peers that answered they belong to no cluster.
async fn ask_to_join_any(
    cluster: &Arc<Cluster>,
    mailbox: &Mailbox,
    peers: &[NodeName],
) -> (bool, Vec<String>) {
    let mut without_cluster = Vec::new();
    for peer in peers {
        let mut target = peer.clone();
        for _hop in 0..3 {
            match super::answer::ask_to_join(cluster, mailbox, &target).await {
                Ok(Answer::Reply(v)) if v == ok() => return (true, without_cluster),
                Ok(Answer::NoCluster) => {
                    without_cluster.push(target.to_string());
                    break;
                }
                Ok(Answer::NotLeader(Some(leader))) => target = leader,
                Ok(answer) => {
                    tracing::debug!(%target, ?answer, "could not join yet");
                    break;
                }
                // No endpoint: a single node becomes a member when asked (then admits this
                // one); a node still deciding, or a BEAM node, does not.
                Err(CallError::NoProcess(_)) if become_member(mailbox, &target).await => {}
                Err(e) => {
                    tracing::debug!(%target, error = %e, "could not reach a peer to join");
                    break;
                }
            }
        }
    }
    (false, without_cluster)
}

/// A member of group 0 that hears from no leader ([`Cluster::leader_silent`]), while its log
/// still counts it, asks the others whether the cluster still does (the leader removed it
/// while it was unreachable, [`remove_lost`]); once not, it drops its copy and joins again, as
/// a new member, through the members it knew (never forming a cluster of its own).
async fn rejoin_if_removed(cluster: &Arc<Cluster>, mailbox: &Mailbox) {
    if super::holders::placed(cluster)
        || !cluster.holds_something()
        || !cluster.leader_silent()
        || cluster.leaving.load(std::sync::atomic::Ordering::Acquire)
    {
        return;
    }
    let me = cluster.node.config.name.to_string();
    let knew: Vec<String> = members(cluster)
        .into_values()
        .filter(|name| *name != me)
        .collect();
    let Some(leader) = super::holders::dropped_by(cluster, mailbox, knew.clone()).await else {
        return;
    };
    tracing::warn!(%leader, "the cluster removed this member while it was unreachable: joining again");
    if let Err(e) = cluster.reset(&leader).await {
        tracing::error!(error = %e, "could not drop the cluster's records to join again");
        return;
    }
    let peers: Vec<NodeName> = std::iter::once(leader)
        .chain(knew.iter().filter_map(|n| n.parse().ok()))
        .collect();
    let cluster = cluster.clone();
    tokio::spawn(async move {
        let mailbox = Mailbox::new(&cluster.node);
        while !members(&cluster).contains_key(&cluster.id())
            && !cluster.leaving.load(std::sync::atomic::Ordering::Acquire)
        {
            if ask_to_join_any(&cluster, &mailbox, &peers).await.0 {
                tracing::info!(id = cluster.id(), "joined the cluster again");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// On group 0's leader: removes the members that do not vote and have been unreachable for
/// `--remove-lost-after` (a voter gone that long gave its vote to a reachable member first,
/// [`reconcile`], when one was there).
async fn remove_lost(cluster: &Cluster) -> Result<(), String> {
    if super::holders::placed(cluster) {
        return Ok(());
    }
    let voting = voters(cluster);
    let lost: BTreeSet<NodeId> = cluster
        .unreachable
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|(id, since)| {
            **id != cluster.id()
                && !voting.contains(id)
                && since.elapsed() >= cluster.options.remove_lost_after
        })
        .map(|(id, _)| *id)
        .collect();
    if lost.is_empty() {
        return Ok(());
    }
    let all = members(cluster);
    let names: Vec<String> = lost.iter().filter_map(|id| all.get(id).cloned()).collect();
    let raft = cluster.raft();
    let change = raft.change_membership(ChangeMembers::RemoveNodes(lost.clone()), false);
    match tokio::time::timeout(CHANGE_WAIT, change).await {
        Ok(done) => done.map_err(|e| e.to_string())?,
        Err(_) => return Err("the removal of lost members did not commit in time".into()),
    };
    tracing::warn!(
        removed = ?names,
        after_s = cluster.options.remove_lost_after.as_secs(),
        "members unreachable too long removed from the cluster"
    );
    metrics::counter!("ash_gen_server_cluster_members_removed_total").increment(lost.len() as u64);
    Ok(())
}

async fn initialize(cluster: &Cluster) {
    let mut members = BTreeMap::new();
    members.insert(cluster.id(), cluster.member());
    // Said before the call: the other groups' `holders::form` may see the membership it makes
    // (Raft applies it) before the call returns, and must know then that this member formed it.
    let before = cluster
        .founded
        .swap(true, std::sync::atomic::Ordering::AcqRel);
    match cluster.raft().initialize(members).await {
        Ok(()) => tracing::info!(id = cluster.id(), "formed a new cluster"),
        Err(e) => {
            if !before {
                cluster
                    .founded
                    .store(false, std::sync::atomic::Ordering::Release);
            }
            tracing::debug!(error = %e, "initialize")
        }
    }
}

/// On the leader: admits the node `name` with Raft id `id`.
pub async fn admit(cluster: &Arc<Cluster>, name: String, id: NodeId) -> Value {
    if !cluster.is_leader() {
        return not_leader(cluster);
    }
    if !cluster.admitting.load(std::sync::atomic::Ordering::Acquire) {
        return error("this member is still taking its records into the cluster".to_string());
    }
    let known = members(cluster);
    if known.get(&id) == Some(&name) {
        return ok();
    }
    if !super::holders::admits(cluster, &name) {
        return error(format!(
            "{name} does not hold group {}",
            cluster.options.group
        ));
    }
    if let Err(e) = cluster
        .raft()
        .add_learner(id, Member { addr: name.clone() }, true)
        .await
    {
        return match e.forward_to_leader() {
            Some(_) => not_leader(cluster),
            None => error(format!("could not add {name}: {e}")),
        };
    }
    // The same node from an earlier run: it no longer has that run's Raft state.
    let stale: BTreeSet<NodeId> = known
        .iter()
        .filter(|(old, n)| **n == name && **old != id)
        .map(|(old, _)| *old)
        .collect();
    if !stale.is_empty() {
        if let Err(e) = remove_ids(cluster, stale.clone()).await {
            return error(format!("could not remove the earlier run of {name}: {e}"));
        }
        tracing::info!(node = %name, ids = ?stale, "removed an earlier run of a member");
    }
    match reconcile(cluster).await {
        Ok(()) => {
            tracing::info!(node = %name, id, "admitted a member");
            metrics::counter!("ash_gen_server_cluster_admissions_total").increment(1);
            ok()
        }
        Err(e) => error(e),
    }
}

async fn remove_ids(cluster: &Cluster, ids: BTreeSet<NodeId>) -> Result<(), String> {
    let voting: BTreeSet<NodeId> = voters(cluster).intersection(&ids).copied().collect();
    if !voting.is_empty() {
        cluster
            .raft()
            .change_membership(ChangeMembers::RemoveVoters(voting), false)
            .await
            .map_err(|e| e.to_string())?;
    }
    let still: BTreeSet<NodeId> = ids
        .into_iter()
        .filter(|id| members(cluster).contains_key(id))
        .collect();
    if !still.is_empty() {
        cluster
            .raft()
            .change_membership(ChangeMembers::RemoveNodes(still), false)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// On the leader: removes the member `id` (it is leaving).
pub async fn remove(cluster: &Arc<Cluster>, id: NodeId) -> Value {
    if !cluster.is_leader() {
        return not_leader(cluster);
    }
    if !members(cluster).contains_key(&id) {
        return ok();
    }
    let mut ids = BTreeSet::new();
    ids.insert(id);
    match remove_ids(cluster, ids).await {
        Ok(()) => {
            let _ = reconcile(cluster).await;
            ok()
        }
        Err(e) => error(e),
    }
}

/// How long a change of the voters may wait to commit.
const CHANGE_WAIT: Duration = Duration::from_secs(10);

/// Who should vote in `group` among the `eligible` members when `gone` ones are unreachable:
/// the first `replicas` of the others by rendezvous hashing ([`desired_voters`]); when they
/// are too few, the gone members that vote now keep their votes, so the voters are never fewer
/// for some being unreachable (a spare member takes a lost voter's place; without a spare,
/// nothing changes until the voter is back or removed).
pub fn choose_voters(
    eligible: &BTreeMap<NodeId, String>,
    voting: &BTreeSet<NodeId>,
    gone: &BTreeSet<NodeId>,
    replicas: usize,
    group: u32,
) -> BTreeSet<NodeId> {
    let live: BTreeMap<NodeId, String> = eligible
        .iter()
        .filter(|(id, _)| !gone.contains(id))
        .map(|(id, name)| (*id, name.clone()))
        .collect();
    let mut want = desired_voters(&live, replicas, group);
    let wanted = replicas.min(eligible.len()).max(1);
    if want.len() < wanted {
        let keeping: BTreeMap<NodeId, String> = eligible
            .iter()
            .filter(|(id, _)| gone.contains(id) && voting.contains(id))
            .map(|(id, name)| (*id, name.clone()))
            .collect();
        want.extend(desired_voters(&keeping, wanted - want.len(), group));
    }
    want
}

/// On the leader: lets the desired members vote (among those [`eligible`], a reachable one
/// in the place of a voter gone for [`GONE_AFTER`]).
async fn reconcile(cluster: &Cluster) -> Result<(), String> {
    if super::holders::placed(cluster) {
        return super::holders::reconcile(cluster).await;
    }
    let voting = voters(cluster);
    let gone = gone(cluster);
    let want = choose_voters(
        &eligible(cluster),
        &voting,
        &gone,
        cluster.options.replicas,
        cluster.options.group,
    );
    if want.is_empty() || want == voting {
        return Ok(());
    }
    let replaced: BTreeSet<NodeId> = voting
        .difference(&want)
        .filter(|id| gone.contains(id))
        .copied()
        .collect();
    // Bounded: without a majority of the voters the change cannot commit, and the loop that
    // calls this also keeps the members connected.
    let raft = cluster.raft();
    let change = raft.change_membership(ChangeMembers::ReplaceAllVoters(want.clone()), true);
    match tokio::time::timeout(CHANGE_WAIT, change).await {
        Ok(done) => done.map_err(|e| e.to_string())?,
        Err(_) => {
            return Err(format!(
                "the change of voters did not commit within {} s",
                CHANGE_WAIT.as_secs()
            ));
        }
    };
    if !replaced.is_empty() {
        let all = members(cluster);
        let names = |ids: &BTreeSet<NodeId>| -> Vec<String> {
            ids.iter().filter_map(|id| all.get(id).cloned()).collect()
        };
        tracing::warn!(
            gone = ?names(&replaced),
            voters = ?names(&want),
            after_s = GONE_AFTER.as_secs(),
            "voters unreachable too long gave their votes to reachable members"
        );
        metrics::counter!("ash_gen_server_cluster_voters_replaced_total")
            .increment(replaced.len() as u64);
    }
    Ok(())
}

/// Notes which members are unreachable from this one now, and since when.
fn note_unreachable(cluster: &Cluster) {
    let all = members(cluster);
    let mut seen = cluster.unreachable.lock().expect("not poisoned");
    seen.retain(|id, _| all.contains_key(id));
    for (id, name) in &all {
        if *id == cluster.id() || cluster.node.conn(name).is_some() {
            seen.remove(id);
        } else {
            seen.entry(*id).or_insert_with(std::time::Instant::now);
        }
    }
}

/// Keeps every member connected to every other (hidden connections are not transitive), notes
/// which are unreachable and, while this member leads, the voters as [`choose_voters`] says.
pub async fn keep_voters(cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let me = cluster.node.config.name.to_string();
    let mailbox = Mailbox::new(&cluster.node);
    loop {
        tick.tick().await;
        for name in members(&cluster).into_values() {
            if name != me
                && cluster.node.conn(&name).is_none()
                && let Ok(peer) = name.parse()
            {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), cluster.node.connect(&peer)).await;
            }
        }
        note_unreachable(&cluster);
        super::expiry::learn_handlers(&cluster, &mailbox).await;
        if super::holders::placed(&cluster) {
            super::holders::tend(&cluster, &mailbox).await;
        } else if cluster.is_leader() {
            if let Err(e) = reconcile(&cluster).await {
                tracing::debug!(error = %e, "could not change the voters yet");
            } else if let Err(e) = remove_lost(&cluster).await {
                tracing::debug!(error = %e, "could not remove lost members yet");
            }
        } else {
            rejoin_if_removed(&cluster, &mailbox).await;
        }
        hand_on_lead(&cluster, &mailbox).await;
    }
}

/// How long a voter asked to stand for election may take to answer.
const ELECT_CALL: Duration = Duration::from_secs(2);

/// On a leader without a vote: asks the reachable voter whose copy of the log is furthest along
/// to stand for election. The election ends this member's lead either way: the voter wins, or
/// its newer term makes this member step down and the voters elect one of theirs once the
/// leader's lease (`election_timeout_max`) has run out.
async fn hand_on_lead(cluster: &Cluster, mailbox: &Mailbox) {
    let voting = voters(cluster);
    if voting.is_empty() || voting.contains(&cluster.id()) || !cluster.is_leader() {
        return;
    }
    let all = members(cluster);
    let metrics = cluster.raft().metrics().borrow().clone();
    let matched = |id: &NodeId| {
        metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(id).cloned().flatten())
            .map(|m| m.index)
    };
    let Some((id, name)) = voting
        .iter()
        .filter_map(|id| Some((*id, all.get(id)?.clone())))
        .filter(|(_, name)| cluster.node.conn(name).is_some())
        .max_by_key(|(id, _)| matched(id))
    else {
        return;
    };
    let Ok(peer) = name.parse::<NodeName>() else {
        return;
    };
    tracing::info!(voter = %name, "this member leads without a vote: asking a voter to stand for election");
    let request = Value::pair(atom("elect"), Value::Int(id as i64));
    match mailbox
        .call_remote(&peer, &cluster.names.endpoint, request, ELECT_CALL)
        .await
    {
        Ok(answer) if answer == ok() => {}
        Ok(answer) => {
            tracing::debug!(voter = %name, ?answer, "the voter did not stand for election")
        }
        Err(e) => tracing::debug!(voter = %name, error = %e, "the voter did not answer"),
    }
}

/// The endpoint's answer to `{elect, Id}` (see `hand_on_lead`): `ok` once this member, a
/// voter under id `Id`, stands for election.
pub async fn elect(cluster: &Cluster, id: NodeId) -> Value {
    if id != cluster.id() {
        return error(format!("this member's id is {}, not {id}", cluster.id()));
    }
    if !voters(cluster).contains(&id) {
        return error("this member does not vote".to_string());
    }
    match cluster.raft().trigger().elect().await {
        Ok(()) => ok(),
        Err(e) => error(e.to_string()),
    }
}

/// Leaves the cluster (SIGTERM): asks the leader to remove this member, waiting up to
/// `timeout`. The others keep their majority; the records stay on them.
pub async fn leave(cluster: &Arc<Cluster>, timeout: Duration) {
    // Never to join again while it stops ([`rejoin_if_removed`]): the leader may remove it
    // before its other groups have been handed on.
    cluster
        .leaving
        .store(true, std::sync::atomic::Ordering::Release);
    let deadline = tokio::time::Instant::now() + timeout;
    let mailbox = Mailbox::new(&cluster.node);
    while tokio::time::Instant::now() < deadline {
        let all = members(cluster);
        if !all.contains_key(&cluster.id()) {
            withdraw(cluster, &mailbox, deadline).await;
            return;
        }
        if all.len() == 1 {
            // The last member: nobody to hand the records to.
            tracing::warn!("the last member of the cluster stops: its records are gone");
            return;
        }
        let voting = voters(cluster);
        if voting.len() == 1 && voting.contains(&cluster.id()) {
            // The only voter, beside learners: one that has caught up and is reachable takes
            // its place first (an unreachable one could never acknowledge the change); none
            // is (they are still catching up, or gone), and this is the last member.
            let heirs: BTreeMap<NodeId, String> = eligible(cluster)
                .into_iter()
                .filter(|(id, name)| *id != cluster.id() && cluster.node.conn(name).is_some())
                .collect();
            if heirs.is_empty() {
                tracing::warn!(
                    learners = all.len() - 1,
                    "the last voting member of the cluster stops, no learner caught up with it: its records are gone"
                );
                return;
            }
            let want = desired_voters(&heirs, cluster.options.replicas, cluster.options.group);
            // Bounded: an heir lost meanwhile never acknowledges the change.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let raft = cluster.raft();
            let change = raft.change_membership(ChangeMembers::AddVoterIds(want), true);
            match tokio::time::timeout(left, change).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "could not hand the vote to a learner yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => break,
            }
            continue;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some((leader, name)) = cluster.await_leader(left).await else {
            break;
        };
        let answer = if leader == cluster.id() {
            // Bounded like the call below: removing the leader needs a quorum of the new
            // configuration too, which a cluster with a dead member may never have.
            tokio::time::timeout(left, remove(cluster, cluster.id()))
                .await
                .unwrap_or_else(|_| error("removing this member timed out".to_string()))
        } else {
            let request = Value::pair(atom("leave"), Value::Int(cluster.id() as i64));
            match mailbox
                .call_remote(&name, &cluster.names.endpoint, request, left)
                .await
            {
                Ok(v) => v,
                Err(e) => error(e.to_string()),
            }
        };
        if answer == ok() {
            tracing::info!("left the cluster");
            metrics::counter!("ash_gen_server_cluster_departures_total").increment(1);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("could not leave the cluster in time; the others keep this member");
}

/// How long a node started with `--join` but not `--cluster` asks its peers whether they are
/// cluster members ([`runs_cluster`]), when they cannot all be reached or are still starting.
pub const PROBE_WAIT: Duration = Duration::from_secs(10);

/// Whether this node should be a cluster member because of its `--join` `peers`: one of them
/// is a member (its endpoint answers `ping`, or its [`super::role`] process says `member`), or
/// is deciding too and has `--join` peers of its own (nodes started together, naming each
/// other). Otherwise this node is a single node that only connects to them. A peer without
/// either process (a BEAM node) says so at once: the calls monitor the name, as
/// `gen_server:call` does (`noproc`); so does a peer that refuses the connection (a wrong
/// cookie). A peer that cannot be reached yet (not registered with its EPMD, not answering) is
/// asked again until `wait` is over.
pub async fn runs_cluster(
    node: &Arc<crate::node::Node>,
    peers: &[NodeName],
    wait: Duration,
) -> bool {
    use super::role::{PeerRole, ROLE_NAME};
    let mailbox = Mailbox::new(node);
    let deadline = tokio::time::Instant::now() + wait;
    let mut undecided: Vec<&NodeName> = peers.iter().collect();
    loop {
        let mut still = Vec::new();
        for peer in undecided {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left.min(PROBE_CALL), node.connect(peer)).await {
                Ok(Ok(())) => {}
                // Not up yet (or not answering): asked again.
                Ok(Err(ConnectError::Dial(_))) | Err(_) => {
                    still.push(peer);
                    continue;
                }
                // Refused (a wrong cookie, an untrusted certificate): waiting will not help.
                Ok(Err(_)) => continue,
            }
            let ask = |name: &'static str| {
                mailbox.call_remote_monitored(peer, name, atom("ping"), left.min(PROBE_CALL))
            };
            match ask(ENDPOINT_NAME).await {
                Ok(_) => return true,
                Err(CallError::NoProcess(_)) => {}
                Err(_) => {
                    still.push(peer);
                    continue;
                }
            }
            match ask(ROLE_NAME).await.map(|answer| PeerRole::of(&answer)) {
                Ok(Some(PeerRole::Member | PeerRole::Deciding(true))) => return true,
                // A single node becomes a member with this one, if it can.
                Ok(Some(PeerRole::Single)) if become_member(&mailbox, peer).await => return true,
                // A single node that cannot, one that will be single, or not a node of ours.
                Ok(_) | Err(CallError::NoProcess(_)) => {}
                Err(_) => still.push(peer),
            }
        }
        if still.is_empty() || tokio::time::Instant::now() >= deadline {
            return false;
        }
        undecided = still;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long one question of [`runs_cluster`] waits for its answer.
const PROBE_CALL: Duration = Duration::from_secs(2);

/// How long a single node asked to become a member may take ([`super::convert`]: each of its
/// steps is bounded by 30 s; they take about a second).
const BECOME_MEMBER_CALL: Duration = Duration::from_secs(90);

/// Asks `peer`, a single node this node joins, to become a member of a cluster holding its
/// records ([`super::role::BECOME_MEMBER`]); whether it is a member now (it then admits this
/// node). A node still deciding, one whose change failed and a BEAM node (no role process) say
/// no.
async fn become_member(mailbox: &Mailbox, peer: &NodeName) -> bool {
    use super::role::{BECOME_MEMBER, PeerRole, ROLE_NAME};
    let answer = mailbox
        .call_remote_monitored(peer, ROLE_NAME, atom(BECOME_MEMBER), BECOME_MEMBER_CALL)
        .await;
    let member = matches!(
        answer.as_ref().map(PeerRole::of),
        Ok(Some(PeerRole::Member))
    );
    if member {
        tracing::info!(%peer, "the single node joined became a cluster member");
    }
    member
}

/// A node that is no member as far as it knows may still have been admitted: the leader adds
/// a joining node as a learner, then waits for it to catch up before it answers, and the
/// joining node learns of it only from the log it has not received yet. So one that asked to
/// join asks its `--join` peers (passed on to the leader) to remove it; a leader that does not
/// know it answers `ok`. Best effort, until `deadline`.
async fn withdraw(cluster: &Cluster, mailbox: &Mailbox, deadline: tokio::time::Instant) {
    for peer in &cluster.options.join {
        let mut target = peer.clone();
        for _hop in 0..3 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let request = Value::pair(atom("leave"), Value::Int(cluster.id() as i64));
            match mailbox
                .call_remote_monitored(&target, &cluster.names.endpoint, request, left)
                .await
                .map(Answer::of)
            {
                Ok(Answer::Reply(v)) if v == ok() => {
                    tracing::info!(%target, "withdrew from the cluster before being admitted");
                    return;
                }
                Ok(Answer::NotLeader(Some(leader))) => target = leader,
                _ => break,
            }
        }
    }
}

/// Whether the cluster has a leader that votes and `min(replicas, members)` voters, all
/// reachable from this member.
pub fn healthy(cluster: &Cluster) -> bool {
    let all = members(cluster);
    let voting = voters(cluster);
    let reachable = |id: &NodeId| {
        *id == cluster.id() || all.get(id).is_some_and(|n| cluster.node.conn(n).is_some())
    };
    let wanted = if super::holders::placed(cluster) {
        super::holders::wanted(cluster)
    } else {
        cluster.options.replicas.min(all.len()).max(1)
    };
    // A leader without a vote hands the lead on first (`hand_on_lead`).
    cluster.leader().is_some_and(|(id, _)| voting.contains(&id))
        && voting.len() == wanted
        && voting.iter().all(reachable)
}

/// `cluster`: `#{members, voters, leader, healthy, admitting, replicas, shards, self, log}`
/// (`admitting` false while a single node becoming a member takes its records in), `log` being
/// `#{last, purged, snapshot}`: the member's last log index, the last one dropped and the
/// last one its latest snapshot covers (`undefined` when none).
pub async fn info(cluster: &Cluster) -> Value {
    let all = members(cluster);
    let voting = voters(cluster);
    let names = |ids: &mut dyn Iterator<Item = &NodeId>| {
        let mut v: Vec<&String> = ids.filter_map(|id| all.get(id)).collect();
        v.sort();
        Value::list(
            v.into_iter()
                .map(|n| Value::Atom(Atom::new(n).unwrap_or_else(|_| Atom::from_static("?"))))
                .collect(),
        )
    };
    let leader = cluster.leader();
    let healthy = healthy(cluster);
    let leader = match leader {
        Some((_, name)) => {
            Value::Atom(Atom::new(&name.to_string()).unwrap_or_else(|_| Atom::from_static("?")))
        }
        None => atom("undefined"),
    };
    let mut fields = vec![
        (atom("members"), names(&mut all.keys())),
        (atom("voters"), names(&mut voting.iter())),
        (atom("leader"), leader),
        (atom("healthy"), Value::boolean(healthy)),
        (
            atom("admitting"),
            Value::boolean(cluster.admitting.load(std::sync::atomic::Ordering::Acquire)),
        ),
        (
            atom("replicas"),
            Value::Int(cluster.options.replicas as i64),
        ),
        (atom("shards"), Value::Int(1)),
        (atom("self"), Value::Atom(cluster.node.name_atom)),
        (atom("log"), log_info(cluster)),
    ];
    if super::holders::placed(cluster) {
        fields.push((
            atom("settled"),
            Value::boolean(super::holders::settled(cluster)),
        ));
    }
    Value::map(fields)
}

fn log_info(cluster: &Cluster) -> Value {
    let metrics = cluster.raft().metrics().borrow().clone();
    let index = |id: Option<openraft::LogId<NodeId>>| match id {
        Some(id) => Value::Int(id.index as i64),
        None => atom("undefined"),
    };
    Value::map(vec![
        (
            atom("last"),
            Value::Int(metrics.last_log_index.unwrap_or(0) as i64),
        ),
        (atom("purged"), index(metrics.purged)),
        (atom("snapshot"), index(metrics.snapshot)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_group_ranks_its_own_voters() {
        let members: BTreeMap<NodeId, String> = (1..=5u64)
            .map(|id| (id, format!("n{id}@127.0.0.1")))
            .collect();
        let of_group = |group| desired_voters(&members, 3, group);
        // Three voters in every group, drawn from the members, and not the same three in
        // every group (the groups' leaders and load spread over the members).
        for group in 0..16 {
            let voters = of_group(group);
            assert_eq!(voters.len(), 3);
            assert!(voters.iter().all(|id| members.contains_key(id)));
        }
        let distinct: BTreeSet<BTreeSet<NodeId>> = (0..16).map(of_group).collect();
        assert!(distinct.len() > 1, "every group chose {distinct:?}");
        // Group 0 ranks as the one group of a cluster always did.
        let names: Vec<&str> = members.values().map(String::as_str).collect();
        let chosen = super::super::placement::replicas_of(0, &names, 3);
        let expected: BTreeSet<NodeId> = members
            .iter()
            .filter(|(_, name)| chosen.contains(&name.as_str()))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(of_group(0), expected);
        // Fewer members than replicas: every member votes.
        let two: BTreeMap<NodeId, String> = members.into_iter().take(2).collect();
        assert_eq!(desired_voters(&two, 3, 7).len(), 2);
    }

    #[test]
    fn a_gone_voter_gives_its_vote_to_a_spare_and_only_to_one() {
        let members: BTreeMap<NodeId, String> = (1..=4u64)
            .map(|id| (id, format!("n{id}@127.0.0.1")))
            .collect();
        let none = BTreeSet::new();
        let voting = choose_voters(&members, &BTreeSet::new(), &none, 3, 0);
        assert_eq!(voting, desired_voters(&members, 3, 0));
        let spare = *members.keys().find(|id| !voting.contains(id)).unwrap();
        // Nobody gone: the same voters.
        assert_eq!(choose_voters(&members, &voting, &none, 3, 0), voting);
        for lost in voting.iter().copied() {
            let gone = BTreeSet::from([lost]);
            let now = choose_voters(&members, &voting, &gone, 3, 0);
            let mut expected = voting.clone();
            expected.remove(&lost);
            expected.insert(spare);
            assert_eq!(now, expected, "voter {lost} gone");
        }
        // A gone learner changes nothing.
        assert_eq!(
            choose_voters(&members, &voting, &BTreeSet::from([spare]), 3, 0),
            voting
        );
        // Two voters gone, one spare: the spare takes one place, the better ranked gone
        // voter keeps the other (never fewer voters).
        let lost: Vec<NodeId> = voting.iter().copied().take(2).collect();
        let gone: BTreeSet<NodeId> = lost.iter().copied().collect();
        let now = choose_voters(&members, &voting, &gone, 3, 0);
        assert_eq!(now.len(), 3);
        assert!(now.contains(&spare));
        assert_eq!(now.intersection(&gone).count(), 1);
        // No spare: a gone voter keeps its vote.
        let three: BTreeMap<NodeId, String> =
            voting.iter().map(|id| (*id, members[id].clone())).collect();
        let gone = BTreeSet::from([*voting.iter().next().unwrap()]);
        assert_eq!(choose_voters(&three, &voting, &gone, 3, 0), voting);
    }
}
